-- nn.lua: the Lua half of nn and optim: the Trainer (fit with progress, Ctrl-C pause and resume,
-- checkpoints), nn.evaluate, optim.schedule and Module:summary. Run once by nl_open_nn with the
-- private C helpers P (dsl/nn.c) and the Module metatable; returns the help rows of what it defines.
local P, ModuleMT = ...
local nn, optim, tensor, sys = nn, optim, tensor, sys
local methods = ModuleMT.methods
local floor, ceil, huge = math.floor, math.ceil, math.huge

local util = require "nnlab.util"
local help_rows, doc = util.help_rows()

-- ---------------------------------------------------------------- small helpers

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

-- The input shape a network takes, found from its first layer: its features for Linear, its
-- channels for Conv2d, and the image size the network accepts (a Linear after Flatten fixes
-- it): 32 x 32 first (CIFAR-10), then 28, then every square size up to 512. nil when the first
-- layer says nothing or no size fits.
local function default_input(net)
  local m = net
  while m:type() == "Sequential" or m:type() == "Residual" do
    if #m == 0 then return nil end
    m = m[1]
  end
  local t = m:type()
  if t == "Linear" then return {1, m["in"]} end
  if t == "BatchNorm1d" then return {1, m.c} end
  local c = t == "Conv2d" and m["in"] or t == "BatchNorm2d" and m.c or nil
  if not c then return nil end
  local function fits(size) return pcall(net.infer, net, {1, c, size, size}) end
  for _, size in ipairs{32, 28} do
    if fits(size) then return {1, c, size, size} end
  end
  for size = 1, 512 do
    if fits(size) then return {1, c, size, size} end
  end
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

