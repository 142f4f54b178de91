-- compare.lua: nnlab compare.lua A B TOL: every parameter of the weight files A and B (train.lua's)
-- within TOL relative (the norm of the difference over the norm of the weights); prints the worst.
local a, b, tol = arg[1], arg[2], tonumber(arg[3])
local function read(path)
  local params, cur = {}, nil
  for line in io.lines(path) do
    local name = line:match("^# (.+)$")
    if name then cur = {name = name}; params[#params + 1] = cur else cur[#cur + 1] = tonumber(line) end
  end
  return params
end
local pa, pb = read(a), read(b)
assert(#pa == #pb and #pa > 0, "different parameter lists")
local worst, at = 0, ""
for i, p in ipairs(pa) do
  local q = pb[i]
  assert(#p == #q, p.name .. ": different sizes")
  local d, w = 0, 0
  for k = 1, #p do d = d + (p[k] - q[k]) ^ 2; w = w + p[k] ^ 2 end
  local rel = math.sqrt(d / math.max(w, 1e-30))
  if rel > worst then worst, at = rel, p.name end
end
print(string.format("worst relative difference %.3g (%s)", worst, at))
os.exit(worst <= tol and 0 or 1)
