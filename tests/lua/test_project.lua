-- test_project.lua: a clone of the project holds what its README and `make bench` name: the
-- design notes, the PyTorch peer scripts of the benchmarks, and no path outside the checkout
-- except the optional CIFAR-10 archive; the README claims no device that has no backend.
-- Run from the repository's folder (make test does).

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local readme = read("README.md")
check(readme ~= nil, "README.md is readable from the repository's folder")
readme = readme or ""

-- Every docs/ and bench/ path the README names in backquotes exists.
local named = 0
for path in readme:gmatch("`((%a+)/[%w_./-]+%.%a+)`") do
  local top = path:match("^(%a+)/")
  if top == "docs" or top == "bench" then
    named = named + 1
    check(read(path) ~= nil, "the README names " .. path .. ", which the project holds")
  end
end
check(named >= 3, "the README names the design notes and the peer scripts (" .. named .. " paths)")
check(readme:find("docs/DESIGN.md", 1, true), "the README points to docs/DESIGN.md")

-- Nothing a user runs depends on ../shared except the archive, which stays optional.
for _, path in ipairs{"README.md", "bench/run.sh", "bench/cifar10_epoch.lua", "bench/train_step.lua",
                      "bench/bench_quant.c", "tests/get_data.sh", "Makefile"} do
  local s = read(path) or ""
  for ref in s:gmatch("%.%./shared/[%w_./-]+") do
    check(ref == "../shared/data/cifar10-jpeg.tar.gz",
          path .. " names " .. ref .. " (only the optional CIFAR-10 archive may live beside the checkout)")
  end
end

-- The peers bench/run.sh passes to the Lua benchmarks hold the scripts they run.
local run = read("bench/run.sh") or ""
local peers = run:match("\nPEERS=([%w_./-]+)")
check(peers == "bench/peers", "bench/run.sh takes the peers from bench/peers (got " .. tostring(peers) .. ")")
for _, script in ipairs{"torch_seed_cnn.py", "torch_seed_cnn_int8.py"} do
  local s = read("bench/peers/" .. script)
  check(s and s:find("torch", 1, true), "bench/peers/" .. script .. " is a PyTorch script")
end

-- Data set-up downloads the official release when no archive is given.
local get = read("tests/get_data.sh") or ""
check(get:find("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", 1, true),
      "make data downloads the official release")

-- The README shows x:to("cuda") only once a CUDA backend exists.
local has_cuda = read("backends/cuda/backend.cu") or io.open("backends/cuda/") ~= nil
if not has_cuda then
  check(not readme:find('x:to("cuda")', 1, true), "the README does not show x:to(\"cuda\") without a CUDA backend")
end
