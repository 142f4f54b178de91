-- test_print.lua: tostring(t) / print(t): the header line and PyTorch-style values (aligned
-- columns, %.4f or scientific floats, integers, nested brackets, summaries with "...").

local function lines(s)
  local out = {}
  for line in (s .. "\n"):gmatch("(.-)\n") do out[#out + 1] = line end
  return out
end

test("small tensors", function()
  check(tostring(tensor.from{{1, 2, 3}, {4, 5, 6}}) ==
        "tensor f32 [2, 3] cpu\n" ..
        "[[1.0000, 2.0000, 3.0000],\n" ..
        " [4.0000, 5.0000, 6.0000]]", "f32 matrix")
  check(tostring(tensor.from{0.5, -1.25, 10}) ==
        "tensor f32 [3] cpu\n" ..
        "[ 0.5000, -1.2500, 10.0000]", "a common width, right-aligned")
  check(tostring(tensor.from({{1, -2}, {30, 4}}, "i32")) ==
        "tensor i32 [2, 2] cpu\n" ..
        "[[ 1, -2],\n" ..
        " [30,  4]]", "integers")
  check(tostring(tensor.from{1.6, -1.5, 300}:to("i8")) ==
        "tensor i8 [3] cpu\n" ..
        "[  2,  -2, 127]", "i8")
  check(tostring(tensor.arange(8):reshape(2, 2, 2):to("u8")) ==
        "tensor u8 [2, 2, 2] cpu\n" ..
        "[[[0, 1],\n" ..
        "  [2, 3]],\n" ..
        "\n" ..
        " [[4, 5],\n" ..
        "  [6, 7]]]", "rank 3: nested brackets, a blank line between blocks")
  check(tostring(tensor.from(3)) == "tensor f32 [] cpu\n3.0000", "0-d")
  check(tostring(tensor.zeros(0)) == "tensor f32 [0] cpu\n[]", "empty")
  check(tostring(tensor.zeros(2, 0)) == "tensor f32 [2, 0] cpu\n[]", "empty matrix")
end)

test("number formats", function()
  check(tostring(tensor.from{1e-5, 1}):find("[1.0000e-05, 1.0000e+00]", 1, true),
        "scientific when magnitudes span more than 1000x")
  check(tostring(tensor.from{1e9, 2}):find("1.0000e+09", 1, true), "scientific for big numbers")
  local special = tostring(tensor.from{0 / 0, 1 / 0, -1 / 0, 1})
  check(special:find("[   nan,    inf,   -inf, 1.0000]", 1, true), "nan and inf: " .. special)
  check(not tostring(-tensor.from{0 / 0}):find("-nan", 1, true), "no -nan")
  check(tostring(tensor.zeros(2)):find("[0.0000, 0.0000]", 1, true), "zeros stay fixed-point")
end)

test("long rows wrap at 80 columns", function()
  local l = lines(tostring(tensor.arange(100)))
  check(#l == 14, "100 values of width 7: 8 per line, 13 lines (+ header), got " .. #l)
  local widest = 0
  for i = 2, #l do widest = math.max(widest, #l[i]) end
  check(widest <= 80, "no line is wider than 80: " .. widest)
  check(l[2]:sub(1, 10) == "[ 0.0000, " and l[3]:sub(1, 2) == "  ", "continuation lines indent")
end)

test("big tensors are summarized", function()
  local s = tostring(tensor.arange(10000):reshape(100, 100))
  local l = lines(s)
  check(l[1] == "tensor f32 [100, 100] cpu", "the header names dtype, shape and device: " .. l[1])
  check(s:find("...", 1, true), "'...' marks what is left out")
  check(#l == 8, "3 + ... + 3 rows and the header: " .. #l)
  check(l[5] == " ...,", "a row of dots between the first and last rows: " .. tostring(l[5]))
  check(l[2]:find(",  ..., ", 1, true), "dots inside each row")
  check(l[2]:find("0.0000e+00", 1, true) and l[8]:find("9.9990e+03", 1, true),
        "first and last values shown")
  local m = lines(tostring(tensor.ones(1001)))
  check(#m == 2 and m[2] == "[1.0000, 1.0000, 1.0000,  ..., 1.0000, 1.0000, 1.0000]",
        "summary of a vector: " .. tostring(m[2]))
  check(not tostring(tensor.ones(1000)):find("...", 1, true), "1000 elements are shown in full")
  local i = tostring(tensor.arange(2000):reshape(2, 10, 100):to("i32"))
  check(i:find("[[[   0,    1,    2,  ...,   97,   98,   99],", 1, true), "rank-3 summary, ints")
  check(i:find("  ...,\n", 1, true), "dots between rows of a block")
end)

test("print", function()
  local t = tensor.from{{1, 2}}
  local text = capture(function() print(t) end)
  check(text == tostring(t), "print(t) prints tostring(t)")
  local view = tostring(tensor.arange(6):reshape(2, 3):t())
  check(view:find("[[0.0000, 3.0000],\n [1.0000, 4.0000],\n [2.0000, 5.0000]]", 1, true),
        "views print in logical order")
end)
