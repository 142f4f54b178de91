-- test_journal.lua: the rewriting of top-level locals typed at the prompt (dsl/journal.lua) on
-- tricky chunks, the example lessons pasted line by line as the REPL runs them, and the journal's
-- show/drop/clear/save. The REPL itself is driven through a terminal in tests/repl/run.sh.

local hooks = debug.getregistry()["nnlab.journal"]
local rewrite = hooks.rewrite

test("top-level locals become globals; inner ones stay", function()
  local cases = {
    {"local K, N = 3, 200", "K, N = 3, 200"},
    {"local x", "x = nil"},
    {"local a, b", "a, b = nil"},
    {"local function f(v) local y = v return y end", "function f(v) local y = v return y end"},
    {"local c <const> = 5", "c = 5"},
    {"for i = 1, 2 do local z = i end local w = 1", "for i = 1, 2 do local z = i end w = 1"},
    {"while false do local q = 1 end", "while false do local q = 1 end"},
    {"do local d = 1 end", "do local d = 1 end"},
    {"if true then local e = 1 else local e = 2 end local g = 3", "if true then local e = 1 else local e = 2 end g = 3"},
    {"s = 'local x = 1' -- local y", "s = 'local x = 1' -- local y"},
    {"s = [[\nlocal x = 1]] local u = 2", "s = [[\nlocal x = 1]] u = 2"},
    {"local t = {f = function() local inner = 1 end}", "t = {f = function() local inner = 1 end}"},
    {"repeat local r = 1 until r local v = 2", "repeat local r = 1 until r v = 2"},
    {"local f = function()", "f = function()"}, -- an unfinished chunk stays unfinished
  }
  for _, c in ipairs(cases) do
    local got = rewrite(c[1])
    check(got == c[2], string.format("%q -> %q, expected %q", c[1], got, c[2]))
  end
end)

-- Runs a file as if its lines were pasted into the REPL one by one: each complete chunk runs on
-- its own (as a separate function, so locals would not carry over without the rewrite).
local function paste(path)
  local pending, ran = nil, 0
  for line in io.lines(path) do
    pending = pending and (pending .. "\n" .. line) or line
    local code = rewrite(pending)
    local fn = load("return " .. code, "=stdin", "t")
    local err
    if not fn then fn, err = load(code, "=stdin", "t") end
    if fn then
      fn()
      ran, pending = ran + 1, nil
    elseif not err:find("<eof>$") then
      error("a pasted chunk does not compile: " .. err .. "\n" .. pending)
    end
  end
  return ran
end

test("examples/tensors.lua and examples/mlp.lua work pasted line by line", function()
  local out = io.output()
  io.output(os.tmpname())
  local real_print = print
  print = function() end -- the examples print as they go
  local ok, n1 = pcall(paste, "examples/tensors.lua")
  local ok2, n2 = true, 0
  if ok then ok2, n2 = pcall(paste, "examples/mlp.lua") end
  print = real_print
  io.output(out)
  check(ok, "tensors.lua: " .. tostring(n1))
  check(ok2, "mlp.lua: " .. tostring(n2))
  check(n1 > 5 and n2 > 5, "chunks ran")
end)

test("journal: record, show, drop, clear and save", function()
  journal.clear()
  hooks.record("a1 = 1", false)
  hooks.record("a1 + 1", true)
  hooks.record("journal.show()", false) -- the journal's own commands are left out
  local path = os.tmpname()
  journal.save(path)
  local f = io.open(path)
  local text = f:read("a")
  f:close()
  check(text:find("\na1 = 1\ndo local _ = a1 %+ 1\nend\n"), text)
  check(text:find("^%-%- nnlab session journal") and text:find("\njournal.start{seed = %d+, counter = %d+}\n"), text)
  journal.drop(1)
  journal.save(path)
  f = io.open(path)
  text = f:read("a")
  f:close()
  check(not text:find("a1 = 1", 1, true) and text:find("a1 + 1", 1, true), "chunk 1 dropped")
  check_error(function() journal.drop(5) end, "from 1 to 1")
  journal.clear()
  journal.drop() -- nothing to drop: nothing happens
  check_error(function() journal.drop(1) end, "from 1 to 0")
  os.remove(path)
end)

test("a saved journal restores the generator's starting state", function()
  tensor.seed(42)
  journal.clear()
  local first = tensor.randn(3):totable()
  hooks.record("r = tensor.randn(3)", false)
  local path = os.tmpname()
  journal.save(path)
  tensor.seed(7)
  dofile(path)
  local again = r:totable()
  for i = 1, 3 do check(first[i] == again[i], "element " .. i) end
  journal.clear()
  os.remove(path)
end)
