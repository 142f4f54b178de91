-- test_train.lua: the Trainer and nn.evaluate: real learning (a small net overfits 64 samples),
-- bit-for-bit determinism, save -> load -> continue, Ctrl-C pause and resume, NaN stops,
-- schedules applied per step, Lua data sets, evaluation results.

-- 64 samples of 8 features with random labels 1..4: only memorising fits them.
local function random_set(seed, n)
  tensor.seed(seed)
  local x = tensor.randn(n or 64, 8)
  local y = (tensor.rand(n or 64) * 4 - 0.5):to("i32") + 1
  return nn.TensorDataset(x, y)
end

local function mlp(seed, dropout)
  tensor.seed(seed)
  local net = nn.Sequential{nn.Linear(8, 64), nn.ReLU()}
  if dropout then net:add(nn.Dropout(0.2)) end
  net:add(nn.Linear(64, 4))
  return net
end

local function same_list(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

-- Exact equality of nested tables of numbers.
local function same_tree(a, b)
  if type(a) ~= "table" then return a == b end
  if #a ~= #b then return false end
  for i = 1, #a do if not same_tree(a[i], b[i]) then return false end end
  return true
end

test("a small network overfits 64 samples", function()
  local data = random_set(1)
  local net = mlp(2)
  local t = nn.Trainer{net = net, data = data, optim = optim.Adam(net, {lr = 0.01}), batch = 16,
                       verbose = false}
  local h = t:fit{epochs = 60}
  local r = nn.evaluate(net, data)
  check(r.top1 == 1, "100% training accuracy, got " .. r.top1)
  check(h.train_acc[#h.train_acc] == 1 and h.loss[#h.loss] < h.loss[1] / 10, "history shows it")
  check(#h.loss == 60 * 4 and #h.train_acc == 60 and #h.lr == 240, "per-step and per-epoch history")
  check(t.epochs == 60 and t.steps == 240 and t.pos == 0, "counters")
  check(r.top5 == 1 and r.count == 64 and r.loss < 0.05, "top5, count, loss")
  check(r.confusion:dtype() == "i32" and r.confusion:shape()[1] == 4 and r.confusion:sum() == 64,
        "confusion [4, 4] counts every sample")
  local _, counts = nil, data:batch{1}
  for c = 1, 4 do
    check(r.per_class[c] == 1, "per-class accuracy " .. c)
  end
  check(r.confusion:get(2, 2) > 0 and r.confusion:get(1, 2) == 0, "diagonal confusion")
  check(net.training, "evaluate restores training mode")
end)

test("the same seed gives the same losses, bit for bit", function()
  local function run()
    local data = random_set(11)
    local net = mlp(12, true)
    tensor.seed(13)
    local t = nn.Trainer{net = net, data = data, optim = optim.Adam(net, {lr = 0.01}), batch = 16,
                         seed = 5, verbose = false}
    t:fit{epochs = 3}
    return t.history.loss, net_weights(net)
  end
  local l1, w1 = run()
  local l2, w2 = run()
  check(#l1 == 12 and same_list(l1, l2), "identical loss sequences")
  check(same_tree(w1, w2), "identical weights")
  local data = random_set(11)
  local net = mlp(12, true)
  tensor.seed(13)
  local t = nn.Trainer{net = net, data = data, optim = optim.Adam(net, {lr = 0.01}), batch = 16,
                       seed = 6, verbose = false}
  t:fit{epochs = 3}
  check(not same_list(l1, t.history.loss), "another data seed gives another order")
end)

test("save, load and continue = an uninterrupted run", function()
  local path = os.tmpname()
  local function trainer()
    local data = random_set(21, 40)
    local net = mlp(22, true)
    tensor.seed(23)
    return nn.Trainer{net = net, data = data, optim = optim.Adam(net, {lr = 0.01, clip = 5}), batch = 16,
                      seed = 3, schedule = optim.schedule.cosine{total = 12, min_lr = 1e-4},
                      verbose = false}, data
  end
  local a = trainer()
  a:fit{epochs = 4}
  local b, data = trainer()
  b:fit{epochs = 1}
  b:step() -- mid-epoch: position 1 of 3
  b:save(path)
  tensor.seed(999) -- the loaded trainer must restore the generator (dropout)
  tensor.randn(10)
  local c = nn.Trainer.load(path, {data = data, verbose = false})
  os.remove(path)
  check(c.epochs == 1 and c.pos == 1 and c.steps == 4 and #c.history.loss == 4, "position restored")
  check(tostring(c.net) == tostring(a.net) and c.optim:config().clip == 5, "network and optimizer")
  c:fit{epochs = 3}
  check(c.epochs == 4 and c.steps == 12, "finished where the first run did")
  check(same_list(c.history.loss, a.history.loss), "the same losses as the uninterrupted run")
  check(same_list(c.history.lr, a.history.lr), "the schedule continued")
  check(same_tree(net_weights(c.net), net_weights(a.net)), "the same final weights")
  check(same_list(c.history.train_acc, a.history.train_acc), "the same epoch accuracies")
  check_error(function() nn.Trainer.load(path, {data = data}) end, path)
  local other = os.tmpname()
  nn.Linear(2, 2):save(other)
  check_error(function() nn.Trainer.load(other, {data = data}) end, "not a trainer checkpoint")
  a:save(other)
  check_error(function() nn.Trainer.load(other, {data = random_set(1, 8)}) end,
              "the data set has 8 samples but the run was on 40")
  os.remove(other)
end)

test("Ctrl-C pauses at a batch boundary; resume gives the same weights", function()
  local function trainer()
    local data = random_set(31, 48)
    local net = mlp(32, true)
    tensor.seed(33)
    return nn.Trainer{net = net, data = data, optim = optim.SGD(net, {lr = 0.05, momentum = 0.9}),
                      batch = 16, verbose = false}
  end
  local a = trainer()
  a:fit{epochs = 3}
  local b = trainer()
  b:on_step(function(t) if t.steps == 4 then nn._interrupt() end end)
  b.verbose = true
  local out, h, status = capture(function() return b:fit{epochs = 3} end)
  check(status == "paused" and b.paused and b.steps == 4, "fit returns paused after step 4")
  check(out:find("paused at epoch 2 step 1/3", 1, true) and
        out:find('fit returns "paused" to the script', 1, true) and not out:find("t:resume()", 1, true),
        "says where it stopped and, in a script, that fit returns to it: " .. out)
  check(not nn._poll_interrupt(), "the flag was cleared")
  b.verbose = false
  b:resume()
  check(b.epochs == 3 and b.steps == 9, "resume finishes the run")
  check(same_list(b.history.loss, a.history.loss), "the same losses")
  check(same_tree(net_weights(b.net), net_weights(a.net)), "the same final weights")
  check(capture(function() b.verbose = true; b:resume(); b.verbose = false end):find("nothing to resume", 1, true),
        "resume after the end says so")
end)

test("an epoch's time: the whole epoch across a pause, less time waiting on the window", function()
  local function spin(s) local c0 = sys.clock() repeat until sys.clock() - c0 >= s end
  local data = random_set(51, 64)
  local t = nn.Trainer{net = mlp(52), data = data, batch = 16, verbose = true}
  -- step 2 works 0.3 s, then Ctrl-C pauses the epoch; the resumed part is quick
  t:on_step(function(tr) if tr.steps == 2 and tr.epochs == 0 then spin(0.3); nn._interrupt() end end)
  local _, _, how = capture(function() return t:fit{epochs = 1} end)
  check(how == "paused", "paused in the epoch")
  local out = capture(function() return t:resume() end)
  local s = tonumber(out:match("epoch 1/1: .-, ([%d.]+) s, "))
  check(s and s >= 0.3, "the epoch's time counts the part before the pause: " .. out)
  -- a step hook that waits (as the window's pause does) says so in t.waited; that is not training
  local w = nn.Trainer{net = mlp(53), data = data, batch = 16, verbose = true}
  w:on_step(function(tr) if tr.steps == 1 then spin(0.6); tr.waited = (tr.waited or 0) + 0.6 end end)
  local wout = capture(function() return w:fit{epochs = 1} end)
  local ws = tonumber(wout:match("epoch 1/1: .-, ([%d.]+) s, "))
  check(ws and ws < 0.5, "time waiting on the window is left out: " .. wout)
  check(not nn._poll_interrupt(), "no interrupt left behind")
end)

test("a NaN loss stops training with a message", function()
  local data = random_set(41)
  local net = mlp(42)
  local t = nn.Trainer{net = net, data = data, batch = 16, verbose = false}
  t:step()
  t:step()
  local last = t.history.loss[2]
  net[1].weight:fill(0 / 0)
  check_error(function() t:fit{epochs = 2} end, "training stopped at step 3 (epoch 1): the loss is")
  check_error(function() t:step() end, string.format("the last finite loss was %.6g at step 2", last))
  check(t.steps == 2 and #t.history.loss == 2, "the bad step is not counted")
  check(not nn._poll_interrupt(), "no interrupt left behind")
end)

test("t:step, t:epoch and schedules", function()
  local data = random_set(51, 40)
  local net = mlp(52)
  local opt = optim.SGD(net, {lr = 0.1})
  local t = nn.Trainer{net = net, data = data, optim = opt, batch = 16, shuffle = false,
                       schedule = optim.schedule.step{every = 2, gamma = 0.5}, verbose = false}
  check(type(t:step()) == "number" and t.pos == 1 and t.steps == 1, "one step")
  local loss, acc = t:epoch()
  check(t.epochs == 1 and t.pos == 0 and t.steps == 3 and type(loss) == "number" and acc >= 0, "rest of the epoch")
  t:epoch()
  check(same_list(t.history.lr, {0.1, 0.1, 0.05, 0.05, 0.025, 0.025}), "lr per step from the schedule")
  check(tostring(t):find("2 epochs and 6 steps done", 1, true), "printed")
  local calls = 0
  t:on_step(function(tr) calls = calls + 1; check(tr == t, "hook gets the trainer") end)
  t:step()
  check(calls == 1, "on_step hook called")
  check_error(function() nn.Trainer{net = net, data = data, batches = 3} end, "unknown option 'batches'")
  check_error(function() nn.Trainer{net = net, data = 3} end, "data must be a data set")
  check_error(function() nn.Trainer{data = data} end, "net must be a network")
  check_error(function() t:fit{epoch = 1} end, "unknown option 'epoch'")
end)

test("any object with size and get is a data set", function()
  local tds = random_set(61, 20)
  local lua_ds = {size = function() return 20 end, get = function(_, i) return tds:get(i) end}
  local function losses(data)
    local net = mlp(62)
    local t = nn.Trainer{net = net, data = data, batch = 8, verbose = false}
    t:fit{epochs = 2}
    return t.history.loss, net
  end
  local a = losses(tds)
  local b, net = losses(lua_ds)
  check(same_list(a, b), "the Lua path trains exactly like the C gather")
  local r1, r2 = nn.evaluate(net, tds, {batch = 7}), nn.evaluate(net, lua_ds)
  check(r1.top1 == r2.top1 and math.abs(r1.loss - r2.loss) < 1e-6, "evaluate on both, any batch size")
  local no_loss = nn.evaluate(net, tds, {loss = false})
  check(no_loss.loss == nil and no_loss.top1 == r1.top1, "loss=false")
  check_error(function() nn.evaluate(net, tds, {batch = 0}) end, "batch must be a whole number >= 1")
end)

test("Ctrl-C inside a step leaves everything as it was", function()
  local function trainer()
    local data = random_set(71, 32)
    local net = mlp(72, true)
    tensor.seed(73)
    return nn.Trainer{net = net, data = data, batch = 16, verbose = false}
  end
  local a = trainer()
  a:step()
  a:step()
  local b = trainer()
  b:step()
  local before = net_weights(b.net)
  nn._interrupt() -- raised before the step: the C step stops at its first layer
  local loss, why = b:step()
  check(loss == nil and why == "interrupted", "step reports the interrupt")
  check(b.steps == 1 and b.pos == 1 and #b.history.loss == 1, "nothing counted")
  check(same_tree(net_weights(b.net), before), "weights untouched")
  check(nn._poll_interrupt(), "the flag is still up for the caller")
  b:step()
  check(same_list(b.history.loss, a.history.loss), "the redone batch gives the uninterrupted loss")
  check(same_tree(net_weights(b.net), net_weights(a.net)), "and the same weights (dropout draws restored)")
end)

test("fit prints epochs and evaluates", function()
  local data = random_set(81, 32)
  local net = mlp(82)
  local t = nn.Trainer{net = net, data = data, batch = 16}
  local out = capture(function() t:fit{epochs = 2, eval = random_set(83, 16)} end)
  check(out:find("epoch 1/2: loss %d%.%d+, train acc %d+%.%d%%, test acc %d+%.%d%% %(loss %d%.%d+%)"),
        "one summary line per epoch: " .. out)
  check(out:find("epoch 2/2", 1, true), "second epoch")
  check(#t.history.test_acc == 2 and #t.history.test_loss == 2, "test history")
  check(t:fit{epochs = 1, verbose = false} and t.epochs == 3, "verbose = false and more epochs")
end)

test("Ctrl-C during the evaluation pauses; resume evaluates again", function()
  local data, tds = random_set(91, 32), random_set(92, 16)
  local fired = false
  local eval_set = {
    size = function() return 16 end,
    get = function(_, i)
      if not fired then fired = true; nn._interrupt() end
      return tds:get(i)
    end,
  }
  local t = nn.Trainer{net = mlp(93), data = data, batch = 16, verbose = false}
  local _, status = t:fit{epochs = 2, eval = eval_set}
  check(status == "paused" and t.epochs == 0 and t.pos == 2, "paused after the epoch's last batch")
  check(#t.history.test_acc == 0 and #t.history.train_acc == 0, "the epoch is not closed")
  t:resume()
  check(t.epochs == 2 and #t.history.test_acc == 2 and #t.history.train_acc == 2, "evaluated both epochs")
  t:step()
  t:step()
  t:fit{epochs = 1}
  check(t.epochs == 3 and #t.history.test_acc == 3, "an epoch finished by hand is closed by fit")
end)

-- data.loader (the data module) hands the trainer ready batches in its own seeded order.
if data and data.loader then
  test("a data.loader as the trainer's data", function()
    local function setup()
      tensor.seed(101)
      local ds = data.from_tensors(tensor.rand(40, 1, 4, 4), (tensor.rand(40) * 3 - 0.5):to("i32") + 1)
      local ld = data.loader(ds, {batch = 8, seed = 4, normalize = {mean = 0.5, std = 0.25}, augment = {flip = true}})
      tensor.seed(102)
      return nn.Sequential{nn.Flatten(), nn.Linear(16, 3)}, ld
    end
    local function run(interrupt_at)
      local net, ld = setup()
      local t = nn.Trainer{net = net, data = ld, verbose = false}
      if interrupt_at then t:on_step(function(tr) if tr.steps == interrupt_at then nn._interrupt() end end) end
      local _, status = t:fit{epochs = 3}
      if status == "paused" then t:resume() end
      return t, ld
    end
    local a, ld = run()
    check(a.steps == 15 and a.batch == 8 and a:steps_per_epoch() == 5, "5 batches of 8 per epoch")
    local b = run(7)
    check(same_list(a.history.loss, b.history.loss), "paused and resumed: the same batches and losses")
    check(same_tree(net_weights(a.net), net_weights(b.net)), "the same weights")
    local net, ld2 = setup()
    local c = nn.Trainer{net = net, data = ld2, verbose = false}
    for _ = 1, 7 do c:step() end
    local path = os.tmpname()
    c:save(path)
    local _, ld3 = setup()
    local d = nn.Trainer.load(path, {data = ld3, verbose = false})
    os.remove(path)
    d:fit{epochs = 2}
    check(same_list(a.history.loss, d.history.loss), "saved, loaded with a new loader, continued: the same losses")
    local net2, ld4 = setup()
    local e = nn.Trainer{net = net2, data = ld4, verbose = false}
    e:step()
    nn._interrupt()
    check(e:step() == nil and e.steps == 1, "interrupted inside the step (the loader's batch was taken)")
    nn._poll_interrupt()
    e:step()
    check(same_list(e.history.loss, {a.history.loss[1], a.history.loss[2]}), "the loader gives that batch again")
    local r = nn.evaluate(a.net, ld)
    check(r.count == 40 and r.top1 >= 0, "evaluate goes once through a loader")
    check_error(function() nn.Trainer{net = a.net, data = ld, batch = 4} end, "the loader makes batches of 8")
  end)
end