-- The table of layers and parameters alone, for a network whose input shape is unknown.
local function summary_without_shapes(m)
  local rows = {}
  local function walk(mod, path, depth)
    local label = string.rep("  ", depth) .. (path ~= "" and (path .. "  ") or "") .. one_line(mod)
    rows[#rows + 1] = {label, commas(param_count(mod))}
    for i = 1, #mod do walk(mod[i], path == "" and tostring(i) or (path .. "." .. i), depth + 1) end
  end
  if #m == 0 then walk(m, "", 0) else for i = 1, #m do walk(m[i], tostring(i), 0) end end
  local w1, w2 = #"Layer", #"Params"
  for _, r in ipairs(rows) do w1, w2 = math.max(w1, #r[1]), math.max(w2, #r[2]) end
  local lines = {string.format("%-" .. w1 .. "s  %" .. w2 .. "s", "Layer", "Params"),
                 string.rep("-", w1 + w2 + 2)}
  for _, r in ipairs(rows) do lines[#lines + 1] = string.format("%-" .. w1 .. "s  %" .. w2 .. "s", r[1], r[2]) end
  local params = param_count(m)
  lines[#lines + 1] = string.rep("-", w1 + w2 + 2)
  lines[#lines + 1] = string.format("Total params: %s (%s)", commas(params), bytes(params * 4))
  lines[#lines + 1] = "(output shapes, multiply-adds and memory need the input shape: "
    .. "net:summary{1, C, H, W}, batch first)"
  print(table.concat(lines, "\n"))
  return util.quiet({params = params})
end

function methods.summary(m, input_shape)
  input_shape = input_shape or default_input(m)
  if not input_shape then return summary_without_shapes(m) end
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
  -- Padded by hand: string.format refuses widths over 99 (deeply nested rows are longer).
  local function pad(c, w, right) return right and string.rep(" ", w - #c) .. c or c .. string.rep(" ", w - #c) end
  local function line(r)
    local cells = {}
    for i = 1, 5 do cells[i] = pad(r[i], width[i], i > 2) end
    return (table.concat(cells, "  "):gsub("%s+$", ""))
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
  return util.quiet({params = params, macs = total_macs, memory = leaf_memory, output = out})
end
doc("Module", "summary", "m:summary([input_shape]) -> {params=, macs=, memory=, output=}",
    "Prints a table of the layers: output shape, parameters, multiply-adds and output memory, then "
    .. "the totals (the REPL does not echo the returned totals). The input shape (batch first) "
    .. "defaults from the first layer: Linear(n, ...) gives {1, n}, Conv2d(3, ...) {1, 3, S, S} with "
    .. "the image size S the network accepts (32 first); without one, the table has no shapes.",
    "nn.Sequential(nn.Conv2d(3, 8, 3, {padding = 1}), nn.ReLU(), nn.Flatten(), nn.Linear(8192, 10)):summary()",
    true)

-- ---------------------------------------------------------------- data access

-- Whether x has methods named names (without raising for values that cannot be indexed).
local function has_methods(x, names)
  if type(x) ~= "table" and type(x) ~= "userdata" then return false end
  for _, name in ipairs(names) do
    local ok, f = pcall(function() return x[name] end)
    if not ok and tostring(f):find("interrupted", 1, true) then error(f, 0) end -- Ctrl-C goes on
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
  local xs, ys, list = {}, {}, idx:totable()
  for k, i in ipairs(list) do xs[k], ys[k] = data:get(i) end
  return P.collate(xs, ys, list) -- its messages name the data set's indices
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

-- ---------------------------------------------------------------- precision

-- The precision option of nn.Trainer, nn.evaluate and nn.profile: "fp32" (nil) or "bf16" (mixed
-- precision of convolutions and matrix products, on the CPU).
local function check_precision(p, net, fname)
  if p == nil or p == "fp32" then return "fp32" end
  if p ~= "bf16" then
    raise(string.format("%s: precision must be \"fp32\" or \"bf16\", got %s", fname,
                        type(p) == "string" and string.format("%q", p) or type(p)))
  end
  local dev = net:device()
  if dev ~= "cpu" and dev ~= "sim" then
    raise(string.format("%s: precision \"bf16\" runs on the CPU only; the network is on %s", fname, dev))
  end
  return p
end

-- Calls fn(...) with convolutions and matrix products in precision p, then restores the one
-- before (also when fn raises); returns pcall's results.
local function pcall_in_precision(p, fn, ...)
  local before = sys.precision()
  sys.precision(p)
  local r = table.pack(pcall(fn, ...))
  sys.precision(before)
  return table.unpack(r, 1, r.n)
end

-- ---------------------------------------------------------------- nn.evaluate

function nn.evaluate(net, data, opts)
  local fname = "nn.evaluate"
  if not nn.is_module(net) then raise(fname .. ": the first argument must be a network") end
  check_data(data, fname)
  if data:size() == 0 then raise(fname .. ": the data set is empty (0 samples): there is nothing to evaluate") end
  opts = check_options(opts, {"batch", "loss", "precision"}, fname)
  local batch = check_int(opts.batch or 256, "batch", 1, fname)
  local precision = check_precision(opts.precision, net, fname)
  local loss = opts.loss
  if loss == nil then loss = nn.CrossEntropyLoss() end
  if loss == false then loss = nil end
  local was_training = net.training
  local stats = P.eval_stats()
  net:eval()
  local ok, err = pcall_in_precision(precision, function()
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
  if not ddp.by_itself() then ddp.reduce_eval(stats) end -- the global result on every rank
  return P.eval_result(stats, loss ~= nil)
end
doc("nn", "evaluate", "nn.evaluate(net, data, {batch=256, loss=nn.CrossEntropyLoss(), precision=\"fp32\"}) -> results",
    "Runs net in eval mode over a data set (or once through a data.loader; under several ranks each takes its share and every rank gets the global result): {loss=, top1=, top5= (fractions), count=, "
    .. "confusion = i32 Tensor [C, C] (row = true class, column = predicted, 1-based), "
    .. "per_class = {accuracy of each class (nan without samples)}}. loss=false skips the loss. "
    .. "precision=\"bf16\" runs convolutions and matrix products in bf16 mixed precision (sys.precision).",
    "r = nn.evaluate(nn.Linear(2, 3), nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8))); print(r.top1)")

-- ---------------------------------------------------------------- profile

-- Prints p (from nn.profile) as a table.
local function print_profile(p)
  local int8 = p.int8_rows > 0 and string.format("; int8 peak %.0f GOP/s (%s, measured)", p.int8_peak_gops,
                                                 p.int8_peak_instr) or ""
  print(string.format("profile of %s on %s: %d thread(s), kernels %s, OpenBLAS %s%s; peak %.1f GFLOP/s "
                      .. "(fp32 sgemm 1024^3, measured)%s", p.net, p.input, p.threads, p.isa, p.blas,
                      p.precision == "fp32" and "" or ", precision " .. p.precision, p.peak_gflops, int8))
  print(string.format("%-40s %8s %8s %9s %8s %7s  %s", "layer", "fwd ms", "bwd ms", "MFLOP", "GFLOP/s",
                      "% peak", "kernels (forward; backward)"))
  for _, r in ipairs(p.rows) do
    local k = r.kernel_fwd .. ((r.kernel_bwd ~= "" and "; " .. r.kernel_bwd) or "")
    print(string.format("%-40s %8.3f %8.3f %9.1f %8s %7s  %s", r.layer:sub(1, 40), r.fwd_ms, r.bwd_ms,
                        (r.fwd_flops + r.bwd_flops) / 1e6, r.flops > 0 and string.format("%.1f", r.gflops) or "-",
                        r.flops > 0 and string.format("%.0f%%", r.pct_peak) or "-", k))
  end
  print(string.format("%-40s %8.3f %8.3f %9.1f %8.1f %6.0f%%", "total (each layer alone)", p.fwd_ms, p.bwd_ms,
                      p.flops / 1e6, p.gflops, p.pct_peak))
  print(string.format("%.0f images/s at batch %d; the peak would allow %.0f: %.0f%% of the machine's limit",
                      p.images_s, p.batch, p.limit_images_s, 100 * p.images_s / p.limit_images_s))
end

function nn.profile(net, x, opts)
  local fname = "nn.profile"
  if not nn.is_module(net) then raise(fname .. ": the first argument must be a network") end
  if not tensor.is_tensor(x) then raise(fname .. ": the second argument must be an input Tensor (a batch)") end
  opts = check_options(opts, {"backward", "precision", "reps", "quiet"}, fname)
  local precision = check_precision(opts.precision, net, fname)
  local backward = opts.backward ~= false
  local reps = check_int(opts.reps or 5, "reps", 1, fname)
  local was_training = net.training
  local ok, rows, peak = pcall_in_precision(precision, P.profile, net, x, backward, reps)
  net:train(was_training)
  if not ok then error(rows, 0) end
  local peak8, instr8 = 0, "none" -- measured only for a net with int8 layers
  for _, r in ipairs(rows) do
    if r.kernel_fwd:find("^qconv") then peak8, instr8 = P.int8_peak() break end
  end
  local isa, blas = sys.isa()
  local p = {rows = rows, peak_gflops = peak, int8_peak_gops = peak8, int8_peak_instr = instr8, int8_rows = 0,
             isa = isa, blas = blas, threads = sys.threads(), precision = precision,
             batch = x:shape()[1], input = shape_str(x:shape()), net = net:type(), fwd_ms = 0, bwd_ms = 0, flops = 0}
  -- each layer against the peak of its arithmetic: the int8 kernels' against the int8 peak; the
  -- whole net's share is the time its layers would take at their peaks over the time they took
  local at_peak_ms = 0
  for _, r in ipairs(rows) do
    r.ms, r.flops = r.fwd_ms + r.bwd_ms, r.fwd_flops + r.bwd_flops
    r.gflops = r.ms > 0 and r.flops / r.ms * 1e-6 or 0
    r.peak = (r.kernel_fwd:find("^qconv") and peak8 > 0) and "int8" or "fp32"
    local rpeak = r.peak == "int8" and peak8 or peak
    if r.peak == "int8" then p.int8_rows = p.int8_rows + 1 end
    r.pct_peak = 100 * r.gflops / rpeak
    at_peak_ms = at_peak_ms + r.flops / rpeak * 1e-6
    p.fwd_ms, p.bwd_ms, p.flops = p.fwd_ms + r.fwd_ms, p.bwd_ms + r.bwd_ms, p.flops + r.flops
  end
  p.ms = p.fwd_ms + p.bwd_ms
  p.gflops = p.ms > 0 and p.flops / p.ms * 1e-6 or 0
  p.pct_peak = p.ms > 0 and 100 * at_peak_ms / p.ms or 0
  p.images_s = p.ms > 0 and 1e3 * p.batch / p.ms or 0
  p.limit_images_s = at_peak_ms > 0 and 1e3 * p.batch / at_peak_ms or math.huge
  if not opts.quiet then print_profile(p) end
  return p
end
doc("nn", "profile", "nn.profile(net, x, {backward=true, reps=5, quiet=false, precision=\"fp32\"}) -> p",
    "Times each layer of a Sequential net alone on the input it sees for the batch x (best of reps): forward "
    .. "and backward ms, FLOPs, GFLOP/s and % of the machine's peak: fp32's (a 1024^3 sgemm, measured once per "
    .. "thread count), and for int8 layers (quant.int8) the int8 peak (register-only loops of the CPU's best "
    .. "int8 instruction, vpdpbusd or vpmaddwd); and the kernels that ran (e.g. \"conv direct avx2\", \"sgemm Zen\", "
    .. "\"qconv avx2\"). Prints a table "
    .. "(unless quiet) and returns p = {rows = {{layer=, fwd_ms=, bwd_ms=, fwd_flops=, bwd_flops=, gflops=, "
    .. "pct_peak=, peak = \"fp32\"|\"int8\", kernel_fwd=, kernel_bwd=}...}, peak_gflops=, int8_peak_gops= (0 without int8 layers), images_s=, "
    .. "limit_images_s=, isa=, blas=, ...}; "
    .. "viz.profile(p) draws it. Parameter gradients are left as they were. precision = \"bf16\" times the "
    .. "bf16 mixed-precision kernels (see sys.precision; the peak stays fp32's).",
    "p = nn.profile(nn.Sequential{nn.Conv2d(3, 8, 3, {padding = 1}), nn.ReLU()}, tensor.randn(4, 3, 16, 16), {reps = 2})")

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

-- ---------------------------------------------------------------- trainer metadata (JSON)

-- Reading the metadata back (P.trainer_meta parses the JSON in C: data only, nothing runs):
-- every field is checked, and a bad one is named: "<path>: trainer metadata: steps = -5 (expected
-- a whole number >= 0)".
local function meta_checker(path)
  local C = {}
  local function bad(name, v, expected)
    local shown = type(v) == "string" and string.format("%q", v) or tostring(v)
    if type(v) == "table" then shown = "a table" end
    raise(string.format("%s: trainer metadata: %s = %s (expected %s)", path, name, shown:sub(1, 60),
                        expected))
  end
  C.bad = bad
  local special = {nan = 0 / 0, inf = huge, ["-inf"] = -huge}
  function C.number(v, name, min, allow_special)
    if allow_special and special[v] then return special[v] end
    if type(v) ~= "number" or v ~= v or v == huge or v == -huge or (min and v < min) then
      bad(name, v, "a finite number" .. (min and (" >= " .. min) or ""))
    end
    return v
  end
  function C.int(v, name, min)
    local i = type(v) == "number" and math.tointeger(v) or nil
    if not i or i < min or i > 2 ^ 53 then bad(name, v, "a whole number >= " .. min) end
    return i
  end
  function C.list(v, name) -- a list of numbers (NaN and infinities allowed)
    if type(v) ~= "table" then bad(name, v, "a list of numbers") end
    local out = {}
    for i = 1, #v do out[i] = C.number(v[i], name .. "[" .. i .. "]", nil, true) end
    return out
  end
  function C.table(v, name)
    if type(v) ~= "table" then bad(name, v, "a table") end
    return v
  end
  return C
end

-- The trainer's state from its metadata st (a table parsed from JSON), every field checked.
local function check_meta(st, path)
  local C = meta_checker(path)
  if st.version ~= 2 then C.bad("version", st.version, "2") end
  local r = {}
  for _, k in ipairs{"samples", "epochs", "pos", "steps", "seed"} do r[k] = C.int(st[k], k, 0) end
  r.batch = C.int(st.batch, "batch", 1)
  r.ranks = st.ranks ~= nil and C.int(st.ranks, "ranks", 1) or nil
  if st.target ~= nil then
    r.target = C.int(st.target, "target", 0)
    if r.target < r.epochs then C.bad("target", st.target, "at least epochs = " .. r.epochs) end
  end
  if type(st.shuffle) ~= "boolean" then C.bad("shuffle", st.shuffle, "true or false") end
  r.shuffle = st.shuffle
  if st.precision ~= nil and st.precision ~= "fp32" and st.precision ~= "bf16" then
    C.bad("precision", st.precision, '"fp32" or "bf16"')
  end
  r.precision = st.precision
  r.base_lr = C.number(st.base_lr, "base_lr", 0)
  if st.optim_kind ~= "sgd" and st.optim_kind ~= "adam" and st.optim_kind ~= "adamw" then
    C.bad("optim_kind", st.optim_kind, '"sgd", "adam" or "adamw"')
  end
  r.optim_kind = st.optim_kind
  if st.clip ~= nil then r.clip = C.number(st.clip, "clip", 0) end
  local rng = C.table(st.rng, "rng")
  r.rng = {}
  for i = 1, 2 do
    r.rng[i] = type(rng[i]) == "string" and rng[i]:match("^%-?%d+$") and math.tointeger(tonumber(rng[i]))
    if not r.rng[i] then C.bad("rng[" .. i .. "]", rng[i], "a whole number as a string") end
  end
  local sums = C.table(st.sums, "sums")
  r.sums = {n = C.int(sums.n, "sums.n", 0), correct = C.int(sums.correct, "sums.correct", 0),
            loss = C.number(sums.loss, "sums.loss", nil, true)}
  if r.sums.correct > r.sums.n then C.bad("sums.correct", sums.correct, "at most sums.n") end
  local h = C.table(st.history, "history")
  r.history = {}
  for _, k in ipairs{"loss", "lr", "train_loss", "train_acc", "test_loss", "test_acc"} do
    r.history[k] = C.list(h[k], "history." .. k)
  end
  if h.extra ~= nil then -- on_step values by name
    r.history.extra = {}
    for k, v in pairs(C.table(h.extra, "history.extra")) do
      if type(k) == "string" then r.history.extra[k] = C.list(v, "history.extra." .. k) end
    end
  end
  local loss = C.table(st.loss, "loss")
  if loss.kind ~= "cross_entropy" and loss.kind ~= "mse" and loss.kind ~= "distill" and loss.kind ~= "lua" then
    C.bad("loss.kind", loss.kind, '"cross_entropy", "mse", "distill" or "lua"')
  end
  if loss.name ~= nil and (type(loss.name) ~= "string" or #loss.name > 200) then
    C.bad("loss.name", loss.name, "a string of at most 200 characters")
  end
  r.loss = {kind = loss.kind, name = loss.name,
            label_smoothing = C.number(loss.label_smoothing or 0, "loss.label_smoothing", 0)}
  if r.loss.label_smoothing >= 1 then C.bad("loss.label_smoothing", loss.label_smoothing, "below 1") end
  r.schedule = st.schedule
  if st.schedule ~= nil and st.schedule ~= "custom" then
    -- A schedule's own constructor checks its fields.
    local function rebuild(saved, name, depth)
      if type(saved) ~= "table" or not kinds[saved.kind] then
        C.bad(name .. ".kind", type(saved) == "table" and saved.kind or saved,
              "one of the kinds of optim.schedule")
      end
      if depth > 8 then C.bad(name, saved, "schedules nested at most 8 deep") end
      local opts = {}
      for k, v in pairs(saved) do if k ~= "kind" then opts[k] = v end end
      if opts.after ~= nil then opts.after = rebuild(opts.after, name .. ".after", depth + 1) end
      local ok, s = pcall(kinds[saved.kind], opts)
      if not ok then C.bad(name, saved.kind, util.reason(s, "optim.schedule." .. saved.kind)) end
      return s
    end
    r.schedule = rebuild(st.schedule, "schedule", 1)
  end
  return r
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
                         "verbose", "distributed", "precision", "run"}

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
  t.precision = check_precision(opts.precision, t.net, f)
  if t.precision == "bf16" and t.verbose then
    local _, how = sys.precision()
    if how:find("emulated", 1, true) then
      print("bf16 mixed precision: emulated (this CPU has no AVX512_BF16): the same results as native bf16, "
            .. "computed in fp32 arithmetic, so no faster than fp32")
    else
      print("bf16 mixed precision: " .. how)
    end
  end
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
  if opts.run ~= nil then t:record(opts.run) end -- a run folder (dsl/runs.lua)
  return t
end

nn.Trainer = setmetatable({}, {
  __call = function(_, opts) return new_trainer(opts) end,
  __index = Trainer,
  __tostring = function() return "nn.Trainer" end,
})
doc("nn", "Trainer", "nn.Trainer{net=, data=, loss=nn.CrossEntropyLoss(), optim=optim.Adam(net), "
    .. "batch=64, seed=1, schedule=nil, shuffle=true, verbose=true, distributed=, precision=\"fp32\", run=} -> trainer",
    "Trains net on a data set in mini-batches, each step in C (forward, loss, backward, update). "
    .. "data: anything with :size() and :get(i) (a C :batch(indices) is used when present), or a "
    .. "data.loader (its batches, order and augmentation). seed orders the data (dropout draws from "
    .. "tensor.seed's generator). Under several ranks (nnlab -n N) it is data-parallel: batch is per rank; "
    .. "distributed = false trains independent replicas, distributed = {sync_bn = true, bucket_mb = 1/16} "
    .. "tunes it. precision = \"bf16\": mixed precision on the CPU (convolutions and matrix products take "
    .. "bf16 inputs with fp32 sums; weights, loss and batch-norm statistics stay fp32; emulated, and said "
    .. "so, where the CPU has no AVX512_BF16). run = \"runs/name\" writes a run folder as it trains (t:record). "
    .. "Methods: step, epoch, fit, resume, on_step, save, record; fields history, epochs, steps, pos. help \"Trainer\" lists them.",
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
  if self.run then self.run:on_epoch() end
end

-- Refuses a step or fit started from inside one of this trainer's own steps (its schedule, an
-- on_step hook, the data set's get), where it would overwrite the position and target of the
-- one under way; returns a guard that marks the trainer busy until it is closed.
local function enter(t, fname)
  if t._busy then
    raise(string.format("%s: the trainer is already inside %s (called from its schedule, an on_step "
                        .. "hook or its data set); a trainer cannot train inside itself", fname, t._busy))
  end
  t._busy = fname
  return setmetatable({}, {__close = function() t._busy = nil end})
end

function Trainer:step()
  local busy <close> = enter(self, "Trainer:step")
  check_not_empty(self)
  if self.pos >= self:steps_per_epoch() then self:_close_epoch() end
  local x, y = self:_batch(self.epochs, self.pos)
  x = on_net_device(self.net, x)
  if self.schedule then self.optim:set_lr(self.schedule(self.steps, self.base_lr)) end
  self.net:train()
  if self.ddp then ddp.catch(true) end -- a signal now only raises the flag the ranks agree on
  local ok, loss, correct, updated, norm = pcall_in_precision(self.precision, P.train_step, self.net, self.loss,
                                                              self.optim, x, y, self.ddp and self.ddp.exchange)
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
  for _, hook in ipairs(self.hooks) do
    local values = hook(self)
    if values ~= nil then self:_keep(values) end
  end
  if self.run then self.run:on_step() end
  return loss
end

-- Keeps the values an on_step hook returned ({name = number, ...}) in history.extra[name], one per
-- step (NaN for the steps that gave none).
function Trainer:_keep(values)
  if type(values) ~= "table" then
    raise(string.format("Trainer:step: an on_step function returned a %s; it may return nothing or a "
                        .. "table {name = number, ...}", type(values)))
  end
  local h = self.history
  h.extra = h.extra or {}
  local n = #h.loss
  for k, v in pairs(values) do
    if type(k) ~= "string" or type(v) ~= "number" then
      raise(string.format("Trainer:step: an on_step function returned %s = %s; values must be numbers "
                          .. "under names, {grad_norm = 0.5}", tostring(k), tostring(v)))
    end
    local list = h.extra[k]
    if not list then list = {} h.extra[k] = list end
    for i = #list + 1, n - 1 do list[i] = 0 / 0 end
    list[n] = v
  end
end

-- The 2-norm of every parameter gradient together (what clipping measures), as they are now:
-- after a step, those of its batch.
function Trainer:grad_norm()
  local sum = 0
  for _, p in ipairs(self.net:parameters()) do
    if p.grad then sum = sum + p.grad:norm() ^ 2 end
  end
  return math.sqrt(sum)
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
  if self._busy then enter(self, f) end -- raises: fit inside a step of the same trainer
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
  local guard <close> = setmetatable({}, {__close = function(_, err)
    P.defer(false)
    if self.ddp then ddp.catch(false) end
    if self.run then self.run:on_end(err) end -- the run folder: histories, dashboard, checkpoint
  end})
  local spe = self:steps_per_epoch()
  while self.epochs < self.target do
    local clock0, n0, waited0 = sys.clock(), self.sums.n, self.waited or 0
    -- Banks the epoch's training time so far in sums.seconds: the whole epoch across pauses and
    -- resumes, less the time its step hooks spent waiting (t.waited: a window paused by space).
    local function bank()
      local now, waited = sys.clock(), self.waited or 0
      self.sums.seconds = (self.sums.seconds or 0) + (now - clock0) - (waited - waited0)
      clock0, waited0 = now, waited
    end
    self._drawn = nil
    while self.pos < spe do
      if not self.ddp and P.poll_interrupt() then bank() return self:_pause() end
      local loss = self:step()
      if loss == nil then
        P.poll_interrupt()
        bank()
        return self:_pause()
      end
      if self._stop then -- every rank saw the same flag after the same step
        self._stop = false
        bank()
        return self:_pause()
      end
      self:_progress(clock0, n0)
    end
    -- The end of the epoch: evaluate (an interrupt here pauses too; resuming evaluates again),
    -- print the summary, close it.
    bank()
    local seconds, images = self.sums.seconds, self.sums.n
    local s, h = self.sums, self.history
    local line = string.format("epoch %d/%d: loss %.4f, train acc %.1f%%", self.epochs + 1,
                               self.target, s.loss / math.max(s.n, 1),
                               100 * s.correct / math.max(s.n, 1))
    if self.eval_set then
      local ok, r = pcall(nn.evaluate, self.net, self.eval_set,
                          {batch = self.eval_batch or 256, loss = self.loss, precision = self.precision})
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

-- What continues a paused fit, as it is true here: at a prompt, the trainer's global name (when
-- it has one); in a script with no prompt to follow, fit only returns to the script.
local function how_to_continue(t)
  if not P.prompt_follows() then
    return "fit returns \"paused\" to the script, which goes on (nnlab -i gives a prompt afterwards)"
  end
  local name
  for k, v in next, _G do
    if v == t and type(k) == "string" and k:match("^[%a_][%w_]*$") and (not name or k < name) then name = k end
  end
  if name then return string.format("%s:fit() or %s:resume() continues", name, name) end
  return "no global names this trainer: the code holding it can call :fit() or :resume()"
end

function Trainer:_pause()
  self.paused = true
  self:_say(string.format("paused at epoch %d step %d/%d — %s", self.epochs + 1, self.pos,
                          self:steps_per_epoch(), how_to_continue(self)))
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
    version = 2, samples = self.data:size(), epochs = self.epochs, pos = self.pos,
    ranks = self.ddp and self.ddp.size or 1, -- batch x ranks: the global batch, which a resume keeps
    steps = self.steps, seed = self.seed, batch = self.batch, shuffle = self.shuffle, precision = self.precision,
    base_lr = self.base_lr, target = self.target, optim_kind = cfg.kind, clip = cfg.clip,
    rng = {string.format("%d", seed), string.format("%d", counter)}, sums = self.sums, history = self.history,
    loss = {kind = self.loss.kind, label_smoothing = self.loss.label_smoothing, name = tostring(self.loss)},
    schedule = self.schedule and (schedule_fields(self.schedule) or "custom") or nil,
  }
  -- Under several ranks every rank holds the same weights: rank 1 writes, the others wait for it.
  if not self.ddp or dist.is_main() then
    P.save_trainer(path, self.net, self.optim, util.json(state))
  end
  if self.ddp then dist.barrier() end
  return self
end

function Trainer.load(path, opts)
  local f = "nn.Trainer.load"
  if type(path) ~= "string" then raise(f .. ": expected a file path") end
  util.check_path(path)
  opts = check_options(opts, {"data", "loss", "schedule", "verbose", "device"}, f)
  if opts.device ~= nil and type(opts.device) ~= "string" then
    raise(f .. ": device must be a device name (\"cpu\", \"sim\", \"cuda:1\"), got " .. type(opts.device))
  end
  local meta = P.trainer_meta(path)
  if not meta then raise(path .. ": not a trainer checkpoint (nn.load reads a network)") end
  local st = check_meta(meta, path)
  local net, opt = P.load_trainer(path, st.optim_kind, opts.device)
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
    schedule = st.schedule
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
                        verbose = opts.verbose, precision = st.precision}
  if t.data:size() ~= st.samples then
    raise(string.format("%s: the data set has %d samples but the run was on %d", f, t.data:size(),
                        st.samples))
  end
  if st.pos > t:steps_per_epoch() then
    raise(string.format("%s: trainer metadata: pos = %d but an epoch has %d batches", path, st.pos,
                        t:steps_per_epoch()))
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
    "Calls fn(t) after every step (t.history.loss holds the losses so far). fn may return values of "
    .. "its own, {name = number, ...}: they are kept per step in t.history.extra[name], written to a "
    .. "run folder's steps.csv, and viz.dashboard(t, {extra = {name}}) plots them live.",
    "t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)), verbose = false}; t:on_step(function(t) return {grad_norm = t:grad_norm()} end); t:step(); print(t.history.extra.grad_norm[1])",
    true)
doc("Trainer", "grad_norm", "t:grad_norm() -> number",
    "The 2-norm of all parameter gradients together (what clipping measures), as they are now: "
    .. "after a step, its batch's. For on_step: t:on_step(function(t) return {grad_norm = t:grad_norm()} end).",
    "t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)), verbose = false}; t:step(); print(t:grad_norm())",
    true)
doc("Trainer", "save", "t:save(path) -> t",
    "Writes the network, the optimizer's state, the position in the data, the schedule, the "
    .. "history and the random generator's state to one safetensors file; nn.Trainer.load(path, "
    .. "{data = ...}) continues the run bit for bit.",
    "t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)), verbose = false}; local p = os.tmpname(); t:save(p); os.remove(p)",
    true)
doc("nn", "Trainer.load", "nn.Trainer.load(path, {data=, loss=, schedule=, verbose=, device=}) -> trainer",
    "Rebuilds a trainer saved with t:save(path): network, optimizer, position, history and the "
    .. "random generator; data must be given again (the same samples). device (\"sim\", "
    .. "\"cuda:1\", ...) puts the network and the optimizer's state there (default: the CPU).",
    "ds = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)); local p = os.tmpname(); nn.Trainer{net = nn.Linear(2, 2), data = ds, verbose = false}:save(p); print(nn.Trainer.load(p, {data = ds})); os.remove(p)")

return util.publish(help_rows, {nn = nn, optim = optim, Trainer = Trainer, Module = methods})
