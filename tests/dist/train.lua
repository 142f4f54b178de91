-- train.lua: trains a small net for the equivalence tests and writes rank 1's weights, one number a
-- line, to the file named by arg[1].
--   nnlab train.lua OUT MODEL BATCH STEPS [padded]
-- MODEL: "cnn" (the seed CNN on 32x32 images), "mlp", "bn" (a CNN with batch norm: nn.SyncBatchNorm
-- under several ranks, nn.BatchNorm2d alone; the running statistics are written too), "bnconv"
-- (nn.BatchNorm2d turned into SyncBatchNorm by distributed = {sync_bn = true}), or "loader" (a small CNN on 8x8 byte images
-- through data.loader with crop and flip: each rank's loader hands out its shard), or "mlpsim" (the
-- mlp on sim: under several ranks each rank's own sim:(local rank), the gradients summed through
-- the exchange's device path). With "padded"
-- the 1-process run trains on the order that N ranks see after the padding by wrapping (for the
-- 3-rank test: n = 100).
local out, model, batch, steps, padded = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]), arg[5]
tensor.seed(7)
local bn = model == "bn" or model == "bnconv"
local n = model == "cnn" and 256 or bn and 128 or 100
local x = model == "cnn" and tensor.randn(n, 3, 32, 32) or bn and tensor.randn(n, 3, 16, 16) * 2 + 1
          or tensor.randn(n, 10)
local y = (tensor.rand(n) * 9.98 + 0.51):to("i32")
local loader
if model == "loader" then
  local images = (tensor.rand(n, 3, 8, 8) * 255):to("u8")
  loader = data.loader(data.from_tensors(images, y), {batch = batch, seed = 5, normalize = {mean = 0.5, std = 0.25},
                                                 augment = {crop = 2, flip = true}})
end
if padded then -- samples 1 and 2 again at the end: what 3 ranks see of 100 samples
  local ranks = tonumber(padded)
  local extra = (ranks - n % ranks) % ranks
  local idx = {}
  for i = 1, n + extra do idx[i] = (i - 1) % n + 1 end
  x, y = nn.TensorDataset(x, y):batch(tensor.from(idx):to("i32"))
end
local ds = loader or nn.TensorDataset(x, y)
tensor.seed(3)
local net
if bn then
  local BN = dist.size() > 1 and model == "bn" and nn.SyncBatchNorm or nn.BatchNorm2d
  net = nn.Sequential(nn.Conv2d(3, 8, 3, {padding = 1}), BN(8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(512, 10))
elseif model == "loader" then
  net = nn.Sequential(nn.Conv2d(3, 4, 3, {padding = 1}), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
elseif model == "cnn" then
  net = nn.Sequential{
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
  }
else
  net = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 10))
  if model == "mlpsim" then net:to("sim") end
end
local t = nn.Trainer{net = net, data = ds, batch = batch, verbose = false,
                     shuffle = not padded, distributed = model == "bnconv" and {sync_bn = true} or nil, optim = optim.SGD(net, {lr = 0.05, momentum = 0.9})}
for _ = 1, steps do t:step() end
if dist.is_main() then
  local f = assert(io.open(out, "w"))
  local all = net:parameters()
  for _, b in ipairs(net:buffers()) do all[#all + 1] = b end
  for _, p in ipairs(all) do
    f:write("# ", p.name, "\n")
    for _, v in ipairs(p.value:reshape(-1):totable()) do f:write(string.format("%.9g\n", v)) end
  end
  f:close()
end
