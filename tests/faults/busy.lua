-- busy.lua PHASE PATH: does one kind of work over and over until Ctrl-C stops it (PHASE: load,
-- train, save, evaluate, or images: a folder of large PNGs through data.image_folder), on a small
-- CNN; PATH holds a trainer checkpoint it saves or loads.
-- Prints "paused" and exits 0 when fit pauses; an interrupt anywhere else ends the script with
-- nnlab's "interrupted" error. PATH.ready tells the sender that the work has begun.
local phase, path = ...
tensor.seed(3)
local labels = {}
for i = 1, 256 do labels[i] = i % 10 + 1 end
local ds = nn.TensorDataset(tensor.randn(256, 3, 16, 16), tensor.from(labels))
local net = nn.Sequential(nn.Conv2d(3, 16, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(32 * 16, 10))
local t = nn.Trainer{net = net, data = ds, batch = 32, verbose = false}
t:step()
t:save(path)
local images = path .. ".images"
if phase == "images" then
  os.execute("mkdir -p '" .. images .. "/a'")
  viz.save(images .. "/a/0.png", viz.curves({loss = {3, 2, 1}}, {width = 3000, height = 2000}))
  for i = 1, 20 do os.execute(string.format("ln '%s/a/0.png' '%s/a/%d.png'", images, images, i)) end
end
io.open(path .. ".ready", "w"):close()
while true do
  if phase == "load" then t = nn.Trainer.load(path, {data = ds, verbose = false})
  elseif phase == "train" then
    local _, paused = t:fit{epochs = 1}
    if paused then print("paused"); os.exit(0) end
  elseif phase == "save" then t:save(path)
  elseif phase == "evaluate" then nn.evaluate(t.net, ds, {batch = 64})
  elseif phase == "images" then data.image_folder(images, {size = 32})
  else error("busy.lua: PHASE must be load, train, save, evaluate or images") end
end
