-- test_fuzz.lua: no argument list crashes nnlab. Every public function and method with help (the
-- help registry lists them) is called under pcall with a fixed set of bad arguments: none, nil,
-- wrong types, negative, zero, NaN, inf, huge numbers, odd tables, strings with NUL bytes, long
-- strings, tensors of every dtype and of size 0, modules where tensors belong; each argument of a
-- valid call is replaced by each of them in turn, and each option by each of them. Every call must
-- return or raise an error whose message is a non-empty string. Objects in odd states (closed
-- tensors and loaders, a pruned net, a trainer whose net was replaced, a closed window) go through
-- their methods too. The sanitizer build (make SAN=1 test) turns any memory error into a failure.
-- NNLAB_FUZZ_TRACE=1 prints each call to stderr before making it: the last line names the call
-- that crashed (=profile: the slowest functions instead). NNLAB_FUZZ_ONLY=pattern calls only the
-- functions it matches; NNLAB_FUZZ_ALL=1 gives every object every argument list (minutes).

local H = debug.getregistry()["nnlab.help"]
local TRACE = os.getenv("NNLAB_FUZZ_TRACE")
local ONLY = os.getenv("NNLAB_FUZZ_ONLY") -- a Lua pattern: only the functions it matches
local ALL = os.getenv("NNLAB_FUZZ_ALL") -- every argument list for every object, not the first only

-- Files go under /tmp/nnlab_fuzz_<unique>*, removed at the end.
local TMP
do
  local name = os.tmpname()
  os.remove(name)
  TMP = "/tmp/nnlab_fuzz_" .. name:match("([^/]+)$")
end

-- ---------------------------------------------------------------- values -----------------------

local function huge_string(n) return string.rep("x", n) end
local LONG = huge_string(100000)

