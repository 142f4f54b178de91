-- recorder.lua DIR: trains until killed, recording a run folder in DIR that is rewritten after every
-- step (t:record's every = 0); DIR.ready tells the killer to start its clock after the first epoch.
local dir = ...
tensor.seed(7)
local data = nn.TensorDataset(tensor.randn(64, 32), tensor.rand(64):gt(0.5):to("i32") + 1)
local net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))
local t = nn.Trainer{net = net, data = data, batch = 8, verbose = false}
t:on_step(function(tr) return {grad_norm = tr:grad_norm()} end)
t:record(dir, {every = 0})
t:fit{epochs = 1}
io.open(dir .. ".ready", "w"):close()
t:fit{epochs = 1000000}
