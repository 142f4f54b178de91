-- 07_quantization.lua: number formats (fp32, bf16, int8) by hand, then an int8 network: accuracy and speed.

-- The reference bf16 rounding: the upper 16 bits of the fp32 pattern, rounded to nearest even.
local function bf16(v)
  local bits = string.unpack("<I4", string.pack("<f", v))
  bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
  return (string.unpack("<f", string.pack("<I4", bits)))
end

-- The step's weights, from their own seed.
local function w_of()
  tensor.seed(21)
  return tensor.randn(4, 8)
end

local function trained(env)
  env.net, env.train, env.test = lesson.spirals_mlp({hidden = 256, epochs = 20})
end

local function is_int8(q)
  return nn.is_module(q) and tostring(q):find("QLinear") ~= nil
end

lesson.define{
  name = "quantization", title = "Number formats: fp32, bf16, int8 (accuracy and speed)",
  intro = [[
    fp32 keeps 24 significant bits and an 8-bit exponent; bf16 keeps the same exponent (the same
    range) but only 8 significant bits; int8 keeps 256 levels between -127 and 127 times a scale.
    Fewer bits: less memory and, on hardware made for them, faster arithmetic, at some accuracy.]],
  steps = {
    {[[
      bf16 is the upper half of an fp32 number, rounded to nearest (ties to even). Write a Lua
      function `bf16(v)` that returns v rounded to bf16, as a number. string.pack("<f", v) gives the
      4 bytes of v as fp32 and string.unpack("<I4", ...) its bit pattern; keep the upper 16 bits,
      rounding. (nnlab has no bf16 tensors yet: this step is about the format.)]],
      check = function(env)
        if type(env.bf16) ~= "function" then
          return false, "bf16 is " .. (env.bf16 == nil and "not set yet" or "a " .. type(env.bf16)) .. ": function bf16(v) ... end"
        end
        for _, v in ipairs{1, 1 / 3, math.pi, -2.718281828, 1e-3, 1 + 2 ^ -8, 1 + 3 * 2 ^ -8, 300.5, 65504, -1e30} do
          local ok, got = pcall(env.bf16, v)
          if not ok then return false, string.format("bf16(%.9g) fails: %s", v, tostring(got)) end
          local want = bf16(v)
          if got ~= want then
            local cut = (string.unpack("<f", string.pack("<I4", string.unpack("<I4", string.pack("<f", v)) & 0xFFFF0000)))
            return false, string.format("bf16(%.9g) is %s, expected %.9g%s", v, tostring(got), want,
                                        got == cut and ": that cuts the low bits off; round to nearest (ties to even)" or "")
          end
        end
        return true, string.format("bf16 rounds right: bf16(1/3) = %.9g, %.2g relative error", bf16(1 / 3), math.abs(bf16(1 / 3) - 1 / 3) * 3)
      end,
      hint = {"Rounding to nearest: add half of the part you drop (0x7FFF, plus 1 when the kept part is odd), then cut.",
              "local b = string.unpack(\"<I4\", string.pack(\"<f\", v)); b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000; "
              .. "return (string.unpack(\"<f\", string.pack(\"<I4\", b)))"}},
    {[[
      int8 by hand: this step made `w` (4 x 8 weights). Symmetric int8 quantization uses one scale,
      scale = max|w| / 127, stores q = round(w / scale) in -127..127, and computes with q * scale.
      Make `wq`: w quantized and back (an f32 tensor). w:abs():max() is max|w|; x:to("i8") rounds to
      nearest and saturates; x:to("f32") converts back.]],
      setup = function(env) env.w = w_of() end,
      check = function(env)
        local w = w_of()
        local scale = w:abs():max() / 127
        local want = (w * (1 / scale)):to("i8"):to("f32") * scale
        local ok, msg = lesson.expect(env.wq, "wq", {shape = {4, 8}, dtype = "f32", values = want, tol = 1e-4})
        if not ok then
          if tensor.is_tensor(env.wq) and env.wq:dtype() == "f32" and table.concat(env.wq:shape(), "x") == "4x8"
             and (env.wq - w):abs():max() > scale then
            msg = msg .. string.format(" (wq differs from w by up to %.3g, more than the scale %.3g: check the scale)",
                                       (env.wq - w):abs():max(), scale)
          end
          return false, msg
        end
        return true, string.format("wq is w in 255 levels: scale %.4g, largest error %.3g (at most scale / 2)", scale,
                                   (want - w):abs():max())
      end,
      hint = {"scale = w:abs():max() / 127", "wq = (w / scale):to(\"i8\"):to(\"f32\") * scale"}},
    {[[
      A whole network in int8: this step trained `net` (an MLP on the spirals) and made `train` and
      `test`. quant.int8(net, {calibrate = train}) measures the activations' ranges on training
      data and returns a new integer network. Make `q8` and compare nn.evaluate(q8, test).top1 with
      net's: the step is passed when q8 is int8 and loses at most 1 point.]],
      setup = trained,
      check = function(env)
        local q8, net = env.q8, env.net
        if not is_int8(q8) then
          return false, "q8 is " .. (q8 == nil and "not set yet" or nn.is_module(q8) and "not an int8 network (no QLinear layer)"
            or "a " .. type(q8)) .. ": q8 = quant.int8(net, {calibrate = train})"
        end
        local test = lesson.spirals(100, {seed = 2})
        local a, b = nn.evaluate(net, test).top1, nn.evaluate(q8, test).top1
        if b < a - 0.01 then
          return false, string.format("q8 gets %.1f%% of test, net %.1f%%: more than 1 point lost (calibrate on train)", 100 * b, 100 * a)
        end
        return true, string.format("q8 gets %.1f%% of test, net %.1f%%, with weights 4x smaller", 100 * b, 100 * a)
      end,
      hint = {"q8 = quant.int8(net, {calibrate = train})"}},
    {[[
      Is it faster? Time both on a batch: times = compress.fastest({net, q8}, tensor.randn(256, 2))
      gives seconds per forward of each. int8 is faster where the CPU has int8 dot-product
      instructions (sys.info().int8_isa == "vnni": AVX-512 VNNI); elsewhere its portable kernels are
      slower than fp32's BLAS. Set `winner` to "int8" or "fp32", whichever was faster here.]],
      check = function(env)
        if env.winner ~= "int8" and env.winner ~= "fp32" then
          return false, "winner must be \"int8\" or \"fp32\", got " .. tostring(env.winner)
        end
        if not is_int8(env.q8) or not nn.is_module(env.net) then return false, "net and q8 of the step before are needed" end
        local times = compress.fastest({env.net, env.q8}, tensor.randn(256, 2), {rounds = 5, time = 0.2})
        local ratio = times[1] / times[2] -- above 1: int8 faster
        local measured = ratio > 1 and "int8" or "fp32"
        local text = string.format("fp32 %.3g ms, int8 %.3g ms per forward of 256 points (int8 kernels: %s)", 1e3 * times[1],
                                   1e3 * times[2], sys.info().int8_isa)
        if env.winner ~= measured and ratio < 1.5 and ratio > 1 / 1.5 then
          return true, text .. ": too close to call, either answer stands"
        end
        if env.winner ~= measured then return false, "measured here: " .. text .. ", so " .. measured .. " is faster" end
        return true, text
      end,
      hint = {"times[1] is net's (fp32), times[2] q8's: the smaller is faster."}},
  },
}