-- The bad values, each as {label, make}: make() returns a fresh value (calls may change it).
local BAD = {}
local function bad(label, make) BAD[#BAD + 1] = {label = label, make = make, huge = false} end
local function bad_huge(label, make) BAD[#BAD + 1] = {label = label, make = make, huge = true} end
bad("nil", function() return nil end)
bad("true", function() return true end)
bad("false", function() return false end)
bad("0", function() return 0 end)
bad("-1", function() return -1 end)
bad("1.5", function() return 1.5 end)
bad("-0.5", function() return -0.5 end)
bad_huge("nan", function() return 0 / 0 end)
bad_huge("inf", function() return math.huge end)
bad("-inf", function() return -math.huge end)
bad_huge("1e18", function() return 1e18 end)
bad_huge("2^53", function() return 2 ^ 53 end)
bad("-2^63", function() return math.mininteger end)
bad("-2^63.0", function() return -2.0 ^ 63 end)
bad_huge("maxinteger", function() return math.maxinteger end)
bad("''", function() return "" end)
bad("'abc'", function() return "abc" end)
bad("'f64'", function() return "f64" end)
bad("'a\\0b'", function() return "a\0b" end)
bad("long string", function() return LONG end)
bad("{}", function() return {} end)
bad("{1,2,3}", function() return {1, 2, 3} end)
bad("{{}}", function() return {{}} end)
bad("{foo=1}", function() return {foo = 1} end)
bad("{-1}", function() return {-1} end)
bad("{0,0}", function() return {0, 0} end)
bad_huge("{1e18,1e18}", function() return {1e18, 1e18} end)
bad_huge("{nan}", function() return {0 / 0} end)
bad("{'a'}", function() return {"a"} end)
bad("raising table", function()
  return setmetatable({}, {__index = function() error("raised by __index") end,
                           __len = function() error("raised by __len") end})
end)
bad("function", function() return function() end end)
bad("raising function", function() return function() error("raised by the callback") end end)
bad("io.stdout", function() return io.stdout end)
bad("f32 2x3", function() return tensor.randn(2, 3) end)
bad("i32 3", function() return tensor.from({1, 2, 3}, "i32") end)
bad("u8 2x2", function() return tensor.ones(2, 2, "u8") end)
bad("i8 4", function() return tensor.ones(4, "i8") end)
bad("f32 0x3", function() return tensor.zeros(0, 3) end)
bad("f32 1x3x4x4", function() return tensor.rand(1, 3, 4, 4) end)
bad("nn.ReLU", function() return nn.ReLU() end)
bad("nn.Linear(2,2)", function() return nn.Linear(2, 2) end)
bad("MSELoss", function() return nn.MSELoss() end)
-- objects whose memory was given back: by a to-be-closed variable, or __gc called by hand
local function finished(obj, how)
  getmetatable(obj)[how](obj)
  return obj
end
bad("closed tensor", function() return finished(tensor.randn(2, 3), "__close") end)
bad("collected module", function() return finished(nn.Linear(2, 2), "__gc") end)
bad("closed dataset", function()
  return finished(data.from_tensors(tensor.rand(2, 3, 4, 4), {1, 2}), "__close")
end)
bad("collected TensorDataset", function()
  return finished(nn.TensorDataset(tensor.randn(2, 2), tensor.ones(2)), "__gc")
end)

-- Valid objects of each type, for methods (several shapes and dtypes of tensor).
local function ds8() return nn.TensorDataset(tensor.randn(8, 2), tensor.from({1, 2, 1, 2, 1, 2, 1, 2}, "i32")) end
local function imgs() return data.from_tensors(tensor.rand(8, 3, 4, 4), {1, 2, 1, 2, 1, 2, 1, 2}) end
local function conv_net()
  return nn.Sequential(nn.Conv2d(3, 4, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                       nn.Linear(16, 2))
end
local function trainer()
  return nn.Trainer{net = nn.Linear(2, 2), data = ds8(), verbose = false}
end
local function canvas() return viz.curves({loss = {2, 1}}, {width = 32, height = 24}) end
-- A recorded run folder (made once) for the functions that read runs.
local run_dir
local function saved_run()
  if not run_dir then
    run_dir = TMP .. "_saved_run"
    local t = trainer()
    t:record(run_dir, {params = {lr = 0.5}})
    t:fit()
  end
  return run_dir
end
local function small_trainer(p)
  local net = nn.Linear(2, 2)
  return nn.Trainer{net = net, data = ds8(), batch = 4, verbose = false, optim = optim.SGD(net, {lr = p.lr})}
end

local SELVES = {
  Tensor = {
    function() return tensor.randn(2, 3) end,
    function() return tensor.from({{1, 2, 3}, {4, 5, 6}}, "i32") end,
    function() return tensor.from({{1, -2}, {3, 4}}, "i8") end,
    function() return tensor.ones(3, 2, "u8") end,
    function() return tensor.zeros(0, 3) end,
    function() return tensor.zeros(2, 0, "i32") end,
    function() return tensor.zeros(0, "u8") end,
    function() return tensor.from(7) end,
    function() return tensor.rand(2, 3, 4, 4) end,
    function() return tensor.randn(3, 4):t() end,
    function() return tensor.arange(12):reshape(3, 4):slice(2, 2, 3) end,
  },
  Module = {
    function() return nn.Linear(2, 3) end,
    conv_net,
    function() return nn.Sequential() end,
    function() return nn.BatchNorm2d(3) end,
    function() return nn.Residual(nn.Linear(2, 2), nn.ReLU()) end,
  },
  Optimizer = {
    function() return optim.SGD(nn.Linear(2, 2), {lr = 0.1}) end,
    function() return optim.Adam(nn.Linear(2, 2)) end,
  },
  Loss = {
    function() return nn.CrossEntropyLoss() end,
    function() return nn.MSELoss() end,
    function() return nn.DistillLoss{teacher = nn.Linear(2, 2)} end,
  },
  TensorDataset = {ds8},
  Trainer = {trainer},
  Dataset = {imgs},
  Loader = {function() return data.loader(imgs(), {batch = 3}) end},
  Canvas = {canvas},
}

-- A valid call of each function, as make() -> args, n (methods: the arguments after self), and the
-- position of its options table (opt). Each argument, and each option named in the signature, is
-- replaced by each bad value in turn.
local function A(...) return {...}, select("#", ...) end
local BASE = {
  ["tensor.zeros"] = {make = function() return A(2, 3) end},
  ["tensor.ones"] = {make = function() return A({2, 3}, "i32") end},
  ["tensor.full"] = {make = function() return A({2, 2}, 7, "f32") end},
  ["tensor.rand"] = {make = function() return A(4) end},
  ["tensor.randn"] = {make = function() return A(2, 3) end},
  ["tensor.arange"] = {make = function() return A(1, 2, 0.25) end},
  ["tensor.from"] = {make = function() return A({{1, 2}, {3, 4}}, "i32") end},
  ["tensor.seed"] = {make = function() return A(42) end},
  ["tensor.load"] = {make = function() return A(TMP .. ".npy") end},
  ["tensor.matmul"] = {make = function() return A(tensor.ones(2, 3), tensor.ones(3, 4)) end},
  ["Tensor:size"] = {make = function() return A(1) end},
  ["Tensor:reshape"] = {make = function() return A(-1) end},
  ["Tensor:transpose"] = {make = function() return A(1, 2) end},
  ["Tensor:slice"] = {make = function() return A(1, 1, 1) end},
  ["Tensor:get"] = {make = function() return A(1, 1) end},
  ["Tensor:set"] = {make = function() return A(5, 1, 1) end},
  ["Tensor:copy"] = {make = function() return A(tensor.ones(2, 3)) end},
  ["Tensor:fill"] = {make = function() return A(2) end},
  ["Tensor:to"] = {make = function() return A("i8") end},
  ["Tensor:save"] = {make = function() return A(TMP .. ".npy") end},
  ["journal.save"] = {make = function() return A(TMP .. ".lua") end},
  ["Tensor:add"] = {make = function() return A(tensor.ones(2, 3)) end},
  ["Tensor:sub"] = {make = function() return A(1) end},
  ["Tensor:mul"] = {make = function() return A(2) end},
  ["Tensor:div"] = {make = function() return A(2) end},
  ["Tensor:pow"] = {make = function() return A(2) end},
  ["Tensor:maximum"] = {make = function() return A(0) end},
  ["Tensor:minimum"] = {make = function() return A(0) end},
  ["Tensor:eq"] = {make = function() return A(2) end},
  ["Tensor:lt"] = {make = function() return A(tensor.ones(3)) end},
  ["Tensor:sum"] = {make = function() return A(1, true) end},
  ["Tensor:mean"] = {make = function() return A(2, true) end},
  ["Tensor:max"] = {make = function() return A(1) end},
  ["Tensor:min"] = {make = function() return A(2, false) end},
  ["Tensor:argmax"] = {make = function() return A(2, true) end},
  ["Tensor:matmul"] = {make = function() return A(tensor.ones(3)) end},
  ["Tensor:argmin"] = {make = function() return A(1, true) end},
  ["Tensor:permute"] = {make = function() return A(2, 1) end},
  ["Tensor:unsqueeze"] = {make = function() return A(-1) end},
  ["Tensor:squeeze"] = {make = function() return A(1) end},
  ["Tensor:view"] = {make = function() return A(3, -1) end},
  ["Tensor:flatten"] = {make = function() return A(1, 2) end},
  ["Tensor:expand"] = {make = function() return A(4, 2, 3) end},
  ["Tensor:tile"] = {make = function() return A(2, 1) end},
  ["Tensor:repeat"] = {make = function() return A({1, 2}) end},
  ["Tensor:split"] = {make = function() return A({1, 2}, 2) end},
  ["Tensor:chunk"] = {make = function() return A(2, 2) end},
  ["Tensor:where"] = {make = function() return A(tensor.ones(2, 3, "u8"), 0) end},
  ["Tensor:masked_fill"] = {make = function() return A(tensor.ones(3, "u8"), -1) end},
  ["Tensor:gather"] = {make = function() return A(2, tensor.from({{1}, {3}}, "i32")) end},
  ["Tensor:index_select"] = {make = function() return A(1, {2, 1}) end},
  ["Tensor:sort"] = {make = function() return A(1, true) end},
  ["Tensor:topk"] = {make = function() return A(2, 2, false) end},
  ["Tensor:softmax"] = {make = function() return A(1) end},
  ["Tensor:log_softmax"] = {make = function() return A(-1) end},
  ["Tensor:cumsum"] = {make = function() return A(2) end},
  ["Tensor:clamp"] = {make = function() return A(-1, tensor.ones(3)) end},
  ["Tensor:norm"] = {make = function() return A(3, 2, true) end},
  ["Tensor:var"] = {make = function() return A(1, false, true) end},
  ["Tensor:std"] = {make = function() return A(2, true) end},
  ["Tensor:outer"] = {make = function() return A(tensor.ones(4)) end},
  ["tensor.cat"] = {make = function() return A({tensor.ones(2, 3), tensor.zeros(1, 3, "i32")}, 1) end},
  ["tensor.stack"] = {make = function() return A({tensor.ones(2, 3), tensor.zeros(2, 3)}, -1) end},
  ["tensor.where"] = {make = function() return A(tensor.ones(2, 1, "u8"), tensor.ones(3), 0) end},
  ["tensor.outer"] = {make = function() return A(tensor.ones(2), tensor.arange(3)) end},
  ["sys.threads"] = {make = function() return A(sys.threads()) end},
  ["Optimizer:set_lr"] = {make = function() return A(1e-3) end},
  ["Optimizer:clip_grad_norm"] = {make = function() return A(1) end},
  ["Optimizer:set_clip"] = {make = function() return A(5) end},
  ["optim.SGD"] = {make = function() return A(nn.Linear(2, 1), {lr = 0.1, momentum = 0.9}) end, opt = 2},
  ["optim.Adam"] = {make = function() return A(nn.Linear(2, 1), {lr = 1e-3}) end, opt = 2},
  ["optim.AdamW"] = {make = function() return A(nn.Linear(2, 1), {weight_decay = 0.05}) end, opt = 2},
  ["optim.schedule.step"] = {make = function() return A({every = 10, gamma = 0.5}) end, opt = 1},
  ["optim.schedule.cosine"] = {make = function() return A({total = 100}) end, opt = 1},
  ["optim.schedule.warmup"] = {make = function()
    return A({steps = 5, after = optim.schedule.cosine{total = 95}}) end, opt = 1},
  ["optim.schedule.onecycle"] = {make = function() return A({max_lr = 0.1, total = 100}) end, opt = 1},
  ["Module:forward"] = {make = function() return A(tensor.ones(4, 2)) end},
  ["Module:backward"] = {make = function() return A(tensor.ones(4, 3)) end},
  ["Module:train"] = {make = function() return A(true) end},
  ["Module:to"] = {make = function() return A("cpu") end},
  ["Module:save"] = {make = function() return A(TMP .. ".st") end},
  ["Module:add"] = {make = function() return A(nn.ReLU()) end},
  ["Module:insert"] = {make = function() return A(1, nn.ReLU()) end},
  ["Module:remove"] = {make = function() return A(1) end},
  ["Module:infer"] = {make = function() return A({1, 2}) end},
  ["Module:summary"] = {make = function() return A({1, 2}) end},
  ["Module:restore"] = {make = function() return A(nn.Linear(2, 3):snapshot()) end},
  ["Loss:forward"] = {make = function() return A(tensor.zeros(2, 2), {1, 2}, tensor.zeros(2, 2)) end},
  ["Loss:backward"] = {make = function() return A(1) end},
  ["TensorDataset:get"] = {make = function() return A(2) end},
  ["TensorDataset:batch"] = {make = function() return A({1, 3}) end},
  ["nn.CrossEntropyLoss"] = {make = function() return A({label_smoothing = 0.1}) end, opt = 1},
  ["nn.DistillLoss"] = {make = function() return A({teacher = nn.Linear(2, 2), temperature = 4, alpha = 0.9}) end, opt = 1},
  ["nn.TensorDataset"] = {make = function() return A(tensor.randn(4, 2), tensor.ones(4, "i32")) end},
  ["nn.load"] = {make = function() return A(TMP .. ".st") end},
  ["nn.is_module"] = {make = function() return A(nn.ReLU()) end},
  ["nn.Sequential"] = {make = function() return A(nn.Linear(2, 2), nn.ReLU()) end},
  ["nn.Residual"] = {make = function() return A(nn.Linear(2, 2), nn.ReLU()) end},
  ["nn.Linear"] = {make = function() return A(4, 3, {bias = true}) end, opt = 3},
  ["nn.Conv2d"] = {make = function() return A(3, 4, 3, {stride = 1, padding = 1, bias = true}) end, opt = 4},
  ["nn.MaxPool2d"] = {make = function() return A(2, {stride = 2, padding = 0}) end, opt = 2},
  ["nn.AvgPool2d"] = {make = function() return A(3, {stride = 1, padding = 1}) end, opt = 2},
  ["nn.LeakyReLU"] = {make = function() return A(0.2) end},
  ["nn.BatchNorm1d"] = {make = function() return A(3, {eps = 1e-5, momentum = 0.1, affine = true}) end, opt = 2},
  ["nn.BatchNorm2d"] = {make = function() return A(3, {eps = 1e-5, momentum = 0.1, affine = true}) end, opt = 2},
  ["nn.Dropout"] = {make = function() return A(0.25) end},
  ["nn.QConv2d"] = {make = function() return A(3, 4, 3, {padding = 1, relu = true}) end, opt = 4},
  ["nn.QLinear"] = {make = function() return A(8, 4, {f32 = true}) end, opt = 3},
  ["nn.QMaxPool2d"] = {make = function() return A(2, {stride = 2}) end, opt = 2},
  ["nn.Int4Linear"] = {make = function() return A(64, 4, {group = 32}) end, opt = 3},
  ["nn.Int4Conv2d"] = {make = function() return A(3, 4, 3, {padding = 1, group = 27}) end, opt = 4},
  ["nn.FakeQuant"] = {make = function() return A({bits = 8}) end, opt = 1},
  ["nn.QATLinear"] = {make = function() return A(8, 4, {bits = 8}) end, opt = 3},
  ["nn.QATConv2d"] = {make = function() return A(3, 4, 3, {padding = 1, bits = 8}) end, opt = 4},
  ["nn.evaluate"] = {make = function() return A(nn.Linear(2, 3), ds8(), {batch = 4}) end, opt = 3},
  ["nn.Trainer"] = {make = function()
    return A({net = nn.Linear(2, 2), data = ds8(), batch = 4, seed = 1, verbose = false}) end, opt = 1},
  ["nn.Trainer.load"] = {make = function() return A(TMP .. ".tr", {data = ds8(), verbose = false}) end, opt = 2},
  ["Trainer:fit"] = {make = function() return A({epochs = 1, eval = ds8(), verbose = false}) end, opt = 1},
  ["Trainer:on_step"] = {make = function() return A(function() end) end},
  ["Trainer:save"] = {make = function() return A(TMP .. ".tr") end},
  ["Trainer:record"] = {make = function() return A(TMP .. "_rec", {params = {lr = 1}, every = 30, dashboard = {width = 64, height = 48}}) end, opt = 2},
  ["runs.load"] = {make = function() return A(saved_run()) end},
  ["runs.list"] = {make = function() return A(saved_run()) end},
  ["runs.manifest"] = {make = function() return A({device = "cpu"}) end, opt = 1},
  ["viz.compare"] = {make = function()
    return A({saved_run()}, {by = "lr", metric = "train_acc", title = "t", labels = {"a"}, width = 32, height = 24}) end, opt = 2},
  ["search.grid"] = {make = function()
    return A({trainer = small_trainer, space = {lr = {0.1}}, epochs = 1, dir = TMP .. "_grid", metric = "train_acc",
              seed = 1, plot = false, dashboard = false}) end, opt = 1},
  ["search.random"] = {make = function()
    return A({trainer = small_trainer, space = {lr = {min = 0.01, max = 0.1, log = true}}, trials = 1, epochs = 1,
              dir = TMP .. "_random", seed = 1, plot = false, dashboard = false}) end, opt = 1},
  ["Dataset:get"] = {make = function() return A(1) end},
  ["Dataset:subset"] = {make = function() return A(2, 5) end},
  ["Dataset:split"] = {make = function() return A(0.75, 1) end},
  ["Dataset:batch"] = {make = function() return A({1, 3}) end},
  ["Loader:reset"] = {make = function() return A(3) end},
  ["Loader:set_state"] = {make = function() return A({epoch = 2, position = 1}) end, opt = 1},
  ["data.cifar10"] = {make = function() return A(TMP .. "_cifar") end},
  ["data.fashion_mnist"] = {make = function() return A(TMP .. "_fmnist") end},
  ["data.mnist"] = {make = function() return A(TMP .. "_mnist") end},
  ["data.image_folder"] = {make = function() return A(TMP .. "_images", {size = {8, 8}}) end, opt = 2},
  ["data.from_tensors"] = {make = function()
    return A(tensor.rand(4, 3, 4, 4), {1, 2, 1, 2}, {classes = {"a", "b"}, name = "x"}) end, opt = 3},
  ["data.save_cifar"] = {make = function()
    local x = data.from_tensors(tensor.rand(2, 3, 32, 32), {1, 2})
    return A(TMP .. "_cifar", x, x, {seed = 1, shuffle = true})
  end, opt = 4},
  ["data.loader"] = {make = function()
    return A(imgs(), {batch = 3, shuffle = true, seed = 1, normalize = {mean = 0.5, std = 0.5},
                      augment = {crop = 1, flip = true, cutout = 1}, drop_last = false})
  end, opt = 2},
  ["Canvas:save"] = {make = function() return A(TMP .. ".png") end},
  ["Canvas:pixel"] = {make = function() return A(1, 1) end},
  ["viz.press"] = {make = function() return A("tab") end},
  ["viz.resize"] = {make = function() return A(64, 48) end},
  ["viz.watch"] = {make = function() return A(trainer()) end},
  ["viz.curves"] = {make = function() return A({loss = {2, 1}}, {every = 1, width = 32, height = 24}) end, opt = 2},
  ["viz.features"] = {make = function()
    return A(conv_net(), 1, tensor.rand(3, 4, 4), {width = 32, height = 24}) end, opt = 4},
  ["viz.filters"] = {make = function() return A(nn.Conv2d(3, 4, 3), {width = 32, height = 24}) end, opt = 2},
  ["viz.histogram"] = {make = function() return A(conv_net(), {width = 32, height = 24, levels = true}) end, opt = 2},
  ["viz.confusion"] = {make = function()
    return A({confusion = tensor.from({{8, 2}, {1, 9}})}, {"a", "b"}, {width = 32, height = 24}) end, opt = 3},
  ["viz.samples"] = {make = function()
    return A(conv_net(), imgs(), 4, {first = 1, normalize = {mean = 0.5, std = 0.5}, width = 32, height = 24})
  end, opt = 4},
  ["viz.dashboard"] = {make = function()
    return A(trainer(), {every = 1, layer = 1, normalize = {mean = 0.5, std = 0.5}, width = 64, height = 48})
  end, opt = 2},
  ["viz.save"] = {make = function() return A(TMP .. ".png", canvas()) end},
  ["prune.magnitude"] = {make = function() return A(conv_net(), {amount = 0.5, scope = "global"}) end, opt = 2},
  ["prune.channels"] = {make = function() return A(conv_net(), {amount = 0.3, criterion = "l1"}) end, opt = 2},
  ["prune.masks_from_zeros"] = {make = function() return A(conv_net()) end},
  ["prune.remove"] = {make = function() return A(conv_net()) end},
  ["prune.sparse_threshold"] = {make = function() return A({conv = 0.6, linear = 0.5}) end, opt = 1},
  ["prune.report"] = {make = function() return A(conv_net()) end},
  ["prune.schedule"] = {make = function()
    return A({trainer = trainer(), target = 0.8, initial = 0, start = 0, finish = 10, every = 2,
              scope = "global"}) end, opt = 1},
  ["prune.sensitivity"] = {make = function()
    return A(nn.Sequential(nn.Linear(2, 3)), ds8(), {amounts = {0.5}, batch = 4}) end, opt = 3},
  ["lowrank.factorize"] = {make = function() return A(nn.Linear(16, 8), {rank = 2}) end, opt = 2},
  ["lowrank.spectrum"] = {make = function() return A(nn.Linear(6, 4)) end},
  ["lowrank.rank_for_energy"] = {make = function() return A(tensor.from{3, 2, 1}, 0.9) end},
  ["onnx.export"] = {make = function()
    return A(nn.Sequential(nn.Linear(2, 3)), TMP .. ".onnx", {input = {1, 2}, opset = 17, batch = "dynamic"}) end, opt = 3},
  ["onnx.load"] = {make = function() onnx.export(nn.Sequential(nn.Linear(2, 3)), TMP .. ".onnx"); return A(TMP .. ".onnx") end},
  ["onnx.info"] = {make = function() onnx.export(nn.Linear(2, 3), TMP .. ".onnx"); return A(TMP .. ".onnx") end},
  ["compress._push"] = {make = function() return A(nn.Linear(2, 2), "fuzz") end},
  ["compress.fastest"] = {make = function()
    return A({nn.Linear(4, 4), nn.Linear(4, 2)}, tensor.randn(2, 4), {rounds = 2, time = 0.001}) end, opt = 3},
  ["compress.compare"] = {make = function()
    return A({baseline = nn.Sequential(nn.Linear(2, 3))}, ds8(), {time = 0.001, batch = 4}) end, opt = 3},
  ["quant.qat"] = {make = function() return A(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2)), {bits = 8}) end, opt = 2},
  ["quant.convert"] = {make = function()
    local q = quant.qat(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2)))
    q(tensor.randn(4, 2))
    return A(q)
  end},
  ["quant.int4"] = {make = function() return A(nn.Sequential(nn.Linear(64, 4)), {group = 32}) end, opt = 2},
  ["quant.weights"] = {make = function() return A(quant.int4(nn.Linear(64, 4))[1]) end},
  ["quant.levels"] = {make = function() return A(quant.int4(nn.Linear(64, 4))[1]) end},
  ["quant.isa"] = {make = function() return A(quant.isa()) end},
  ["quant.int8"] = {make = function()
    return A(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2)),
             {calibrate = tensor.randn(8, 2), batches = 1, batch = 4, method = "minmax", percentile = 99.9})
  end, opt = 2},
  ["quant.report"] = {make = function() return A(quant.int8(nn.Linear(2, 2), {calibrate = tensor.randn(4, 2)})) end},
}

