-- test_harness.lua: the harness itself counts passes and failures, reports an error in a test
-- file as one failure, prints the summary last and exits 1 on failure (run as a child process).
local nnlab = arg[-1]
local harness = arg[0]

-- Runs the harness on a test file holding src; returns its output and exit code.
local function run(src)
  local file = os.tmpname()
  local f = assert(io.open(file, "w"))
  f:write(src)
  f:close()
  local p = assert(io.popen(string.format("%q %q %q 2>&1", nnlab, harness, file)))
  local out = p:read("a")
  local _, _, code = p:close()
  os.remove(file)
  return out, code
end

local function last_line(s)
  return s:match("([^\n]*)\n?$")
end

test("passing file", function()
  local out, code = run([[
check(true, "t")
check_close(1.0, 1.0 + 1e-7, 1e-6, "close")
check_close(tensor.from{{1, 2}}, {{1, 2}}, 0, "tensor against table")
check_error(function() error("shapes [2, 3] and [4]") end, "[2, 3]", "plain text")
check_error(function() error("index 12 out") end, "index %d+", "pattern")
test("group", function() check(1 == 1, "in a group") end)
]])
  check(last_line(out) == "6 passed, 0 failed", "summary: " .. out)
  check(code == 0, "exit status " .. tostring(code))
end)

test("failing checks", function()
  local out, code = run([[
check(false, "plain failure")
check(nil)
check_close(1, 1.1, 1e-3, "far")
check_close(0/0, 0/0, 1, "nan")
check_close(tensor.zeros(2, 3), {0, 0}, 1, "shape")
check_error(function() end, "x", "no error")
check_error(function() error("abc") end, "xyz", "wrong message")
test("group", function() error("boom") end)
check(true)
]])
  check(last_line(out) == "1 passed, 8 failed", "summary: " .. out)
  check(code == 1, "exit status " .. tostring(code))
  check(out:find("plain failure", 1, true), "names the failed check")
  check(out:find(":1: plain failure", 1, true), "gives the test file's line")
  check(out:find("shape 2x3, expected 2", 1, true), "names both shapes")
  check(out:find("boom", 1, true), "shows a group's error")
end)

test("error in the file", function()
  local out, code = run("check(true)\nlocal x = nil + 1\ncheck(true)\n")
  check(last_line(out) == "1 passed, 1 failed", "summary: " .. out)
  check(code == 1, "exit status " .. tostring(code))
  local syntax_out, syntax_code = run("check(true\n")
  check(last_line(syntax_out) == "0 passed, 1 failed", "syntax error: " .. syntax_out)
  check(syntax_code == 1, "syntax error exit status")
end)

test("capture", function()
  local text, a, b = capture(function(x) print("one", 2) print(x) return x, 7 end, "three")
  check(text == "one\t2\nthree", "captured text: " .. text)
  check(a == "three" and b == 7, "passes results through")
  local real = print
  local ok, err = pcall(capture, error, "inner")
  check(not ok and err == "inner" and print == real, "re-raises errors and restores print")
end)
