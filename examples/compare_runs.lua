-- compare_runs.lua: experiments you can compare later. The spirals of mlp.lua are learned with
-- three learning rates, each training recorded as a run folder in runs/spirals/ (its options,
-- manifest, losses and accuracies as CSV, a dashboard picture and the last checkpoint); then the
-- runs are listed and drawn side by side, and a small grid search picks a learning rate and a
-- width. Run it with
--     build/nnlab examples/compare_runs.lua
-- and, in any later session, runs.list("runs/spirals") or viz.compare("runs/spirals", {by = "lr"}).

tensor.seed(1)

-- The data: 3 spiral arms of 200 points (as in mlp.lua).
local K, N = 3, 200
local points, labels = {}, {}
local noise = tensor.randn(K * N):totable()
for arm = 1, K do
  for i = 1, N do
    local r = (i - 1) / (N - 1)
    local t = (arm - 1) * 4 + 4 * r + 0.2 * noise[(arm - 1) * N + i]
    points[#points + 1] = {r * math.sin(t), r * math.cos(t)}
    labels[#labels + 1] = arm
  end
end
local data = nn.TensorDataset(tensor.from(points), tensor.from(labels, "i32"))

-- A trainer for some hyperparameters: the learning rate and the hidden layers' width.
local function make_trainer(p)
  local net = nn.Sequential{nn.Linear(2, p.width), nn.ReLU(), nn.Linear(p.width, p.width), nn.ReLU(),
                            nn.Linear(p.width, K)}
  return nn.Trainer{net = net, data = data, batch = 32, optim = optim.Adam(net, {lr = p.lr}), verbose = false}
end

-- 1. Three runs, one per learning rate. The gradient norm of each step is recorded too (an
-- on_step function's values go into steps.csv and onto the dashboard).
for _, lr in ipairs{0.001, 0.01, 0.1} do
  tensor.seed(1) -- the same initial weights for every run: only the learning rate differs
  local t = make_trainer{lr = lr, width = 64}
  t:record("runs/spirals/lr" .. lr, {params = {lr = lr}})
  t:on_step(function(tr) return {grad_norm = tr:grad_norm()} end)
  t:fit{epochs = 15, eval = data}
end

-- 2. The runs as a table, and as one picture: the curves overlaid, and each run's final accuracy
-- against its learning rate (on a log scale).
runs.list("runs/spirals")
viz.save("runs/spirals-compare.png", viz.compare("runs/spirals", {by = "lr"}))
print("runs/spirals-compare.png: the three runs side by side")

-- 3. A small grid search: every combination of two learning rates and two widths, 8 epochs each,
-- ranked by accuracy (each trial is a run folder too, in runs/spirals-search/).
search.grid{trainer = make_trainer, space = {lr = {0.003, 0.03}, width = {16, 64}}, epochs = 8,
            eval = data, dir = "runs/spirals-search"}
viz.save("runs/spirals-search.png")
print("runs/spirals-search.png: the trials ranked")

-- Things to try: search.random{..., space = {lr = {min = 1e-4, max = 0.3, log = true}, width = {16, 32, 64}},
-- trials = 8}; runs.load("runs/spirals/lr0.01").manifest (what the run ran on); nn.Trainer.load(
-- "runs/spirals/lr0.01/checkpoint.safetensors", {data = data}) to go on training the best run.
