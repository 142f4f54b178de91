-- test_help.lua: help() finds every public function by value and by name, every module and
-- every Tensor method has a help row, and every example in the help runs.

local function help_of(x)
  return (capture(help, x))
end

-- The modules help knows: every global table that help() lists as a module.
local function modules()
  local found = {}
  for name, value in pairs(_G) do
    if type(value) == "table" and help_of(value):find("^" .. name .. ": module") then
      found[name] = value
    end
  end
  return found
end

test("overview", function()
  local text = help_of()
  check(text:find("tensor", 1, true) and text:find("help(tensor)", 1, true), "lists the tensor module")
  check(text:find("Tensor", 1, true), "lists the Tensor type")
  check(text:find('help "randn"', 1, true), "says how to get more")
  check(select("#", capture(help)) == 1, "help returns nothing")
  check(modules().tensor == tensor and modules().sys == sys, "tensor and sys are modules")
end)

test("a module", function()
  local text = help_of(tensor)
  check(text:find("^tensor: module"), "names the module")
  check(text:find("\n  randn ", 1, true) and text:find("N(0, 1)", 1, true), "one line per function")
  check(not text:find("example:", 1, true), "no examples in a listing")
  local methods = help_of("Tensor")
  check(methods:find("^Tensor: type") and methods:find("\n  reshape ", 1, true), "help \"Tensor\"")
  check(help_of(tensor.zeros(1)) == methods, "help(a tensor) lists the methods")
end)

test("one function", function()
  local text = help_of(tensor.randn)
  check(text:find("tensor.randn(", 1, true) and text:find("example: tensor.randn", 1, true),
        "signature and example")
  check(help_of("randn") == text, "by short name")
  check(help_of("tensor.randn") == text, "by full name")
  local reshape = help_of("Tensor:reshape")
  check(reshape:find("t:reshape(", 1, true) and reshape:find("-1", 1, true), "a method by name")
  check(help_of(tensor.zeros(1).reshape) == reshape, "a method by value")
  local both = help_of("matmul")
  check(both:find("tensor.matmul(", 1, true) and both:find("t:matmul(", 1, true),
        "a short name shared by a function and a method shows both")
  check(help_of(help):find("help([x])", 1, true), "help on help")
end)

test("unknown names", function()
  local text = help_of("xyz")
  check(text:find("no help for 'xyz'", 1, true), "says so: " .. text)
  local near = help_of("ran")
  check(near:find("no help for 'ran'", 1, true) and near:find("tensor.rand", 1, true)
        and near:find("tensor.randn", 1, true), "suggests names by prefix: " .. near)
  check(help_of("RESHAPE"):find("Tensor:reshape", 1, true), "ignores case in suggestions")
  check(help_of(print):find("no help for", 1, true), "a function without help")
  check(help_of(42):find("no help for '42'", 1, true), "a number")
end)

test("every function and method has help", function()
  local count = 0
  for name, module in pairs(modules()) do
    for fname, fn in pairs(module) do
      if type(fn) == "function" then
        count = count + 1
        local text = help_of(fn)
        check(text:find("example:", 1, true), name .. "." .. fname .. " has no help: " .. text)
        check(text:find(help_of(name .. "." .. fname), 1, true), name .. "." .. fname .. " by name")
      end
    end
  end
  check(count >= 11, "saw the module functions: " .. count)
  local methods = getmetatable(tensor.zeros(1)).methods
  check(type(methods) == "table", "the metatable keeps a plain table of methods")
  count = 0
  for mname, fn in pairs(methods) do
    count = count + 1
    check(help_of("Tensor:" .. mname):find("example:", 1, true), "Tensor:" .. mname .. " has no help")
    check(help_of(fn):find("example:", 1, true), "Tensor:" .. mname .. " by value")
  end
  check(count >= 40, "saw the methods: " .. count)
end)

