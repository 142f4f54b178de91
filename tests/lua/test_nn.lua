-- test_nn.lua: the nn and optim modules: constructors and their errors, containers, module boxes
-- and parameters, forward/backward shapes, printing and summary, losses with 1-based labels,
-- TensorDataset, one hand-computed SGD step, schedules.

local function seed_cnn()
  return nn.Sequential{
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
  }
end

test("constructors", function()
  local c = nn.Conv2d(3, 8, 3, {stride = 2, padding = 1, bias = false})
  check(c:type() == "Conv2d" and c.stride == 2 and c.padding == 1 and c.bias == false and c.k == 3,
        "options reach the layer")
  check(c.weight and c.weight:shape()[1] == 8 and #c:parameters() == 1, "no bias parameter")
  check(nn.Linear(4, 2, {bias = true}).bias:numel() == 2, "bias=true")
  check(nn.MaxPool2d(3).stride == 3 and nn.MaxPool2d(3, {stride = 1}).stride == 1, "derived stride")
  check(nn.Dropout().p == 0.5 and nn.Dropout(0.2).p == 0.2, "Dropout default and positional p")
  check(math.abs(nn.LeakyReLU(0.1).slope - 0.1) < 1e-12, "LeakyReLU slope")
  for _, name in ipairs{"ReLU", "GELU", "Sigmoid", "Tanh", "Flatten", "Identity", "GlobalAvgPool"} do
    check(nn[name]():type() == name, name)
  end
  check(nn.BatchNorm2d(4).running_mean:numel() == 4 and nn.BatchNorm1d(3).weight:numel() == 3,
        "batch norm parameters and buffers")
  check(#nn.BatchNorm2d(4):buffers() == 2 and #nn.BatchNorm2d(4):parameters() == 2, "buffers apart")
  check(nn.Linear{["in"] = 3, out = 2}.weight:shape()[2] == 3, "positional arguments by name")
end)

test("constructor errors", function()
  check_error(function() nn.Conv2d(3, 8, 3, {strid = 2}) end,
              "nn.Conv2d: unknown option 'strid' (valid: in, out, k, stride, padding, bias)")
  check_error(function() nn.Conv2d(3, 8, 3, {stride = 0}) end, "stride must be a whole number >= 1, got 0")
  check_error(function() nn.Conv2d(3, 8, 3, {stride = "2"}) end, "must be a number, got string")
  check_error(function() nn.Conv2d(3, 8) end, "k is required")
  check_error(function() nn.Linear(3, 2.5) end, "out must be a whole number >= 1, got 2.5")
  check_error(function() nn.Linear("3", 2) end, "nn.Linear: argument 1 (in) must be a number, got string")
  check_error(function() nn.Linear(3, 2, 1) end, "3 positional arguments given, expected at most 2")
  check_error(function() nn.Linear(3, 2, {bias = 2}) end, "bias must be true or false")
  check_error(function() nn.Dropout(true) end, "must be a number, got a boolean")
  check_error(function() nn.Linear(3, 2, {3}) end, "options are given by name")
  check_error(function() nn.Linear(3, 2, {["in"] = 4}) end, "in is given twice")
  check_error(function() nn.Sequential{nn.ReLU(), 3} end, "item 2 is a number, expected a module")
  check_error(function() nn.Sequential(nn.ReLU(), "x") end, "item 2 is a string")
  check_error(function() nn.CrossEntropyLoss{smoothing = 0.1} end, "unknown option 'smoothing' (valid: label_smoothing)")
  check_error(function() nn.CrossEntropyLoss{label_smoothing = 2} end, "between 0 and 1")
end)

test("containers", function()
  local net = nn.Sequential{nn.Linear(4, 8), nn.ReLU()}
  check(#net == 2, "#net")
  local first = net[1]
  check(first == net[1] and rawequal(first, net[1]), "the same box for the same module")
  first.note = "hidden layer"
  first = nil
  collectgarbage(); collectgarbage()
  check(net[1].note == "hidden layer", "fields persist while the parent lives")
  check(net[3] == nil and net[0] == nil, "out of range is nil")
  net:add(nn.Linear(8, 2))
  check(#net == 3 and net[3]:type() == "Linear", "add")
  net:insert(1, nn.Identity())
  check(#net == 4 and net[1]:type() == "Identity" and net[2].note == "hidden layer", "insert shifts")
  local removed = net:remove(1)
  check(removed:type() == "Identity" and #net == 3 and net[1]:type() == "Linear", "remove returns it")
  check(net:remove():type() == "Linear" and #net == 2, "remove() takes the last")
  check_error(function() net:insert(5, nn.ReLU()) end, "position 5 is out of range (1 to 3)")
  check_error(function() net:remove(3) end, "position 3 is out of range (1 to 2)")
  check_error(function() net:add(net) end, "cannot hold itself")
  check_error(function() nn.ReLU():add(nn.ReLU()) end, "not a container")
  check_error(function() net[1] = nn.ReLU() end, "children are changed with add")
  local seq = nn.Sequential(nn.Linear(2, 3), nn.Tanh())
  check(#seq == 2, "varargs form")
  local n = 0
  for i, m in ipairs(seq) do n = n + i end
  check(n == 3, "ipairs over children")
  local res = nn.Residual{nn.Linear(3, 3), nn.ReLU()}
  check(#res == 2 and res:forward(tensor.ones(2, 3)):shape()[2] == 3, "Residual block")
end)

test("parameters share memory", function()
  tensor.seed(3)
  local net = nn.Sequential{nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)}
  net[1].weight:fill(0)
  net[1].bias:fill(0)
  check_close(net:forward(tensor.ones(4, 3)), tensor.zeros(4, 1) + net[3].bias:get(1), 1e-6,
              "zeroed first layer: output is the last bias")
  check(net[1].weight == net[1].weight, "the same tensor each time")
  local ps = net:parameters()
  check(#ps == 4 and ps[1].name == "1.weight" and ps[4].name == "3.bias", "names by 1-based path")
  ps[4].value:fill(2)
  check(net[3].bias:get(1) == 2, "editing parameters() edits the layer")
  net[3].weight = tensor.from{{1, 1}}
  check(net[3].weight:get(1, 2) == 1, "assigning a tensor copies into the parameter")
  check_error(function() net[3].weight = tensor.ones(3) end, "")
  check_error(function() net[1].out = 4 end, "read-only")
  check(ps[1].grad:shape()[1] == 2, "grads come along")
end)

test("forward and backward", function()
  tensor.seed(4)
  local net = seed_cnn()
  local x = tensor.randn(2, 3, 32, 32)
  local y = net:forward(x)
  check(y:shape()[1] == 2 and y:shape()[2] == 10, "seed CNN output [2, 10]")
  check(net(x):shape()[2] == 10, "m(x) calls forward")
  check(net[1]:output():shape()[2] == 32 and net[8]:input():shape()[2] == 4096, "outputs kept")
  net:zero_grad()
  local g = net:backward(tensor.ones(2, 10))
  check(g:shape()[1] == 2 and g:shape()[2] == 3 and g:shape()[3] == 32, "grad input has x's shape")
  check(math.abs(net[8]:parameters()[2].grad:get(1) - 2) < 1e-5, "bias grad = batch size")
  net:backward(tensor.ones(2, 10))
  check(math.abs(net[8]:parameters()[2].grad:get(1) - 4) < 1e-5, "backward adds")
  net:zero_grad()
  check(net[8]:parameters()[2].grad:sum() == 0, "zero_grad")
  check_error(function() net:forward(tensor.randn(2, 4, 32, 32)) end, "4 channels")
  check(net:train() == net and net.training and not net:eval().training and not net[1].training,
        "train/eval modes reach the children")
  check_close(nn.Linear(2, 2):to("cpu"):forward(tensor.ones(1, 2)):shape(), {1, 2}, 0, "to cpu")
  check_error(function() nn.Linear(2, 2):to("tpu") end, "unknown device 'tpu'")
end)

test("ReLU then MaxPool2d: one backward pass, the same gradients as two", function()
  -- A Sequential runs the pair's backward in the pool's pass; wrapping the ReLU in its own
  -- Sequential keeps them apart, so the two nets compute the same thing in two ways.
  local fused = nn.Sequential{nn.Conv2d(2, 3, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2)}
  local apart = nn.Sequential{nn.Conv2d(2, 3, 3, {padding = 1}), nn.Sequential{nn.ReLU()},
                              nn.MaxPool2d(2)}
  apart[1].weight:copy(fused[1].weight)
  apart[1].bias:copy(fused[1].bias)
  tensor.seed(7)
  local x = tensor.randn(2, 2, 6, 6)
  x:slice(4, 1, 2):slice(3, 1, 2):fill(-3) -- some windows whose maximum is 0 after the ReLU
  local gy = tensor.randn(2, 3, 3, 3)
  for _, net in ipairs{fused, apart} do net:forward(x); net:zero_grad() end
  check_close(fused:backward(gy), apart:backward(gy), 0, "input gradient")
  check_close(fused[1]:parameters()[1].grad, apart[1]:parameters()[1].grad, 0, "filter gradient")
  local pair = nn.Sequential{nn.ReLU(), nn.MaxPool2d(2)}
  local v = tensor.from{{{{-1, -2}, {-3, -4}}, {{0, 0}, {0, 0}}, {{-1, 5}, {2, 5}}}}
  pair:forward(v)
  check_close(pair:backward(tensor.from{{{{10}}, {{20}}, {{30}}}}),
              tensor.from{{{{0, 0}, {0, 0}}, {{0, 0}, {0, 0}}, {{0, 30}, {0, 0}}}}, 0,
              "only positive maxima pass the gradient (the first of equal ones)")
end)

test("max pools whose windows tile the input: the gradient, element by element", function()
  -- k == stride, no padding: the gradient is written window by window (AVX2 for k = 2, 8 outputs a
  -- step, and a tail); odd sizes leave a last row and column that no window reads. Checked
  -- against the argmax found here, with and without the ReLU fused in, on this CPU's kernels and
  -- on the portable ones.
  local function expected(x, gy, k, relu)
    local N, C, H, W = table.unpack(x:shape())
    local want = tensor.zeros(N, C, H, W)
    for n = 1, N do for c = 1, C do for oh = 1, H // k do for ow = 1, W // k do
      local best, bh, bw
      for h = (oh - 1) * k + 1, oh * k do for w = (ow - 1) * k + 1, ow * k do
        local v = x:get(n, c, h, w)
        if relu and v == v then v = math.max(v, 0) end
        if best == nil or v > best or (v ~= v and best == best) then best, bh, bw = v, h, w end
      end end
      if not relu or best > 0 then want:set(gy:get(n, c, oh, ow), n, c, bh, bw) end
    end end end end
    return want
  end
  tensor.seed(11)
  for _, case in ipairs{{2, 7, 19}, {2, 4, 32}, {3, 8, 29}} do
    local k, H, W = case[1], case[2], case[3]
    local x, gy = tensor.randn(2, 3, H, W), tensor.randn(2, 3, H // k, W // k)
    x:set(0 / 0, 1, 2, 1, 2) -- a NaN wins its window
    for _, relu in ipairs{false, true} do
      local want = expected(x, gy, k, relu)
      for _, isa in ipairs{"auto", "generic"} do
        sys.isa(isa)
        local net = relu and nn.Sequential{nn.ReLU(), nn.MaxPool2d(k)} or nn.Sequential{nn.MaxPool2d(k)}
        net:forward(x)
        check_close(net:backward(gy), want, 0,
                    string.format("%s: k=%d %dx%d relu=%s", sys.isa(), k, H, W, tostring(relu)))
      end
      sys.isa("auto")
    end
  end
end)

test("printing and summary", function()
  local net = seed_cnn()
  local text = tostring(net)
  check(text:find("Sequential(\n  (1): Conv2d(3, 32, k=3, stride=1, padding=1)\n  (2): ReLU()", 1, true),
        "PyTorch-like structure: " .. text)
  check(text:find("(8): Linear(4096, 10)\n)", 1, true), "last row and close")
  local out, totals = capture(function() return net:summary() end)
  check(totals.params == 60362, "seed CNN has 60,362 parameters: " .. tostring(totals.params))
  check(totals.macs == 5644288, "multiply-adds: " .. tostring(totals.macs))
  check(out:find("Total params: 60,362", 1, true), "total row")
  check(out:find("input%s+%[1, 3, 32, 32%]"), "default input from Conv2d(3, ...)")
  check(out:find("1  Conv2d(3, 32, k=3, stride=1, padding=1)", 1, true) and
        out:find("%[1, 32, 32, 32%]%s+896%s+884.7K%s+128.0 KiB"), "first row: " .. out)
  check(out:find("8  Linear(4096, 10)", 1, true) and out:find("40,970", 1, true), "last row")
  local r = nn.Sequential{nn.Conv2d(3, 4, 3, {padding = 1}), nn.Residual{nn.Conv2d(4, 4, 3, {padding = 1}), nn.ReLU()}}
  local rout = capture(function() r:summary{2, 3, 8, 8} end)
  check(rout:find("2  Residual", 1, true) and rout:find("  2.1  Conv2d(4, 4", 1, true), "nested rows: " .. rout)
  -- the input size comes from what the network accepts: a CNN for 16 x 16 pictures (cnn.lua's)
  local small = nn.Sequential(nn.Conv2d(1, 8, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(8 * 8 * 8, 3))
  local sout, stot = capture(function() return small:summary() end)
  check(sout:find("input%s+%[1, 1, 16, 16%]") and stot.params == 1619, "a 16 x 16 CNN's input found: " .. sout)
  -- no input shape to be had: the table without shapes, not an error
  local nout, ntot = capture(function() return nn.Sequential{nn.ReLU(), nn.Linear(2, 3)}:summary() end)
  check(nout:find("2  Linear(2, 3)", 1, true) and nout:find("Total params: 9", 1, true) and ntot.params == 9
        and nout:find("need the input shape", 1, true), "a table without shapes: " .. nout)
  check(select(1, nn.Conv2d(3, 8, 3):infer{1, 3, 32, 32})[4] == 30, "infer")
end)

test("losses with 1-based labels", function()
  local logits = tensor.from{{0, 0, 0}, {10, 0, 0}}
  local ce = nn.CrossEntropyLoss()
  local l = ce:forward(logits, tensor.from({1, 1}, "i32"))
  check(math.abs(l - (math.log(3) + 0) / 2) < 1e-4, "label 1 is the first class: " .. l)
  check(math.abs(ce(logits, tensor.from{1, 1}) - l) < 1e-7, "f32 whole-number labels, call form")
  check(math.abs(ce:forward(logits, {1, 1}) - l) < 1e-7, "a Lua list of labels")
  local g = ce:backward()
  check_close(g:sum(2), tensor.zeros(2), 1e-6, "gradient rows of softmax - onehot sum to 0")
  check(g:get(1, 1) < 0 and g:get(1, 2) > 0, "pushes toward the label")
  check_error(function() ce:forward(logits, {0, 1}) end, "not a class number from 1 to 3")
  check_error(function() ce:forward(logits, {1, 4}) end, "label 4.0 of sample 2")
  check_error(function() ce:forward(logits, {1.5, 1}) end, "not a class number")
  local probs = tensor.from{{1, 0, 0}, {1, 0, 0}}
  check(math.abs(ce:forward(logits, probs) - l) < 1e-5, "probabilities of the input's shape")
  local smooth = nn.CrossEntropyLoss{label_smoothing = 0.1}
  check(smooth:forward(logits, {1, 1}) > l and smooth.label_smoothing == 0.1, "label smoothing")
  check(tostring(smooth):find("label_smoothing", 1, true), "printed")
  local mse = nn.MSELoss()
  check(math.abs(mse:forward(tensor.ones(2, 2), tensor.zeros(2, 2)) - 1) < 1e-7, "mse")
  check_close(mse:backward(), tensor.full({2, 2}, 0.5), 1e-7, "mse gradient 2(x-t)/n")
  check_error(function() mse:forward(tensor.ones(2), {1, 2}) end, "must be a Tensor")
end)

test("TensorDataset", function()
  local x = tensor.arange(12):reshape(6, 2)
  local ds = nn.TensorDataset(x, tensor.from{1, 2, 3, 1, 2, 3})
  check(ds:size() == 6 and #ds == 6, "size")
  local xi, yi = ds:get(2)
  check_close(xi, {2, 3}, 0, "sample view")
  check(yi == 2 and math.type(yi) == "integer", "label as an integer")
  local xb, yb = ds:batch{6, 1}
  check_close(xb, {{10, 11}, {0, 1}}, 0, "gathered rows")
  check_close(yb, {3, 1}, 0, "gathered labels")
  check(yb:dtype() == "i32" and xb:dtype() == "f32", "dtypes")
  local xt = ds:batch(tensor.from({3}, "i32"))
  check_close(xt, {{4, 5}}, 0, "tensor of indices")
  check_error(function() ds:batch{7} end, "index 7.0 (item 1) out of range (1 to 6)")
  check_error(function() ds:get(0) end, "out of range")
  check_error(function() nn.TensorDataset(x, tensor.ones(5)) end, "x has 6 samples but y has 5")
  check_error(function() nn.TensorDataset(x, tensor.zeros(6)) end, "not a class number")
  local reg = nn.TensorDataset(x, tensor.randn(6, 3))
  local _, t = reg:get(1)
  check(tensor.is_tensor(t) and t:numel() == 3, "f32 targets stay tensors")
  check(tostring(ds):find("6 samples", 1, true), "printed")
  check(tostring(nn.TensorDataset(x, {1, 1, 1, 1, 1, 1})):find("labels", 1, true), "from a list")
end)

test("one SGD step by hand", function()
  local net = nn.Linear(2, 1)
  net.weight = tensor.from{{1, 2}}
  net.bias = tensor.from{0.5}
  local opt = optim.SGD(net, {lr = 0.1, momentum = 0.9})
  local mse = nn.MSELoss()
  -- y = 1 + 2 + 0.5 = 3.5; loss = 3.5^2; dL/dy = 7; dL/dw = [7, 7]; dL/db = 7
  opt:zero_grad()
  check(math.abs(mse:forward(net:forward(tensor.ones(1, 2)), tensor.zeros(1, 1)) - 12.25) < 1e-6, "loss")
  net:backward(mse:backward())
  opt:step()
  check_close(net.weight, {{0.3, 1.3}}, 1e-6, "w - lr * grad")
  check_close(net.bias, {-0.2}, 1e-6, "b - lr * grad")
  -- second step: y = 0.3 + 1.3 - 0.2 = 1.4, g = 2.8; buf = 0.9 * 7 + 2.8 = 9.1
  opt:zero_grad()
  mse:forward(net:forward(tensor.ones(1, 2)), tensor.zeros(1, 1))
  net:backward(mse:backward())
  opt:step()
  check_close(net.weight, {{0.3 - 0.91, 1.3 - 0.91}}, 1e-5, "momentum buffer 0.9 * 7 + 2.8")
  check(opt:steps() == 2 and opt:lr() == 0.1, "steps and lr")
  check(opt:set_lr(0.05):lr() == 0.05, "set_lr")
  check(opt:config().momentum == 0.9 and opt:config().kind == "sgd", "config")
  check(tostring(opt):find("SGD(lr=0.05, momentum=0.9", 1, true), "printed: " .. tostring(opt))
  -- clipping: gradient [7, 7, 7] has norm 7*sqrt(3)
  opt:zero_grad()
  net.weight = tensor.from{{1, 2}}
  net.bias = tensor.from{0.5}
  mse:forward(net:forward(tensor.ones(1, 2)), tensor.zeros(1, 1))
  net:backward(mse:backward())
  check(math.abs(opt:clip_grad_norm(1) - 7 * math.sqrt(3)) < 1e-4, "norm before clipping")
  check(math.abs(net:parameters()[1].grad:get(1, 1) - 1 / math.sqrt(3)) < 1e-4, "clipped to norm 1")
end)

test("optimizer errors and Adam", function()
  local net = nn.Linear(2, 1)
  check_error(function() optim.SGD(net) end, "lr is required")
  check_error(function() optim.SGD(net, {lr = 0.1, momentm = 0.9}) end,
              "optim.SGD: unknown option 'momentm' (valid: lr, momentum, dampening, nesterov, weight_decay, clip)")
  check_error(function() optim.SGD(net, {lr = -1}) end, "lr must be a finite number >= 0")
  check_error(function() optim.SGD(net, {lr = 0.1, nesterov = true}) end, "nesterov")
  check_error(function() optim.SGD(net, {lr = 0.1, nesterov = 1}) end, "nesterov must be true or false")
  check_error(function() optim.Adam(net, {betas = {0.9}}) end, "betas must be a pair")
  check_error(function() optim.Adam(net, {betas = {0.9, 1}}) end, "beta2")
  check_error(function() optim.Adam(3) end, "must be a network")
  local adam = optim.Adam(net, {lr = 0.01, clip = 1})
  check(adam:config().clip == 1 and adam:config().betas[2] == 0.999, "Adam defaults")
  check(optim.AdamW(net):config().weight_decay == 0.01, "AdamW default decay")
  -- Adam's first step moves every weight by lr (sign of the gradient)
  net.weight = tensor.from{{1, 2}}
  net.bias = tensor.from{0.5}
  adam:zero_grad()
  local mse = nn.MSELoss()
  mse:forward(net:forward(tensor.ones(1, 2)), tensor.zeros(1, 1))
  net:backward(mse:backward())
  adam:step()
  check_close(net.weight, {{0.99, 1.99}}, 1e-5, "first Adam step = lr * sign")
end)

test("schedules", function()
  local s = optim.schedule.step{every = 10, gamma = 0.5}
  check(math.abs(s(0, 0.1) - 0.1) < 1e-15 and math.abs(s(25, 0.1) - 0.025) < 1e-15, "step")
  local c = optim.schedule.cosine{total = 100, min_lr = 0.001}
  check(c(0, 0.1) == 0.1 and math.abs(c(30, 0.1) - 0.07959536998847742) < 1e-12 and
        math.abs(c(100, 0.1) - 0.001) < 1e-15 and math.abs(c(500, 0.1) - 0.001) < 1e-15,
        "cosine matches torch's CosineAnnealingLR")
  local w = optim.schedule.warmup{steps = 5, after = optim.schedule.cosine{total = 95}}
  check(math.abs(w(0, 0.1) - 0.02) < 1e-15 and math.abs(w(4, 0.1) - 0.1) < 1e-15 and w(5, 0.1) == 0.1,
        "warmup then cosine")
  check(math.abs(optim.schedule.warmup{steps = 2, ["then"] = function(k, b) return b / 2 end}(3, 1) - 0.5) < 1e-15,
        "['then'] and a plain function")
  local o = optim.schedule.onecycle{max_lr = 0.1, total = 100}
  -- values from torch.optim.lr_scheduler.OneCycleLR(max_lr=0.1, total_steps=100)
  for step, lr in pairs{[0] = 0.0040000000000000036, [10] = 0.029516394846410082, [29] = 0.1,
                        [50] = 0.0793893450575732, [99] = 4e-07} do
    check(math.abs(o(step) - lr) < 1e-12, "onecycle at step " .. step .. ": " .. o(step))
  end
  check(tostring(s) == "optim.schedule.step{every=10, gamma=0.5}", "printed: " .. tostring(s))
  check_error(function() optim.schedule.step{} end, "every must be a whole number >= 1")
  check_error(function() optim.schedule.cosine{total = 10, floor = 1} end, "unknown option 'floor'")
end)

test("save and load a network", function()
  tensor.seed(5)
  local net = seed_cnn()
  local path = os.tmpname()
  net:save(path)
  local back = nn.load(path)
  os.remove(path)
  check(tostring(back) == tostring(net), "same architecture")
  local x = tensor.randn(2, 3, 32, 32)
  check_close(back:forward(x), net:forward(x), 0, "same weights")
  check_error(function() nn.load(path) end, path)
end)

test("help", function()
  local function h(x) return (capture(help, x)) end
  check(h(nn.Conv2d):find("nn.Conv2d(in, out, k, {stride=1, padding=0, bias=true})", 1, true),
        "a constructor's help comes from its module type")
  check(h("nn.Conv2d") == h(nn.Conv2d), "by name and by value")
  check(h(nn.Linear(2, 2)):find("^Module: type") and h("Module:summary"):find("m:summary(", 1, true),
        "Module methods, Lua ones included")
  check(h(optim.schedule.cosine):find("optim.schedule.cosine{total=", 1, true), "nested names")
  check(h(nn.Trainer.load):find("nn.Trainer.load(path", 1, true), "Trainer.load")
  check(h("Trainer:fit"):find("Ctrl-C pauses", 1, true), "Trainer methods")
  check(h(nn.evaluate):find("confusion", 1, true) and h(optim.Adam):find("betas", 1, true), "functions")
  check(h(nn.CrossEntropyLoss()):find("^Loss: type") and h(nn.TensorDataset(tensor.zeros(1, 1), {1})):find("batch", 1, true),
        "Loss and TensorDataset methods")
end)

test("the same module twice in a network is refused, clone makes an independent copy", function()
  local l = nn.Linear(2, 2, {bias = false})
  check_error(function() nn.Sequential{l, nn.Tanh(), l} end, "already in this network")
  check_error(function() nn.Sequential{l, nn.Sequential(nn.ReLU(), l)} end, "already in this network")
  -- added to an inner container after nesting: the optimizer refuses the network
  local inner = nn.Sequential(nn.ReLU())
  local outer = nn.Sequential(l, inner)
  inner:add(l)
  check_error(function() optim.SGD(outer, {lr = 0.1}) end, "appears twice in the network")
  local c = l:clone()
  check(c.weight:sub(l.weight):abs():max() == 0, "clone copies the weight")
  local s = nn.Sequential{l, nn.Tanh(), c}
  check(#s:parameters() == 2, "two weights")
  c.weight = tensor.zeros(2, 2)
  check(l.weight:abs():max() > 0, "the clone shares no memory")
end)
