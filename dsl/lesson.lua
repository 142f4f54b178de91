-- lesson.lua: guided lessons with checked exercises (lesson.list, start, next, check, hint, reset,
-- define, load, get, expect, spirals, spirals_mlp). Run once by nl_open_lesson with P = {builtin = {{file=,
-- text=}...} (lessons/*.lua, loaded on first use), save = fn(path, text) -> true | nil, reason,
-- rng_state, set_rng_state}; returns the help rows. Progress is kept in $HOME/.nnlab/lessons.
local P = ...
local util = require "nnlab.util"
local raise, check_path, quiet = util.error, util.check_path, util.quiet

local help_rows, doc = util.help_rows("lesson")

lesson = {}
local lessons, order = {}, {}  -- name -> definition; names in the order they were defined
local builtin_done = false
local current                  -- {name =, step =} of the lesson started, or nil
local progress                 -- name -> {step =, passed = {[i] = true}}, read on first use
local progress_path            -- the progress file, false when there is none, nil before first use
local progress_note            -- why progress is not saved (said once)
local hints_shown = {}         -- "name/step" -> how many hints were shown

-- ---------------------------------------------------------------- text

-- A lesson's text as written in a long string: the blank lines around it and the indentation
-- common to its lines removed.
local function dedent(text)
  text = text:gsub("^%s*\n", ""):gsub("%s+$", "")
  local indent
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if line:find("%S") then
      local lead = #line:match("^ *")
      indent = indent and math.min(indent, lead) or lead
    end
  end
  if not indent or indent == 0 then return text end
  local out = {}
  for line in (text .. "\n"):gmatch("(.-)\n") do out[#out + 1] = line:sub(indent + 1) end
  return table.concat(out, "\n")
end

-- ---------------------------------------------------------------- progress file

local function progress_file()
  if progress_path == nil then
    local home = os.getenv("HOME")
    if home and home ~= "" then
      progress_path = home .. "/.nnlab/lessons"
    else
      progress_path, progress_note = false, "HOME is not set"
    end
  end
  return progress_path
end

-- Reads the progress file once; a missing file is no progress, a line that does not parse is
-- skipped (the file is the user's, not ours to trust).
local function load_progress()
  if progress then return progress end
  progress = {}
  local path = progress_file()
  local f = path and io.open(path, "r")
  if not f then return progress end
  for line in f:lines() do
    local name, step, passed = line:match("^([%w_%-%.]+)%s+(%d+)%s*([%d,]*)%s*$")
    if name and #step < 6 then
      local p = {step = math.tointeger(tonumber(step)), passed = {}}
      for i in passed:gmatch("%d+") do
        if #i < 6 then p.passed[math.tointeger(tonumber(i))] = true end
      end
      progress[name] = p
    end
  end
  f:close()
  return progress
end

-- Writes the progress file; a failure is said once and lessons go on without saving.
local function save_progress()
  local path = progress_file()
  if not path then return end
  local names = {}
  for name in pairs(progress) do names[#names + 1] = name end
  table.sort(names)
  local lines = {"# nnlab lessons: name, current step, steps passed"}
  for _, name in ipairs(names) do
    local p, passed = progress[name], {}
    for i in pairs(p.passed) do passed[#passed + 1] = i end
    table.sort(passed)
    lines[#lines + 1] = string.format("%s %d %s", name, p.step, table.concat(passed, ","))
  end
  local ok, why = P.save(path, table.concat(lines, "\n") .. "\n")
  if not ok and not progress_note then
    progress_note = why
    print("lesson: progress is not saved (" .. tostring(why) .. "); the lessons go on without it")
  end
end

local function progress_of(name)
  local all = load_progress()
  all[name] = all[name] or {step = 1, passed = {}}
  return all[name]
end

local function count_passed(name)
  local n, p = 0, load_progress()[name]
  for i in pairs(p and p.passed or {}) do
    if lessons[name] and i <= #lessons[name].steps then n = n + 1 end
  end
  return n
end

-- ---------------------------------------------------------------- define and load

local function builtins()
  if builtin_done then return end
  builtin_done = true
  for _, b in ipairs(P.builtin) do
    local chunk = assert(load(b.text, "=lessons/" .. b.file .. ".lua", "t"))
    chunk()
  end
end

local function check_step(f, i, s)
  local where = string.format("%s: steps[%d]", f, i)
  if type(s) ~= "table" then raise(where .. " must be a table {text, check = function(env) ... end, hint = ...}") end
  local text = s.text or s[1]
  if type(text) ~= "string" then raise(where .. ": the text (first entry or text=) must be a string, got " .. type(text)) end
  for _, k in ipairs{"check", "setup"} do
    if s[k] ~= nil and type(s[k]) ~= "function" then
      raise(string.format("%s.%s must be a function (env) -> %s, got %s", where, k,
                          k == "check" and "ok, message" or "nothing", type(s[k])))
    end
  end
  local hint = s.hint
  if type(hint) == "string" then hint = {hint} end
  if hint ~= nil and type(hint) ~= "table" then raise(where .. ".hint must be a string or a list of strings") end
  for j, h in ipairs(hint or {}) do
    if type(h) ~= "string" then raise(string.format("%s.hint[%d] must be a string", where, j)) end
  end
  return {text = dedent(text), check = s.check, setup = s.setup, hint = hint or {}}
end

function lesson.define(def)
  local f = "lesson.define"
  builtins() -- they come first in the list
  if type(def) ~= "table" then raise(f .. ": expected a table {title, steps = {{text, check = ..., hint = ...}, ...}}") end
  local title = def.title or def[1]
  if type(title) ~= "string" or title == "" then raise(f .. ": the title (first entry or title=) must be a string") end
  local name = def.name or title:lower():gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", "")
  if type(name) ~= "string" or not name:match("^[%w_%-]+$") or #name > 40 then
    raise(f .. ": name must be a word of letters, digits, '-' or '_' (at most 40), got " .. tostring(name))
  end
  if type(def.steps) ~= "table" or #def.steps == 0 then raise(f .. ": steps must be a non-empty list of steps") end
  local steps = {}
  for i, s in ipairs(def.steps) do steps[i] = check_step(f, i, s) end
  local l = {name = name, title = title, steps = steps, intro = def.intro and dedent(def.intro)}
  if not lessons[name] then order[#order + 1] = name end
  lessons[name] = l
  return l
end
doc("define", "lesson.define{title, name=, intro=, steps = {{text, check = function(env) ... end, hint = , setup = }, ...}} -> lesson",
    "Defines (or redefines) a lesson. Each step explains (text) and may ask for something: "
    .. "check(env) gets the globals and returns true [, message] when it is done, or false, message "
    .. "saying precisely what is wrong (an error it raises counts as false). hint: a string or a list "
    .. "shown one at a time; setup(env) runs when the step is shown. name defaults to the title in "
    .. "lower case with dashes.",
    "lesson.define{\"Doubling\", name = \"double\", steps = {{\"Set y = 2 * 21.\", check = function(env) "
    .. "return env.y == 42, \"y is \" .. tostring(env.y) .. \", expected 42\" end, hint = \"y = 2 * 21\"}}}")

function lesson.load(path)
  local f = "lesson.load"
  check_path(path)
  if type(path) ~= "string" then raise(f .. ": expected the path of a lesson file") end
  builtins()
  local chunk, err = loadfile(path, "t")
  if not chunk then raise(f .. ": " .. tostring(err)) end -- names the file and the line
  local before = {}
  for name, l in pairs(lessons) do before[name] = l end
  local ok, why = pcall(chunk)
  if not ok then raise(f .. ": " .. path .. " failed: " .. util.reason(why, "lesson.define")) end
  local defined
  for _, name in ipairs(order) do
    if lessons[name] ~= before[name] then defined = name end
  end
  if not defined then raise(f .. ": " .. path .. " defines no lesson (it must call lesson.define{...})") end
  local l = lessons[defined]
  print(string.format("lesson '%s' loaded: %s, %d steps. lesson.start(\"%s\") begins it.", defined, l.title,
                      #l.steps, defined))
  return quiet(defined)
end
doc("load", "lesson.load(path) -> name",
    "Runs a lesson file (one written with lesson.define, e.g. by a teacher) and returns the name of "
    .. "the lesson it defines; lesson.start(name) begins it.",
    "local p = os.tmpname(); local f = io.open(p, \"w\"); f:write('lesson.define{\"Mine\", steps = {{\"Read me.\"}}}'); "
    .. "f:close(); lesson.load(p); os.remove(p)")

local function find(name, f)
  builtins()
  if math.type(name) == "integer" then name = order[name] or name end
  local l = type(name) == "string" and lessons[name]
  if not l then
    raise(string.format("%s: no lesson '%s' (lessons: %s; lesson.list() describes them)", f, tostring(name),
                        table.concat(order, ", ")))
  end
  return l
end

function lesson.get(name)
  return find(name, "lesson.get")
end
doc("get", "lesson.get(name | number) -> lesson",
    "A lesson's definition: {name, title, intro, steps = {{text, check, hint, setup}, ...}}; a "
    .. "teacher tests a check with lesson.get(\"x\").steps[1].check(env).",
    "#lesson.get(\"tensors\").steps")

-- ---------------------------------------------------------------- the guided sequence

local function running(f)
  if not current then
    raise(f .. ": no lesson is started: lesson.list() shows the lessons, lesson.start(\"tensors\") begins one")
  end
  local l = lessons[current.name]
  current.step = math.min(current.step, #l.steps) -- redefined with fewer steps
  return l, current.step
end

-- Whether an error is a Ctrl-C ("interrupted", perhaps after a position or a function's name).
local function interrupted(err)
  return type(err) == "string" and err:match("interrupted$") ~= nil
end

-- Shows step i of lesson l, running its setup first.
local function show(l, i, env)
  local s = l.steps[i]
  current = {name = l.name, step = i}
  local p = progress_of(l.name)
  p.step = i
  save_progress()
  print(string.format("== %s: step %d of %d%s", l.title, i, #l.steps, p.passed[i] and " (passed before)" or ""))
  if i == 1 and l.intro then print(l.intro) print("") end
  if s.setup then
    local ok, err = pcall(s.setup, env or _G)
    if not ok and interrupted(err) then error(err, 0) end
    if not ok then
      print("(this step could not prepare its data: " .. util.reason(err, "lesson.start") .. ")")
    end
  end
  print(s.text)
  if s.check then
    print(string.format("-- lesson.check() checks it%s.", #s.hint > 0 and ", lesson.hint() helps" or ""))
  else
    print("-- lesson.next() goes on.")
  end
end

function lesson.list()
  builtins()
  load_progress()
  local rows, width = {}, 4
  for _, name in ipairs(order) do width = math.max(width, #name) end
  print("lessons (lesson.start(\"name\") begins or resumes one):")
  for i, name in ipairs(order) do
    local l = lessons[name]
    local done = count_passed(name)
    local mark = current and current.name == name and "*" or " "
    print(string.format("%s%2d  %-" .. width .. "s  %-48s %d/%d steps passed", mark, i, name, l.title, done, #l.steps))
    rows[i] = {name = name, title = l.title, steps = #l.steps, passed = done}
  end
  local path = progress_file()
  print(path and ("progress is kept in " .. path) or ("progress is not kept: " .. progress_note))
  return quiet(rows)
end
doc("list", "lesson.list() -> {{name, title, steps, passed}, ...}",
    "Prints the lessons (built in and loaded) with the steps passed of each.", "lesson.list()")

function lesson.start(name, step)
  local f = "lesson.start"
  local l = find(name, f)
  local p = progress_of(l.name)
  if step ~= nil then
    if math.type(step) ~= "integer" or step < 1 or step > #l.steps then
      raise(string.format("%s: step must be a whole number from 1 to %d, got %s", f, #l.steps, tostring(step)))
    end
  else
    step = math.min(math.max(p.step or 1, 1), #l.steps)
  end
  show(l, step)
end
doc("start", "lesson.start(name | number [, step])",
    "Begins a lesson, or resumes it at the step where you left it (kept in ~/.nnlab/lessons); "
    .. "step jumps to a step.",
    "lesson.start(\"tensors\")")

function lesson.next()
  local l, i = running("lesson.next")
  local s, p = l.steps[i], progress_of(l.name)
  if not s.check then p.passed[i] = true end -- read: nothing to check
  if not p.passed[i] then
    print(string.format("step %d is not passed yet: lesson.check() checks it%s (lesson.start(\"%s\", %d) jumps ahead).",
                        i, #s.hint > 0 and ", lesson.hint() helps" or "", l.name, math.min(i + 1, #l.steps)))
    return
  end
  if i == #l.steps then
    print(string.format("lesson '%s' is complete (%d of %d steps passed). lesson.list() shows the others.", l.name,
                        count_passed(l.name), #l.steps))
    return
  end
  show(l, i + 1)
end
doc("next", "lesson.next()", "Goes on to the next step once this one is passed (lesson.check()).",
    "lesson.start(\"tensors\"); lesson.next()")

function lesson.check(env)
  local l, i = running("lesson.check")
  if env ~= nil and type(env) ~= "table" then raise("lesson.check: env must be a table of values (default: the globals)") end
  local s = l.steps[i]
  local ok, msg
  if not s.check then
    ok, msg = true, "nothing to check in this step"
  else
    local fine, a, b = pcall(s.check, env or _G)
    if not fine and interrupted(a) then error(a, 0) end -- Ctrl-C stops a check as it stops anything
    if fine then
      ok, msg = a and true or false, b
    else
      ok, msg = false, "the check stopped on an error: " .. util.reason(a, "lesson.check")
    end
  end
  msg = msg ~= nil and tostring(msg) or (ok and "well done" or "not what the step asks for")
  local p = progress_of(l.name)
  if ok then
    p.passed[i] = true
    save_progress()
    print(string.format("PASS - step %d of %d: %s", i, #l.steps, msg))
    if i < #l.steps then
      print("-- lesson.next() goes on.")
    else
      print(string.format("-- that was the last step: lesson '%s' is complete.", l.name))
    end
  else
    print(string.format("NOT YET - step %d of %d: %s", i, #l.steps, msg))
  end
  return quiet({ok = ok, message = msg})
end
doc("check", "lesson.check([env]) -> {ok=, message=}",
    "Checks the current step against your globals (or env) and says precisely what is missing or "
    .. "wrong; a pass is recorded in ~/.nnlab/lessons.",
    "lesson.start(\"tensors\"); lesson.check()")

function lesson.hint()
  local l, i = running("lesson.hint")
  local hints = l.steps[i].hint
  if #hints == 0 then print("no hint for this step: read its text again with lesson.start(\"" .. l.name .. "\")") return end
  local key = l.name .. "/" .. i
  local k = math.min((hints_shown[key] or 0) + 1, #hints)
  hints_shown[key] = k
  print(string.format("hint %d of %d: %s", k, #hints, hints[k]))
end
doc("hint", "lesson.hint()", "A hint for the current step; called again, the next hint (if the step has several).",
    "lesson.start(\"tensors\"); lesson.hint()")

function lesson.reset(name)
  local f = "lesson.reset"
  local l = name == nil and (running(f)) or find(name, f)
  load_progress()[l.name] = {step = 1, passed = {}}
  for i = 1, #l.steps do hints_shown[l.name .. "/" .. i] = nil end
  save_progress()
  if current and current.name == l.name then
    show(l, 1)
  else
    print(string.format("lesson '%s': progress cleared.", l.name))
  end
end
doc("reset", "lesson.reset([name])",
    "Clears the progress of a lesson (default: the current one) and, if it is the current one, starts "
    .. "it again at step 1.",
    "lesson.reset(\"tensors\")")

-- For tests: the progress file to use (a path, or false for none); the progress read is dropped.
function lesson._progress_file(path)
  if path ~= false and type(path) ~= "string" then raise("lesson._progress_file: expected a path or false") end
  progress_path, progress, progress_note, current = path, nil, path == false and "switched off" or nil, nil
  hints_shown = {}
end
doc("_progress_file", "lesson._progress_file(path | false)",
    "For tests: keeps progress in path (false: nowhere) instead of ~/.nnlab/lessons; forgets the lesson started.",
    "lesson._progress_file(false)")

-- ---------------------------------------------------------------- helpers for checks

local function fmt(v)
  if math.type(v) == "integer" then return tostring(v) end
  if type(v) == "number" then return string.format("%.6g", v) end
  return tostring(v)
end

local function shape_text(shape) return "[" .. table.concat(shape, ", ") .. "]" end

local function index_text(shape, k) return "[" .. table.concat(util.index_of(shape, k), ",") .. "]" end

local function flat(v)
  if tensor.is_tensor(v) then return v:contiguous():reshape(-1):totable() end
  local out = {}
  local function walk(x)
    if type(x) == "table" then for _, e in ipairs(x) do walk(e) end else out[#out + 1] = x end
  end
  walk(v)
  return out
end

function lesson.expect(v, name, spec)
  local f = "lesson.expect"
  if type(name) ~= "string" then raise(f .. ": name must be the variable's name (a string)") end
  spec = util.check_options(spec, {"shape", "values", "dtype", "tol"}, f)
  if v == nil then return false, name .. " is not set yet (it is nil)" end
  if not tensor.is_tensor(v) then return false, string.format("%s is a %s, expected a Tensor", name, type(v)) end
  if spec.dtype and v:dtype() ~= spec.dtype then
    return false, string.format("%s has dtype %s, expected %s (x:to(\"%s\") converts)", name, v:dtype(), spec.dtype, spec.dtype)
  end
  local shape = v:shape()
  if spec.shape and shape_text(shape) ~= shape_text(spec.shape) then
    return false, string.format("%s has shape %s, expected %s", name, shape_text(shape), shape_text(spec.shape))
  end
  if spec.values ~= nil then
    local got, want, tol = flat(v:to("cpu")), flat(spec.values), spec.tol or 1e-5
    if #got ~= #want then
      return false, string.format("%s has %d values, expected %d", name, #got, #want)
    end
    for k = 1, #got do
      if not (math.abs(got[k] - want[k]) <= tol * math.max(1, math.abs(want[k]))) then
        return false, string.format("%s%s is %s, expected %s", name, index_text(shape, k), fmt(got[k]), fmt(want[k]))
      end
    end
  end
  return true, string.format("%s is right: shape %s", name, shape_text(shape))
end
doc("expect", "lesson.expect(value, name [, {shape=, values=, dtype=, tol=1e-5}]) -> ok, message",
    "For checks: whether value is a tensor with that shape, dtype and values (a tensor or nested table, "
    .. "relative tolerance tol), and a message naming the first difference (\"a[2,1] is 0.5, expected 4\").",
    "lesson.expect(tensor.ones(2, 2), \"a\", {shape = {2, 2}, values = {{1, 1}, {1, 0}}})")

function lesson.spirals(n, opts)
  local f = "lesson.spirals"
  n = util.check_int(n, "n", 2, f)
  opts = util.check_options(opts, {"classes", "noise", "seed"}, f)
  local k = util.check_int(opts.classes or 3, "classes", 2, f)
  local noise = opts.noise or 0.2
  if type(noise) ~= "number" or noise < 0 then raise(f .. ": noise must be a number >= 0") end
  local seed = util.check_int(opts.seed or 1, "seed", 0, f)
  local saved_seed, saved_counter = P.rng_state() -- the user's generator is left as it was
  tensor.seed(seed)
  local noise_of = tensor.randn(k * n):totable()
  P.set_rng_state(saved_seed, saved_counter)
  local x, y = {}, {}
  for c = 1, k do
    for i = 1, n do
      local r = (i - 1) / (n - 1)
      local angle = (c - 1) * 12 / k + 4 * r + noise * noise_of[(c - 1) * n + i]
      x[#x + 1], y[#y + 1] = {r * math.sin(angle), r * math.cos(angle)}, c
    end
  end
  return nn.TensorDataset(tensor.from(x), tensor.from(y, "i32"))
end
doc("spirals", "lesson.spirals(n [, {classes=3, noise=0.2, seed=1}]) -> TensorDataset",
    "Interleaved spiral arms in the plane, n points each (labels 1..classes), the noise drawn from seed "
    .. "with the random generator left as it was: the lessons' 2-D classification data.",
    "local train = lesson.spirals(200); print(train:size())")

function lesson.spirals_mlp(opts)
  local f = "lesson.spirals_mlp"
  opts = util.check_options(opts, {"hidden", "epochs"}, f)
  local hidden = util.check_int(opts.hidden or 64, "hidden", 1, f)
  local epochs = util.check_int(opts.epochs or 40, "epochs", 0, f)
  local train, test = lesson.spirals(200, {seed = 1}), lesson.spirals(100, {seed = 2})
  tensor.seed(5)
  local net = nn.Sequential{nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3)}
  nn.Trainer{net = net, data = train, batch = 32, optim = optim.Adam(net, {lr = 0.01}), verbose = false}:fit{epochs = epochs}
  return net, train, test
end
doc("spirals_mlp", "lesson.spirals_mlp([{hidden=64, epochs=40}]) -> net, train, test",
    "The trained network the pruning and quantization lessons start from: an MLP with two hidden layers "
    .. "trained with Adam on lesson.spirals(200) after tensor.seed(5) (test: lesson.spirals(100, {seed = 2})).",
    "local net, train, test = lesson.spirals_mlp{epochs = 2}; print(nn.evaluate(net, test).top1)")

-- help(lesson) lists the guided sequence first, then what teachers use.
local rank = {}
for i, name in ipairs{"list", "start", "check", "hint", "next", "reset", "define", "load", "get", "expect",
                      "spirals", "spirals_mlp", "_progress_file"} do rank[name] = i end
table.sort(help_rows, function(a, b) return rank[a.name] < rank[b.name] end)
return util.publish(help_rows, {lesson = lesson})
