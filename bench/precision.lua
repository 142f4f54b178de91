-- precision.lua: fp32 against bf16 (mixed precision) against int8, speed and accuracy, one table:
-- the seed CNN trained from the same seed in fp32 and in bf16 (Adam 1e-3, batch 64, inputs
-- normalised with mean 0.5 / std 0.5), each evaluated on the CIFAR-10 test set at batch 64 through
-- a loader, plus the fp32 network quantized to int8 (minmax calibration on 512 training images).
-- Training and evaluation images/s include data loading. Without CIFAR-10 files it times the same
-- on random images and leaves accuracy out. The CPU, kernel ISA, BLAS core and how bf16 and int8
-- run come first.
--   build/nnlab bench/precision.lua            (run by make bench)
--   NNLAB_PRECISION_EPOCHS=10 NNLAB_PRECISION_TRAIN=50000 build/nnlab bench/precision.lua
-- (the issue's accuracy check: 10 epochs of the whole training set; make bench runs 1 epoch of
-- 10,000 images, about 3 minutes on 2 cores with bf16 emulated).
local epochs = tonumber(os.getenv("NNLAB_PRECISION_EPOCHS")) or 1
local ntrain = tonumber(os.getenv("NNLAB_PRECISION_TRAIN")) or 10000

local info = sys.info()
local isa, blas = sys.isa()
local _, bf16_how = sys.precision()
print(string.format("CPU: %s; kernels %s; OpenBLAS core %s; %d threads; bf16 %s; int8 %s", info.cpu.model,
                    isa, blas, sys.threads(), bf16_how, quant.isa()))

local norm = {mean = 0.5, std = 0.5}
local ok, train, test = pcall(data.cifar10)
local real = ok
if real then
  train = train:subset(1, math.min(ntrain, #train))
else
  print("no CIFAR-10 files (" .. tostring(train) .. "): random images, speed only")
end

local function loader(ds, shuffle) return data.loader(ds, {batch = 64, shuffle = shuffle, seed = 1, normalize = norm}) end
local function random_set(n) return select(2, dofile("bench/lib/seed_cnn.lua")(n)) end
local train_set = real and loader(train, true) or random_set(ntrain)
local test_set = real and loader(test, false) or random_set(2048)

-- Trains a fresh seed CNN in precision p; returns it and its training images/s.
local function trained(p)
  tensor.seed(0)
  local net = dofile("bench/lib/seed_cnn.lua")(0)
  local t = nn.Trainer{net = net, data = train_set, optim = optim.Adam(net, {lr = 1e-3}), batch = 64,
                       verbose = false, precision = p}
  local t0 = sys.clock()
  t:fit{epochs = epochs}
  return net, epochs * (real and #train or ntrain) / (sys.clock() - t0)
end

-- top-1 and images/s of net over the test set (opts: nn.evaluate's).
local function evaluated(net, opts)
  local t0 = sys.clock()
  local r = nn.evaluate(net, test_set, opts)
  return r.top1, r.count / (sys.clock() - t0)
end

local rows = {}
local f32_net, f32_train = trained("fp32")
local f32_top1, f32_eval = evaluated(f32_net, {batch = 64})
rows[1] = {"fp32", f32_train, f32_eval, f32_top1}
local bf_net, bf_train = trained("bf16")
local bf_top1, bf_eval = evaluated(bf_net, {batch = 64, precision = "bf16"})
rows[2] = {"bf16 (" .. bf16_how .. ")", bf_train, bf_eval, bf_top1}
local calib = real and loader(train:subset(1, 512), false) or random_set(512)
local q = quant.int8(f32_net, {calibrate = calib})
local q_top1, q_eval = evaluated(q, {batch = 64})
rows[3] = {"int8 (" .. quant.isa() .. ", from the fp32 net)", nil, q_eval, q_top1}

print(string.format("seed CNN, %d epoch(s) of %d %s images, batch 64", epochs, real and #train or ntrain,
                    real and "CIFAR-10" or "random"))
print(string.format("| %-44s | %15s | %7s | %17s | %7s | %6s |", "precision", "train images/s", "vs fp32",
                    "eval images/s", "vs fp32", "top-1"))
for _, r in ipairs(rows) do
  print(string.format("| %-44s | %15s | %7s | %17.0f | %6.2fx | %6s |", r[1],
                      r[2] and string.format("%.0f", r[2]) or "-", r[2] and string.format("%.2fx", r[2] / f32_train) or "-",
                      r[3], r[3] / f32_eval, real and string.format("%.2f%%", 100 * r[4]) or "-"))
end
if real then
  print(string.format("bf16 top-1 - fp32 top-1: %+.2f points (the issue asks within 0.5 after 10 epochs)",
                      100 * (bf_top1 - f32_top1)))
end
