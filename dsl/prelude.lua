-- prelude.lua: Lua run by nl_dsl_open after the C modules: defines help(), which reads the
-- help registry that nl_dsl_register fills (this chunk's argument; layout in dsl.c).
local H = ...

-- One entry in full: signature, doc and an example.
local function entry(row)
  return string.format("%s\n  %s\n  example: %s", row.sig, row.doc, row.example)
end

-- The rows of a group a user calls: names starting with "_" are internal hooks (for tests),
-- which help "name" still explains but listings leave out.
local function public_rows(group)
  local rows = {}
  for _, row in ipairs(group.rows) do
    if row.short:sub(1, 1) ~= "_" then rows[#rows + 1] = row end
  end
  return rows
end

-- A module's functions or a type's methods, one line each.
local function listing(group)
  local rows = public_rows(group)
  local width = 0
  for _, row in ipairs(rows) do width = math.max(width, #row.short) end
  local lines = {string.format("%s: %s with %d %s", group.name, group.kind, #rows,
                               group.kind == "module" and "functions" or "methods")}
  for _, row in ipairs(rows) do
    lines[#lines + 1] = string.format("  %-" .. width .. "s  %s", row.short, row.doc)
  end
  lines[#lines + 1] = string.format('help "%s" shows one in full.', (rows[1] or group.rows[1]).name)
  return table.concat(lines, "\n")
end

local function overview()
  local lines = {"nnlab: modules and types"}
  -- modules, then types, each in alphabetical order, names in one column
  local names, width = {}, 0
  for _, name in ipairs(H.order) do
    names[#names + 1] = name
    width = math.max(width, #name)
  end
  table.sort(names, function(a, b)
    local ka, kb = H.groups[a].kind, H.groups[b].kind
    if ka ~= kb then return ka == "module" end
    return a:lower() < b:lower()
  end)
  for _, name in ipairs(names) do
    local g = H.groups[name]
    local how = g.kind == "module" and ("help(" .. name .. ")") or ('help "' .. name .. '"')
    lines[#lines + 1] = string.format("  %-" .. width .. "s  %-6s  %3d %-9s  %s", name, g.kind,
                                      #public_rows(g), g.kind == "module" and "functions" or "methods", how)
  end
  lines[#lines + 1] = 'help(f) or help "name" explains one function: help(tensor.randn), '
    .. 'help "randn", help "Tensor:reshape".'
  return table.concat(lines, "\n")
end

-- Names that start with q (ignoring case), or else contain it.
local function close_names(q)
  q = q:lower()
  local found, seen = {}, {}
  local function consider(full, short, test)
    if not seen[full] and (test(full:lower()) or test(short:lower())) then
      seen[full] = true
      found[#found + 1] = full
    end
  end
  for _, test in ipairs{function(s) return s:sub(1, #q) == q end,
                        function(s) return s:find(q, 1, true) ~= nil end} do
    for full, row in pairs(H.rows) do consider(full, row.short, test) end
    for name in pairs(H.groups) do consider(name, name, test) end
    if #found > 0 then break end
  end
  table.sort(found)
  return found
end

-- The text help() prints for x.
local function help_text(x)
  if x == nil then return overview() end
  local rows, group
  if type(x) == "string" then
    rows = H.rows[x] and {H.rows[x]} or H.short[x]
    group = H.groups[x]
  elseif type(x) == "function" then
    rows = H.by_fn[x]
  elseif type(x) == "table" then
    for _, g in pairs(H.groups) do
      if g.value == x then group = g end
    end
    rows = H.by_fn[x]               -- a callable table documented as a function (nn.Trainer)
  end
  if not group and not rows and (type(x) == "table" or type(x) == "userdata") then
    -- an object (a Tensor, a Trainer): its type's methods, the type named by the metatable
    local mt = getmetatable(x)
    local name = type(mt) == "table" and rawget(mt, "__name") or nil
    group = type(name) == "string" and H.groups[name] or nil
    -- or the function that made it, named by the metatable's __help (an optim.schedule)
    local made_by = type(mt) == "table" and rawget(mt, "__help") or nil
    if not group and type(made_by) == "function" then
      local n = made_by(x)
      rows = H.rows[n] and {H.rows[n]} or nil
    end
  end
  if group then return listing(group) end
  if rows then
    local parts = {}
    for i, row in ipairs(rows) do parts[i] = entry(row) end
    return table.concat(parts, "\n\n")
  end
  local text = string.format("no help for '%s'", tostring(x))
  local near = type(x) == "string" and close_names(x) or {}
  if #near > 0 then
    return text .. "; did you mean: " .. table.concat(near, ", ", 1, math.min(#near, 12)) .. "?"
  end
  return text .. "; help() lists what has help."
end

function help(x)
  print(help_text(x))
end

local row = {name = "help", short = "help", sig = "help([x])", fn = help,
             doc = "Lists the modules; help(module) lists its functions; help(f), help \"name\" "
               .. "explains one function with an example.",
             example = 'help "randn"'}
H.rows.help, H.short.help, H.by_fn[help] = row, {row}, {row}

-- repr(v): a short, readable rendering of any value, used by the REPL for results: tables as
-- {1, 2, x=3} (nested up to 3 levels, at most 20 entries each), strings quoted, values with
-- __tostring through it.
local function repr(v, depth, seen)
  depth, seen = depth or 0, seen or {}
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if type(mt) == "table" and mt.__tostring then return tostring(v) end
  if seen[v] then return "{...cycle...}" end
  if depth >= 3 then return "{...}" end
  seen[v] = true
  local parts, n = {}, #v
  for i = 1, math.min(n, 20) do parts[#parts + 1] = repr(v[i], depth + 1, seen) end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  for _, k in ipairs(keys) do
    if #parts >= 20 then break end
    local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. repr(k, 3, seen) .. "]"
    parts[#parts + 1] = key .. "=" .. repr(v[k], depth + 1, seen)
  end
  local total = n + #keys
  if total > #parts then parts[#parts + 1] = string.format("... (%d more)", total - #parts) end
  seen[v] = nil
  return "{" .. table.concat(parts, ", ") .. "}"
end
_G.repr = function(v) return repr(v) end

local rrow = {name = "repr", short = "repr", sig = "repr(v) -> string", fn = _G.repr,
              doc = "A short readable rendering of any value: tables as {1, 2, x=3} (3 levels, 20 "
                .. "entries each). The REPL shows results this way.",
              example = "print(repr({1, 2, x = {3}}))"}
H.rows.repr, H.short.repr, H.by_fn[_G.repr] = rrow, {rrow}, {rrow}
