-- 03_spirals.lua: a multi-layer perceptron learns three interleaved spirals (90% on held-out points).

local nonlinear = {ReLU = true, Tanh = true, Sigmoid = true, GELU = true, LeakyReLU = true}

-- Whether a Sequential net has a nonlinear layer between its Linear layers (any module that is
-- not a Sequential is assumed to have one).
local function has_nonlinearity(net)
  if net:type() ~= "Sequential" then return true end
  for i = 1, #net do
    local t = net[i]:type()
    if nonlinear[t] or (t ~= "Linear" and t ~= "Flatten" and t ~= "Identity" and t ~= "Dropout") then return true end
  end
  return false
end

-- A network mapping [n, 2] points to [n, 3] scores, or nil and why not.
local function scorer(net)
  if not nn.is_module(net) then
    return nil, "net is " .. (net == nil and "not set yet" or "a " .. type(net)) .. ": make it with nn.Sequential{...}"
  end
  local ok, y = pcall(net.forward, net, tensor.zeros(5, 2))
  if not ok then return nil, "net:forward on points [5, 2] fails: " .. tostring(y):gsub("^[^\n]-:%d+: ", "") end
  if not tensor.is_tensor(y) or table.concat(y:shape(), "x") ~= "5x3" then
    return nil, "net maps points [5, 2] to " .. (tensor.is_tensor(y) and "[" .. table.concat(y:shape(), ", ") .. "]" or type(y))
      .. ", expected [5, 3]: one score per arm"
  end
  return net
end

lesson.define{
  name = "spirals", title = "An MLP on the spirals: 90% on new points",
  intro = [[
    Three spiral arms wind around each other in the plane: no straight line separates them. A
    multi-layer perceptron (Linear layers with a nonlinearity between them) can learn to.]],
  steps = {
    {[[
      This step made `train` (600 points, 200 per arm) and `test` (300 other points): each sample
      is a point {x, y} and its arm 1, 2 or 3: train:get(1) shows the first.
      Build `net`: a network from 2 inputs to 3 scores (one per arm) with two hidden layers of 64
      units and ReLU between them: nn.Sequential{nn.Linear(2, 64), nn.ReLU(), ...}.]],
      setup = function(env)
        env.train, env.test = lesson.spirals(200, {seed = 1}), lesson.spirals(100, {seed = 2})
      end,
      check = function(env)
        local net, why = scorer(env.net)
        if not net then return false, why end
        if not has_nonlinearity(net) then
          return false, "net has only Linear layers: stacked without a nonlinearity they are one straight-line model"
        end
        return true, "net maps each point to 3 scores"
      end,
      hint = {"nn.Sequential{nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)}"}},
    {[[
      Train it: a Trainer with Adam (lr 0.01), batches of 32, cross-entropy, about 40 epochs:
        t = nn.Trainer{net = net, data = train, batch = 32, loss = nn.CrossEntropyLoss(),
                       optim = optim.Adam(net, {lr = 0.01})}
        t:fit{epochs = 40, eval = test}
      The step is passed when net classifies at least 90% of new spiral points right (the check
      draws its own, from the same spirals).]],
      check = function(env)
        local net, why = scorer(env.net)
        if not net then return false, why end
        local top1 = nn.evaluate(net, lesson.spirals(100, {seed = 2})).top1
        if top1 < 0.9 then
          local extra = has_nonlinearity(net) and "train longer (t:fit{epochs = 40}) or check the learning rate"
            or "net has no nonlinearity: it can only draw straight lines between the arms"
          return false, string.format("net classifies %.1f%% of new points right; 90%% is needed: %s", 100 * top1, extra)
        end
        return true, string.format("net classifies %.1f%% of new points right", 100 * top1)
      end,
      hint = {"A fresh net guesses (about 33%); t:fit{epochs = 40} trains it.",
              "Below 90% after training: more epochs, or lr = 0.01 for Adam."}},
    {[[
      What did it learn? viz.decision(net, {-1, 1, -1, 1}, {data = test}) colours the plane by the
      arm net predicts, with the test points on top (viz.show() opens the window, viz.save("d.png")
      writes it). Try 8 hidden units, or no ReLU, and look again. lesson.next() ends the lesson.]]},
  },
}
