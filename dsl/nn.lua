-- nn.lua: the Lua half of nn and optim: the Trainer (fit with progress, Ctrl-C pause and resume,
-- checkpoints), nn.evaluate, optim.schedule and Module:summary. Run once by nl_open_nn with the
-- private C helpers P (dsl/nn.c) and the Module metatable; returns the help rows of what it defines.
local P, ModuleMT = ...
local nn, optim, tensor, sys = nn, optim, tensor, sys
local methods = ModuleMT.methods
local floor, ceil, huge = math.floor, math.ceil, math.huge

local help_rows = {}
local function doc(group, name, sig, text, example, method)
  help_rows[#help_rows + 1] = {group = group, name = name, sig = sig, doc = text,
                               example = example, method = method or false}
end

-- ---------------------------------------------------------------- small helpers

local util = require "nnlab.util"
local ddp = require "nnlab.dist" -- the data-parallel pieces (dsl/dist.lua)
local raise, check_options, check_int = util.error, util.check_options, util.check_int



local function check_number(v, name, fname, min)
  if type(v) ~= "number" or v ~= v or (min and v < min) then
    raise(string.format("%s: %s must be a number%s, got %s", fname, name,
                        min and (" >= " .. min) or "", tostring(v)))
  end
  return v
end

-- 60362 -> "60,362"
local function commas(n)
  local sign, digits = string.format("%d", n):match("^(-?)(%d+)$")
  local k = (#digits - 1) % 3 + 1
  return sign .. digits:sub(1, k) .. (digits:sub(k + 1):gsub("%d%d%d", ",%0"))
end

-- 39911424 -> "39.9M"
local function compact(n)
  for _, u in ipairs{{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "K"}} do
    if n >= u[1] then return string.format("%.1f%s", n / u[1], u[2]) end
  end
  return string.format("%d", n)
end

local function bytes(n)
  for _, u in ipairs{{2 ^ 30, "GiB"}, {2 ^ 20, "MiB"}, {2 ^ 10, "KiB"}} do
    if n >= u[1] then return string.format("%.1f %s", n / u[1], u[2]) end
  end
  return string.format("%d B", n)
end

local function shape_str(s)
  local parts = {}
  for i, v in ipairs(s) do parts[i] = string.format("%d", v) end
  return "[" .. table.concat(parts, ", ") .. "]"
end

local function numel(s)
  local n = 1
  for _, v in ipairs(s) do n = n * v end
  return n
end

local function duration(s)
  s = floor(s + 0.5)
  if s >= 3600 then return string.format("%d:%02d:%02d", s // 3600, s % 3600 // 60, s % 60) end
  return string.format("%d:%02d", s // 60, s % 60)
end

-- ---------------------------------------------------------------- Module:summary

-- The input shape a network most likely takes: from its first layer (CIFAR-sized images for
-- convolutions), or nil.
local function default_input(m)
  while m:type() == "Sequential" or m:type() == "Residual" do
    if #m == 0 then return nil end
    m = m[1]
  end
  local t = m:type()
  if t == "Conv2d" then return {1, m["in"], 32, 32} end
  if t == "BatchNorm2d" then return {1, m.c, 32, 32} end
  if t == "Linear" then return {1, m["in"]} end
  if t == "BatchNorm1d" then return {1, m.c} end
  return nil
end

local function param_count(m)
  local n = 0
  for _, p in ipairs(m:parameters()) do n = n + p.value:numel() end
  return n
end

-- One line of a module: its printed form without its children.
local function one_line(m)
  return (tostring(m):match("^[^\n]*"):gsub("%($", ""))
end

function methods.summary(m, input_shape)
  input_shape = input_shape or default_input(m)
  if not input_shape then
    raise("Module:summary: give the input shape, e.g. net:summary{1, 3, 32, 32} (batch first)")
  end
  local out, total_macs = m:infer(input_shape) -- checks the shape before anything prints it
  local rows = {{"input", shape_str(input_shape), "", "", ""}}
  local leaf_memory = 0
  -- A row for mod, then rows for its children, under 1-based paths ("3", "3.1", ...).
  local function walk(mod, shape, path, depth)
    local out, macs = mod:infer(shape)
    local mem = numel(out) * 4
    if #mod == 0 then leaf_memory = leaf_memory + mem end
    local label = string.rep("  ", depth) .. (path ~= "" and (path .. "  ") or "") .. one_line(mod)
    rows[#rows + 1] = {label, shape_str(out), commas(param_count(mod)), compact(macs), bytes(mem)}
    local s = shape
    for i = 1, #mod do s = walk(mod[i], s, path .. "." .. i, depth + 1) end
    return out
  end
  if #m == 0 then walk(m, input_shape, "", 0) else
    local s = input_shape
    for i = 1, #m do s = walk(m[i], s, tostring(i), 0) end
  end
  local params = param_count(m)
  local head = {"Layer", "Output shape", "Params", "MACs", "Memory"}
  local width = {0, 0, 0, 0, 0}
  for _, r in ipairs({head, table.unpack(rows)}) do
    for i, c in ipairs(r) do width[i] = math.max(width[i], #c) end
  end
  local function line(r)
    return string.format("%-" .. width[1] .. "s  %-" .. width[2] .. "s  %" .. width[3] .. "s  %"
                         .. width[4] .. "s  %" .. width[5] .. "s", table.unpack(r)):gsub("%s+$", "")
  end
  local rule = string.rep("-", width[1] + width[2] + width[3] + width[4] + width[5] + 8)
  local lines = {line(head), rule}
  for _, r in ipairs(rows) do lines[#lines + 1] = line(r) end
  lines[#lines + 1] = rule
  lines[#lines + 1] = string.format("Total params: %s (%s)", commas(params), bytes(params * 4))
  lines[#lines + 1] = string.format("Multiply-adds per forward: %s (%s)", commas(total_macs),
                                    compact(total_macs))
  lines[#lines + 1] = string.format("Activation memory (layer outputs, batch %d): %s",
                                    input_shape[1], bytes(leaf_memory))
  lines[#lines + 1] = string.format("Output shape: %s", shape_str(out))
  print(table.concat(lines, "\n"))
  return {params = params, macs = total_macs, memory = leaf_memory, output = out}
end
doc("Module", "summary", "m:summary([input_shape]) -> {params=, macs=, memory=, output=}",
    "Prints a table of the layers: output shape, parameters, multiply-adds and output memory, then "
    .. "the totals. The input shape (batch first) defaults from the first layer (Conv2d(3, ...): "
    .. "{1, 3, 32, 32}).",
    "nn.Sequential(nn.Conv2d(3, 8, 3, {padding = 1}), nn.ReLU(), nn.Flatten(), nn.Linear(8192, 10)):summary()",
    true)

-- ---------------------------------------------------------------- data access

-- Whether x has methods named names (without raising for values that cannot be indexed).
local function has_methods(x, names)
  if type(x) ~= "table" and type(x) ~= "userdata" then return false end
  for _, name in ipairs(names) do
    local ok, f = pcall(function() return x[name] end)
    if not ok or type(f) ~= "function" then return false end
  end
  return true
end

-- A loader (data.loader) hands out ready batches in its own order: next, batches, state, set_state.
local function is_loader(data)
  return has_methods(data, {"next", "batches", "state", "set_state", "reset", "size"})
end

local function check_data(data, fname)
  if not (is_loader(data) or has_methods(data, {"size", "get"})) then
    raise(string.format("%s: data must be a data set with :size() and :get(i) "
                        .. "(nn.TensorDataset(x, y), data.cifar10(), ...) or a data.loader, got %s",
                        fname, type(data)))
  end
  return data
end

-- The samples at the 1-based indices idx (an i32 Tensor): x batch, y batch. Data sets with a
-- C gather (TensorDataset) use it; others are read one sample at a time and stacked.
local function fetch(data, idx)
  if type(data.batch) == "function" then return data:batch(idx) end
  local xs, ys = {}, {}
  for k, i in ipairs(idx:totable()) do xs[k], ys[k] = data:get(i) end
  return P.collate(xs, ys)
end

local function range(first, last)
  return tensor.arange(first, last + 1):to("i32")
end

-- The batch x on the network's device (one copy, counted in sys.device_stats); the step moves
-- the labels there itself, once, after checking them on the host.
local function on_net_device(net, x)
  local dev = net:device()
  if x:device() ~= dev then return x:to(dev) end
  return x
end

-- ---------------------------------------------------------------- nn.evaluate

function nn.evaluate(net, data, opts)
  local fname = "nn.evaluate"
  if not nn.is_module(net) then raise(fname .. ": the first argument must be a network") end
  check_data(data, fname)
  if data:size() == 0 then raise(fname .. ": the data set is empty (0 samples): there is nothing to evaluate") end
  opts = check_options(opts, {"batch", "loss"}, fname)
  local batch = check_int(opts.batch or 256, "batch", 1, fname)
  local loss = opts.loss
  if loss == nil then loss = nn.CrossEntropyLoss() end
  if loss == false then loss = nil end
  local was_training = net.training
  local stats = P.eval_stats()
  net:eval()
  local ok, err = pcall(function()
    if is_loader(data) then -- one pass from the start of its epoch, in its batches
      data:reset()
      for x, y in data.next, data do P.eval_batch(stats, net, loss, on_net_device(net, x), y) end
      return
    end
    local n = data:size()
    local mine, count = ddp.eval_indices(n) -- under several ranks: every N-th sample
    if mine then
      for first = 1, count, batch do
        P.eval_batch(stats, net, loss, fetch(data, mine:slice(1, first, math.min(first + batch - 1, count))))
      end
      return
    end
    for first = 1, n, batch do
      local x, y = fetch(data, range(first, math.min(first + batch - 1, n)))
      P.eval_batch(stats, net, loss, on_net_device(net, x), y)
    end
  end)
  net:train(was_training)
  if not ok then error(err, 0) end
  if dist.size() > 1 then ddp.reduce_eval(stats) end -- the global result on every rank
  return P.eval_result(stats, loss ~= nil)
end
doc("nn", "evaluate", "nn.evaluate(net, data, {batch=256, loss=nn.CrossEntropyLoss()}) -> results",
    "Runs net in eval mode over a data set (or once through a data.loader; under several ranks each takes its share and every rank gets the global result): {loss=, top1=, top5= (fractions), count=, "
    .. "confusion = i32 Tensor [C, C] (row = true class, column = predicted, 1-based), "
    .. "per_class = {accuracy of each class (nan without samples)}}. loss=false skips the loss.",
    "r = nn.evaluate(nn.Linear(2, 3), nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8))); print(r.top1)")

-- ---------------------------------------------------------------- schedules

optim.schedule = {}
local Schedule = {}
Schedule.__index = Schedule
Schedule.__call = function(s, step, base_lr) return s:lr(step, base_lr) end
Schedule.__help = function(s) return "optim.schedule." .. s.kind end -- help(s): its constructor's
Schedule.__tostring = function(s)
  local parts = {}
  for _, k in ipairs(s.keys) do
    local v = s[k]
    parts[#parts + 1] = k .. "=" .. (getmetatable(v) == Schedule and tostring(v) or tostring(v))
  end
  return "optim.schedule." .. s.kind .. "{" .. table.concat(parts, ", ") .. "}"
end

-- Schedule constructors by kind: each checks its options and returns a callable table holding
-- them (so a trainer checkpoint can store and rebuild it).
local kinds = {}

local function new_schedule(kind, opts, keys, lr)
  local s = setmetatable({kind = kind, keys = keys, lr = lr}, Schedule)
  for _, k in ipairs(keys) do s[k] = opts[k] end
  return s
end

local function check_schedule(v, fname)
  if v ~= nil and type(v) ~= "function" and getmetatable(v) ~= Schedule then
    raise(fname .. ": a schedule must be a function (step, base_lr) -> lr or an optim.schedule")
  end
  return v
end

function kinds.step(opts)
  local f = "optim.schedule.step"
  opts = check_options(opts, {"every", "gamma"}, f)
  opts = {every = check_int(opts.every, "every", 1, f), gamma = check_number(opts.gamma or 0.1, "gamma", f, 0)}
  return new_schedule("step", opts, {"every", "gamma"}, function(s, step, base)
    return base * s.gamma ^ (step // s.every)
  end)
end

function kinds.cosine(opts)
  local f = "optim.schedule.cosine"
  opts = check_options(opts, {"total", "min_lr"}, f)
  opts = {total = check_int(opts.total, "total", 1, f), min_lr = check_number(opts.min_lr or 0, "min_lr", f, 0)}
  return new_schedule("cosine", opts, {"total", "min_lr"}, function(s, step, base)
    local t = math.min(step, s.total)
    return s.min_lr + (base - s.min_lr) * (1 + math.cos(math.pi * t / s.total)) / 2
  end)
end

function kinds.warmup(opts)
  local f = "optim.schedule.warmup"
  opts = check_options(opts, {"steps", "after", "then"}, f)
  local after = check_schedule(opts.after or opts["then"], f)
  opts = {steps = check_int(opts.steps, "steps", 1, f), after = after}
  return new_schedule("warmup", opts, {"steps", "after"}, function(s, step, base)
    if step < s.steps then return base * (step + 1) / s.steps end
    return s.after and s.after(step - s.steps, base) or base
  end)
end

function kinds.onecycle(opts)
  local f = "optim.schedule.onecycle"
  opts = check_options(opts, {"max_lr", "total", "pct_start", "div_factor", "final_div_factor"}, f)
  opts = {max_lr = check_number(opts.max_lr, "max_lr", f, 0), total = check_int(opts.total, "total", 2, f),
          pct_start = check_number(opts.pct_start or 0.3, "pct_start", f, 0),
          div_factor = check_number(opts.div_factor or 25, "div_factor", f, 0),
          final_div_factor = check_number(opts.final_div_factor or 1e4, "final_div_factor", f, 0)}
  local keys = {"max_lr", "total", "pct_start", "div_factor", "final_div_factor"}
  -- torch.optim.lr_scheduler.OneCycleLR (cosine annealing, two phases); base_lr is not used.
  return new_schedule("onecycle", opts, keys, function(s, step)
    local initial = s.max_lr / s.div_factor
    local final = initial / s.final_div_factor
    local up = s.pct_start * s.total - 1
    local down = s.total - 1
    local function anneal(from, to, pct) return to + (from - to) / 2 * (math.cos(math.pi * pct) + 1) end
    step = math.min(step, down)
    if step <= up then return anneal(initial, s.max_lr, step / up) end
    return anneal(s.max_lr, final, (step - up) / (down - up))
  end)
end

for name, make in pairs(kinds) do optim.schedule[name] = make end

doc("optim", "schedule.step", "optim.schedule.step{every=, gamma=0.1} -> schedule",
    "lr = base_lr * gamma^floor(step / every) (torch's StepLR counted in steps). A schedule is "
    .. "called as s(step, base_lr) -> lr, step counted from 0; the Trainer applies it before each step.",
    "s = optim.schedule.step{every = 10, gamma = 0.5}; print(s(25, 0.1))")
doc("optim", "schedule.cosine", "optim.schedule.cosine{total=, min_lr=0} -> schedule",
    "Cosine annealing from base_lr to min_lr over total steps (torch's CosineAnnealingLR), then min_lr.",
    "s = optim.schedule.cosine{total = 100}; print(s(50, 0.1))")
doc("optim", "schedule.warmup", "optim.schedule.warmup{steps=, after=schedule} -> schedule",
    "Linear warm-up: base_lr * (step + 1) / steps for the first steps, then the schedule after "
    .. "(also accepted as [\"then\"]) counted from 0, or base_lr.",
    "s = optim.schedule.warmup{steps = 5, after = optim.schedule.cosine{total = 95}}; print(s(2, 0.1), s(5, 0.1))")
doc("optim", "schedule.onecycle",
    "optim.schedule.onecycle{max_lr=, total=, pct_start=0.3, div_factor=25, final_div_factor=1e4} -> schedule",
    "The one-cycle policy (torch's OneCycleLR, cosine): from max_lr/div_factor up to max_lr over the "
    .. "first pct_start of total steps, then down to max_lr/div_factor/final_div_factor; ignores base_lr.",
    "s = optim.schedule.onecycle{max_lr = 0.1, total = 100}; print(s(0), s(29), s(99))")

-- Rebuilds a schedule from its saved fields.
local function rebuild_schedule(saved)
  if type(saved) ~= "table" then return nil end
  local opts = {}
  for k, v in pairs(saved) do if k ~= "kind" then opts[k] = v end end
  if opts.after then opts.after = rebuild_schedule(opts.after) end
  return kinds[saved.kind](opts)
end

-- The fields that rebuild schedule s, or nil when s (or a schedule inside it) is a function.
local function schedule_fields(s)
  if getmetatable(s) ~= Schedule then return nil end
  local t = {kind = s.kind}
  for _, k in ipairs(s.keys) do
    local v = s[k]
    if type(v) == "function" or getmetatable(v) == Schedule then
      v = schedule_fields(v)
      if not v then return nil end
    end
    t[k] = v
  end
  return t
end

-- ---------------------------------------------------------------- saving Lua values

-- A Lua literal for plain data (numbers exactly, strings, booleans, nested tables).
local function serialize(v, out)
  local t = type(v)
  if t == "number" then
    if math.type(v) == "integer" then out[#out + 1] = string.format("%d", v)
    elseif v ~= v then out[#out + 1] = "0/0"
    elseif v == huge then out[#out + 1] = "1/0"
    elseif v == -huge then out[#out + 1] = "-1/0"
    else out[#out + 1] = string.format("%.17g", v) end
  elseif t == "string" then out[#out + 1] = string.format("%q", v)
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "table" then
    out[#out + 1] = "{"
    local n = #v
    for i = 1, n do serialize(v[i], out); out[#out + 1] = "," end
    local keys = {}
    for k in pairs(v) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
      out[#out + 1] = "["; serialize(k, out); out[#out + 1] = "]="
      serialize(v[k], out); out[#out + 1] = ","
    end
    out[#out + 1] = "}"
  else
    raise("cannot save a " .. t)
  end
  return out
end

-- Whether text (from a checkpoint) holds only what serialize writes: outside string literals,
-- nothing but names, numbers, braces, brackets, = , . + - and /. Without parentheses or colons
-- nothing can be called, so loading it as Lua cannot run code or loop.
local function data_only(text)
  local i, n = 1, #text
  while i <= n do
    local c = text:sub(i, i)
    if c == '"' then
      i = i + 1
      while i <= n and text:sub(i, i) ~= '"' do i = i + (text:sub(i, i) == "\\" and 2 or 1) end
      i = i + 1
    elseif c:find("^[%w%s_{}%[%]=,%.%+%-/]") then
      i = i + 1
    else
      return false
    end
  end
  return true
end

-- ---------------------------------------------------------------- the Trainer

local Trainer = {__name = "Trainer"} -- __name: help(t) lists the methods
Trainer.__index = Trainer

-- A trainer's history prints as a one-line summary (the REPL shows what fit returns).
local History = {__tostring = function(h)
  local text = string.format("history: %d steps", #h.loss)
  if #h.loss > 0 then text = text .. string.format(" (last loss %.4f)", h.loss[#h.loss]) end
  text = text .. string.format(", %d epochs", #h.train_acc)
  if #h.train_acc > 0 then text = text .. string.format(" (train acc %.1f%%", 100 * h.train_acc[#h.train_acc]) end
  if #h.test_acc > 0 then text = text .. string.format(", test acc %.1f%%", 100 * h.test_acc[#h.test_acc]) end
  return text .. (#h.train_acc > 0 and ")" or "")
end}

local trainer_options = {"net", "data", "loss", "optim", "batch", "seed", "schedule", "shuffle",
                         "verbose", "distributed"}

local function new_trainer(opts)
  local f = "nn.Trainer"
  opts = check_options(opts, trainer_options, f)
  if not nn.is_module(opts.net) then raise(f .. ": net must be a network (a Module)") end
  local t = setmetatable({}, Trainer)
  t.net = opts.net
  t.data = check_data(opts.data, f)
  if opts.loss ~= nil and not P.is_loss(opts.loss) then
    raise(f .. ": loss must be a loss (nn.CrossEntropyLoss(), nn.MSELoss(), ...), got " .. type(opts.loss))
  end
  if opts.optim ~= nil and not P.is_optim(opts.optim) then
    raise(f .. ": optim must be an optimizer (optim.Adam(net), optim.SGD(net, {lr = 0.1}), ...), got "
          .. type(opts.optim))
  end
  t.loss = opts.loss or nn.CrossEntropyLoss()
  t.optim = opts.optim or optim.Adam(t.net)
  t.batch = check_int(opts.batch or 64, "batch", 1, f)
  if is_loader(t.data) then -- the loader batches, orders and augments; batch is its own
    if opts.batch and opts.batch ~= t.data:batch_size() then
      raise(string.format("%s: batch = %d but the loader makes batches of %d", f, opts.batch,
                          t.data:batch_size()))
    end
    t.batch = t.data:batch_size()
  end
  t.seed = check_int(opts.seed or 1, "seed", 0, f)
  t.shuffle = opts.shuffle ~= false
  t.schedule = check_schedule(opts.schedule, f)
  t.verbose = opts.verbose ~= false
  t.base_lr = t.optim:lr()
  t.epochs, t.pos, t.steps = 0, 0, 0 -- epochs completed, batches done in this epoch, steps done
  t.sums = {n = 0, correct = 0, loss = 0} -- this epoch so far
  t.history = setmetatable({loss = {}, lr = {}, train_loss = {}, train_acc = {}, test_loss = {},
                            test_acc = {}}, History)
  t.hooks = {}
  -- Under several ranks: data-parallel unless distributed = false (rank 1's weights to all).
  t.ddp = ddp.setup(t, opts.distributed, f)
  if t.ddp then
    t.verbose = t.verbose and dist.is_main()
  end
  return t
end

nn.Trainer = setmetatable({}, {
  __call = function(_, opts) return new_trainer(opts) end,
  __index = Trainer,
  __tostring = function() return "nn.Trainer" end,
})
doc("nn", "Trainer", "nn.Trainer{net=, data=, loss=nn.CrossEntropyLoss(), optim=optim.Adam(net), "
    .. "batch=64, seed=1, schedule=nil, shuffle=true, verbose=true, distributed=} -> trainer",
    "Trains net on a data set in mini-batches, each step in C (forward, loss, backward, update). "
    .. "data: anything with :size() and :get(i) (a C :batch(indices) is used when present), or a "
    .. "data.loader (its batches, order and augmentation). seed orders the data (dropout draws from "
    .. "tensor.seed's generator). Under several ranks (nnlab -n N) it is data-parallel: batch is per rank; "
    .. "distributed = false trains independent replicas, distributed = {sync_bn = true, bucket_mb = 1/16} "
    .. "tunes it. Methods: step, epoch, "
    .. "fit, resume, on_step, save; fields history, epochs, steps, pos. help \"Trainer\" lists them.",
    "t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)), verbose = false}; print(t:step())")

function Trainer:steps_per_epoch()
  if is_loader(self.data) then return self.data:batches() end
  if self.ddp then return ceil(ddp.shard_size(self.ddp, self.data:size()) / self.batch) end
  return ceil(self.data:size() / self.batch)
end

-- Raises when an epoch holds no batch (an empty data set), where training would only make NaN
-- losses; the message is named after whichever method the user called (step, epoch, fit, ...).
local function check_not_empty(t)
  if t:steps_per_epoch() == 0 then
    raise(string.format("the data set is empty (%d samples): there is nothing to train on", t.data:size()))
  end
end

-- The batch at position pos (0-based) of epoch epoch (0-based) from a loader: it is moved there
-- when it is elsewhere (a redone batch, a loaded checkpoint; its epochs count from 1).
local function loader_batch(ld, epoch, pos, spe)
  local st = ld:state()
  if st.epoch == epoch and st.position == spe and pos == 0 then
    ld:next() -- nil, and the loader starts its next epoch
    st = ld:state()
  end
  if st.epoch ~= epoch + 1 or st.position ~= pos then ld:set_state{epoch = epoch + 1, position = pos} end
  local x, y = ld:next()
  if not x then raise(string.format("the loader ran out at batch %d of %d", pos + 1, spe)) end
  return x, y
end

-- The batch at position pos (0-based) of epoch epoch (0-based).
function Trainer:_batch(epoch, pos)
  if is_loader(self.data) then return loader_batch(self.data, epoch, pos, self:steps_per_epoch()) end
  local n = self.data:size()
  if self.ddp then -- this rank's strided shard of the epoch's order
    if self._order_epoch ~= epoch then
      local order = self.shuffle and P.permutation(n, self.seed, epoch) or range(1, n)
      self._order, self._order_epoch = ddp.shard(self.ddp, order), epoch
    end
    n = self._order:numel()
    return fetch(self.data, self._order:slice(1, pos * self.batch + 1, math.min((pos + 1) * self.batch, n)))
  end
  local first, last = pos * self.batch + 1, math.min((pos + 1) * self.batch, n)
  if not self.shuffle then return fetch(self.data, range(first, last)) end
  if self._order_epoch ~= epoch then
    self._order, self._order_epoch = P.permutation(n, self.seed, epoch), epoch
  end
  return fetch(self.data, self._order:slice(1, first, last))
end

-- Closes the epoch: its mean loss and accuracy go to the history.
function Trainer:_close_epoch()
  local s = self.sums
  local h = self.history
  h.train_loss[#h.train_loss + 1] = s.n > 0 and s.loss / s.n or 0 / 0
  h.train_acc[#h.train_acc + 1] = s.n > 0 and s.correct / s.n or 0 / 0
  self.sums = {n = 0, correct = 0, loss = 0}
  self.epochs, self.pos = self.epochs + 1, 0
end

function Trainer:step()
  check_not_empty(self)
  if self.pos >= self:steps_per_epoch() then self:_close_epoch() end
  local x, y = self:_batch(self.epochs, self.pos)
  x = on_net_device(self.net, x)
  if self.schedule then self.optim:set_lr(self.schedule(self.steps, self.base_lr)) end
  self.net:train()
  if self.ddp then ddp.catch(true) end -- a signal now only raises the flag the ranks agree on
  local ok, loss, correct, updated, norm = pcall(P.train_step, self.net, self.loss, self.optim, x, y,
                                                 self.ddp and self.ddp.exchange)
  if self.ddp then ddp.catch(false) end
  if not ok then error(loss, 0) end
  if loss == nil then return nil, correct end -- interrupted: nothing moved
  local n = x:size(1)
  if self.ddp then -- the global batch's loss and hits, and the stop flag, in one all-reduce
    local stop, ls, cs, ns = ddp.agree(loss * n, correct, n)
    self._stop = stop > 0
    loss, correct, n = ls / ns, cs, ns
  end
  local h = self.history
  if not updated then
    local what = (loss ~= loss or loss == huge or loss == -huge)
      and ("the loss is " .. tostring(loss)) or ("the gradient norm is " .. tostring(norm))
    local last = #h.loss > 0 and string.format("the last finite loss was %.6g at step %d",
                                               h.loss[#h.loss], self.steps) or "no step had a finite loss"
    raise(string.format("training stopped at step %d (epoch %d): %s; %s", self.steps + 1,
                        self.epochs + 1, what, last))
  end
  self.pos, self.steps = self.pos + 1, self.steps + 1
  h.loss[#h.loss + 1] = loss
  h.lr[#h.lr + 1] = self.optim:lr()
  local s = self.sums
  s.n, s.correct, s.loss = s.n + n, s.correct + correct, s.loss + loss * n
  for _, hook in ipairs(self.hooks) do hook(self) end
  return loss
end

function Trainer:on_step(fn)
  if type(fn) ~= "function" then raise("Trainer:on_step: expected a function (trainer) -> nothing") end
  self.hooks[#self.hooks + 1] = fn
  return self
end

-- ---- progress

local is_tty = P.isatty()

function Trainer:_progress(clock0, n0)
  if not self.verbose then return end
  local now = sys.clock()
  local spe = self:steps_per_epoch()
  -- A terminal gets the line redrawn ten times a second, a log a new line every ten seconds.
  if now - (self._drawn or clock0) < (is_tty and 0.1 or 10) then return end
  self._drawn = now
  local s = self.sums
  local elapsed = now - clock0
  local images = s.n - n0
  local rate = elapsed > 0 and images / elapsed or 0
  local eta = rate > 0 and (spe - self.pos) * self.batch / rate or 0
  local text = string.format("epoch %d/%d  step %d/%d  loss %.4f  acc %.1f%%  %.0f img/s  ETA %s",
                             self.epochs + 1, self.target, self.pos, spe, s.n > 0 and s.loss / s.n or 0,
                             s.n > 0 and 100 * s.correct / s.n or 0, rate, duration(eta))
  if is_tty then io.write("\r", text, "\27[K") io.flush() else print(text) end
end

function Trainer:_say(text)
  if not self.verbose then return end
  if is_tty then io.write("\r\27[K") end
  print(text)
end

-- ---- fit, pause, resume

function Trainer:fit(opts)
  local f = "Trainer:fit"
  opts = check_options(opts, {"epochs", "eval", "eval_batch", "verbose"}, f)
  if opts.verbose ~= nil then self.verbose = opts.verbose end
  if opts.eval ~= nil then self.eval_set = opts.eval and check_data(opts.eval, f) or nil end
  if self.eval_set and self.eval_set:size() == 0 then raise(f .. ": the eval data set is empty (0 samples)") end
  if opts.eval_batch then self.eval_batch = check_int(opts.eval_batch, "eval_batch", 1, f) end
  if opts.epochs then
    self.target = self.epochs + check_int(opts.epochs, "epochs", 1, f)
  elseif not self.target or self.epochs >= self.target then
    self.target = self.epochs + 1
  end
  check_not_empty(self)
  self.paused = false
  -- Ctrl-C only raises the flag while we train; we look at it between batches (and the C step
  -- stops at its next layer). The deferral is undone however this function ends.
  P.defer(true)
  if self.ddp then ddp.catch(true) end
  local guard <close> = setmetatable({}, {__close = function()
    P.defer(false)
    if self.ddp then ddp.catch(false) end
  end})
  local spe = self:steps_per_epoch()
  while self.epochs < self.target do
    local clock0, n0 = sys.clock(), self.sums.n
    self._drawn = nil
    while self.pos < spe do
      if not self.ddp and P.poll_interrupt() then return self:_pause() end
      local loss = self:step()
      if loss == nil then
        P.poll_interrupt()
        return self:_pause()
      end
      if self._stop then -- every rank saw the same flag after the same step
        self._stop = false
        return self:_pause()
      end
      self:_progress(clock0, n0)
    end
    -- The end of the epoch: evaluate (an interrupt here pauses too; resuming evaluates again),
    -- print the summary, close it.
    local seconds, images = sys.clock() - clock0, self.sums.n - n0
    local s, h = self.sums, self.history
    local line = string.format("epoch %d/%d: loss %.4f, train acc %.1f%%", self.epochs + 1,
                               self.target, s.loss / math.max(s.n, 1),
                               100 * s.correct / math.max(s.n, 1))
    if self.eval_set then
      local ok, r = pcall(nn.evaluate, self.net, self.eval_set,
                          {batch = self.eval_batch or 256, loss = self.loss})
      if not ok and tostring(r):find("interrupted", 1, true) and P.poll_interrupt() then
        return self:_pause()
      end
      if not ok then error(r, 0) end
      h.test_loss[#h.test_loss + 1] = r.loss
      h.test_acc[#h.test_acc + 1] = r.top1 or 0 / 0
      line = line .. string.format(", test acc %.1f%% (loss %.4f)", 100 * (r.top1 or 0 / 0), r.loss)
    end
    if images > 0 then
      line = line .. string.format(", %.1f s, %.0f img/s", seconds, seconds > 0 and images / seconds or 0)
    end
    self:_say(line)
    self:_close_epoch()
  end
  return self.history
end

function Trainer:_pause()
  self.paused = true
  self:_say(string.format("paused at epoch %d step %d/%d — t:fit() or t:resume() continues",
                          self.epochs + 1, self.pos, self:steps_per_epoch()))
  return self.history, "paused"
end

function Trainer:resume()
  if not self.target or self.epochs >= self.target then
    self:_say(string.format("nothing to resume: %d epochs done; t:fit{epochs = n} trains more", self.epochs))
    return self.history
  end
  return self:fit()
end

-- Runs one epoch (the rest of the current one when it is under way): its mean loss, accuracy.
function Trainer:epoch()
  local _, paused = self:fit{epochs = 1}
  if paused then return nil, "paused" end
  local h = self.history
  return h.train_loss[#h.train_loss], h.train_acc[#h.train_acc]
end

-- ---- checkpoints

function Trainer:save(path)
  if type(path) ~= "string" then raise("Trainer:save: expected a file path") end
  util.check_path(path)
  local cfg = self.optim:config()
  local seed, counter = P.rng_state()
  local state = {
    version = 1, samples = self.data:size(), epochs = self.epochs, pos = self.pos,
    ranks = self.ddp and self.ddp.size or 1, -- batch x ranks: the global batch, which a resume keeps
    steps = self.steps, seed = self.seed, batch = self.batch, shuffle = self.shuffle,
    base_lr = self.base_lr, target = self.target, optim_kind = cfg.kind, clip = cfg.clip,
    rng = {seed, counter}, sums = self.sums, history = self.history,
    loss = {kind = self.loss.kind, label_smoothing = self.loss.label_smoothing, name = tostring(self.loss)},
    schedule = self.schedule and (schedule_fields(self.schedule) or "custom") or nil,
  }
  -- Under several ranks every rank holds the same weights: rank 1 writes, the others wait for it.
  if not self.ddp or dist.is_main() then
    P.save_trainer(path, self.net, self.optim, table.concat(serialize(state, {})))
  end
  if self.ddp then dist.barrier() end
  return self
end

function Trainer.load(path, opts)
  local f = "nn.Trainer.load"
  if type(path) ~= "string" then raise(f .. ": expected a file path") end
  util.check_path(path)
  opts = check_options(opts, {"data", "loss", "schedule", "verbose"}, f)
  local text = P.trainer_meta(path)
  if not text then raise(path .. ": not a trainer checkpoint (nn.load reads a network)") end
  if not data_only(text) then raise(path .. ": corrupt trainer metadata") end
  local chunk = load("return " .. text, "=" .. path, "t", {})
  local ok, st = pcall(chunk or error, "bad trainer metadata")
  if not ok or type(st) ~= "table" or st.version ~= 1 then
    raise(path .. ": corrupt trainer metadata")
  end
  local net, opt = P.load_trainer(path, st.optim_kind)
  if st.clip and st.clip > 0 then opt:set_clip(st.clip) end
  local loss = opts.loss
  if not loss and st.loss.kind == "lua" then
    raise(f .. ": " .. path .. " was trained with a loss written in Lua (" .. tostring(st.loss.name)
          .. "): pass it, nn.Trainer.load(path, {loss = ...})")
  end
  if not loss then
    loss = st.loss.kind == "mse" and nn.MSELoss()
      or nn.CrossEntropyLoss{label_smoothing = st.loss.label_smoothing}
  end
  local schedule = opts.schedule
  if not schedule and st.schedule == "custom" then
    print("nn.Trainer.load: the run used a custom schedule; pass it again as {schedule = ...}")
  elseif not schedule then
    schedule = rebuild_schedule(st.schedule)
  end
  -- Under another number of ranks the global batch stays: each rank's batch changes, so the
  -- position (in global batches) and the order of the samples stay exact.
  local batch, ranks = st.batch, st.ranks or 1
  if ranks ~= dist.size() and not is_loader(opts.data) then
    if math.type(batch) ~= "integer" or (batch * ranks) % dist.size() ~= 0 then
      raise(string.format("%s: the run's global batch %d (%d x %d ranks) does not divide over %d ranks",
                          f, batch * ranks, batch, ranks, dist.size()))
    end
    batch = batch * ranks // dist.size()
  end
  local t = new_trainer{net = net, data = opts.data, loss = loss, optim = opt,
                        batch = batch, seed = st.seed, shuffle = st.shuffle, schedule = schedule,
                        verbose = opts.verbose}
  if t.data:size() ~= st.samples then
    raise(string.format("%s: the data set has %d samples but the run was on %d", f, t.data:size(),
                        st.samples))
  end
  t.epochs, t.pos, t.steps, t.base_lr, t.target = st.epochs, st.pos, st.steps, st.base_lr, st.target
  t.sums, t.history = st.sums, setmetatable(st.history, History)
  P.set_rng_state(st.rng[1], st.rng[2])
  return t
end

Trainer.__tostring = function(t)
  return string.format("Trainer(%d epochs and %d steps done, batch %d, %s)", t.epochs, t.steps,
                       t.batch, tostring(t.optim))
end

doc("Trainer", "step", "t:step() -> loss",
    "One mini-batch: forward, loss, backward and the optimizer step, all in C; applies the schedule "
    .. "first. Returns the batch's loss (nil, \"interrupted\" after Ctrl-C inside the step).",
    "t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)), verbose = false}; print(t:step())",
    true)
doc("Trainer", "epoch", "t:epoch() -> train_loss, train_acc",
    "Trains to the end of the current epoch (a whole one when none is under way).",
    "t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)), verbose = false}; print(t:epoch())",
    true)
doc("Trainer", "fit", "t:fit{epochs=1, eval=data, eval_batch=256, verbose=} -> history",
    "Trains for epochs more epochs (finishing the one under way first), with a progress line and a "
    .. "summary per epoch (test accuracy when eval is given). Ctrl-C pauses at the next batch: "
    .. "t:fit() or t:resume() continues exactly where it stopped. history = {loss = per step, lr, "
    .. "train_loss, train_acc, test_loss, test_acc = per epoch}.",
    "t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)), verbose = false}; print(#t:fit{epochs = 2}.loss)",
    true)
doc("Trainer", "resume", "t:resume() -> history",
    "Continues a paused fit to its number of epochs.",
    "t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)), verbose = false}; t:resume()",
    true)
doc("Trainer", "on_step", "t:on_step(fn) -> t",
    "Calls fn(t) after every step (t.history.loss holds the losses so far).",
    "t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)), verbose = false}; t:on_step(function(t) print(t.steps) end); t:step()",
    true)
doc("Trainer", "save", "t:save(path) -> t",
    "Writes the network, the optimizer's state, the position in the data, the schedule, the "
    .. "history and the random generator's state to one safetensors file; nn.Trainer.load(path, "
    .. "{data = ...}) continues the run bit for bit.",
    "t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)), verbose = false}; local p = os.tmpname(); t:save(p); os.remove(p)",
    true)
doc("nn", "Trainer.load", "nn.Trainer.load(path, {data=, loss=, schedule=, verbose=}) -> trainer",
    "Rebuilds a trainer saved with t:save(path): network, optimizer, position, history and the "
    .. "random generator; data must be given again (the same samples).",
    "ds = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)); local p = os.tmpname(); nn.Trainer{net = nn.Linear(2, 2), data = ds, verbose = false}:save(p); print(nn.Trainer.load(p, {data = ds})); os.remove(p)")

return util.publish(help_rows, {nn = nn, optim = optim, Trainer = Trainer, Module = methods})
