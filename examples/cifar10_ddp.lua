-- cifar10_ddp.lua: the seed CNN of cifar10_cnn.lua trained data-parallel. The same script runs on
-- one process or many; the global batch stays 64 (each of N ranks takes 64 / N), so N ranks learn
-- what one process learns.
--
--   build/nnlab -n 2 examples/cifar10_ddp.lua [epochs [images]]   (2 ranks here; default 3 epochs
--                                                                  of all 50,000 training images)
--   build/nnlab examples/cifar10_ddp.lua [epochs]          (one process, for comparison)
--   mpirun -np 4 -H a,b build/nnlab examples/cifar10_ddp.lua    (two machines, 2 ranks each)
--
-- Each rank's loader hands out its own strided shard of every epoch; the Trainer broadcasts rank
-- 1's initial weights, averages the gradients over the ranks in buckets while backward runs, and
-- prints and saves on rank 1 only; nn.evaluate splits the test set and gives every rank the
-- global accuracy.

local epochs = tonumber(arg and arg[1]) or 3
local images = tonumber(arg and arg[2])
local N = dist.size()
if 64 % N ~= 0 then error("the global batch 64 must divide into " .. N .. " ranks") end
tensor.seed(1)
local ok, train, test = pcall(data.cifar10)
if not ok then error("CIFAR-10 is not in data/: run make data first (" .. tostring(train) .. ")") end

if images then train = train:subset(1, images) end
local norm = {mean = 0.5, std = 0.5}
local train_batches = data.loader(train, {batch = 64 // N, shuffle = true, seed = 1, normalize = norm})
local test_batches = data.loader(test, {batch = 250, shuffle = false, normalize = norm})

local net = nn.Sequential{
  nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
  nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
  nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
}
dist.print(string.format("%d rank(s) x batch %d = global batch 64, %d thread(s) a rank", N, 64 // N,
                         sys.threads()))
local t = nn.Trainer{net = net, data = train_batches, optim = optim.Adam(net, {lr = 1e-3})}
local t0 = sys.clock()
t:fit{epochs = epochs, eval = test_batches}
local r = nn.evaluate(net, test_batches)
dist.print(string.format("after %d epochs: test accuracy %.2f%% (%d images), %.0f s", epochs,
                         100 * r.top1, r.count, sys.clock() - t0))
if N > 1 then
  local s = dist.stats(t)
  dist.print(string.format("gradient exchange: %.2f MB a step in %d buckets, %.1f s waiting in all",
                           s.bytes / 1e6, s.buckets, s.wait))
end
