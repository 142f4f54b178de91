-- test_cpu.lua: the CPU kernels seen from Lua: nn.profile (FLOPs from the shapes, kernels named,
-- gradients left alone, the printed table, bad arguments), viz.profile (bar lengths and colours in
-- pixels), sys.isa, and training that gives the same weights bit for bit with 1 and 2 threads on
-- every instruction set this CPU has; bf16 mixed precision (Trainer, evaluate, profile): finite,
-- close to fp32, identical bits on every ISA (emulated = reference = native) and thread count.

local function seed_like()
  return nn.Sequential{
    nn.Conv2d(3, 8, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(8, 16, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
  }
end

test("nn.profile: one row per layer, FLOPs from the shapes", function()
  tensor.seed(1)
  local net, x = seed_like(), tensor.randn(4, 3, 16, 16)
  local out, p = capture(nn.profile, net, x, {reps = 2})
  check(#p.rows == #net, "a row per layer")
  check(out:find("Conv2d(3, 8, k=3", 1, true) and out:find("% of the machine's limit", 1, true), "prints the table")
  -- conv1: 4 images x 8 x 16 x 16 outputs x 27 multiply-adds; its backward has no dL/dx (first layer)
  local macs1 = 4 * 8 * 16 * 16 * 27
  check(p.rows[1].fwd_flops == 2 * macs1 and p.rows[1].bwd_flops == 2 * macs1, "conv1 FLOPs")
  local macs2 = 4 * 16 * 8 * 8 * 72
  check(p.rows[4].fwd_flops == 2 * macs2 and p.rows[4].bwd_flops == 4 * macs2, "conv2 FLOPs (filter and data)")
  check(p.rows[8].fwd_flops == 2 * 4 * 256 * 10, "linear FLOPs")
  check(p.rows[2].fwd_flops == 0 and p.rows[7].fwd_ms >= 0, "ReLU counts no FLOPs")
  for i, r in ipairs(p.rows) do
    check(r.fwd_ms > 0 and r.fwd_ms < 1e4 and r.bwd_ms >= 0, "row " .. i .. " has times")
  end
  check(p.peak_gflops > 0 and p.images_s > 0 and p.limit_images_s > 0, "peak and images/s")
  check(p.rows[1].kernel_fwd:find("conv", 1, true) and p.rows[1].kernel_bwd:find("wgrad", 1, true),
        "the convolution names its kernels: " .. p.rows[1].kernel_fwd .. "; " .. p.rows[1].kernel_bwd)
  check(p.rows[8].kernel_fwd:find("sgemm " .. select(2, sys.isa()), 1, true), "the linear layer runs sgemm")
  local isa = sys.isa()
  check(p.rows[4].kernel_fwd:find(isa == "generic" and "im2col" or "direct", 1, true), "conv kernel matches the ISA")
end)

test("nn.profile leaves gradients and mode as they were", function()
  tensor.seed(2)
  local net, x = seed_like(), tensor.randn(2, 3, 16, 16)
  local y = net(x)
  net:backward(tensor.ones(table.unpack(y:shape())))
  local before = {}
  for i, prm in ipairs(net:parameters()) do before[i] = prm.grad:clone() end
  net:eval()
  nn.profile(net, x, {reps = 1, quiet = true})
  check(not net.training, "still in eval mode")
  for i, prm in ipairs(net:parameters()) do check_close(prm.grad, before[i], 0, "gradient " .. i) end
  local q = nn.profile(nn.Linear(5, 3), tensor.randn(7, 5), {reps = 1, quiet = true, backward = false})
  check(#q.rows == 1 and q.rows[1].bwd_ms == 0 and q.rows[1].fwd_flops == 2 * 7 * 5 * 3, "a single layer, forward only")
end)

test("nn.profile of an int8 network: its layers against the int8 peak", function()
  tensor.seed(3)
  local net, x = seed_like(), tensor.randn(4, 3, 16, 16)
  net:eval()
  local q = quant.int8(net, {calibrate = {x}})
  local out, p = capture(nn.profile, q, x, {reps = 1, backward = false})
  if p.int8_peak_gops == 0 then
    skip("the int8 peak in nn.profile: this CPU has no AVX2")
    return
  end
  local int8_rows = 0
  for _, r in ipairs(p.rows) do
    if r.kernel_fwd:find("^qconv") then
      int8_rows = int8_rows + 1
      check(r.peak == "int8" and r.fwd_flops > 0, r.layer .. ": counted against the int8 peak")
      check_close(r.pct_peak, 100 * r.gflops / p.int8_peak_gops, 1e-9, r.layer .. ": % of the int8 peak")
    end
  end
  check(int8_rows == 3, "two QConv2d and a QLinear run the int8 kernel, got " .. int8_rows)
  check(p.int8_peak_gops > 0 and p.int8_peak_instr:find("avx") and out:find("int8 peak", 1, true),
        "the int8 peak is measured and printed: " .. tostring(p.int8_peak_instr))
  -- the whole net: the time its layers would take at their peaks over the time they took
  local at_peak = 0
  for _, r in ipairs(p.rows) do
    at_peak = at_peak + r.flops / (r.peak == "int8" and p.int8_peak_gops or p.peak_gflops) * 1e-6
  end
  check_close(p.pct_peak, 100 * at_peak / p.ms, 1e-9, "the net's share of the peak")
  local fp = nn.profile(net, x, {reps = 1, backward = false, quiet = true})
  for _, r in ipairs(fp.rows) do check(r.peak == "fp32", "an fp32 net counts against the fp32 peak") end
end)

test("nn.profile: bad arguments", function()
  local net = seed_like()
  check_error(function() nn.profile(42, tensor.randn(1, 3, 16, 16)) end, "network", "not a module")
  check_error(function() nn.profile(net, "x") end, "Tensor", "not a tensor")
  check_error(function() nn.profile(net, tensor.randn(1, 3, 16, 16), {precision = "fp16"}) end, "\"fp32\" or \"bf16\"", "fp16")
  check_error(function() nn.profile(net, tensor.randn(1, 3, 16, 16), {reps = 0}) end, "reps", "reps 0")
  check_error(function() nn.profile(net, tensor.randn(1, 4, 16, 16)) end, "channels", "wrong input")
  check_error(function() nn.profile(net, tensor.randn(1, 3, 16, 16), {colour = 1}) end, "colour", "unknown option")
end)

-- The longest run of one non-white colour along row y of c: its length and colour.
local function longest_run(c, y)
  local w = c:size()
  local best, col, run, prev = 0, nil, 0, nil
  for x = 1, w do
    local r, g, b = c:pixel(x, y)
    local key = r * 65536 + g * 256 + b
    if key ~= 0xFFFFFF and key == prev then run = run + 1 else run = 1 end
    prev = key
    if key ~= 0xFFFFFF and run > best then best, col = run, {r, g, b} end
  end
  return best, col
end

test("viz.profile: bar lengths follow the times, colours the share of peak", function()
  local p = {peak_gflops = 100, images_s = 50, limit_images_s = 100, isa = "avx2", threads = 1,
             rows = {{layer = "a", fwd_ms = 2, bwd_ms = 0, flops = 1, pct_peak = 100},
                     {layer = "b", fwd_ms = 1, bwd_ms = 0, flops = 0, pct_peak = 0}}}
  local c = viz.profile(p, {width = 600, height = 200})
  -- rows of 28 pixels under a 24-pixel title, bars 18 high: their middles at y = 34 and 62 (1-based)
  local l1, c1 = longest_run(c, 34)
  local l2, c2 = longest_run(c, 62)
  check(l1 > 100 and math.abs(l1 - 2 * l2) <= 2, string.format("bar 1 twice bar 2: %d, %d", l1, l2))
  check(c2[1] == 170 and c2[2] == 170 and c2[3] == 170, "no FLOPs: grey")
  check(not (c1[1] == c1[2] and c1[2] == c1[3]), "at the peak: a colour, not grey")
  check_error(function() viz.profile({}) end, "nn.profile", "not a profile")
end)

test("sys.isa", function()
  local isa, blas = sys.isa()
  check(isa == "generic" or isa == "avx2" or isa == "avx512", "an ISA: " .. tostring(isa))
  check(type(blas) == "string" and #blas > 0, "a BLAS core: " .. tostring(blas))
  check(sys.isa("generic") == "generic", "generic is always there")
  check_error(function() sys.isa("sse9") end, "unknown ISA 'sse9'", "unknown")
  check(sys.isa("auto") == isa, "auto goes back")
  local ok, err = pcall(sys.isa, "avx512")
  check(ok or tostring(err):find("no avx512", 1, true), "avx512 taken or refused by name")
  sys.isa("auto")
end)

test("training steps: the same weights with 1 and 2 threads, on each ISA", function()
  local threads = sys.threads()
  local data = nn.TensorDataset(tensor.randn(96, 3, 16, 16), (tensor.rand(96) * 10 - 0.5):to("i32") + 1)
  local function train(isa, nthreads)
    sys.isa(isa)
    sys.threads(nthreads)
    tensor.seed(5)
    local net = seed_like()
    local t = nn.Trainer{net = net, data = data, optim = optim.Adam(net, {lr = 1e-3}), batch = 32, verbose = false}
    t:fit{epochs = 1}
    return net:parameters()
  end
  for _, isa in ipairs{"generic", "avx2", "avx512"} do
    if pcall(sys.isa, isa) then
      local a, b = train(isa, 1), train(isa, 2)
      local same = #a == #b
      for i = 1, #a do same = same and (a[i].value - b[i].value):abs():max() == 0 end
      check(same, isa .. ": identical weights after an epoch with 1 and 2 threads")
    end
  end
  sys.isa("auto")
  sys.threads(threads)
end)

-- Weights of seed_like() after one epoch on data in precision p, on ISA isa with n threads.
local function train_weights(data, p, isa, n)
  local threads = sys.threads()
  sys.isa(isa)
  sys.threads(n)
  tensor.seed(5)
  local net = seed_like()
  local t = nn.Trainer{net = net, data = data, optim = optim.Adam(net, {lr = 1e-3}), batch = 32,
                       verbose = false, precision = p}
  t:fit{epochs = 1}
  sys.isa("auto")
  sys.threads(threads)
  return net:parameters(), t.history.loss
end

local function max_diff(a, b)
  local m = 0
  for i = 1, #a do m = math.max(m, (a[i].value - b[i].value):abs():max()) end
  return m
end

test("bf16 training: finite, close to fp32, the same bits on every ISA and thread count", function()
  local data = nn.TensorDataset(tensor.randn(96, 3, 16, 16), (tensor.rand(96) * 10 - 0.5):to("i32") + 1)
  local f32, f32_loss = train_weights(data, "fp32", "generic", 1)
  local ref, ref_loss = train_weights(data, "bf16", "generic", 1) -- the plain-C reference
  check(sys.precision() == "fp32", "the trainer restores the precision after its steps")
  for i, l in ipairs(ref_loss) do
    check(l == l and math.abs(l) < 1e3, "bf16 loss " .. i .. " is finite")
    check(math.abs(l - f32_loss[i]) < 0.02 * f32_loss[i], string.format("bf16 loss %d: %.5f near fp32's %.5f", i, l, f32_loss[i]))
  end
  local d = max_diff(ref, f32)
  check(d > 0 and d < 5e-3, string.format("bf16 weights differ from fp32's, a little: %.2e", d))
  for _, isa in ipairs{"generic", "avx2", "avx512"} do
    if pcall(sys.isa, isa) then
      sys.isa("auto")
      for n = 1, 2 do
        check(max_diff(train_weights(data, "bf16", isa, n), ref) == 0,
              string.format("bf16 on %s with %d thread(s): the reference's weights bit for bit", isa, n))
      end
    end
  end
end)

test("bf16: nn.evaluate and nn.profile, and what runs", function()
  tensor.seed(3)
  local net, x = seed_like(), tensor.randn(40, 3, 16, 16)
  local data = nn.TensorDataset(x, (tensor.rand(40) * 10 - 0.5):to("i32") + 1)
  local a, b = nn.evaluate(net, data, {batch = 16}), nn.evaluate(net, data, {batch = 16, precision = "bf16"})
  check(b.loss == b.loss and math.abs(a.loss - b.loss) < 1e-2 * a.loss and a.loss ~= b.loss,
        string.format("evaluation loss in bf16 %.6f near fp32's %.6f", b.loss, a.loss))
  check(sys.precision() == "fp32", "evaluate restores the precision")
  local small = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
  local on_cpu = nn.evaluate(small, data, {precision = "bf16"}).loss
  small:to("sim")
  check(nn.evaluate(small, data, {precision = "bf16"}).loss == on_cpu, "bf16 on sim = bf16 on the CPU")
  local p = nn.profile(net, x, {reps = 1, quiet = true, precision = "bf16"})
  local _, how = sys.precision()
  check(p.precision == "bf16" and p.rows[1].kernel_fwd:find("bf16 " .. how, 1, true),
        "the profile names the bf16 kernel: " .. p.rows[1].kernel_fwd)
  check(p.rows[8].kernel_fwd:find("matmul bf16", 1, true), "the linear layer too: " .. p.rows[8].kernel_fwd)
  check(how == "native avx512_bf16" or how:find("^emulated"), "bf16 says how it runs: " .. how)
  check(sys.info().cpu.features.avx512_bf16 == (how == "native avx512_bf16") or sys.isa() ~= "avx512",
        "native exactly where the CPU has AVX512_BF16")
  local out = capture(function()
    nn.Trainer{net = net, data = data, precision = "bf16"}
  end)
  check(out:find("bf16 mixed precision: " .. (how:find("emulated") and "emulated" or how), 1, true),
        "the trainer says how bf16 runs: " .. out)
  check_error(function() nn.Trainer{net = net, data = data, precision = "fp16"} end, "\"fp32\" or \"bf16\"", "fp16")
  check_error(function() nn.evaluate(net, data, {precision = 16}) end, "got number", "a number")
  check_error(function() sys.precision("int8") end, "unknown precision 'int8'", "sys.precision")
  check(sys.precision("bf16") == "bf16" and sys.precision("fp32") == "fp32", "sys.precision sets and tells")
  local path = os.tmpname()
  nn.Trainer{net = net, data = data, precision = "bf16", verbose = false}:save(path)
  check(nn.Trainer.load(path, {data = data, verbose = false}).precision == "bf16", "a saved trainer keeps its precision")
  os.remove(path)
end)

test("the direct filter gradient sums fixed groups of 8 images: two half batches add up to the whole", function()
  if not pcall(sys.isa, "avx2") then
    skip("the direct filter gradient's fixed groups: the direct path needs AVX2")
    return
  end
  tensor.seed(4)
  local conv = nn.Conv2d(3, 7, 3, {padding = 1}) -- 27 inputs per filter: the direct path
  local x, gy = tensor.randn(24, 3, 9, 13), tensor.randn(24, 7, 9, 13)
  conv:zero_grad()
  conv(x)
  conv:backward(gy)
  local whole = conv:parameters()[1].grad:clone()
  conv:zero_grad()
  for _, r in ipairs{{1, 8}, {9, 24}} do -- 8 images, then 16: the same groups of 8
    conv(x:slice(1, r[1], r[2]):contiguous())
    conv:backward(gy:slice(1, r[1], r[2]):contiguous())
  end
  local parts = conv:parameters()[1].grad
  check((parts - whole):abs():max() == 0, "8 + 16 images accumulated = 24 at once, bit for bit")
  sys.isa("auto")
end)
