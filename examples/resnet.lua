-- resnet.lua: a small residual network (after He et al., 2015) for 32x32 colour images, declared
-- with nn.Residual: each block computes x + f(x), so a block can always fall back to passing
-- its input through, which is what lets deep networks train. Run it with
--     build/nnlab examples/resnet.lua

tensor.seed(1)

-- f(x) of one block: conv, batch norm, ReLU, conv, batch norm; the shapes stay the same so that
-- x + f(x) is defined.
local function block(c)
  return nn.Residual{
    nn.Conv2d(c, c, 3, {padding = 1, bias = false}), nn.BatchNorm2d(c), nn.ReLU(),
    nn.Conv2d(c, c, 3, {padding = 1, bias = false}), nn.BatchNorm2d(c),
  }
end

-- Between stages a strided convolution halves the image and doubles the channels.
local function down(c_in, c_out)
  return nn.Sequential{nn.Conv2d(c_in, c_out, 3, {stride = 2, padding = 1, bias = false}),
                       nn.BatchNorm2d(c_out), nn.ReLU()}
end

local net = nn.Sequential{
  nn.Conv2d(3, 16, 3, {padding = 1, bias = false}), nn.BatchNorm2d(16), nn.ReLU(), -- 16 x 32 x 32
  block(16), nn.ReLU(), block(16), nn.ReLU(),
  down(16, 32), block(32), nn.ReLU(),                                             -- 32 x 16 x 16
  down(32, 64), block(64), nn.ReLU(),                                             -- 64 x 8 x 8
  nn.GlobalAvgPool(), nn.Flatten(), nn.Linear(64, 10),                            -- 10 scores
}
print(net)

-- The summary walks into the blocks: "4.1" is the first layer of the fourth module.
local totals = net:summary()         -- input {1, 3, 32, 32}, from Conv2d(3, ...)
print(string.format("%d parameters, %.1f million multiply-adds per image", totals.params, totals.macs / 1e6))

-- One training step on a random batch of 32 CIFAR-sized images, timed.
local x = tensor.randn(32, 3, 32, 32)
local y = (tensor.rand(32) * 10 - 0.5):to("i32") + 1          -- labels 1..10
local loss = nn.CrossEntropyLoss()
local opt = optim.SGD(net, {lr = 0.1, momentum = 0.9, weight_decay = 5e-4})

local t0 = sys.clock()
opt:zero_grad()
local before = loss:forward(net:forward(x), y)
net:backward(loss:backward())
opt:step()
print(string.format("one step on 32 images: loss %.4f, %.0f ms", before, 1000 * (sys.clock() - t0)))
print(string.format("the same batch after the step: loss %.4f", loss:forward(net:forward(x), y)))

-- The same step through the Trainer (all in C), a few times on a small random data set:
local data = nn.TensorDataset(tensor.randn(128, 3, 32, 32), (tensor.rand(128) * 10 - 0.5):to("i32") + 1)
local trainer = nn.Trainer{net = net, data = data, batch = 32, optim = opt}
trainer:fit{epochs = 1}
