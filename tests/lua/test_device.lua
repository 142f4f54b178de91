-- test_device.lua: networks on "sim", the simulated accelerator whose memory the host cannot read
-- (any stray host access outside the backend faults): tensors and device names, training with
-- every optimizer, clipping, dropout, batch norm, augmentation (bit-identical to the CPU), the
-- transfers of a training step, nn.evaluate, checkpoints, pruning, low-rank, quantization, QAT,
-- distillation, compress.compare, viz panels; each place that once read device memory from the
-- host has a check here.

local function stats(reset) return sys.device_stats("sim", reset) end

local function same_tree(a, b)
  if type(a) ~= "table" then return a == b or (a ~= a and b ~= b) end
  if #a ~= #b then return false end
  for i = 1, #a do if not same_tree(a[i], b[i]) then return false end end
  return true
end

-- 48 small images of 3 channels (6x6) with labels 1..4, as a data set and a seeded loader with
-- augmentation (crop, flip, cutout) and normalisation.
local function images(seed)
  tensor.seed(seed)
  return data.from_tensors(tensor.rand(48, 3, 6, 6), (tensor.rand(48) * 4 - 0.5):to("i32") + 1)
end

-- The seed CNN's shape, small: convolutions with batch norm, pooling, dropout, a classifier.
local function cnn(seed)
  tensor.seed(seed)
  return nn.Sequential{
    nn.Conv2d(3, 8, 3, {padding = 1}), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(8, 8, 3, {padding = 1}), nn.ReLU(), nn.Flatten(), nn.Dropout(0.25), nn.Linear(72, 4),
  }
end

local function mlp(seed)
  tensor.seed(seed)
  return nn.Sequential{nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)}
end

local function random_set(seed, n)
  tensor.seed(seed)
  local x = tensor.randn(n or 32, 8)
  local y = (tensor.rand(n or 32) * 4 - 0.5):to("i32") + 1
  return nn.TensorDataset(x, y)
end

-- ---------------------------------------------------------------- tensors

test("tensors on sim: constructors, copies, ops, names", function()
  local t = tensor.randn(2, 3, {device = "sim"})
  check(t:device() == "sim", "randn on sim")
  local h = t:to("cpu")
  check(h:device() == "cpu" and same_tree((t * 2):totable(), (h * 2):totable()), "ops run there, values come back")
  check(tensor.zeros({2, 2}, {device = "sim:1"}):device() == "sim:1", "sim:1 is its own device")
  check(tensor.full(2, 2, 7, {device = "sim", dtype = "i32"}):sum() == 28, "full with dtype on sim")
  check(t:to("sim:1"):to("cpu"):totable()[2][3] == h:totable()[2][3], "sim -> sim:1 -> cpu")
  check(tostring(t):find("sim") ~= nil, "prints its device")
  check_error(function() tensor.zeros(2, {device = "tpu"}) end, "unknown device 'tpu'", "bad device")
  check_error(function() t:to("sim:99") end, "unknown dtype or device", "no such number")
  check_error(function() tensor.zeros(2, {device = "cpu:1"}) end, "cpu:1", "one cpu")
  check_error(function() sys.device_stats("cpu") end, "no device statistics", "the cpu keeps none")
  check_error(function() return t + h end, "tensors on sim and cpu", "mixing devices is an error")
end)

test("sys.device_stats counts launches, bytes and memory", function()
  stats(true)
  local x = tensor.ones(4, 4, {device = "sim"})   -- a fill: one launch, no transfer
  local s = stats()
  check(s.launches == 1 and s.bytes_h2d == 0 and s.allocs == 1 and s.memory >= 64, "a fill")
  local y = tensor.ones(4, 4):to("sim")            -- 64 bytes up
  check(stats().bytes_h2d == 64 and stats().copies_h2d == 1, "one copy up")
  check((x + y):sum() == 32, "an add and a sum")
  s = stats(true)
  check(s.bytes_d2h == 4 and s.copies_d2h == 1 and s.syncs == 1, "one scalar down: " .. s.bytes_d2h)
  check(stats().launches == 0 and stats().peak_memory == stats().memory, "reset")
end)

