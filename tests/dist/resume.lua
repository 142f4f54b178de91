-- resume.lua: nnlab resume.lua PHASE DIR — a run saved under one number of ranks continues under
-- another with the same global batch (32): "save" trains 6 steps and saves DIR/run.st, "load"
-- loads it and trains to 15 steps, "ref" trains 15 steps straight; load and ref write their
-- weights (train.lua's format) to DIR/<phase>.
local phase, dir = arg[1], arg[2]
tensor.seed(7)
local ds = nn.TensorDataset(tensor.randn(100, 10), (tensor.rand(100) * 9.98 + 0.51):to("i32"))
local t
if phase == "load" then
  t = nn.Trainer.load(dir .. "/run.st", {data = ds, verbose = false})
else
  tensor.seed(3)
  local net = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 10))
  t = nn.Trainer{net = net, data = ds, batch = 32 // dist.size(), verbose = false,
                 optim = optim.SGD(net, {lr = 0.05, momentum = 0.9})}
end
while t.steps < (phase == "save" and 6 or 15) do t:step() end
if phase == "save" then t:save(dir .. "/run.st") return end
if dist.is_main() then
  local f = assert(io.open(dir .. "/" .. phase, "w"))
  for _, p in ipairs(t.net:parameters()) do
    f:write("# ", p.name, "\n")
    for _, v in ipairs(p.value:reshape(-1):totable()) do f:write(string.format("%.9g\n", v)) end
  end
  f:close()
end
