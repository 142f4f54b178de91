-- viz.lua: the Lua half of viz: the panels (gathering histories, feature maps, weights and
-- predictions from trainers, networks and data sets) and the live views that training refreshes.
-- Run once by nl_open_viz with the private C helpers P (dsl/viz.c) and the Canvas metatable;
-- returns the help rows of what it defines.
local P, CanvasMT = ...
local viz = viz

local util = require "nnlab.util"
local help_rows, doc = util.help_rows("viz")

-- ---------------------------------------------------------------- small helpers

local raise, check_options, check_int = util.error, util.check_options, util.check_int

local function is_canvas(x) return getmetatable(x) == CanvasMT end
local function is_trainer(x)
  return type(x) == "table" and type(x.history) == "table" and type(x.on_step) == "function"
end
local function is_history(x) return type(x) == "table" and type(x.loss) == "table" end



local size_options = {"width", "height"}
local function with(list, ...)
  local out = {...}
  for _, v in ipairs(list) do out[#out + 1] = v end
  return out
end

-- A new canvas for a view, at the size asked for or the window's.
local function new_canvas(view, opts)
  return P.canvas(view, opts.width, opts.height)
end

-- ---------------------------------------------------------------- networks

-- The first Conv2d in m, depth first (m itself when it is one), or nil.
local function first_conv(m)
  if m:type() == "Conv2d" then return m end
  for i = 1, #m do
    local found = first_conv(m[i])
    if found then return found end
  end
  return nil
end

-- A layer given as a Module or a 1-based position in net.
local function resolve_layer(net, layer, fname)
  if nn.is_module(layer) then return layer end
  if math.type(layer) == "integer" then
    local m = net[layer]
    if not m then raise(string.format("%s: the network has no layer %d (it has %d)", fname, layer, #net)) end
    return m
  end
  raise(fname .. ": layer must be a Module or a position in the network (1-based)")
end

-- The output of layer when net runs on one image ([C, H, W], or already a batch of one), in
-- evaluation mode (the mode is restored).
local function feature_output(net, layer, image, fname)
  local x = image
  if x:dim() < 4 then x = x:reshape(1, table.unpack(x:shape())) end
  if x:device() ~= net:device() then x = x:to(net:device()) end
  local was = net.training
  net:eval()
  local ok, err = pcall(net.forward, net, x)
  net:train(was)
  if not ok then raise(fname .. ": the network could not run the image: " .. util.reason(err, fname)) end
  local out = layer:output()
  if not out then raise(fname .. ": the layer did not run: is it part of the network?") end
  return out
end

-- The quantized layers and the kind of their weights.
local quantized = {QConv2d = "int8", QLinear = "int8", Int4Conv2d = "int4", Int4Linear = "int4"}

-- Every weight of net for the histograms, depth first: {name = "Conv2d 1.weight", value = Tensor}.
-- A quantized layer gives its integer levels (quant.levels: one bar per level, qmin..qmax; each
-- channel or group has its own scale, so the weights themselves mix the grids and hide the
-- levels), or with levels == false its weights in real units (quant.weights).
local function weights(net, levels)
  local list = {}
  local function visit(m, path)
    local kind = quantized[m:type()]
    if kind then
      local name = m:type() .. (path ~= "" and " " .. path or "")
      if levels == false then
        list[#list + 1] = {name = name .. " weights (" .. kind .. ", real units)", value = quant.weights(m)}
      else
        local v, lo, hi = quant.levels(m)
        local per = kind == "int8" and "channel" or "group"
        list[#list + 1] = {name = name .. " " .. kind .. " levels (weight / " .. per .. " scale)",
                           value = v, qmin = lo, qmax = hi}
      end
    else
      for _, p in ipairs(m:parameters()) do
        if p.name == "weight" then
          list[#list + 1] = {name = m:type() .. " " .. (path ~= "" and path .. "." or "") .. "weight",
                             value = p.value}
        end
      end
    end
    for i = 1, #m do visit(m[i], path == "" and tostring(i) or path .. "." .. i) end
  end
  visit(net, "")
  return list
end

-- The data set under a data.loader (or data itself).
local function samples_of(data)
  local ok, ds = pcall(function() return data:dataset() end)
  return ok and ds or data
end

-- The first image of a data set or loader (for the dashboard's feature maps), or nil.
local function first_image(data)
  if type(data) ~= "table" and type(data) ~= "userdata" then return nil end
  local ok, x = pcall(function() return samples_of(data):get(1) end)
  if ok and tensor.is_tensor(x) and x:dim() >= 2 then return x end
  return nil
end

-- The class names of a data set or loader (or a list of names), or nil.
local function class_names(x)
  if type(x) == "table" and type(x[1]) == "string" then return x end
  local ok, names = pcall(function() return samples_of(x):classes() end)
  return ok and type(names) == "table" and names or nil
end

-- A function normalising images [C, H, W] or [N, C, H, W] as a loader does,
-- (x - mean) / std per channel ({mean=, std=}: numbers or one per channel); identity for nil.
local function normalizer(spec, fname)
  if spec == nil then return function(x) return x end end
  if type(spec) ~= "table" or spec.mean == nil or spec.std == nil then
    raise(fname .. ": normalize must be {mean = m, std = s} (numbers or lists per channel)")
  end
  local function per_channel(v)
    if type(v) == "number" then return v end
    return tensor.from(v):reshape(#v, 1, 1)
  end
  local mean, std = per_channel(spec.mean), per_channel(spec.std)
  return function(x) return (x - mean) / std end
end

-- ---------------------------------------------------------------- runs

-- The saved runs of a folder (a run folder, or a folder of them: t:record), each
-- {source = history, label = folder name, run = runs.load's table}.
local function saved_runs(dir, fname)
  local R = require "nnlab.runs"
  local dirs = R.dirs(dir, fname)
  if #dirs == 0 then raise(string.format("%s: no run folders in '%s' (t:record(dir) writes them)", fname, dir)) end
  local out = {}
  for i, d in ipairs(dirs) do
    local r = R.load(d)
    out[i] = {source = r.history, label = r.name, run = r}
  end
  return out
end

-- The runs of viz.curves: a trainer, a history {loss = {...}, ...}, a run folder (or a folder of
-- them), a list of those, or a table of them by name. Returns {{source = trainer or history,
-- label = nil | name [, run = a saved run]}, ...}.
local function runs_of(x, fname)
  if is_trainer(x) or is_history(x) then return {{source = x}} end
  if type(x) == "string" then return saved_runs(x, fname) end
  if type(x) ~= "table" then
    raise(fname .. ": expected a trainer, a history {loss = {...}}, a run folder or a list of them")
  end
  local runs = {}
  for i, r in ipairs(x) do
    if type(r) == "string" then
      for _, saved in ipairs(saved_runs(r, fname)) do runs[#runs + 1] = saved end
    elseif not (is_trainer(r) or is_history(r)) then
      raise(string.format("%s: run %d is not a trainer, a history or a run folder", fname, i))
    else
      runs[#runs + 1] = {source = r, label = "run " .. i}
    end
  end
  if #runs == 0 then
    local names = {}
    for k, r in pairs(x) do
      if type(k) == "string" and (is_trainer(r) or is_history(r)) then names[#names + 1] = k end
    end
    table.sort(names)
    for i, k in ipairs(names) do runs[i] = {source = x[k], label = k} end
  end
  if #runs == 0 then raise(fname .. ": no runs given") end
  return runs
end

-- The runs in the form P.curves reads: {label=, loss=, train_acc=, test_acc=}. A trainer inside an
-- epoch adds that epoch's running training accuracy as its last point, so the accuracy panel
-- shows something from the first steps on.
local function run_tables(runs)
  local out = {}
  for i, r in ipairs(runs) do
    local t = is_trainer(r.source) and r.source or nil
    local h = t and t.history or r.source
    local train_acc = h.train_acc
    if t and t.pos > 0 and t.sums and t.sums.n > 0 then
      train_acc = {table.unpack(h.train_acc)}
      train_acc[#train_acc + 1] = t.sums.correct / t.sums.n
    end
    out[i] = {label = r.label, loss = h.loss, train_acc = train_acc, test_acc = h.test_acc}
  end
  return out
end

-- ---------------------------------------------------------------- live views

-- Views that training keeps up to date, by view name: {canvas=, every=, draw=, trainers=, fixed=,
-- mark=}.
local live = {}
local hooked = setmetatable({}, {__mode = "k"})

-- What a live view was drawn from: its trainers' progress and the drawing size.
local function mark(l)
  local st = viz.status()
  local parts = {l.fixed and "" or (st.width .. "x" .. st.height)}
  for t in pairs(l.trainers) do
    parts[#parts + 1] = string.format("%d:%d:%d", t.steps, t.epochs, #t.history.test_acc)
  end
  return table.concat(parts, " ")
end

-- Draws a live view again (into a new canvas when the drawing size changed) and shows it
-- without making it the current view.
local function redraw(view)
  local l = live[view]
  local w, h = l.canvas:size()
  local st = viz.status()
  if not l.fixed and (st.width ~= w or st.height ~= h) then l.canvas = P.canvas(view) end
  l.draw(l.canvas)
  l.mark = mark(l)
  P.publish(l.canvas, false)
end

-- Redraws a live view; one whose redraw fails stops being live, with a message (a picture must
-- never stop training).
local function safe_redraw(view)
  local ok, err = pcall(redraw, view)
  if not ok then
    live[view] = nil
    print("viz: the " .. view .. " view stopped following training: " .. tostring(err))
  end
end

-- Redraws the live views that are out of date (training moved on since, or the window was
-- resized); C calls it while the REPL waits and in viz.show and viz.wait.
function P.refresh()
  for view, l in pairs(live) do
    if l.mark ~= mark(l) then safe_redraw(view) end
  end
end

-- The trainers' step hook: keeps the window responsive (and waits while paused), and refreshes
-- the live views of this trainer every `every` steps.
local function on_step(t)
  local waited = P.tick() -- seconds paused in the window: not training time
  if waited > 0 then t.waited = (t.waited or 0) + waited end
  for view, l in pairs(live) do
    if l.trainers[t] and t.steps % l.every == 0 then safe_redraw(view) end
  end
end

-- Hooks the trainer's steps (once): they pump the window, wait while paused, refresh live views.
-- Under several ranks only rank 1 draws: the others' trainers are left alone.
local function hook(t)
  if not hooked[t] and P.drawing() then
    hooked[t] = true
    t:on_step(on_step)
  end
end

-- Makes view live for trainers (or static when there are none).
local function watch(view, canvas, trainers, every, draw, fixed)
  local l = {canvas = canvas, every = every, draw = draw, fixed = fixed,
             trainers = setmetatable({}, {__mode = "k"})}
  for _, t in ipairs(trainers) do
    l.trainers[t] = true
    hook(t)
  end
  l.mark = mark(l)
  live[view] = #trainers > 0 and l or nil
end

function viz.watch(t)
  if not is_trainer(t) then raise("viz.watch: expected a trainer (nn.Trainer{...})") end
  hook(t)
  return t
end
doc("watch", "viz.watch(trainer) -> trainer",
    "Keeps the window responsive during the trainer's fit (space pauses it) without a live panel: "
    .. "viz.curves(t) and viz.dashboard(t) do this by themselves.",
    "t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)), verbose = false}; viz.watch(t); t:step()")

-- Draws a panel into a new canvas, makes it the current view and, with trainers, live. Under
-- several ranks rank 1 draws; the other ranks get the canvas blank and nothing live.
local function panel(view, opts, trainers, every, draw)
  local c = new_canvas(view, opts)
  if not P.drawing() then return c end
  draw(c)
  P.publish(c)
  watch(view, c, trainers, every, draw, opts.width ~= nil or opts.height ~= nil)
  return c
end

-- ---------------------------------------------------------------- panels

function viz.curves(x, opts)
  local f = "viz.curves"
  local runs = runs_of(x, f)
  opts = check_options(opts, with(size_options, "every"), f)
  local every = check_int(opts.every or 50, "every", 1, f)
  local trainers = {}
  for _, r in ipairs(runs) do
    if is_trainer(r.source) then trainers[#trainers + 1] = r.source end
  end
  if #runs == 1 then runs[1].label = nil end
  return panel("curves", opts, trainers, every, function(c) P.curves(c, run_tables(runs)) end)
end
doc("curves", "viz.curves(runs [, {every=50, width=, height=}]) -> Canvas",
    "Training loss per step (with a smoothed line) and train/test accuracy per epoch. runs: a "
    .. "trainer, a history {loss=, train_acc=, test_acc=}, a run folder (t:record; or a folder of "
    .. "them, e.g. \"runs\"), or a list (or {name = run}) of them, "
    .. "overlaid with a legend. Trainers keep it live: it is redrawn every `every` steps of fit.",
    "c = viz.curves{loss = {2.3, 1.9, 1.4, 1.1, 0.9}, train_acc = {0.4, 0.6}, test_acc = {0.38, 0.55}}; print(c)")

function viz.sensitivity(result, opts)
  local f = "viz.sensitivity"
  if type(result) ~= "table" or type(result.amounts) ~= "table" or type(result.layers) ~= "table" then
    raise(f .. ": expected the result of prune.sensitivity (a table with amounts and layers)")
  end
  opts = check_options(opts, size_options, f)
  if #result.layers > 16 then raise(string.format("%s: at most 16 layers at once, got %d", f, #result.layers)) end
  local layers = {}
  for i, l in ipairs(result.layers) do
    layers[i] = {label = tostring(l.path) .. " " .. tostring(l.type), test_acc = l.top1}
  end
  return panel("sensitivity", opts, {}, 50, function(c)
    P.sensitivity(c, result.amounts, layers, tonumber(result.baseline))
  end)
end
doc("sensitivity", "viz.sensitivity(result [, {width=, height=}]) -> Canvas",
    "The result of prune.sensitivity as a picture: test accuracy against the percentage of one layer's "
    .. "weights pruned, one line per layer, and the unpruned accuracy as a grey line.",
    "ds = nn.TensorDataset(tensor.randn(16, 4), tensor.ones(16)); "
    .. "c = viz.sensitivity(prune.sensitivity(nn.Sequential(nn.Linear(4, 3)), ds, {amounts = {0.5, 0.9}})); print(c)")

-- A list of numbers from a table or a 1-D tensor (any tensor: its elements in order).
local function number_list(v, what, f)
  if tensor.is_tensor(v) then return v:reshape(-1):to("cpu"):totable() end
  if type(v) ~= "table" then raise(string.format("%s: %s must be a table of numbers or a Tensor, got %s", f, what, type(v))) end
  for i, x in ipairs(v) do
    if type(x) ~= "number" then raise(string.format("%s: %s[%d] is a %s, expected a number", f, what, i, type(x))) end
  end
  return v
end

function viz.plot(xs, ys, opts)
  local f = "viz.plot"
  if ys == nil or (type(ys) == "table" and not tensor.is_tensor(ys) and ys[1] == nil and next(ys) ~= nil) then
    xs, ys, opts = nil, xs, ys -- viz.plot(ys [, opts])
  end
  opts = check_options(opts, with(size_options, "label", "title", "xlabel", "ylabel"), f)
  local y = number_list(ys, "ys", f)
  local x = xs ~= nil and number_list(xs, "xs", f) or nil
  if x and #x ~= #y then raise(string.format("%s: %d xs and %d ys", f, #x, #y)) end
  local series = {{x = x, y = y, label = opts.label}}
  return panel("plot", opts, {}, 1, function(c) P.xy(c, series, false, opts.title, opts.xlabel, opts.ylabel) end)
end
doc("plot", "viz.plot([xs,] ys [, {label=, title=, xlabel=, ylabel=, width=, height=}]) -> Canvas",
    "A line plot of your own values (tables of numbers or tensors; xs default 1, 2, ...), into the "
    .. "window and PNG like every panel.",
    "c = viz.plot({1, 2, 3, 4}, {1, 4, 9, 16}, {title = \"squares\", xlabel = \"n\", ylabel = \"n^2\"})")

function viz.scatter(xs, ys, classes, opts)
  local f = "viz.scatter"
  if type(classes) == "table" and not tensor.is_tensor(classes) and classes[1] == nil and next(classes) ~= nil then
    classes, opts = nil, classes
  end
  opts = check_options(opts, with(size_options, "title", "xlabel", "ylabel"), f)
  local x, y = number_list(xs, "x", f), number_list(ys, "y", f)
  if #x ~= #y then raise(string.format("%s: %d x values and %d y values", f, #x, #y)) end
  local series = {}
  if classes == nil then
    series[1] = {x = x, y = y}
  else
    local k = number_list(classes, "classes", f)
    if #k ~= #x then raise(string.format("%s: %d points and %d classes", f, #x, #k)) end
    local by, order = {}, {}
    for i, c in ipairs(k) do
      if math.type(c) ~= "integer" and c ~= math.floor(c) then raise(string.format("%s: classes[%d] = %s is not a whole number", f, i, c)) end
      c = math.tointeger(c)
      if not by[c] then by[c] = {x = {}, y = {}, label = "class " .. c}; order[#order + 1] = c end
      local s = by[c]
      s.x[#s.x + 1], s.y[#s.y + 1] = x[i], y[i]
    end
    table.sort(order)
    if #order > 16 then raise(f .. ": at most 16 classes, got " .. #order) end
    for _, c in ipairs(order) do series[#series + 1] = by[c] end
  end
  return panel("scatter", opts, {}, 1, function(c) P.xy(c, series, true, opts.title, opts.xlabel, opts.ylabel) end)
end
doc("scatter", "viz.scatter(x, y [, classes] [, {title=, xlabel=, ylabel=, width=, height=}]) -> Canvas",
    "Points (x[i], y[i]), coloured by class (whole numbers; a legend \"class k\") when classes is given.",
    "c = viz.scatter({0, 1, 2, 3}, {1, 0, 1, 0}, {1, 1, 2, 2}, {title = \"two classes\"})")

function viz.image(t, opts)
  local f = "viz.image"
  if not tensor.is_tensor(t) then raise(f .. ": expected a Tensor [H, W] or [C, H, W], got " .. type(t)) end
  opts = check_options(opts, with(size_options, "title", "grey"), f)
  return panel("image", opts, {}, 1, function(c) P.image(c, t, opts.grey, opts.title) end)
end
doc("image", "viz.image(t [, {title=, grey=false, width=, height=}]) -> Canvas",
    "A tensor as a picture, aspect kept, scaled from its smallest to its largest value: [H, W] "
    .. "through the colour map (grey=true: grey levels), [3, H, W] as RGB, other [C, H, W]: channel 1.",
    "c = viz.image(tensor.arange(1, 13):reshape(3, 4), {title = \"a 3 x 4 tensor\"})")

function viz.decision(net, box, opts)
  local f = "viz.decision"
  if not nn.is_module(net) then raise(f .. ": the first argument must be a network taking [N, 2] points") end
  if type(box) ~= "table" then raise(f .. ": expected the bounds {xmin, xmax, ymin, ymax}") end
  local b = {}
  for i, k in ipairs{"xmin", "xmax", "ymin", "ymax"} do
    b[i] = box[k] or box[i]
    if type(b[i]) ~= "number" then raise(string.format("%s: %s must be a number, got %s", f, k, type(b[i]))) end
  end
  if not (b[1] < b[2] and b[3] < b[4]) then raise(f .. ": expected xmin < xmax and ymin < ymax") end
  opts = check_options(opts, with(size_options, "data", "res", "title"), f)
  local res = check_int(opts.res or 100, "res", 2, f)
  local pts = {}
  for j = 0, res - 1 do
    for i = 0, res - 1 do
      pts[#pts + 1] = {b[1] + (i + 0.5) * (b[2] - b[1]) / res, b[3] + (j + 0.5) * (b[4] - b[3]) / res}
    end
  end
  local was = net.training
  net:eval()
  local ok, out = pcall(net.forward, net, tensor.from(pts):to(net:device()))
  net:train(was)
  if not ok then raise(f .. ": " .. tostring(out)) end
  if out:dim() ~= 2 then raise(f .. ": the network's output must be [N, classes]") end
  local classes = (out:argmax(2):to("cpu") - 1):reshape(res, res)
  local series = {}
  if opts.data ~= nil then
    local x, y = opts.data:tensors()
    if x:dim() ~= 2 or x:shape()[2] ~= 2 then raise(f .. ": data must hold 2-D points [N, 2]") end
    local xs, lab = x:to("cpu"):totable(), y:to("cpu"):totable()
    local k = out:shape()[2]
    for c = 1, math.min(k, 16) do series[c] = {x = {}, y = {}, label = "class " .. c} end
    for i, p in ipairs(xs) do
      local s = series[math.tointeger(lab[i])]
      if s then s.x[#s.x + 1], s.y[#s.y + 1] = p[1], p[2] end
    end
  end
  return panel("decision", opts, {}, 1, function(c)
    P.decision(c, classes:to("i32"), b, series, opts.title or "decision regions")
  end)
end
doc("decision", "viz.decision(net, {xmin, xmax, ymin, ymax} [, {data=, res=100, title=, width=, height=}]) -> Canvas",
    "A 2-D classifier's decision regions: the class it predicts over the box (a res x res grid, in "
    .. "eval mode), one colour per class, with data's points (a TensorDataset of [N, 2] points) on top.",
    "c = viz.decision(nn.Linear(2, 2), {-1, 1, -1, 1}, {res = 20})")

function viz.features(net, layer, image, opts)
  local f = "viz.features"
  if not nn.is_module(net) then raise(f .. ": the first argument must be a network") end
  if not tensor.is_tensor(image) then raise(f .. ": image must be a Tensor [C, H, W]") end
  opts = check_options(opts, with(size_options, "title"), f)
  local m = resolve_layer(net, layer, f)
  local out = feature_output(net, m, image, f)
  local input = image:dim() >= 2 and image or nil
  local title = tostring(m) .. ": " .. table.concat(out:shape(), " x ", 2) .. " output"
  if opts.title then title = tostring(opts.title) .. " - " .. title end
  return panel("features", opts, {}, 1, function(c) P.features(c, input, out, title) end)
end
doc("features", "viz.features(net, layer, image [, {width=, height=, title=}]) -> Canvas",
    "Every channel of layer's output (a Module of net, or its position) when net runs on image "
    .. "[C, H, W] in eval mode: tiled, each channel in its own range through the colormap, the input "
    .. "beside. title goes before the layer's name (\"before training\").",
    "net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()); c = viz.features(net, 1, tensor.rand(3, 16, 16)); print(c)")

function viz.filters(layer, opts)
  local f = "viz.filters"
  if not nn.is_module(layer) then raise(f .. ": expected a Conv2d layer or a network") end
  opts = check_options(opts, with(size_options, "title"), f)
  local m = first_conv(layer)
  if not m then raise(f .. ": " .. layer:type() .. " has no Conv2d layer") end
  local title = (opts.title and (tostring(opts.title) .. " - ") or "") .. tostring(m) .. " filters"
  return panel("filters", opts, {}, 1, function(c) P.filters(c, m.weight, title) end)
end
doc("filters", "viz.filters(conv [, {width=, height=, title=}]) -> Canvas",
    "A convolution's filters (the first Conv2d of a network): as RGB tiles when they see 3 "
    .. "channels (the first layer), else one grey tile per input channel, all in one range.",
    "print(viz.filters(nn.Conv2d(3, 8, 5)))")

function viz.profile(p, opts)
  local f = "viz.profile"
  if type(p) ~= "table" or type(p.rows) ~= "table" or type(p.peak_gflops) ~= "number" then
    raise(f .. ": expected the result of nn.profile")
  end
  opts = check_options(opts, size_options, f)
  local text = string.format("time per layer (%s, %d thread(s), peak %.0f GFLOP/s): %.0f images/s, %.0f%% of the limit",
                             p.isa or "?", p.threads or 1, p.peak_gflops, p.images_s or 0,
                             p.limit_images_s and 100 * (p.images_s or 0) / p.limit_images_s or 0)
  return panel("profile", opts, {}, 1, function(c) P.profile(c, p.rows, text) end)
end
doc("profile", "viz.profile(p [, {width=, height=}]) -> Canvas",
    "nn.profile's result as a bar chart: one bar per layer, its length the layer's time (forward solid, "
    .. "backward lighter), its colour the % of the machine's fp32 peak it ran at (grey: no counted arithmetic).",
    "p = nn.profile(nn.Sequential{nn.Conv2d(3, 8, 3), nn.ReLU()}, tensor.randn(4, 3, 16, 16), {reps = 1, quiet = true}); print(viz.profile(p))")

function viz.histogram(net, opts)
  local f = "viz.histogram"
  if not nn.is_module(net) then raise(f .. ": expected a network or a layer") end
  opts = check_options(opts, with(size_options, "levels"), f)
  if opts.levels ~= nil and type(opts.levels) ~= "boolean" then
    raise(f .. ": levels must be true or false, got " .. type(opts.levels))
  end
  return panel("histogram", opts, {}, 1, function(c) P.histogram(c, weights(net, opts.levels)) end)
end
doc("histogram", "viz.histogram(net [, {width=, height=, levels=true}]) -> Canvas",
    "One histogram per layer's weights. Exact zeros are counted apart and drawn as a red bar at 0 "
    .. "with their share, so pruned weights stay visible. Quantized layers (quant.int8, quant.int4) "
    .. "show their integer levels, one bar per level (the title says int8 or int4 levels); "
    .. "levels=false shows their weights in real units instead.",
    "print(viz.histogram(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))))")

function viz.confusion(result, names, opts)
  local f = "viz.confusion"
  if type(result) ~= "table" or not tensor.is_tensor(result.confusion) then
    raise(f .. ": expected the result of nn.evaluate (a table with a confusion matrix)")
  end
  opts = check_options(opts, size_options, f)
  local list = names and class_names(names)
  return panel("confusion", opts, {}, 1, function(c) P.confusion(c, result.confusion, list) end)
end
doc("confusion", "viz.confusion(result [, names | dataset] [, {width=, height=}]) -> Canvas",
    "The confusion matrix of nn.evaluate's result as a heat map (each cell coloured by its share "
    .. "of the true class's row), with counts and class names (a list, or a data set's classes()).",
    "r = {confusion = tensor.from({{8, 2}, {1, 9}})}; print(viz.confusion(r, {\"cat\", \"dog\"}))")

function viz.samples(net, data, n, opts)
  local f = "viz.samples"
  if not nn.is_module(net) then raise(f .. ": the first argument must be a network") end
  data = samples_of(data)
  if type(data) ~= "table" and type(data) ~= "userdata" or not pcall(function() return data:size() end) then
    raise(f .. ": the second argument must be a data set or a data.loader")
  end
  opts = check_options(opts, with(size_options, "first", "normalize"), f)
  local normalize = normalizer(opts.normalize, f)
  local first = check_int(opts.first or 1, "first", 1, f)
  n = math.min(check_int(n or 16, "n", 1, f), data:size() - first + 1)
  if n < 1 then raise(string.format("%s: the data set has %d samples", f, data:size())) end
  local xs, labels = {}, {}
  for i = 1, n do
    local x, y = data:get(first + i - 1)
    xs[i], labels[i] = x, type(y) == "number" and y or false
  end
  local x = P.stack(xs)
  if x:dim() ~= 4 then raise(f .. ": samples must be images [C, H, W]") end
  local was = net.training
  net:eval()
  local xin = normalize(x)
  if xin:device() ~= net:device() then xin = xin:to(net:device()) end
  local ok, out = pcall(net.forward, net, xin)
  net:train(was)
  if not ok then raise(f .. ": the network could not run the samples: " .. util.reason(out, f)) end
  local names = class_names(data)
  return panel("samples", opts, {}, 1, function(c) P.samples(c, x, labels, out, names) end)
end
doc("samples", "viz.samples(net, data, n=16 [, {first=1, normalize={mean=, std=}, width=, height=}]) -> Canvas",
    "n images of a data set (or a loader's) with their true label, the network's prediction and "
    .. "its top-3 probabilities (eval mode; normalize as the training loader did); wrong "
    .. "predictions are framed in red.",
    "ds = nn.TensorDataset(tensor.rand(4, 3, 8, 8), tensor.from{1, 2, 1, 2}); net = nn.Sequential(nn.Flatten(), nn.Linear(192, 2)); print(viz.samples(net, ds, 4))")

-- The dashboard's status line.
local function status_line(t)
  local loss = t.history.loss[#t.history.loss]
  return string.format("epoch %d, step %d, loss %s   (window keys: space pause, tab next view, "
                       .. "s save, q close)", t.epochs + (t.pos > 0 and 1 or 0), t.steps,
                       loss and string.format("%.4f", loss) or "-")
end

local dashboard_options = with(size_options, "every", "layer", "image", "normalize", "extra")

-- The function drawing trainer t's dashboard into a canvas, with opts checked (viz.dashboard's).
local function dashboard_draw(t, opts, f)
  local layer = opts.layer and resolve_layer(t.net, opts.layer, f) or first_conv(t.net)
  local image = opts.image or first_image(t.data)
  if image ~= nil and not tensor.is_tensor(image) then raise(f .. ": image must be a Tensor [C, H, W]") end
  local extra = opts.extra
  if extra ~= nil then
    if type(extra) == "string" then extra = {extra} end
    if type(extra) ~= "table" or #extra == 0 or #extra > 16 then
      raise(f .. ": extra must be a list of 1 to 16 names of values that t:on_step functions return, e.g. {\"grad_norm\"}")
    end
    for i, name in ipairs(extra) do
      if type(name) ~= "string" then raise(string.format("%s: extra[%d] must be a name, got %s", f, i, type(name))) end
    end
  end
  local input = image and normalizer(opts.normalize, f)(image)
  local runs = {{source = t}}
  return function(c)
    local out = layer and image and feature_output(t.net, layer, input, f)
    local series
    if extra then
      series = {}
      local values = t.history.extra or {}
      for i, name in ipairs(extra) do series[i] = {y = values[name] or {}, label = name} end
    end
    P.dashboard(c, run_tables(runs), out and image, out, out and (tostring(layer) .. " output"),
                weights(t.net), status_line(t), series)
  end
end

function viz.dashboard(t, opts)
  local f = "viz.dashboard"
  if not is_trainer(t) then raise(f .. ": expected a trainer (nn.Trainer{...})") end
  opts = check_options(opts, dashboard_options, f)
  local every = check_int(opts.every or 50, "every", 1, f)
  return panel("dashboard", opts, {t}, every, dashboard_draw(t, opts, f))
end
doc("dashboard", "viz.dashboard(trainer [, {every=50, layer=, image=, normalize={mean=, std=}, extra={names}, width=, height=}]) -> Canvas",
    "Curves, feature maps (of layer, default the first Conv2d, for image, default the data's first, "
    .. "normalized as given before the network sees it), weight histograms and, with extra, the values "
    .. "named there that t:on_step functions return ({grad_norm = ...}) per step, together, redrawn "
    .. "every `every` steps while the trainer fits; with viz.show() the window follows training, "
    .. "and space pauses it.",
    "t = nn.Trainer{net = nn.Linear(2, 2), data = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)), verbose = false}; c = viz.dashboard(t, {every = 1}); t:step(); print(c)")

function viz.save(path, what)
  local f = "viz.save"
  if type(path) ~= "string" then raise(f .. ": expected a file name, e.g. viz.save(\"runs/curves.png\")") end
  util.check_path(path)
  if is_canvas(what) then
    for view, l in pairs(live) do
      if l.canvas == what then redraw(view) end
    end
    what:save(path)
    return path
  end
  if what ~= nil and type(what) ~= "string" then raise(f .. ": the second argument must be a Canvas or a view name") end
  if not P.drawing() then return path end -- under several ranks, rank 1 writes the pictures
  local view = what or P.current()
  if not view then raise(f .. ": nothing drawn yet: draw a panel first (viz.curves(t), viz.dashboard(t), ...)") end
  if live[view] then redraw(view) end
  P.save_view(path, view)
  return path
end
doc("save", "viz.save(path [, canvas | view name]) -> path",
    "Writes the current view (or a panel's Canvas, or the view of that name: \"dashboard\", "
    .. "\"curves\", ...) as a PNG file, atomically, creating folders; live views are redrawn first. "
    .. "Under several ranks only rank 1 draws panels and writes pictures (the others' canvases stay blank).",
    "local p = os.tmpname(); viz.save(p, viz.curves{loss = {2, 1.5, 1}}); os.remove(p)")

-- ---------------------------------------------------------------- saved runs

-- The final figure of a run for viz.compare: by metric (default: the last test accuracy when any
-- run has one, else the last training accuracy).
local metrics = {test_acc = "test accuracy", train_acc = "train accuracy", train_loss = "train loss",
                 test_loss = "test loss", loss = "last step's loss", best_test_acc = "best test accuracy"}

function viz.compare(list, opts)
  local f = "viz.compare"
  opts = check_options(opts, with(size_options, "by", "metric", "title", "labels"), f)
  local runs = runs_of(list, f)
  if opts.labels ~= nil and (type(opts.labels) ~= "table" or #opts.labels ~= #runs) then
    raise(string.format("%s: labels must be a list of %d texts, one per run", f, #runs))
  end
  local R = require "nnlab.runs"
  local finals = {}
  for i, r in ipairs(runs) do
    if not r.run then raise(string.format("%s: run %d is not a saved run: give run folders (t:record)", f, i)) end
    finals[i] = R.final(r.run)
  end
  local metric = opts.metric
  if metric == nil then
    metric = "train_acc"
    for _, x in ipairs(finals) do if x.test_acc then metric = "test_acc" end end
  end
  if not metrics[metric] then
    local names = {}
    for k in pairs(metrics) do names[#names + 1] = k end
    table.sort(names)
    raise(string.format("%s: metric must be one of %s, got %s", f, table.concat(names, ", "), tostring(metric)))
  end
  local by, xs, xlabel = opts.by, {}, "run"
  if by ~= nil then
    if type(by) ~= "string" then raise(f .. ": by must be the name of a recorded param, e.g. \"lr\"") end
    local lo, hi = math.huge, -math.huge
    for i, x in ipairs(finals) do
      local v = x.params[by]
      if type(v) ~= "number" then
        raise(string.format("%s: run %s has no numeric param %s (its params: %s)", f, x.name, by,
                            x.params_text ~= "" and x.params_text or "none"))
      end
      xs[i], lo, hi = v, math.min(lo, v), math.max(hi, v)
    end
    xlabel = by
    if lo > 0 and hi / lo >= 10 then -- lr and the like span decades
      for i, v in ipairs(xs) do xs[i] = math.log(v, 10) end
      xlabel = "log10(" .. by .. ")"
    end
  else
    for i = 1, #finals do xs[i] = i end
  end
  local points = {}
  for i, x in ipairs(finals) do
    local v = x[metric]
    if (metric == "test_acc" or metric == "train_acc" or metric == "best_test_acc") and v then v = 100 * v end
    points[i] = {x = {xs[i]}, y = {v or 0 / 0}}
    runs[i].label = opts.labels and tostring(opts.labels[i]) or runs[i].label or x.name
  end
  local ylabel = metrics[metric] .. ((metric:find("acc") and " (%)") or "")
  local title = opts.title or (metrics[metric] .. " of each run" .. (by and (" against " .. by) or " (1 = first run)"))
  return panel("compare", opts, {}, 1, function(c) P.compare(c, run_tables(runs), points, title, xlabel, ylabel) end)
end
doc("compare", "viz.compare(runs [, {by=, metric=, title=, labels=, width=, height=}]) -> Canvas",
    "Saved runs side by side: run folders (t:record, nn.Trainer{run = ...}) or a folder of them. Their "
    .. "curves overlaid with a legend on top, and below one dot per run, in its colour: its final "
    .. "metric (test_acc when the runs were evaluated, else train_acc; also train_loss, test_loss, "
    .. "loss, best_test_acc) against the recorded param `by` (log10 when it spans decades) or the "
    .. "run's number. labels: the legend's texts (default: the folders' names).",
    "-- viz.compare({\"runs/lr0.1\", \"runs/lr0.01\"}, {by = \"lr\"})")

-- For run folders (dsl/runs.lua): writes trainer t's dashboard to path as a PNG without showing
-- it (opts as viz.dashboard's, and the size: default 1280 x 800).
local internal = {}
function internal.dashboard_png(t, path, opts)
  local f = "viz.dashboard"
  opts = check_options(opts, dashboard_options, f)
  local c = P.canvas("run", opts.width or 1280, opts.height or 800)
  dashboard_draw(t, opts, f)(c)
  c:save(path)
end
package.loaded["nnlab.viz"] = internal

return util.publish(help_rows, {viz = viz})
