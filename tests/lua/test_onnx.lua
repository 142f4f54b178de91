-- test_onnx.lua: ONNX export checked by ONNX Runtime (tests/onnx/run_ort.js, the npm package
-- onnxruntime-node that `make test` installs into build/node_modules) on the same random batch as
-- nnlab, every layer type and the example networks (pruned, channel-pruned, low-rank, int8 on
-- CIFAR-10 images); round trips export -> onnx.load bit for bit; PyTorch-exported files
-- (tests/onnx/*.onnx, made by tests/golden/make_onnx.py) against PyTorch's saved outputs; bad
-- arguments and a corpus of damaged files. ONNX Runtime missing is a failure, not a skip.

local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p '" .. dir .. "'")
local function tmp(name) return dir .. "/" .. name end
local repo = os.getenv("NNLAB_REPO") or "."

-- ONNX Runtime's output for x (a Tensor) on the model at path, or nil and its message.
local function ort(path, x)
  x:save(tmp("in.npy"))
  os.remove(tmp("out.npy"))
  local p = io.popen(string.format("node '%s/tests/onnx/run_ort.js' '%s' '%s' '%s' 2>&1", repo, path,
                                   tmp("in.npy"), tmp("out.npy")))
  local msg = p:read("a")
  p:close()
  local ok, y = pcall(tensor.load, tmp("out.npy"))
  if not ok then return nil, msg end
  return y
end

-- The largest |a - b| relative to the largest |b| (1 when b is all zeros).
local function rel(a, b)
  local scale = math.max(b:abs():max(), 1e-30)
  return (a - b):abs():max() / scale
end

-- ---- ONNX Runtime is there (and loads its CPU library)
do
  local p = io.popen(string.format("node '%s/tests/onnx/run_ort.js' --version 2>&1", repo))
  local v = p:read("a")
  p:close()
  check(v:find("onnxruntime-node", 1, true) ~= nil,
        "ONNX Runtime runs (make test installs it into build/node_modules): " .. v)
end

local float_worst, float_count = 0, 0

-- Export net, run it in ONNX Runtime and nnlab on x; check agreement within tol and that the
-- file comes back (onnx.load) computing the same outputs bit for bit.
local function agree(name, net, x, opts, tol, inexact)
  net:eval()
  local path = tmp(name:gsub("[^%w]", "_") .. ".onnx")
  local ok, err = pcall(onnx.export, net, path, opts)
  if not check(ok, name .. ": export: " .. tostring(err)) then return end
  local want = net(x)
  local got, msg = ort(path, x)
  if not check(got ~= nil, name .. ": ONNX Runtime: " .. tostring(msg)) then return end
  local r = rel(got, want)
  check(r <= (tol or 1e-5), string.format("%s: ONNX Runtime differs from nnlab by %.3g relative", name, r))
  float_worst, float_count = math.max(float_worst, r), float_count + 1
  local back_ok, back = pcall(onnx.load, path)
  if check(back_ok, name .. ": onnx.load: " .. tostring(back)) then
    local y = back(x)
    if inexact then -- int4 comes back as float layers: other kernels, the same weights
      check(rel(y, want) <= 1e-5, name .. ": round trip within 1e-5")
    else
      check((y - want):abs():max() == 0, name .. ": round trip is bit for bit")
    end
  end
  return path, r
end

-- ---- every float layer type, alone (after what it needs) and nested
tensor.seed(3)
local x4 = tensor.randn(4, 3, 12, 12)
local x2 = tensor.randn(5, 16)
local function trained_bn(bn, x)
  bn:train()
  for _ = 1, 3 do bn(x * 2 + 1) end -- running statistics away from 0 and 1
  return bn
end
local layers = {
  {"Conv2d", nn.Conv2d(3, 6, 3, {padding = 1}), x4},
  {"Conv2d stride 2 no bias", nn.Conv2d(3, 6, 3, {stride = 2, padding = 1, bias = false}), x4},
  {"Conv2d 5x5", nn.Conv2d(3, 4, 5), x4},
  {"Linear", nn.Linear(16, 7), x2},
  {"Linear no bias", nn.Linear(16, 7, {bias = false}), x2},
  {"ReLU", nn.ReLU(), x4},
  {"LeakyReLU", nn.LeakyReLU(0.2), x4},
  {"GELU", nn.GELU(), x4},
  {"Sigmoid", nn.Sigmoid(), x4},
  {"Tanh", nn.Tanh(), x4},
  {"Softmax", nn.Softmax(), x2},
  {"MaxPool2d", nn.MaxPool2d(2), x4},
  {"MaxPool2d k3 s2 p1", nn.MaxPool2d(3, {stride = 2, padding = 1}), x4},
  {"AvgPool2d", nn.AvgPool2d(2), x4},
  {"AvgPool2d k3 s1 p1", nn.AvgPool2d(3, {stride = 1, padding = 1}), x4},
  {"GlobalAvgPool", nn.GlobalAvgPool(), x4},
  {"BatchNorm2d", trained_bn(nn.BatchNorm2d(3), x4), x4},
  {"BatchNorm2d no affine", trained_bn(nn.BatchNorm2d(3, {affine = false}), x4), x4},
  {"BatchNorm1d", trained_bn(nn.BatchNorm1d(16), x2), x2},
  {"Dropout", nn.Dropout(0.3), x4},
  {"Flatten", nn.Flatten(), x4},
  {"Identity", nn.Identity(), x4},
  {"Residual", nn.Residual(nn.Conv2d(3, 3, 3, {padding = 1}), nn.ReLU()), x4},
  {"nested Sequential", nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.Tanh())), nn.Flatten(),
                                      nn.Linear(4 * 144, 3)), x4},
}
for _, c in ipairs(layers) do
  local name, layer, x = c[1], c[2], c[3]
  agree(name, nn.Sequential(layer), x, {input = x:shape()})
end
agree("a lone layer", nn.Linear(16, 4), x2)
agree("GELU as one node (opset 20)", nn.Sequential(nn.GELU()), x4, {opset = 20, input = {4, 3, 12, 12}})
agree("fixed batch", nn.Sequential(nn.Conv2d(3, 2, 3)), x4, {input = {4, 3, 12, 12}, batch = "fixed"})

-- ---- the example networks
local function seed_cnn(c, side)
  return nn.Sequential{
    nn.Conv2d(c, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * (side // 4) * (side // 4), 10),
  }
end
local function better_cnn() -- examples/cifar10_better.lua's network
  local net = nn.Sequential{}
  local function block(cin, cout)
    net:add(nn.Conv2d(cin, cout, 3, {padding = 1, bias = false}))
    net:add(trained_bn(nn.BatchNorm2d(cout), tensor.randn(8, cout, 4, 4)))
    net:add(nn.ReLU())
  end
  block(3, 32) net:add(nn.MaxPool2d(2))
  block(32, 64) net:add(nn.MaxPool2d(2))
  block(64, 128) block(128, 128) net:add(nn.MaxPool2d(2))
  block(128, 256) net:add(nn.GlobalAvgPool())
  net:add(nn.Linear(256, 10))
  return net
end
local xb = tensor.randn(8, 3, 32, 32)
agree("seed CNN", seed_cnn(3, 32), xb)
local _, better_rel = agree("cifar10_better's net", better_cnn(), xb)
local pruned = seed_cnn(3, 32)
prune.magnitude(pruned, {amount = 0.7})
local path = agree("pruned seed CNN", pruned, xb)
if path then
  local back = onnx.load(path)
  check(prune.report(back).zeros == prune.report(pruned).zeros, "the pruned zeros stay zeros")
end
local chan = prune.channels(better_cnn(), {amount = 0.5})
agree("channel-pruned", chan, xb)
check(chan[1].out < 32, "channel pruning made the first layer thinner")
local lr = seed_cnn(3, 32)
lowrank.factorize(lr, {rank = 8})
agree("low-rank seed CNN", lr, xb)
agree("int4 as dequantized floats", quant.int4(seed_cnn(3, 32), {group = 32}), xb, nil, nil, true)

print(string.format("float: ONNX Runtime's outputs within %.2g of nnlab's (relative to the largest) for %d networks",
                    float_worst, float_count))

-- ---- names, doc string, atomic write
do
  local p = tmp("named.onnx")
  local net = seed_cnn(3, 32)
  onnx.export(net, p)
  local info = onnx.info(p)
  check(info.producer == "nnlab 0.1.0", "producer: " .. info.producer)
  check(info.doc:find("nnlab 0.1.0", 1, true) and info.doc:find("Conv2d(32, 64", 1, true), "doc string: " .. info.doc)
  local bytes = io.open(p, "rb"):read("a")
  for _, name in ipairs{"0.weight", "0.bias", "3.weight", "7.weight", "7.bias"} do
    check(bytes:find(name, 1, true), "initializer " .. name .. " named as in safetensors")
  end
  check(bytes:find("logits", 1, true) and bytes:find("input", 1, true), "input and logits")
  -- a failed export leaves the previous file as it was
  check_error(function() onnx.export(nn.Sequential(nn.Linear(4, 2), nn.FakeQuant()), p) end,
              "layer 2 (FakeQuant) cannot be exported", "QAT layer refused with its path")
  check(io.open(p, "rb"):read("a") == bytes, "the file is intact after a failed export")
end

-- ---- int8 (QDQ) on 1,000 CIFAR-10 test images (Fashion-MNIST when CIFAR-10 is missing)
do
  local ok, train, test = pcall(data.cifar10)
  local c, side, name = 3, 32, "CIFAR-10"
  if not ok then
    print("note: CIFAR-10 not found (make data); the int8 check runs on Fashion-MNIST")
    train, test = data.fashion_mnist()
    c, side, name = 1, 28, "Fashion-MNIST"
  end
  tensor.seed(1)
  local norm = {mean = 0.5, std = 0.5}
  local net = seed_cnn(c, side)
  local t = nn.Trainer{net = net, data = data.loader(train:subset(1, 2048), {batch = 64, shuffle = true, seed = 1,
                                                                            normalize = norm}),
                       loss = nn.CrossEntropyLoss(), optim = optim.Adam(net, {lr = 2e-3}), verbose = false}
  t:fit{epochs = 1}
  net:eval()
  local q = quant.int8(net, {calibrate = data.loader(train:subset(2049, 2560), {batch = 64, normalize = norm})})
  local path = tmp("int8.onnx")
  onnx.export(q, path)
  local loader = data.loader(test:subset(1, 1000), {batch = 250, normalize = norm})
  local same, total, worst_steps = 0, 0, 0
  for _ = 1, 4 do
    local x = loader:next()
    local want = q(x)
    local got, msg = ort(path, x)
    if not check(got ~= nil, "int8: ONNX Runtime: " .. tostring(msg)) then break end
    local a, b = want:argmax(2), got:argmax(2)
    same = same + (a:eq(b)):sum()
    total = total + x:shape()[1]
    -- the quantization step of the logits: their range over the batch in 255 steps of u8
    local s = (want:max() - want:min()) / 255
    worst_steps = math.max(worst_steps, (got - want):abs():max() / s)
  end
  local agreement = same / math.max(total, 1)
  print(string.format("int8 %s: ONNX Runtime agrees with nnlab on top-1 for %d of %d images (%.1f%%); "
                      .. "logits differ by at most %.2f quantization steps", name, same, total, 100 * agreement, worst_steps))
  check(total == 1000 and agreement >= 0.99, string.format("int8 top-1 agreement %.3f >= 0.99", agreement))
  check(worst_steps <= 1, string.format("int8 logits within one quantization step (%.2f)", worst_steps))
  local bytes = io.open(path, "rb"):read("a")
  for _, op in ipairs{"QuantizeLinear", "DequantizeLinear"} do check(bytes:find(op, 1, true), "QDQ: " .. op) end
  -- the QDQ file comes back as the same integer layers, computing the same bytes
  local back = onnx.load(path)
  check(tostring(back) == tostring(q), "int8 round trip: the same layers\n" .. tostring(back))
  loader:reset()
  local x = loader:next()
  check((back(x) - q(x)):abs():max() == 0, "int8 round trip is bit for bit")
end

agree("Quantize, u8 max pool, Dequantize", nn.Sequential(nn.Quantize(), nn.QMaxPool2d(2), nn.Dequantize()),
      tensor.randn(2, 3, 8, 8) * 40 + 60, {input = {2, 3, 8, 8}})

-- an int8 network that leaves the integer part for a float layer and enters it again, with a u8 max pool
do
  tensor.seed(4)
  local net = nn.Sequential(nn.Conv2d(3, 6, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(3, {stride = 1}),
                            nn.Conv2d(6, 4, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5), nn.ReLU(),
                            nn.Linear(5, 3))
  local x = tensor.randn(8, 3, 12, 12)
  local q = quant.int8(net, {calibrate = x})
  local path = agree("int8 with a float layer inside", q, x, nil, 0.05)
  local types = {}
  for i = 1, #q do types[#types + 1] = q[i]:type() end
  local _, quantizes = table.concat(types, " "):gsub("Quantize", "")
  check(quantizes == 2 and table.concat(types, " "):find("QMaxPool2d QConv2d Sigmoid", 1, true),
        "the test network leaves and re-enters the integer part: " .. table.concat(types, " "))
end

-- ---- PyTorch-exported files (tests/golden/make_onnx.py) against PyTorch's outputs
for _, name in ipairs{"seed_cnn", "bn_relu", "resnet"} do
  local base = repo .. "/tests/onnx/torch_" .. name
  local ok, net = pcall(onnx.load, base .. ".onnx")
  if check(ok, name .. ": onnx.load of PyTorch's file: " .. tostring(net)) then
    local x, want = tensor.load(base .. "_x.npy"), tensor.load(base .. "_y.npy")
    local r = rel(net(x), want)
    check(r <= 1e-5, string.format("%s: nnlab differs from PyTorch by %.3g relative", name, r))
    print(string.format("PyTorch %s: nnlab's outputs within %.2g relative of PyTorch's", name, r))
  end
end
do
  local net = onnx.load(repo .. "/tests/onnx/torch_resnet.onnx")
  local found = false
  for i = 1, #net do found = found or net[i]:type() == "Residual" end
  check(found, "PyTorch's skip connections become nn.Residual")
end

-- ---- bad arguments and refusals
check_error(function() onnx.export(nn.Linear(2, 2), tmp("x.onnx"), {opset = 9}) end, "opset 9 is not supported")
check_error(function() onnx.export(nn.Linear(2, 2), tmp("x.onnx"), {batch = "big"}) end, "batch must be")
check_error(function() onnx.export(nn.Linear(2, 2), tmp("x.onnx"), {inptu = {1, 2}}) end, "unknown option 'inptu'")
check_error(function() onnx.export(nn.Linear(2, 2), tmp("x.onnx"), {input = {1, 3}}) end, "3")
check_error(function() onnx.export(nn.Linear(2, 2), tmp("x.onnx"), {input = {1, -2}}) end, "from 1 to 2^40")
check_error(function() onnx.export(nn.Linear(2, 2), tmp("x.onnx"), {input = {1, 2.5}}) end, "not a whole number")
check_error(function() onnx.export(nn.Linear(2, 2), tmp("x.onnx"), {input = "big"}) end, "input must be a shape")
check_error(function() onnx.export(nn.Linear(2, 2), "/nonexistent/dir/x.onnx") end, "/nonexistent/dir")
check_error(function() onnx.export(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Linear(4, 2)), tmp("x.onnx"),
                                   {input = {1, 3, 6, 6}}) end, "layer 2 (Linear) cannot be exported: ONNX's Gemm takes 2-D")
check_error(function() onnx.export(nn.Sequential(nn.Linear(2, 2), nn.Dequantize()), tmp("x.onnx")) end,
            "layer 2 (Dequantize) cannot be exported: its input is not the u8 output")
check_error(function() onnx.export(nil, tmp("x.onnx")) end, "Module expected")
check_error(function() onnx.load(tmp("missing.onnx")) end, "cannot open")
check_error(function() onnx.load(42) end, "cannot open")

-- ---- damaged files: each a clear error, never a crash (the same corpus feeds the fuzzer)
local corpus = repo .. "/tests/fuzz/corpus/onnx"
local p = io.popen("ls '" .. corpus .. "' 2>/dev/null")
local n = 0
for f in p:lines() do
  if f:match("^bad_") then
    n = n + 1
    local ok, err = pcall(onnx.load, corpus .. "/" .. f)
    check(not ok and tostring(err):find("onnx.load", 1, true), f .. ": refused with a message: " .. tostring(err))
  end
end
p:close()
check(n >= 8, "the corpus has its damaged files (" .. n .. ")")

os.execute("rm -rf '" .. dir .. "'")
