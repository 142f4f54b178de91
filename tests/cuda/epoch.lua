-- epoch.lua: one CIFAR-10 epoch of the seed CNN on DEVICE (check.sh part 3): batch 64, Adam 1e-3,
-- inputs normalised with mean 0.5 / std 0.5, seed 0, loader seed 1 (as bench/cifar10_epoch.lua),
-- then the test set; prints top-1 and the images per second of both.
--   nnlab tests/cuda/epoch.lua [DEVICE [TRAIN_IMAGES]]     (CIFAR-10 from data.cifar10())
local dev, limit = arg[1] or "cuda", tonumber(arg[2])
local N = dofile((arg[0]:match("^(.*)/") or ".") .. "/nets.lua")
local train, test = data.cifar10()
if limit then train = train:subset(1, limit) end
local norm = {mean = 0.5, std = 0.5}
tensor.seed(0)
local net = N.seed_cnn():to(dev)
local t = nn.Trainer{net = net, loss = nn.CrossEntropyLoss(), optim = optim.Adam(net, {lr = 1e-3}),
                     data = data.loader(train, {batch = 64, shuffle = true, seed = 1, normalize = norm}),
                     verbose = false}
local t0 = sys.clock()
t:fit{epochs = 1}
local t1 = sys.clock()
local r = nn.evaluate(net, data.loader(test, {batch = 256, shuffle = false, normalize = norm}))
local t2 = sys.clock()
print(string.format("RESULT device=%s top1=%.4f train_img_s=%.0f eval_img_s=%.0f", dev, r.top1,
                    train:size() / (t1 - t0), test:size() / (t2 - t1)))
