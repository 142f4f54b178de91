-- runs.lua: run folders (a trainer's options, manifest, per-step and per-epoch history as CSV, the
-- dashboard and the last checkpoint, written as training goes), reading them back (runs.load,
-- runs.list) and the manifest of an experiment that journals and runs share. Run once by
-- nl_open_runs with the private C helpers P (dsl/runs.c); returns its help rows.
local P = ...
local nn, tensor, sys, dist = nn, tensor, sys, dist
local util = require "nnlab.util"
local raise, check_options, json = util.error, util.check_options, util.json

local help_rows, doc = util.help_rows()

runs = {}
local R = {} -- what viz, search and the journal use (require "nnlab.runs")
local Trainer = getmetatable(nn.Trainer).__index

-- ---------------------------------------------------------------- the manifest

-- What an experiment ran on and read: date, nnlab's version and commit, Lua, the CPU, the kernels
-- and the BLAS core, threads, ranks, the device, the random generator's state at its start
-- (state = {seed, counter}; default: now) and the data files this process has read (path, bytes,
-- SHA-256; a folder's digest is its listing's).
local function manifest(state, device)
  local info = sys.info()
  local seed, counter = P.rng_state()
  if state then seed, counter = state[1], state[2] end
  local cuda = {}
  for i, d in ipairs(info.cuda or {}) do cuda[i] = string.format("cuda:%d %s", i - 1, d.name) end
  return {
    date = os.date("!%Y-%m-%d %H:%M:%S UTC"),
    nnlab = info.version, commit = info.commit, lua = _VERSION,
    cpu = info.cpu.model or "unknown", kernels = (sys.isa()), blas = info.blas.summary or "unknown",
    blas_core = info.blas.core or "unknown", threads = info.threads, ranks = dist.size(),
    device = device or "cpu", cuda = #cuda > 0 and table.concat(cuda, ", ") or "none",
    -- as strings: 64-bit integers do not survive JSON readers that hold numbers as doubles
    rng = {seed = string.format("%d", seed), counter = string.format("%d", counter)},
    data = P.data_files(),
  }
end

