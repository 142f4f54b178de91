-- test_data.lua: the data module from Lua: data sets from tensors, views, batches, the loader
-- (order, normalisation, augmentation, state), image folders of PPM files written here, the
-- CIFAR writer's round trip and the error messages for missing or bad data.

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p '" .. dir .. "'"))

local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

-- A binary PPM (SDL2_image reads PNM) of w x h pixels, colour(x, y) -> r, g, b.
local function write_ppm(path, w, h, colour)
  local parts = {string.format("P6\n%d %d\n255\n", w, h)}
  for y = 0, h - 1 do
    for x = 0, w - 1 do parts[#parts + 1] = string.char(colour(x, y)) end
  end
  write(path, table.concat(parts))
end

-- n images 3 x 4 x 4 with values k / 255 (k = sample, channel, pixel mixed), labels 1, 2, 3, 1...
local function tiny(n)
  local x = tensor.zeros(n, 3, 4, 4)
  for i = 1, n do
    for c = 1, 3 do
      for p = 0, 15 do x:set(((i * 37 + c * 50 + p) % 256) / 255, i, c, p // 4 + 1, p % 4 + 1) end
    end
  end
  local labels = {}
  for i = 1, n do labels[i] = (i - 1) % 3 + 1 end
  return data.from_tensors(x, labels, {classes = {"a", "b", "c"}, name = "tiny"}), x
end

test("data sets from tensors", function()
  local ds, x = tiny(10)
  check(#ds == 10 and ds:size() == 10, "size")
  check(ds:name() == "tiny" and tostring(ds):find("tiny: 10 images 3x4x4, 3 classes", 1, true), tostring(ds))
  check(table.concat(ds:shape(), "x") == "3x4x4", "shape")
  check(table.concat(ds:classes(), " ") == "a b c", "classes")
  local img, label = ds:get(5)
  check(label == 2, "1-based label")
  check_close(img, x:slice(1, 5, 5):reshape(3, 4, 4), 1e-6, "the image in [0, 1]")
  check(img:dtype() == "f32", "f32 images")
  local plain = data.from_tensors(tensor.zeros(2, 1, 2, 2, "u8"), tensor.from({2, 4}))
  check(table.concat(plain:classes(), ",") == "1,2,3,4", "default class names up to the largest label")
  check_error(function() ds:get(11) end, "out of range (1 to 10)")
  check_error(function() data.from_tensors(tensor.zeros(2, 1, 2, 2), {1}) end, "2 images but 1 labels")
  check_error(function() data.from_tensors(tensor.zeros(2, 1, 2, 2), {1, 0}) end, "label 2 is 0")
  check_error(function() data.from_tensors(tensor.zeros(2, 1, 2, 2), {1, 3}, {classes = {"a", "b"}}) end,
              "label 2")
  check_error(function() data.from_tensors(tensor.zeros(2, 2), {1, 1}) end, "[N, C, H, W]")
  check_error(function() data.from_tensors(tensor.zeros(1, 1, 1, 1), {1}, {colour = 1}) end,
              "unknown option 'colour'")
end)

test("views and batches", function()
  local ds = tiny(10)
  local sub = ds:subset(3, 6)
  check(#sub == 4 and select(2, sub:get(1)) == 3, "subset 3..6 (inclusive)")
  check_close(sub:get(2), ds:get(4), 0, "a view of the same pixels")
  check(#ds:subset(4) == 7, "to the end")
  check_error(function() ds:subset(0, 3) end, "outside 1..10")
  check_error(function() ds:subset(2, 11) end, "outside 1..10")
  local a, b = ds:split(0.3, 7)
  check(#a == 3 and #b == 7, "split sizes")
  local seen = {}
  for _, part in ipairs{a, b} do
    for i = 1, #part do
      local key = string.format("%.6f", part:get(i):sum())
      check(not seen[key], "disjoint")
      seen[key] = true
    end
  end
  local a2 = ds:split(0.3, 7)
  check_close(a2:get(1), a:get(1), 0, "seeded")
  local x, y = ds:batch({2, 9, 2})
  check(table.concat(x:shape(), "x") == "3x3x4x4" and y:dtype() == "i32", "batch shapes")
  check_close(y, {2, 3, 2}, 0, "1-based labels")
  check_close(x:slice(1, 2, 2):reshape(3, 4, 4), ds:get(9), 0, "gathered images")
  local xt = ds:batch(tensor.from({10, 1}, "i32"))
  check_close(xt:slice(1, 1, 1):reshape(3, 4, 4), ds:get(10), 0, "indices as a tensor")
  check_error(function() ds:batch({1, 11}) end, "index 11")
end)

test("the loader", function()
  local ds = tiny(10)
  local ld <close> = data.loader(ds, {batch = 4, shuffle = false})
  check(#ld == 3 and ld:batches() == 3 and ld:size() == 10 and ld:batch_size() == 4, "3 batches")
  local x, y = ld:next()
  check(x:size(1) == 4 and y:dtype() == "i32", "a batch")
  check_close(y, {1, 2, 3, 1}, 0, "in order, 1-based labels")
  check_close(x:slice(1, 2, 2):reshape(3, 4, 4), ds:get(2), 1e-6, "byte / 255 without normalize")
  ld:next()
  local last = ld:next()
  check(last:size(1) == 2, "a last partial batch")
  check(ld:next() == nil, "nil at the end of the epoch")
  check(ld:state().epoch == 2 and ld:state().position == 0, "then the next epoch")
  local count = 0
  for bx in ld:iter() do count = count + bx:size(1) end
  check(count == 10, "iter visits the epoch")
  check(#data.loader(ds, {batch = 4, drop_last = true}) == 2, "drop_last")

  -- normalisation per channel
  local mean, std = {0.1, 0.2, 0.3}, {0.5, 0.25, 2}
  local nl <close> = data.loader(ds, {batch = 10, shuffle = false, normalize = {mean = mean, std = std}})
  local nx = nl:next()
  local want = ds:get(7)
  for c = 1, 3 do
    check_close(nx:slice(1, 7, 7):slice(2, c, c):reshape(4, 4),
                (want:slice(1, c, c):reshape(4, 4) - mean[c]) / std[c], 1e-5, "channel " .. c)
  end

  -- the same seed, the same augmented batches; another seed, others
  local opts = {batch = 3, seed = 5, normalize = {mean = 0.5, std = 0.5}, augment = {crop = 2, flip = true, cutout = 2}}
  local function batches(o, n)
    local l <close> = data.loader(ds, o)
    local out = {}
    while #out < n do
      local bx = l:next()
      if bx then out[#out + 1] = bx:clone() end
    end
    return out
  end
  local a, b = batches(opts, 8), batches(opts, 8)
  local same = true
  for i = 1, 8 do same = same and (a[i] - b[i]):abs():max() == 0 end
  check(same, "same seed, same batches")
  opts.seed = 6
  local c = batches(opts, 8)
  check((a[1] - c[1]):abs():max() > 0, "another seed, other batches")

  -- state and set_state: a saved position continues with the same batches
  opts.seed = 5
  local l1 <close> = data.loader(ds, opts)
  for _ = 1, 6 do l1:next() end
  local st = l1:state()
  check(st.epoch == 2 and st.position == 1, "state after 4 batches, an end and a batch")
  local l2 <close> = data.loader(ds, opts)
  l2:set_state(st)
  check_close(l2:next(), l1:next(), 0, "set_state resumes the stream")
  l2:reset(1)
  check_close(l2:next(), a[1], 0, "reset(1): the first batch again")
  check_error(function() l2:set_state({epoch = 0}) end, "out of range")
  check_error(function() l2:set_state({epoch = 1, position = 9}) end, "out of range")
  check_error(function() data.loader(ds, {bacth = 2}) end, "unknown option 'bacth'")
  check_error(function() data.loader(ds, {normalize = {mean = {1, 2}, std = 1}}) end, "2 means")
  check_error(function() data.loader(ds, {augment = {crop = 5}}) end, "crop 5")
  check_error(function() data.loader(ds, {augment = {rotate = 5}}) end, "unknown option 'rotate'")
  check_error(function() data.loader(tensor.zeros(2)) end, "Dataset expected")
  getmetatable(ld).__close(ld)
  check_error(function() ld:next() end, "loader is closed")
end)

test("image folders", function()
  local root = dir .. "/img"
  os.execute(string.format("mkdir -p '%s/dog' '%s/cat'", root, root))
  write_ppm(root .. "/dog/1.ppm", 4, 2, function(x, y) return 10 * x, 20 * y, 7 end)
  write_ppm(root .. "/cat/1.ppm", 4, 2, function(x, y) return 100, 50, 25 end)
  write_ppm(root .. "/cat/2.ppm", 4, 2, function(x, y) return 200, x, y end)
  local ds = data.image_folder(root)
  check(#ds == 3 and table.concat(ds:classes(), " ") == "cat dog", "classes in sorted order")
  check(table.concat(ds:shape(), "x") == "3x2x4", "RGB 2x4")
  local img, label = ds:get(3)
  check(label == 2, "dog is class 2")
  check_close(img:get(1, 1, 3) * 255, 20, 1e-4, "red of (x=2, y=0)")
  check_close(img:get(2, 2, 1) * 255, 20, 1e-4, "green of (x=0, y=1)")
  local small = data.image_folder(root, {size = {1, 2}})
  check(table.concat(small:shape(), "x") == "3x1x2", "resized to {height, width}")
  check_close(small:get(1):get(1, 1, 1) * 255, 100, 1e-4, "a flat image stays flat")
  check(table.concat(data.image_folder(root, {size = 3}):shape(), "x") == "3x3x3", "a square size")
  -- a stray file is skipped (as torchvision does) and the count is said; a bad image still fails
  write(root .. "/dog/readme.txt", "not an image")
  local said, print0 = {}, print
  print = function(...) said[#said + 1] = table.concat({...}, " ") end
  local ok, withstray = pcall(data.image_folder, root, {size = {2, 2}})
  print = print0
  check(ok and #withstray == 3, "a stray readme.txt is skipped: " .. tostring(withstray))
  check(#said == 1 and said[1]:find("skipped 1 file that is not an image", 1, true),
        "the skipped file is reported: " .. tostring(said[1]))
  os.remove(root .. "/dog/readme.txt")
  write(root .. "/dog/broken.ppm", "P6\n")
  check_error(function() data.image_folder(root, {size = {2, 2}}) end, "dog/broken.ppm")
  os.remove(root .. "/dog/broken.ppm")
  check_error(function() data.image_folder(root, {size = {0, 2}}) end, "size must")
  check_error(function() data.image_folder(dir .. "/nothing") end, "cannot open folder")
end)

test("CIFAR files", function()
  local x = tensor.rand(12, 3, 32, 32)
  local labels = {}
  for i = 1, 12 do labels[i] = (i * 7) % 10 + 1 end
  local names = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
  local train = data.from_tensors(x, labels, {classes = names})
  local test_set = train:subset(1, 4)
  local out = dir .. "/cifar"
  data.save_cifar(out, train, test_set, {shuffle = false})
  local tr, te = data.cifar10(out)
  check(#tr == 12 and #te == 4 and tr:name() == "cifar10-train", "sizes")
  check(table.concat(tr:classes(), " ") == table.concat(names, " "), "class names")
  local same = true
  for i = 1, 12 do
    local a, la = tr:get(i)
    local b, lb = train:get(i)
    same = same and la == lb and (a - b):abs():max() == 0
  end
  check(same, "read back unchanged")
  data.save_cifar(out .. "2", train, test_set, {seed = 3})
  local sh = data.cifar10(out .. "2")
  local moved = false
  for i = 1, 12 do moved = moved or (sh:get(i) - train:get(i)):abs():max() > 0 end
  check(moved, "shuffled by default")
  check_error(function() data.save_cifar(out, (tiny(2)), (tiny(2))) end, "3x32x32")
  check_error(function() data.cifar10(dir .. "/none") end, "not a folder")
  write(out .. "/data_batch_2.bin", "short")
  check_error(function() data.cifar10(out) end, "data_batch_2.bin' has 5 bytes")
end)

test("Fashion-MNIST from Debian's package", function()
  local ok, train, test_set = pcall(data.fashion_mnist)
  if not ok then
    check(tostring(train):find("dataset-fashion-mnist", 1, true), "says how to install it: " .. tostring(train))
    return
  end
  check(#train == 60000 and #test_set == 10000, "sizes")
  check(table.concat(train:shape(), "x") == "1x28x28", "1x28x28")
  check(train:classes()[10] == "Ankle boot", "names")
  local _, label = train:get(1)
  check(label == 10, "the first training image is an ankle boot")
end)

test("learning through a loader (2,000 Fashion-MNIST images, 2 epochs)", function()
  local ok, train, test_set = pcall(data.fashion_mnist)
  if not ok then return end -- reported by the test above
  tensor.seed(1)
  local net = nn.Sequential{nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)}
  local norm = {mean = 0.286, std = 0.353}
  local ld <close> = data.loader(train:subset(1, 2000), {batch = 32, seed = 1, normalize = norm,
                                                         augment = {flip = true}})
  local t = nn.Trainer{net = net, data = ld, optim = optim.Adam(net, {lr = 2e-3}), verbose = false}
  t:fit{epochs = 2}
  check(t.steps == 2 * 63, "63 batches per epoch: " .. t.steps)
  local ev <close> = data.loader(test_set:subset(1, 1000), {batch = 250, shuffle = false, normalize = norm})
  local r = nn.evaluate(net, ev)
  check(r.count == 1000 and r.top1 > 0.6, string.format("test accuracy %.3f (chance 0.1)", r.top1))
end)

-- The seed CNN on real CIFAR-10 (when `make data` has put it in data/; make test does when an
-- archive is at hand): 2 epochs on 2,000 images must beat chance (10%) by a wide margin.
test("learning CIFAR-10 (2,000 images, 2 epochs, the seed CNN)", function()
  local ok, train, test_set = pcall(data.cifar10)
  if not ok then
    skip("CIFAR-10 is not in data/ (make data)")
    return
  end
  tensor.seed(1)
  local net = nn.Sequential{
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(4096, 10),
  }
  local norm = {mean = 0.5, std = 0.5}
  local ld <close> = data.loader(train:subset(1, 2000), {batch = 64, seed = 1, normalize = norm})
  local t = nn.Trainer{net = net, data = ld, optim = optim.Adam(net, {lr = 1e-3}), verbose = false}
  t:fit{epochs = 2}
  local ev <close> = data.loader(test_set:subset(1, 1000), {batch = 250, shuffle = false, normalize = norm})
  local r = nn.evaluate(net, ev)
  check(r.count == 1000 and r.top1 > 0.35, string.format("CIFAR-10 test accuracy %.3f (chance 0.1)", r.top1))
end)

os.execute("rm -rf '" .. dir .. "' '" .. dir .. "2' '" .. dir .. "/cifar2'")
