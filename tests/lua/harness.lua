-- harness.lua: the Lua test harness. `nnlab tests/lua/harness.lua tests/lua/test_X.lua` runs the
-- test file with the check helpers below as globals; the last line printed is "N passed, N failed"
-- (", N skipped" when skip() was called).
local path = ...
local passed, failed, skipped = 0, 0, 0
local self_src = debug.getinfo(1, "S").short_src

-- "file:line" of the test line that made the check: the first Lua frame outside this file.
local function where()
  for level = 3, 50 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.short_src ~= self_src and info.currentline > 0 then
      return info.short_src .. ":" .. info.currentline
    end
  end
  return path or "?"
end

local function record(ok, msg)
  if ok then
    passed = passed + 1
  else
    failed = failed + 1
    print(string.format("FAIL %s: %s", where(), msg))
  end
  return ok
end

-- check(cond, msg): passes when cond is truthy.
function check(cond, msg)
  return record(cond and true or false, msg or "check failed")
end

-- skip(reason): a check that cannot run here; printed as "SKIP file:line: reason" and counted.
function skip(reason)
  skipped = skipped + 1
  print(string.format("SKIP %s: %s", where(), reason))
end

-- The shape ({sizes}) and the values (a flat list) of a number, a tensor or a nested table.
local function shape_and_values(x)
  if tensor.is_tensor(x) then x = x:totable() end
  local shape, values = {}, {}
  local probe = x
  while type(probe) == "table" do
    shape[#shape + 1] = #probe
    probe = probe[1]
  end
  local function walk(v)
    if type(v) == "table" then
      for _, e in ipairs(v) do walk(e) end
    else
      values[#values + 1] = v
    end
  end
  walk(x)
  return table.concat(shape, "x"), values
end

-- check_close(a, b, tol, msg): a and b (numbers, tensors or nested tables) have the same shape
-- and every pair of values differs by at most tol (default 1e-5). NaN never passes.
function check_close(a, b, tol, msg)
  tol = tol or 1e-5
  msg = msg or "check_close"
  local sa, va = shape_and_values(a)
  local sb, vb = shape_and_values(b)
  if sa ~= sb then
    return record(false, string.format("%s: shape %s, expected %s", msg, sa, sb))
  end
  for i = 1, #va do
    local x, y = va[i], vb[i]
    if type(x) ~= "number" or type(y) ~= "number" or not (math.abs(x - y) <= tol) then
      return record(false, string.format("%s: value %d is %s, expected %s (tol %g)", msg, i,
                                         tostring(x), tostring(y), tol))
    end
  end
  return record(true)
end

-- check_error(fn, pattern, msg): fn raises an error whose message contains pattern, either as
-- plain text or as a Lua pattern.
function check_error(fn, pattern, msg)
  msg = msg or "check_error"
  local ok, err = pcall(fn)
  if ok then
    return record(false, string.format("%s: no error, expected one matching '%s'", msg, pattern))
  end
  err = tostring(err)
  local found = err:find(pattern, 1, true)
  if not found then
    local valid, at = pcall(string.find, err, pattern)
    found = valid and at
  end
  return record(found and true or false,
                string.format("%s: error '%s' does not match '%s'", msg, err, pattern))
end

-- capture(fn, ...): runs fn with the global print collecting its lines; returns them joined by
-- newlines (and fn's results after that).
function capture(fn, ...)
  local lines, real = {}, print
  print = function(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    lines[#lines + 1] = table.concat(parts, "\t", 1, parts.n)
  end
  local results = table.pack(pcall(fn, ...))
  print = real
  if not results[1] then error(results[2], 0) end
  return table.concat(lines, "\n"), table.unpack(results, 2, results.n)
end

-- net_weights(net): every parameter's values as nested tables, in parameter order (to compare
-- the weights of two runs exactly).
function net_weights(net)
  local all = {}
  for _, p in ipairs(net:parameters()) do all[#all + 1] = p.value:totable() end
  return all
end

-- test(name, fn): runs one group of checks; an error in it counts as one failure and the file
-- goes on with the next group.
function test(name, fn)
  local ok, err = xpcall(fn, debug.traceback)
  if not ok then record(false, string.format("%s: error: %s", name, tostring(err))) end
end

if not path then
  record(false, "usage: nnlab tests/lua/harness.lua tests/lua/test_X.lua")
else
  local chunk, err = loadfile(path)
  if not chunk then
    record(false, err)
  else
    local ok, e = xpcall(chunk, debug.traceback)
    if not ok then record(false, "error: " .. tostring(e)) end
  end
end
print(string.format("%d passed, %d failed", passed, failed) ..
      (skipped > 0 and string.format(", %d skipped", skipped) or ""))
os.exit(failed > 0 and 1 or 0, true)
