-- mlp.lua: a first network. A multi-layer perceptron learns to tell apart three interleaved
-- spirals in the plane, something no straight line can do. Run it with
--     build/nnlab examples/mlp.lua
-- or paste the lines into the REPL one block at a time and look at each result.

tensor.seed(1)                        -- the same seed, the same run, every time

-- 1. The data: 3 spiral arms of 200 points each (after CS231n's classic example).
-- Each sample is a point (x, y); its label is the arm it lies on: 1, 2 or 3.
local K, N = 3, 200
local points, labels = {}, {}
local noise = tensor.randn(K * N):totable()
for arm = 1, K do
  for i = 1, N do
    local r = (i - 1) / (N - 1)                               -- radius from 0 to 1
    local t = (arm - 1) * 4 + 4 * r + 0.2 * noise[(arm - 1) * N + i] -- angle, with some noise
    points[#points + 1] = {r * math.sin(t), r * math.cos(t)}
    labels[#labels + 1] = arm
  end
end
local data = nn.TensorDataset(tensor.from(points), tensor.from(labels, "i32"))
print(data)

-- 2. The model: two hidden layers of 64 units with ReLU in between. The last layer gives one
-- score (a logit) per class; the loss turns scores into probabilities.
local net = nn.Sequential{
  nn.Linear(2, 64), nn.ReLU(),
  nn.Linear(64, 64), nn.ReLU(),
  nn.Linear(64, K),
}
print(net)
net:summary()                         -- the input shape {1, 2} comes from Linear(2, ...)

-- Before training the network guesses: about 1 in 3 right.
print(string.format("accuracy before training: %.1f%%", 100 * nn.evaluate(net, data).top1))

-- 3. Training: Adam with a learning rate of 0.01, mini-batches of 32 points, 40 passes over
-- the data (epochs). Each step runs forward, loss, backward and the update in C.
local trainer = nn.Trainer{
  net = net, data = data, batch = 32,
  loss = nn.CrossEntropyLoss(),
  optim = optim.Adam(net, {lr = 0.01}),
}
local history = trainer:fit{epochs = 40}

-- 4. What it learned. The loss went down and the accuracy up:
print(string.format("loss: first step %.3f, last step %.3f", history.loss[1], history.loss[#history.loss]))
local result = nn.evaluate(net, data)
print(string.format("accuracy after training: %.1f%%", 100 * result.top1))
print("confusion matrix (rows: true arm, columns: predicted arm):")
print(result.confusion)

-- 5. The decision regions: the predicted arm at each point of a grid, drawn as characters.
-- The spirals the network has carved out of the plane appear as the three symbols.
local W, H = 60, 24
local grid = {}
for row = 1, H do
  for col = 1, W do
    grid[#grid + 1] = {(col - 0.5) / W * 2 - 1, 1 - (row - 0.5) / H * 2}
  end
end
local predicted = net:eval():forward(tensor.from(grid)):argmax(2):totable()
local symbols = {".", "o", "#"}
for row = 1, H do
  local line = {}
  for col = 1, W do line[col] = symbols[predicted[(row - 1) * W + col]] end
  print(table.concat(line))
end

-- Things to try: fewer hidden units (nn.Linear(2, 8)), no ReLU (the network becomes linear:
-- what accuracy then?), a larger learning rate, or optim.SGD(net, {lr = 0.1, momentum = 0.9}).
