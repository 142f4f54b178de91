-- test_prune.lua: prune, lowrank and snapshots from Lua: magnitude pruning (layer, global, chosen
-- layers), masks through a Trainer, channel pruning and summary, the cubic schedule, sensitivity,
-- report numbers, factorization, undo.

tensor.seed(7)
local function mlp()
  return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
end

local function zeros(t)
  local n = 0
  for _, v in ipairs(t:reshape(t:numel()):totable()) do if v == 0 then n = n + 1 end end
  return n
end

-- ---- magnitude pruning and the report
local net = mlp()
prune.magnitude(net, {amount = 0.5})
local r = prune.report(net)
check(#r.layers == 3, "three layers")
check(r.layers[1].zeros == 64 and r.layers[2].zeros == 128 and r.layers[3].zeros == 24, "half of each layer")
check(r.layers[2].path == "3" and r.layers[2].type == "Linear" and r.layers[2].masked, "path, type, mask")
check(r.zeros == 216 and r.params == 432 and math.abs(r.sparsity - 0.5) < 1e-12, "totals")
check(tostring(r):find("total", 1, true) ~= nil, "prints as a table")
check(zeros(net[3].weight) == 128, "zeros in the weights")

local g = mlp()
prune.magnitude(g, {amount = 0.75, scope = "global"})
check(prune.report(g).zeros == 324, "global: 75% of 432")
local only = mlp()
prune.magnitude(only, {amount = 0.5, layers = {only[3]}})
local ro = prune.report(only)
check(ro.layers[1].zeros == 0 and ro.layers[2].zeros == 128 and ro.layers[3].zeros == 0, "layers= picks")
check_error(function() prune.magnitude(mlp(), {amount = 2}) end, "amount", "bad amount")
check_error(function() prune.magnitude(mlp(), {scope = "row"}) end, "scope", "bad scope")
check_error(function() prune.magnitude(mlp(), {amont = 0.3}) end, "unknown option", "typo")

-- ---- masks survive a Trainer's steps
local ds = nn.TensorDataset(tensor.randn(64, 8), (function() local y = {} for i = 1, 64 do y[i] = i % 3 + 1 end return y end)())
local t = nn.Trainer{net = net, data = ds, batch = 16, verbose = false}
local w0 = net[3].weight:clone()
t:fit{epochs = 2}
check(zeros(net[3].weight) == 128, "zeros kept through training")
check((net[3].weight - w0):abs():sum() > 0, "the rest trained")

-- ---- undo
local u = mlp()
local before = u[1].weight:clone()
prune.magnitude(u, {amount = 0.9})
local what, back = compress.undo()
check(what == "prune.magnitude" and back == u, "undo says what it undid")
check((u[1].weight - before):abs():max() == 0 and zeros(u[1].weight) == 0, "bit-identical weights back")
check(u[1].weight_mask == nil, "mask gone")

-- ---- snapshot / restore
local s = u:snapshot()
check(tostring(s):find("Snapshot") ~= nil, "snapshot prints")
prune.channels(u, {amount = 0.5})
check(u[1].out == 8 and u[3]["in"] == 8 and u[3].out == 8 and u[5]["in"] == 8 and u[5].out == 3, "hidden features pruned")
u:restore(s)
check(u[1].out == 16 and (u[1].weight - before):abs():max() == 0, "restore: architecture and weights")

-- ---- channel pruning on a CNN, with summary
local cnn = nn.Sequential(nn.Conv2d(3, 8, 3, {padding = 1}), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, {padding = 1}), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16 * 16, 10))
local _, macs0 = cnn:infer{1, 3, 32, 32}
local _, removed = prune.channels(cnn, {amount = 0.5, criterion = "l2"})
local _, macs1 = cnn:infer{1, 3, 32, 32}
check(removed == 12 and cnn[1].out == 4 and cnn[2].c == 4 and cnn[5]["in"] == 4 and cnn[8]["in"] == 8 * 256,
      "shrunk: " .. tostring(removed))
check(macs1 == 208896 and macs0 == 565248, "multiply-adds: " .. macs1)
check(cnn:forward(tensor.randn(2, 3, 32, 32)):shape()[2] == 10, "still runs")
check_error(function() prune.channels(cnn, {criterion = "l3"}) end, "criterion", "bad criterion")

