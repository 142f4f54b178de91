-- 02_backward.lua: a layer's forward and backward written by hand, checked with nn.gradcheck.

-- The module to check: a module as given, or an instance of a class (nn.define returns a function).
local function instance(v, name, ...)
  if nn.is_module(v) then return v end
  if type(v) == "function" then
    local ok, m = pcall(v, ...)
    if ok and nn.is_module(m) then return m end
    return nil, string.format("%s(...) did not make a layer: %s", name, tostring(m))
  end
  return nil, string.format("%s is %s: define it with nn.define(\"%s\", {forward = ..., backward = ...})", name,
                            v == nil and "not set yet" or "a " .. type(v), name)
end

-- Runs nn.gradcheck quietly; ok, or false and the first wrong element in words.
local function gradcheck(m, x, opts)
  opts = opts or {}
  opts.verbose = false
  local ok, r = pcall(nn.gradcheck, m, x, opts)
  if not ok then return false, tostring(r):gsub("^[^\n]-:%d+: ", "") end
  if not r.ok then return false, r.first_error:gsub("^FAIL: ", "") .. " (nn.gradcheck compares your backward with finite differences)" end
  return true
end

local X = tensor.from{{0.5, -1.2, 0.8, 2.0}, {-0.3, 0.9, 1.5, -2.2}, {1.1, -0.7, -0.4, 0.1}}

lesson.define{
  name = "backward", title = "A layer's backward by hand, checked by nn.gradcheck",
  intro = [[
    Training needs each layer's backward: given dL/dy (gy), return dL/dx, and the gradients of the
    layer's parameters. You write both; nn.gradcheck(layer, x) compares your backward with central
    finite differences, element by element.]],
  steps = {
    {[[
      Write a sigmoid layer: y = 1 / (1 + exp(-x)), whose derivative is y * (1 - y).
        MySigmoid = nn.define("MySigmoid", {
          forward = function(self, x) self.y = x:sigmoid(); return self.y end,
          backward = function(self, x, gy) return ... end,   -- dL/dx = gy * dy/dx
        })
      then try nn.gradcheck(MySigmoid(), tensor.randn(3, 4)).]],
      check = function(env)
        local m, why = instance(env.MySigmoid, "MySigmoid")
        if not m then return false, why end
        local ok, y = pcall(m.forward, m, X)
        if not ok then return false, "MySigmoid's forward failed: " .. tostring(y) end
        local fine, msg = lesson.expect(y, "MySigmoid's forward(x)", {shape = X:shape(), values = X:sigmoid(), tol = 1e-4})
        if not fine then return false, msg end
        fine, msg = gradcheck(m, X)
        if not fine then return false, msg end
        return true, "MySigmoid passes nn.gradcheck"
      end,
      hint = {"dL/dx = gy * y * (1 - y), elementwise; self.y was kept by forward.",
              "backward = function(self, x, gy) return gy * self.y * (1 - self.y) end"}},
    {[[
      Now a layer with parameters: MyLinear(inp, out) with weight [out, inp] and bias [out],
      y = x W^T + b for x [batch, inp]. backward returns dL/dx and a table of the parameters'
      gradients by name (nnlab adds them up for you):
        MyLinear = nn.define("MyLinear", {
          args = {"inp", "out"},
          init = function(self, i, o)
            self:add_parameter("weight", tensor.randn(o, i) * (1 / math.sqrt(i)))
            self:add_parameter("bias", tensor.zeros(o))
          end,
          forward = function(self, x) return x:matmul(self.weight:t()) + self.bias end,
          backward = function(self, x, gy) return ..., {weight = ..., bias = ...} end,
        })
      Each gradient has its parameter's shape: that tells you which way round the products go.]],
      check = function(env)
        local m, why = instance(env.MyLinear, "MyLinear", 4, 3)
        if not m then return false, why end
        local shapes = {}
        for _, p in ipairs(m:parameters()) do shapes[p.name] = table.concat(p.value:shape(), "x") end
        if shapes.weight ~= "3x4" or shapes.bias ~= "3" then
          return false, string.format("MyLinear(4, 3) must have weight [3, 4] and bias [3]; it has weight %s, bias %s",
                                      shapes.weight or "none", shapes.bias or "none")
        end
        local ok, y = pcall(m.forward, m, X)
        if not ok then return false, "MyLinear's forward failed: " .. tostring(y) end
        local want = X:matmul(m.weight:t()) + m.bias
        local fine, msg = lesson.expect(y, "MyLinear(4, 3)'s forward(x)", {shape = {3, 3}, values = want, tol = 1e-4})
        if not fine then return false, msg end
        fine, msg = gradcheck(m, X)
        if not fine then return false, msg end
        return true, "MyLinear passes nn.gradcheck: dL/dx, weight and bias"
      end,
      hint = {"dL/dx = gy W: [batch, out] x [out, inp]. dL/dW = gy^T x: [out, batch] x [batch, inp].",
              "dL/db sums gy over the batch: gy:sum(1).",
              "return gy:matmul(self.weight), {weight = gy:t():matmul(x), bias = gy:sum(1)}"}},
    {[[
      Losses have a backward too. Write the mean squared error as a loss,
        MyMSE = nn.Loss{name = "MyMSE",
          forward = function(self, x, t) local d = x - t; return (d * d):mean() end,
          backward = function(self, x, t) return ... end}        -- dL/dx, the shape of x
      and check it with nn.gradcheck(MyMSE, x, {target = t}). Mind the mean: it divides by the
      number of elements.]],
      check = function(env)
        local l = env.MyMSE
        if l == nil then return false, "MyMSE is not set yet: MyMSE = nn.Loss{forward = ..., backward = ...}" end
        local ok, r = pcall(nn.gradcheck, l, X, {target = X * 0.5, verbose = false})
        if not ok then return false, "MyMSE is not a loss nn.gradcheck can check: " .. tostring(r):gsub("^[^\n]-:%d+: ", "") end
        local ok2, v = pcall(function() return l:forward(X, X * 0.5) end)
        local want = (X * 0.5):pow(2):mean()
        if not ok2 or type(v) ~= "number" and not tensor.is_tensor(v) then return false, "MyMSE's forward must return the loss" end
        v = tensor.is_tensor(v) and v:item() or v
        if math.abs(v - want) > 1e-4 * math.max(1, want) then
          return false, string.format("MyMSE's forward gives %.6g on the check's input, the mean squared error is %.6g", v, want)
        end
        if not r.ok then return false, r.first_error:gsub("^FAIL: ", "") .. " (did you divide by x:numel()?)" end
        return true, "MyMSE passes nn.gradcheck"
      end,
      hint = {"d/dx mean((x - t)^2) = 2 (x - t) / n, with n = x:numel().",
              "backward = function(self, x, t) return (x - t) * (2 / x:numel()) end"}},
  },
}