-- Functions never called: they open windows or wait (viz.show, Canvas:show, viz.wait), stop
-- whatever runs next (nn._interrupt), or start MPI in this process (dist.init: tests/dist).
local SKIP = {["viz.show"] = true, ["Canvas:show"] = true, ["viz.wait"] = true, ["nn._interrupt"] = true,
              ["dist.init"] = true}
-- Options or positions (after self) whose huge values ask for endless work rather than a bad
-- call: fit{epochs = 1e18} trains for ever, as asked.
local NO_HUGE = {
  ["Trainer:fit"] = {epochs = true},
  ["search.grid"] = {epochs = true},
  ["search.random"] = {epochs = true, trials = true},
  ["compress.fastest"] = {rounds = true, time = true},
  ["compress.compare"] = {time = true},
}
-- and the values that leave such an option at a default of seconds, or ask for seconds
local SECONDS = {["nil"] = true, ["false"] = true, ["1.5"] = true}
-- Functions whose first argument is a path: strings there become paths under /tmp.
local PATH_FIRST = {
  ["tensor.load"] = true, ["Tensor:save"] = true, ["Module:save"] = true, ["nn.load"] = true,
  ["nn.Trainer.load"] = true, ["Trainer:save"] = true, ["data.cifar10"] = true,
  ["data.fashion_mnist"] = true, ["data.mnist"] = true, ["data.image_folder"] = true,
  ["data.save_cifar"] = true, ["Canvas:save"] = true, ["viz.save"] = true, ["journal.save"] = true,
  ["onnx.load"] = true, ["onnx.info"] = true,
  ["Trainer:record"] = true, ["runs.load"] = true, ["runs.list"] = true, ["viz.compare"] = true,
}
-- Functions whose second argument is a path.
local PATH_SECOND = {["onnx.export"] = true}
-- Options that name a folder or file: strings there become paths under /tmp too.
local PATH_OPTIONS = {["nn.Trainer"] = {run = true}, ["search.grid"] = {dir = true}, ["search.random"] = {dir = true}}
-- Functions that read the real data set when given no folder: not called without one.
local NEEDS_DIR = {["data.cifar10"] = true, ["data.fashion_mnist"] = true}

