-- test_hostile.lua: hostile files and careless hands. Each test reproduces a defect found by
-- fuzzing and fault injection (code in trainer metadata, image bombs and hangs, deep nesting,
-- size overflows, temporary files of killed saves, planted links, misleading messages, training
-- re-entered from its own hooks) and checks the answer is a clear error, or the right result.
-- The file reproducers of the parsers' bugs are in tests/fuzz/regressions (run by tests/fuzz).

local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)

local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function exists(path) return read(path) ~= nil end

local function regression(target, name) return read("tests/fuzz/regressions/" .. target .. "/" .. name) end

-- A trainer checkpoint of a 2-in 2-out network with its metadata replaced by meta (any text).
local function ds8() return nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8)) end
local function trainer(opts)
  opts = opts or {}
  opts.net = opts.net or nn.Linear(2, 2)
  opts.data = opts.data or ds8()
  opts.verbose = false
  return nn.Trainer(opts)
end
local function with_meta(path, meta)
  local bytes = read(path)
  local n = string.unpack("<I8", bytes)
  local header, body = bytes:sub(9, 8 + n), bytes:sub(9 + n)
  local _, e = header:find('"nnlab.trainer":"', 1, true)
  local close = e + 1
  while header:sub(close, close) ~= '"' do close = close + (header:sub(close, close) == "\\" and 2 or 1) end
  local escaped = meta:gsub('[%c"\\]', function(c)
    return c == '"' and '\\"' or c == "\\" and "\\\\" or string.format("\\u%04x", c:byte())
  end)
  local h = header:sub(1, e) .. escaped .. header:sub(close)
  h = h .. string.rep(" ", (8 - #h % 8) % 8)
  write(path, string.pack("<I8", #h) .. h .. body)
end

-- ---------------------------------------------------------------- 1. trainer metadata is data

test("trainer metadata is JSON: Lua code in it is refused, never run", function()
  local path = dir .. "/code.safetensors"
  trainer():save(path)
  for _, name in ipairs{"lua_long_string", "lua_comment_loop", "lua_alloc"} do
    with_meta(path, regression("trainer", name))
    check_error(function() return nn.Trainer.load(path, {data = ds8()}) end,
                "no longer run", name .. ": refused as old Lua metadata, naming why")
  end
  with_meta(path, regression("trainer", "deep_json"))
  check_error(function() return nn.Trainer.load(path, {data = ds8()}) end, "corrupt trainer metadata",
              "JSON nested 5000 deep")
end)

test("trainer metadata: every field is checked on load and named", function()
  local path = dir .. "/fields.safetensors"
  for _, case in ipairs{
    {"schedule_unknown_kind", "schedule.kind"}, {"pos_string", "pos = \"x\""},
    {"epochs_nan", "epochs = \"nan\""}, {"steps_negative", "steps = -5"},
    {"pos_beyond_epoch", "pos = 99 but an epoch has 2 batches"}, {"history_not_list", "history.loss"},
    {"rng_float", "rng[1]"}} do
    trainer{batch = 4}:save(path)
    with_meta(path, regression("trainer", case[1]))
    check_error(function() return nn.Trainer.load(path, {data = ds8()}) end, case[2], case[1])
    check_error(function() return nn.Trainer.load(path, {data = ds8()}) end, path, case[1] .. " names the file")
  end
  -- a good one still continues bit for bit
  local t = trainer{batch = 4, schedule = optim.schedule.warmup{steps = 2, after = optim.schedule.cosine{total = 8}}}
  t:step()
  t:save(path)
  local u = nn.Trainer.load(path, {data = t.data, verbose = false})
  check(u.steps == 1 and u.pos == 1 and math.type(u.steps) == "integer", "position restored")
  check(u.schedule(5, 0.1) == t.schedule(5, 0.1) and u.schedule.kind == "warmup", "schedule rebuilt: " .. tostring(u.schedule))
  check(t:step() == u:step(), "the next step is the same")
end)

-- ---------------------------------------------------------------- 2, 3, 8. image files

local function folder_with(name, bytes)
  local root = dir .. "/img_" .. name
  os.execute("mkdir -p " .. root .. "/a")
  -- a reproducer is named with its format's extension: image_folder skips files that are not
  -- images by name
  local ext = name:match("^(%a+)_")
  write(root .. "/a/" .. name .. (ext and "." .. ext or ""), bytes)
  return root
end

test("hostile image files: a clear error naming the file, at once", function()
  -- png_eof_loop: libpng (through SDL2_image) looped for ever on it, printing warnings
  for _, case in ipairs{{"png_eof_loop", "truncated or corrupt PNG"},
                        {"png_truncated_chunk", "truncated or corrupt PNG"},
                        {"png_no_iend", "truncated or corrupt PNG"},
                        {"jpeg_bomb", "63520x32800 pixels, more than the limit"},
                        {"jpeg_truncated", "truncated or corrupt JPEG"},
                        {"bmp_huge", "100000x100000 pixels"}} do
    local root = folder_with(case[1], regression("image", case[1]))
    check_error(function() return data.image_folder(root) end, case[2], case[1])
    check_error(function() return data.image_folder(root, {size = 8}) end, root .. "/a/" .. case[1],
                case[1] .. ": the message names the file")
  end
end)

test("image size limit: max_pixels", function()
  local root = folder_with("cat.jpg", read("tests/data/images/cat.jpg"))
  check(#data.image_folder(root) == 1, "a 32x32 JPEG loads under the default limit")
  check_error(function() return data.image_folder(root, {max_pixels = 1000}) end,
              "is 32x32 pixels, more than the limit of 1000", "a lower limit refuses it")
  check(#data.image_folder(root, {max_pixels = 1024}) == 1, "32x32 = 1024 is within max_pixels = 1024")
  check_error(function() return data.image_folder(root, {max_pixels = 0}) end, "max_pixels", "max_pixels = 0")
end)

-- ---------------------------------------------------------------- 4. one nesting limit

test("nesting deeper than the limit is refused however it is built", function()
  local s = nn.Linear(2, 2)
  check_error(function() for _ = 1, 7000 do s = nn.Sequential(s) end end,
              "nn.Sequential: adding this module would nest the network 101 levels deep (at most 100)",
              "inside out")
  local top = nn.Sequential()
  local at = top
  check_error(function()
    for _ = 1, 7000 do local b = nn.Sequential(); at:add(b); at = b end
  end, "101 levels deep", "outside in")
  check(#top:infer{1, 2} == 2, "the deepest allowed network still runs: infer")
  local path = dir .. "/deep.safetensors"
  local ok = pcall(function() top:save(path) end)
  check(ok, "and saves")
  local net = nn.Sequential(nn.Linear(2, 2))
  local inner = net
  for _ = 1, 99 do local b = nn.Sequential(); inner:add(b); inner = b end -- 100 levels
  check_error(function() nn.Sequential(net) end, "101 levels deep", "one more level on a 100-deep net")
  check_error(function() local r = nn.Residual(nn.ReLU()); inner:add(r); r:add(nn.Sequential()) end,
              "levels deep", "through a Residual")
end)

test("a nested-too-deeply architecture in a file names the file", function()
  local path = dir .. "/deep_arch.safetensors"
  nn.Linear(2, 2):save(path)
  local bytes = read(path)
  local n = string.unpack("<I8", bytes)
  local header = bytes:sub(9, 8 + n)
  local arch = regression("arch", "nested_150"):gsub('"', '\\"')
  local h = header:gsub('"nnlab.arch":"(.-[^\\])"', function() return '"nnlab.arch":"' .. arch .. '"' end, 1)
  h = h .. string.rep(" ", (8 - #h % 8) % 8)
  write(path, string.pack("<I8", #h) .. h .. bytes:sub(9 + n))
  check_error(function() return nn.load(path) end, path, "the file is named")
  check_error(function() return nn.load(path) end, "nested more than 100 levels deep", "the limit is given")
end)

-- ---------------------------------------------------------------- 5. sizes that overflow

test("layer sizes and file headers that overflow give errors, not undefined behaviour", function()
  check_error(function() return nn.Conv2d(2147483647, 1, 2147483647) end, "nn.Conv2d", "Conv2d in*k*k")
  check_error(function() return nn.Linear(2147483647, 2147483647) end, "nn.Linear", "Linear in*out")
  local conv = nn.Conv2d(3, 4, 3)
  check_error(function() return conv:infer{2 ^ 40, 3, 2 ^ 20, 2 ^ 20} end, "too large", "an input too large")
  local r = {nn.Linear(4, 2):infer{2 ^ 40, 2 ^ 20, 4}}
  check(r[2] == math.maxinteger, "multiply-adds saturate: " .. tostring(r[2]))
  local mnist = dir .. "/mnist"
  os.execute("mkdir -p " .. mnist)
  local labels = string.pack(">I4I4", 0x801, 2) .. "\1\2"
  for _, set in ipairs{"train", "t10k"} do
    write(mnist .. "/" .. set .. "-images-idx3-ubyte", regression("idx", "count_overflow"):sub(2))
    write(mnist .. "/" .. set .. "-labels-idx1-ubyte", labels)
  end
  check_error(function() return data.mnist(mnist) end, "more than any file can hold", "IDX count overflow")
end)

-- ---------------------------------------------------------------- 6, 7. saving

-- The pid of a process that has ended.
local function dead_pid()
  local p = io.popen("sh -c 'echo $$'")
  local pid = tonumber(p:read("l"))
  p:close()
  return pid
end

test("a save removes temporary files of dead processes, keeps those of live ones", function()
  local path = dir .. "/net.safetensors"
  nn.Linear(2, 2):save(path)
  local dead, dead2 = path .. ".tmp." .. dead_pid(), path .. ".tmp." .. dead_pid() .. ".1a2b3c4d"
  local live = path .. ".tmp.1" -- pid 1 is always alive
  local other = path .. "x.tmp." .. dead_pid() -- another file's
  for _, p in ipairs{dead, dead2, live, other} do write(p, "half a save") end
  nn.Linear(2, 2):save(path)
  check(not exists(dead) and not exists(dead2), "a dead process's temporary files are gone")
  check(exists(live), "a live process's temporary file stays")
  check(exists(other), "another path's temporary file stays")
  check(nn.load(path), "the file is whole")
  for _, p in ipairs{live, other} do os.remove(p) end
end)

test("a link planted at the temporary name does not redirect the save", function()
  local path = dir .. "/t.npy"
  local victim = dir .. "/victim"
  write(victim, "precious")
  local self = read("/proc/self/stat"):match("^(%d+)")
  os.execute(string.format("ln -sf '%s' '%s.tmp.%s'", victim, path, self))
  tensor.ones(3):save(path)
  check(read(victim) == "precious", "the file the link points to is untouched")
  check(tensor.load(path):sum() == 3, "the save went to its path")
  os.remove(path .. ".tmp." .. self)
end)

test("saving to a symbolic link writes through it", function()
  local target, link = dir .. "/real.npy", dir .. "/link.npy"
  tensor.zeros(2):save(target)
  os.execute(string.format("ln -sf '%s' '%s'", target, link))
  tensor.ones(4):save(link)
  local p = io.popen("test -L '" .. link .. "' && echo link")
  check(p:read("l") == "link", "the link is still a link")
  p:close()
  check(tensor.load(target):numel() == 4, "its target holds the new tensor")
  local dangling = dir .. "/dangling.npy"
  os.execute(string.format("ln -sf '%s/nowhere/x.npy' '%s'", dir, dangling))
  check_error(function() tensor.ones(1):save(dangling) end, dangling, "a dangling link: an error naming it")
end)

-- ---------------------------------------------------------------- 8. messages

-- A Lua data set whose sample at index bad is of another shape.
local function lua_set(n, bad)
  return {size = function() return n end,
          get = function(_, i) return i == bad and tensor.zeros(3) or tensor.zeros(2), 1 end}
end

test("a bad sample is named by its index in the data set", function()
  local t = trainer{data = lua_set(2000, 1000), batch = 64}
  check_error(function() t:fit() end, "sample 1000", "fit names index 1000")
  check_error(function() nn.evaluate(nn.Linear(2, 2), lua_set(2000, 1000)) end, "sample 1000",
              "evaluate names index 1000")
end)

test("summary of a deeply nested network (rows over 99 characters)", function()
  local net = nn.Linear(2, 2)
  for _ = 1, 25 do net = nn.Sequential(net) end -- the innermost row is 127 characters wide
  local out = capture(function() net:summary{1, 2} end)
  check(out:find("Total params: 6", 1, true), "prints: " .. out:sub(1, 200))
end)

-- ---------------------------------------------------------------- 9. re-entrant training

test("training inside the trainer's own hook or schedule is refused", function()
  local t = trainer()
  t:on_step(function(tr) tr:fit{epochs = 1} end)
  check_error(function() t:step() end, "cannot train inside itself", "fit from on_step")
  check(t.steps == 0 or t.steps == 1, "the outer step is consistent")
  local u = trainer()
  u.schedule = function(step, lr) u:step(); return lr end
  check_error(function() u:step() end, "already inside Trainer:step", "step from the schedule")
  check(u.steps == 0, "nothing moved")
  u.schedule = nil
  check(u:step(), "the trainer still trains afterwards")
end)

os.execute("rm -rf " .. dir)
