-- faults.lua: long training for the fault tests: nnlab faults.lua DIR. Saves a checkpoint every
-- 20 steps, marks DIR/started<rank> after 10 steps, prints the step where it stopped.
local dir = arg[1]
tensor.seed(1)
local x, y = tensor.randn(2000, 20), (tensor.rand(2000) * 1.98 + 0.51):to("i32")
local net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
local t = nn.Trainer{net = net, data = nn.TensorDataset(x, y), batch = 8, verbose = false}
t:on_step(function(tr)
  if tr.steps % 20 == 0 then tr:save(dir .. "/ckpt.st") end
  if tr.steps == 10 then assert(io.open(dir .. "/started" .. dist.rank(), "w")):close() end
end)
local _, paused = t:fit{epochs = 1000}
print(string.format("rank %d stopped at step %d (%s)", dist.rank(), t.steps, tostring(paused)))
