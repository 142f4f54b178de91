-- 08_devices.lua: what a training step moves to a device (sim's counters), CPU against GPU, and
-- data-parallel training on two processes (nnlab -n 2) giving one process's weights.

local BATCH = 32

-- A trainer of a small MLP on the spirals, on device.
local function sim_trainer(device)
  tensor.seed(3)
  local net = nn.Sequential{nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 3)}:to(device)
  return nn.Trainer{net = net, data = lesson.spirals(100), batch = BATCH, optim = optim.SGD(net, {lr = 0.1}), verbose = false}
end

-- The bytes one step copies host -> device, measured.
local function step_bytes()
  local t = sim_trainer("sim")
  sys.device_stats("sim", true)
  t:step()
  return math.floor(sys.device_stats("sim").bytes_h2d)
end

-- The script of the last step: nnlab -n 2 ddp.lua BATCH trains data-parallel and rank 1 saves the
-- weights, and "ranks batch" in a text file, beside the script.
local DDP = [[
-- ddp.lua: `nnlab -n RANKS ddp.lua BATCH` trains an MLP on the spirals with BATCH samples a rank
-- (the global batch is RANKS x BATCH); rank 1 saves the weights beside this file.
local batch = assert(math.tointeger(tonumber(arg[1])), "usage: nnlab -n 2 ddp.lua BATCH")
local out = arg[2] or arg[0]:gsub("%.lua$", "") .. ".safetensors"
tensor.seed(7)
local net = nn.Sequential{nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3)}
local t = nn.Trainer{net = net, data = lesson.spirals(64), batch = batch, seed = 1, verbose = false,
                     optim = optim.SGD(net, {lr = 0.1})}
t:fit{epochs = 3}
if dist.is_main() then
  net:save(out)
  local f = assert(io.open(out .. ".txt", "w"))
  f:write(dist.size(), " ", batch, "\n")
  f:close()
end
]]

local function write_script(env)
  local base = os.tmpname()
  local path = base .. "-ddp.lua"
  local f = assert(io.open(path, "w"))
  f:write(DDP)
  f:close()
  os.remove(base)
  env.ddp_script = path
end

local function max_difference(a, b)
  local pa, pb, worst = a:parameters(), b:parameters(), 0
  for i, p in ipairs(pa) do worst = math.max(worst, (p.value - pb[i].value):abs():max()) end
  return worst
end

