-- speed.lua: training and evaluation images per second on DEVICE at batch BATCH (check.sh part 4),
-- on random data, for the seed CNN (Adam 1e-3) or the better net (SGD with momentum), with the
-- device's peak memory. Each step reads its loss back (as PyTorch's peer does with loss.item()),
-- so the clock stops only after the GPU has finished.
--   nnlab tests/cuda/speed.lua [DEVICE [BATCH [seed|better [STEPS]]]]
local dev, batch = arg[1] or "cuda", tonumber(arg[2]) or 64
local which, steps = arg[3] or "seed", tonumber(arg[4]) or 200
local N = dofile((arg[0]:match("^(.*)/") or ".") .. "/nets.lua")
tensor.seed(0)
local net = (which == "better" and N.better or N.seed_cnn)():to(dev)
local opt = which == "better" and optim.SGD(net, {lr = 0.05, momentum = 0.9}) or optim.Adam(net, {lr = 1e-3})
local n = batch * 20
local train = nn.TensorDataset(tensor.randn(n, 3, 32, 32), N.labels(n))
local t = nn.Trainer{net = net, data = train, optim = opt, batch = batch, verbose = false}
for _ = 1, 5 do t:step() end -- warm-up: buffers, the allocator's cache, cuBLAS
local t0 = sys.clock()
for _ = 1, steps do t:step() end
local train_s = sys.clock() - t0
local test = nn.TensorDataset(tensor.randn(10000, 3, 32, 32), N.labels(10000))
nn.evaluate(net, test, {batch = batch}) -- warm-up
local t1 = sys.clock()
nn.evaluate(net, test, {batch = batch})
local eval_s = sys.clock() - t1
local peak = dev == "cpu" and 0 or sys.device_stats(dev).peak_memory / 2^20
print(string.format("RESULT net=%s device=%s batch=%d train_img_s=%.0f eval_img_s=%.0f peak_mb=%.0f",
                    which, dev, batch, steps * batch / train_s, 10000 / eval_s, peak))
