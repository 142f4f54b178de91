-- seed_cnn.lua: the seed CNN and random CIFAR-sized training data, shared by the benchmarks that
-- time training steps (dofile("bench/lib/seed_cnn.lua") from the repository's folder).
-- Returns a function (n) -> net, data: a fresh seed CNN (conv3-32 k3 p1, ReLU, maxpool 2,
-- conv32-64 k3 p1, ReLU, maxpool 2, flatten, linear 4096-10) and n random images with labels 1..10.
return function(n)
  local net = nn.Sequential{
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
  }
  return net, nn.TensorDataset(tensor.randn(n, 3, 32, 32), (tensor.rand(n) * 10 - 0.5):to("i32") + 1)
end
