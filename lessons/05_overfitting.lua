-- 05_overfitting.lua: a big network memorises noisy labels; dropout or weight decay make it generalise.

-- 120 training points of which every third carries a wrong label, and 600 clean test points.
local function noisy_spirals()
  local base = lesson.spirals(40, {seed = 3, noise = 0.25})
  local xs, ys = {}, {}
  for i = 1, base:size() do
    local x, y = base:get(i)
    xs[i], ys[i] = x:totable(), i % 3 == 0 and y % 3 + 1 or y
  end
  return nn.TensorDataset(tensor.from(xs), tensor.from(ys, "i32")), lesson.spirals(200, {seed = 4, noise = 0.25})
end

local function accuracy(net, data) return nn.evaluate(net, data).top1 end

local function network(v, name)
  if nn.is_module(v) then return v end
  return nil, name .. " is " .. (v == nil and "not set yet" or "a " .. type(v)) .. ": a network (nn.Sequential{...})"
end

lesson.define{
  name = "overfitting", title = "Overfitting and regularisation",
  intro = [[
    A network with many more parameters than training samples can learn them by heart, noise
    included, and do worse on new data. Regularisation (dropout, weight decay, smaller nets, more
    data) trades some of that memory for generalisation.]],
  steps = {
    {[[
      This step made `train`: 120 spiral points of which every third has a WRONG label (only 66.7%
      of the labels are right), and `test`: 600 clean points. Train a big network on it:
        tensor.seed(1)
        big = nn.Sequential{nn.Linear(2, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3)}
        nn.Trainer{net = big, data = train, batch = 16, optim = optim.Adam(big, {lr = 0.01})}:fit{epochs = 200}
      then compare nn.evaluate(big, train).top1 with nn.evaluate(big, test).top1. The step is
      passed when big gets more training labels right than are right (over 75%): it has learned noise.]],
      setup = function(env) env.train, env.test = noisy_spirals() end,
      check = function(env)
        local big, why = network(env.big, "big")
        if not big then return false, why end
        local train, test = noisy_spirals()
        local tr, te = accuracy(big, train), accuracy(big, test)
        if tr <= 0.75 then
          return false, string.format("big gets %.1f%% of the training labels; over 75%% shows memorised noise "
                                      .. "(train longer: 200 epochs, lr 0.01, 256 units)", 100 * tr)
        end
        return true, string.format("big gets %.1f%% of the training labels (66.7%% are right) and %.1f%% of the test "
                                   .. "points: it learned noise", 100 * tr, 100 * te)
      end,
      hint = {"The whole recipe is in the text; it trains in a second or two."}},
    {[[
      Regularise: make `reg`, the same network with nn.Dropout(0.5) after each ReLU (trained the same
      way), or the same network trained with weight decay, optim.AdamW(reg, {lr = 0.01,
      weight_decay = 0.3}). The step is passed when reg gets at least 3 points more of `test` right
      than big does.]],
      check = function(env)
        local big, why = network(env.big, "big")
        if not big then return false, why end
        local reg
        reg, why = network(env.reg, "reg")
        if not reg then return false, why end
        if reg == big then return false, "reg is big itself: make a second network" end
        local _, test = noisy_spirals()
        local b, r = accuracy(big, test), accuracy(reg, test)
        if r < b + 0.03 then
          return false, string.format("reg gets %.1f%% of test, big %.1f%%: 3 points more are needed (%s)", 100 * r, 100 * b,
                                      r < 0.5 and "is reg trained?" or "more dropout or weight decay")
        end
        return true, string.format("reg gets %.1f%% of test against big's %.1f%%: less memory, better guesses", 100 * r, 100 * b)
      end,
      hint = {"tensor.seed(1); reg = nn.Sequential{nn.Linear(2, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 256), "
              .. "nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 3)}; then train it as big.",
              "nn.evaluate switches dropout off (eval mode) while it measures."}},
  },
}
