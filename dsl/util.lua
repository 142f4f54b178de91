-- util.lua: argument checks shared by the DSL's Lua modules (nn, viz, quant, compress), loaded
-- first by nl_dsl_open as require "nnlab.util". Errors point at the caller's caller (level 3):
-- the line of user code that called the public function.
local util = {}

-- Returns opts (or {} for nil); raises "fname: unknown option 'k' (valid: a, b)" for a key not
-- in valid, and an error when opts is not a table.
function util.check_options(opts, valid, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(string.format("%s: options must be a table, got %s", fname, type(opts)), 3)
  end
  local ok = {}
  for _, k in ipairs(valid) do ok[k] = true end
  for k in pairs(opts) do
    if not ok[k] then
      error(string.format("%s: unknown option '%s' (valid: %s)", fname, tostring(k),
                          table.concat(valid, ", ")), 3)
    end
  end
  return opts
end

-- Returns v as an integer; raises "fname: name must be a whole number >= min, got v".
function util.check_int(v, name, min, fname)
  if type(v) ~= "number" or v ~= math.floor(v) or v < min or v >= 2 ^ 53 then
    error(string.format("%s: %s must be a whole number >= %d, got %s", fname, name, min,
                        tostring(v)), 3)
  end
  return math.tointeger(v)
end

return util
