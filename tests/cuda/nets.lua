-- nets.lua: the networks the GPU check runs, loaded by the other scripts of tests/cuda with
-- dofile: the seed CNN (as bench/ and ../shared/bench/torch_seed_cnn.py define it) and the
-- better net of examples/cifar10_better.lua (batch norm, five convolutions).
local M = {}

function M.seed_cnn()
  return nn.Sequential{
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
  }
end

function M.better()
  local net = nn.Sequential{}
  local function block(cin, cout)
    net:add(nn.Conv2d(cin, cout, 3, {padding = 1, bias = false}))
    net:add(nn.BatchNorm2d(cout))
    net:add(nn.ReLU())
  end
  block(3, 32)     net:add(nn.MaxPool2d(2))
  block(32, 64)    net:add(nn.MaxPool2d(2))
  block(64, 128)
  block(128, 128)  net:add(nn.MaxPool2d(2))
  block(128, 256)  net:add(nn.GlobalAvgPool())
  net:add(nn.Linear(256, 10))
  return net
end

-- The largest |a - b| over the largest |b| (a relative error of the whole tensor).
function M.rel(a, b)
  a, b = a:to("cpu"), b:to("cpu")
  return (a - b):abs():max() / math.max(b:abs():max(), 1e-30)
end

-- Labels 1..10 for n samples, from the global stream.
function M.labels(n)
  return (tensor.rand(n) * 10 - 0.5):to("i32") + 1
end

return M
