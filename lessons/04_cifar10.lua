-- 04_cifar10.lua: a small CNN on (a part of) CIFAR-10, watched on the live dashboard.

local norm = {mean = 0.5, std = 0.5}

-- A network mapping [n, 3, 32, 32] images to [n, 10] scores with a convolution, or nil and why not.
local function cnn(net)
  if not nn.is_module(net) then
    return nil, "net is " .. (net == nil and "not set yet" or "a " .. type(net)) .. ": make it with nn.Sequential{...}"
  end
  local ok, y = pcall(net.forward, net, tensor.zeros(2, 3, 32, 32))
  if not ok then return nil, "net:forward on images [2, 3, 32, 32] fails: " .. tostring(y):gsub("^[^\n]-:%d+: ", "") end
  if table.concat(y:shape(), "x") ~= "2x10" then
    return nil, "net maps images [2, 3, 32, 32] to [" .. table.concat(y:shape(), ", ") .. "], expected [2, 10]: one score per class"
  end
  local convs = 0
  for _, p in ipairs(net:parameters()) do
    if p.value:dim() == 4 then convs = convs + 1 end
  end
  if convs == 0 then return nil, "net has no convolution (nn.Conv2d): this lesson is about a CNN" end
  return net
end

lesson.define{
  name = "cifar10", title = "A CNN on CIFAR-10 with the live dashboard",
  intro = [[
    CIFAR-10: 32x32 colour photos of 10 classes (plane, car, bird, cat, ...). A convolutional
    network slides small filters over the image; pooling halves the picture between them.
    To keep each try short this lesson uses 5,000 training and 1,000 test images.]],
  steps = {
    {[[
      This step made `train` and `test` (parts of CIFAR-10), `norm` (pixels to [-1, 1]) and the
      loaders `train_batches` and `test_batches`. Build `net`, the classic small CNN:
        conv 3->32 (3x3, padding 1), ReLU, max-pool 2, conv 32->64 (3x3, padding 1), ReLU,
        max-pool 2, flatten, linear 4096 -> 10
      and look at it with net:summary{1, 3, 32, 32}.]],
      setup = function(env)
        local train, test = data.cifar10()
        env.train, env.test, env.norm = train:subset(1, 5000), test:subset(1, 1000), norm
        env.train_batches = data.loader(env.train, {batch = 64, shuffle = true, seed = 1, normalize = norm})
        env.test_batches = data.loader(env.test, {batch = 250, normalize = norm})
      end,
      check = function(env)
        local net, why = cnn(env.net)
        if not net then return false, why end
        return true, "net maps each image to 10 class scores"
      end,
      hint = {"nn.Conv2d(3, 32, 3, {padding = 1}) keeps 32x32; nn.MaxPool2d(2) halves it; 64 x 8 x 8 = 4096.",
              "net = nn.Sequential{nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2), "
              .. "nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4096, 10)}"}},
    {[[
      Train it for 2 epochs with the live dashboard watching (loss and accuracy curves, the first
      layer's feature maps, weight histograms), made before fit:
        t = nn.Trainer{net = net, data = train_batches, loss = nn.CrossEntropyLoss(),
                       optim = optim.Adam(net, {lr = 1e-3})}
        dash = viz.dashboard(t, {normalize = norm})
        viz.show()                      -- the window (space pauses); without a display: viz.save("d.png")
        t:fit{epochs = 2, eval = test_batches}
      The step is passed when `dash` is t's dashboard and net gets at least 35% of `test` right
      (a guess gets 10%).]],
      check = function(env)
        local net, why = cnn(env.net)
        if not net then return false, why end
        local t = env.t
        if type(t) ~= "table" or t.net ~= net then
          return false, "t must be the nn.Trainer that trains net (t = nn.Trainer{net = net, ...})"
        end
        if type(env.dash) ~= "userdata" or not tostring(env.dash):find("^Canvas%(dashboard") or #t.hooks == 0 then
          return false, "the live dashboard is not attached: dash = viz.dashboard(t, {normalize = norm}) before t:fit"
        end
        local test = env.test_batches or env.test
        if test == nil then
          return false, "test is not set: the first step prepares the data (lesson.start(\"cifar10\", 1); CIFAR-10 needs `make data`)"
        end
        local top1 = nn.evaluate(net, test).top1
        if top1 < 0.35 then
          return false, string.format("net gets %.1f%% of the test images right; 35%% is needed: %s", 100 * top1,
                                      t.steps == 0 and "train it (t:fit{epochs = 2})" or "train longer, or check the learning rate")
        end
        return true, string.format("net gets %.1f%% of the test images right after %d steps", 100 * top1, t.steps)
      end,
      hint = {"viz.dashboard(t) must come before t:fit, so that it is redrawn as training goes.",
              "Below 35%: another t:fit{epochs = 2} continues training."}},
    {[[
      Look at what it learned: viz.filters(net[1]) shows the first layer's 32 filters,
      viz.confusion(nn.evaluate(net, test_batches), test) which classes it confuses, and
      viz.samples(net, test, 16, {normalize = norm}) its guesses. The whole 50,000 images for 10
      epochs give about 70% (examples/cifar10_cnn.lua). lesson.next() ends the lesson.]]},
  },
}
