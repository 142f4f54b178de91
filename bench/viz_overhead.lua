-- viz_overhead.lua: what the live dashboard costs during training of the seed CNN (batch 64,
-- Adam, 2 threads); target: under 3% of training time at the default refresh (every 50 steps).
-- Two measures, both interleaving the two sides so that load from other processes falls on both:
--  1. step by step: the median step without the dashboard against the median step of a trainer
--     whose dashboard redraws after every step; the difference is one redraw, and the overhead
--     is that over 50 steps (medians shrug off bursts of other load);
--  2. directly: alternating segments of 100 steps with and without viz.dashboard(t) at its
--     default, totals compared (exact on an idle machine, noisy on a busy one).
-- With a display the window is open too (each redraw is also shown). The last line,
-- "viz overhead: X% of training time ...", is the figure README.md quotes (measure 1).
-- usage: nnlab bench/viz_overhead.lua [PEER_PYTHON PEERS_DIR]   (no peer: PyTorch has no dashboard)
local BATCH, EVERY = 64, 50
local PAIRS = 100                 -- measure 1: steps on each side
local SEGMENT, ROUNDS = 100, 4    -- measure 2

sys.threads(2)
tensor.seed(0)
local data = nn.TensorDataset(tensor.randn(BATCH * 20, 3, 32, 32),
                              (tensor.rand(BATCH * 20) * 10 - 0.5):to("i32") + 1)
local function trainer()
  local net = nn.Sequential{
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
  }
  local t = nn.Trainer{net = net, data = data, optim = optim.Adam(net, {lr = 1e-3}), batch = BATCH,
                       verbose = false}
  for _ = 1, 5 do t:step() end -- warm up: buffers allocated, caches filled
  return t
end
local function timed(t, steps)
  local t0 = sys.clock()
  for _ = 1, steps do t:step() end
  return sys.clock() - t0
end
local function median(v)
  table.sort(v)
  return v[(#v + 1) // 2]
end

local window = viz.show()
local plain, every_step, watched = trainer(), trainer(), trainer()

-- 1. step by step
viz.dashboard(every_step, {every = 1})
local p, w = {}, {}
for i = 1, PAIRS do
  p[i] = timed(plain, 1)
  w[i] = timed(every_step, 1)
end
local step, redraw = median(p), median(w) - median(p)

-- 2. directly
viz.dashboard(watched) -- the default: every 50 steps
local sum_plain, sum_watched = 0, 0
for round = 1, ROUNDS do
  local a, b = plain, watched
  if round % 2 == 0 then a, b = b, a end
  local ta, tb = timed(a, SEGMENT), timed(b, SEGMENT)
  if a == plain then sum_plain, sum_watched = sum_plain + ta, sum_watched + tb
  else sum_plain, sum_watched = sum_plain + tb, sum_watched + ta end
end

local w_, h_ = viz.status().width, viz.status().height
local by_step = 100 * redraw / (EVERY * step)
local direct = 100 * (sum_watched - sum_plain) / sum_plain
print(string.format("seed CNN training step (batch %d, %d threads): %.1f ms median, %.0f images/s",
                    BATCH, sys.threads(), 1000 * step, BATCH / step))
print(string.format("one dashboard redraw (%d x %d%s): %.1f ms median",
                    w_, h_, window and ", window open" or ", no display", 1000 * redraw))
print(string.format("dashboard overhead, directly: %.2f%% (%d steps each side: %.2f s without, %.2f s with)",
                    direct, SEGMENT * ROUNDS, sum_plain, sum_watched))
-- The figure README.md quotes: measure 1 (medians, robust to other load).
print(string.format("viz overhead: %.2f%% of training time with the dashboard every %d steps (%s; step by step): "
                    .. "%s the 3%% target", by_step, EVERY, window and "window open" or "no display",
                    by_step < 3 and "under" or "OVER"))
viz.close()
