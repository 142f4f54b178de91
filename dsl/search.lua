-- search.lua: a small hyperparameter search on top of run folders: search.grid and search.random
-- run each trial as a run (t:record), one after another, or one per rank under several ranks, then
-- print the trials ranked and plot them (viz.compare). Run once by nl_open_runs with the private C
-- helpers P (dsl/runs.c); returns its help rows.
local P = ...
local tensor, dist, viz, sys = tensor, dist, viz, sys
local util = require "nnlab.util"
local R = require "nnlab.runs"
local ddp = require "nnlab.dist"
local raise, check_options, check_int = util.error, util.check_options, util.check_int

local help_rows, doc = util.help_rows("search")

search = {}

local options = {"trainer", "space", "epochs", "eval", "dir", "metric", "seed", "trials", "plot", "dashboard"}

-- Ranking: larger is better for accuracies, smaller for losses.
local higher = {test_acc = true, train_acc = true, best_test_acc = true, train_loss = false,
                test_loss = false, loss = false}

-- The checked common options of grid and random.
local function common(opts, f)
  opts = check_options(opts, options, f)
  if type(opts.trainer) ~= "function" then
    raise(f .. ": trainer must be a function (params) -> nn.Trainer{...}, e.g. "
          .. "function(p) return nn.Trainer{net = ..., data = ..., optim = optim.SGD(net, {lr = p.lr}), batch = p.batch} end")
  end
  if type(opts.space) ~= "table" or next(opts.space) == nil then
    raise(f .. ": space must be a table {name = {values...}, ...}, e.g. {lr = {1e-3, 3e-3}, batch = {32, 64}}")
  end
  local names = {}
  for k in pairs(opts.space) do
    if type(k) ~= "string" then raise(f .. ": space's keys must be names, got " .. type(k)) end
    names[#names + 1] = k
  end
  table.sort(names)
  local epochs = check_int(opts.epochs or 1, "epochs", 1, f)
  if opts.dir ~= nil and (type(opts.dir) ~= "string" or opts.dir:gsub("/+$", "") == "") then
    raise(f .. ": dir must be a folder name (not the root), e.g. \"runs/lr-search\"")
  end
  local dir = opts.dir or ("runs/search-" .. os.date("!%Y%m%d-%H%M%S"))
  util.check_path(dir)
  local metric = opts.metric or (opts.eval and "test_acc" or "train_acc")
  if higher[metric] == nil then
    raise(f .. ": metric must be test_acc, train_acc, best_test_acc, train_loss, test_loss or loss, got " .. tostring(metric))
  end
  if (metric == "test_acc" or metric == "test_loss" or metric == "best_test_acc") and opts.eval == nil then
    raise(f .. ": metric " .. metric .. " needs eval = a data set to evaluate each trial on")
  end
  local seed = check_int(opts.seed or 1, "seed", 0, f)
  for _, k in ipairs{"plot", "dashboard"} do
    if opts[k] ~= nil and type(opts[k]) ~= "boolean" then
      raise(string.format("%s: %s must be true or false, got %s", f, k, type(opts[k])))
    end
  end
  return {trainer = opts.trainer, space = opts.space, names = names, epochs = epochs, eval = opts.eval,
          dir = dir:gsub("/+$", ""), metric = metric, seed = seed, plot = opts.plot ~= false,
          dashboard = opts.dashboard ~= false}
end

local function params_text(p, names)
  local parts = {}
  for _, k in ipairs(names) do parts[#parts + 1] = k .. "=" .. tostring(p[k]) end
  return table.concat(parts, " ")
end

-- Runs the trials (lists of params) as runs in o.dir/trial-NN; under several ranks trial i runs on
-- rank (i - 1) % N + 1, each trainer alone. Returns the ranked rows on rank 1 (nil elsewhere).
local function run_trials(o, trials, f)
  local width = #tostring(#trials)
  local N, me = dist.size(), dist.rank()
  local mine = {}
  local alone <close> = ddp.alone() -- trainers made now train by themselves, whatever the ranks
  for i, p in ipairs(trials) do
    if (i - 1) % N + 1 == me then
      local dir = string.format("%s/trial-%0" .. width .. "d", o.dir, i)
      tensor.seed(o.seed + i - 1) -- each trial's initialisation whatever ran before it, on any rank
      local ok, t = pcall(o.trainer, p)
      if not ok then raise(string.format("%s: trial %d (%s): the trainer function failed: %s", f, i,
                                         params_text(p, o.names), util.reason(t, f))) end
      if type(t) ~= "table" or type(t.record) ~= "function" then
        raise(string.format("%s: trial %d: the trainer function returned a %s, not an nn.Trainer", f, i, type(t)))
      end
      local record = {params = p}
      if not o.dashboard then record.dashboard = false end
      t:record(dir, record)
      local t0 = sys.clock()
      local _, paused = t:fit{epochs = o.epochs, eval = o.eval}
      local row = R.final(R.load(dir))
      local v = row[o.metric]
      print(string.format("trial %d/%d%s: %s  %s %s  (%.1f s)%s", i, #trials, N > 1 and (" on rank " .. me) or "",
                          params_text(p, o.names), o.metric, v and string.format("%.4g", v) or "-",
                          sys.clock() - t0, paused and "  paused: the search stops" or ""))
      mine[#mine + 1] = {i = i, dir = dir}
      if paused then break end
    end
  end
  local all = {mine}
  if N > 1 then
    all = dist.gather(mine)
    if not all then return nil end
  end
  local rows = {}
  for _, list in ipairs(all) do
    for _, m in ipairs(list) do
      local row = R.final(R.load(m.dir))
      row.trial = m.i
      rows[#rows + 1] = row
    end
  end
  local up = higher[o.metric]
  table.sort(rows, function(a, b)
    local x, y = a[o.metric], b[o.metric]
    local xn, yn = x == nil or x ~= x, y == nil or y ~= y
    if xn ~= yn then return yn end -- trials without the figure go last
    if xn or x == y then return a.trial < b.trial end
    if up then return x > y end
    return x < y
  end)
  print(string.format("%d trials in %s, ranked by %s:", #rows, o.dir, o.metric))
  R.print_table(rows, {"rank", function(_, k) return tostring(k) end})
  if o.plot and #rows > 0 and #rows <= 16 then
    local dirs, labels, by = {}, {}, nil
    for k, row in ipairs(rows) do dirs[k], labels[k] = row.dir, row.name .. " " .. row.params_text end
    for _, name in ipairs(o.names) do
      if by == nil and type(rows[1].params[name]) == "number" then by = name end
    end
    local ok, err = pcall(viz.compare, dirs, {by = by, metric = o.metric, labels = labels,
                                              title = o.metric .. " of each trial" .. (by and (" against " .. by) or "")})
    if not ok then print("search: the trials were not plotted: " .. util.reason(err, "viz.compare")) end
  end
  return util.quiet(rows)
end

-- Every combination of the space's values, in the order of the sorted names (the last varies
-- fastest).
function search.grid(opts)
  local f = "search.grid"
  local o = common(opts, f)
  if opts.trials ~= nil then raise(f .. ": trials is search.random's option (a grid runs every combination)") end
  local trials = {{}}
  for _, k in ipairs(o.names) do
    local values = o.space[k]
    if type(values) ~= "table" or #values == 0 then
      raise(string.format("%s: space.%s must be a list of values, e.g. {1e-3, 3e-3}", f, k))
    end
    local grown = {}
    for _, p in ipairs(trials) do
      for _, v in ipairs(values) do
        local q = {}
        for a, b in pairs(p) do q[a] = b end
        q[k] = v
        grown[#grown + 1] = q
      end
    end
    trials = grown
  end
  return run_trials(o, trials, f)
end
doc("grid", "search.grid{trainer=fn, space={name={values}}, epochs=1, eval=, metric=, dir=, seed=1, plot=true, dashboard=true} -> rows",
    "Trains one trial per combination of the space's values: trainer(params) builds an nn.Trainer, "
    .. "recorded as a run in dir/trial-NN (default runs/search-<date>) and fit for epochs (evaluated "
    .. "on eval when given). Prints the trials ranked by metric (test_acc with eval, else train_acc; "
    .. "train_loss, test_loss, loss and best_test_acc too) and plots them (viz.compare; dashboard = false: no "
    .. "dashboard.png per trial, which saves its drawing, tens of milliseconds). Each trial "
    .. "starts from tensor.seed(seed + trial - 1). Under several ranks (nnlab -n N) trial i runs on "
    .. "rank (i - 1) % N + 1 and rank 1 gets the rows (nil elsewhere).",
    "-- search.grid{trainer = make_trainer, space = {lr = {1e-3, 3e-3}, batch = {32, 64}}, epochs = 2}")

-- splitmix64: the random search's own generator (it leaves tensor's and math.random's alone).
local function generator(seed)
  local state = seed * 0x9E3779B97F4A7C15 + 1
  return function() -- a float in [0, 1)
    state = state + 0x9E3779B97F4A7C15
    local z = state
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    z = z ~ (z >> 31)
    return (z >> 11) * (1.0 / (1 << 53))
  end
end

function search.random(opts)
  local f = "search.random"
  local o = common(opts, f)
  local n = check_int(opts.trials or 8, "trials", 1, f)
  local u = generator(o.seed)
  -- Each name's draw: from a list, any value alike; from {min=, max= [, log=true] [, int=true]}, a
  -- value between (log: uniform in its logarithm).
  local draw = {}
  for _, k in ipairs(o.names) do
    local s = o.space[k]
    if type(s) ~= "table" then raise(string.format("%s: space.%s must be a list of values or {min=, max=, log=}", f, k)) end
    if #s > 0 then
      draw[k] = function() return s[math.floor(u() * #s) + 1] end
    elseif type(s.min) == "number" and type(s.max) == "number" and s.min <= s.max then
      if s.log and not (s.min > 0) then raise(string.format("%s: space.%s: log needs min > 0", f, k)) end
      draw[k] = function()
        local v = s.log and math.exp(math.log(s.min) + u() * (math.log(s.max) - math.log(s.min)))
          or s.min + u() * (s.max - s.min)
        if s.int then v = math.floor(v + 0.5) end
        return v
      end
    else
      raise(string.format("%s: space.%s must be a non-empty list of values or {min=, max= [, log=true, int=true]}", f, k))
    end
  end
  local trials = {}
  for i = 1, n do
    local p = {}
    for _, k in ipairs(o.names) do p[k] = draw[k]() end
    trials[i] = p
  end
  return run_trials(o, trials, f)
end
doc("random", "search.random{trainer=fn, space={name={values} or {min=, max=, log=, int=}}, trials=8, epochs=1, eval=, metric=, dir=, seed=1, plot=true, dashboard=true} -> rows",
    "Like search.grid, with `trials` random draws from the space (its own seeded generator: the same "
    .. "seed draws the same trials): a list gives one of its values, {min=, max=} a number between "
    .. "(log = true: uniform in the logarithm, for learning rates; int = true rounds).",
    "-- search.random{trainer = make_trainer, space = {lr = {min = 1e-4, max = 1e-1, log = true}}, trials = 8}")

return util.publish(help_rows, {search = search})