-- ---------------------------------------------------------------- training

test("training on sim gives the CPU's weights bit for bit (CNN, batch norm, dropout, augmentation)", function()
  local function run(device)
    local ds = images(5)
    local ld = data.loader(ds, {batch = 8, seed = 3, normalize = {mean = 0.5, std = 0.25},
                                augment = {crop = 1, flip = true, cutout = 2}})
    local net = cnn(6)
    if device then net:to(device) end
    local opt = optim.SGD(net, {lr = 0.05, momentum = 0.9, weight_decay = 1e-4})
    opt:set_clip(5)
    local t = nn.Trainer{net = net, data = ld, optim = opt, verbose = false,
                         schedule = optim.schedule.cosine{total = 12}}
    t:fit{epochs = 2}
    return t, net_weights(net)
  end
  local a, wa = run(nil)
  local b, wb = run("sim")
  check(b.net:device() == "sim", "the network stayed on sim")
  check(same_tree(a.history.loss, b.history.loss), "the same losses at every step")
  check(same_tree(wa, wb), "the same weights")
  check(same_tree(a.history.train_acc, b.history.train_acc), "the same accuracy")
  local ra, rb = nn.evaluate(a.net, images(7)), nn.evaluate(b.net, images(7))
  check(ra.loss == rb.loss and ra.top1 == rb.top1 and same_tree(ra.confusion:totable(), rb.confusion:totable()),
        "nn.evaluate agrees")
end)

test("a training step moves the batch and its labels up and the loss down, nothing else", function()
  -- the seed CNN (batch norm, dropout) on augmented batches from a loader
  local net = cnn(9):to("sim")
  local ld = data.loader(images(8), {batch = 8, seed = 1, augment = {flip = true}})
  local t = nn.Trainer{net = net, data = ld, verbose = false, optim = optim.Adam(net)}
  t:step() -- the first step allocates the optimizer's state
  stats(true)
  t:step()
  local s = stats()
  -- 8 x 3 x 6 x 6 f32 inputs (3456 bytes) and 8 i32 labels (32 bytes) up; the loss and the
  -- batch's hits (2 f32, 8 bytes) down in one copy
  check(s.copies_h2d == 2 and s.bytes_h2d == 8 * 3 * 6 * 6 * 4 + 8 * 4,
        "up: " .. s.copies_h2d .. " copies, " .. s.bytes_h2d .. " bytes")
  check(s.copies_d2h == 1 and s.bytes_d2h == 8 and s.syncs == 1,
        "down: " .. s.copies_d2h .. " copies, " .. s.bytes_d2h .. " bytes")
  check(s.launches > 20, "kernels ran there: " .. s.launches)
  -- an MLP on a TensorDataset: the same two copies up, one down
  local m = mlp(10):to("sim")
  local t2 = nn.Trainer{net = m, data = random_set(11, 64), batch = 16, verbose = false}
  t2:step()
  stats(true)
  t2:step()
  s = stats()
  check(s.copies_h2d == 2 and s.bytes_h2d == 16 * 8 * 4 + 16 * 4 and s.copies_d2h == 1 and s.bytes_d2h == 8,
        "MLP step: " .. s.bytes_h2d .. " bytes up, " .. s.bytes_d2h .. " down")
end)

