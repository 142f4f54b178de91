-- compress.lua: the Lua half of prune/lowrank/compress: prune.report, prune.schedule (Zhu & Gupta's
-- gradual pruning on a trainer's steps), prune.sensitivity and compress.compare (the truth table).
-- Run once by nl_open_prune with the private C helpers P (dsl/prune.c); returns its help rows.
local P = ...
local prune, compress, nn, tensor, sys = prune, compress, nn, tensor, sys

local util = require "nnlab.util"
local help_rows, doc = util.help_rows()
local raise, check_options = util.error, util.check_options

local function commas(n)
  local sign, digits = string.format("%d", n):match("^(-?)(%d+)$")
  local k = (#digits - 1) % 3 + 1
  return sign .. digits:sub(1, k) .. (digits:sub(k + 1):gsub("%d%d%d", ",%0"))
end

-- Prints rows (lists of strings) as columns under head, the first column left-aligned.
local function table_text(head, rows)
  local width = {}
  for _, r in ipairs({head, table.unpack(rows)}) do
    for i, c in ipairs(r) do width[i] = math.max(width[i] or 0, #c) end
  end
  local lines = {}
  for k, r in ipairs({head, table.unpack(rows)}) do
    local cells = {}
    for i, c in ipairs(r) do
      cells[i] = i == 1 and c .. string.rep(" ", width[i] - #c) or string.rep(" ", width[i] - #c) .. c
    end
    lines[#lines + 1] = table.concat(cells, "  "):gsub("%s+$", "")
    if k == 1 then lines[#lines + 1] = string.rep("-", #lines[1]) end
  end
  return table.concat(lines, "\n")
end

-- ---------------------------------------------------------------- prune.report

local Report = {__tostring = function(r)
  local rows = {}
  for _, l in ipairs(r.layers) do
    rows[#rows + 1] = {l.path, l.type, commas(l.params), commas(l.zeros),
                       string.format("%.1f%%", 100 * l.sparsity), l.masked and "yes" or "no",
                       l.sparse and "sparse" or "dense"}
  end
  rows[#rows + 1] = {"total", "", commas(r.params), commas(r.zeros), string.format("%.1f%%", 100 * r.sparsity), "", ""}
  local conv, linear = prune.sparse_threshold()
  local function th(t) return t and string.format("%.0f%%", 100 * t) or "off" end
  return table_text({"layer", "type", "weights", "zeros", "sparsity", "mask", "eval"}, rows) ..
         string.format("\neval: the kernel the forward runs in evaluation mode (sparse from conv %s, linear %s zeros;"
                       .. " a Linear given fewer than 16 rows runs dense)",
                       th(conv), th(linear))
end}

function prune.report(net)
  if not nn.is_module(net) then raise("prune.report: expected a network") end
  local out = {layers = {}, params = 0, zeros = 0}
  for i, l in ipairs(P.layers(net)) do
    out.layers[i] = {path = l.path, type = l.layer:type(), params = l.params, zeros = l.zeros,
                     sparsity = l.params > 0 and l.zeros / l.params or 0, masked = l.masked,
                     sparse = l.sparse}
    out.params, out.zeros = out.params + l.params, out.zeros + l.zeros
  end
  out.sparsity = out.params > 0 and out.zeros / out.params or 0
  return setmetatable(out, Report)
end
doc("prune", "report", "prune.report(net) -> {layers = {{path=, type=, params=, zeros=, sparsity=, masked=, sparse=}}, params=, zeros=, sparsity=}",
    "Sparsity of every Linear/Conv2d weight and overall, and whether each layer's forward runs the sparse "
    .. "kernel in evaluation mode (see prune.sparse_threshold); prints as a table.",
    "print(prune.report(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))))")

-- ---------------------------------------------------------------- prune.schedule

local Schedule = {}
Schedule.__index = Schedule
Schedule.__tostring = function(s)
  return string.format("prune.schedule{target=%g, initial=%g, start=%d, finish=%d, every=%d, scope=%q}",
                       s.target, s.initial, s.start, s.finish, s.every, s.scope)
end

-- Zhu & Gupta (2017): s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n dt))^3 between t0 and t0 + n dt.
function Schedule:sparsity(step)
  if step <= self.start then return self.initial end
  if step >= self.finish then return self.target end
  local p = (step - self.start) / (self.finish - self.start)
  return self.target + (self.initial - self.target) * (1 - p) ^ 3
end
Schedule.__call = function(s, step) return s:sparsity(step) end

-- Prunes to the sparsity of step when the schedule says so; returns the amount or nil.
function Schedule:update(step)
  if step < self.start or (step - self.start) % self.every ~= 0 and step ~= self.finish then return nil end
  if step > self.finish then return nil end
  if not self.pushed then compress._push(self.net, "prune.schedule"); self.pushed = true end
  local amount = self:sparsity(step)
  prune.magnitude(self.net, {amount = amount, scope = self.scope, layers = self.layers, undo = false})
  self.last = amount
  return amount
end

function prune.schedule(opts)
  local f = "prune.schedule"
  opts = check_options(opts, {"trainer", "net", "target", "initial", "start", "finish", "every", "scope", "layers"}, f)
  local net = opts.net or (opts.trainer and opts.trainer.net)
  if not nn.is_module(net) then raise(f .. ": give net= or trainer=") end
  local s = setmetatable({net = net, target = opts.target or 0.8, initial = opts.initial or 0,
                          start = opts.start or 0, every = opts.every or 100,
                          scope = opts.scope or "global", layers = opts.layers}, Schedule)
  s.finish = opts.finish or (opts.trainer and s.start + 10 * s.every) or raise(f .. ": give finish= (a step)")
  if not (s.target >= 0 and s.target <= 1 and s.initial >= 0 and s.initial <= s.target) then
    raise(f .. ": need 0 <= initial <= target <= 1")
  end
  if not (s.every >= 1 and s.finish > s.start) then raise(f .. ": need every >= 1 and finish > start") end
  if opts.trainer then
    local steps = opts.trainer.steps
    opts.trainer:on_step(function(t) s:update(t.steps) end)
    -- A trainer already past finish would never reach a pruning step: prune to the target now.
    if steps >= s.finish then
      if not s.pushed then compress._push(s.net, "prune.schedule"); s.pushed = true end
      prune.magnitude(s.net, {amount = s.target, scope = s.scope, layers = s.layers, undo = false})
      s.last = s.target
      print(string.format("%s: the trainer is at step %d, past finish = %d: pruned to the target "
                          .. "%g%% now (masks keep it through further training)", f, steps, s.finish,
                          100 * s.target))
    end
  end
  return s
end
doc("prune", "schedule", "prune.schedule{trainer=, target=0.8, initial=0, start=0, finish=, every=100, scope=\"global\", layers=} -> schedule",
    "Gradual magnitude pruning during fit (Zhu & Gupta's cubic schedule): from step start to finish, "
    .. "every `every` steps, prunes to s(t) = target + (initial - target)(1 - (t - start)/(finish - start))^3. "
    .. "Hooks into the trainer's on_step; s(step) gives the sparsity at a step. A trainer already "
    .. "past finish is pruned to the target at once (and says so).",
    "s = prune.schedule{net = nn.Sequential(nn.Linear(4, 4)), target = 0.8, finish = 100, every = 10}; print(s(50))")

-- ---------------------------------------------------------------- prune.sensitivity

local Sensitivity = {__tostring = function(r)
  local head = {"layer", "type"}
  for _, a in ipairs(r.amounts) do head[#head + 1] = string.format("%g", a) end
  local rows = {}
  for _, l in ipairs(r.layers) do
    local row = {l.path, l.type}
    for _, acc in ipairs(l.top1) do row[#row + 1] = string.format("%.1f", 100 * acc) end
    rows[#rows + 1] = row
  end
  return string.format("top-1 %% after pruning one layer (baseline %.1f%%)\n", 100 * r.baseline)
         .. table_text(head, rows)
end}

function prune.sensitivity(net, data, opts)
  local f = "prune.sensitivity"
  if not nn.is_module(net) then raise(f .. ": expected a network") end
  opts = check_options(opts, {"amounts", "batch"}, f)
  local amounts = opts.amounts or {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}
  local eval = {batch = opts.batch or 256, loss = false}
  local snap = net:snapshot()
  local r = setmetatable({amounts = amounts, layers = {}, runs = {}}, Sensitivity)
  local ok, err = pcall(function()
    r.baseline = nn.evaluate(net, data, eval).top1
    for _, l in ipairs(P.layers(net)) do
      local row = {path = l.path, type = l.layer:type(), top1 = {}}
      for i, a in ipairs(amounts) do
        prune.magnitude(net, {amount = a, layers = {l.layer}, undo = false})
        row.top1[i] = nn.evaluate(net, data, eval).top1
        net:restore(snap)
      end
      r.layers[#r.layers + 1] = row
      r.runs[l.path .. " " .. row.type] = {loss = {}, train_acc = {}, test_acc = row.top1}
    end
  end)
  net:restore(snap)
  if not ok then error(err, 0) end
  return r
end
doc("prune", "sensitivity", "prune.sensitivity(net, data, {amounts={0.1, ..., 0.9}, batch=256}) -> result",
    "Top-1 accuracy on data after pruning each Linear/Conv2d alone at each amount (the net is put "
    .. "back after each). result.layers[i] = {path=, type=, top1 = {...}}; prints as a table; "
    .. "viz.sensitivity(result) plots accuracy per amount (one line per layer).",
    "ds = nn.TensorDataset(tensor.randn(16, 4), tensor.ones(16)); print(prune.sensitivity(nn.Sequential(nn.Linear(4, 3)), ds, {amounts = {0.5}}))")

-- ---------------------------------------------------------------- compress.compare

-- Elements and nonzeros of the weights of m: parameters and buffers other than masks and
-- batch-norm statistics (quantized layers keep their weights as buffers).
local function weight_counts(m)
  local n, nz = 0, 0
  local function add(list)
    for _, p in ipairs(list) do
      local name = p.name
      if not (name:match("_mask$") or name:match("running_mean$") or name:match("running_var$")) then
        n = n + p.value:numel()
        nz = nz + P.nonzeros(p.value)
      end
    end
  end
  add(m:parameters())
  add(m:buffers())
  return n, nz
end

local function file_bytes(m)
  local path = os.tmpname()
  m:save(path)
  local fh = io.open(path, "rb")
  local size = fh:seek("end")
  fh:close()
  os.remove(path)
  return size
end

-- Seconds per run of each of runs (networks, forwarded on x, or functions, called with x): the
-- fastest run seen in `rounds` interleaved rounds of at least time / rounds seconds each, so that
-- a burst of load from elsewhere, or a slow spell of the machine, hurts no side alone.
function compress.fastest(runs, x, opts)
  local f = "compress.fastest"
  if type(runs) ~= "table" or #runs == 0 then raise(f .. ": expected a list of networks or functions") end
  for i, r in ipairs(runs) do
    if type(r) ~= "function" and not nn.is_module(r) then
      raise(f .. ": entry " .. i .. " is neither a network nor a function")
    end
  end
  if not tensor.is_tensor(x) then raise(f .. ": x must be a tensor") end
  opts = check_options(opts, {"rounds", "time"}, f)
  local rounds, time = opts.rounds or 20, opts.time or 1
  if type(rounds) ~= "number" or rounds < 1 or rounds % 1 ~= 0 then raise(f .. ": rounds must be a whole number >= 1") end
  if type(time) ~= "number" or time < 0 then raise(f .. ": time must be a number of seconds >= 0") end
  local call = {}
  for i, r in ipairs(runs) do
    -- a network runs where it lives: x goes there once, before the clock starts
    local xr = nn.is_module(r) and x:device() ~= r:device() and x:to(r:device()) or x
    call[i] = type(r) == "function" and r or function() return r:forward(xr) end
    call[i](x) -- warm-up: buffers allocated, weights packed
  end
  local best = {}
  for i = 1, #runs do best[i] = math.huge end
  for _ = 1, rounds do
    for i, run in ipairs(call) do
      local t_end, n = sys.clock() + time / rounds, 0
      while n < 3 or sys.clock() < t_end do
        local t0 = sys.clock()
        run(x)
        best[i] = math.min(best[i], sys.clock() - t0)
        n = n + 1
      end
    end
  end
  return best
end
doc("compress", "fastest", "compress.fastest({net_or_fn, ...}, x, {rounds=20, time=1}) -> {seconds, ...}",
    "Times each entry on x (a network's forward, or a function called with x) and returns, in "
    .. "order, the fastest run of each in seconds, from `rounds` interleaved rounds of about "
    .. "time / rounds seconds per entry (at least 3 runs each): a load burst or a slow spell of the "
    .. "machine hurts every entry alike. compress.compare uses it.",
    "local t = compress.fastest({nn.Linear(64, 64), nn.Linear(64, 8)}, tensor.randn(32, 64), {time = 0.05})\n"
    .. "print(t[1], t[2])")

local Compare = {__tostring = function(r)
  local rows = {}
  for _, e in ipairs(r) do
    rows[#rows + 1] = {e.name, commas(e.params), commas(e.nonzeros), string.format("%.1f KiB", e.bytes / 1024),
                       string.format("%.2fM", e.macs / 1e6), e.top1 and string.format("%.2f%%", 100 * e.top1) or "-",
                       string.format("%.3f", 1000 * e.latency_1), string.format("%.0f", e.images_per_s_1),
                       string.format("%.2f", 1000 * e.latency_64), string.format("%.0f", e.images_per_s_64),
                       string.format("%.2fx", e.speedup_1), string.format("%.2fx", e.speedup_64)}
  end
  return table_text({"model", "params", "nonzeros", "file", "MACs", "top-1", "ms@1", "img/s@1",
                     "ms@64", "img/s@64", "speed-up@1", "speed-up@64"}, rows)
end}

function compress.compare(models, data, opts)
  local f = "compress.compare"
  if type(models) ~= "table" then raise(f .. ": expected {name = net, ...}") end
  opts = check_options(opts, {"input", "time", "batch"}, f)
  local names = {}
  for k, m in pairs(models) do
    if not nn.is_module(m) then raise(f .. ": " .. tostring(k) .. " is not a network") end
    if k ~= "baseline" then names[#names + 1] = k end
  end
  table.sort(names)
  if models.baseline then table.insert(names, 1, "baseline") end
  local input = opts.input
  if not input and data then -- one sample's shape, from a data set or a loader's first batch
    local ok, get = pcall(function() return data.get end)
    if ok and type(get) == "function" then
      input = {1, table.unpack(data:get(1):shape())}
    else
      data:reset()
      input = data:next():shape()
      input[1] = 1
      data:reset()
    end
  end
  if not input then raise(f .. ": give {input = {1, C, H, W}} without a data set") end
  local time = opts.time or 0.5
  local r, ms, was = setmetatable({}, Compare), {}, {}
  for i, name in ipairs(names) do
    local m = models[name]
    ms[i], was[i] = m, m.training
    m:eval()
    local e = {name = name}
    e.params, e.nonzeros = weight_counts(m)
    e.bytes = file_bytes(m)
    e.macs = select(2, m:infer(input))
    if data then e.top1 = nn.evaluate(m, data, {loss = false, batch = opts.batch or 256}).top1 end
    r[i] = e
  end
  local s1, s64 = {table.unpack(input)}, {table.unpack(input)}
  s1[1], s64[1] = 1, 64
  local l1 = compress.fastest(ms, tensor.randn(table.unpack(s1)), {time = time})
  local l64 = compress.fastest(ms, tensor.randn(table.unpack(s64)), {time = time})
  for i, e in ipairs(r) do
    e.latency_1, e.latency_64 = l1[i], l64[i]
    e.images_per_s_1, e.images_per_s_64 = 1 / l1[i], 64 / l64[i]
    e.speedup_1, e.speedup_64 = l1[1] / l1[i], l64[1] / l64[i]
    ms[i]:train(was[i])
  end
  return r
end
doc("compress", "compare", "compress.compare({baseline=net0, pruned=net1, ...}, test_set, {input=, time=0.5, batch=256}) -> table",
    "The truth table: per model its parameters, nonzeros, bytes on disk (a saved checkpoint), "
    .. "multiply-adds, top-1 on test_set, and MEASURED latency (the fastest forward over interleaved "
    .. "rounds of `time` seconds per model) and images/s at batch 1 and 64, with the speed-up over "
    .. "baseline (or the first by name). Prints as a table.",
    "print(compress.compare({baseline = nn.Sequential(nn.Linear(8, 4))}, nil, {input = {1, 8}, time = 0.01}))")

return util.publish(help_rows, {prune = prune, compress = compress})
