-- test_sys.lua: sys.info against the kernel's view of the processor (/proc/cpuinfo), and the BLAS
-- kernels that the real program runs when nobody sets OPENBLAS_CORETYPE: an AVX-512 core where
-- cpuid reports AVX-512 F/BW/VL/DQ, at least Haswell where it reports AVX2 and FMA.
local nnlab = arg[-1]

-- The flags of the first processor in /proc/cpuinfo as a set, and its "model name"; nil if none.
local function proc_cpu()
  local f = io.open("/proc/cpuinfo")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local flags = {}
  for w in (text:match("\nflags%s*:([^\n]*)") or ""):gmatch("%S+") do flags[w] = true end
  return flags, text:match("model name%s*:%s*([^\n]-)%s*\n")
end

-- Runs the real program on a chunk with OPENBLAS_CORETYPE as given (nil: unset, whatever this
-- machine's environment says) and returns what it printed.
local function run(coretype, code)
  local env = coretype and ("OPENBLAS_CORETYPE=" .. coretype) or "-u OPENBLAS_CORETYPE"
  local p = assert(io.popen(string.format("env -u NNLAB_BLAS_RESTARTED %s %q -e %q 2>&1", env, nnlab, code)))
  local out = p:read("a")
  p:close()
  return (out:gsub("\n$", ""))
end

local AVX512_CORES = {SkylakeX = true, Cooperlake = true, SapphireRapids = true}
local AVX2_CORES = {Haswell = true, Zen = true, SkylakeX = true, Cooperlake = true, SapphireRapids = true}

test("sys.info's fields", function()
  local i = sys.info()
  check(type(i.cpu.model) == "string" and type(i.cpu.vendor) == "string", "cpu model and vendor")
  check(math.type(i.cpu.family) == "integer" and math.type(i.cpu.model_id) == "integer", "family, model")
  for _, k in ipairs{"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
                     "avx512_bf16", "amx"} do
    check(type(i.cpu.features[k]) == "boolean", "feature " .. k .. " is a boolean")
  end
  check(i.blas.name:match("^OpenBLAS %d"), "blas.name: " .. tostring(i.blas.name))
  check(type(i.blas.core) == "string" and i.blas.core ~= "", "blas.core")
  check(i.blas.summary:find(i.blas.core, 1, true), "the summary names the core: " .. i.blas.summary)
  check(i.threads == sys.threads(), "threads " .. tostring(i.threads))
  check(i.int8_isa == quant.isa(), "int8_isa " .. tostring(i.int8_isa))
  check(type(i.cuda) == "table", "cuda is a list")
  if #i.cuda == 0 then check(type(i.cuda_note) == "string", "no CUDA device: a note says why") end
end)

test("sys.info's features are the kernel's", function()
  local flags, model = proc_cpu()
  if not flags or not next(flags) then skip("no /proc/cpuinfo flags here"); return end
  local f = sys.info().cpu.features
  local names = {avx2 = "avx2", fma = "fma", avx512f = "avx512f", avx512bw = "avx512bw",
                 avx512vl = "avx512vl", avx512dq = "avx512dq", avx512_vnni = "avx512_vnni",
                 avx512_bf16 = "avx512_bf16", amx = "amx_tile"}
  for k, flag in pairs(names) do
    check(f[k] == (flags[flag] == true),
          string.format("%s: sys.info says %s, /proc/cpuinfo %s", k, f[k], flags[flag] == true))
  end
  if model then check(sys.info().cpu.model == model, "model '" .. sys.info().cpu.model .. "' vs '" .. model .. "'") end
end)

test("the real program runs BLAS kernels as new as the CPU (OPENBLAS_CORETYPE unset)", function()
  local flags = proc_cpu() or {}
  local f = sys.info().cpu.features
  local has = function(k) return (flags[k] or f[k]) and true end
  local out = run(nil, "local b = sys.info().blas io.write(b.core, ' ', b.chosen_by)")
  local core, by = out:match("^(%S+) (%S+)$")
  check(core, "the program printed '" .. out .. "'")
  if not core then return end
  check(by == "OpenBLAS" or by == "nnlab", "chosen by " .. by)
  if has("avx512f") and has("avx512bw") and has("avx512vl") and has("avx512dq") then
    check(AVX512_CORES[core], "AVX-512 F/BW/VL/DQ CPU runs " .. core .. " kernels, not an AVX-512 core")
  elseif has("avx2") and has("fma") then
    check(AVX2_CORES[core], "AVX2+FMA CPU runs " .. core .. " kernels, older than Haswell")
  else
    skip("this CPU has no AVX2+FMA; any core will do (" .. core .. ")")
  end
end)

test("OPENBLAS_CORETYPE set by the user is respected, even when older", function()
  local out = run("Prescott", "local b = sys.info().blas io.write(b.core, ' ', b.chosen_by)")
  check(out == "Prescott OPENBLAS_CORETYPE", "got '" .. out .. "'")
  out = run("Prescott", "io.write(sys.info().blas.summary)")
  check(out:find("set by OPENBLAS_CORETYPE", 1, true), "summary '" .. out .. "'")
end)

test("--version shows the BLAS kernels in one line", function()
  local p = assert(io.popen(string.format("%q --version", nnlab)))
  local out = p:read("a")
  p:close()
  local line = out:match("\nBLAS: ([^\n]+)")
  check(line and line == sys.info().blas.summary, "--version printed '" .. out .. "'")
end)
