-- data_loader.lua: the cost of data loading next to a training step of the seed CNN (batch 64,
-- 2 threads): reading CIFAR-10 and its memory, the loader's preparation time per batch (normalise,
-- crop 4, flip, cutout 8; the caller waiting for each batch, so the thread's whole cost shows),
-- and training steps fed by that loader against steps fed by a plain ds:batch gather.
-- Uses data/cifar-10-batches-bin (make data) when there, else 50,000 random images.
-- usage: nnlab bench/data_loader.lua
local BATCH, STEPS, RUNS = 64, 20, 4
sys.threads(2)
tensor.seed(0)

local rss0, t0 = sys.memory().rss, sys.clock()
local ok, train = pcall(data.cifar10)
local source = "CIFAR-10"
if ok then
  print(string.format("data.cifar10(): %.2f s; resident memory +%.0f MiB for 60,000 images as bytes",
                      sys.clock() - t0, sys.memory().rss - rss0))
else
  source = "random images (no CIFAR-10: make data)"
  local labels = (tensor.rand(50000) * 10 - 0.5):to("i32") + 1
  train = data.from_tensors(tensor.rand(50000, 3, 32, 32), labels)
end

local augmented = {batch = BATCH, seed = 1, normalize = {mean = {0.49, 0.48, 0.45}, std = {0.25, 0.24, 0.26}},
                   augment = {crop = 4, flip = true, cutout = 8}}
local ld <close> = data.loader(train, augmented)
t0 = sys.clock()
local n = 0
for _ in ld:iter() do n = n + 1 end
local prep = (sys.clock() - t0) / n
print(string.format("loader: %.3f ms per batch of %d (%s, normalise + crop + flip + cutout, %d batches)",
                    prep * 1e3, BATCH, source, n))

local function trainer(d)
  local net = nn.Sequential{
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * 8 * 8, 10)}
  local t = nn.Trainer{net = net, data = d, optim = optim.Adam(net, {lr = 1e-3}), batch = BATCH, verbose = false}
  for _ = 1, 3 do t:step() end
  return t
end
local fed = {trainer(data.loader(train, augmented)), trainer(train)}
local best = {math.huge, math.huge}
for _ = 1, RUNS do -- interleaved, best of RUNS: a burst of load hurts neither side alone
  for k, t in ipairs(fed) do
    t0 = sys.clock()
    for _ = 1, STEPS do t:step() end
    best[k] = math.min(best[k], (sys.clock() - t0) / STEPS)
  end
end
print(string.format("seed CNN step: %.2f ms fed by the loader (augmented), %.2f ms by ds:batch (plain)",
                    best[1] * 1e3, best[2] * 1e3))
print(string.format("data preparation: %.1f%% of a step (target < 5%%); peak resident memory %.0f MiB",
                    100 * prep / best[1], sys.memory().peak))
