-- sparse_cnn.lua: the end-to-end effect of sparse execution: the seed CNN pruned to 90% by global
-- magnitude, in evaluation mode, images/s at batch 64 and batch 1 with the sparse kernels on
-- (prune.sparse_threshold(true), the measured defaults) and off (false), the two taking turns in
-- every round, fastest forward of each kept; then the same for the unpruned network (what the
-- per-forward check costs a net that stays dense), and top-1 on the CIFAR-10 test set both ways.
-- The network is runs/seed_cnn.safetensors (examples/compress_cifar10.lua trains it) when present,
-- else an untrained one (timings only). 2 threads.
-- usage: nnlab bench/sparse_cnn.lua [ROUNDS]
sys.threads(2)
tensor.seed(0)
local rounds = tonumber(arg and arg[1]) or 20

local function seed_cnn()
  local f = io.open("runs/seed_cnn.safetensors", "rb")
  if f then
    f:close()
    return nn.load("runs/seed_cnn.safetensors"), "trained (runs/seed_cnn.safetensors)"
  end
  return nn.Sequential{
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(4096, 10),
  }, "untrained"
end

-- Fastest forward of net on x with sparse execution off and on, taking turns for `rounds` rounds of
-- about 0.05 s each side.
local function race(net, x)
  local function side(on) return function(v) prune.sparse_threshold(on); return net:forward(v) end end
  local t = compress.fastest({side(false), side(true)}, x, {rounds = rounds, time = 0.05 * rounds})
  prune.sparse_threshold(true)
  return {off = t[1], on = t[2]}
end

local function rows(label, net)
  net:eval()
  for _, batch in ipairs{64, 1} do
    local best = race(net, tensor.randn(batch, 3, 32, 32))
    print(string.format("%-22s batch %2d: dense %8.0f img/s (%.3f ms), sparse %8.0f img/s (%.3f ms), %.2fx",
                        label, batch, batch / best.off, 1000 * best.off, batch / best.on, 1000 * best.on,
                        best.off / best.on))
  end
end

local net, what = seed_cnn()
local dense_net = seed_cnn()
print("seed CNN, " .. what .. ", pruned to 90% (global magnitude); evaluation mode; "
      .. string.format("fastest forward over %d interleaved rounds", rounds))
prune.magnitude(net, {amount = 0.9, scope = "global"})
net:eval()
print(prune.report(net))
rows("pruned 90%", net)
rows("unpruned", dense_net)

local ok, _, test = pcall(data.cifar10)
if ok and what ~= "untrained" then
  local loader = data.loader(test, {batch = 256, shuffle = false, normalize = {mean = 0.5, std = 0.5}})
  local top1 = {}
  for _, side in ipairs{"off", "on"} do
    prune.sparse_threshold(side == "on")
    top1[side] = nn.evaluate(net, loader, {loss = false}).top1
  end
  prune.sparse_threshold(true)
  print(string.format("top-1 of the pruned net on the test set: dense %.2f%%, sparse %.2f%%", 100 * top1.off,
                      100 * top1.on))
end