-- The devices this process has put tensors on: "cpu" and those of sim and cuda that allocated.
function R.devices_used()
  local used = {"cpu"}
  for _, d in ipairs{"sim:0", "sim:1", "cuda:0", "cuda:1", "cuda:2", "cuda:3"} do
    local ok, st = pcall(sys.device_stats, d)
    if ok and st.allocs > 0 then used[#used + 1] = d end
  end
  return table.concat(used, ", ")
end

function runs.manifest(opts)
  opts = check_options(opts, {"device"}, "runs.manifest")
  return manifest(nil, opts.device or R.devices_used())
end
doc("runs", "manifest", "runs.manifest([{device=}]) -> table",
    "What an experiment runs on, as journal headers and run folders record it: date, nnlab version "
    .. "and git commit, Lua, CPU, kernels, BLAS (and its core), threads, ranks, device, CUDA devices, "
    .. "the random generator's state {seed, counter} and the data files read so far "
    .. "{{path=, bytes=, sha256=, folder=}...} (a folder's digest is that of its listing).",
    "m = runs.manifest(); print(m.nnlab, m.commit, m.cpu)")

-- The manifest as comment lines (a journal's header).
function R.manifest_lines(m)
  local lines = {
    "-- date: " .. m.date,
    string.format("-- nnlab %s (commit %s), %s", m.nnlab, m.commit, m.lua),
    string.format("-- CPU: %s; kernels %s; BLAS: %s (core %s); %d threads, %d rank(s)", m.cpu, m.kernels,
                  m.blas, m.blas_core, m.threads, m.ranks),
    string.format("-- device: %s; CUDA devices: %s", m.device, m.cuda),
    string.format("-- random generator at the start: seed %s, counter %s", m.rng.seed, m.rng.counter),
  }
  if #m.data == 0 then
    lines[#lines + 1] = "-- data files read: none"
  else
    lines[#lines + 1] = "-- data files read (bytes, sha256):"
    for _, f in ipairs(m.data) do
      if f.error then
        lines[#lines + 1] = "--   " .. f.error
      else
        lines[#lines + 1] = string.format("--   %s  %d bytes  %s%s", f.path, f.bytes,
                                          f.folder and "listing sha256 " or "sha256 ", f.sha256)
      end
    end
  end
  return lines
end

-- ---------------------------------------------------------------- CSV

local function fmt(v)
  if v == nil then return "" end
  if math.type(v) == "integer" then return string.format("%d", v) end
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
  return string.format("%.10g", v)
end

local function parse_number(s)
  if s == "" then return nil end
  if s == "nan" then return 0 / 0 end
  if s == "inf" then return math.huge end
  if s == "-inf" then return -math.huge end
  return tonumber(s)
end

-- A CSV file of numbers with a header line: {columns = {...}, rows = {{...}, ...}} (a missing
-- cell is nil), or nil when the file cannot be opened.
local function read_csv(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local header = f:read("l")
  local out = {columns = {}, rows = {}}
  for name in (header or ""):gmatch("[^,]+") do out.columns[#out.columns + 1] = name end
  for line in f:lines() do
    local row, k = {}, 0
    for cell in (line .. ","):gmatch("([^,]*),") do
      k = k + 1
      row[k] = parse_number(cell)
    end
    out.rows[#out.rows + 1] = row
  end
  f:close()
  return out
end

-- The column named name of a CSV read by read_csv, as a list (nil cells as NaN).
local function column(csv, name)
  for j, c in ipairs(csv.columns) do
    if c == name then
      local v = {}
      for i, row in ipairs(csv.rows) do v[i] = row[j] == nil and 0 / 0 or row[j] end
      return v
    end
  end
  return nil
end

-- ---------------------------------------------------------------- recording

local Recorder = {}
Recorder.__index = Recorder

-- The names of the values on_step hooks gave, sorted.
local function extra_names(h)
  local names = {}
  for k in pairs(h.extra or {}) do names[#names + 1] = k end
  table.sort(names)
  return names
end

-- The trainer's options as plain data.
local function options_of(t, params)
  local ok, cfg = pcall(function() return t.optim:config() end)
  local o = {
    batch = t.batch, seed = t.seed, shuffle = t.shuffle, samples = t.data:size(),
    optimizer = ok and cfg or tostring(t.optim), lr = t.base_lr, loss = tostring(t.loss),
    schedule = t.schedule and tostring(t.schedule) or nil, net = tostring(t.net),
    parameters = 0, device = t.net:device(), ranks = t.ddp and t.ddp.size or 1,
    params = params or {},
  }
  for _, p in ipairs(t.net:parameters()) do o.parameters = o.parameters + p.value:numel() end
  return o
end

-- Whether this process writes the folder: every rank of independent trainers, rank 1 of a
-- data-parallel one.
function Recorder:writes()
  return not self.trainer.ddp or dist.is_main()
end

function Recorder:path(name) return self.dir .. "/" .. name end

-- steps.csv: step, epoch, loss, lr and the on_step values, one row per step.
function Recorder:write_steps()
  local t = self.trainer
  local h = t.history
  local names = extra_names(h)
  local lines = {table.concat({"step", "epoch", "loss", "lr", table.unpack(names)}, ",")}
  local spe = math.max(t:steps_per_epoch(), 1)
  local first = #h.loss - t.steps -- 0 unless the history was cut
  for i = 1, #h.loss do
    local step = i - first
    local row = {fmt(step), fmt((step - 1) // spe + 1), fmt(h.loss[i]), fmt(h.lr[i])}
    for _, k in ipairs(names) do row[#row + 1] = fmt(h.extra[k][i]) end
    lines[i + 1] = table.concat(row, ",")
  end
  P.write(self:path("steps.csv"), table.concat(lines, "\n") .. "\n")
end

-- epochs.csv: epoch, train_loss, train_acc, test_loss, test_acc, one row per epoch done.
function Recorder:write_epochs()
  local h = self.trainer.history
  local lines = {"epoch,train_loss,train_acc,test_loss,test_acc"}
  for e = 1, #h.train_loss do
    lines[e + 1] = table.concat({fmt(e), fmt(h.train_loss[e]), fmt(h.train_acc[e]), fmt(h.test_loss[e]),
                                 fmt(h.test_acc[e])}, ",")
  end
  P.write(self:path("epochs.csv"), table.concat(lines, "\n") .. "\n")
end

function Recorder:write_status(state, err)
  local t = self.trainer
  P.write(self:path("status.json"), json{
    state = state, error = err and util.reason(err, "Trainer:fit") or nil, epochs = t.epochs,
    steps = t.steps, pos = t.pos, updated = os.date("!%Y-%m-%d %H:%M:%S UTC"),
  } .. "\n")
end

-- The histories as CSV and the status; every file is replaced whole (atomically).
function Recorder:flush(state, err)
  if not self:writes() then return end
  self:write_steps()
  self:write_epochs()
  self:write_status(state or "running", err)
  self.flushed = sys.clock()
end

function Recorder:checkpoint()
  self.trainer:save(self:path("checkpoint.safetensors")) -- every rank: it ends with a barrier
end

function Recorder:dashboard()
  if not self:writes() or self.dashboard_opts == false then return end
  local opts = self.dashboard_opts or {}
  if opts.extra == nil then -- every value the on_step functions gave (16 at most)
    local names = extra_names(self.trainer.history)
    if #names > 0 then
      opts = setmetatable({extra = {table.unpack(names, 1, math.min(#names, 16))}}, {__index = opts})
      for k, v in pairs(self.dashboard_opts or {}) do opts[k] = v end
    end
  end
  local ok, err = pcall(require("nnlab.viz").dashboard_png, self.trainer, self:path("dashboard.png"), opts)
  if not ok then print("runs: the dashboard of " .. self.dir .. " was not drawn: " .. tostring(err)) end
end

function Recorder:write_manifest()
  if not self:writes() then return end
  local m = manifest(self.rng, self.trainer.net:device())
  m.started = self.started
  P.write(self:path("manifest.json"), json(m) .. "\n")
end

-- The trainer's hooks (dsl/nn.lua calls them): after each step and at the end of each epoch the
-- histories and the checkpoint are written when the last write is `every` seconds old; when fit
-- returns (finished, paused) or fails, everything with the dashboard.
function Recorder:on_step()
  if sys.clock() - self.flushed >= self.every then
    self:flush("running")
    self:checkpoint()
  end
end
Recorder.on_epoch = Recorder.on_step

function Recorder:on_end(err)
  local t = self.trainer
  local state = err and (tostring(err):find("interrupted", 1, true) and "interrupted" or "failed")
    or (t.paused and "paused") or "finished"
  local ok, e = pcall(function()
    self:flush(state, err)
    self:write_manifest() -- again: the data files read since the start
    self:dashboard()
    self:checkpoint()
  end)
  if not ok then print("runs: " .. self.dir .. " could not be completed: " .. tostring(e)) end
end

function Trainer:record(dir, opts)
  local f = "Trainer:record"
  if type(dir) ~= "string" or dir:gsub("/+$", "") == "" then
    raise(f .. ": expected a folder name (not the root), e.g. t:record(\"runs/lr0.1\")")
  end
  util.check_path(dir)
  opts = check_options(opts, {"params", "every", "dashboard"}, f)
  if opts.params ~= nil and type(opts.params) ~= "table" then raise(f .. ": params must be a table {name = value}") end
  if opts.dashboard ~= nil and opts.dashboard ~= false and type(opts.dashboard) ~= "table" then
    raise(f .. ": dashboard must be false (none) or viz.dashboard's options {extra=, width=, height=, ...}")
  end
  local every = opts.every or 30
  if type(every) ~= "number" or not (every >= 0) then raise(f .. ": every must be a number of seconds >= 0") end
  local r = setmetatable({dir = dir:gsub("/+$", ""), trainer = self, every = every, flushed = sys.clock(),
                          rng = {P.rng_state()}, started = os.date("!%Y-%m-%d %H:%M:%S UTC"),
                          dashboard_opts = opts.dashboard}, Recorder)
  if r:writes() then
    P.mkdirs(r.dir)
    P.write(r:path("options.json"), json(options_of(self, opts.params)) .. "\n")
    r:write_manifest()
    r:flush("running")
  end
  self.run = r
  return self
end
doc("Trainer", "record", "t:record(dir [, {params=, every=30, dashboard={extra=, width=, height=} or false}]) -> t",
    "Writes a run folder as training goes (nn.Trainer{..., run = dir} does the same): options.json "
    .. "(the trainer's options and params), manifest.json (runs.manifest), steps.csv (step, epoch, loss, "
    .. "lr and on_step values), epochs.csv (train/test loss and accuracy), status.json (running, "
    .. "paused, finished, interrupted or failed), checkpoint.safetensors (nn.Trainer.load reads it) and "
    .. "dashboard.png. Every file is replaced atomically: histories and checkpoint after the step or "
    .. "epoch that finds the last write `every` seconds old (0: every step) and when fit returns or "
    .. "fails, the dashboard then; so an interrupted run leaves a consistent folder. viz.compare, "
    .. "viz.curves, runs.list and runs.load read it.",
    "t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)), verbose = false}; "
    .. "local d = os.tmpname(); os.remove(d); t:record(d); t:fit(); print(runs.load(d).status.state); os.execute(\"rm -r '\" .. d .. \"'\")",
    true)

-- ---------------------------------------------------------------- reading runs

-- Whether dir is a run folder.
local function is_run(dir)
  local f = io.open(dir .. "/steps.csv", "r")
  if f then f:close() return true end
  return false
end

function runs.load(dir)
  local f = "runs.load"
  if type(dir) ~= "string" then raise(f .. ": expected a run folder (written by t:record or nn.Trainer{run = ...})") end
  util.check_path(dir)
  dir = dir:gsub("/+$", "")
  local steps = read_csv(dir .. "/steps.csv")
  if not steps then
    raise(string.format("%s: '%s' is not a run folder (no steps.csv; t:record(dir) writes one)", f, dir))
  end
  local epochs = read_csv(dir .. "/epochs.csv") or {columns = {}, rows = {}}
  local h = {loss = column(steps, "loss") or {}, lr = column(steps, "lr") or {}, extra = {}}
  for _, c in ipairs(steps.columns) do
    if c ~= "step" and c ~= "epoch" and c ~= "loss" and c ~= "lr" then h.extra[c] = column(steps, c) end
  end
  for _, k in ipairs{"train_loss", "train_acc", "test_loss", "test_acc"} do h[k] = column(epochs, k) or {} end
  -- epochs without a test evaluation leave test_* empty, as a trainer's history does
  local function trim(v) while #v > 0 and v[#v] ~= v[#v] do v[#v] = nil end end
  trim(h.test_loss)
  trim(h.test_acc)
  local name = dir:match("([^/]+)$") or dir
  local options = P.read_json(dir .. "/options.json") or {}
  if type(options.params) == "table" then -- JSON numbers come back as floats: 32, not 32.0
    for k, v in pairs(options.params) do options.params[k] = math.tointeger(v) or v end
  end
  return {dir = dir, name = name, history = h, options = options,
          manifest = P.read_json(dir .. "/manifest.json") or {},
          status = P.read_json(dir .. "/status.json") or {state = "unknown"}}
end
doc("runs", "load", "runs.load(dir) -> {dir=, name=, history=, options=, manifest=, status=}",
    "Reads a run folder: history {loss=, lr= per step, train_loss=, train_acc=, test_loss=, test_acc= "
    .. "per epoch, extra = {name = per-step on_step values}} (what viz.curves draws), and the "
    .. "options, manifest and status as tables.",
    "-- r = runs.load(\"runs/lr0.1\"); print(#r.history.loss, r.status.state)")

-- The run folders of dir: dir itself when it is one, else its sub-folders that are (sorted).
local function run_dirs(dir, f)
  if type(dir) ~= "string" then raise(f .. ": expected a folder of runs, e.g. \"runs\"") end
  util.check_path(dir)
  dir = dir:gsub("/+$", "")
  if is_run(dir) then return {dir} end
  local entries, err = P.list(dir)
  if not entries then raise(string.format("%s: cannot read the folder '%s': %s", f, dir, err)) end
  local out = {}
  for _, e in ipairs(entries) do
    if e.dir and is_run(dir .. "/" .. e.name) then out[#out + 1] = dir .. "/" .. e.name end
  end
  return out
end
R.dirs = run_dirs

-- The final figures of a loaded run.
local function final(r)
  local h = r.history
  local best
  for _, a in ipairs(h.test_acc) do if a == a and (not best or a > best) then best = a end end
  local params = {}
  for k, v in pairs(r.options.params or {}) do params[#params + 1] = k .. "=" .. tostring(v) end
  table.sort(params)
  return {dir = r.dir, name = r.name, state = r.status.state or "unknown", epochs = #h.train_loss,
          steps = #h.loss, loss = h.loss[#h.loss], train_loss = h.train_loss[#h.train_loss],
          train_acc = h.train_acc[#h.train_acc], test_acc = h.test_acc[#h.test_acc], best_test_acc = best,
          params = r.options.params or {}, params_text = table.concat(params, " ")}
end
R.final = final

local function pct(v) return v and v == v and string.format("%.1f%%", 100 * v) or "-" end
local function num(v) return v and string.format("%.4f", v) or "-" end

-- Prints rows (from final) as a table; first: an optional first column {title, fn(row)}.
function R.print_table(rows, first)
  local head = {"run", "state", "epochs", "steps", "last loss", "train acc", "test acc", "best test", "params"}
  local cells = {}
  if first then table.insert(head, 1, first[1]) end
  for i, r in ipairs(rows) do
    local c = {r.name, r.state, tostring(r.epochs), tostring(r.steps), num(r.loss), pct(r.train_acc),
               pct(r.test_acc), pct(r.best_test_acc), r.params_text}
    if first then table.insert(c, 1, first[2](r, i)) end
    cells[i] = c
  end
  local width = {}
  for j, h in ipairs(head) do
    width[j] = #h
    for _, c in ipairs(cells) do width[j] = math.max(width[j], #c[j]) end
  end
  local function line(c)
    local parts = {}
    for j, v in ipairs(c) do
      parts[j] = j == #c and v or (j <= (first and 3 or 2) and v .. string.rep(" ", width[j] - #v)
                                   or string.rep(" ", width[j] - #v) .. v)
    end
    return (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  print(line(head))
  for _, c in ipairs(cells) do print(line(c)) end
end

function runs.list(dir)
  local f = "runs.list"
  local dirs = run_dirs(dir or "runs", f)
  if #dirs == 0 then
    print(string.format("no runs in %s (t:record(dir) or nn.Trainer{..., run = dir} writes them)", dir or "runs"))
    return util.quiet({})
  end
  local rows = {}
  for i, d in ipairs(dirs) do rows[i] = final(runs.load(d)) end
  R.print_table(rows)
  return util.quiet(rows)
end
doc("runs", "list", "runs.list([dir=\"runs\"]) -> rows",
    "Prints a table of the run folders in dir (or dir itself when it is one): state, epochs, steps, "
    .. "the last loss, train and test accuracy of the last epoch, the best test accuracy and the "
    .. "params recorded; returns the rows {name=, dir=, state=, epochs=, steps=, loss=, train_acc=, "
    .. "test_acc=, best_test_acc=, params=}.",
    "-- runs.list(\"runs\")")

R.manifest, R.load = manifest, runs.load
package.loaded["nnlab.runs"] = R
return util.publish(help_rows, {runs = runs, Trainer = Trainer})
