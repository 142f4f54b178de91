-- test_nndefine.lua: layers written in Lua (nn.define, nn.Module) against finite differences, inside
-- containers, the Trainer, checkpoints and the sim device; nn.gradcheck catching a wrong backward by
-- element; the errors of bad definitions and bad returns.

local MyLinear = nn.define("TestLinear", {
  args = {"inp", "out"},
  init = function(self, i, o)
    self:add_parameter("weight", tensor.randn(o, i) * (1 / math.sqrt(i)))
    self:add_parameter("bias", tensor.zeros(o))
  end,
  forward = function(self, x) return x:matmul(self.weight:t()) + self.bias end,
  backward = function(self, x, gy)
    return gy:matmul(self.weight), {weight = gy:t():matmul(x), bias = gy:sum(1)}
  end,
})

local MyTanh = nn.define("TestTanh", {
  forward = function(self, x) self.y = x:tanh(); return self.y end,
  backward = function(self, x, gy) return gy * (1 - self.y * self.y) end,
})

-- away from ReLU's kink, so finite differences are exact enough
local X = tensor.from{{0.5, -1.2, 0.8}, {-0.3, 0.9, 1.5}, {1.1, -0.7, -0.4}, {0.25, 0.6, -1.3}}

test("a Lua layer passes gradcheck, alone and in containers", function()
  local r = nn.gradcheck(MyLinear(3, 2), X, {verbose = false})
  check(r.ok and r.errors.x < 1e-3 and r.errors.weight < 1e-3 and r.errors.bias < 1e-3, r.text)
  local net = nn.Sequential{MyLinear(3, 4), nn.Residual(MyTanh(), MyLinear(4, 4)), nn.ReLU(), nn.Linear(4, 2)}
  r = nn.gradcheck(net, X, {verbose = false})
  check(r.ok and r.errors["2.2.weight"] ~= nil, r.text)
  check(tostring(net[1]) == "TestLinear(3, 4)" and net[1]:type() == "TestLinear" and net[1].out == 4, "printing and args")
  check(#net:parameters() == 6, "parameters of Lua layers are listed")
end)

test("gradcheck names the wrong element of a wrong backward", function()
  -- forgot the derivative of tanh at one place: gives gy unchanged
  local Bad = nn.define("TestBadTanh", {
    forward = function(self, x) return x:tanh() end,
    backward = function(self, x, gy) return gy end,
  })
  local r = nn.gradcheck(Bad(), X, {verbose = false})
  check(not r.ok, "a wrong backward fails")
  check(r.first_error:find("backward of x is wrong at %[1,1%]"), r.first_error)
  -- a wrong weight gradient (transposed product swapped for a wrong scale)
  local BadW = nn.Module{name = "TestBadW", parameters = {w = tensor.from{{1, 2, 3}}},
    forward = function(self, x) return x:matmul(self.w:t()) end,
    backward = function(self, x, gy) return gy:matmul(self.w), {w = gy:t():matmul(x) * 2} end}
  r = nn.gradcheck(BadW, X, {verbose = false})
  check(not r.ok and r.errors.x < 1e-3 and r.first_error:find("gradient of 'w' is wrong at %[1,1%]"), r.first_error or "")
  check(r.text:find("FAIL"), "the text says FAIL")
  -- sampling: a large input checks `samples` elements only
  local big = nn.gradcheck(MyTanh(), tensor.randn(50, 40), {samples = 10, verbose = false})
  check(big.ok, big.text)
end)

test("gradcheck of a loss", function()
  local target = tensor.from{1, 2, 2, 1}
  local logits = tensor.from{{0.2, -0.1}, {0.5, 0.3}, {-0.2, 0.4}, {1.0, -1.0}}
  local r = nn.gradcheck(nn.CrossEntropyLoss(), logits, {target = target, verbose = false})
  check(r.ok, r.text)
  check_error(function() nn.gradcheck(nn.MSELoss(), logits) end, "a loss needs")
end)

test("a network of Lua layers trains in a Trainer, round-trips a checkpoint and runs on sim", function()
  tensor.seed(3)
  local n = 200
  local x = tensor.randn(n, 2)
  local y = {}
  for i = 1, n do y[i] = x:get(i, 1) * x:get(i, 2) > 0 and 1 or 2 end
  local data = nn.TensorDataset(x, tensor.from(y))
  local net = nn.Sequential{MyLinear(2, 16), MyTanh(), MyLinear(16, 16), MyTanh(), MyLinear(16, 2)}
  local before = nn.evaluate(net, data).loss
  local t = nn.Trainer{net = net, data = data, batch = 20, optim = optim.Adam(net, {lr = 0.03}), verbose = false}
  t:fit{epochs = 20}
  local after = nn.evaluate(net, data)
  check(after.loss < before / 2 and after.top1 > 0.85, "learns XOR-like quadrants: " .. after.top1)
  local path = os.tmpname()
  net:save(path)
  local back = nn.load(path)
  check(back[1]:type() == "TestLinear", "the class comes back by name")
  check((back:forward(x) - net:forward(x)):abs():max() == 0, "the same outputs after load")
  os.remove(path)
  net:to("sim")
  check(net:device() == "sim" and net[1].weight:device() == "sim", "parameters moved")
  check((net:forward(x:to("sim")):to("cpu") - back:forward(x)):abs():max() < 1e-5, "the same on sim")
end)

test("a checkpoint of an undefined Lua class names it", function()
  local C = nn.define("TestGone", {forward = function(self, x) return x end, backward = function(self, x, gy) return gy end})
  local path = os.tmpname()
  nn.Sequential{C(), nn.Linear(2, 2)}:save(path)
  -- as a fresh session that never ran the nn.define would see it: the file names a class that is
  -- not defined (renamed in a copy, since this session has TestGone)
  local f = io.open(path, "rb"); local bytes = f:read("a"); f:close()
  f = io.open(path, "wb"); f:write((bytes:gsub("TestGone", "TestNone"))); f:close()
  check_error(function() nn.load(path) end, "TestNone")
  check_error(function() nn.load(path) end, "nn.define")
  os.remove(path)
end)

test("bad definitions and bad returns give messages", function()
  check_error(function() nn.define("Linear", {forward = print, backward = print}) end, "built%-in layer")
  check_error(function() nn.define("X", {forward = print}) end, "backward must be a function")
  check_error(function() nn.define("1x", {forward = print, backward = print}) end, "identifier")
  local m = nn.Module{name = "TestNum", forward = function() return 3 end, backward = function() end}
  check_error(function() m:forward(X) end, "must return a Tensor")
  m = nn.Module{name = "TestErr", forward = function() error("oops") end, backward = function() end}
  check_error(function() m:forward(X) end, "TestErr:forward: .*oops")
  m = nn.Module{name = "TestNoGrad", parameters = {w = tensor.ones(3)},
    forward = function(self, x) return x * self.w end, backward = function(self, x, gy) return gy * self.w, {} end}
  m:forward(X)
  check_error(function() m:backward(X) end, "no gradient for parameter 'w'")
  m = nn.Module{name = "TestShape", forward = function(self, x) return x end, backward = function(self, x, gy) return gy:sum(1) end}
  m:forward(X)
  check_error(function() m:backward(X) end, "gradient of shape %[3%] for an input of shape %[4, 3%]")
  check_error(function() nn.ReLU():add_parameter("w", tensor.ones(1)) end, "built%-in layer")
  -- the REPL keeps working after a failing Lua layer inside a Sequential
  local s = nn.Sequential{nn.Linear(3, 3), nn.Module{name = "TestErr2", forward = function() error("bad") end, backward = function() end}}
  check_error(function() s:forward(X) end, "layer 2 of Sequential")
  check(nn.Linear(3, 2):forward(X):shape()[2] == 2, "still usable")
end)

test("fields set in forward survive for backward even without a Lua reference to the layer", function()
  local net = nn.Sequential{nn.Linear(3, 3), MyTanh()}
  collectgarbage(); collectgarbage()
  local y = net:forward(X)
  collectgarbage(); collectgarbage()
  local g = net:backward(tensor.ones(4, 3))
  check(g:shape()[1] == 4, "backward found self.y")
end)

-- cross-entropy written in Lua (labels arrive 1-based)
local function ce_forward(self, x, y)
  local n, c = x:shape()[1], x:shape()[2]
  local onehot = tensor.zeros(n, c)
  for i = 1, n do onehot:set(1, i, y:get(i)) end
  self.onehot = onehot
  local m = x:max(2, true)
  local lse = (x - m):exp():sum(2, true):log() + m
  return -((x - lse) * onehot):sum() / n
end
local function lua_ce()
  return nn.Loss{name = "TestCE", forward = ce_forward,
    backward = function(self, x, y)
      local e = (x - x:max(2, true)):exp()
      return (e / e:sum(2, true) - self.onehot) / x:shape()[1]
    end}
end

test("a loss written in Lua: gradcheck, and the Trainer follows the built-in loss's trajectory", function()
  local mse = nn.Loss{name = "TestMSE", forward = function(self, x, t) local d = x - t; return (d * d):mean() end,
    backward = function(self, x, t) return (x - t) * (2 / x:numel()) end}
  check(tostring(mse) == "TestMSE()" and mse.kind == "lua", "printing")
  local t = tensor.from{{0.1, 0.4, -0.3}, {0.2, -0.5, 0.7}}
  check(math.abs(mse(X:slice(1, 1, 2), t) - nn.MSELoss()(X:slice(1, 1, 2), t)) < 1e-6, "the same value as MSELoss")
  check(nn.gradcheck(mse, X:slice(1, 1, 2), {target = t, verbose = false}).ok, "MSE gradcheck")
  local ce = lua_ce()
  local y = tensor.from({1, 3, 2, 2}, "i32")
  check(nn.gradcheck(ce, X, {target = y, verbose = false}).ok, "CE gradcheck")
  local wrong = nn.Loss{name = "TestWrong", forward = ce_forward,
    backward = function(self, x, yy) local e = x:exp(); return e / e:sum(2, true) - self.onehot end} -- forgot / N
  check(not nn.gradcheck(wrong, X, {target = y, verbose = false}).ok, "a loss's wrong backward fails")

  local function run(loss)
    tensor.seed(7)
    local x = tensor.randn(64, 4)
    local labels = {}
    for i = 1, 64 do labels[i] = (x:get(i, 1) + x:get(i, 3) > 0) and 1 or 2 end
    local net = nn.Sequential{nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)}
    local tr = nn.Trainer{net = net, data = nn.TensorDataset(x, tensor.from(labels)), batch = 16, loss = loss,
                          optim = optim.SGD(net, {lr = 0.5}), verbose = false, seed = 1}
    tr:fit{epochs = 3}
    return tr.history, net
  end
  local h1 = run(nn.CrossEntropyLoss())
  local h2, net2 = run(lua_ce())
  check(#h2.loss == 12, "12 steps")
  for i = 1, #h1.loss do check(math.abs(h1.loss[i] - h2.loss[i]) < 1e-4, "step " .. i .. " loss") end
  check(math.abs(h1.train_acc[3] - h2.train_acc[3]) < 1e-9, "the same accuracy, scored from 1-based labels")
  check(h2.loss[12] < h2.loss[1], "the loss goes down")
  local bad = nn.Loss{name = "TestBadLoss", forward = function() return "x" end, backward = function() end}
  check_error(function() bad(X, y) end, "must return a number")
  check_error(function() nn.Loss{forward = print} end, "backward must be a function")
end)

test("a trainer saved with a loss written in Lua asks for it back on load", function()
  local mse = nn.Loss{name = "TestMSE2", forward = function(self, x, t) local d = x - t; return (d * d):mean() end,
    backward = function(self, x, t) return (x - t) * (2 / x:numel()) end}
  local data = nn.TensorDataset(tensor.randn(8, 3), tensor.randn(8, 2))
  local t = nn.Trainer{net = nn.Linear(3, 2), data = data, loss = mse, batch = 4, verbose = false}
  t:step()
  local path = os.tmpname()
  t:save(path)
  check_error(function() nn.Trainer.load(path, {data = data}) end, "loss written in Lua %(TestMSE2%(%)%)")
  local back = nn.Trainer.load(path, {data = data, loss = mse, verbose = false})
  check(back.steps == 1, "the step count comes back: " .. tostring(back.steps))
  local loss = back:step()
  check(type(loss) == "number" and loss == back.history.loss[#back.history.loss] and back.steps == 2, "it goes on")
  os.remove(path)
end)
