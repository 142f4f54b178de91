-- train_step.lua: images per second of one training step of the seed CNN (conv3-32 k3 p1, ReLU,
-- maxpool 2, conv32-64 k3 p1, ReLU, maxpool 2, flatten, linear 4096-10; Adam 1e-3) at batch 64 on
-- random data with 2 threads, against PyTorch's seed CNN script run right after on the same machine.
-- usage: nnlab bench/train_step.lua [PEER_PYTHON PEERS_DIR]   (bench/run.sh passes both)
local peer_py, peers = arg and arg[1], arg and arg[2]
local STEPS, BATCH, WARMUP = 100, 64, 5

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
local t0 = sys.clock()
for _ = 1, STEPS - WARMUP do t:step() end
local ours = (STEPS - WARMUP) * BATCH / (sys.clock() - t0)
print(string.format("nnlab:   %.0f images/s (seed CNN train step, batch %d, %d threads, %d steps)",
                    ours, BATCH, sys.threads(), STEPS - WARMUP))

if not peer_py then
  print("peer: not run (pass the Python with torch and the peers folder: nnlab bench/train_step.lua /usr/bin/python3 ../shared/bench)")
  return
end
local cmd = string.format("%s %s/torch_seed_cnn.py x --synthetic --epochs 1 --train-images 6400 --threads 2 2>&1",
                          peer_py, peers)
local out = io.popen(cmd):read("a")
local theirs = tonumber(out:match("train_img_s=(%d+)"))
if not theirs then
  print("peer: failed: " .. cmd .. "\n" .. out)
  return
end
print(string.format("PyTorch: %.0f images/s (%s)", theirs, cmd:gsub(" 2>&1$", "")))
print(string.format("ratio nnlab / PyTorch: %.2f (target >= 0.80)", ours / theirs))
