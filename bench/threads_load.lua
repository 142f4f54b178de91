-- threads_load.lua: training speed of the seed CNN (batch 64, 60 steps after 5 of warm-up, random
-- data) with 1 and 2 threads, on an idle machine and beside a competing busy process (one shell
-- loop spinning on a core), with nnlab's default waiting policy for OpenMP threads (1000 pauses of
-- spinning, then sleep) and with libgomp's own default (spinning 300,000 pauses, a few ms). Each
-- configuration runs in its own nnlab process, since the policy is read at start. The checks of the default: beside a busy process 2 threads are no slower than 1 thread,
-- and idle speed does not drop against the spinning policy (within 5%, the machine's noise).
-- usage: nnlab bench/threads_load.lua [PEER_PYTHON PEERS_DIR]   (no peer: this measures nnlab)
local self_bin = arg[-1] or "build/nnlab"
if arg[1] == "--child" then
  local STEPS, BATCH = 60, 64
  tensor.seed(0)
  local net, data = dofile("bench/lib/seed_cnn.lua")(BATCH * STEPS)
  local t = nn.Trainer{net = net, data = data, batch = BATCH, verbose = false}
  for _ = 1, 5 do t:step() end
  local t0 = sys.clock()
  for _ = 1, STEPS do t:step() end
  print(string.format("%.1f", STEPS * BATCH / (sys.clock() - t0)))
  return
end

local pidfile = os.tmpname()
local function busy_start()
  os.execute(string.format("sh -c 'echo $$ > %s; exec sh -c \"while :; do :; done\"' >/dev/null 2>&1 &", pidfile))
  for _ = 1, 50 do
    local f = io.open(pidfile)
    local pid = f and tonumber(f:read("l") or "")
    if f then f:close() end
    if pid then return pid end
    os.execute("sleep 0.05")
  end
  error("threads_load: the busy process did not start")
end
local function busy_stop(pid) os.execute("kill " .. pid .. " 2>/dev/null") end

-- images/s of one child; policy "default" = nnlab's own, "spin" = libgomp's default
local function run(threads, policy)
  local env = string.format("NNLAB_THREADS=%d", threads)
  if policy == "spin" then env = "-u OMP_WAIT_POLICY NNLAB_OMP_WAIT_DEFAULT=1 " .. env end
  local p = io.popen(string.format("env %s '%s' bench/threads_load.lua --child 2>&1", env, self_bin))
  local out = p:read("a")
  p:close()
  return tonumber(out:match("([%d.]+)%s*$")) or error("threads_load: a child failed:\n" .. out)
end

local rows, ROUNDS = {}, 2
for _, load in ipairs{"idle", "busy"} do
  local pid = load == "busy" and busy_start() or nil
  for _, policy in ipairs{"default", "spin"} do
    for _, threads in ipairs{1, 2} do
      local best = 0
      for _ = 1, ROUNDS do best = math.max(best, run(threads, policy)) end
      rows[load .. policy .. threads] = best
    end
  end
  if pid then busy_stop(pid) end
end
os.remove(pidfile)

print("seed CNN training images/s (batch 64, best of " .. ROUNDS .. "), idle and beside one busy process")
print(string.format("%-32s %10s %10s", "", "1 thread", "2 threads"))
for _, load in ipairs{"idle", "busy"} do
  for _, policy in ipairs{"default", "spin"} do
    local name = (policy == "default" and "nnlab default (short spin)" or "spinning (libgomp default)")
    print(string.format("%-32s %10.0f %10.0f", load .. ", " .. name, rows[load .. policy .. 1], rows[load .. policy .. 2]))
  end
end
local b1, b2 = rows.busydefault1, rows.busydefault2
local i2, s2 = rows.idledefault2, rows.idlespin2
print(string.format("threads under load: busy 2 threads / 1 thread = %.2fx (want >= 1), idle nnlab / spinning = %.2fx (want >= 0.95)",
                    b2 / b1, i2 / s2))
