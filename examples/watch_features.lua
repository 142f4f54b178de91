-- watch_features.lua: a lesson. What does a convolutional network look at? We take one picture,
-- show what the first two convolution layers make of it before any training, train a little while
-- the dashboard follows, and show the same picture's feature maps again.
--
--   build/nnlab examples/watch_features.lua [epochs]      (default 2)
--
-- With a display a window follows along (tab: next view, space: pause training, s: screenshot,
-- q: close); every picture is also saved in runs/watch_features/ to compare side by side.
-- The data: CIFAR-10 when `make data` has put it in data/, else generated pictures.

local epochs = tonumber(arg and arg[1]) or 2
local out = "runs/watch_features/"
tensor.seed(1)
math.randomseed(1)

-- ---- 1. the data ----------------------------------------------------------------------------
-- A slice of CIFAR-10 keeps the lesson to a minute or so on a laptop.
local ok, train, test = pcall(data.cifar10)
if ok then
  train, test = train:subset(1, 10000), test:subset(1, 1000)
  print("CIFAR-10: 10,000 training and 1,000 test images")
else
  -- Generated pictures: coloured horizontal stripes, vertical stripes, checkerboards and discs
  -- at random sizes and places, with noise on top. Each class has its own shape; colours vary.
  print("\n*** CIFAR-10 NOT FOUND: " .. tostring(train)
        .. "\n*** THIS RUN USES GENERATED PICTURES INSTEAD (stripes, checkerboards, discs)."
        .. "\n*** `make data` in nnlab's folder gets CIFAR-10 (found from any folder afterwards).\n")
  local S, classes = 32, {"horizontal stripes", "vertical stripes", "checkerboard", "disc"}
  local function make(n)
    local px, labels = {}, {}
    for i = 1, n do
      local class = (i - 1) % 4 + 1
      local period, phase = math.random(3, 7), math.random(0, 6)
      local cx, cy, r = math.random(8, 24), math.random(8, 24), math.random(4, 10)
      local colour = {math.random(), math.random(), math.random()}
      local plane = {}
      for y = 1, S do
        for x = 1, S do
          local on
          if class == 1 then on = ((y + phase) // period) % 2 == 0
          elseif class == 2 then on = ((x + phase) // period) % 2 == 0
          elseif class == 3 then on = ((x + phase) // period + (y + phase) // period) % 2 == 0
          else on = (x - cx) ^ 2 + (y - cy) ^ 2 <= r * r end
          plane[#plane + 1] = on and 1 or 0
        end
      end
      for c = 1, 3 do
        for k = 1, S * S do px[#px + 1] = plane[k] * colour[c] * 0.8 + math.random() * 0.2 end
      end
      labels[i] = class
    end
    return data.from_tensors(tensor.from(px):reshape(n, 3, S, S), labels, {classes = classes})
  end
  train, test = make(1600), make(400)
end
local classes = train:classes()

-- ---- 2. the network ---------------------------------------------------------------------------
-- Two convolutions, each followed by ReLU and a 2x2 max-pool: the first sees 5x5 pixels (big
-- enough for its filters to show a shape), the second 3x3 of the first's pooled outputs (so
-- about 10x10 pixels of the picture).
local net = nn.Sequential{
  nn.Conv2d(3, 16, 5, {padding = 2}), nn.ReLU(), nn.MaxPool2d(2),   -- layer 1: 16 maps of 32x32
  nn.Conv2d(16, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),  -- layer 4: 32 maps of 16x16
  nn.Flatten(), nn.Linear(32 * 8 * 8, #classes),
}

-- ---- 3. one picture, before training ----------------------------------------------------------
local picture, label = test:get(1)
print("the picture: test image 1, of class " .. classes[label])
local before = {title = "before training"}
viz.save(out .. "before_conv1.png", viz.features(net, 1, picture, before))
viz.save(out .. "before_conv2.png", viz.features(net, 4, picture, before))
viz.save(out .. "filters_before.png", viz.filters(net, before))
-- What to notice (open before_conv1.png): with random weights every map is a noisy, recoloured
-- copy of the picture. Each filter is a random 5x5 mix of the three colour channels, so it reacts
-- to pixel noise as much as to shapes, and no map singles anything out. filters_before.png is
-- noise: random colours, no structure.

-- ---- 4. training, watched ----------------------------------------------------------------------
local shown, why = viz.show()
if not shown then print("no window (" .. why .. "): the pictures go to " .. out) end
local trainer = nn.Trainer{net = net, data = train, batch = 64, optim = optim.Adam(net, {lr = 2e-3})}
viz.dashboard(trainer, {every = 20, image = picture})
-- In the window: the loss falls quickly at first, then slowly; the feature maps at the bottom
-- left change while you watch. Press space to pause and look, space again to go on.
local _, paused = trainer:fit{epochs = epochs, eval = test}
viz.save(out .. "dashboard.png", "dashboard")
if paused then print("paused (Ctrl-C): the pictures after training show the network part-trained, as it is now") end

-- ---- 5. the same picture, after training ------------------------------------------------------
local after = {title = string.format("after %d epoch%s of training", trainer.epochs, trainer.epochs == 1 and "" or "s")}
viz.save(out .. "after_conv1.png", viz.features(net, 1, picture, after))
viz.save(out .. "after_conv2.png", viz.features(net, 4, picture, after))
viz.save(out .. "filters_after.png", viz.filters(net, after))
viz.save(out .. "samples.png", viz.samples(net, test, 16))
viz.save(out .. "confusion.png", viz.confusion(nn.evaluate(net, test), test))
-- What to notice, comparing before_* with after_*:
--  * after_conv1.png: the maps are smoother and more selective. Some answer "is this colour here?"
--    (one lights up on the sky, another on the water), some trace the edges of the object; a map
--    that stays flat belongs to a filter whose output is low everywhere on this picture (try
--    another one: test:get(2)).
--  * filters_before.png against filters_after.png: the filters themselves moved only a little
--    (smoother, less saturated): small changes of the weights are enough to change what the
--    maps pick out. Train longer (watch_features.lua 10) and the filters grow clearer structure:
--    light-dark edges at an angle and single-colour blobs, what the first layers of large
--    networks learn too.
--  * after_conv2.png: half the size (pooling) and more abstract: each map combines the first
--    layer's answers over a wider patch, so it responds to corners, textures, parts of shapes.
--    These are the features the last layer weighs to decide the class.
--  * samples.png and confusion.png: which pictures it gets wrong, and which classes it mixes up
--    (for CIFAR-10 usually cat and dog, automobile and truck).
print("pictures in " .. out .. ": before_conv1.png after_conv1.png before_conv2.png after_conv2.png "
      .. "filters_before.png filters_after.png dashboard.png samples.png confusion.png")
if shown then
  print("close the window (q) to finish")
  viz.show(viz.dashboard(trainer, {image = picture}))
  viz.wait()
end
