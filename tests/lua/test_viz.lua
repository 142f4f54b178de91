-- test_viz.lua: the viz module without a window: every panel from real trainers, networks and
-- data sets, live refresh during fit, saving, keys and views, degenerate inputs, errors.

-- Pixels of c on a grid of step pixels that satisfy pred(r, g, b).
local function count(c, pred, step)
  local w, h = c:size()
  local n = 0
  for y = 1, h, step or 5 do
    for x = 1, w, step or 5 do
      if pred(c:pixel(x, y)) then n = n + 1 end
    end
  end
  return n
end
local function inked(r, g, b) return r + g + b < 720 end
local function red(r, g, b) return r == 214 and g == 39 and b == 40 end

-- A small hash of c's pixels on a grid, to see whether a redraw changed it.
local function fingerprint(c)
  local w, h = c:size()
  local acc = 0
  for y = 1, h, 3 do
    for x = 1, w, 3 do
      local r, g, b = c:pixel(x, y)
      acc = (acc * 31 + r * 65536 + g * 256 + b) % 2147483647
    end
  end
  return acc
end

local function png_signature(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local head = f:read(8)
  f:close()
  return head == "\137PNG\r\n\26\n"
end

local function tiny_cnn(channels)
  return nn.Sequential(nn.Conv2d(3, channels, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
                       nn.Flatten(), nn.Linear(channels * 4 * 4, 3))
end

local function tiny_data(n)
  local labels = {}
  for i = 1, n do labels[i] = (i % 3) + 1 end
  return nn.TensorDataset(tensor.rand(n, 3, 8, 8), tensor.from(labels))
end

test("nothing drawn yet", function()
  check_error(function() viz.save(os.tmpname()) end, "nothing drawn yet", "save without a view")
  check(viz.status().view == nil and #viz.status().views == 0, "no views")
  if os.getenv("DISPLAY") == nil and os.getenv("WAYLAND_DISPLAY") == nil then
    local ok, why = viz.show()
    check(ok == false and why:find("no display", 1, true), "show without a display: " .. tostring(why))
    check(not viz.status().open, "stays closed")
  end
end)

test("curves", function()
  local c = viz.curves{loss = {2.3, 1.9, 1.4, 1.1, 0.9}, train_acc = {0.4, 0.6}, test_acc = {0.38, 0.55}}
  local w, h = c:size()
  check(w == 1200 and h == 720, "default size " .. w .. " x " .. h)
  check(count(c, inked) > 500, "draws something")
  check(viz.status().view == "curves", "becomes the current view")
  check(tostring(c) == "Canvas(curves, 1200 x 720)", tostring(c))
  local empty = viz.curves{loss = {}}
  local nan = viz.curves{loss = {1, 0 / 0, 2, math.huge}, test_acc = {0 / 0}}
  check(count(empty, inked) > 50 and count(nan, inked) > 50, "empty and NaN series draw axes")
  local t1 = nn.Trainer{net = tiny_cnn(2), data = tiny_data(12), batch = 4, verbose = false}
  local t2 = nn.Trainer{net = tiny_cnn(2), data = tiny_data(12), batch = 4, verbose = false, seed = 2}
  t1:fit{epochs = 2}
  t2:fit{epochs = 1}
  check(count(viz.curves({t1, t2}), inked) > 500, "two trainers overlaid")
  check(count(viz.curves({sgd = t1, adam = t2.history}), inked) > 500, "named runs")
  check_error(function() viz.curves(42) end, "expected a trainer", "a number")
  check_error(function() viz.curves({1, 2}) end, "run 1 is not a trainer", "a list of numbers")
  check_error(function() viz.curves({loss = {}}, {colour = 1}) end, "unknown option 'colour'", "options")
  check_error(function() c:pixel(0, 1) end, "outside", "pixels are 1-based")
end)

test("sensitivity: accuracy per amount pruned, one line per layer", function()
  local result = {amounts = {0.2, 0.5, 0.8}, baseline = 0.9,
                  layers = {{path = "1", type = "Conv2d", top1 = {0.9, 0.8, 0.3}},
                            {path = "4", type = "Linear", top1 = {0.9, 0.88, 0.85}}}}
  local c = viz.sensitivity(result)
  check(viz.status().view == "sensitivity", "its own view")
  local w, h = c:size()
  -- the lowest row of each layer's colour: the conv line falls to 30%, the linear stays high
  local function lowest(r0, g0, b0)
    local y_max, n = 0, 0
    for y = 1, h do
      for x = 1, w * 3 // 4, 2 do -- left of the legend
        local r, g, b = c:pixel(x, y)
        if r == r0 and g == g0 and b == b0 then y_max, n = math.max(y_max, y), n + 1 end
      end
    end
    return y_max, n
  end
  local conv_y, conv_n = lowest(31, 119, 180)
  local lin_y, lin_n = lowest(255, 127, 14)
  local _, base_n = lowest(150, 150, 150)
  check(conv_n > 100 and lin_n > 100 and base_n > 100, string.format("a line per layer and the baseline: %d %d %d",
        conv_n, lin_n, base_n))
  check(conv_y > lin_y + h // 4, string.format("accuracy on y: the conv line ends far lower (rows %d, %d)", conv_y, lin_y))
  -- the real thing from prune.sensitivity
  local net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
  local ds = nn.TensorDataset(tensor.randn(32, 4), (tensor.rand(32) * 3 - 0.5):to("i32") + 1)
  check(count(viz.sensitivity(prune.sensitivity(net, ds, {amounts = {0.5, 0.9}})), inked) > 500,
        "draws prune.sensitivity's result")
  check_error(function() viz.sensitivity({loss = {}}) end, "expected the result of prune.sensitivity", "not a result")
end)

test("pictures read well: axis labels, colours, bars, tiles, titles", function()
  local function is(r0, g0, b0) return function(r, g, b) return r == r0 and g == g0 and b == b0 end end
  local blue, orange, ink = is(31, 119, 180), is(255, 127, 14), is(40, 40, 40)
  local function count_in(c, x0, y0, x1, y1, pred, step)
    local n = 0
    for y = y0, y1, step or 1 do
      for x = x0, x1, step or 1 do if pred(c:pixel(x, y)) then n = n + 1 end end
    end
    return n
  end
  -- the y axis label stays clear of long tick labels (0.95960 ...)
  local c = viz.curves{loss = {0.95941, 0.95952, 0.95963, 0.9595}}
  local w, h = c:size()
  local ticks = {}
  for y = 30, h - 40 do
    local r, g, b = c:pixel(120, y)
    if r == 228 and g == 228 and b == 228 then ticks[#ticks + 1] = y end
  end
  local function near_tick(y)
    for _, t in ipairs(ticks) do if y >= t - 11 and y <= t + 9 then return true end end
    return false
  end
  local tick_left, label_right = math.huge, 0
  for y = 30, h - 40 do
    for x = 1, 57 do
      local r, g, b = c:pixel(x, y)
      if r + g + b < 450 then
        if near_tick(y) then tick_left = math.min(tick_left, x) else label_right = math.max(label_right, x) end
      end
    end
  end
  check(#ticks >= 3 and tick_left < 57, "tick labels found: " .. #ticks .. " ticks, leftmost ink " .. tick_left)
  check(label_right < tick_left - 1, string.format("the y label (to column %d) is clear of the tick labels (from %d)",
                                                   label_right, tick_left))
  -- train and test accuracy in two colours; a trainer's first epoch shows its running accuracy
  c = viz.curves{loss = {1, 0.5}, train_acc = {0.4, 0.6}, test_acc = {0.38, 0.55}}
  local ax = math.floor(w * 0.6)
  check(count_in(c, ax, 1, w, h, orange) > 20 and count_in(c, ax, 1, w, h, blue) > 20,
        "train (orange) and test (blue) accuracy differ in colour")
  local t = nn.Trainer{net = tiny_cnn(2), data = tiny_data(12), batch = 4, verbose = false}
  t:step()
  t:step()
  c = viz.curves(t)
  check(count_in(c, ax, 1, w, h, orange) > 5, "the first epoch's running training accuracy shows")
  -- the tallest histogram bar stays below the frame
  c = viz.histogram(nn.Linear(64, 64))
  local frame
  for y = 20, h do
    if ink(c:pixel(w // 2, y)) and ink(c:pixel(w // 2 + 40, y)) then frame = y break end
  end
  local top
  for y = (frame or 1), h do
    if count_in(c, 1, y, w, y, blue) > 0 then top = y break end
  end
  check(frame and top and top > frame + 3, string.format("the tallest bar (row %s) is below the frame (row %s)",
                                                         tostring(top), tostring(frame)))
  -- three layers' histograms fill the view: the bottom-right quarter has bars too
  c = viz.histogram(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)))
  check(count_in(c, w // 2, h // 2, w, h, blue, 3) > 200, "the bottom-right quarter is used: "
        .. count_in(c, w // 2, h // 2, w, h, blue, 3))
  -- feature and filter pictures take a title, so before and after differ
  local net = tiny_cnn(2)
  local img = tensor.rand(3, 8, 8)
  local a = viz.features(net, 1, img, {title = "before training"})
  local b = viz.features(net, 1, img, {title = "after 1 epoch"})
  local differ = false
  for y = 1, 24 do for x = 1, w, 2 do differ = differ or select(1, a:pixel(x, y)) ~= select(1, b:pixel(x, y)) end end
  check(differ, "titled feature pictures differ in their titles")
  check(count(viz.filters(net, {title = "after"}), inked) > 50, "filters take a title too")
  -- tab with one view says so
  local p = io.popen("'" .. arg[-1] .. "' -e 'viz.curves{loss = {1}}; viz.press(\"tab\"); print(viz.status().note)' 2>&1")
  local note = p:read("a")
  p:close()
  check(note:find("only one view", 1, true), "tab with one view says so: " .. note)
end)

test("features, filters, one channel", function()
  local net = tiny_cnn(4)
  local img = tensor.rand(3, 8, 8)
  local c = viz.features(net, 1, img)
  check(count(c, inked) > 1000, "feature maps of layer 1")
  check(count(viz.features(net, net[2], img), inked) > 1000, "a layer given as a module")
  check(count(viz.features(net, 5, img), inked) > 200, "a Linear output (one row)")
  local one = nn.Sequential(nn.Conv2d(3, 1, 3), nn.ReLU())
  check(count(viz.features(one, 1, img), inked) > 1000, "a layer with one channel")
  check(net.training, "the network's mode is restored")
  check_error(function() viz.features(net, 9, img) end, "has no layer 9", "a layer out of range")
  check_error(function() viz.features(net, 1, tensor.rand(4, 8, 8)) end, "could not run", "a wrong image")
  check(count(viz.filters(net), inked) > 1000, "RGB filters of the first layer")
  check(count(viz.filters(nn.Conv2d(4, 2, 3)), inked) > 1000, "per-channel filters")
  check_error(function() viz.filters(nn.Linear(2, 2)) end, "has no Conv2d", "not a convolution")
end)

test("histogram shows zeros", function()
  local net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
  local before = count(viz.histogram(net), red, 2)
  local w = net[1].weight
  w:copy(w:mul(w:abs():gt(0.1):to("f32")))  -- prune the small half
  local after = count(viz.histogram(net), red, 2)
  check(after > before + 20, "pruned zeros appear as a red bar (" .. before .. " -> " .. after .. ")")
end)

test("histogram of quantized layers: one bar per level", function()
  local l = nn.Linear(64, 3)
  local q = quant.int4(l, {group = 64})
  local lv = quant.levels(q[1])
  local want, seen = {}, {}
  for _, row in ipairs(lv:totable()) do
    for _, v in ipairs(row) do
      if v ~= 0 and not seen[v] then seen[v], want[#want + 1] = true, v end
    end
  end
  table.sort(want)
  local c = viz.histogram(q, {width = 640, height = 360})
  local w, h = c:size()
  local function blue(x, y) local r, g, b = c:pixel(x, y); return r == 31 and g == 119 and b == 180 end
  -- the bottom row of the bars, then the runs of bar pixels along it
  local bottom
  for y = h, 1, -1 do
    for x = 1, w do if blue(x, y) then bottom = y break end end
    if bottom then break end
  end
  local runs, x = {}, 1
  while bottom and x <= w do
    if blue(x, bottom) then
      local x0 = x
      while x <= w and blue(x, bottom) do x = x + 1 end
      runs[#runs + 1] = (x0 + x - 1) / 2
    else
      x = x + 1
    end
  end
  check(#runs == #want, #want .. " non-zero levels used, " .. #runs .. " bars")
  -- the bars sit at the levels: equal steps per level from the first bar
  local step = (runs[#runs] - runs[1]) / (want[#want] - want[1])
  local off = 0
  for i = 1, math.min(#runs, #want) do
    off = math.max(off, math.abs(runs[i] - runs[1] - step * (want[i] - want[1])))
  end
  check(off <= 1 and step >= 3, "bars at the levels' positions (off by " .. off .. " px, " .. step
        .. " px per level)")
  -- pruned weights: level 0, the red bar, grows
  local before = count(c, red, 2)
  local pl = nn.Linear(64, 3)
  pl.weight:copy(pl.weight:mul(pl.weight:abs():gt(0.06):to("f32")))
  local after = count(viz.histogram(quant.int4(pl, {group = 64}), {width = 640, height = 360}), red, 2)
  check(after > before + 20, "pruned zeros stay a red bar (" .. before .. " -> " .. after .. ")")
  local q8 = quant.int8(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)),
                        {calibrate = tensor.randn(4, 8)})
  check(count(viz.histogram(q8), inked) > 500, "int8 layers drawn")
  check(count(viz.histogram(q, {levels = false}), inked) > 200, "real units")
  check_error(function() viz.histogram(q, {levels = 1}) end, "levels must be true or false")
end)

test("confusion and samples", function()
  local net, ds = tiny_cnn(2), tiny_data(9)
  local r = nn.evaluate(net, ds)
  local c = viz.confusion(r, {"a", "b", "c"})
  check(count(c, inked) > 2000, "a heat map")
  check_error(function() viz.confusion({}) end, "nn.evaluate", "not a result")
  local s = viz.samples(net, ds, 6)
  check(count(s, inked) > 1000, "samples")
  check(count(s, red, 2) > 0, "wrong predictions are marked red")
  check(count(viz.samples(net, ds, 100, {first = 8}), inked) > 100, "n is capped by the data")
end)

-- Whether canvases a and b have the same pixels.
local function same_pixels(a, b)
  local w, h = a:size()
  local w2, h2 = b:size()
  if w ~= w2 or h ~= h2 then return false end
  for y = 1, h do
    for x = 1, w do
      local r1, g1, b1 = a:pixel(x, y)
      local r2, g2, b2 = b:pixel(x, y)
      if r1 ~= r2 or g1 ~= g2 or b1 ~= b2 then return false end
    end
  end
  return true
end

test("classes without names are numbered 1..K", function()
  local net, ds = tiny_cnn(2), tiny_data(9)
  local size = {width = 480, height = 320}
  local r = nn.evaluate(net, ds)
  local plain = viz.confusion(r, nil, size)
  check(same_pixels(plain, viz.confusion(r, {"1", "2", "3"}, size)), "confusion: numbers as the names 1, 2, 3")
  check(not same_pixels(plain, viz.confusion(r, {"0", "1", "2"}, size)), "confusion: not as 0, 1, 2")
  -- The same data set, once with the class names "1", "2", "3" (a data set only needs size, get, classes).
  local function named(list)
    return {size = function() return ds:size() end, get = function(_, i) return ds:get(i) end,
            classes = function() return list end}
  end
  local s = viz.samples(net, ds, 6, size)
  check(same_pixels(s, viz.samples(net, named{"1", "2", "3"}, 6, size)), "samples: numbers as the names 1, 2, 3")
  check(not same_pixels(s, viz.samples(net, named{"0", "1", "2"}, 6, size)), "samples: not as 0, 1, 2")
end)

test("dashboard follows training", function()
  local t = nn.Trainer{net = tiny_cnn(3), data = tiny_data(16), batch = 4, verbose = false}
  local c = viz.dashboard(t, {every = 2, width = 640, height = 400})
  local w, h = c:size()
  check(w == 640 and h == 400, "the size asked for")
  local f0 = fingerprint(c)
  t:step()
  check(fingerprint(c) == f0, "not redrawn before `every` steps")
  t:step()
  check(fingerprint(c) ~= f0, "redrawn at step 2")
  t:fit{epochs = 1}
  check(viz.status().view == "dashboard", "the dashboard is the view")
  local path = os.tmpname()
  check(viz.save(path) == path and png_signature(path), "viz.save writes a PNG")
  os.remove(path)
  check(viz.save(path, "curves") and png_signature(path), "a view by name")
  os.remove(path)
  check_error(function() viz.save(path, "nope") end, "no view named 'nope'", "an unknown view")
  check_error(function() viz.dashboard({}) end, "expected a trainer", "not a trainer")
  local mlp = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)),
                         verbose = false}
  viz.dashboard(mlp, {every = 1})
  mlp:step()
  check(viz.status().view == "dashboard", "a network without convolutions has a dashboard too")
end)

test("keys and views", function()
  local views = viz.status().views
  check(#views >= 6, "every panel is a view: " .. table.concat(views, " "))
  local first = viz.status().view
  viz.press("tab")
  check(viz.status().view ~= first, "tab moves to the next view")
  local saved = viz.press("s")
  check(type(saved) == "string" and saved:find("^runs/screenshot%-") and png_signature(saved),
        "s writes a screenshot into runs/: " .. tostring(saved))
  if saved then os.remove(saved) end
  viz.press("space")
  check(not viz.status().paused, "no pause without a window")
  check_error(function() viz.press("x") end, "unknown key", "other keys")
  viz.resize(300, 200)
  local w, h = viz.curves{loss = {1, 2}}:size()
  check(w == 300 and h == 200, "panels follow the drawing size")
  viz.resize(1200, 720)
end)

test("loaders and normalization", function()
  local ds = data.from_tensors(tensor.rand(12, 3, 8, 8), {1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3},
                               {classes = {"red", "green", "blue"}})
  local loader = data.loader(ds, {batch = 4, normalize = {mean = 0.5, std = 0.25}})
  local net = tiny_cnn(2)
  check(count(viz.samples(net, loader, 6, {normalize = {mean = {0.5, 0.5, 0.5}, std = 0.25}}), inked) > 1000,
        "samples of a loader's data set, normalized per channel")
  check_error(function() viz.samples(net, ds, 2, {normalize = {mean = 1}}) end, "normalize must be",
              "normalize needs mean and std")
  local t = nn.Trainer{net = net, data = loader, verbose = false}
  local c = viz.dashboard(t, {every = 1, normalize = {mean = 0.5, std = 0.25}, width = 600, height = 400})
  local f0 = fingerprint(c)
  t:step()
  check(fingerprint(c) ~= f0, "a dashboard of a trainer on a loader follows its steps")
  check(count(c, function(r, g, b) return math.max(r, g, b) - math.min(r, g, b) > 40 end, 3) > 300,
        "with feature maps of the loader's first image")
end)

test("watch", function()
  local t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)),
                       verbose = false}
  local hooks = #t.hooks
  check(viz.watch(t) == t and #t.hooks == hooks + 1, "one step hook")
  viz.watch(t)
  viz.dashboard(t)
  check(#t.hooks == hooks + 1, "never twice")
  check(t:step() ~= nil, "steps run")
  check_error(function() viz.watch(42) end, "expected a trainer", "not a trainer")
end)

test("a failing redraw never stops training", function()
  local t = nn.Trainer{net = tiny_cnn(2), data = tiny_data(8), batch = 4, verbose = false}
  viz.dashboard(t, {every = 1, width = 300, height = 200})
  t.history.test_acc = nil -- the next redraw fails
  local text, loss = capture(function() return t:step() end)
  check(type(loss) == "number", "the step finished")
  check(text:find("stopped following training", 1, true), "says so: " .. text)
  t.history.test_acc = {}
  check(select(2, capture(function() return t:step() end)) ~= nil, "later steps are quiet")
end)
