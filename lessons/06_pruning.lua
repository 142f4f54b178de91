-- 06_pruning.lua: prune a trained network to a fifth of its weights, fine-tune, lose < 1 point.

local LIMIT = 1000

local function nonzero_weights(net)
  local n = 0
  for _, p in ipairs(net:parameters()) do
    if p.value:dim() >= 2 then n = n + p.value:to("cpu"):ne(0):sum() end
  end
  return math.floor(n)
end

local function trained(env)
  env.net, env.train, env.test = lesson.spirals_mlp()
end

lesson.define{
  name = "pruning", title = "Pruning: a fifth of the weights, under 1 point lost",
  intro = [[
    Most weights of a trained network matter little. Magnitude pruning sets the smallest to zero;
    a short fine-tuning lets the others make up for them (masks keep the pruned ones at zero).]],
  steps = {
    {[[
      This step trained `net` (an MLP on the spirals, 4,416 weights) and made `train` and `test`.
      Make `pruned`: a copy of net (net:clone()) with at most 1,000 nonzero weights (biases do not
      count) that gets at most 1 point less of `test` right than net. prune.magnitude(pruned,
      {amount = 0.8, scope = "global"}) zeroes the smallest 80%; look at nn.evaluate(pruned, test)
      before and after fine-tuning it with a Trainer (a few epochs, lr 0.003).]],
      setup = trained,
      check = function(env)
        local p = env.pruned
        if not nn.is_module(p) then
          return false, "pruned is " .. (p == nil and "not set yet" or "a " .. type(p)) .. ": pruned = net:clone(), then prune it"
        end
        local ref = {}
        trained(ref)
        local n = nonzero_weights(p)
        if n > LIMIT then
          return false, string.format("pruned has %d nonzero weights; at most %d are allowed (prune.magnitude with a larger amount)", n, LIMIT)
        end
        local base, acc = nn.evaluate(ref.net, ref.test).top1, nn.evaluate(p, ref.test).top1
        if acc < base - 0.01 then
          return false, string.format("pruned gets %.1f%% of test, net %.1f%%: %.1f points lost, at most 1 is allowed "
                                      .. "(fine-tune it: the masks keep pruned weights at zero)", 100 * acc, 100 * base, 100 * (base - acc))
        end
        return true, string.format("pruned keeps %d of 4416 weights (%.0f%%) and gets %.1f%% of test (net %.1f%%)", n,
                                   100 * n / 4416, 100 * acc, 100 * base)
      end,
      hint = {"pruned = net:clone(); prune.magnitude(pruned, {amount = 0.8, scope = \"global\"})",
              "nn.Trainer{net = pruned, data = train, batch = 32, optim = optim.Adam(pruned, {lr = 0.003})}:fit{epochs = 10}"}},
    {[[
      Zeros still take room and time in a dense layer. print(prune.report(pruned)) shows which
      layers run on sparse kernels; prune.channels removes whole units instead, so the network
      itself gets smaller (net:summary() shows it). lesson.next() ends the lesson.]]},
  },
}
