-- test_examples.lua: the lessons print what they mean to (each run as a teacher would, small): cnn.lua
-- shows its pictures as drawn, cifar10_cnn.lua prints one line per epoch counted against the whole
-- run, compress_cifar10.lua explains its figures. Each runs in a scratch folder (they write runs/).
local repo = io.popen("pwd"):read("l")
local nnlab = arg[-1]:sub(1, 1) == "/" and arg[-1] or (repo .. "/" .. arg[-1])
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p '" .. dir .. "'"))

local function run(script, args)
  local p = io.popen(string.format("cd '%s' && '%s' '%s/examples/%s' %s 2>&1", dir, nnlab, repo, script, args or ""))
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

test("cnn.lua shows its pictures as drawn, before the noise", function()
  local out, ok = run("cnn.lua")
  check(ok, "runs: " .. out:sub(-300))
  local rows = out:match("horizontal stripes %(as drawn, before the noise%):\n(.-)\nvertical")
  check(rows ~= nil, "the picture is said to be the drawing: " .. out:sub(1, 300))
  local uniform, n = true, 0
  for line in (rows or ""):gmatch("[^\n]+") do
    n = n + 1
    local cells = line:match("^  ([#.]+)$") or ""
    uniform = uniform and #cells == 16 and (cells == ("#"):rep(16) or cells == ("."):rep(16))
  end
  check(n == 8 and uniform, "horizontal stripes show as whole rows of # or .: " .. tostring(rows))
end)

test("compare_runs.lua records three runs, lists and draws them, and ranks a grid search", function()
  local out, ok = run("compare_runs.lua")
  check(ok, "runs: " .. out:sub(-600))
  for _, lr in ipairs{"0.001", "0.01", "0.1"} do
    check(out:find("\nlr" .. lr .. "%s+finished%s+15%s+285"), "run lr" .. lr .. " listed, 15 epochs: " .. out:sub(1, 600))
    local f = io.open(dir .. "/runs/spirals/lr" .. lr .. "/dashboard.png", "rb")
    check(f ~= nil, "its folder holds its dashboard")
    if f then f:close() end
  end
  check(out:find("4 trials in runs/spirals-search, ranked by test_acc:", 1, true), "the search's table")
  local first = out:match("\n1%s+trial%-%d+%s+finished.-(lr=[%d.]+ width=%d+)")
  check(first ~= nil, "the best trial names its params as whole numbers where they are: " .. out:sub(-700))
  for _, png in ipairs{"spirals-compare.png", "spirals-search.png"} do
    local f = io.open(dir .. "/runs/" .. png, "rb")
    check(f ~= nil and f:read(4) == "\137PNG", png .. " written")
    if f then f:close() end
  end
end)

test("cifar10_cnn.lua: one line per epoch, counted against the whole run", function()
  local out, ok = run("cifar10_cnn.lua", "2 640")
  check(ok, "runs: " .. out:sub(-300))
  local lines, whole = 0, true
  for k, n in out:gmatch("\nepoch (%d+)/(%d+):") do
    lines = lines + 1
    whole = whole and n == "2"
  end
  check(lines == 2 and whole, "two epoch lines, each of 2: " .. out:sub(-900))
  check(not out:find("\nepoch%s+%d+%s+loss"), "no second line per epoch")
  check(out:find("best top%-1 [%d.]+%%, final [%d.]+%%"), "best and final top-1")
end)

test("compress_cifar10.lua explains its figures", function()
  local out, ok = run("compress_cifar10.lua", "1 1 256")
  check(ok, "runs: " .. out:sub(-300))
  check(not out:find("factorized layers:", 1, true), "no stray 'factorized layers:' line")
  check(out:find("lowrank.factorize: 1 layer replaced by a pair through rank 16", 1, true), "says what factorize did")
  check(not out:find("(drop ", 1, true) and out:find("points against the baseline", 1, true),
        "changes are signed and named against the baseline")
  check(out:find("the pruned80 file is %d+ bytes against the baseline's %d+: zeros are still stored"),
        "explains why the pruned file is not smaller")
end)

os.execute("rm -rf '" .. dir .. "'")