-- ---- the cubic schedule (Zhu & Gupta)
local sched = prune.schedule{net = mlp(), target = 0.8, initial = 0, start = 10, finish = 110, every = 10}
check(sched(0) == 0 and sched(10) == 0 and sched(110) == 0.8 and sched(500) == 0.8, "ends")
check(math.abs(sched(60) - (0.8 - 0.8 * 0.5 ^ 3)) < 1e-12, "midpoint: 0.7")
check(math.abs(sched(35) - (0.8 - 0.8 * 0.75 ^ 3)) < 1e-12, "quarter")
local sn = mlp()
local st = nn.Trainer{net = sn, data = ds, batch = 16, verbose = false}
local sc = prune.schedule{trainer = st, target = 0.6, start = 0, finish = 4, every = 2}
st:fit{epochs = 2} -- 8 steps: prunes at 2 and 4
check(math.abs(prune.report(sn).sparsity - 0.6) < 0.01, "schedule reached its target: " .. prune.report(sn).sparsity)
check(sc.last == 0.6, "last amount")
-- attached to a trainer already past finish: prunes to the target at once and says so
local late = mlp()
local lt = nn.Trainer{net = late, data = ds, batch = 16, verbose = false}
lt:fit{epochs = 2}
local said, print0 = {}, print
print = function(...) said[#said + 1] = table.concat({...}, " ") end
local lsc = prune.schedule{trainer = lt, target = 0.7, start = 0, finish = 4, every = 2}
print = print0
check(math.abs(prune.report(late).sparsity - 0.7) < 0.01, "a late schedule prunes to its target at once: "
      .. prune.report(late).sparsity)
check(lsc.last == 0.7 and #said == 1 and said[1]:find("past finish = 4: pruned to the target 70% now", 1, true),
      "and says so: " .. tostring(said[1]))
lt:fit{epochs = 1}
check(math.abs(prune.report(late).sparsity - 0.7) < 0.01, "the masks keep it through training")

-- ---- sensitivity
local sens = prune.sensitivity(mlp(), ds, {amounts = {0.5, 0.9}})
check(#sens.layers == 3 and #sens.layers[1].top1 == 2 and sens.baseline >= 0, "a row per layer, a column per amount")
check(sens.runs["1 Linear"] ~= nil and #sens.runs["1 Linear"].test_acc == 2, "runs for viz")
check(tostring(sens):find("baseline") ~= nil, "prints")

-- ---- low rank
local lin = nn.Linear(12, 6)
local x = tensor.randn(5, 12)
local full = lowrank.factorize(lin, {rank = 6})
check((full(x) - lin(x)):abs():max() < 1e-5, "full rank reproduces")
local sp = lowrank.spectrum(lin)
check(sp:numel() == 6 and lowrank.rank_for_energy(sp, 1) == 6, "spectrum")
local byenergy = lowrank.factorize(lin, {energy = 0.5})
check(byenergy[1].out == lowrank.rank_for_energy(sp, 0.5), "energy picks the rank")
local fnet = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
local _, count = lowrank.factorize(fnet, {rank = 4})
check(count == 1 and fnet[1]:type() == "Sequential", "the net's large layer replaced")
check(compress.undo() == "lowrank.factorize" and fnet[1]:type() == "Linear", "undo factorization")

-- ---- checkpoints of pruned nets: zeros saved, masks from zeros after loading
local pn = mlp()
prune.magnitude(pn, {amount = 0.6})
local path = os.tmpname()
pn:save(path)
local loaded = nn.load(path)
os.remove(path)
check(prune.report(loaded).zeros == prune.report(pn).zeros, "zeros saved")
check(loaded[1].weight_mask ~= nil and loaded[1].weight_mask:sum() == pn[1].weight_mask:sum(), "masks loaded")
prune.remove(loaded)
check(loaded[1].weight_mask == nil, "remove drops masks")
check(prune.masks_from_zeros(loaded) == 3 and loaded[1].weight_mask ~= nil, "masks from zeros")

-- ---- sparse execution: same outputs as dense, weight edits honoured, thresholds
local conv0, lin0 = prune.sparse_threshold()
check(type(conv0) == "number" and type(lin0) == "number" and conv0 > 0 and conv0 <= 1, "default thresholds")
local function cnn()
  return nn.Sequential(nn.Conv2d(3, 8, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
                       nn.Conv2d(8, 12, 3, {stride = 2, padding = 1}), nn.ReLU(), nn.Flatten(),
                       nn.Linear(12 * 4 * 4, 10))
end
local function close(a, b) -- float rounding of sums taken in another order
  return (a - b):abs():max() <= 1e-5 * (1 + b:abs():max())
end
local sn = cnn()
prune.magnitude(sn, {amount = 0.9})
sn:eval()
local sx = tensor.randn(20, 3, 16, 16)
prune.sparse_threshold(false)
local dense = sn(sx):clone()
check(not prune.report(sn).layers[1].sparse, "off: the report says dense")
prune.sparse_threshold(true)
local rep = prune.report(sn)
check(rep.layers[1].sparse and rep.layers[2].sparse and rep.layers[3].sparse, "90% pruned: every layer sparse")
check(tostring(rep):find("sparse", 1, true) ~= nil, "the report prints the kernel")
local sparse = sn(sx):clone()
check(close(sparse, dense), "sparse eval output = dense within rounding")
check(close(sn(sx:slice(1, 1, 1)), dense:slice(1, 1, 1)), "one image")
-- training mode stays dense: bit-identical to the dense run
sn:train()
check((sn(sx) - dense):abs():max() == 0, "training forward is the dense one")
sn:eval()
-- weights edited from Lua after the sparse copy was made
sn[1].weight:fill(0)
prune.sparse_threshold(false)
local dense0 = sn(sx):clone()
prune.sparse_threshold(true)
check(close(sn(sx), dense0) and (dense0 - dense):abs():max() > 0, "weight:fill(0) honoured")
sn[4].weight:fill(0.01) -- no zeros left: back to dense for that layer
check(not prune.report(sn).layers[2].sparse, "a dense weight runs dense")
prune.sparse_threshold(false)
local dense1 = sn(sx):clone()
prune.sparse_threshold(true)
check(close(sn(sx), dense1) and (dense1 - dense0):abs():max() > 0, "refilled weight honoured")
-- thresholds: get, set, per kind, off, defaults, errors
local c1, l1 = prune.sparse_threshold(0.95)
check(c1 == 0.95 and l1 == 0.95, "one number sets both")
check(not prune.report(sn).layers[3].sparse, "90% under a threshold of 95%: dense")
local c2, l2 = prune.sparse_threshold({linear = 0.25})
check(c2 == 0.95 and l2 == 0.25, "a table sets one kind")
local c3, l3 = prune.sparse_threshold(false)
check(c3 == false and l3 == false, "false turns it off")
local c4, l4 = prune.sparse_threshold(true)
check(c4 == conv0 and l4 == lin0, "true brings the defaults back")
check_error(function() prune.sparse_threshold(1.5) end, "[0, 1]", "threshold above 1")
check_error(function() prune.sparse_threshold(-0.1) end, "[0, 1]", "negative threshold")
check_error(function() prune.sparse_threshold(0 / 0) end, "[0, 1]", "NaN threshold")
check_error(function() prune.sparse_threshold("high") end, "must be a sparsity", "a string")
check_error(function() prune.sparse_threshold({conv = "x"}) end, "conv must be a sparsity", "a bad kind value")
check_error(function() prune.sparse_threshold({dense = 0.5}) end, "unknown option", "an unknown kind")
check(select(1, prune.sparse_threshold()) == conv0, "a refused call changes nothing")
-- the CSR copy is layer state: not a parameter or buffer, not in checkpoints
local cn = cnn()
prune.magnitude(cn, {amount = 0.9})
cn:eval()
local cy = cn(sx):clone()
check(prune.report(cn).layers[1].sparse, "ran sparse before saving")
local nbuf = #cn:buffers()
check(nbuf == 3 and #cn:parameters() == 6, "only the masks are buffers")
local cpath = os.tmpname()
cn:save(cpath)
local back = nn.load(cpath)
os.remove(cpath)
back:eval()
check(#back:buffers() == nbuf and close(back(sx), cy), "a checkpoint holds no CSR, and loads to the same outputs")