lesson.define{
  name = "devices", title = "Devices and parallelism: sim's counters, CPU and GPU, nnlab -n 2",
  intro = [[
    A tensor lives on a device: "cpu", "sim" (a simulated accelerator whose memory the host cannot
    read, with counters of what moves) or "cuda" (a GPU). What crosses between host and device,
    and how work is split over processes, decide how fast training can go.]],
  steps = {
    {[[
      This step made `t`: a trainer of a small MLP whose network is on "sim", batch 32, on 2-D
      points. Measure what one training step copies from the host to the device:
        sys.device_stats("sim", true)        -- read and zero the counters
        t:step()
        print(sys.device_stats("sim").bytes_h2d)
      Set `h2d` to that number of bytes, and work out what they are (a float is 4 bytes, a label an
      int32 of 4 bytes). Where are the weights?]],
      setup = function(env) env.t = sim_trainer("sim") end,
      check = function(env)
        local want = step_bytes()
        local got = env.h2d
        if math.type(got) == "float" and got == math.floor(got) then got = math.floor(got) end
        if got == want then
          return true, string.format("one step copies %d bytes: the batch (%d points x 2 floats x 4 bytes = %d) and its "
                                     .. "labels (%d x 4 bytes); the weights stay on the device", want, BATCH, BATCH * 8, BATCH, BATCH * 4)
        end
        if got == BATCH * 8 then return false, "h2d counts the batch (32 x 2 x 4 bytes) but not its labels" end
        if type(got) ~= "number" then return false, "h2d is " .. (got == nil and "not set yet" or "a " .. type(got)) .. ": a number of bytes" end
        return false, string.format("h2d is %s; one step copies a different number of bytes: read sys.device_stats(\"sim\", true) "
                                    .. "just before t:step() and sys.device_stats(\"sim\").bytes_h2d just after", tostring(got))
      end,
      hint = {"Counters add up: zero them (the true argument) right before the step.",
              "32 x 2 x 4 bytes of points, 32 x 4 bytes of labels."}},
    {[[
      CPU against GPU: compress.fastest({net_cpu, net_other}, x) times a forward on each device
      (x goes to each network's device first). Try a larger network, e.g.
        big = nn.Sequential{nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 10)}
      on "cpu", on "sim" and, if sys.info().cuda lists a GPU, on "cuda", with x = tensor.randn(1024, 512).
      Set `best` to the device that was fastest ("cpu", "sim" or "cuda").]],
      check = function(env)
        local gpu = #(sys.info().cuda or {}) > 0
        local want = gpu and "cuda" or "cpu"
        if type(env.best) ~= "string" then return false, "best must be a device name: \"cpu\", \"sim\" or \"cuda\"" end
        local got = env.best:match("^(%a+)")
        if got == want then
          return true, gpu and "the GPU wins a large batch: thousands of cores, and memory ten times faster"
            or "no GPU here: the CPU is the fastest device this machine has"
        end
        if got == "sim" then
          return false, "sim runs the CPU's kernels and adds copies and page protection: it is never faster than cpu; it "
            .. "proves nothing reads device memory behind the backend's back"
        end
        if got == "cuda" then return false, "this machine has no GPU (sys.info().cuda is empty): measure again" end
        return false, string.format("best is %s; measured, %s wins here%s", env.best, want, gpu and " (a batch of 1024 through 1M weights)" or "")
      end,
      hint = {"local big_sim = big:clone():to(\"sim\"); compress.fastest({big, big_sim}, tensor.randn(1024, 512))"}},
    {[[
      Data-parallel training: `nnlab -n 2 script.lua` runs the script on 2 processes; each takes
      every other sample of a batch of its own, they average gradients after each backward, and all
      hold the same weights. This step wrote a script, `ddp_script` (print(ddp_script) shows where):
      `nnlab -n RANKS <script> BATCH` trains with BATCH samples a rank. One process with a batch of
      64 is the reference. Run it in a shell, from nnlab's folder:
        build/nnlab -n 2 <script> BATCH
      with the BATCH that makes 2 ranks train exactly as 1 process x 64, then lesson.check(): it
      trains the reference here and compares the weights.]],
      setup = write_script,
      check = function(env)
        local script = env.ddp_script
        if type(script) ~= "string" then return false, "ddp_script is not set: lesson.start(\"devices\", 3) writes it" end
        local out = script:gsub("%.lua$", "") .. ".safetensors"
        local f = io.open(out .. ".txt", "r")
        if not f then
          return false, "no result yet: run  build/nnlab -n 2 " .. script .. " BATCH  in a shell (BATCH a rank)"
        end
        local ranks, batch = f:read("n", "n")
        f:close()
        if ranks ~= 2 then return false, string.format("the run had %s rank(s): start it with nnlab -n 2", tostring(ranks)) end
        if ranks * batch ~= 64 then
          return false, string.format("2 ranks x %d = a global batch of %d; the one-process reference uses 64", batch, ranks * batch)
        end
        local ref = os.tmpname()
        local chunk = assert(load(DDP, "=ddp.lua", "t", setmetatable({arg = {[0] = script, "64", ref}}, {__index = _G})))
        chunk()
        local a, b = nn.load(out), nn.load(ref)
        os.remove(ref)
        os.remove(ref .. ".txt")
        local worst = max_difference(a, b)
        if worst > 1e-5 then
          return false, string.format("the weights of 2 ranks x %d differ from 1 process x 64 by %.3g", batch, worst)
        end
        return true, string.format("2 ranks x %d = 1 process x 64: the weights agree within %.2g (float sums in another order)", batch, worst)
      end,
      hint = {"The global batch is ranks x BATCH.", "build/nnlab -n 2 <script> 32"}},
  },
}