test("a clipped step and a distillation step move the same, and allocate only the batch", function()
  local function measure(t)
    t:step() -- the first step allocates the optimizer's state and the kept buffers
    t:step()
    stats(true)
    t:step()
    return stats()
  end
  -- gradient clipping: the norm comes back with the loss and the hits (3 f32 in one copy)
  local net = mlp(10):to("sim")
  local opt = optim.SGD(net, {lr = 0.1, momentum = 0.9})
  opt:set_clip(0.5)
  local s = measure(nn.Trainer{net = net, data = random_set(11, 64), batch = 16, optim = opt, verbose = false})
  check(s.copies_h2d == 2 and s.bytes_h2d == 16 * 8 * 4 + 16 * 4, "clipped: up " .. s.bytes_h2d .. " bytes")
  check(s.copies_d2h == 1 and s.bytes_d2h == 12 and s.syncs == 1,
        "clipped: one copy down (loss, hits, norm): " .. s.copies_d2h .. " copies, " .. s.bytes_d2h .. " bytes")
  check(s.allocs == 2, "clipped: the batch and its labels are all it allocates on the device: " .. s.allocs)
  -- distillation: the teacher's logits stay on the device
  local teacher = mlp(13):to("sim")
  local t = nn.Trainer{net = mlp(14):to("sim"), data = random_set(15, 64), batch = 16, verbose = false,
                       loss = nn.DistillLoss{teacher = teacher, temperature = 2, alpha = 0.5}}
  s = measure(t)
  check(s.copies_h2d == 2 and s.bytes_h2d == 16 * 8 * 4 + 16 * 4, "distill: up " .. s.bytes_h2d .. " bytes")
  check(s.copies_d2h == 1 and s.bytes_d2h == 8 and s.syncs == 1,
        "distill: one copy down (loss, hits): " .. s.copies_d2h .. " copies, " .. s.bytes_d2h .. " bytes")
  check(s.allocs == 2, "distill: the batch and its labels are all it allocates on the device: " .. s.allocs)
end)

test("every optimizer, clipping and schedules on sim match the CPU", function()
  for _, make in ipairs{function(n) return optim.SGD(n, {lr = 0.1, momentum = 0.9, nesterov = true}) end,
                        function(n) return optim.Adam(n, {lr = 0.01, weight_decay = 0.01}) end,
                        function(n) return optim.AdamW(n, {lr = 0.01}) end} do
    local function run(device)
      local net = mlp(10)
      if device then net:to(device) end
      local opt = make(net)
      opt:set_clip(0.5)
      local t = nn.Trainer{net = net, data = random_set(11), batch = 8, optim = opt, verbose = false,
                           schedule = optim.schedule.step{every = 2, gamma = 0.5}}
      t:fit{epochs = 2}
      return net_weights(net)
    end
    check(same_tree(run(nil), run("sim")), "the same weights")
  end
end)

test("labels out of range on sim are named, not read out of bounds", function()
  local net = mlp(12):to("sim")
  local loss = nn.CrossEntropyLoss()
  local x = tensor.randn(3, 8):to("sim")
  check_error(function() loss(net(x), tensor.from({1, 9, 2}):to("i32"):to("sim")) end,
              "label 9.0 of sample 2 is not a class number from 1 to 4", "a device label tensor with a bad class")
  local ok = pcall(loss, net(x), tensor.from({1, 4, 2}):to("i32"):to("sim"))
  check(ok, "good device labels pass")
end)

test("distillation on sim matches the CPU", function()
  local function run(device)
    local teacher, student = mlp(13), mlp(14)
    if device then teacher:to(device); student:to(device) end
    local t = nn.Trainer{net = student, data = random_set(15), batch = 8, verbose = false,
                         loss = nn.DistillLoss{teacher = teacher, temperature = 2, alpha = 0.5}}
    t:fit{epochs = 1}
    return net_weights(student)
  end
  check(same_tree(run(nil), run("sim")), "the same student")
end)

-- ---------------------------------------------------------------- checkpoints

test("checkpoints: save from sim, load onto sim", function()
  local net = cnn(16):to("sim")
  local path = os.tmpname()
  net:save(path)
  local back = nn.load(path, {device = "sim"})
  check(back:device() == "sim", "nn.load(path, {device = 'sim'})")
  check(same_tree(net_weights(back), net_weights(net)), "the same weights")
  check(nn.load(path):device() == "cpu", "or onto the cpu")
  local w = back[1].weight
  w:save(path .. ".npy")
  check(same_tree(tensor.load(path .. ".npy"):totable(), w:totable()), "a sim tensor saved as .npy")
  os.remove(path .. ".npy")
  check_error(function() nn.load(path, {device = "nowhere"}) end, "unknown device", "bad device")
  local t = nn.Trainer{net = mlp(17):to("sim"), data = random_set(18), batch = 8, verbose = false}
  t:step()
  t:save(path)
  local t2 = nn.Trainer.load(path, {data = random_set(18)})
  check(same_tree(net_weights(t2.net), net_weights(t.net)), "a trainer saved from sim")
  os.remove(path)
  local s = back:summary{1, 3, 6, 6}
  check(s ~= nil, "net:summary on sim")
end)

