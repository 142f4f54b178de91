-- saver.lua KIND PATH: saves two different versions of one kind of file (KIND: net, trainer or
-- tensor) to PATH, alternately, until killed. Their bytes are first written to PATH.A and PATH.B
-- (whole files, for comparison), then PATH.ready tells the killer to start its clock.
local kind, path = ...
tensor.seed(7)
local a, b
if kind == "net" then
  a, b = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10)), nn.Linear(512, 512)
elseif kind == "trainer" then
  local function tr(steps)
    local net = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10))
    local t = nn.Trainer{net = net, data = nn.TensorDataset(tensor.randn(64, 256), tensor.ones(64)),
                         batch = 16, verbose = false}
    for _ = 1, steps do t:step() end
    return t
  end
  a, b = tr(1), tr(2)
elseif kind == "tensor" then
  a, b = tensor.randn(1000, 1000), tensor.randn(500, 300)
else
  error("saver.lua: KIND must be net, trainer or tensor")
end
a:save(path .. ".A")
b:save(path .. ".B")
a:save(path)
io.open(path .. ".ready", "w"):close()
while true do
  b:save(path)
  a:save(path)
end
