-- cifar10_better.lua: what the seed CNN is missing, added one idea at a time, to reach 80% on
-- CIFAR-10 on a 2-core CPU in under half an hour.
--
--   build/nnlab examples/cifar10_better.lua [epochs]      (default 16)
--
-- The four ideas, each a line below:
--   1. batch normalisation after every convolution: each layer sees inputs of a steady scale, so
--      a larger learning rate trains stably;
--   2. a wider and deeper network (32 to 256 channels, five convolutions), still cheap: about
--      25 M multiply-adds per image against the seed's 5.6 M;
--   3. augmentation: random crops (4 pixels of padding) and horizontal flips, so the network
--      never sees the same picture twice and cannot memorise the training set;
--   4. a one-cycle schedule: warm up to a high learning rate, then anneal it to almost zero.

local epochs = tonumber(arg and arg[1]) or 16
tensor.seed(1)

local train, test = data.cifar10()
-- CIFAR-10's per-channel mean and standard deviation.
local norm = {mean = {0.4914, 0.4822, 0.4465}, std = {0.2470, 0.2435, 0.2616}}
local train_batches = data.loader(train, {batch = 128, shuffle = true, seed = 1, normalize = norm,
                                          augment = {crop = 4, flip = true}})             -- (3)
local test_batches = data.loader(test, {batch = 256, shuffle = false, normalize = norm})

local net = nn.Sequential{}
local function block(cin, cout)   -- conv, batch norm (1), ReLU
  net:add(nn.Conv2d(cin, cout, 3, {padding = 1, bias = false}))
  net:add(nn.BatchNorm2d(cout))
  net:add(nn.ReLU())
end
-- (2): five convolutions, 32 to 256 channels
block(3, 32)     net:add(nn.MaxPool2d(2))  -- 32x32 -> 16x16
block(32, 64)    net:add(nn.MaxPool2d(2))  -- 8x8
block(64, 128)
block(128, 128)  net:add(nn.MaxPool2d(2))  -- 4x4
block(128, 256)  net:add(nn.GlobalAvgPool())
net:add(nn.Linear(256, 10))
net:summary()

local steps = epochs * train_batches:batches()
local trainer = nn.Trainer{
  net = net, data = train_batches, loss = nn.CrossEntropyLoss({label_smoothing = 0.1}),
  optim = optim.SGD(net, {lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 5e-4}),
  schedule = optim.schedule.onecycle{max_lr = 0.2, total = steps},                        -- (4)
}

-- The trainer prints one line per epoch of the whole run ("epoch k/N") with the test accuracy.
-- Under nnlab -i the REPL has the trainer and the network as globals, so a Ctrl-C pause can go on
-- with trainer:resume().
_G.trainer, _G.net = trainer, net
local t0 = sys.clock()
local _, paused = trainer:fit{epochs = epochs, eval = test_batches}
if paused then return end
local r = nn.evaluate(net, test_batches)
print(string.format("test top-1 %.2f%%, top-5 %.2f%% after %d epochs in %.1f min", 100 * r.top1,
                    100 * r.top5, epochs, (sys.clock() - t0) / 60))
