-- test_compress.lua: nn.DistillLoss (by hand and as a Trainer's loss), compress.compare's truth
-- table, compress.fastest, the undo history, help for the new modules.

tensor.seed(3)
local labels = {}
for i = 1, 32 do labels[i] = i % 4 + 1 end
local ds = nn.TensorDataset(tensor.randn(32, 6), labels)

-- ---- distillation
local teacher = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
local loss = nn.DistillLoss{teacher = teacher, temperature = 2, alpha = 0.7}
check(loss.kind == "distill" and loss.temperature == 2 and loss.alpha == 0.7 and loss.teacher == teacher, "fields")
check(tostring(loss):find("DistillLoss") == 1, "prints")
local x = tensor.randn(5, 6)
-- A student equal to the teacher: the KL part is 0, the loss is (1 - alpha) * cross-entropy.
local same = loss:forward(teacher(x), {1, 2, 3, 4, 1}, x)
local ce = nn.CrossEntropyLoss():forward(teacher(x), {1, 2, 3, 4, 1})
check_close(same, 0.3 * ce, 1e-6, "teacher = student")
check_error(function() loss:forward(teacher(x), {1, 2, 3, 4, 1}) end, "input", "needs the input batch")
check_error(function() nn.DistillLoss{teacher = 3} end, "teacher", "teacher must be a network")
check_error(function() nn.DistillLoss{teacher = teacher, alpha = 2} end, "alpha", "bad alpha")
local student = nn.Sequential(nn.Linear(6, 4))
local t = nn.Trainer{net = student, data = ds, loss = nn.DistillLoss{teacher = teacher}, batch = 8, verbose = false}
local h = t:fit{epochs = 3}
check(#h.loss == 12 and h.loss[12] < h.loss[1], "a Trainer learns from the teacher")
local r = nn.evaluate(student, ds, {loss = nn.DistillLoss{teacher = teacher}})
check(r.loss > 0 and r.top1 >= 0, "evaluate with a distillation loss")

-- ---- compare
local base = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 4))
local small = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 4))
small:restore(base:snapshot())
prune.magnitude(small, {amount = 0.5})
local c = compress.compare({baseline = base, pruned = small}, ds, {time = 0.01})
check(#c == 2 and c[1].name == "baseline" and c[2].name == "pruned", "baseline first")
check(c[1].params == 356 and c[1].nonzeros == 356 and c[2].params == 356, "params: " .. c[1].params)
check(c[2].nonzeros == 356 - 160, "nonzeros: " .. c[2].nonzeros)
check(c[1].macs == 320 and c[1].bytes > 356 * 4 and c[1].top1 >= 0, "macs, bytes, top-1")
check(c[1].speedup_64 == 1 and c[1].latency_1 > 0 and c[1].images_per_s_64 > 0, "measured")
check(tostring(c):find("speed-up@64", 1, true) ~= nil, "prints as a table")
check_error(function() compress.compare({baseline = 3}) end, "not a network", "bad model")

-- ---- compress.fastest: every entry run on x, interleaved, at least 3 runs per round
local seen, xs = {}, tensor.randn(2, 6)
local t = compress.fastest({base, function(v) seen[#seen + 1] = v; return v end}, xs, {rounds = 2, time = 0})
check(#t == 2 and t[1] > 0 and t[2] >= 0, "a time per entry")
check(#seen == 1 + 2 * 3 and seen[1] == xs and seen[#seen] == xs, "warm-up, then 3 runs in each of 2 rounds: "
      .. #seen)
check_error(function() compress.fastest({}, xs) end, "expected a list", "empty list")
check_error(function() compress.fastest({base, 7}, xs) end, "entry 2 is neither", "bad entry")
check_error(function() compress.fastest({base}, {1, 2}) end, "x must be a tensor", "bad input")
check_error(function() compress.fastest({base}, xs, {rounds = 1.5}) end, "rounds must be", "bad rounds")
check_error(function() compress.fastest({base}, xs, {time = -1}) end, "time must be", "bad time")
check_error(function() compress.fastest({base}, xs, {tme = 1}) end, "tme", "unknown option")

-- ---- undo history
while compress.undo() do end
check(select(2, compress.undo()) == "nothing to undo", "empty")
local n = nn.Sequential(nn.Linear(4, 4))
prune.magnitude(n, {amount = 0.25})
prune.magnitude(n, {amount = 0.5})
local hist = compress.history()
check(#hist == 2 and hist[1] == "prune.magnitude", "history")
compress.undo()
check(prune.report(n).zeros == 4, "one step back: 25%")
compress.undo()
check(prune.report(n).zeros == 0, "two steps back")

-- ---- help
for _, name in ipairs{"prune.magnitude", "prune.channels", "prune.schedule", "prune.sensitivity",
                      "prune.report", "lowrank.factorize", "lowrank.spectrum", "compress.undo",
                      "compress.compare", "compress.fastest", "nn.DistillLoss"} do
  local mod, fn = name:match("^(%w+)%.(%w+)$")
  check(type(_G[mod][fn]) == "function", name .. " exists")
end