test("nn.Trainer.load(path, {device = 'sim'}) resumes there: the same as an unbroken run", function()
  local path = os.tmpname()
  local function trainer(device)
    local data = random_set(21, 40)
    local net = mlp(22)
    if device then net:to(device) end
    tensor.seed(23)
    return nn.Trainer{net = net, data = data, optim = optim.Adam(net, {lr = 0.01, clip = 5}), batch = 16,
                      seed = 3, schedule = optim.schedule.cosine{total = 12, min_lr = 1e-4},
                      verbose = false}, data
  end
  local a = trainer("sim")
  a:fit{epochs = 4}
  for _, saved_on in ipairs{"sim", "cpu"} do
    local b, data = trainer(saved_on)
    b:fit{epochs = 1}
    b:step() -- mid-epoch
    b:save(path)
    check_error(function() nn.Trainer.load(path, {data = data, device = "nowhere"}) end, "unknown device",
                "a bad device is named")
    check_error(function() nn.Trainer.load(path, {data = data, device = 1}) end, "device must be a device name",
                "a device that is not a name")
    local c = nn.Trainer.load(path, {data = data, verbose = false, device = "sim"})
    check(c.net:device() == "sim", "saved on " .. saved_on .. ": the network is on sim")
    stats(true)
    c:step() -- the optimizer's state came with it: nothing but the batch goes up
    local s = stats()
    check(s.copies_h2d == 2 and s.copies_d2h == 1, "saved on " .. saved_on .. ": a step moves the batch only: "
          .. s.copies_h2d .. " copies up, " .. s.copies_d2h .. " down")
    c:fit{epochs = 3}
    check(c.steps == a.steps and same_tree(c.history.loss, a.history.loss),
          "saved on " .. saved_on .. ": the same losses as the unbroken run on sim")
    check(same_tree(net_weights(c.net), net_weights(a.net)), "saved on " .. saved_on .. ": the same weights")
  end
  os.remove(path)
end)

-- ---------------------------------------------------------------- compression

test("pruning on sim: magnitude, masks through training, reports, channels, schedules", function()
  local function run(device)
    local net = mlp(19)
    if device then net:to(device) end
    prune.magnitude(net, {amount = 0.5})
    local r = prune.report(net)
    local t = nn.Trainer{net = net, data = random_set(20), batch = 8, verbose = false}
    t:fit{epochs = 1}
    return net, r, prune.report(net)
  end
  local a, ra, ra2 = run(nil)
  local b, rb, rb2 = run("sim")
  check(b:device() == "sim", "the network stays on sim")
  check(rb.zeros == ra.zeros and rb.zeros > 0, "the zero count of a sim network: " .. rb.zeros)
  check(rb2.zeros == ra2.zeros and same_tree(net_weights(a), net_weights(b)), "masks hold through training")
  check(prune.masks_from_zeros(mlp(21):to("sim")) == 0, "masks_from_zeros on sim")
  local c = cnn(22):to("sim")
  prune.channels(c, {amount = 0.5})
  check(c:device() == "sim" and c[1].out == 4, "channel pruning on sim")
  local y = c(tensor.randn(2, 3, 6, 6):to("sim"))
  check(y:device() == "sim" and y:size(2) == 4, "and it runs there")
  local net = mlp(23):to("sim")
  local t = nn.Trainer{net = net, data = random_set(24), batch = 8, verbose = false}
  prune.schedule{trainer = t, target = 0.5, finish = 6, every = 2}
  t:fit{epochs = 2}
  check(prune.report(net).sparsity > 0.4, "a pruning schedule on sim")
  local sens = prune.sensitivity(mlp(25):to("sim"), random_set(26), {amounts = {0.5}})
  check(sens ~= nil, "sensitivity on sim")
end)

