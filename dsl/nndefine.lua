-- nndefine.lua: layers written in Lua (nn.define, nn.Module, m:add_parameter) and nn.gradcheck, the
-- finite-difference check of a layer's or a loss's backward. Run once by nl_open_nndefine with the
-- private C helpers P (dsl/nndefine.c) and the Module metatable; returns its help rows.
local P, module_mt = ...
local nn, tensor = nn, tensor

local util = require "nnlab.util"
local help_rows, doc = util.help_rows()
local raise, check_options = util.error, util.check_options

local builtin_names = {}
for k in pairs(nn) do builtin_names[k] = true end

-- ---------------------------------------------------------------- nn.define / nn.Module

local function check_spec(f, name, spec)
  if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") or #name > 31 then
    raise(f .. ": the name must be an identifier of at most 31 characters, got " .. tostring(name))
  end
  if type(spec) ~= "table" then raise(f .. ": expected a table {forward = ..., backward = ...}") end
  for _, k in ipairs{"forward", "backward"} do
    if type(spec[k]) ~= "function" then
      raise(string.format("%s: %s must be a function (self, %s) -> Tensor, got %s", f, k,
                          k == "forward" and "x" or "x, grad_out", type(spec[k])))
    end
  end
  for _, k in ipairs{"init", "infer"} do
    if spec[k] ~= nil and type(spec[k]) ~= "function" then
      raise(string.format("%s: %s must be a function, got %s", f, k, type(spec[k])))
    end
  end
  if spec.args ~= nil then
    if type(spec.args) ~= "table" or #spec.args > 8 then raise(f .. ": args must be a list of at most 8 names") end
    for i, a in ipairs(spec.args) do
      if type(a) ~= "string" or not a:match("^[%a_][%w_]*$") then
        raise(string.format("%s: args[%d] must be a name, got %s", f, i, tostring(a)))
      end
    end
  end
  if builtin_names[name] then raise(string.format("%s: '%s' is a built-in layer; choose another name", f, name)) end
end

function nn.define(name, spec)
  check_spec("nn.define", name, spec)
  local copy = {}
  for k, v in pairs(spec) do copy[k] = v end
  return P.define(name, copy)
end
doc("nn", "define", "nn.define(name, {forward=, backward=, init=, args={...}, infer=, doc=}) -> class",
    "Defines a layer in Lua; class(args...) makes one, usable wherever a built-in layer is (Sequential, "
    .. "Residual, the Trainer, summary, checkpoints by name, m:to(device)). forward(self, x) -> y; "
    .. "backward(self, x, gy) -> gx, {param = gradient, ...} (the gradients are accumulated for you); "
    .. "init(self, args...) may call self:add_parameter(name, tensor); args names numeric constructor "
    .. "arguments. Fields set on self in forward are there in backward.",
    "Scale = nn.define(\"Scale\", {init = function(self) self:add_parameter(\"a\", tensor.ones(1)) end, "
    .. "forward = function(self, x) return x * self.a:item() end, backward = function(self, x, gy) "
    .. "return gy * self.a:item(), {a = tensor.from{gy:mul(x):sum()}} end}); m = Scale()")

