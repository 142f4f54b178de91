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

-- util.help_rows([group]) -> rows, doc: the help rows a module defines and the function that adds
-- one: doc(group, name, sig, text, example, method) or, given the module's one group,
-- doc(name, sig, text, example, method). method: the row documents a Module method (m:name).
function util.help_rows(group)
  local rows = {}
  local function add(g, name, sig, text, example, method)
    rows[#rows + 1] = {group = g, name = name, sig = sig, doc = text, example = example,
                       method = method or false}
  end
  if group then return rows, function(...) return add(group, ...) end end
  return rows, add
end

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

-- util.json(v) -> JSON text for plain data: integers exactly, floats with 17 digits (NaN and
-- infinities, which JSON lacks, as the strings "nan", "inf", "-inf"), strings, booleans, tables as
-- arrays when their keys are 1..n (and when empty), else as objects with string keys (sorted).
-- Trainer checkpoints' metadata and run folders are written with it.
local json_escapes = {['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t"}
local huge = math.huge
local function to_json(v, out)
  local t = type(v)
  if t == "number" then
    if math.type(v) == "integer" then out[#out + 1] = string.format("%d", v)
    elseif v ~= v then out[#out + 1] = '"nan"'
    elseif v == huge then out[#out + 1] = '"inf"'
    elseif v == -huge then out[#out + 1] = '"-inf"'
    else out[#out + 1] = string.format("%.17g", v) end
  elseif t == "string" then
    out[#out + 1] = '"' .. v:gsub('[%c"\\]', function(c)
      return json_escapes[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "table" then
    local n, keys = #v, {}
    for k in pairs(v) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then
        if type(k) ~= "string" then raise("cannot save a table key of type " .. type(k)) end
        keys[#keys + 1] = k
      end
    end
    if #keys == 0 then
      out[#out + 1] = "["
      for i = 1, n do if i > 1 then out[#out + 1] = "," end; to_json(v[i], out) end
      out[#out + 1] = "]"
    else
      if n > 0 then raise("cannot save a table that is both a list and a record") end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        to_json(k, out); out[#out + 1] = ":"; to_json(v[k], out)
      end
      out[#out + 1] = "}"
    end
  else
    raise("cannot save a " .. t)
  end
  return out
end
function util.json(v) return table.concat(to_json(v, {})) end

return util
