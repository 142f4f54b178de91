-- test_errors.lua: how nnlab reports errors. Every message reads "where: name: problem": where is
-- the line of the caller's code (here, this file), never a line inside dsl/*.lua; name is the Lua
-- name of the function that was called (tensor.zeros, Tensor:save, nn.load, Trainer:fit), given
-- once; a path holding a NUL byte is refused by every function that takes one.

local here = debug.getinfo(1, "S").short_src

-- The message of the error fn raises, or nil when it raises none.
local function error_of(fn)
  local ok, err = pcall(fn)
  if ok then return nil end
  return tostring(err)
end

-- named(fn, name, problem): fn fails with "<this file>:<line>: <name>: ..." whose rest contains
-- problem (plain text), with the name given once and no position inside dsl/.
local function named(fn, name, problem)
  local err = error_of(fn)
  local label = name .. " / " .. problem
  if not check(err, label .. ": no error") then return end
  local head = here .. ":"
  local line, rest = err:match("^(%d+): (.*)$", #head + 1)
  check(err:sub(1, #head) == head and line, label .. ": the caller's line first: " .. err)
  rest = rest or err
  check(rest:sub(1, #name + 2) == name .. ": ", label .. ": the function's name next: " .. err)
  check(rest:find(problem, #name + 1, true), label .. ": the problem: " .. err)
  check(not rest:find(name .. ": ", #name + 2, true), label .. ": the name only once: " .. err)
  check(not err:find("dsl/", 1, true), label .. ": no place inside nnlab: " .. err)
end

-- A regular file: paths under it cannot be created, even by root.
local file = os.tmpname()
local missing = file .. "/missing"

local function tiny_set(n)
  tensor.seed(1)
  return nn.TensorDataset(tensor.randn(n, 2), (tensor.rand(n) * 3 - 0.5):to("i32") + 1)
end

test("file functions name themselves and the path", function()
  named(function() return tensor.load(missing .. ".npy") end, "tensor.load", "cannot open '" .. missing .. ".npy'")
  named(function() tensor.ones(2):save(missing .. ".npy") end, "Tensor:save", "cannot write '" .. missing .. ".npy'")
  named(function() return nn.load(missing) end, "nn.load", "cannot read '" .. missing .. "'")
  named(function() nn.Linear(2, 2):save(missing) end, "Module:save", "cannot write '" .. missing .. "'")
  local t = nn.Trainer{net = nn.Linear(2, 3), data = tiny_set(8), verbose = false}
  named(function() t:save(missing) end, "Trainer:save", missing)
  named(function() return nn.Trainer.load(missing, {data = tiny_set(8)}) end, "nn.Trainer.load",
        "cannot read '" .. missing .. "'")
  named(function() return data.image_folder(missing) end, "data.image_folder", "cannot open folder")
  named(function() return data.cifar10(missing) end, "data.cifar10", missing)
  named(function() return data.mnist(missing) end, "data.mnist", missing)
  named(function() return data.fashion_mnist(missing) end, "data.fashion_mnist", missing)
  local imgs = data.from_tensors(tensor.zeros(2, 3, 32, 32), {1, 2})
  named(function() data.save_cifar(missing, imgs, imgs) end, "data.save_cifar", missing)
  local c = viz.curves({loss = {3, 2, 1}}, {width = 64, height = 48})
  named(function() c:save(missing .. ".png") end, "Canvas:save", missing)
  named(function() viz.save(missing .. ".png", c) end, "viz.save", missing)
  named(function() viz.save(missing .. ".png", "curves") end, "viz.save", missing)
end)

test("core errors are named after the function called, without doubling a prefix", function()
  named(function() return tensor.zeros(1e6, 1e6) end, "tensor.zeros", "shape [1000000, 1000000] of f32 needs")
  check(not error_of(function() return tensor.zeros(1e6, 1e6) end):find("tensor: ", 1, true),
        "the core's 'tensor:' tag gives way to the name")
  named(function() return tensor.randn(1e6, 1e6) end, "tensor.randn", "needs")
  named(function() return tensor.zeros(-1) end, "tensor.zeros", "size 1 (-1.0) is negative")
  named(function() return tensor.ones(2, 3):reshape(4, 4) end, "Tensor:reshape", "cannot reshape [2, 3]")
  named(function() return tensor.matmul(tensor.ones(2, 3), tensor.ones(4, 5)) end, "tensor.matmul",
        "shapes [2, 3] and [4, 5] do not match")
  named(function() local a = tensor.ones(2, 3); return a:matmul(tensor.ones(4, 5)) end, "Tensor:matmul",
        "do not match")
  named(function() return tensor.ones(2, 3) + tensor.ones(4) end, "Tensor:add", "do not broadcast")
  named(function() return nn.Linear(2, 3):forward(tensor.ones(4, 5)) end, "Module:forward",
        "Linear: input has 5 features, expected 2")
  named(function() return optim.SGD(nn.Linear(2, 2), {lr = 0.1, momentum = -1}) end, "optim.SGD",
        "momentum must be")
  local ds = data.from_tensors(tensor.zeros(4, 1, 2, 2), {1, 2, 1, 2})
  named(function() return ds:subset(0, 3) end, "Dataset:subset", "outside 1..4")
  named(function() return tiny_set(4):get(9) end, "TensorDataset:get", "out of range")
end)

test("errors inside the DSL's Lua code name the call and the caller's line", function()
  local ds = nn.TensorDataset(tensor.randn(8, 2), tensor.from{1, 2, 3, 11, 1, 2, 1, 2})
  local t = nn.Trainer{net = nn.Linear(2, 3), data = ds, batch = 8, shuffle = false, verbose = false}
  named(function() t:fit{epochs = 1} end, "Trainer:fit", "label 11.0 of sample 4 is not a class number from 1 to 3")
  named(function() t:step() end, "Trainer:step", "label 11.0")
  named(function() t:epoch() end, "Trainer:epoch", "label 11.0")
  named(function() t:fit{epoch = 1} end, "Trainer:fit", "unknown option 'epoch'")
  named(function() t:on_step(3) end, "Trainer:on_step", "expected a function")
  named(function() return nn.evaluate(nn.Linear(2, 3), ds) end, "nn.evaluate", "label 11.0")
  named(function() return nn.Trainer{net = 3, data = ds} end, "nn.Trainer", "net must be a network")
  named(function() return optim.schedule.cosine{total = 0} end, "optim.schedule.cosine", "total must be")
  named(function() return quant.int8(nn.Linear(2, 2)) end, "quant.int8", "give calibration data")
  local net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
  local err = error_of(function() return viz.features(net, 1, tensor.rand(4, 8, 8)) end)
  named(function() return viz.features(net, 1, tensor.rand(4, 8, 8)) end, "viz.features",
        "the network could not run the image: Conv2d: input has 4 channels")
  check(err and not err:find(":%d+: ", #here + 4), "a wrapped message holds one position: " .. tostring(err))
  -- Functions that end in a tail call of a helper are named all the same.
  named(function() return viz.curves({loss = {1, 2}}, {width = -5}) end, "viz.curves",
        "width must be a whole number of pixels from 1 to 16384, got -5")
  named(function() return viz.histogram(nn.Linear(2, 2), {height = 2.5}) end, "viz.histogram", "height must be")
  named(function() return quant.int8(nn.Linear(2, 2), {calibrate = tensor.ones(3, 3)}) end, "quant.int8",
        "Linear: input has 3 features, expected 2")
  local broken = nn.Trainer{net = nn.Linear(2, 3), data = ds, verbose = false}
  broken.target = 5
  named(function() return broken:resume() end, "Trainer:resume", "label 11.0")
  -- Arguments the DSL hands on to its C helpers are checked with the public name.
  named(function() return nn.Sequential(nn.Linear(2, 2)):summary({1, "x"}) end, "Module:summary",
        "size 2 of the input shape must be a whole number >= 0, got x")
  named(function() return nn.Trainer{net = nn.Linear(2, 3), data = ds, loss = 3} end, "nn.Trainer",
        "loss must be a loss")
  named(function() return nn.Trainer{net = nn.Linear(2, 3), data = ds, optim = {}} end, "nn.Trainer",
        "optim must be an optimizer")
  local lua_set = {size = function() return 2 end, get = function() return 7, 1 end}
  named(function() nn.Trainer{net = nn.Linear(2, 3), data = lua_set, verbose = false}:step() end,
        "Trainer:step", "the data set's sample 1 is a number, expected a Tensor")
  -- An error the user's own code raises is left alone, even when nnlab called that code.
  local good = nn.Trainer{net = nn.Linear(2, 3), data = tiny_set(8), verbose = false}
  good:on_step(function() error("mine", 0) end)
  check(error_of(function() good:step() end) == "mine", "a hook's own error passes through as it was")
end)

test("an empty data set is refused by name", function()
  local empty = nn.TensorDataset(tensor.zeros(0, 2), tensor.zeros(0))
  local t = nn.Trainer{net = nn.Linear(2, 3), data = empty, verbose = false}
  named(function() t:step() end, "Trainer:step", "the data set is empty (0 samples)")
  named(function() t:epoch() end, "Trainer:epoch", "the data set is empty")
  named(function() t:fit{epochs = 2} end, "Trainer:fit", "the data set is empty")
  check(t.steps == 0 and t.epochs == 0 and #t.history.loss == 0, "nothing was counted")
  named(function() return nn.evaluate(nn.Linear(2, 3), empty) end, "nn.evaluate", "the data set is empty")
  local ds = data.from_tensors(tensor.zeros(3, 1, 2, 2), {1, 2, 1})
  local none = ds:subset(2, 1)
  local t2 = nn.Trainer{net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), data = none, verbose = false}
  named(function() t2:fit() end, "Trainer:fit", "the data set is empty")
  local ok = nn.Trainer{net = nn.Linear(2, 3), data = tiny_set(8), verbose = false}
  named(function() ok:fit{eval = empty} end, "Trainer:fit", "the eval data set is empty")
end)

test("a path holding a NUL byte is refused, not cut short", function()
  local base = os.tmpname()
  os.remove(base)
  local bad = base .. "\0tail"
  local shown = base .. "\\0tail"
  local function refused(fn, name, ext)
    named(fn, name, 'the path "' .. shown .. (ext or "") .. '" holds a NUL byte')
  end
  local c = viz.curves({loss = {3, 2, 1}}, {width = 64, height = 48})
  refused(function() return tensor.load(bad) end, "tensor.load")
  refused(function() tensor.ones(2):save(bad) end, "Tensor:save")
  refused(function() return nn.load(bad) end, "nn.load")
  refused(function() nn.Linear(2, 2):save(bad) end, "Module:save")
  local t = nn.Trainer{net = nn.Linear(2, 3), data = tiny_set(8), verbose = false}
  refused(function() t:save(bad) end, "Trainer:save")
  refused(function() return nn.Trainer.load(bad, {data = tiny_set(8)}) end, "nn.Trainer.load")
  refused(function() viz.save(bad .. ".png") end, "viz.save", ".png")
  refused(function() viz.save(bad, c) end, "viz.save")
  refused(function() c:save(bad) end, "Canvas:save")
  refused(function() return data.image_folder(bad) end, "data.image_folder")
  refused(function() return data.cifar10(bad) end, "data.cifar10")
  refused(function() return data.fashion_mnist(bad) end, "data.fashion_mnist")
  refused(function() return data.mnist(bad) end, "data.mnist")
  local imgs = data.from_tensors(tensor.zeros(2, 3, 32, 32), {1, 2})
  refused(function() data.save_cifar(bad, imgs, imgs) end, "data.save_cifar")
  check(io.open(base, "rb") == nil and io.open(base .. ".png", "rb") == nil, "no file written at the cut")
  check(require("nnlab.util").check_path("a/b.png") == "a/b.png", "util.check_path passes a good path")
end)

os.remove(file)
