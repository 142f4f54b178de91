-- viz_overhead.lua: what the live dashboard costs during training: steps of the seed CNN (batch
-- 64, Adam, 2 threads) with and without viz.dashboard(t) at its default refresh (every 50 steps).
-- The two trainers run in alternating segments of 100 steps (which goes first alternates too), so
-- load from other processes falls on both alike; the totals are compared. Target: under 3% of
-- training time. With a display the window is open too (each refresh is also shown).
-- usage: nnlab bench/viz_overhead.lua [PEER_PYTHON PEERS_DIR]   (no peer: PyTorch has no dashboard)
local SEGMENT, ROUNDS, BATCH = 100, 6, 64

sys.threads(2)
tensor.seed(0)
local function seed_cnn()
  return nn.Sequential{
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
  }
end
local data = nn.TensorDataset(tensor.randn(BATCH * 20, 3, 32, 32),
                              (tensor.rand(BATCH * 20) * 10 - 0.5):to("i32") + 1)
local function trainer()
  local net = seed_cnn()
  local t = nn.Trainer{net = net, data = data, optim = optim.Adam(net, {lr = 1e-3}), batch = BATCH,
                       verbose = false}
  for _ = 1, 5 do t:step() end -- warm up: buffers allocated, caches filled
  return t
end

local plain, watched = trainer(), trainer()
local window = viz.show()
viz.dashboard(watched) -- the default: redrawn every 50 steps

local function run(t)
  local t0 = sys.clock()
  for _ = 1, SEGMENT do t:step() end
  return sys.clock() - t0
end

local sum_plain, sum_watched = 0, 0
for round = 1, ROUNDS do
  if round % 2 == 1 then
    sum_plain = sum_plain + run(plain)
    sum_watched = sum_watched + run(watched)
  else
    sum_watched = sum_watched + run(watched)
    sum_plain = sum_plain + run(plain)
  end
end

local steps, redraws = SEGMENT * ROUNDS, SEGMENT * ROUNDS // 50
print(string.format("training without the dashboard: %.0f images/s (%.2f s for %d steps)",
                    steps * BATCH / sum_plain, sum_plain, steps))
print(string.format("training with the dashboard:    %.0f images/s (%.2f s, %d redraws, %s)",
                    steps * BATCH / sum_watched, sum_watched, redraws,
                    window and "window open" or "no display"))
print(string.format("one redraw (features forward, weights, curves, %d x %d pixels): %.1f ms",
                    viz.status().width, viz.status().height, 1000 * (sum_watched - sum_plain) / redraws))
print(string.format("dashboard overhead: %.2f%% of training time (target < 3%%)",
                    100 * (sum_watched - sum_plain) / sum_plain))
viz.close()