test("low-rank on sim", function()
  local net = mlp(27):to("sim")
  local x = tensor.randn(4, 8)
  local y0 = net(x:to("sim")):to("cpu")
  check(lowrank.spectrum(net[1]):size(1) == 8, "spectrum of a sim layer")
  lowrank.factorize(net, {rank = 8})
  check(net:device() == "sim", "the factors live on sim")
  local y1 = net(x:to("sim")):to("cpu")
  check(((y1 - y0):abs():max()) < 1e-4, "full rank keeps the outputs")
end)

test("quantization of a sim network: int8 and int4 on the CPU, said so; QAT on sim", function()
  local net = cnn(28)
  net:eval()
  local calib = tensor.randn(16, 3, 6, 6)
  local qa = quant.int8(net, {calibrate = {calib}})
  local qb = quant.int8(cnn(28):to("sim"), {calibrate = {calib:to("sim")}})
  check(qb:device() == "cpu", "an int8 network lives on the CPU")
  check(tostring(qb):find("runs on the CPU") ~= nil, "and print says so")
  local x = tensor.randn(2, 3, 6, 6)
  check(same_tree(qa(x):totable(), qb(x):totable()), "the same int8 network as from the CPU")
  check_error(function() qb:to("sim") end, "runs on the CPU only", "integer layers do not move")
  check_error(function() qb(x:to("sim")) end, "sim", "a sim input to a CPU network is an error")
  check(#quant.report(qb) > 0, "quant.report")
  local q4 = quant.int4(mlp(29):to("sim"))
  check(q4:device() == "cpu" and q4(tensor.randn(2, 8)):size(2) == 4, "int4 of a sim network")
  check(quant.levels(q4[1]) ~= nil, "levels")
  -- QAT trains on sim and converts to a CPU network
  local function qat(device)
    local m = mlp(30)
    if device then m:to(device) end
    local q = quant.qat(m)
    local t = nn.Trainer{net = q, data = random_set(31), batch = 8, verbose = false}
    t:fit{epochs = 1}
    return q
  end
  local qc, qs = qat(nil), qat("sim")
  check(qs:device() == "sim", "a QAT network on sim")
  check(same_tree(net_weights(qc), net_weights(qs)), "QAT on sim matches the CPU (FakeQuant ranges, scales)")
  local cc, cs = quant.convert(qc), quant.convert(qs)
  local xi = tensor.randn(3, 8)
  check(cs:device() == "cpu" and same_tree(cc(xi):totable(), cs(xi):totable()), "convert of a sim QAT network")
end)

test("compress.compare and sparse reports with a sim baseline", function()
  local base = mlp(32):to("sim")
  local pruned = mlp(32):to("sim")
  prune.magnitude(pruned, {amount = 0.5})
  local c = compress.compare({baseline = base, pruned = pruned}, random_set(33), {time = 0.01})
  check(#c == 2 and c[2].nonzeros < c[1].nonzeros, "compare on sim networks")
end)

-- ---------------------------------------------------------------- viz

test("viz panels draw a sim network as they draw it on the CPU", function()
  local a, b = cnn(34), cnn(34):to("sim")
  local img = tensor.rand(3, 6, 6)
  local function same_png(ca, cb, what)
    local pa, pb = os.tmpname(), os.tmpname()
    ca:save(pa)
    cb:save(pb)
    local fa, fb = io.open(pa, "rb"), io.open(pb, "rb")
    local da, db = fa:read("a"), fb:read("a")
    fa:close(); fb:close()
    os.remove(pa); os.remove(pb)
    check(#da > 0 and da == db, what)
  end
  same_png(viz.filters(a[1]), viz.filters(b[1]), "filters")
  same_png(viz.histogram(a), viz.histogram(b), "histogram")
  same_png(viz.features(a, 1, img), viz.features(b, 1, img), "features")
  same_png(viz.samples(a, images(35), 4), viz.samples(b, images(35), 4), "samples")
  same_png(viz.confusion(nn.evaluate(a, images(36))), viz.confusion(nn.evaluate(b, images(36))), "confusion")
  local t = nn.Trainer{net = b, data = data.loader(images(37), {batch = 8}), verbose = false}
  t:step()
  check(viz.dashboard(t, {width = 320, height = 200}) ~= nil, "the dashboard of a sim trainer")
end)