-- ---------------------------------------------------------------- calling ----------------------

local function show(v)
  if type(v) == "string" then
    return #v > 40 and string.format("<string of %d bytes>", #v) or string.format("%q", v)
  end
  if type(v) == "table" then
    local parts = {}
    for k, x in pairs(v) do
      parts[#parts + 1] = (type(k) == "number" and "" or tostring(k) .. "=") .. show(x)
      if #parts > 6 then break end
    end
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  if tensor.is_tensor(v) then
    local ok, text = pcall(function() return v:dtype() .. " " .. table.concat(v:shape(), "x") end)
    return "tensor(" .. (ok and text or "?") .. ")"
  end
  local mt = getmetatable(v)
  if type(v) == "userdata" and type(mt) == "table" and type(rawget(mt, "__name")) == "string" then
    return "<" .. rawget(mt, "__name") .. ">"
  end
  return tostring(v)
end

local function describe(name, args, n)
  local parts = {}
  for i = 1, n do parts[i] = show(args[i]) end
  return name .. "(" .. table.concat(parts, ", ") .. ")"
end

-- What the calls print (summaries, reports, progress lines) is dropped.
local real_print, real_write = print, io.write
local function quiet_print() end
local function quiet_write() return io.stdout end

local calls, errors, slow = 0, 0, {}
local PROF = {} -- seconds per function (NNLAB_FUZZ_TRACE=profile)
local SLOW = 5 -- seconds: a call slower than this is listed (a note, not a failure: no timed assertions)

-- call(name, fn, args, n): fn(table.unpack(args, 1, n)) returns or raises a non-empty string.
local function call(name, fn, args, n)
  local label = describe(name, args, n)
  if TRACE and TRACE ~= "profile" then io.stderr:write(label, "\n") end
  local t0 = sys.clock()
  print, io.write = quiet_print, quiet_write
  local ok, err = pcall(fn, table.unpack(args, 1, n))
  print, io.write = real_print, real_write
  local dt = sys.clock() - t0
  PROF[name] = (PROF[name] or 0) + dt
  if TRACE == "profile" and dt > 0.2 then io.stderr:write(string.format("slow %.2f %s\n", dt, label)) end
  calls = calls + 1
  if not ok then
    errors = errors + 1
    if type(err) ~= "string" or err == "" then
      check(false, label .. " raised a " .. type(err) .. " rather than a message: " .. tostring(err))
    end
  end
  if dt > SLOW then slow[#slow + 1] = string.format("%s took %.1f s", label, dt) end
  collectgarbage("step", 0)
  return ok, err
end

local function copy_table(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- The option names a signature lists ("{lr=, momentum=0}" -> lr, momentum).
local function option_names(sig)
  local names, seen = {}, {}
  for key in sig:gmatch("([%a_][%w_]*)=") do
    if not seen[key] then seen[key] = true; names[#names + 1] = key end
  end
  return names
end

-- The value of bad value b at argument position pos of function name (strings and numbers,
-- which Lua takes as strings, at a path's place become paths under /tmp).
local function as_path(v)
  if type(v) ~= "string" and type(v) ~= "number" then return v end
  if v == "" then return "" end
  v = tostring(v)
  return TMP .. "_" .. (#v > 300 and v:sub(1, 300) or v)
end
local function value_for(name, pos, b)
  local v = b.make()
  if pos == 1 and PATH_FIRST[name] or pos == 2 and PATH_SECOND[name] then return as_path(v) end
  return v
end

-- Every argument list for function name: none, each bad value alone and twice, the valid call,
-- and the valid call with each argument and each option replaced by each bad value.
local function arg_lists(name, sig)
  local lists = {}
  local function add(args, n) lists[#lists + 1] = {args = args, n = n} end
  add({}, 0)
  for _, b in ipairs(BAD) do
    add({value_for(name, 1, b)}, 1)
    add({value_for(name, 1, b), b.make()}, 2)
  end
  local base = BASE[name]
  if base then
    add(base.make())
    local _, n = base.make()
    local no_huge = NO_HUGE[name] or {}
    for pos = 1, n + 1 do
      if pos ~= base.opt then
        for _, b in ipairs(BAD) do
          local args = base.make()
          args[pos] = value_for(name, pos, b)
          add(args, math.max(n, pos))
        end
      end
    end
    if base.opt then
      local options = option_names(sig)
      options[#options + 1] = "no_such_option"
      for _, key in ipairs(options) do
        for _, b in ipairs(BAD) do
          if not (no_huge[key] and (b.huge or SECONDS[b.label])) then
            local args = base.make()
            args[base.opt] = copy_table(type(args[base.opt]) == "table" and args[base.opt] or {})
            local v = b.make()
            -- at a path's place a string becomes a path under /tmp, and nil too (the default
            -- would write into the current folder)
            if (PATH_OPTIONS[name] or {})[key] then v = v == nil and TMP .. "_default" or as_path(v) end
            args[base.opt][key] = v
            add(args, n)
          end
        end
      end
      -- the keys of options that are themselves tables ({normalize = {mean=, std=}})
      local _, n0 = base.make()
      local opts0 = select(1, base.make())[base.opt]
      for key, sub in pairs(type(opts0) == "table" and opts0 or {}) do
        if type(sub) == "table" and next(sub) ~= nil and type(next(sub)) == "string" then
          for subkey in pairs(sub) do
            for _, b in ipairs(BAD) do
              local args = base.make()
              args[base.opt][key][subkey] = b.make()
              add(args, n0)
            end
          end
        end
      end
      -- the options as a bad value (not where the default options take seconds)
      for _, b in ipairs(NO_HUGE[name] and {} or BAD) do
        local args = base.make()
        args[base.opt] = b.make()
        add(args, n)
      end
    end
  end
  if NEEDS_DIR[name] then
    local kept = {}
    for _, l in ipairs(lists) do
      if l.n > 0 and l.args[1] ~= nil then kept[#kept + 1] = l end
    end
    lists = kept
  end
  return lists
end

-- The rows with help: {name, fn, group, method, sig}, in registration order.
local function public_rows()
  local rows = {}
  for _, gname in ipairs(H.order) do
    local g = H.groups[gname]
    for _, row in ipairs(g.rows) do
      rows[#rows + 1] = {name = row.name, short = row.short, fn = row.fn, sig = row.sig,
                         group = gname, method = g.kind == "type"}
    end
  end
  return rows
end

-- The method named short of obj (its metatable's methods, or indexing it).
local function method_of(obj, short)
  local ok, fn = pcall(function() return obj[short] end)
  return ok and type(fn) == "function" and fn or nil
end

-- The objects a method's self can be, wrong ones included.
local WRONG_SELVES = {
  function() return nil end, function() return 1 end, function() return "abc" end,
  function() return {} end, function() return tensor.zeros(2) end, function() return nn.ReLU() end,
  function() return io.stdout end, function() return nn.MSELoss() end,
  function() return optim.SGD(nn.Linear(2, 2), {lr = 0.1}) end,
}

-- ---------------------------------------------------------------- the tests --------------------

local threads = sys.threads()

test("every public function with every bad argument list", function()
  local seen = 0
  for _, row in ipairs(public_rows()) do
    if not SKIP[row.name] and (not ONLY or row.name:find(ONLY)) then
      local lists = arg_lists(row.name, row.sig)
      if row.method then
        local makers = SELVES[row.group]
        if makers then
          for k, make in ipairs(makers) do
            for i, l in ipairs(lists) do
              -- every list for the first object; the valid call and single values for the others
              if k == 1 or ALL or i <= 1 + #BAD * 2 or i == 2 + #BAD * 2 then
                local obj = make()
                local fn = row.fn or method_of(obj, row.short)
                if fn or check(false, row.name .. ": the object has no such method") then
                  local args = {obj}
                  for j = 1, l.n do args[j + 1] = l.args[j] end
                  call(row.name, fn, args, l.n + 1)
                end
              end
            end
          end
          -- wrong objects as self
          local fn = row.fn or method_of(makers[1](), row.short)
          if fn then
            for _, wrong in ipairs(WRONG_SELVES) do
              call(row.name, fn, {wrong()}, 1)
              call(row.name, fn, {wrong(), {}, 1}, 3) -- (a number first would be a path)
            end
          end
          seen = seen + 1
        end
      elseif type(row.fn) == "function" or type(row.fn) == "table" then
        for _, l in ipairs(lists) do call(row.name, row.fn, l.args, l.n) end
        seen = seen + 1
      end
      sys.threads(threads)
    end
  end
  check(seen >= 200, "called the public functions: " .. seen)
  check(calls > 10000 and errors > 0, string.format("made %d calls, %d raised", calls, errors))
end)

test("metamethods with bad operands", function()
  local t = tensor.randn(2, 3)
  for _, b in ipairs(BAD) do
    local v = b.make()
    for _, op in ipairs{function() return t + v end, function() return v - t end,
                        function() return t * v end, function() return v / t end,
                        function() return t ^ v end, function() return -v end,
                        function() return t == v end, function() return #v end,
                        function() return t[v] end, function() t[v] = 1 end,
                        function() t[1] = v end, function() t[-2] = v end,
                        function() return t:t()[v] end, function() t:t()[2] = v end,
                        function() return tensor.from(1)[v] end, function() tensor.zeros(0, 2)[v] = v end,
                        function() return tensor.cat({t, v}) end, function() return tensor.cat({v}) end,
                        function() return tensor.stack({v, v}) end,
                        function() return tostring(v) end} do
      call("operator " .. b.label, op, {}, 0)
    end
    local net = conv_net()
    call("net[v]", function() return net[v] end, {}, 0)
    call("net[v] = m", function() net[v] = nn.ReLU() end, {}, 0)
    call("net[1] = v", function() net[1] = v end, {}, 0)
    call("net.x = v", function() net.x = v end, {}, 0)
    call("net(v)", function() return net(v) end, {}, 0)
    call("loss(v)", function() return nn.MSELoss()(v, v) end, {}, 0)
    local lin = nn.Linear(2, 2)
    call("lin.weight = v", function() lin.weight = v end, {}, 0)
    call("lin.weight:copy(v)", function() lin.weight:copy(v) end, {}, 0)
  end
end)


-- ---------------------------------------------------------------- objects in odd states -------

-- The rows of a type's methods.
local function methods_of(group)
  local rows = {}
  for _, row in ipairs(public_rows()) do
    if row.group == group and not SKIP[row.name] then rows[#rows + 1] = row end
  end
  return rows
end

-- Calls every method of group on obj (made again by make() for each call when given): with no
-- arguments and with the valid ones.
local function every_method(group, label, make)
  for _, row in ipairs(methods_of(group)) do
    local obj = make()
    local fn = row.fn or method_of(obj, row.short) or method_of(SELVES[group][1](), row.short)
    if fn then
      call(label .. " " .. row.name, fn, {obj}, 1)
      local base = BASE[row.name]
      if base then
        local args, n = base.make()
        table.insert(args, 1, make())
        call(label .. " " .. row.name, fn, args, n + 1)
      end
    end
  end
end

test("objects whose memory was given back", function()
  for group, makers in pairs(SELVES) do
    for _, how in ipairs{"__close", "__gc"} do
      local make = function()
        local obj = makers[1]()
        local mt = getmetatable(obj)
        local release = type(mt) == "table" and rawget(mt, how)
        if release then
          release(obj)
          call(group .. " " .. how .. " twice", release, {obj}, 1)
        end
        return obj
      end
      every_method(group, group .. " after " .. how, make)
      call(group .. " tostring after " .. how, tostring, {make()}, 1)
    end
  end
  -- a loader outlives its data set, a batch outlives its loader
  local ds = imgs()
  local ld = data.loader(ds, {batch = 3})
  local x, y = ld:next()
  getmetatable(ds).__close(ds)
  every_method("Loader", "loader of a closed data set", function() return ld end)
  ld:reset()
  every_method("Tensor", "batch after reset", function() return x end)
  getmetatable(ld).__close(ld)
  every_method("Tensor", "batch of a closed loader", function() return x end)
  every_method("Tensor", "labels of a closed loader", function() return y end)
  -- a TensorDataset whose tensors were closed
  local a, b = tensor.randn(4, 2), tensor.ones(4, "i32")
  local tds = nn.TensorDataset(a, b)
  getmetatable(a).__close(a)
  getmetatable(b).__close(b)
  every_method("TensorDataset", "TensorDataset of closed tensors", function() return tds end)
  -- a parameter closed under its layer
  local lin = nn.Linear(2, 2)
  local w = lin.weight
  getmetatable(w).__close(w)
  every_method("Module", "Linear with its weight's box closed", function() return lin end)
  call("forward", lin.forward, {lin, tensor.ones(1, 2)}, 2)
end)

test("a network after prune.channels and lowrank.factorize", function()
  for _, change in ipairs{
    function(net) prune.channels(net, {amount = 0.5}) end,
    function(net) lowrank.factorize(net, {rank = 1}) end,
    function(net) prune.magnitude(net, {amount = 0.9}) end,
    function(net) net:remove(1) end,
  } do
    local net = conv_net()
    local first, weight = net[1], net[1].weight
    local opt = optim.Adam(net)
    local t = nn.Trainer{net = net, data = data.from_tensors(tensor.rand(8, 3, 4, 4), {1, 2, 1, 2, 1, 2, 1, 2}),
                         optim = opt, batch = 4, verbose = false}
    local snap = net:snapshot()
    net:forward(tensor.rand(2, 3, 4, 4))
    call("change the net", change, {net}, 1)
    every_method("Module", "changed net", function() return net end)
    every_method("Module", "layer taken out", function() return first end)
    every_method("Tensor", "weight of a layer taken out", function() return weight end)
    every_method("Optimizer", "optimizer of the old layers", function() return opt end)
    every_method("Trainer", "trainer of the changed net", function() return t end)
    call("forward", net.forward, {net, tensor.rand(2, 3, 4, 4)}, 2)
    call("backward", net.backward, {net, tensor.ones(2, 2)}, 2)
    call("restore", net.restore, {net, snap}, 2)
    call("step", opt.step, {opt}, 1)
    call("evaluate", nn.evaluate, {net, ds8()}, 2)
    call("quant.int8", quant.int8, {net, {calibrate = tensor.rand(4, 3, 4, 4)}}, 2)
    call("quant.int4", quant.int4, {net}, 1)
  end
end)

test("a trainer whose fields were replaced", function()
  local replacements = {
    net = {nn.Linear(3, 5), nn.Sequential(), conv_net(), nn.ReLU()},
    optim = {optim.SGD(nn.Linear(2, 2), {lr = 0.1}), optim.Adam(nn.Linear(5, 5))},
    data = {ds8(), imgs(), nn.TensorDataset(tensor.zeros(0, 2), tensor.zeros(0, "i32")),
            data.loader(imgs(), {batch = 3})},
    loss = {nn.MSELoss(), nn.DistillLoss{teacher = nn.Linear(2, 2)}},
    batch = {}, seed = {}, pos = {}, steps = {}, epochs = {}, history = {}, sums = {}, hooks = {},
    base_lr = {}, shuffle = {}, schedule = {optim.schedule.cosine{total = 4}},
  }
  for field, values in pairs(replacements) do
    for _, b in ipairs(BAD) do
      if not (b.huge and (field == "epochs" or field == "steps" or field == "pos")) then
        values[#values + 1] = b.make()
      end
    end
    for _, v in ipairs(values) do
      local make = function()
        local t = trainer()
        t[field] = v
        return t
      end
      for _, name in ipairs{"step", "epoch", "save", "resume"} do
        local t = make()
        call("Trainer with " .. field .. " = " .. show(v) .. ": " .. name, t[name],
             name == "save" and {t, TMP .. ".tr"} or {t}, name == "save" and 2 or 1)
      end
      local t = make()
      call("fit with " .. field .. " = " .. show(v), t.fit, {t, {epochs = 1, eval = ds8()}}, 2)
      call("tostring", tostring, {make()}, 1)
      call("viz.dashboard", viz.dashboard, {make(), {width = 64, height = 48}}, 2)
      call("viz.curves", viz.curves, {make(), {width = 64, height = 48}}, 2)
    end
  end
end)

test("canvases and views after viz.close", function()
  local c = canvas()
  local t = trainer()
  viz.dashboard(t, {width = 64, height = 48})
  viz.close()
  every_method("Canvas", "canvas after close", function() return c end)
  call("viz.save", viz.save, {TMP .. ".png"}, 1)
  call("viz.save", viz.save, {TMP .. ".png", "dashboard"}, 2)
  call("viz.press", viz.press, {"tab"}, 1)
  call("viz.press", viz.press, {"q"}, 1)
  call("viz.status", viz.status, {}, 0)
  call("viz.screenshot", viz.screenshot, {}, 0)
  call("viz.close", viz.close, {}, 0)
  call("step", t.step, {t}, 1)
  getmetatable(c).__close(c)
  call("viz.save of a closed canvas", viz.save, {TMP .. ".png", c}, 2)
  call("viz.save", viz.save, {TMP .. ".png"}, 1)
end)

-- Every layer, its input shape (batch first, as the layer wants it) and how to make it.
local LAYERS = {
  {"Linear", {3}, function() return nn.Linear(3, 2) end},
  {"Conv2d", {3, 5, 5}, function() return nn.Conv2d(3, 4, 3, {padding = 1}) end},
  {"Conv2d stride 2", {3, 5, 5}, function() return nn.Conv2d(3, 4, 3, {stride = 2}) end},
  {"MaxPool2d", {3, 4, 4}, function() return nn.MaxPool2d(2) end},
  {"AvgPool2d", {3, 4, 4}, function() return nn.AvgPool2d(3, {stride = 1, padding = 1}) end},
  {"GlobalAvgPool", {3, 4, 4}, function() return nn.GlobalAvgPool() end},
  {"Flatten", {3, 4, 4}, function() return nn.Flatten() end},
  {"Identity", {3}, function() return nn.Identity() end},
  {"ReLU", {3}, function() return nn.ReLU() end},
  {"LeakyReLU", {3}, function() return nn.LeakyReLU(0.2) end},
  {"GELU", {3}, function() return nn.GELU() end},
  {"Sigmoid", {3}, function() return nn.Sigmoid() end},
  {"Tanh", {3}, function() return nn.Tanh() end},
  {"Softmax", {3}, function() return nn.Softmax() end},
  {"BatchNorm1d", {3}, function() return nn.BatchNorm1d(3) end},
  {"BatchNorm2d", {3, 4, 4}, function() return nn.BatchNorm2d(3) end},
  {"Dropout", {3}, function() return nn.Dropout(0.5) end},
  {"Quantize", {3}, function() return nn.Quantize() end},
  {"Dequantize", {3}, function() return nn.Dequantize() end},
  {"QConv2d", {3, 5, 5}, function() return nn.QConv2d(3, 4, 3, {padding = 1, relu = true}) end},
  {"QConv2d pool", {3, 6, 6}, function() return nn.QConv2d(3, 4, 3, {padding = 1, pool = 2}) end},
  {"QLinear", {8}, function() return nn.QLinear(8, 4) end},
  {"QLinear f32", {8}, function() return nn.QLinear(8, 4, {f32 = true}) end},
  {"QMaxPool2d", {3, 4, 4}, function() return nn.QMaxPool2d(2) end},
  {"Int4Linear", {64}, function() return nn.Int4Linear(64, 4) end},
  {"Int4Conv2d", {3, 5, 5}, function() return nn.Int4Conv2d(3, 4, 3, {padding = 1, group = 27}) end},
  {"FakeQuant", {3}, function() return nn.FakeQuant() end},
  {"QATLinear", {8}, function() return nn.QATLinear(8, 4) end},
  {"QATConv2d", {3, 5, 5}, function() return nn.QATConv2d(3, 4, 3, {padding = 1}) end},
  {"Residual", {2}, function() return nn.Residual(nn.Linear(2, 2), nn.ReLU()) end},
  {"Sequential", {3, 4, 4}, conv_net},
  {"empty Sequential", {3}, function() return nn.Sequential() end},
  {"int8 net", {2}, function()
    return quant.int8(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2)), {calibrate = tensor.randn(8, 2)})
  end},
  {"int8 conv net", {3, 4, 4}, function()
    return quant.int8(conv_net(), {calibrate = tensor.rand(4, 3, 4, 4)})
  end},
}

-- Shapes with a 0 in each place, and a few wrong ones, for a layer that takes {batch, shape...}.
local function odd_shapes(shape)
  local shapes = {{0, table.unpack(shape)}}
  for i = 1, #shape do
    local s = {2, table.unpack(shape)}
    s[i + 1] = 0
    shapes[#shapes + 1] = s
  end
  shapes[#shapes + 1] = {2, table.unpack(shape)}
  shapes[#shapes + 1] = {0}
  shapes[#shapes + 1] = {2}
  shapes[#shapes + 1] = {2, 1}
  shapes[#shapes + 1] = {2, 3, 1, 1}
  shapes[#shapes + 1] = {1, 3, 2, 2, 2}
  return shapes
end

test("every layer with zero-size and wrong-shape inputs", function()
  for _, layer in ipairs(LAYERS) do
    local name, shape, make = layer[1], layer[2], layer[3]
    for _, s in ipairs(odd_shapes(shape)) do
      for _, mode in ipairs{"train", "eval"} do
        for _, dtype in ipairs{"f32", "u8", "i32"} do
          local m = make()
          m[mode](m)
          local label = string.format("%s:%s forward of %s %s", name, mode, dtype, table.concat(s, "x"))
          local x = tensor.ones(s, dtype)
          call(label, m.forward, {m, x}, 2)
          local ok, y = pcall(m.forward, m, x)
          if ok and tensor.is_tensor(y) then
            call(label .. ", backward", m.backward, {m, tensor.ones(y:shape())}, 2)
            call(label .. ", backward of a wrong shape", m.backward, {m, tensor.ones(3, 1)}, 2)
            call(label .. ", backward twice", m.backward, {m, tensor.ones(y:shape())}, 2)
          end
          call(label .. ", infer", m.infer, {m, s}, 2)
          call(label .. ", summary", m.summary, {m, s}, 2)
        end
      end
    end
    local m = make()
    call(name .. " backward before forward", m.backward, {m, tensor.ones(2, 2)}, 2)
  end
  for _, loss in ipairs{nn.CrossEntropyLoss(), nn.MSELoss(), nn.CrossEntropyLoss({label_smoothing = 0.5}),
                        nn.DistillLoss{teacher = nn.Linear(3, 3)}} do
    for _, args in ipairs{{tensor.zeros(0, 3), tensor.zeros(0, "i32"), tensor.zeros(0, 3)},
                          {tensor.zeros(0, 3), {}, tensor.zeros(0, 3)},
                          {tensor.zeros(2, 0), tensor.from({1, 1}, "i32"), tensor.zeros(2, 0)},
                          {tensor.zeros(0, 3), tensor.zeros(0, 3), tensor.zeros(0, 3)},
                          {tensor.zeros(2, 3), tensor.from({0, 4}, "i32"), tensor.zeros(2, 3)},
                          {tensor.zeros(2, 3), tensor.from({1, 2}, "u8"), tensor.zeros(2, 3)},
                          {tensor.zeros(2, 3, "u8"), tensor.from({1, 2}, "i32"), tensor.zeros(2, 3)}} do
      call("loss forward", loss.forward, {loss, table.unpack(args)}, 4)
      call("loss backward", loss.backward, {loss}, 1)
    end
  end
  -- empty data sets everywhere data goes
  local empty = nn.TensorDataset(tensor.zeros(0, 2), tensor.zeros(0, "i32"))
  local sets = {empty}
  for _, make in ipairs{function() return data.from_tensors(tensor.zeros(0, 3, 4, 4), {}, {classes = {"a", "b"}}) end,
                        function() return imgs():subset(1, 0) end,
                        function() return imgs():subset(9) end,
                        function() return imgs():split(0) end,
                        function() return select(2, imgs():split(1)) end} do
    local ok, ds = pcall(make)
    if ok then sets[#sets + 1] = ds end
  end
  for _, ds in ipairs(sets) do
    call("Trainer on an empty set", function()
      return nn.Trainer{net = nn.Linear(2, 2), data = ds, verbose = false}:step()
    end, {}, 0)
    call("evaluate on an empty set", nn.evaluate, {nn.Linear(2, 2), ds}, 2)
    call("loader of an empty set", function() return data.loader(ds):next() end, {}, 0)
    call("sensitivity on an empty set", prune.sensitivity, {nn.Sequential(nn.Linear(2, 2)), ds}, 2)
    call("int8 on an empty set", quant.int8, {nn.Sequential(nn.Linear(2, 2)), {calibrate = ds}}, 2)
    call("samples of an empty set", viz.samples, {nn.Linear(2, 2), ds, 4}, 3)
  end
end)

test("every layer through every transformation", function()
  local path = TMP .. "_layer"
  local transforms = {
    {"prune.magnitude", function(m) return prune.magnitude(m, {amount = 0.5}) end},
    {"prune.magnitude global", function(m) return prune.magnitude(m, {amount = 0.9, scope = "global"}) end},
    {"prune.channels", function(m) return prune.channels(m, {amount = 0.5}) end},
    {"prune.masks_from_zeros", function(m) prune.masks_from_zeros(m); return m end},
    {"prune.remove", function(m) return prune.remove(m) end},
    {"prune.report", function(m) prune.report(m); return m end},
    {"lowrank.factorize", function(m) return lowrank.factorize(m, {rank = 1}) end},
    {"lowrank.factorize energy", function(m) return lowrank.factorize(m, {energy = 0.5}) end},
    {"lowrank.spectrum", function(m) lowrank.spectrum(m); return m end},
    {"quant.qat", function(m) return quant.qat(m) end},
    {"quant.convert", function(m) return quant.convert(m) end},
    {"quant.int4", function(m) return quant.int4(m) end},
    {"quant.weights", function(m) quant.weights(m); return m end},
    {"quant.levels", function(m) quant.levels(m); return m end},
    {"quant.report", function(m) quant.report(m); return m end},
    {"save and load", function(m) m:save(path); return nn.load(path) end},
    {"snapshot and restore", function(m) return m:restore(m:snapshot()) end},
    {"restore of another net", function(m) return m:restore(nn.Linear(2, 2):snapshot()) end},
    {"to cpu", function(m) return m:to("cpu") end},
    {"viz.filters", function(m) viz.filters(m, {width = 32, height = 24}); return m end},
    {"viz.histogram", function(m) viz.histogram(m, {width = 32, height = 24}); return m end},
    {"parameters", function(m) m:parameters(); m:buffers(); return m end},
  }
  for _, layer in ipairs(LAYERS) do
    local name, shape, make = layer[1], layer[2], layer[3]
    for _, tr in ipairs(transforms) do
      for _, wrap in ipairs{false, true} do
        local m = make()
        if wrap then m = nn.Sequential(m) end
        local label = string.format("%s of %s%s", tr[1], wrap and "Sequential of " or "", name)
        local ok, out = call(label, tr[2], {m}, 1)
        if ok and nn.is_module(out) then
          for _, batch in ipairs{0, 2} do
            local x = tensor.rand({batch, table.unpack(shape)})
            call(label .. ", forward", out.forward, {out, x}, 2)
            local fine, y = pcall(out.forward, out, x)
            if fine and tensor.is_tensor(y) then
              call(label .. ", backward", out.backward, {out, tensor.ones(y:shape())}, 2)
            end
          end
        end
      end
    end
  end
end)


-- ---------------------------------------------------------------- damaged files ----------------

local function read_bytes(path)
  local f = assert(io.open(path, "rb"))
  local bytes = f:read("a")
  f:close()
  return bytes
end

local function write_bytes(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

-- The damaged copies of bytes: cut short at many lengths, single bytes overwritten, and each
-- number in the header (its first hlen bytes) replaced by out-of-range ones.
local function damaged(bytes, hlen)
  local out, n = {}, #bytes
  for _, len in ipairs{0, 1, 5, 7, 8, 9, 10, 11, 16, hlen - 1, hlen, hlen + 1, n - 1} do
    if len >= 0 and len < n then out[#out + 1] = bytes:sub(1, len) end
  end
  for k = 1, 15 do out[#out + 1] = bytes:sub(1, n * k // 16) end
  for pos = 1, math.min(n, hlen + 16) do
    if pos <= 12 or pos % 7 == 0 or pos > hlen - 4 then
      for _, byte in ipairs{0, 255, 0x39} do
        out[#out + 1] = bytes:sub(1, pos - 1) .. string.char(byte) .. bytes:sub(pos + 1)
      end
    end
  end
  local header = bytes:sub(1, hlen)
  local at = 1
  while true do
    local s, e = header:find("%d+", at)
    if not s then break end
    for _, v in ipairs{"99999999999999999999", "4294967296", "2147483648", "0", "-1", "1e308", "nan"} do
      out[#out + 1] = bytes:sub(1, s - 1) .. v .. bytes:sub(e + 1)
    end
    at = e + 1
  end
  for _, pair in ipairs{{'"F32"', '"F64"'}, {'"F32"', '"XX"'}, {'"F32"', '"U8"'}, {"<f4", "<f8"},
                        {"<f4", "|b1"}, {"<f4", ">f4"}, {"False", "True"}, {"'shape'", "'shapf'"},
                        {'"shape"', '"shapf"'}, {'"data_offsets"', '"data_offsetz"'}, {"{", "["}} do
    local s, e = header:find(pair[1], 1, true)
    if s then out[#out + 1] = bytes:sub(1, s - 1) .. pair[2] .. bytes:sub(e + 1) end
  end
  return out
end

test("damaged files", function()
  local files = {
    {"npy", function(p) tensor.randn(3, 4):save(p) end, tensor.load},
    {"npy i8", function(p) tensor.from({1, -2, 3}, "i8"):save(p) end, tensor.load},
    {"net", function(p) conv_net():save(p) end, nn.load},
    {"pruned net", function(p)
      local net = conv_net()
      prune.magnitude(net, {amount = 0.5})
      net:save(p)
    end, nn.load},
    {"int8 net", function(p) quant.int8(conv_net(), {calibrate = tensor.rand(4, 3, 4, 4)}):save(p) end, nn.load},
    {"trainer", function(p)
      local t = trainer()
      t:step()
      t:save(p)
    end, function(p) return nn.Trainer.load(p, {data = ds8(), verbose = false}) end},
  }
  local damaged_path = TMP .. "_damaged"
  for _, file in ipairs(files) do
    local path = TMP .. "_good"
    file[2](path)
    local bytes = read_bytes(path)
    local hlen
    if bytes:sub(1, 6) == "\x93NUMPY" then
      hlen = 10 + string.unpack("<I2", bytes, 9)
    else
      hlen = 8 + string.unpack("<I8", bytes)
    end
    for _, copy in ipairs(damaged(bytes, math.min(hlen, #bytes))) do
      write_bytes(damaged_path, copy)
      call(file[1] .. " damaged", file[3], {damaged_path}, 1)
    end
  end
end)

test("trainer checkpoints whose metadata is code", function()
  local path = TMP .. "_trainer"
  local t = trainer()
  t:save(path)
  local bytes = read_bytes(path)
  local hlen = string.unpack("<I8", bytes)
  local header, body = bytes:sub(9, 8 + hlen), bytes:sub(9 + hlen)
  local _, e = header:find('"nnlab.trainer":"', 1, true)
  local close = header:find('[^\\]"', e + 1)
  for _, code in ipairs{'(function() while true do end end)()', '(\\"x\\"):rep(2^40)',
                        '{version = 1} while true do end', 'setmetatable({}, {})', ''} do
    local h = header:sub(1, e) .. code .. header:sub(close + 1)
    write_bytes(path, string.pack("<I8", #h) .. h .. body)
    check_error(function() return nn.Trainer.load(path, {data = ds8(), verbose = false}) end,
                "corrupt trainer metadata", "metadata " .. code)
  end
end)

-- ---------------------------------------------------------------- what this file found --------

test("the crashes this file found stay fixed", function()
  -- a reduction over everything with keepdim read an all-1 tensor as a scalar (null pointer)
  local t = tensor.from{{1, 2}, {3, 4}}
  check(t:sum(nil, true) == 10 and t:max(nil, true) == 4 and t:argmax(nil, true) == 4,
        "a reduction over everything is a number whatever keepdim says")
  -- reshape multiplied the sizes without an overflow check
  check_error(function() return t:reshape(2 ^ 53, 2 ^ 53) end, "more elements than a tensor can hold")
  check_error(function() return t:reshape(2 ^ 40, -1, 2 ^ 40) end, "more elements than a tensor can hold")
  -- int8 layers split an empty batch into tiles of 0 outputs and divided by it
  for _, m in ipairs{nn.QLinear(8, 4), nn.QConv2d(3, 4, 3, {padding = 1}),
                     nn.QConv2d(3, 4, 3, {padding = 1, pool = 2})} do
    local x = tensor.zeros(m:type() == "QLinear" and {0, 8} or {0, 6, 6, 3}, "u8") -- (NHWC)
    local ok, y = pcall(m.forward, m, x)
    check(ok and y:numel() == 0 and y:shape()[1] == 0, m:type() .. " of an empty batch: " .. tostring(y))
  end
  -- a module box emptied by a __gc called by hand was handed out again for a later module
  for _ = 1, 50 do
    local m = nn.Linear(2, 2)
    getmetatable(m).__gc(m)
    check_error(function() return m:forward(tensor.ones(1, 2)) end, "module was released")
    local q = nn.Sequential(nn.Linear(2, 2))
    check(pcall(function() return q[1]:forward(tensor.ones(1, 2)) end), "a new module works")
  end
end)

test("every call returned or raised a message", function()
  check(calls > 0, "the calls ran")
  if #slow > 0 then
    print("note: calls slower than " .. SLOW .. " s (a hang would stop the suite at run.sh's timeout):\n  " ..
          table.concat(slow, "\n  "))
  end
end)

if TRACE == "profile" then -- the functions that took longest, in all
  local rows = {}
  for name, seconds in pairs(PROF) do rows[#rows + 1] = {name, seconds} end
  table.sort(rows, function(a, b) return a[2] > b[2] end)
  for i = 1, math.min(40, #rows) do io.stderr:write(string.format("%8.3f %s\n", rows[i][2], rows[i][1])) end
end
os.execute("rm -rf '" .. TMP .. "'*")
sys.threads(threads)
