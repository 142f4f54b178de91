-- cnn.lua: a convolutional network learns to recognise simple generated pictures: stripes
-- (horizontal or vertical), checkerboards and blobs, each drawn at a random size and position
-- with noise on top. Run it with
--     build/nnlab examples/cnn.lua
-- A real data set (CIFAR-10) comes with the data module; the steps are the same.

tensor.seed(1)

-- 1. The data. Each picture is 1 x 16 x 16 (one channel, like a grey image); 4 classes.
local S = 16
local classes = {"horizontal stripes", "vertical stripes", "checkerboard", "blob"}

local function picture(class)
  local period = math.random(3, 6)                  -- stripe width varies from picture to picture
  local phase = math.random(0, period - 1)
  local cx, cy, r = math.random(4, 12), math.random(4, 12), math.random(2, 5)
  local px = {}
  for y = 1, S do
    for x = 1, S do
      local v
      if class == 1 then v = ((y + phase) // period) % 2
      elseif class == 2 then v = ((x + phase) // period) % 2
      elseif class == 3 then v = ((x + phase) // period + (y + phase) // period) % 2
      else v = ((x - cx) ^ 2 + (y - cy) ^ 2 <= r * r) and 1 or 0 end
      px[#px + 1] = v
    end
  end
  return px
end

local function make_set(n)
  local pixels, labels = {}, {}
  for i = 1, n do
    local class = (i - 1) % #classes + 1
    for _, v in ipairs(picture(class)) do pixels[#pixels + 1] = v end
    labels[i] = class
  end
  -- Noise makes the task less trivial: each pixel gets N(0, 1) added. The clean drawings are
  -- returned too, to look at.
  local clean = tensor.from(pixels):reshape(n, 1, S, S)
  return nn.TensorDataset(clean + tensor.randn(n, 1, S, S), tensor.from(labels, "i32")), clean
end

math.randomseed(1)
local train, drawings = make_set(2000)
local test = make_set(400)
print("train:", train)
print("test: ", test)

-- One picture of each class as drawn, before the noise (# for bright pixels); the network sees
-- them with N(0, 1) noise on every pixel, which hides the pattern from a glance at one pixel.
for c = 1, #classes do
  print(classes[c] .. " (as drawn, before the noise):")
  for y = 1, S, 2 do                                  -- every other row keeps it short
    local line = {}
    for xx = 1, S do line[xx] = drawings:get(c, 1, y, xx) > 0.5 and "#" or "." end
    print("  " .. table.concat(line))
  end
end

-- 2. The model. Convolutions look at 3x3 neighbourhoods, so they find edges and stripes
-- wherever they are; pooling halves the size; the last layer maps features to 4 scores.
local net = nn.Sequential{
  nn.Conv2d(1, 8, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),    -- 8 x 8 x 8
  nn.Conv2d(8, 16, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),   -- 16 x 4 x 4
  nn.Flatten(), nn.Linear(16 * 4 * 4, #classes),
}
print(net)
net:summary{1, 1, S, S}

-- 3. Training, with the test set evaluated after every epoch.
local trainer = nn.Trainer{net = net, data = train, batch = 32, optim = optim.Adam(net, {lr = 3e-3})}
trainer:fit{epochs = 4, eval = test}

-- 4. Results: accuracy per class and the confusion matrix on pictures it never trained on.
local r = nn.evaluate(net, test)
print(string.format("test accuracy %.1f%%, loss %.3f", 100 * r.top1, r.loss))
for c, name in ipairs(classes) do
  print(string.format("  %-20s %.1f%%", name, 100 * r.per_class[c]))
end
print("confusion (rows: true class, columns: predicted):")
print(r.confusion)

-- 5. What the first layer learned: its 8 filters, 3x3 each (positive weights as +, negative as -).
local w = net[1].weight                              -- [8, 1, 3, 3], shared with the layer
for y = 1, 3 do
  local line = {}
  for f = 1, 8 do
    local cells = {}
    for x = 1, 3 do
      local v = w:get(f, 1, y, x)
      cells[x] = v > 0.15 and "+" or v < -0.15 and "-" or "."
    end
    line[f] = table.concat(cells)
  end
  print("  " .. table.concat(line, "  "))
end

-- Things to try: remove a pooling layer (the summary shows the larger Linear layer), double the
-- noise, or train with optim.SGD(net, {lr = 0.05, momentum = 0.9}).
