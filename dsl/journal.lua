-- journal.lua: the REPL's journal (the chunks that ran without error, saved as a script that replays
-- the session) and the rewriting that makes a top-level `local` at the prompt persist as a
-- notebook cell's variables do. Run once by nl_open_journal with the private C helpers P
-- (dsl/journal.c); returns the REPL's hooks {rewrite=, record=} and the help rows.
local P = ...
local util = require "nnlab.util"
local raise, check_path = util.error, util.check_path

local hooks = {} -- the REPL's: rewrite, record
local R = require "nnlab.runs" -- the manifest (dsl/runs.lua)
local help_rows, doc = util.help_rows("journal")

journal = {}
local chunks = {}          -- {code=, time=} in order
local start_seed, start_counter = P.rng_state()
local started = os.date("!%Y-%m-%d %H:%M:%S UTC")

-- ---------------------------------------------------------------- top-level locals

-- The tokens of code that matter here: {kind = "name" | "sym" | "other", text, from, to}; strings,
-- numbers and comments are skipped (kind "other"). An unfinished string or comment ends the list.
local function tokens(code)
  local list, i, n = {}, 1, #code
  while i <= n do
    local c = code:sub(i, i)
    if c:match("%s") then
      i = i + 1
    elseif code:match("^%-%-", i) then
      local eq = code:match("^%-%-%[(=*)%[", i)
      if eq then
        local _, e = code:find("]" .. eq .. "]", i, true)
        i = e and e + 1 or n + 1
      else
        local e = code:find("\n", i, true)
        i = e and e + 1 or n + 1
      end
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n and code:sub(j, j) ~= c do
        if code:sub(j, j) == "\\" then j = j + 1 end
        j = j + 1
      end
      list[#list + 1] = {kind = "other", from = i, to = j}
      i = j + 1
    elseif code:match("^%[=*%[", i) then
      local eq = code:match("^%[(=*)%[", i)
      local _, e = code:find("]" .. eq .. "]", i, true)
      list[#list + 1] = {kind = "other", from = i, to = e or n}
      i = (e or n) + 1
    elseif c:match("[%a_]") then
      local s, e = code:find("^[%w_]+", i)
      list[#list + 1] = {kind = "name", text = code:sub(s, e), from = s, to = e}
      i = e + 1
    elseif c:match("%d") or (c == "." and code:match("^%.%d", i)) then
      local s, e = code:find("^[%w_%.]+", i)
      list[#list + 1] = {kind = "other", from = s, to = e}
      i = e + 1
    else
      local sym = code:match("^[=~<>]=", i) or code:match("^%.%.%.?", i) or code:match("^::", i) or c
      list[#list + 1] = {kind = "sym", text = sym, from = i, to = i + #sym - 1}
      i = i + #sym
    end
  end
  return list
end

local opens = {["function"] = true, ["if"] = true, ["repeat"] = true}

-- Rewrites the top-level `local` declarations of a chunk typed at the prompt into assignments of
-- globals: `local a, b = 1, 2` -> `a, b = 1, 2`, `local x` -> `x = nil`, `local function f` ->
-- `function f`; attributes (<const>, <close>) are dropped. Locals inside blocks and functions stay.
local function rewrite(code)
  if not code:find("local", 1, true) then return code end
  local toks = tokens(code)
  local depth, loops, edits = 0, 0, {}
  local k = 1
  while k <= #toks do
    local t = toks[k]
    if t.kind == "name" and (k == 1 or toks[k - 1].text ~= "." and toks[k - 1].text ~= ":") then
      local w = t.text
      if opens[w] then
        depth = depth + 1
      elseif w == "while" or w == "for" then
        depth, loops = depth + 1, loops + 1
      elseif w == "do" then
        if loops > 0 then loops = loops - 1 else depth = depth + 1 end
      elseif w == "end" or w == "until" then
        depth = depth - 1
      elseif w == "local" and depth == 0 then
        local nxt = toks[k + 1]
        if nxt and nxt.text == "function" then
          edits[#edits + 1] = {from = t.from, to = nxt.from - 1, text = ""}
        elseif nxt and nxt.kind == "name" then
          edits[#edits + 1] = {from = t.from, to = nxt.from - 1, text = ""}
          local j = k + 1
          while toks[j] and toks[j].kind == "name" do
            local last = toks[j]
            if toks[j + 1] and toks[j + 1].text == "<" and toks[j + 2] and toks[j + 3] and toks[j + 3].text == ">" then
              edits[#edits + 1] = {from = toks[j].to + 1, to = toks[j + 3].to, text = ""}
              j = j + 3
            end
            last = toks[j]
            if toks[j + 1] and toks[j + 1].text == "," then
              j = j + 2
            else
              if not (toks[j + 1] and toks[j + 1].text == "=") then
                edits[#edits + 1] = {from = last.to + 1, to = last.to, text = " = nil"}
              end
              break
            end
          end
          k = j
        end
      end
    end
    k = k + 1
  end
  table.sort(edits, function(a, b) return a.from > b.from end)
  for _, e in ipairs(edits) do code = code:sub(1, e.from - 1) .. e.text .. code:sub(e.to + 1) end
  return code
end

-- ---------------------------------------------------------------- the journal

-- Called by the REPL after a chunk ran without error: code as it ran (rewritten), expr when it was
-- an expression whose values the REPL printed (saved as a statement that evaluates it).
local function record(code, expr)
  if code:match("^%s*journal%.") then return end -- the journal's own commands
  if expr then code = "do local _ = " .. code .. "\nend" end
  chunks[#chunks + 1] = {code = code}
end

function journal.show()
  if #chunks == 0 then print("(the journal is empty)") return end
  for i, c in ipairs(chunks) do
    local first = true
    for line in (c.code .. "\n"):gmatch("(.-)\n") do
      print((first and string.format("%4d  ", i) or "      ") .. line)
      first = false
    end
  end
end
doc("show", "journal.show()", "Prints the chunks of this session that ran without error, numbered.",
    "journal.show()")

function journal.clear()
  chunks = {}
  start_seed, start_counter = P.rng_state()
  started = os.date("!%Y-%m-%d %H:%M:%S UTC")
end
doc("clear", "journal.clear()",
    "Empties the journal; a script saved later starts from the random generator's state now.",
    "journal.clear()")

function journal.drop(n)
  if n == nil then
    if #chunks == 0 then return end
    n = #chunks
  end
  if math.type(n) ~= "integer" or n < 1 or n > #chunks then
    raise(string.format("journal.drop: expected a chunk number from 1 to %d (journal.show() numbers them), got %s",
                        #chunks, tostring(n)))
  end
  table.remove(chunks, n)
end
doc("drop", "journal.drop([n])", "Leaves chunk n (default: the last, if any) out of the journal.",
    "journal.drop()")

function journal.save(path)
  check_path(path)
  if type(path) ~= "string" then raise("journal.save: expected a file path") end
  local m = R.manifest({start_seed, start_counter}, R.devices_used())
  local lines = {
    "-- nnlab session journal: replays the session with `nnlab " .. path .. "`",
    "-- started: " .. started .. ", saved: " .. m.date,
  }
  for _, line in ipairs(R.manifest_lines(m)) do
    if not line:match("^%-%- date:") then lines[#lines + 1] = line end
  end
  lines[#lines + 1] = "-- chunks: " .. #chunks
  lines[#lines + 1] = string.format("journal.start{seed = %d, counter = %d}", start_seed, start_counter)
  lines[#lines + 1] = ""
  for _, c in ipairs(chunks) do
    lines[#lines + 1] = c.code
  end
  local f, err = io.open(path, "w")
  if not f then raise("journal.save: cannot write " .. path .. ": " .. tostring(err)) end
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  return path
end
doc("save", "journal.save(path) -> path",
    "Writes the journal as a script with a header (dates, nnlab version and commit, CPU, kernels and "
    .. "BLAS core, devices used, the random generator's state at the start, the data files read with "
    .. "their sizes and SHA-256: runs.manifest) and a first line that restores the random "
    .. "generator's state at the start, so `nnlab path` reproduces the session's weights bit for bit.",
    "journal.save(os.tmpname())")

function journal.start(state)
  if type(state) ~= "table" or math.type(state.seed) ~= "integer" or math.type(state.counter) ~= "integer" then
    raise("journal.start: expected {seed = integer, counter = integer} (as journal.save writes it)")
  end
  P.set_rng_state(state.seed, state.counter)
end
doc("start", "journal.start{seed=, counter=}",
    "The first line of a saved journal: sets the random generator to the session's starting state.",
    "journal.start{seed = 0, counter = 0}")

hooks.rewrite, hooks.record = rewrite, record
return hooks, util.publish(help_rows, {journal = journal})
