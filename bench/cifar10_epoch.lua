-- cifar10_epoch.lua: the seed CNN on real CIFAR-10, whole epochs including data loading (batch 64,
-- Adam 1e-3, inputs normalised with mean 0.5 / std 0.5, 2 threads), against PyTorch's
-- bench/peers/torch_seed_cnn.py on the same files, in one run: training and evaluation
-- images/s, peak resident memory, top-1 after the epochs. The two sides take turns ROUNDS times
-- (a fresh network each time, the same seed) and each side's best round counts, so a slow spell of
-- the machine falls on both rather than on one.
--   build/nnlab bench/cifar10_epoch.lua [PEER_PY PEERS [EPOCHS [ROUNDS]]]      (run by make bench)

local peer_py, peers = arg[1] or "/usr/bin/python3", arg[2] or "bench/peers"
local epochs, rounds = tonumber(arg[3]) or 1, tonumber(arg[4]) or 3
local ok, train, test = pcall(data.cifar10)
if not ok then
  print("skipped: " .. tostring(train))
  return
end
local dir = (os.getenv("NNLAB_DATA") and os.getenv("NNLAB_DATA") .. "/cifar-10-batches-bin")
            or "data/cifar-10-batches-bin"
local norm = {mean = 0.5, std = 0.5}
local test_batches = data.loader(test, {batch = 256, shuffle = false, normalize = norm})

-- ---- nnlab: one round
local function ours()
  tensor.seed(0)
  local net = nn.Sequential{
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(4096, 10),
  }
  local t = nn.Trainer{net = net, loss = nn.CrossEntropyLoss(), optim = optim.Adam(net, {lr = 1e-3}),
                       data = data.loader(train, {batch = 64, shuffle = true, seed = 1, normalize = norm}),
                       verbose = false}
  local train_s, eval_s, r = 0, 0, nil
  for _ = 1, epochs do
    local t0 = sys.clock()
    t:fit{epochs = 1}
    train_s = sys.clock() - t0
    local t1 = sys.clock()
    r = nn.evaluate(net, test_batches)
    eval_s = sys.clock() - t1
  end
  return {train_img_s = train:size() / train_s, eval_img_s = test:size() / eval_s, top1 = r.top1}
end

-- ---- PyTorch on the same files: one round
local cmd = string.format("%s %s/torch_seed_cnn.py %s --epochs %d --threads %d 2>&1", peer_py, peers,
                          dir, epochs, sys.threads())
local function theirs()
  local pipe = io.popen(cmd)
  local out = pipe:read("a")
  pipe:close()
  local r = {}
  for k, v in out:gmatch("([%w_]+)=([%d.]+)") do r[k] = tonumber(v) end
  if r.train_img_s then return r end
  print("PyTorch peer did not run (" .. cmd .. "):\n" .. out)
end

-- Each side's best round; top-1 and memory from any round (the same run, the same seed).
local function keep_best(best, r)
  if not best then return r end
  best.train_img_s = math.max(best.train_img_s, r.train_img_s)
  best.eval_img_s = math.max(best.eval_img_s, r.eval_img_s)
  if r.peak_rss_mb then best.peak_rss_mb = math.max(best.peak_rss_mb, r.peak_rss_mb) end
  return best
end
local mine, peer, peer_ok = nil, nil, true
for _ = 1, rounds do
  local o = ours()
  mine = keep_best(mine, o)
  local p = peer_ok and theirs()
  peer_ok = p ~= nil
  if p then peer = keep_best(peer, p) end
  print(string.format("round: nnlab %.0f, PyTorch %s training images/s", o.train_img_s, p and string.format("%.0f", p.train_img_s) or "-"))
end
mine.peak_rss_mb = sys.memory().peak

local cpuinfo = io.open("/proc/cpuinfo")
local model = cpuinfo and cpuinfo:read("a"):match("model name%s*:%s*([^\n]+)") or "unknown CPU"
if cpuinfo then cpuinfo:close() end
local isa, blas = sys.isa()
print(string.format("CPU: %s; kernels %s; OpenBLAS core %s", model, isa, blas))
print(string.format("seed CNN, real CIFAR-10, %d epoch(s), batch 64, %d threads, best of %d rounds",
                    epochs, sys.threads(), rounds))
print(string.format("%-22s %12s %12s %8s", "", "nnlab", "PyTorch", "ratio"))
local function row(name, a, b, fmt, target)
  local ratio = b and a / b or nil
  print(string.format("%-22s %12s %12s %8s%s", name, string.format(fmt, a), b and string.format(fmt, b) or "-",
                      ratio and string.format("%.2fx", ratio) or "-", target or ""))
end
row("train images/s", mine.train_img_s, peer and peer.train_img_s, "%.0f", "   (target >= 2.0x)")
row("eval images/s", mine.eval_img_s, peer and peer.eval_img_s, "%.0f", "   (target >= 3.0x)")
row("peak RSS MiB", mine.peak_rss_mb, peer and peer.peak_rss_mb, "%.0f", "   (target <= 0.5x)")
row("top-1 %", 100 * mine.top1, peer and 100 * peer.top1, "%.2f")
