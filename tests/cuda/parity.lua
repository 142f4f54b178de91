-- parity.lua: the seed CNN on DEVICE against the CPU from the same weights (check.sh part 2):
-- forward, loss, then 3 SGD steps and 3 Adam steps through nn.Trainer on the same three batches;
-- prints the largest relative error of each and exits 1 when one exceeds 1e-4.
--   nnlab tests/cuda/parity.lua [DEVICE]     (default cuda; "cpu" checks the script itself)
local dev = arg[1] or "cuda"
local N = dofile((arg[0]:match("^(.*)/") or ".") .. "/nets.lua")
tensor.seed(0)
local path = os.tmpname()
N.seed_cnn():save(path)
local x, y = tensor.randn(192, 3, 32, 32), N.labels(192)

local cpu, gpu = nn.load(path), nn.load(path, {device = dev})
local xb, yb = x:slice(1, 1, 64):clone(), y:slice(1, 1, 64):clone()
local oc, og = cpu:forward(xb), gpu:forward(xb:to(dev))
local lc = nn.CrossEntropyLoss():forward(oc, yb)
local lg = nn.CrossEntropyLoss():forward(og, yb)
local err = {forward = N.rel(og, oc), loss = math.abs(lg - lc) / math.abs(lc)}

local function steps(kind)
  local params = {}
  for i, d in ipairs{"cpu", dev} do
    local net = nn.load(path, {device = d})
    local opt = kind == "sgd" and optim.SGD(net, {lr = 0.01, momentum = 0.9})
                               or optim.Adam(net, {lr = 1e-3})
    local t = nn.Trainer{net = net, data = nn.TensorDataset(x, y), optim = opt, batch = 64,
                         seed = 1, verbose = false}
    for _ = 1, 3 do t:step() end
    params[i] = net:parameters()
  end
  local worst = 0
  for k = 1, #params[1] do worst = math.max(worst, N.rel(params[2][k].value, params[1][k].value)) end
  return worst
end
err.sgd3, err.adam3 = steps("sgd"), steps("adam")
os.remove(path)

local bad = false
for _, k in ipairs{"forward", "loss", "sgd3", "adam3"} do bad = bad or not (err[k] <= 1e-4) end
print(string.format("RESULT parity_forward=%.3g parity_loss=%.3g parity_sgd3=%.3g parity_adam3=%.3g %s",
                    err.forward, err.loss, err.sgd3, err.adam3, bad and "FAIL" or "ok"))
if bad then os.exit(1) end
