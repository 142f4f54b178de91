-- profile_seed.lua: the seed CNN's per-layer profile at batch 64 (nn.profile: forward and backward
-- ms, FLOPs, % of this machine's measured sgemm peak, the kernels that ran), its training images/s as
-- a fraction of the machine's limit (the peak over the FLOPs of one image), and the same with the
-- kernels held to each lower instruction set, so the gain of each ISA shows in one run, and in bf16
-- mixed precision (native or emulated, as this CPU allows). The CPU model,
-- kernel ISA and BLAS core come first.      nnlab bench/profile_seed.lua   (run by make bench)
local function cpu_model()
  local f = io.open("/proc/cpuinfo")
  local model = f and f:read("a"):match("model name%s*:%s*([^\n]+)")
  if f then f:close() end
  return model or "unknown CPU"
end
local isa, blas = sys.isa()
print(string.format("CPU: %s; kernels %s; OpenBLAS core %s; %d threads", cpu_model(), isa, blas, sys.threads()))
tensor.seed(0)
local net = nn.Sequential{
  nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
  nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
  nn.Flatten(), nn.Linear(4096, 10),
}
local x = tensor.randn(64, 3, 32, 32)
local p = nn.profile(net, x, {reps = 10})
print(string.format("seed CNN: %.1f MFLOP per training image; limit %.0f images/s at %.0f GFLOP/s",
                    p.flops / 64 / 1e6, p.limit_images_s, p.peak_gflops))
for _, lower in ipairs{"avx2", "generic"} do
  if lower ~= isa and pcall(sys.isa, lower) then
    local q = nn.profile(net, x, {reps = 10, quiet = true})
    print(string.format("kernels held to %-8s %7.0f images/s (%.0f%% of the limit); %s: %.2fx", lower,
                        q.images_s, 100 * q.images_s / q.limit_images_s, isa, p.images_s / q.images_s))
  end
end
sys.isa("auto")
local b = nn.profile(net, x, {reps = 10, quiet = true, precision = "bf16"})
print(string.format("bf16 mixed precision (%s): %.0f images/s, %.2fx fp32", select(2, sys.precision()),
                    b.images_s, b.images_s / p.images_s))
