-- train_step.lua: images per second of training steps of the seed CNN (conv3-32 k3 p1, ReLU,
-- maxpool 2, conv32-64 k3 p1, ReLU, maxpool 2, flatten, linear 4096-10; Adam 1e-3) at batch 64 on
-- random data with 2 threads through nn.Trainer, against PyTorch's seed CNN script run on the same
-- machine in the same run. Each side is timed twice, interleaved, and its best run counts, so a
-- burst of load from another process hurts neither side alone.
-- usage: nnlab bench/train_step.lua [PEER_PYTHON PEERS_DIR]   (bench/run.sh passes both)
local peer_py, peers = arg and arg[1], arg and arg[2]
local STEPS, BATCH, WARMUP, RUNS = 100, 64, 5, 2

sys.threads(2)
tensor.seed(0)
local net = nn.Sequential{
  nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
  nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
  nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
}
local data = nn.TensorDataset(tensor.randn(BATCH * STEPS, 3, 32, 32),
                              (tensor.rand(BATCH * STEPS) * 10 - 0.5):to("i32") + 1)
local t = nn.Trainer{net = net, data = data, optim = optim.Adam(net, {lr = 1e-3}), batch = BATCH,
                     verbose = false}
for _ = 1, WARMUP do t:step() end

local function ours()
  local t0 = sys.clock()
  for _ = 1, STEPS do t:step() end
  return STEPS * BATCH / (sys.clock() - t0)
end

local cmd = peer_py and string.format(
  "%s %s/torch_seed_cnn.py x --synthetic --epochs 1 --train-images 6400 --threads 2", peer_py, peers)
local function theirs()
  local out = io.popen(cmd .. " 2>&1"):read("a")
  return tonumber(out:match("train_img_s=(%d+)")) or error("peer failed: " .. cmd .. "\n" .. out, 0)
end

local best_ours, best_theirs = 0, 0
for _ = 1, RUNS do
  best_ours = math.max(best_ours, ours())
  if cmd then best_theirs = math.max(best_theirs, theirs()) end
end
print(string.format("nnlab:   %.0f images/s (seed CNN train step through nn.Trainer, batch %d, %d threads, best of %d x %d steps)",
                    best_ours, BATCH, sys.threads(), RUNS, STEPS))
if not cmd then
  print("peer: not run (nnlab bench/train_step.lua /usr/bin/python3 ../shared/bench runs it)")
  return
end
print(string.format("PyTorch: %.0f images/s (best of %d: %s)", best_theirs, RUNS, cmd))
print(string.format("ratio nnlab / PyTorch: %.2f (target >= 0.80)", best_ours / best_theirs))
