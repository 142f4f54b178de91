-- test_tensor_ops.lua: the Tensor API PyTorch and Torch7 users expect: indexing, views, joins and
-- splits, selection, math along a dim. Values are compared with PyTorch's (golden files written
-- by tests/golden/make_tensor_ops.py), on contiguous and non-contiguous inputs; views must share
-- memory with their base; bad arguments raise errors that name the function.

local DIR = "tests/golden/data/tensor_ops/"
local function golden(name) return tensor.load(DIR .. name .. ".npy") end

-- Flat values of a tensor (row-major).
local function flat(t)
  local out = {}
  local function walk(v)
    if type(v) == "table" then for _, e in ipairs(v) do walk(e) end else out[#out + 1] = v end
  end
  walk(t:totable())
  return out
end

-- a and b have the same shape, dtype (when given) and values within tol (NaN matches NaN, an
-- infinity the same infinity).
local function same(a, b, tol, msg, dtype)
  tol = tol or 1e-5
  local sa, sb = table.concat(a:shape(), "x"), table.concat(b:shape(), "x")
  if not check(sa == sb, string.format("%s: shape %s, expected %s", msg, sa, sb)) then return end
  if dtype then check(a:dtype() == dtype, string.format("%s: dtype %s, expected %s", msg, a:dtype(), dtype)) end
  local va, vb = flat(a), flat(b)
  for i = 1, #va do
    local x, y = va[i], vb[i]
    local ok = (x ~= x and y ~= y) or x == y or math.abs(x - y) <= tol * (1 + math.abs(y))
    if not ok then return check(false, string.format("%s: value %d is %s, expected %s", msg, i, x, y)) end
  end
  check(true)
end

local x, y = golden("x"), golden("y")
local xt = x:transpose(1, 3) -- [5, 4, 3], not contiguous

test("golden: softmax, log_softmax, cumsum", function()
  check(xt:contiguous() ~= xt, "the transposed input is not contiguous")
  for d = 1, 3 do same(x:softmax(d), golden("softmax_d" .. d), 1e-6, "softmax dim " .. d) end
  same(x:softmax(-1), golden("softmax_d3"), 1e-6, "softmax dim -1")
  same(x:softmax(), golden("softmax_d3"), 1e-6, "softmax: the last dim by default")
  same(xt:log_softmax(2), golden("log_softmax_t_d2"), 1e-6, "log_softmax of a transposed tensor")
  same(x:cumsum(2), golden("cumsum_d2"), 1e-6, "cumsum dim 2")
  same(xt:cumsum(3), golden("cumsum_t_d3"), 1e-6, "cumsum of a transposed tensor")
  same(tensor.from({1, 2, 3}, "i32"):softmax(), tensor.from{1, 2, 3}:softmax(), 0, "softmax of i32 as f32")
  same(tensor.from({{1, 2}, {3, 4}}, "i32"):cumsum(1), tensor.from({{1, 2}, {4, 6}}, "i32"), 0,
       "cumsum of i32 stays i32", "i32")
  same(tensor.from({200, 100}, "u8"):cumsum(1), tensor.from({200, 300}, "i32"), 0, "cumsum of u8 widens", "i32")
end)

test("golden: sort and topk", function()
  local v, i = x:sort(3)
  same(v, golden("sort_d3_values"), 0, "sort values")
  same(i, golden("sort_d3_indices"), 0, "sort indices (1-based)", "i32")
  v, i = xt:sort(1, true)
  same(v, golden("sort_t_d1_desc_values"), 0, "descending sort of a transposed tensor")
  same(i, golden("sort_t_d1_desc_indices"), 0, "its indices")
  v, i = x:topk(2, 2)
  same(v, golden("topk2_d2_values"), 0, "topk values")
  same(i, golden("topk2_d2_indices"), 0, "topk indices")
  v, i = x:topk(3, -1, false)
  same(v, golden("topk3_d3_smallest_values"), 0, "topk smallest")
  same(i, golden("topk3_d3_smallest_indices"), 0, "topk smallest indices")
  local s = golden("s")
  v, i = s:sort()
  same(v, golden("sort_s_values"), 0, "NaN last, infinities in place, ties stable")
  same(i, golden("sort_s_indices"), 0, "stable indices")
  v, i = s:sort(1, true)
  same(v, golden("sort_s_desc_values"), 0, "descending: NaN first")
  same(i, golden("sort_s_desc_indices"), 0, "descending: stable indices")
  v, i = tensor.from({5, 250, 7}, "u8"):sort()
  same(v, tensor.from({5, 7, 250}, "u8"), 0, "sort of u8 keeps the dtype", "u8")
  v = x:topk(0, 2)
  check(v:shape()[2] == 0, "topk(0) is empty")
end)

test("golden: gather, index_select, where, masked_fill, clamp, outer", function()
  same(x:gather(2, golden("gather_index_d2")), golden("gather_d2"), 0, "gather with i32 indices")
  same(x:gather(2, golden("gather_index_d2"):to("f32")), golden("gather_d2"), 0, "gather with f32 indices")
  same(x:index_select(3, golden("index_select_index")), golden("index_select_d3"), 0, "index_select")
  same(x:index_select(3, {5, 1, 3, 3}), golden("index_select_d3"), 0, "index_select with a table")
  same(tensor.where(x:gt(0), x, y), golden("where_xy"), 0, "where")
  same(x:where(x:gt(0), y), golden("where_xy"), 0, "t:where(cond, other)")
  same(x:masked_fill(y:lt(0), -7), golden("masked_fill"), 0, "masked_fill")
  same(x:clamp(-0.5, 0.5), golden("clamp"), 0, "clamp")
  same(x:clamp(0.25), golden("clamp_min"), 0, "clamp with a lower bound only")
  same(x:clamp(nil, 0.5), x:minimum(0.5), 0, "clamp with an upper bound only")
  same(x:clamp(tensor.zeros(5), 0.5), x:clamp(0, 0.5), 0, "clamp to a tensor bound")
  same(tensor.outer(x[1][1], y[2][2]:slice(1, 1, 3)), golden("outer"), 1e-6, "outer")
  same(x[1][1]:outer(y[2][2]:slice(1, 1, 3)), golden("outer"), 1e-6, "t:outer")
  local w = tensor.where(tensor.from({1, 0, 1}, "u8"), tensor.from({1, 2, 3}, "i32"), -1)
  same(w, tensor.from({1, -1, 3}, "i32"), 0, "where with a number keeps i32", "i32")
  same(tensor.where(tensor.from({{1}, {0}}, "u8"), 1, tensor.zeros(3)), tensor.from{{1, 1, 1}, {0, 0, 0}}, 0,
       "where broadcasts all three")
  same(tensor.from({1, 2}, "u8"):masked_fill(tensor.from({0, 1}, "u8"), 9), tensor.from({1, 9}, "u8"), 0,
       "masked_fill keeps u8", "u8")
end)

test("golden: norm, var, std, max and min", function()
  check(math.abs(x:norm() - golden("norm_all"):item()) < 1e-5, "norm of all elements is a number")
  same(x:norm(1, 2), golden("norm_p1_d2"), 1e-6, "1-norm along dim 2")
  same(x:norm(math.huge, 3), golden("norm_inf_d3"), 1e-6, "max norm along dim 3")
  same(x:norm(3, 1, true), golden("norm_p3_d1_keep"), 1e-5, "3-norm, keepdim")
  same(xt:relu():norm(0, 2), golden("norm_p0_t_d2"), 0, "0-norm counts nonzeros")
  same(x:var(2), golden("var_d2"), 1e-5, "var along dim 2")
  same(x:var(3, false, true), golden("var_biased_d3_keep"), 1e-5, "biased var, keepdim")
  check(math.abs(x:std() - golden("std_all"):item()) < 1e-5, "std of all elements")
  same(xt:std(1), golden("std_t_d1"), 1e-5, "std of a transposed tensor")
  check(tensor.from{5}:var() ~= tensor.from{5}:var(), "var of one element is NaN, as in PyTorch")
  local v, i = x:max(2)
  same(v, golden("max_d2_values"), 0, "max(dim) values")
  same(i, golden("max_d2_indices"), 0, "max(dim) indices", "i32")
  v, i = x:min(3)
  same(v, golden("min_d3_values"), 0, "min(dim) values")
  same(i, golden("min_d3_indices"), 0, "min(dim) indices")
  same(x:max(y), golden("maximum_xy"), 0, "max of two tensors")
  same(x:min(y), x:minimum(y), 0, "min of two tensors")
  local m = tensor.from{{1, 5}, {3, 4}}
  check(m:max() == 5 and m:min() == 1 and m:argmin() == 1 and m:argmax() == 2, "reductions to numbers stay")
  same(m:max(2, true), tensor.from{{5}, {4}}, 0, "max(dim, keepdim) still gives the values first")
  same(m:argmin(1), tensor.from({1, 2}, "i32"), 0, "argmin along a dim")
end)

test("golden: repeat, cat, stack, permute", function()
  same(x:slice(2, 1, 2):slice(3, 1, 3):tile(2, 1, 1, 3), golden("repeat"), 0, "tile of a slice")
  local r = x:slice(2, 1, 2):slice(3, 1, 3)
  same(r["repeat"](r, 2, 1, 1, 3), golden("repeat"), 0, "t[\"repeat\"] is tile")
  same(tensor.from{1, 2}:tile(2), tensor.from{1, 2, 1, 2}, 0, "tile along one dim")
  same(tensor.from{{1, 2}}:tile(2), tensor.from{{1, 2, 1, 2}}, 0, "missing counts are 1")
  local t = tensor.from{1, 2}
  local c = t:tile(1)
  c:fill(0)
  check(t:get(1) == 1, "tile by 1 is a copy")
  same(tensor.cat({x, y:slice(2, 1, 1)}, 2), golden("cat_d2"), 0, "cat")
  same(tensor.cat({x:transpose(2, 3):contiguous():transpose(2, 3), y:slice(2, 1, 1)}, 2), golden("cat_d2"), 0,
       "cat of a non-contiguous tensor")
  same(tensor.stack({x, y}, 3), golden("stack_d3"), 0, "stack")
  same(tensor.stack({tensor.ones(2), tensor.zeros(2)}, -1), tensor.from{{1, 0}, {1, 0}}, 0, "stack at the end")
  same(x:permute(3, 1, 2), golden("permute_312"), 0, "permute")
  same(x:permute{3, 1, 2}, golden("permute_312"), 0, "permute with a table")
  same(x:permute(-1, 1, 2), golden("permute_312"), 0, "permute with a negative dim")
  local joined = tensor.cat{tensor.from({1, 2}, "i32"), tensor.from({3}, "u8")}
  same(joined, tensor.from({1, 2, 3}, "i32"), 0, "cat promotes dtypes as arithmetic does", "i32")
  same(tensor.cat{tensor.from({1}, "u8"), tensor.from{0.5}}, tensor.from{1, 0.5}, 0, "cat with f32 is f32", "f32")
end)

-- Whether writing through v changes base (the two share memory).
local function shares(base, v)
  local before = base:sum()
  v:fill(100)
  return base:sum() ~= before
end

test("views share memory", function()
  local function fresh() return tensor.arange(24):reshape(2, 3, 4) end
  check(shares(fresh(), fresh():permute(3, 1, 2)) == false, "a new base is not shared (sanity)")
  local b = fresh()
  check(shares(b, b:permute(3, 1, 2)), "permute is a view")
  b = fresh()
  check(shares(b, b:unsqueeze(2)) and b:unsqueeze(2):dim() == 4, "unsqueeze is a view")
  b = fresh():reshape(2, 1, 12)
  check(shares(b, b:squeeze()) and b:squeeze():dim() == 2, "squeeze is a view")
  b = fresh()
  check(shares(b, b:view(6, 4)), "view is a view")
  b = fresh()
  check(shares(b, b:flatten()), "flatten of a contiguous tensor is a view")
  b = fresh()
  check(not shares(b, b:transpose(1, 3):flatten()), "flatten of a transposed one copies (as reshape)")
  b = tensor.from{{1}, {2}}
  local e = b:expand(2, 3)
  check(e:shape()[2] == 3 and shares(b, e), "expand is a view")
  b = fresh()
  check(shares(b, b[2]), "t[i] is a view")
  b = fresh()
  local parts = b:split(1, 2)
  check(#parts == 3 and shares(b, parts[2]), "split gives views")
  b = fresh()
  check(shares(b, b:chunk(2, 3)[2]), "chunk gives views")
  b = fresh()
  check(not shares(b, b:softmax(1)) and not shares(b, b:clamp(0, 1)), "math gives new tensors")
  b = fresh()
  check(not shares(b, b:clamp(nil, 1e9)), "clamp with no effect still copies")
end)

test("shapes: squeeze, unsqueeze, flatten, expand, split, chunk", function()
  local t = tensor.zeros(2, 1, 3, 1)
  check(table.concat(t:squeeze():shape(), ",") == "2,3", "squeeze all")
  check(table.concat(t:squeeze(2):shape(), ",") == "2,3,1", "squeeze one dim")
  check(table.concat(t:squeeze(1):shape(), ",") == "2,1,3,1", "squeeze of a dim of size 2 keeps it")
  check(table.concat(t:squeeze(-1):shape(), ",") == "2,1,3", "squeeze with a negative dim")
  check(table.concat(tensor.zeros(2, 3):unsqueeze(3):shape(), ",") == "2,3,1", "unsqueeze at the end")
  check(table.concat(tensor.zeros(2, 3):unsqueeze(-1):shape(), ",") == "2,3,1", "unsqueeze -1 appends")
  check(table.concat(tensor.zeros(2, 3):unsqueeze(-3):shape(), ",") == "1,2,3", "unsqueeze -3 prepends")
  check(table.concat(tensor.zeros(2, 3, 4, 5):flatten(2, 3):shape(), ",") == "2,12,5", "flatten a range")
  check(tensor.from(7):flatten():dim() == 1, "flatten of a 0-d tensor is 1-D")
  check(table.concat(tensor.zeros(3, 1):expand(2, -1, 4):shape(), ",") == "2,3,4", "expand with -1 and a new dim")
  local sizes = {}
  for _, p in ipairs(tensor.arange(7):split(3)) do sizes[#sizes + 1] = p:numel() end
  check(table.concat(sizes, ",") == "3,3,1", "split: the last piece is shorter")
  sizes = {}
  for _, p in ipairs(tensor.arange(7):split{2, 0, 5}) do sizes[#sizes + 1] = p:numel() end
  check(table.concat(sizes, ",") == "2,0,5", "split by sizes")
  same(tensor.arange(7):split{2, 0, 5}[3], tensor.arange(2, 7), 0, "the pieces hold the right entries")
  sizes = {}
  for _, p in ipairs(tensor.arange(6):chunk(4)) do sizes[#sizes + 1] = p:numel() end
  check(table.concat(sizes, ",") == "2,2,2", "chunk(4) of 6 gives 3 chunks, as PyTorch")
  sizes = {}
  for _, p in ipairs(tensor.arange(5):chunk(3)) do sizes[#sizes + 1] = p:numel() end
  check(table.concat(sizes, ",") == "2,2,1", "chunk(3) of 5")
  check(#tensor.zeros(0, 2):chunk(3) == 3, "chunks of an empty dim are empty")
end)

test("indexing: t[i] and t[i] = v", function()
  local t = tensor.arange(12):reshape(3, 4)
  same(t[1], tensor.arange(4), 0, "t[1] is the first row")
  same(t[-1], tensor.arange(8, 12), 0, "t[-1] is the last row")
  check(t[2][3]:dim() == 0 and t[2][3]:item() == 6, "t[2][3] is a 0-d tensor")
  for _, cmp in ipairs{function() return t[2][3] > 0 end, function() return 0 <= t[1] end,
                       function() return t < t end} do
    check_error(cmp, "do not compare tensors: t:item() is the number", "< and <= say what to write instead")
  end
  same(t:t()[2], tensor.from{1, 5, 9}, 0, "indexing a transposed tensor")
  t[1] = 7
  same(t[1], tensor.full({4}, 7), 0, "t[i] = number fills the row")
  t[2] = tensor.from{1, 2, 3, 4}
  same(t[2], tensor.from{1, 2, 3, 4}, 0, "t[i] = tensor copies")
  t[3] = tensor.from{5}
  same(t[3], tensor.full({4}, 5), 0, "t[i] = tensor broadcasts")
  t[2][4] = -1
  check(t:get(2, 4) == -1, "t[i][j] = v writes one element")
  local i32 = tensor.zeros(3, "i32")
  i32[2] = 2.6
  check(i32:get(2) == 3, "writing into i32 rounds as copy does")
  check_error(function() return t[0] end, "index 0 out of range for dim 1 of size 3", "t[0]")
  check_error(function() return t[4] end, "index 4 out of range", "t[4]")
  check_error(function() return t[1.5] end, "index 1.5", "t[1.5]")
  check_error(function() return t[{}] end, "cannot index a tensor with a table", "t[{}]")
  check_error(function() return tensor.from(3)[1] end, "0-d tensor cannot be indexed", "0-d")
  check_error(function() t[1] = "x" end, "takes a number or a Tensor", "t[i] = string")
  check_error(function() t[1] = tensor.ones(5) end, "cannot expand", "t[i] = wrong shape")
  check_error(function() t.foo = 1 end, "cannot set field 'foo'", "t.foo = 1")
  check_error(function() t[9] = 1 end, "index 9 out of range", "t[9] = 1")
end)

test("a missing method names itself and help \"Tensor\"", function()
  local t = tensor.zeros(2)
  check_error(function() return t:softmaxx(1) end, "Tensor has no method or field 'softmaxx'", "names it")
  check_error(function() return t:softmaxx(1) end, 'help "Tensor"', "points to help")
  local ok, err = pcall(function() return t:nosuch() end)
  check(not ok and not tostring(err):find("attempt to call", 1, true), "not 'attempt to call a nil value'")
  check(tostring(err):find("^[^:]*test_tensor_ops.lua:%d+:"), "says where: " .. tostring(err))
  check_error(function() return t:softmaxx(1) end, "(did you mean softmax?)", "suggests a near name")
  check_error(function() return t:nElement() end, "(nnlab calls it numel)", "Torch7's name")
  check_error(function() return t:long() end, 'nnlab calls it to("i32")', "PyTorch's name")
  check_error(function() return t:xyz() end, "'xyz'; help", "no suggestion when nothing is near")
  check(table.concat(tensor.zeros(2, 3):size(), ",") == "2,3" and tensor.zeros(2, 3):size(-1) == 3,
        "size() without a dim is the shape, as in PyTorch and Torch7")
end)

test("bad arguments name the function", function()
  local t = tensor.zeros(2, 3)
  local cases = {
    {function() return t:permute(1) end, "Tensor:permute: 1 dims given for a 2-D tensor"},
    {function() return t:permute(1, 1) end, "Tensor:permute: dim 1 given twice"},
    {function() return t:permute(1, 3) end, "dim 3 out of range"},
    {function() return t:unsqueeze(4) end, "Tensor:unsqueeze: dim 4 out of range"},
    {function() return t:squeeze(3) end, "Tensor:squeeze: dim 3 out of range"},
    {function() return t:t():view(6) end, "not contiguous"},
    {function() return t:view(4, 2) end, "Tensor:view: cannot reshape [2, 3]"},
    {function() return t:flatten(2, 1) end, "start dim 2 comes after end dim 1"},
    {function() return t:expand(3, 3) end, "Tensor:expand: shape [2, 3] cannot expand to [3, 3]"},
    {function() return t:tile(-1, 2) end, "Tensor:tile: size 1 (-1.0) is negative"},
    {function() return t:split(0) end, "Tensor:split: the size must be a whole number >= 1"},
    {function() return t:split({1, 2}) end, "Tensor:split: the sizes add up to 3, but dim 1 has size 2"},
    {function() return t:split({1, 1}, 2) end, "the sizes add up to 2, but dim 2 has size 3"},
    {function() return t:split({1, "a"}) end, "Tensor:split: size 2 is a string, expected a number"},
    {function() return t:split({1, -1}) end, "Tensor:split: a size must be a whole number >= 0"},
    {function() return t:chunk(0) end, "Tensor:chunk: the number of chunks must be a whole number >= 1"},
    {function() return tensor.cat({t, tensor.zeros(2, 2)}) end,
     "tensor.cat: tensor 2 has shape [2, 2], tensor 1 [2, 3]: they must agree except in dim 1"},
    {function() return tensor.cat({}) end, "tensor.cat: the list of tensors is empty"},
    {function() return tensor.cat({t, 5}) end, "entry 2 of the list is a number"},
    {function() return tensor.stack({t, t:t()}) end, "tensor.stack: tensor 2 has shape [3, 2]"},
    {function() return tensor.stack({t}, 4) end, "tensor.stack: dim 4 out of range"},
    {function() return tensor.where(t, t, t) end, "tensor.where: the condition must be u8"},
    {function() return tensor.where(t:gt(0), t, tensor.zeros(4)) end, "shapes [2, 3] and [4] do not broadcast"},
    {function() return tensor.where(t:gt(0), "a", 1) end, "argument 2 is a string"},
    {function() return t:masked_fill(t, 1) end, "Tensor:masked_fill: the mask must be u8"},
    {function() return t:masked_fill(tensor.ones(3, 3, "u8"), 1) end, "does not broadcast to the tensor's shape [2, 3]"},
    {function() return t:gather(2, tensor.ones(2, "i32")) end, "Tensor:gather: index of shape [2]"},
    {function() return t:gather(2, tensor.from({{4}}, "i32")) end, "Tensor:gather: index 4 out of range for dim 2 of size 3"},
    {function() return t:gather(2, tensor.from({{1.5}})) end, "index 1.5 is not a whole number"},
    {function() return t:gather(3, tensor.ones(2, 3, "i32")) end, "Tensor:gather: dim 3 out of range"},
    {function() return t:index_select(1, {3}) end, "Tensor:index_select: index 3 out of range for dim 1 of size 2"},
    {function() return t:index_select(1, tensor.ones(1, 1)) end, "the index must be 1-D"},
    {function() return t:index_select(1, {"a"}) end, "entry 1 of the indices is a string"},
    {function() return t:sort(3) end, "Tensor:sort: dim 3 out of range"},
    {function() return t:topk(4) end, "Tensor:topk: k = 4 is more than the 3 entries of dim 2"},
    {function() return t:topk(-1) end, "Tensor:topk: k must be a whole number >= 0"},
    {function() return t:softmax(3) end, "Tensor:softmax: dim 3 out of range"},
    {function() return t:log_softmax("x") end, "number expected"},
    {function() return t:cumsum() end, "number expected"},
    {function() return t:clamp() end, "Tensor:clamp: give a lower bound, an upper bound or both"},
    {function() return t:clamp(0 / 0) end, "bound 1 is NaN"},
    {function() return t:norm(0 / 0) end, "Tensor:norm: p is NaN"},
    {function() return t:var(5) end, "Tensor:var: dim 5 out of range"},
    {function() return t:std("a") end, "number expected"},
    {function() return tensor.outer(t, t) end, "tensor.outer: needs two 1-D tensors, got 2-D and 2-D"},
    {function() return t:max(3) end, "Tensor:max: dim 3 out of range"},
    {function() return t:max("a") end, "number expected"},
    {function() return t:min(tensor.zeros(4)) end, "do not broadcast"},
    {function() return tensor.from(1):sort() end, "a 0-d tensor has nothing to sort"},
  }
  for k, case in ipairs(cases) do check_error(case[1], case[2], "case " .. k) end
end)

test("empty and odd shapes", function()
  local e = tensor.zeros(0, 3)
  check(e:softmax(2):numel() == 0 and e:cumsum(1):numel() == 0, "softmax and cumsum of an empty tensor")
  local v, i = e:sort(2)
  check(v:numel() == 0 and i:numel() == 0, "sort of an empty tensor")
  check(tensor.cat({e, tensor.ones(1, 3)}):shape()[1] == 1, "cat with an empty tensor")
  check(e:index_select(2, {1, 3}):numel() == 0, "index_select of an empty tensor")
  check_error(function() return e:index_select(1, {1}) end, "index 1 out of range for dim 1 of size 0")
  local big = tensor.randn(70000)
  local s = big:sort()
  check(s[1]:item() == big:min() and s[-1]:item() == big:max(), "a long sort (threaded) ends in the extremes")
  same(big:cumsum(1)[-1]:reshape(1), tensor.from{big:sum()}, 1e-3, "a long cumsum ends in the sum")
  for _, m in ipairs{tensor.randn(50, 300), (tensor.rand(50, 300) * 9):to("i32")} do -- ties in the second
    for _, largest in ipairs{true, false} do
      local v, i = m:topk(17, 2, largest)
      local sv, si = m:sort(2, largest)
      same(v, sv:slice(2, 1, 17), 0, "topk agrees with sort, largest " .. tostring(largest))
      same(i, si:slice(2, 1, 17), 0, "and so do its indices (ties in order)")
    end
  end
  local d = tensor.randn(4, 3, 2, 2, 2, 2, 2, 2)
  check(d:permute(8, 7, 6, 5, 4, 3, 2, 1):shape()[1] == 2, "permute of 8 dims")
  check_error(function() return d:unsqueeze(1) end, "has 8 dims already")
  same(d:tile(1, 1, 1, 1, 1, 1, 1, 3), tensor.cat({d, d, d}, 8), 0, "tile of an 8-D tensor along a size-2 dim")
  same(d:tile(2, 1, 1, 1, 1, 1, 1, 1), tensor.cat({d, d}, 1), 0, "tile of an 8-D tensor along dim 1")
end)

test("on the sim device: the same results, and indexing writes there", function()
  local s = x:to("sim")
  check(s:device() == "sim", "on sim")
  local ops = {
    function(t) return t[2] end, function(t) return t:permute(3, 1, 2) end,
    function(t) return t:softmax(1) end, function(t) return t:cumsum(2) end,
    function(t) return (t:sort(3)) end, function(t) return select(2, t:topk(2, 2)) end,
    function(t) return t:gather(2, t:argmax(2, true)) end, function(t) return t:index_select(3, {5, 1}) end,
    function(t) return t:masked_fill(t:gt(0), 0) end, function(t) return tensor.where(t:lt(0), t, 1) end,
    function(t) return t:clamp(-0.5, 0.5) end, function(t) return t:norm(1, 3) end,
    function(t) return t:var(1) end, function(t) return tensor.cat({t, t}, 3) end,
    function(t) return tensor.stack({t, t}) end, function(t) return t:tile(1, 2, 1) end,
    function(t) return t:max(t:transpose(1, 3):contiguous():transpose(1, 3)) end, function(t) return select(2, t:min(2)) end,
    function(t) return t:flatten():view(5, 12) end, function(t) return t:unsqueeze(2):squeeze() end,
    function(t) return t:expand(2, 3, 4, 5) end, function(t) return t:split(2, 2)[2] end,
  }
  for k, f in ipairs(ops) do
    local c, d = f(x), f(s)
    check(d:device() == "sim", "op " .. k .. " stays on sim")
    same(d:to("cpu"), c, 0, "op " .. k .. " on sim")
  end
  check(math.abs(s:std() - x:std()) < 1e-6 and s:norm() == x:norm(), "reductions to numbers on sim")
  s[1] = 0
  s[2] = tensor.ones(5):to("sim")
  check(s[1]:to("cpu"):abs():max() == 0 and s[2]:to("cpu"):min() == 1, "t[i] = v writes on sim")
  check_error(function() return s:gather(2, tensor.full({3, 1, 5}, 9, "i32"):to("sim")) end,
              "index 9 out of range for dim 2 of size 4")
  check_error(function() return s:where(s:gt(0), x) end, "sim")
end)
