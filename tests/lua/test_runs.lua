-- test_runs.lua: run folders (written as training goes, after a Ctrl-C and after an error, read
-- back), runs.list, viz.compare and viz.curves over saved runs (pixel checks), the dashboard's
-- on_step values (pixel check), search.grid/search.random ranking their trials, the manifest and
-- the journal's header (fields checked against the machine), and pruning a layer written in Lua.

local base = os.tmpname()
os.remove(base)
assert(os.execute("mkdir -p '" .. base .. "'"))

local BLUE, ORANGE = {31, 119, 180}, {255, 127, 14} -- the palette's first two colours (tab10)

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

local function lines_of(path)
  local out = {}
  for line in io.lines(path) do out[#out + 1] = line end
  return out
end

-- Two classes split by the sign of the first coordinate: a Linear learns them.
tensor.seed(3)
local X = tensor.randn(64, 2)
local Y = X:slice(2, 1, 1):reshape(64):gt(0):to("f32") + 1
local data = nn.TensorDataset(X, Y)

local function trainer(opts)
  local net = nn.Sequential{nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)}
  if opts.before then opts.before() end
  local t = nn.Trainer{net = net, data = data, batch = 16, verbose = false,
                       optim = optim.SGD(net, {lr = opts.lr or 0.1}), run = opts.run}
  return t
end

-- The pixels of exactly colour rgb in rows y0..y1: their count and mean column.
local function colour_in_rows(c, rgb, y0, y1)
  local w = c:size()
  local n, sx = 0, 0
  for y = y0, y1 do
    for x = 1, w do
      local r, g, b = c:pixel(x, y)
      if r == rgb[1] and g == rgb[2] and b == rgb[3] then n, sx = n + 1, sx + x end
    end
  end
  return n, n > 0 and sx / n or 0
end

