-- dist.lua: the Lua half of module `dist`: gather, print, predict, and the data-parallel
-- Trainer's pieces (set-up broadcast, data shards, the agreed stop flag), which dsl/nn.lua takes
-- as require "nnlab.dist". Run once by nl_open_dist with the private C helpers P (dsl/dist.c).
local P = ...
local dist, tensor = dist, tensor
local util = require "nnlab.util"
local raise, check_options = util.error, util.check_options
local ceil = math.ceil

local help_rows, doc = util.help_rows("dist")

-- ---------------------------------------------------------------- gather, print

-- A Lua literal for plain data: numbers (exactly, %q), strings, booleans, tables of them.
local function literal(v, out, depth)
  local t = type(v)
  if t == "number" or t == "string" then out[#out + 1] = string.format("%q", v)
  elseif t == "boolean" or t == "nil" then out[#out + 1] = tostring(v)
  elseif t == "table" and depth < 32 then
    out[#out + 1] = "{"
    for k, x in pairs(v) do
      out[#out + 1] = "["; literal(k, out, depth + 1); out[#out + 1] = "]="
      literal(x, out, depth + 1); out[#out + 1] = ","
    end
    out[#out + 1] = "}"
  else
    raise(string.format("dist.gather: cannot send a %s (numbers, strings, booleans and tables of them)",
                        depth < 32 and t or "table nested deeper than 32"))
  end
  return out
end

function dist.gather(value)
  local parts = P.gather(table.concat(literal(value, {}, 0)))
  if not parts then return nil end
  local values = {}
  for i, text in ipairs(parts) do values[i] = load("return " .. text, "=dist.gather", "t", {})() end
  return values
end
doc("gather", "dist.gather(value) -> {value of rank 1, ...} on rank 1, nil elsewhere",
    "Collects one plain value (number, string, boolean or a table of them) from every rank.",
    "local all = dist.gather(dist.rank()); if all then print(#all) end")

function dist.print(...)
  if dist.rank() == 1 then print(...) end
end
doc("print", "dist.print(...)", "print on rank 1 only (every rank may call it).",
    "dist.print(\"ranks:\", dist.size())")

-- ---------------------------------------------------------------- predict

-- The seed CNN: its gradient bytes (60,362 f32 parameters), and its compute per sample on one
-- thread as the README's training figure gives it (3,829 images/s on 2 threads: about 0.52 ms a
-- sample on one); latency and bandwidth of a 10 Gb/s-class link. Any of them can be given.
local defaults = {bytes = 4 * 60362, sample_time = 0.52e-3, batch = 32, latency = 20e-6,
                  bandwidth = 10e9, overlap = 0}

function dist.predict(opts)
  local f = "dist.predict"
  opts = check_options(opts, {"ranks", "bandwidth", "latency", "bytes", "sample_time", "batch",
                              "overlap"}, f)
  local o = {}
  for k, v in pairs(defaults) do
    o[k] = opts[k] or v
    if type(o[k]) ~= "number" or o[k] ~= o[k] or o[k] < 0 then
      raise(string.format("%s: %s must be a number >= 0, got %s", f, k, tostring(opts[k])))
    end
  end
  local n = opts.ranks
  if math.type(n) ~= "integer" or n < 1 then raise(f .. ": ranks must be a whole number >= 1, got " .. tostring(n)) end
  if o.bandwidth <= 0 then raise(f .. ": bandwidth must be > 0 bytes/s") end
  if o.overlap > 1 then raise(f .. ": overlap is a fraction from 0 to 1") end
  local compute = o.sample_time * o.batch
  -- A ring all-reduce sends and receives 2 (N - 1) / N of the gradient, in 2 (N - 1) rounds.
  local comm = n > 1 and (2 * (n - 1) / n * o.bytes / o.bandwidth + 2 * (n - 1) * o.latency) or 0
  local step = compute + (1 - o.overlap) * comm
  return {ranks = n, compute = compute, comm = comm, step = step, efficiency = compute / step,
          images_per_s = n * o.batch / step, speedup = n * compute / step}
end
doc("predict", "dist.predict{ranks=, bandwidth=10e9, latency=20e-6, bytes=, sample_time=, batch=32, overlap=0} -> "
    .. "{step=, compute=, comm=, efficiency=, images_per_s=, speedup=}",
    "Predicts a data-parallel step on ranks processes from the compute time per sample and a ring "
    .. "all-reduce's 2(N-1)/N volume over the link's bandwidth (bytes/s) and latency (s); overlap is "
    .. "the fraction of communication hidden behind backward. Defaults: the seed CNN measured here.",
    "print(dist.predict{ranks = 16, bandwidth = 10e9}.efficiency)")

-- ---------------------------------------------------------------- the Trainer's pieces

local ddp = {}

-- Trainers made while a search runs its trials (ddp.alone) train by themselves, one trial per
-- rank, whatever the ranks: no broadcast, no shards, no exchange.
local solo = 0
function ddp.alone()
  solo = solo + 1
  return setmetatable({}, {__close = function() solo = solo - 1 end})
end
function ddp.by_itself() return dist.size() == 1 or solo > 0 end

-- The data-parallel state of a new trainer t, or nil when it trains alone (one rank, or
-- distributed = false): broadcasts rank 1's parameters and buffers to every rank.
function ddp.setup(t, distributed, fname)
  if distributed ~= nil and type(distributed) ~= "boolean" and type(distributed) ~= "table" then
    raise(fname .. ": distributed must be true, false or a table {bucket_mb=, sync_bn=}")
  end
  local o = check_options(type(distributed) == "table" and distributed or {}, {"bucket_mb", "sync_bn"}, fname)
  local mb = o.bucket_mb or 1 / 16 -- 64 KiB: the seed CNN (241 KB of gradients) in 3 buckets
  if type(mb) ~= "number" or not (mb > 0) then raise(fname .. ": bucket_mb must be a number > 0") end
  if distributed == false or ddp.by_itself() then return nil end
  if o.sync_bn then P.sync_bn(t.net) end -- every BatchNorm takes the global batch's statistics
  -- a network on a device (GPU ranks) sends its tensors through a host copy
  local function from_rank1(v)
    if v:device() == "cpu" then return dist.broadcast(v, 1) end
    v:copy(dist.broadcast(v:to("cpu"), 1))
  end
  for _, p in ipairs(t.net:parameters()) do from_rank1(p.value) end
  for _, b in ipairs(t.net:buffers()) do
    local dt = b.value:dtype()
    if dt == "f32" or dt == "i32" then from_rank1(b.value) end
  end
  return {exchange = P.exchange(math.floor(mb * 2 ^ 20)), rank = dist.rank(), size = dist.size()}
end

-- The positions of an epoch's order that this rank takes: r, r + N, ... over the order padded by
-- wrapping to a multiple of N (PyTorch's DistributedSampler); order: 1-based indices (i32).
function ddp.shard(d, order)
  local n, N = order:numel(), d.size
  local src, out = order:totable(), {}
  for k = 0, ceil(n / N) - 1 do out[k + 1] = src[(d.rank - 1 + k * N) % n + 1] end
  return tensor.from(out):to("i32")
end

function ddp.shard_size(d, n) return ceil(n / d.size) end

-- nn.evaluate under several ranks: this rank's samples of a data set of n (r, r + N, ...; no
-- padding, so every sample counts once), or nil when evaluating alone.
function ddp.eval_indices(n)
  local N, r = dist.size(), dist.rank()
  if ddp.by_itself() then return nil end
  local idx = {}
  for i = r, n, N do idx[#idx + 1] = i end
  return tensor.from(#idx > 0 and idx or {0}):to("i32"), #idx
end

ddp.reduce_eval = P.reduce_eval

-- Sums over the ranks of the numbers given, and whether any rank asked to stop (Ctrl-C, or
-- SIGTERM from mpirun): one all-reduce a step, so every rank stops at the same step.
function ddp.agree(...)
  return P.sum(P.stop_requested() and 1 or 0, ...)
end

ddp.catch = P.catch

function dist.stats(t)
  if type(t) ~= "table" or getmetatable(t) == nil or not t.ddp then
    raise("dist.stats: expected a data-parallel nn.Trainer (one made under several ranks)")
  end
  return P.exchange_stats(t.ddp.exchange)
end
doc("stats", "dist.stats(trainer) -> {steps=, bytes=, buckets=, wait=, overlapped=}",
    "The gradient exchange of a data-parallel trainer so far: steps, bytes all-reduced a step, "
    .. "buckets a step, seconds spent waiting for the all-reduces, buckets started during backward.",
    "-- under nnlab -n 2: print(dist.stats(t).wait)")

package.loaded["nnlab.dist"] = ddp

return util.publish(help_rows, {dist = dist})
