-- search.lua: search.grid with one trial per rank. `nnlab search.lua OUT DIR` runs four trials as
-- runs in DIR and writes the ranked trials ("trial lr test_acc", one a line) to OUT on rank 1:
-- alone and under several ranks the lines must be the same (each trial trains by itself, seeded).
local out, dir = arg[1], arg[2]
tensor.seed(7)
local x = tensor.randn(96, 2)
local data = nn.TensorDataset(x, x:slice(2, 1, 1):reshape(96):gt(0):to("f32") + 1)
local function make(p)
  local net = nn.Sequential{nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)}
  return nn.Trainer{net = net, data = data, batch = 16, verbose = false, optim = optim.SGD(net, {lr = p.lr})}
end
local rows = search.grid{trainer = make, space = {lr = {0.01, 0.1, 0.3, 1}}, epochs = 2, eval = data,
                         dir = dir, plot = false}
if dist.is_main() then
  assert(#rows == 4, "rank 1 has the four trials")
  local f = assert(io.open(out, "w"))
  for _, r in ipairs(rows) do f:write(string.format("%d %.17g %.17g\n", r.trial, r.params.lr, r.test_acc)) end
  f:close()
else
  assert(rows == nil, "only rank 1 gets the rows")
end
