-- make_corpus.lua: writes the seed corpus of each fuzz target into tests/fuzz/corpus/<target>/,
-- every file made by nnlab itself (a few kilobytes in all). Run from the repository root:
--   build/nnlab tests/fuzz/make_corpus.lua
local root = "tests/fuzz/corpus/"

local function write(target, name, bytes)
  os.execute("mkdir -p " .. root .. target)
  local f = assert(io.open(root .. target .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local tmp = os.tmpname()
local function saved(fn) -- the bytes fn(path) writes
  fn(tmp)
  local s = read(tmp)
  os.remove(tmp)
  return s
end

-- A metadata value of a safetensors file, unescaped from its JSON header.
local function meta(bytes, key)
  local n = string.unpack("<I8", bytes)
  local header = bytes:sub(9, 8 + n)
  local _, e = header:find('"' .. key .. '":"', 1, true)
  local v, i = {}, e + 1
  while header:sub(i, i) ~= '"' do
    if header:sub(i, i) == "\\" then i = i + 1 end
    v[#v + 1] = header:sub(i, i)
    i = i + 1
  end
  return table.concat(v)
end

-- .npy: each dtype nnlab writes, a scalar, an empty tensor.
tensor.seed(1)
write("npy", "f32", saved(function(p) tensor.randn(2, 3):save(p) end))
write("npy", "i8", saved(function(p) tensor.arange(6):to("i8"):save(p) end))
write("npy", "i32", saved(function(p) tensor.arange(4):reshape(2, 2):to("i32"):save(p) end))
write("npy", "u8", saved(function(p) tensor.ones(2, 1, 2):to("u8"):save(p) end))
write("npy", "empty", saved(function(p) tensor.zeros(0, 3):save(p) end))

-- safetensors: a network, a trainer (network + Adam state + metadata), a quantized network.
local function small_net()
  return nn.Sequential(nn.Conv2d(3, 2, 3, {padding = 1}), nn.BatchNorm2d(2), nn.ReLU(),
                       nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))
end
local net = small_net()
local net_bytes = saved(function(p) net:save(p) end)
write("safetensors", "net", net_bytes)
local ds = nn.TensorDataset(tensor.randn(8, 3, 4, 4), tensor.ones(8))
local t = nn.Trainer{net = small_net(), data = ds, batch = 4, verbose = false,
                     schedule = optim.schedule.warmup{steps = 2, after = optim.schedule.cosine{total = 10}}}
t:step()
local trainer_bytes = saved(function(p) t:save(p) end)
write("safetensors", "trainer", trainer_bytes)
local sgd_net = nn.Linear(2, 2)
local sgd = nn.Trainer{net = sgd_net, data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)),
                       optim = optim.SGD(sgd_net, {lr = 0.1, momentum = 0.9}), verbose = false}
write("safetensors", "linear", saved(function(p) nn.Linear(2, 2):save(p) end))
write("safetensors", "int8", saved(function(p)
  quant.int8(nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()), {calibrate = tensor.rand(2, 3, 4, 4)}):save(p)
end))

-- architecture JSON: as checkpoints hold it.
write("arch", "net.json", meta(net_bytes, "nnlab.arch"))
write("arch", "linear.json", meta(saved(function(p) nn.Linear(4, 2, {bias = false}):save(p) end), "nnlab.arch"))
write("arch", "residual.json", meta(saved(function(p)
  nn.Sequential(nn.Residual(nn.Conv2d(3, 3, 3, {padding = 1}), nn.ReLU()), nn.AvgPool2d(2),
                nn.Dropout(0.5), nn.Flatten(), nn.Linear(48, 2)):save(p)
end), "nnlab.arch"))

-- trainer metadata (the JSON under "nnlab.trainer"), for the 2-in 2-out trainer of fuzz_trainer.c
local lt = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)),
                      batch = 4, verbose = false, schedule = optim.schedule.step{every = 2}}
lt:step()
write("trainer", "fresh", meta(saved(function(p) lt:save(p) end), "nnlab.trainer"))
lt:fit{epochs = 2}
lt.schedule = optim.schedule.onecycle{max_lr = 0.1, total = 10}
write("trainer", "two_epochs", meta(saved(function(p) lt:save(p) end), "nnlab.trainer"))
sgd:step()
write("trainer", "sgd_custom", meta(saved(function(p) sgd.schedule = function() return 0.1 end; sgd:save(p) end),
                                    "nnlab.trainer"))

-- CIFAR-10: the first byte picks the file (0: the class list, 1 and 2: training batches,
-- 3: the test batch); records are a label byte and 3072 pixels.
local record = "\3" .. string.rep("\128", 3072)
write("cifar", "meta", "\0airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n")
write("cifar", "batch", "\1" .. record .. record)
write("cifar", "test", "\3" .. record)

-- IDX: the first byte picks the file (0, 2: images; 1, 3: labels; +4: gzipped).
local images = string.pack(">I4I4I4I4", 0x803, 2, 2, 2) .. "\0\1\2\3\4\5\6\7"
local labels = string.pack(">I4I4", 0x801, 2) .. "\1\9"
write("idx", "images", "\0" .. images)
write("idx", "labels", "\1" .. labels)
write("idx", "images_gz", "\6" .. images)
write("idx", "labels_gz", "\7" .. labels)

-- images: a PNG the canvas writes, the test JPEG, a BMP and a PPM.
write("image", "curves.png", saved(function(p)
  viz.save(p, viz.curves({loss = {2, 1.5, 1}}, {width = 48, height = 32}))
end))
write("image", "cat.jpg", read("tests/data/images/cat.jpg"))
local bmp_pixels = "\0\0\255\0\255\0\0\0" .. "\255\0\0\255\255\255\0\0" -- 2x2, 24-bit, rows padded to 4
write("image", "tiny.bmp", "BM" .. string.pack("<I4I2I2I4", 54 + #bmp_pixels, 0, 0, 54)
      .. string.pack("<I4i4i4I2I2I4I4i4i4I4I4", 40, 2, 2, 1, 24, 0, #bmp_pixels, 2835, 2835, 0, 0)
      .. bmp_pixels)
write("image", "tiny.ppm", "P6\n# nnlab\n2 2\n255\n" .. string.rep("\10\20\30", 4))
print("corpus written to " .. root)
