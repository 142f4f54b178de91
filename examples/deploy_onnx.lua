-- deploy_onnx.lua: the seed CNN leaves the lab. Load it (runs/seed_cnn.safetensors, which
-- compress_cifar10.lua saves) or train it, quantize it to int8, export both as ONNX models and
-- print the two files' sizes; when ONNX Runtime is at hand (`make test` installs its Node package
-- into build/node_modules), run both files in it on test images and compare with nnlab.
--
--   build/nnlab examples/deploy_onnx.lua [epochs=2] [images=50000]
--
-- The files go to runs/seed_cnn.onnx and runs/seed_cnn_int8.onnx. Run them elsewhere with any
-- ONNX runtime: input "input" [N, 3, 32, 32] (pixels / 255 - 0.5) / 0.5, output "logits" [N, 10].

local epochs = tonumber(arg and arg[1]) or 2
local images = tonumber(arg and arg[2]) or 50000
tensor.seed(1)
os.execute("mkdir -p runs")

local ok, train, test = pcall(data.cifar10)
if not ok then
  print("\n*** CIFAR-10 NOT FOUND: " .. tostring(train)
        .. "\n*** THIS RUN USES FASHION-MNIST INSTEAD (28x28 grey images); `make data` gets CIFAR-10.\n")
  train, test = data.fashion_mnist()
end
local c, side = train:get(1):shape()[1], train:get(1):shape()[2]
if images < train:size() then train = train:subset(1, images) end
local norm = {mean = 0.5, std = 0.5}
local test_batches = data.loader(test:subset(1, math.min(test:size(), 1000)), {batch = 250, normalize = norm})

-- ---- the network: loaded when compress_cifar10.lua saved one for this data, else trained here
local saved = "runs/seed_cnn.safetensors"
local net
local f = io.open(saved, "rb")
if f then
  f:close()
  local loaded, m = pcall(nn.load, saved)
  if loaded and pcall(m.infer, m, {1, c, side, side}) then
    net = m
    print("loaded " .. saved)
  end
end
if not net then
  net = nn.Sequential{
    nn.Conv2d(c, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * (side // 4) * (side // 4), 10),
  }
  print(string.format("training the seed CNN: %d epochs on %d images", epochs, train:size()))
  nn.Trainer{net = net, data = data.loader(train, {batch = 64, shuffle = true, seed = 1, normalize = norm}),
             loss = nn.CrossEntropyLoss(), optim = optim.Adam(net, {lr = 1e-3})}:fit{epochs = epochs}
end
net:eval()

-- ---- int8: activation ranges from 8 batches of training images
local q = quant.int8(net, {calibrate = data.loader(train, {batch = 64, normalize = norm}), batches = 8})

-- ---- export both
local files = {{"float32", net, "runs/seed_cnn.onnx"}, {"int8 (QDQ)", q, "runs/seed_cnn_int8.onnx"}}
for _, e in ipairs(files) do
  onnx.export(e[2], e[3], {input = {1, c, side, side}})
  local fh = assert(io.open(e[3], "rb"))
  local size = fh:seek("end")
  fh:close()
  print(string.format("%-11s %-24s %9d bytes   nnlab top-1 %.1f%% on %d test images", e[1], e[3], size,
                      100 * nn.evaluate(e[2], test_batches).top1, test_batches:size()))
end

-- ---- ONNX Runtime, when its Node package is installed (make test does it)
local probe = io.popen("node tests/onnx/run_ort.js --version 2>/dev/null")
local version = probe and probe:read("a") or ""
if probe then probe:close() end
if not version:find("onnxruntime", 1, true) then
  print("ONNX Runtime not found (node and build/node_modules/onnxruntime-node, from `make test`): skipped the comparison")
  return
end
io.write("ONNX Runtime: ", version)
local tmp = os.tmpname()
for _, e in ipairs(files) do
  local same, total, worst = 0, 0, 0
  test_batches:reset()
  while true do
    local x = test_batches:next()
    if not x then break end
    x:save(tmp .. ".in.npy")
    assert(os.execute(string.format("node tests/onnx/run_ort.js '%s' '%s.in.npy' '%s.out.npy'", e[3], tmp, tmp)))
    local got, want = tensor.load(tmp .. ".out.npy"), e[2](x)
    same = same + got:argmax(2):eq(want:argmax(2)):sum()
    total = total + x:shape()[1]
    worst = math.max(worst, (got - want):abs():max() / want:abs():max())
  end
  print(string.format("%-11s ONNX Runtime's top-1 class = nnlab's on %d of %d images; largest logit difference "
                      .. "%.2g of the largest logit", e[1], same, total, worst))
end
os.remove(tmp)
os.remove(tmp .. ".in.npy")
os.remove(tmp .. ".out.npy")
