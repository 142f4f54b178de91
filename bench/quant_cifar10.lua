-- quant_cifar10.lua: top-1 accuracy of the seed CNN on CIFAR-10's 10,000 test images in fp32 and
-- after quantization (int8 min/max and percentile calibration, int4 weights, int8 through QAT),
-- with the int8 speed at batch 64. The fp32 net is trained here (EPOCHS, default 3, Adam 1e-3,
-- batch 64) and cached in build/quant_seed_cnn.safetensors for later runs. Skipped without
-- CIFAR-10 (`make data`).
local ok, train, test = pcall(data.cifar10)
if not ok then
  print("CIFAR-10 not available (" .. tostring(train) .. "): accuracy not measured")
  return
end
tensor.seed(1)
local norm = {mean = 0.5, std = 0.5}
local train_batches = data.loader(train, {batch = 64, shuffle = true, seed = 1, normalize = norm})
local test_batches = data.loader(test, {batch = 256, shuffle = false, normalize = norm})
local cache = "build/quant_seed_cnn.safetensors"

local f = io.open(cache, "rb")
local net
if f then
  f:close()
  net = nn.load(cache)
  print("fp32 seed CNN loaded from " .. cache)
else
  net = nn.Sequential{
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(4096, 10),
  }
  local epochs = tonumber(os.getenv("EPOCHS") or "3")
  local t = nn.Trainer{net = net, data = train_batches, loss = nn.CrossEntropyLoss(),
                       optim = optim.Adam(net, {lr = 1e-3}), verbose = false}
  t:fit{epochs = epochs}
  net:save(cache)
  print(string.format("fp32 seed CNN trained for %d epochs, saved to %s", epochs, cache))
end
net:eval()

local function top1(m) return 100 * nn.evaluate(m, test_batches, {loss = false}).top1 end
local base = top1(net)
print(string.format("%-28s top-1 %6.2f%%", "fp32", base))
local function row(name, m, target)
  local acc = top1(m)
  print(string.format("%-28s top-1 %6.2f%%  (%+.2f points%s)", name, acc, acc - base,
                      target and "; target: drop <= 0.5" or ""))
  return m
end
local q = row("int8 minmax (8x64 calib.)", quant.int8(net, {calibrate = train_batches, batches = 8}), true)
row("int8 percentile 99.99", quant.int8(net, {calibrate = train_batches, batches = 8, method = "percentile"}), true)
row("int4 weights (group 32)", quant.int4(net, {group = 32}))

-- QAT: one short fine-tuning pass (200 steps, SGD lr 1e-3) from the fp32 weights, then convert.
local qat = quant.qat(net)
local t = nn.Trainer{net = qat, data = train_batches, loss = nn.CrossEntropyLoss(),
                     optim = optim.SGD(qat, {lr = 1e-3, momentum = 0.9}), verbose = false}
for _ = 1, 200 do t:step() end
row("int8 via QAT (200 steps)", quant.convert(qat), true)
print(quant.report(q))
