-- api.lua: the dist calls, under mpirun (every rank runs it) or alone (each call a no-op). Prints
-- "ok <what>" lines that run.sh counts and "FAIL <what>" for a failed check.
local r, n = dist.rank(), dist.size()
local function check(cond, what)
  print((cond and "ok " or "FAIL ") .. what .. " (rank " .. r .. ")")
end
check(r >= 1 and r <= n and dist.is_main() == (r == 1), "rank and size")
dist.barrier()
local t = tensor.full({3}, r)
dist.allreduce(t)
check(t:get(1) == n * (n + 1) / 2, "allreduce sum")
t = tensor.full({2}, r)
dist.allreduce(t, "max")
check(t:get(2) == n, "allreduce max")
t = tensor.full({2}, r)
dist.allreduce(t, "mean")
check(math.abs(t:get(1) - (n + 1) / 2) < 1e-6, "allreduce mean")
local i = tensor.full({2}, r):to("i32")
dist.allreduce(i, "min")
check(i:get(1) == 1 and i:dtype() == "i32", "allreduce i32 min")
local b = tensor.full({2, 2}, r)
dist.broadcast(b, n)
check(b:get(2, 2) == n, "broadcast from the last rank")
local g = dist.gather({rank = r, name = "r" .. r, half = r / 2})
if r == 1 then
  check(#g == n and g[n].rank == n and g[n].name == "r" .. n and g[n].half == n / 2, "gather")
else
  check(g == nil, "gather returns nil off rank 1")
end
-- Bad arguments: refused on every rank alike (nothing reaches MPI, or every rank sees the mismatch).
local function refused(what, pattern, f, ...)
  local ok, err = pcall(f, ...)
  check(not ok and tostring(err):find(pattern, 1, true) ~= nil, what .. ": " .. tostring(err))
end
-- An accelerator named without a number is this rank's own on its machine (cuda: its GPU).
local d = tensor.zeros(1, {device = "sim"}):device()
check(d == (dist.local_rank() == 1 and "sim" or "sim:" .. (dist.local_rank() - 1)), "\"sim\" is the local rank's: " .. d)
check(tensor.zeros(1, {device = "sim:0"}):device() == "sim", "a numbered device is itself")
refused("allreduce of an i8 tensor", "contiguous f32 or i32", dist.allreduce, tensor.ones(2):to("i8"))
refused("allreduce of a strided view", "strided", dist.allreduce, tensor.ones(2, 3):t())
refused("allreduce with a bad op", "invalid option", dist.allreduce, tensor.ones(2), "prod")
refused("allreduce of a number", "Tensor expected", dist.allreduce, 3)
refused("broadcast from rank 0", "root must be a rank", dist.broadcast, tensor.ones(2), 0)
refused("gather of a function", "cannot send a function", dist.gather, print)
if n > 1 then
  refused("allreduce with shapes that differ between ranks", "disagree", dist.allreduce, tensor.ones(r + 1))
  refused("broadcast with dtypes that differ between ranks", "disagree", dist.broadcast,
          r == 1 and tensor.ones(2) or tensor.ones(2):to("i32"))
end
local p = dist.predict{ranks = 16, bandwidth = 10e9}
check(p.efficiency > 0 and p.efficiency <= 1 and p.comm > 0, "predict")
check(dist.predict{ranks = 1}.comm == 0, "predict: one rank has no communication")
refused("predict without ranks", "ranks must be", dist.predict, {})
-- nn.evaluate: each rank takes every N-th sample, every rank gets the global result.
tensor.seed(1)
local x, y = tensor.randn(101, 5), (tensor.rand(101) * 2.98 + 0.51):to("i32")
local net = nn.Sequential(nn.Linear(5, 3))
local ev = nn.evaluate(net, nn.TensorDataset(x, y), {batch = 16})
local direct = nn.CrossEntropyLoss()(net(x), y)
direct = type(direct) == "number" and direct or direct:item()
check(ev.count == 101 and ev.confusion:sum() == 101 and math.abs(ev.loss - direct) < 1e-5,
      string.format("evaluate: %d samples, loss %.6f (direct %.6f)", ev.count, ev.loss, direct))
dist.barrier()
check(true, "done")
