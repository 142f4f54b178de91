-- cifar10_cnn.lua: the main experiment (`make run`). A small CNN learns to tell the ten CIFAR-10
-- classes apart: conv3-32 k3 p1, ReLU, maxpool2, conv32-64 k3 p1, ReLU, maxpool2, linear 4096-10,
-- trained with Adam (lr 1e-3), batch 64, inputs normalised with mean 0.5 and std 0.5.
--
--   build/nnlab examples/cifar10_cnn.lua [epochs] [images]   (default 10 epochs, every image;
--                                                             `make run EPOCHS=1`; images: a quick
--                                                             run on the first N training images)
--
-- Each epoch prints one line: training loss and accuracy, test top-1, time and images/s; the end
-- prints the best and final top-1 (and top-5) and the confusion matrix; the dashboard goes to runs/<name>/dashboard.png, also when
-- Ctrl-C pauses the run (which then stops there). Without CIFAR-10 (see `make data`) the same
-- lesson runs on Fashion-MNIST (Debian's dataset-fashion-mnist), with an input layer of 1
-- channel, 28x28.

local epochs = tonumber(arg and arg[1]) or 10
local images = tonumber(arg and arg[2])
tensor.seed(1)

-- ---- the data: CIFAR-10 if it is there, else Fashion-MNIST
local ok, train, test = pcall(data.cifar10)
local channels, side, name = 3, 32, "CIFAR-10"
if not ok then
  print("\n*** CIFAR-10 NOT FOUND: " .. tostring(train)
        .. "\n*** THIS RUN USES FASHION-MNIST INSTEAD (28x28 grey clothes): its figures are not CIFAR-10's."
        .. "\n*** `make data` in nnlab's folder gets CIFAR-10 (found from any folder afterwards).\n")
  train, test = data.fashion_mnist()
  channels, side, name = 1, 28, "Fashion-MNIST"
end
if images and images < train:size() then
  train, test = train:subset(1, images), test:subset(1, math.min(test:size(), images))
end
print(string.format("%s: %d training and %d test images of %dx%dx%d, classes: %s", name,
                    train:size(), test:size(), channels, side, side, table.concat(train:classes(), ", ")))

-- Pixels arrive as bytes; the loaders turn them into floats (x/255 - 0.5) / 0.5 in a background
-- thread while the previous batch trains.
local norm = {mean = 0.5, std = 0.5}
local train_batches = data.loader(train, {batch = 64, shuffle = true, seed = 1, normalize = norm})
local test_batches = data.loader(test, {batch = 256, shuffle = false, normalize = norm})

-- ---- the network
local flat = 64 * (side // 4) * (side // 4)  -- two 2x2 poolings divide each side by 4
local net = nn.Sequential{
  nn.Conv2d(channels, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
  nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
  nn.Flatten(), nn.Linear(flat, 10),
}
net:summary{1, channels, side, side}

local trainer = nn.Trainer{net = net, data = train_batches, loss = nn.CrossEntropyLoss(),
                           optim = optim.Adam(net, {lr = 1e-3})}

-- ---- the dashboard: loss, accuracy, the first layer's feature maps of one training image and
-- the weight histograms, redrawn every 50 steps. With a display a window follows training (space
-- pauses, tab switches views, s saves a screenshot, q closes it; the run goes on); without one the
-- same picture is saved at the end.
local run_name = name == "CIFAR-10" and "cifar10_cnn" or "fashion_mnist_cnn"
local shown = viz.show()
viz.dashboard(trainer, {normalize = norm})
-- The dashboard as a PNG in runs/<run_name>/, at the end or when the run is paused.
local function save_dashboard()
  print("dashboard: " .. viz.save("runs/" .. run_name .. "/dashboard.png", "dashboard")
        .. (shown and "  (the window closes with the program; nnlab -i keeps it and the REPL)" or ""))
end

-- ---- training: the trainer prints one line per epoch, "epoch k/N", with the test accuracy
-- (top-1) after each. Under nnlab -i the REPL has the trainer and the network as globals, so a
-- Ctrl-C pause can go on with trainer:resume() (trainer:fit{epochs = n} trains n more).
_G.trainer, _G.net = trainer, net
local _, paused = trainer:fit{epochs = epochs, eval = test_batches}
save_dashboard()
if paused then return end -- Ctrl-C: the run stops with what it learned so far
local result = nn.evaluate(net, test_batches)
local best = math.max(table.unpack(trainer.history.test_acc))
print(string.format("best top-1 %.2f%%, final %.2f%% (top-5 %.2f%%)", 100 * best, 100 * result.top1,
                    100 * result.top5))

-- ---- where the mistakes are: rows are the true class, columns the prediction
local classes = train:classes()
local conf = result.confusion
io.write(string.format("\n%12s", "true \\ pred"))
for j = 1, #classes do io.write(string.format(" %6s", classes[j]:sub(1, 6))) end
io.write("\n")
for i = 1, #classes do
  io.write(string.format("%12s", classes[i]))
  for j = 1, #classes do io.write(string.format(" %6d", conf:get(i, j))) end
  io.write(string.format("   %5.1f%%\n", 100 * result.per_class[i]))
end
