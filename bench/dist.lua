-- dist.lua: data-parallel training on this machine: the seed CNN on CIFAR-10 (a 6,400-image
-- subset, global batch 64, Adam 1e-3) with 1 rank x 2 threads against 2 ranks x 1 thread (nnlab -n 2),
-- images/s and their ratio, the bytes all-reduced per step, the time spent waiting on the
-- all-reduce with buckets started during backward and with one bucket at the end (the overlap's
-- gain); then the all-reduce's latency and bandwidth between 2 ranks here, and the step time and
-- efficiency they predict for 2..64 ranks (dist.predict) on this link and on 10 Gb/s Ethernet.
--   build/nnlab bench/dist.lua                       (run by make bench)
--   workers: nnlab [-n 2] bench/dist.lua --train BUCKET_MB | --allreduce
local mode = arg[1]

local function seed_cnn()
  return nn.Sequential{
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(4096, 10),
  }
end

if mode == "--train" then
  local bucket_mb = tonumber(arg[2])
  local ok, train = pcall(data.cifar10)
  local ds
  if ok then ds = train:subset(1, 6400) else
    tensor.seed(1)
    ds = data.from_tensors((tensor.rand(6400, 3, 32, 32) * 255):to("u8"), (tensor.rand(6400) * 9.98 + 0.51):to("i32"))
  end
  tensor.seed(0)
  local net = seed_cnn()
  local N = dist.size()
  local ld = data.loader(ds, {batch = 64 // N, seed = 1, normalize = {mean = 0.5, std = 0.5}})
  local t = nn.Trainer{net = net, data = ld, optim = optim.Adam(net, {lr = 1e-3}), verbose = false,
                       distributed = N > 1 and {bucket_mb = bucket_mb} or nil}
  for _ = 1, 5 do t:step() end -- warm-up
  local before = t.ddp and dist.stats(t) or {wait = 0}
  dist.barrier()
  local t0, steps = sys.clock(), 0
  for _ = 6, t:steps_per_epoch() do t:step(); steps = steps + 1 end
  dist.barrier()
  local secs = sys.clock() - t0
  local s = t.ddp and dist.stats(t) or {bytes = 0, buckets = 0, wait = 0, overlapped = 0, steps = 1}
  dist.print(string.format("RESULT images_per_s=%.1f sample_time=%.6g bytes=%d buckets=%d wait_ms=%.3f",
                           steps * 64 / secs, secs * N / (steps * 64), s.bytes, s.buckets,
                           1000 * (s.wait - before.wait) / steps))
  return
end

if mode == "--allreduce" then
  local function time_it(n, reps)
    local t = tensor.ones(n)
    dist.barrier()
    local t0 = sys.clock()
    for _ = 1, reps do dist.allreduce(t) end
    return (sys.clock() - t0) / reps
  end
  time_it(1, 50)
  local lat = time_it(1, 500)
  local big = 4 * 2 ^ 20 -- 16 MiB of f32
  local tb = time_it(big, 10)
  -- a ring all-reduce moves 2 (N - 1) / N of the buffer: bandwidth as dist.predict counts it
  local N = dist.size()
  dist.print(string.format("RESULT latency=%.6g bandwidth=%.6g", lat / (2 * (N - 1)),
                           2 * (N - 1) / N * big * 4 / (tb - 2 * (N - 1) * lat / (2 * (N - 1)))))
  return
end

-- ---- the driver
local self = arg[0] or "bench/dist.lua"
local exe = "build/nnlab" -- the program that runs this script: arg's lowest index
for i = -1, -20, -1 do if arg[i] then exe = arg[i] else break end end
local function run(cmd)
  local f = io.popen(cmd .. " 2>&1")
  local text = f:read("a")
  f:close()
  local r = {}
  for k, v in (text:match("RESULT ([^\n]*)") or ""):gmatch("([%w_]+)=(%S+)") do r[k] = tonumber(v) end
  if not next(r) then print("failed: " .. cmd .. "\n" .. text) end
  return r
end
if os.execute("command -v mpirun > /dev/null") ~= true then
  print("skipped: mpirun is not installed (make deps installs openmpi-bin)")
  return
end
local q = string.format("%q", exe)
local one = run("NNLAB_THREADS=2 " .. q .. " " .. self .. " --train 0.0625")
local two = run(q .. " -n 2 " .. self .. " --train 0.0625")
local two_end = run(q .. " -n 2 " .. self .. " --train 1000")
local ar = run(q .. " -n 2 " .. self .. " --allreduce")
if not (one.images_per_s and two.images_per_s and two_end.images_per_s and ar.latency) then
  print("failed: a run gave no figures")
  return
end
print(string.format("seed CNN, global batch 64: 1 rank x 2 threads %.0f img/s, 2 ranks x 1 thread %.0f img/s: %.2fx",
                    one.images_per_s, two.images_per_s, two.images_per_s / one.images_per_s))
print(string.format("all-reduced per step: %.2f MB in %d buckets; waiting on it %.2f ms a step (one bucket at "
                    .. "the end: %.2f ms, %.0f img/s)", two.bytes / 1e6, two.buckets, two.wait_ms,
                    two_end.wait_ms, two_end.images_per_s))
print(string.format("all-reduce between 2 ranks here: latency %.1f us a round, bandwidth %.2f GB/s",
                    ar.latency * 1e6, ar.bandwidth / 1e9))
print(string.format("compute per sample (1 thread, measured in the 2-rank run): %.3f ms", two.sample_time * 1e3))
print("predicted (dist.predict, batch 32 a rank, no overlap):")
print("  ranks   this machine's link: step ms  efficiency    10 Gb/s Ethernet (50 us): step ms  efficiency")
for _, n in ipairs{2, 4, 8, 16, 32, 64} do
  local a = dist.predict{ranks = n, bandwidth = ar.bandwidth, latency = ar.latency, bytes = two.bytes,
                         sample_time = two.sample_time, batch = 32}
  local e = dist.predict{ranks = n, bandwidth = 1.25e9, latency = 50e-6, bytes = two.bytes,
                         sample_time = two.sample_time, batch = 32}
  print(string.format("  %5d   %28.2f  %10.3f    %34.2f  %10.3f", n, a.step * 1e3, a.efficiency,
                      e.step * 1e3, e.efficiency))
end