test("a run folder holds options, manifest, histories, status, dashboard and checkpoint", function()
  local dir = base .. "/runs/first"
  local before
  local t = trainer{run = dir, before = function() before = runs.manifest() end}
  t:on_step(function(tr) return {grad_norm = tr:grad_norm(), seven = 7} end)
  t:fit{epochs = 3, eval = data}
  for _, f in ipairs{"options.json", "manifest.json", "steps.csv", "epochs.csv", "status.json",
                     "dashboard.png", "checkpoint.safetensors"} do
    check(exists(dir .. "/" .. f), f .. " written")
  end
  local steps = lines_of(dir .. "/steps.csv")
  check(steps[1] == "step,epoch,loss,lr,grad_norm,seven", "steps.csv header: " .. steps[1])
  check(#steps == t.steps + 1, string.format("one row a step: %d rows, %d steps", #steps - 1, t.steps))
  local r = runs.load(dir)
  check_close(r.history.loss, t.history.loss, 1e-8, "the losses as trained")
  check_close(r.history.test_acc, t.history.test_acc, 1e-8, "the test accuracies")
  check_close(r.history.extra.grad_norm, t.history.extra.grad_norm, 1e-8, "the on_step values")
  check(r.history.extra.seven[t.steps] == 7 and #r.history.extra.seven == t.steps, "every step's value")
  check(#lines_of(dir .. "/epochs.csv") == 4, "epochs.csv: a header and 3 epochs")
  check(r.status.state == "finished" and r.status.steps == t.steps, "status finished at the last step")
  check(r.options.batch == 16 and r.options.optimizer.kind == "sgd" and r.options.samples == 64,
        "the options: batch, optimizer, samples")
  local m = r.manifest
  local info = sys.info()
  check(m.nnlab == info.version and m.commit == info.commit and m.cpu == info.cpu.model,
        "manifest: version, commit and CPU of this program")
  check(m.rng.seed == before.rng.seed and m.rng.counter == before.rng.counter,
        "manifest: the generator's state when the run started")
  local again = nn.Trainer.load(dir .. "/checkpoint.safetensors", {data = data, verbose = false})
  check(again.steps == t.steps and again.epochs == 3, "the last checkpoint is the end of the run")
  check_close(net_weights(again.net), net_weights(t.net), 0, "the checkpoint holds the final weights")
  check_close(again.history.extra.seven, t.history.extra.seven, 0, "on_step values survive a checkpoint")
end)

test("an interrupted run leaves a consistent folder, and resuming completes it", function()
  local dir = base .. "/runs/interrupted"
  local t = trainer{run = dir}
  t:on_step(function(tr) if tr.steps == 6 then nn._interrupt() end end)
  local _, paused = t:fit{epochs = 3}
  check(paused == "paused" and t.steps == 6, "Ctrl-C paused the fit at step 6")
  local r = runs.load(dir)
  check(r.status.state == "paused" and r.status.steps == 6, "status: paused at step 6")
  check(#r.history.loss == 6, "steps.csv holds the 6 steps done")
  check(#r.history.train_acc == 1, "epochs.csv holds the one epoch done")
  local ck = nn.Trainer.load(dir .. "/checkpoint.safetensors", {data = data, verbose = false})
  check(ck.steps == 6 and ck.pos == 2, "the checkpoint is at the pause")
  t:resume()
  r = runs.load(dir)
  check(r.status.state == "finished" and #r.history.loss == 12, "resumed to the end: 12 steps")
  local p = io.popen("ls -a '" .. dir .. "'")
  local listing = p:read("a")
  p:close()
  check(not listing:find(".tmp.", 1, true), "no temporary file left: " .. listing)

  local failing = base .. "/runs/failing"
  local u = trainer{run = failing}
  u:on_step(function(tr) if tr.steps == 3 then error("the hook broke") end end)
  check_error(function() u:fit{epochs = 2} end, "the hook broke", "the error reaches the caller")
  r = runs.load(failing)
  check(r.status.state == "failed" and tostring(r.status.error):find("the hook broke", 1, true),
        "status: failed, with the error")
  check(#r.history.loss == 3 and exists(failing .. "/checkpoint.safetensors"), "3 steps recorded, a checkpoint")
end)

test("runs.list tabulates the runs; viz.compare and viz.curves overlay them", function()
  local dir = base .. "/cmp"
  for _, lr in ipairs{0.01, 0.5} do
    local t = trainer{lr = lr}
    t:record(dir .. "/lr" .. lr, {params = {lr = lr}})
    t:fit{epochs = 3, eval = data}
  end
  local out, rows = capture(runs.list, dir)
  check(#rows == 2 and rows[1].name == "lr0.01" and rows[2].name == "lr0.5", "two runs, by name")
  check(out:find("lr0.5", 1, true) and out:find("lr=0.5", 1, true) and out:find("test acc", 1, true),
        "the table names the runs, their params and figures:\n" .. out)
  check(rows[2].epochs == 3 and rows[2].steps == 12 and rows[2].state == "finished", "epochs, steps, state")
  check(rows[2].test_acc > rows[1].test_acc, string.format("lr 0.5 learned more: %.3f vs %.3f",
                                                            rows[2].test_acc, rows[1].test_acc))
  local c = viz.compare(dir, {by = "lr", width = 600, height = 500})
  local _, h = c:size()
  local nb, xb = colour_in_rows(c, BLUE, 1, math.floor(h * 0.55))
  local no, _ = colour_in_rows(c, ORANGE, 1, math.floor(h * 0.55))
  check(nb > 50 and no > 50, string.format("both runs' curves drawn: %d and %d pixels", nb, no))
  nb, xb = colour_in_rows(c, BLUE, math.floor(h * 0.62), h)
  local xo
  no, xo = colour_in_rows(c, ORANGE, math.floor(h * 0.62), h)
  check(nb > 5 and no > 5, "a dot per run below")
  check(xo > xb + 100, string.format("the larger lr is to the right: %.0f vs %.0f", xo, xb))
  local c2 = viz.curves({dir .. "/lr0.01", dir .. "/lr0.5"}, {width = 400, height = 300})
  nb = colour_in_rows(c2, BLUE, 1, 300)
  no = colour_in_rows(c2, ORANGE, 1, 300)
  check(nb > 50 and no > 50, "viz.curves overlays saved runs")
  check_error(function() viz.compare(base .. "/nothing") end, "cannot read the folder", "a missing folder")
  check_error(function() runs.load(base) end, "not a run folder", "a folder that is not a run")
  check_error(function() viz.compare(dir, {by = "batch"}) end, "no numeric param batch", "an unknown param")
  check_error(function() viz.compare(dir, {metric = "speed"}) end, "metric must be one of", "an unknown metric")
end)

test("the dashboard plots on_step values live", function()
  local t = trainer{}
  t:on_step(function(tr) return {rising = tr.steps * tr.steps} end)
  local c = viz.dashboard(t, {extra = {"rising"}, every = 1, width = 900, height = 600})
  t:fit{epochs = 2}
  -- the extra panel is the right third of the lower half: the line rises left to right
  local w, h = c:size()
  local left, right, nl, nr = 0, 0, 0, 0
  for y = h // 2 + 30, h - 30 do
    for x = 2 * w // 3 + 60, w - 10 do
      local r, g, b = c:pixel(x, y)
      if r == BLUE[1] and g == BLUE[2] and b == BLUE[3] then
        if x < 2 * w // 3 + 160 then left, nl = left + y, nl + 1 elseif x > w - 100 then right, nr = right + y, nr + 1 end
      end
    end
  end
  check(nl > 3 and nr > 3, string.format("the line on both sides of the panel: %d, %d pixels", nl, nr))
  check(left / math.max(nl, 1) > right / math.max(nr, 1) + 50, "it rises as the values do")
  check_error(function() viz.dashboard(t, {extra = {1}}) end, "must be a name", "a bad name")
  check_error(function()
    local u = trainer{}
    u:on_step(function() return 5 end)
    u:step()
  end, "may return nothing or a table", "a hook returning a number")
end)

test("search.grid and search.random rank their trials", function()
  local made = 0
  local function make(p)
    made = made + 1
    local net = nn.Sequential{nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)}
    return nn.Trainer{net = net, data = data, batch = p.batch, verbose = false, optim = optim.SGD(net, {lr = p.lr})}
  end
  local dir = base .. "/grid"
  local out, rows = capture(search.grid, {trainer = make, space = {lr = {0, 0.5}, batch = {16, 32}},
                                          epochs = 2, eval = data, dir = dir, plot = false})
  check(made == 4 and #rows == 4, "a trial per combination")
  check(rows[1].params.lr == 0.5 and rows[2].params.lr == 0.5, "the trials that learn rank first")
  check(rows[1].test_acc >= rows[2].test_acc and rows[2].test_acc >= rows[3].test_acc
        and rows[3].test_acc >= rows[4].test_acc, "ranked by test accuracy")
  check(out:find("ranked by test_acc", 1, true), "the ranked table is printed:\n" .. out)
  local listed = select(2, capture(runs.list, dir))
  check(#listed == 4 and exists(dir .. "/trial-1/options.json"), "each trial is a run folder")
  local by_loss = select(2, capture(search.grid, {trainer = make, space = {lr = {0.5, 0}, batch = {16}},
                                                  dir = base .. "/grid2", metric = "train_loss", plot = false}))
  check(by_loss[1].params.lr == 0.5 and by_loss[1].train_loss < by_loss[2].train_loss, "losses rank ascending")
  local draws = {}
  for k = 1, 2 do
    local r = select(2, capture(search.random, {trainer = make, trials = 3, seed = 5, dir = base .. "/random" .. k,
                                                space = {lr = {min = 1e-3, max = 1, log = true}, batch = {16, 32}}}))
    local ps = {}
    for _, row in ipairs(r) do ps[row.trial] = row.params end
    draws[k] = ps
  end
  check(#draws[1] == 3, "three trials")
  for i = 1, 3 do
    check(draws[1][i].lr == draws[2][i].lr and draws[1][i].batch == draws[2][i].batch, "the same seed draws the same trials")
    check(draws[1][i].lr >= 1e-3 and draws[1][i].lr <= 1, "lr within its range")
  end
  check_error(function() search.grid{space = {lr = {1}}} end, "trainer must be a function", "no trainer")
  check_error(function() search.grid{trainer = make} end, "space must be a table", "no space")
  check_error(function() search.grid{trainer = make, space = {lr = {1}}, metric = "test_acc"} end,
              "needs eval", "test accuracy without eval data")
  check_error(function() search.random{trainer = make, space = {lr = {min = 0, max = 1, log = true}}} end,
              "log needs min > 0", "a log range from 0")
end)

test("the manifest and the journal's header are true", function()
  local npy = base .. "/x.npy"
  tensor.arange(10):save(npy)
  tensor.load(npy)
  local m = runs.manifest()
  local entry
  for _, f in ipairs(m.data) do if f.path:find("x.npy", 1, true) then entry = f end end
  check(entry ~= nil, "a data file read is listed")
  local size = #read(npy)
  local p = io.popen("sha256sum '" .. npy .. "'")
  local sum = p:read("a"):match("^(%x+)")
  p:close()
  check(entry and entry.bytes == size and entry.sha256 == sum,
        string.format("its size and SHA-256 are the file's (%s, %s)", entry and entry.sha256, sum))
  local info = sys.info()
  check(m.commit == info.commit and #m.commit > 0, "the commit")
  local journal_path = base .. "/exp.lua"
  journal.save(journal_path)
  local text = read(journal_path)
  check(text:find("-- nnlab " .. info.version .. " (commit " .. info.commit .. ")", 1, true), "header: version and commit")
  check(text:find("CPU: " .. info.cpu.model, 1, true) and text:find("core " .. info.blas.core, 1, true),
        "header: CPU and BLAS core")
  check(text:find("-- device: cpu", 1, true), "header: the device")
  check(text:find("random generator at the start: seed %d+, counter %d+"), "header: the generator's state")
  check(text:find(entry.path .. "  " .. size .. " bytes  sha256 " .. sum, 1, true),
        "header: the data file with its size and hash")
  local ok, err = loadfile(journal_path)
  check(ok, "the saved journal is a script: " .. tostring(err))
end)

test("pruning reaches a layer written in Lua", function()
  local MyLinear = nn.define("PrunedLinear", {
    args = {"i", "o"},
    init = function(self, i, o) self:add_parameter("weight", tensor.randn(o, i) * 0.5) end,
    forward = function(self, x) return x:matmul(self.weight:t()) end,
    backward = function(self, x, gy) return gy:matmul(self.weight), {weight = gy:t():matmul(x)} end,
  })
  local net = nn.Sequential{MyLinear(2, 8), nn.Tanh(), nn.Linear(8, 2)}
  prune.magnitude(net, {amount = 0.5})
  local zeros = net[1].weight:eq(0):to("f32"):sum()
  check(zeros == 8, "half of the Lua layer's 16 weights are zero: " .. zeros)
  local report = capture(function() print(prune.report(net)) end)
  check(report:find("PrunedLinear", 1, true), "the report lists it:\n" .. report)
  local mask = net[1].weight:eq(0)
  local t = nn.Trainer{net = net, data = data, batch = 16, verbose = false, optim = optim.SGD(net, {lr = 0.5})}
  t:fit{epochs = 2}
  check(net[1].weight:eq(0):eq(mask):to("f32"):sum() == 16, "the pruned weights stay zero through training")
  local path = base .. "/pruned.safetensors"
  net:save(path)
  local back = nn.load(path)
  check_close(net_weights(back), net_weights(net), 0, "a checkpoint round-trips the pruned Lua layer")
  t = nn.Trainer{net = back, data = data, batch = 16, verbose = false, optim = optim.SGD(back, {lr = 0.5})}
  t:step()
  check(back[1].weight:eq(0):to("f32"):sum() == 8, "its mask came back with it")
end)

os.execute("rm -rf '" .. base .. "'")