function nn.Module(spec)
  if type(spec) ~= "table" then raise("nn.Module: expected a table {name=, forward=, backward=, parameters=}") end
  local name = spec.name or "Module"
  check_spec("nn.Module", name, spec)
  local params, names = spec.parameters or {}, {}
  if type(params) ~= "table" then raise("nn.Module: parameters must be a table {name = Tensor}") end
  for k, v in pairs(params) do
    if type(k) ~= "string" or not tensor.is_tensor(v) then
      raise("nn.Module: parameters must map names to Tensors, got " .. tostring(k) .. " = " .. type(v))
    end
    names[#names + 1] = k
  end
  table.sort(names)
  local user_init, copy = spec.init, {}
  for k, v in pairs(spec) do copy[k] = v end
  copy.parameters, copy.name = nil, nil
  copy.init = function(self, ...)
    for _, k in ipairs(names) do self:add_parameter(k, params[k]:clone()) end
    if user_init then user_init(self, ...) end
  end
  return P.define(name, copy)()
end
doc("nn", "Module", "nn.Module{name=, forward=, backward=, parameters={w = Tensor}, init=} -> Module",
    "One layer written in Lua (nn.define makes a reusable class): forward(self, x) -> y, backward(self, "
    .. "x, gy) -> gx, {w = dL/dw, ...}. The parameters are copied into the layer (self.w).",
    "r = nn.Module{name = \"MyReLU\", forward = function(self, x) return x:relu() end, "
    .. "backward = function(self, x, gy) return gy * x:gt(0):to(\"f32\") end}")

function nn.Loss(spec)
  if type(spec) ~= "table" then raise("nn.Loss: expected a table {name=, forward=, backward=}") end
  local name = spec.name or "Loss"
  if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") or #name > 31 then
    raise("nn.Loss: the name must be an identifier of at most 31 characters, got " .. tostring(name))
  end
  if type(spec.forward) ~= "function" then
    raise("nn.Loss: forward must be a function (self, input, target) -> number, got " .. type(spec.forward))
  end
  if type(spec.backward) ~= "function" then
    raise("nn.Loss: backward must be a function (self, input, target) -> dL/dinput, got " .. type(spec.backward))
  end
  return P.loss(name, spec)
end
doc("nn", "Loss", "nn.Loss{name=, forward=, backward=} -> Loss",
    "A loss written in Lua, accepted by the Trainer and nn.evaluate: forward(self, input, target) -> "
    .. "number (the mean over the batch), backward(self, input, target) -> dL/dinput. self is the "
    .. "table given (fields persist); class labels arrive 1-based as i32.",
    "mse = nn.Loss{name = \"MyMSE\", forward = function(self, x, t) local d = x - t; return (d * d):mean() end, "
    .. "backward = function(self, x, t) return (x - t) * (2 / x:numel()) end}")

function module_mt.methods.add_parameter(self, name, t, opts)
  opts = check_options(opts, {"grad"}, "add_parameter")
  if type(name) ~= "string" then raise("add_parameter: expected a name, got " .. type(name)) end
  if not tensor.is_tensor(t) then raise("add_parameter: expected a Tensor for '" .. name .. "', got " .. type(t)) end
  return P.add_parameter(self, name, t, opts.grad ~= false)
end
doc("Module", "add_parameter", "m:add_parameter(name, tensor [, {grad=true}]) -> m",
    "In a Lua layer's init: adds a parameter (grad=false: a buffer), then reachable as m.<name>, "
    .. "trained, saved and moved with the layer.",
    "nn.define(\"Bias\", {init = function(self) self:add_parameter(\"b\", tensor.zeros(3)) end, "
    .. "forward = function(self, x) return x + self.b end, backward = function(self, x, gy) "
    .. "return gy, {b = gy:sum(1)} end})()", true)

-- ---------------------------------------------------------------- nn.gradcheck

local index_of = util.index_of

local function flat(t)
  local out = {}
  local function walk(v)
    if type(v) == "table" then for _, w in ipairs(v) do walk(w) end else out[#out + 1] = v end
  end
  walk(t:totable())
  return out
end

-- The elements to check: all of them, or `samples` spread evenly over the tensor.
local function picks(n, samples)
  local list = {}
  if n <= samples then
    for k = 1, n do list[k] = k end
  else
    for i = 1, samples do list[i] = 1 + ((i - 1) * (n - 1)) // (samples - 1) end
  end
  return list
end

-- A fixed pseudo-random projection r (so L = sum(y * r) exercises every output), in [-1, 1].
local function projection(shape, dev)
  local n, vals, s = 1, {}, 12345
  for _, d in ipairs(shape) do n = n * d end
  for k = 1, n do
    s = (s * 1103515245 + 12345) % 2147483648
    vals[k] = s / 1073741824 - 1
  end
  return tensor.from(vals):reshape(shape):to(dev)
end

local function dot(y, r)
  local a, b, s = flat(y), flat(r), 0.0
  for k = 1, #a do s = s + a[k] * b[k] end
  return s
end

local function shape_text(idx) return "[" .. table.concat(idx, ",") .. "]" end

function nn.gradcheck(m, x, opts)
  local f = "nn.gradcheck"
  opts = check_options(opts, {"eps", "atol", "rtol", "params", "samples", "target", "verbose"}, f)
  local is_loss = P.is_loss(m)
  if not nn.is_module(m) and not is_loss then
    raise(f .. ": expected a Module or a Loss, got " .. type(m))
  end
  if not tensor.is_tensor(x) then raise(f .. ": expected an input Tensor, got " .. type(x)) end
  if is_loss and opts.target == nil then raise(f .. ": a loss needs {target = ...}") end
  local eps, atol, rtol = opts.eps or 1e-3, opts.atol or 1e-3, opts.rtol or 1e-2
  local samples = opts.samples or 200
  x = x:clone()
  local loss_of, analytic
  local params = {}
  if is_loss then
    loss_of = function() return m:forward(x, opts.target) end
    m:forward(x, opts.target)
    analytic = {x = m:backward()}
  else
    local r
    loss_of = function() return dot(m:forward(x), r) end
    m:zero_grad()
    local y = m:forward(x)
    r = projection(y:shape(), x:device())
    analytic = {x = m:backward(r)}
    if opts.params ~= false then
      for _, p in ipairs(m:parameters()) do
        params[#params + 1] = p
        analytic[p.name] = p.grad:clone()
      end
    end
  end
  local result = {ok = true, errors = {}}
  local lines = {}
  local function check_tensor(what, t, g)
    local shape, worst, worst_at, worst_num, worst_ana = t:shape(), 0, nil, 0, 0
    local ga = flat(g)
    local bad = nil
    for _, k in ipairs(picks(t:numel(), samples)) do
      local idx = index_of(shape, k)
      local v = t:get(table.unpack(idx))
      t:set(v + eps, table.unpack(idx))
      local lp = loss_of()
      t:set(v - eps, table.unpack(idx))
      local lm = loss_of()
      t:set(v, table.unpack(idx))
      local num, ana = (lp - lm) / (2 * eps), ga[k]
      local err = math.abs(num - ana)
      if err > worst or worst_at == nil then worst, worst_at, worst_num, worst_ana = err, idx, num, ana end
      if not bad and err > atol + rtol * math.abs(num) then bad = {idx = idx, num = num, ana = ana} end
    end
    result.errors[what] = worst
    if bad then
      result.ok = false
      lines[#lines + 1] = string.format("FAIL: %s of %s is wrong at %s: %.6g vs %.6g (finite differences)",
                                        what == "x" and "backward" or "the gradient", what == "x" and "x" or "'" .. what .. "'",
                                        shape_text(bad.idx), bad.ana, bad.num)
      result.first_error = result.first_error or lines[#lines]
    else
      lines[#lines + 1] = string.format("ok:   %s (max error %.3g)", what == "x" and "backward of x" or "gradient of '" .. what .. "'", worst)
    end
  end
  check_tensor("x", x, analytic.x)
  for _, p in ipairs(params) do check_tensor(p.name, p.value, analytic[p.name]) end
  -- leave the module as it was after one forward and backward of the unperturbed input
  if not is_loss then
    m:zero_grad()
    local y = m:forward(x)
    m:backward(projection(y:shape(), x:device()))
  end
  local name = is_loss and tostring(m) or m:type()
  result.text = string.format("gradcheck %s: %s\n  %s", name, result.ok and "PASS" or "FAIL", table.concat(lines, "\n  "))
  if opts.verbose ~= false then print(result.text) end
  return result
end
doc("nn", "gradcheck", "nn.gradcheck(module_or_loss, x [, {eps=1e-3, atol=1e-3, rtol=1e-2, params=true, samples=200, target=, verbose=true}]) -> result",
    "Checks backward against central finite differences of L = sum(forward(x) * r) (r fixed, "
    .. "random) for x and every parameter (a loss: its value, with target), each element or `samples` "
    .. "of them. Prints PASS or FAIL naming the first wrong element (\"backward of x is wrong at [2,3]: "
    .. "0.12 vs 0.31\"); returns {ok=, errors = {x = max error, <param> = ...}, first_error=, text=}. "
    .. "Forward runs in f32, so keep eps near 1e-3.",
    "nn.gradcheck(nn.Linear(3, 2), tensor.randn(4, 3))")

return util.publish(help_rows, {nn = nn, Module = module_mt.methods})