test("every example runs", function()
  local dir = os.tmpname()
  local ran = 0
  local function try(label, text)
    local example = text:match("example: ([^\n]*)")
    if not check(example, label .. " has an example") then return end
    -- Examples that write files write to a temporary path instead of the current directory.
    example = example:gsub('"x%.npy"', string.format("%q", dir .. ".npy"))
    local chunk = load("return " .. example, "=" .. label) or load(example, "=" .. label)
    local ok, err = pcall(capture, chunk)
    check(ok, label .. ": " .. example .. " -> " .. tostring(err))
    ran = ran + 1
  end
  for name, module in pairs(modules()) do
    for fname, fn in pairs(module) do
      if type(fn) == "function" then try(name .. "." .. fname, help_of(fn)) end
    end
  end
  for mname in pairs(getmetatable(tensor.zeros(1)).methods) do
    try("Tensor:" .. mname, help_of("Tensor:" .. mname))
  end
  try("help", help_of(help))
  os.remove(dir .. ".npy")
  os.remove(dir)
  check(ran >= 55, "ran the examples: " .. ran)
end)

test("objects and their methods, by value", function()
  local ds = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8))
  local t = nn.Trainer{net = nn.Linear(2, 2), data = ds, verbose = false}
  local listing = help_of("Trainer")
  check(listing:find("^Trainer: type") and listing:find("\n  fit ", 1, true), "help \"Trainer\"")
  check(help_of(t) == listing, "help(a trainer) lists its methods: " .. help_of(t))
  local count = 0
  for _, name in ipairs{"step", "epoch", "fit", "resume", "on_step", "save"} do
    local text = help_of(t[name])
    check(text == help_of("Trainer:" .. name) and text:find("t:" .. name, 1, true),
          "help(t." .. name .. ") shows Trainer:" .. name .. ": " .. text)
    count = count + 1
  end
  check(help_of(nn.Trainer.load):find("nn.Trainer.load(path", 1, true), "help(nn.Trainer.load)")
  -- a schedule object: the help of the function that made it
  for _, kind in ipairs{"step", "cosine", "warmup", "onecycle"} do
    local opts = {step = {every = 2}, cosine = {total = 9}, warmup = {steps = 3},
                  onecycle = {total = 9, max_lr = 0.1}}
    local s = optim.schedule[kind](opts[kind])
    check(help_of(s) == help_of("optim.schedule." .. kind), "help(a " .. kind .. " schedule): " .. help_of(s))
  end
  local net = nn.Sequential(nn.Linear(2, 2))
  check(help_of(net.summary) == help_of("Module:summary"), "a Lua method of Module by value")
  check(help_of(net):find("^Module: type"), "help(a network)")
  -- Every other kind of object: the listing of its type, and each method by value.
  local d = data.from_tensors(tensor.zeros(2, 1, 2, 2), {1, 2})
  local objects = {Optimizer = optim.SGD(net, {lr = 0.1}), Dataset = d, Loader = data.loader(d),
                   TensorDataset = ds, Loss = nn.CrossEntropyLoss(), Tensor = tensor.zeros(1),
                   Canvas = viz.curves({loss = {1}}, {width = 32, height = 24}), Module = net}
  for type_name, obj in pairs(objects) do
    check(help_of(obj):find("^" .. type_name .. ": type"), "help(a " .. type_name .. ")")
    local methods = getmetatable(obj).methods or getmetatable(obj).__index
    for name, fn in pairs(type(methods) == "table" and methods or {}) do
      if type(fn) == "function" then
        check(help_of(fn):find("example:", 1, true), type_name .. ":" .. name .. " by value")
        count = count + 1
      end
    end
  end
  check(count >= 80, "saw the methods: " .. count)
end)

-- A callable table documented as a function answers help(value) as well as help "name".
do
  local text = capture(function() help(nn.Trainer) end)
  check(text:find("nn.Trainer{", 1, true) ~= nil, "help(nn.Trainer) shows the Trainer's entry")
end
