-- train_step.lua: images per second of training steps of the seed CNN (conv3-32 k3 p1, ReLU,
-- maxpool 2, conv32-64 k3 p1, ReLU, maxpool 2, flatten, linear 4096-10; Adam 1e-3) at batch 64 on
-- random data with 2 threads through nn.Trainer, and of its evaluation (nn.evaluate, batch 256, 2048
-- images), against PyTorch's seed CNN script run on the same machine in the same run; then the peak
-- resident memory of both processes. Each side is timed RUNS times, interleaved, and its best run
-- counts, so a burst of load from another process hurts neither side alone. The per-layer profile
-- is bench_layers' (run before this by bench/run.sh).
-- usage: nnlab bench/train_step.lua [PEER_PYTHON PEERS_DIR]   (bench/run.sh passes both)
local peer_py, peers = arg and arg[1], arg and arg[2]
local STEPS, BATCH, WARMUP, RUNS, EVAL_N = 100, 64, 5, 3, 2048

sys.threads(2)
tensor.seed(0)
local net, data = dofile("bench/lib/seed_cnn.lua")(BATCH * STEPS)
local t = nn.Trainer{net = net, data = data, optim = optim.Adam(net, {lr = 1e-3}), batch = BATCH,
                     verbose = false}
for _ = 1, WARMUP do t:step() end

local test = nn.TensorDataset(tensor.randn(EVAL_N, 3, 32, 32),
                              (tensor.rand(EVAL_N) * 10 - 0.5):to("i32") + 1)
nn.evaluate(net, test)

-- Training, then evaluation images per second.
local function ours()
  local t0 = sys.clock()
  for _ = 1, STEPS do t:step() end
  local t1 = sys.clock()
  nn.evaluate(net, test, {batch = 256})
  return STEPS * BATCH / (t1 - t0), EVAL_N / (sys.clock() - t1)
end

local cmd = peer_py and string.format(
  "%s %s/torch_seed_cnn.py x --synthetic --epochs 1 --train-images 6400 --threads 2", peer_py, peers)
local function theirs()
  local out = io.popen(cmd .. " 2>&1"):read("a")
  local train, eval, rss = out:match("RESULT train_img_s=(%d+) eval_img_s=(%d+).- peak_rss_mb=(%d+)")
  if not train then error("peer failed: " .. cmd .. "\n" .. out, 0) end
  return tonumber(train), tonumber(eval), tonumber(rss)
end

local best = {ours = {0, 0}, theirs = {0, 0}}
local their_rss = 0
for _ = 1, RUNS do
  local tr, ev = ours()
  best.ours = {math.max(best.ours[1], tr), math.max(best.ours[2], ev)}
  if cmd then
    local ptr, pev, rss = theirs()
    best.theirs = {math.max(best.theirs[1], ptr), math.max(best.theirs[2], pev)}
    their_rss = math.max(their_rss, rss)
  end
end
print(string.format("nnlab:   train %.0f images/s (nn.Trainer, batch %d, %d threads, best of %d x %d steps), "
                    .. "eval %.0f images/s (nn.evaluate, batch 256, %d images), peak RSS %.0f MiB",
                    best.ours[1], BATCH, sys.threads(), RUNS, STEPS, best.ours[2], EVAL_N, sys.memory().peak))
if not cmd then
  print("peer: not run (nnlab bench/train_step.lua /usr/bin/python3 bench/peers runs it)")
  return
end
print(string.format("PyTorch: train %.0f images/s, eval %.0f images/s, peak RSS %.0f MiB (best of %d: %s)",
                    best.theirs[1], best.theirs[2], their_rss, RUNS, cmd))
print(string.format("ratio nnlab / PyTorch: train %.2f, eval %.2f (targets >= 1.2); peak RSS %.2f",
                    best.ours[1] / best.theirs[1], best.ours[2] / best.theirs[2],
                    sys.memory().peak / their_rss))
