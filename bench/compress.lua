-- compress.lua: the compressed seed CNNs side by side (compress.compare's truth table): parameters,
-- nonzeros, file size, multiply-adds, top-1 on the CIFAR-10 test set and measured latency and
-- images/s at batch 1 and 64 with the speed-up over the baseline, 2 threads.
-- The trained networks come from examples/compress_cifar10.lua (runs/seed_cnn*.safetensors);
-- without them the same compressions are applied to an untrained network (timings only).
-- usage: nnlab bench/compress.lua [PEER_PYTHON PEERS_DIR]   (no PyTorch peer for pruning)
sys.threads(2)
tensor.seed(0)

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local ok, _, test = pcall(data.cifar10)
local test_set = ok and data.loader(test, {batch = 256, shuffle = false, normalize = {mean = 0.5, std = 0.5}}) or nil

local models
if exists("runs/seed_cnn.safetensors") and exists("runs/seed_cnn_channels.safetensors") then
  print("networks trained by examples/compress_cifar10.lua (runs/)")
  models = {baseline = nn.load("runs/seed_cnn.safetensors")}
  for _, name in ipairs{"pruned80", "channels", "lowrank"} do
    local path = "runs/seed_cnn_" .. name .. ".safetensors"
    if exists(path) then models[name] = nn.load(path) end
  end
else
  print("no trained networks in runs/ (run examples/compress_cifar10.lua): untrained seed CNN, "
        .. "accuracies mean nothing")
  local function seed_cnn()
    return nn.Sequential{
      nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Linear(4096, 10),
    }
  end
  models = {baseline = seed_cnn(), pruned80 = seed_cnn(), channels = seed_cnn(), lowrank = seed_cnn()}
  local s = models.baseline:snapshot()
  for name, m in pairs(models) do if name ~= "baseline" then m:restore(s) end end
  prune.magnitude(models.pruned80, {amount = 0.8, scope = "global"})
  prune.channels(models.channels, {amount = 0.35})
  lowrank.factorize(models.lowrank, {rank = 16})
end

local r = compress.compare(models, test_set, {input = {1, 3, 32, 32}, time = 1})
print(r)
for _, e in ipairs(r) do
  print(string.format("RESULT model=%s top1=%s macs=%d latency1_ms=%.3f latency64_ms=%.2f img_s_64=%.0f speedup64=%.2f",
                      e.name, e.top1 and string.format("%.4f", e.top1) or "nan", e.macs, 1000 * e.latency_1,
                      1000 * e.latency_64, e.images_per_s_64, e.speedup_64))
end
