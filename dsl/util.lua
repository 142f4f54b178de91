-- util.lua: what the DSL's Lua modules (nn, viz, quant, compress) share: the one way they raise
-- errors and the argument checks built on it. Loaded first by nl_dsl_open as require "nnlab.util",
-- with the Lua forms of nl_dsl_error, nl_dsl_checkpath and nl_dsl_quiet as its arguments.
local raise, check_path, quiet = ...
local util = {}

-- util.error(msg): raises msg as every nnlab error reads: "where: name: problem", name being the
-- public function the user called (msg may start with it, or with its short name) and where the
-- line of the user's code that called it, never a line inside dsl/*.lua; so no level to give.
util.error = raise

-- util.check_path(path) -> path: the check every function taking a file path makes (the one
-- nl_dsl_checkpath makes in C): a path holding a NUL byte is refused, not silently cut short.
util.check_path = check_path

-- util.quiet(x) -> x: x is not echoed by the REPL when a line returns it alone (nl_dsl_quiet):
-- for what a function has printed itself.
util.quiet = quiet

-- util.publish(rows, owners): the last step of a Lua chunk defining public functions. Each function
-- a help row documents (owners[row.group] holds it under row.name, dots walking into tables) is
-- replaced by a thin wrapper, set as row.fn. The wrapper's frame stays on the stack while the
-- function runs, even when it ends in a tail call (return panel(...)), so errors are named after it;
-- and help(fn) finds methods by value through row.fn.
function util.publish(rows, owners)
  for _, row in ipairs(rows) do
    local t, key = owners[row.group], row.name
    while key:find(".", 1, true) do
      local part, rest = key:match("^([^.]+)%.(.+)$")
      t, key = t[part], rest
    end
    local fn = t[key]
    if type(fn) == "function" then -- not a callable table (nn.Trainer)
      local public = function(...) return select(1, fn(...)) end
      rawset(t, key, public)
      row.fn = public
    end
  end
  return rows
end

-- The problem an nnlab error message states: msg without the position and the "fname: " before
-- it (for a message that wraps another one raised under the same function).
function util.reason(msg, fname)
  msg = tostring(msg):gsub("^[^\n]-:%d+: ", "", 1)
  if msg:sub(1, #fname + 2) == fname .. ": " then msg = msg:sub(#fname + 3) end
  return msg
end

-- Returns opts (or {} for nil); raises "fname: unknown option 'k' (valid: a, b)" for a key not
-- in valid, and an error when opts is not a table.
function util.check_options(opts, valid, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    raise(string.format("%s: options must be a table, got %s", fname, type(opts)))
  end
  local ok = {}
  for _, k in ipairs(valid) do ok[k] = true end
  for k in pairs(opts) do
    if not ok[k] then
      raise(string.format("%s: unknown option '%s' (valid: %s)", fname, tostring(k),
                          table.concat(valid, ", ")))
    end
  end
  return opts
end

-- Returns v as an integer; raises "fname: name must be a whole number >= min, got v".
function util.check_int(v, name, min, fname)
  if type(v) ~= "number" or v ~= math.floor(v) or v < min or v >= 2 ^ 53 then
    raise(string.format("%s: %s must be a whole number >= %d, got %s", fname, name, min,
                        tostring(v)))
  end
  return math.tointeger(v)
end

-- The 1-based indices (a list) of flat element k (1-based) of a tensor of shape `shape` (a list of
-- sizes), for messages that name an element: "[2,3]".
function util.index_of(shape, k)
  local idx, rest = {}, k - 1
  for d = #shape, 1, -1 do
    idx[d] = rest % shape[d] + 1
    rest = rest // shape[d]
  end
  return idx
end

return util
