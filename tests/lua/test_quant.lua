-- test_quant.lua: the quant module from Lua: quant.int8 on the seed CNN with a data set, agreement
-- with the float net, the report, the kernels' instruction set, checkpoints and option errors.

local function seed_cnn()
  return nn.Sequential{
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * 4 * 4, 10),
  }
end

local function max_abs(t) return t:abs():max() end


test("int8 from a data set", function()
  local net = seed_cnn()
  net:eval()
  local x = tensor.randn(48, 3, 16, 16)
  local ds = nn.TensorDataset(x, tensor.ones(48):to("i32"))
  local q = quant.int8(net, {calibrate = ds, batches = 3, batch = 16})
  check(q:type() == "Sequential" and #q == 4, "four layers, got " .. #q)
  check(q[1]:type() == "Quantize" and q[2]:type() == "QConv2d" and q[3]:type() == "QConv2d"
        and q[4]:type() == "QLinear", "the integer layers")
  check(q[2].pool == 2 and q[3].pool == 2, "each Conv2d, ReLU, MaxPool2d(2) is one QConv2d with pool=2")
  check(net[1]:type() == "Conv2d" and #net == 8, "the float net is unchanged")
  local yf, yq = net(x), q(x)
  -- stated tolerance: every logit within 5% of the largest float logit
  check(max_abs(yf - yq) <= 0.05 * max_abs(yf), "int8 logits close to float")
  local agree = 0
  local af, aq = yf:argmax(2):totable(), yq:argmax(2):totable()
  for i = 1, #af do if af[i] == aq[i] then agree = agree + 1 end end
  check(agree >= 40, "top-1 agrees on " .. agree .. " of 48")
  local p = quant.int8(net, {calibrate = {x}, method = "percentile", percentile = 99.9})
  check(max_abs(yf - p(x)) <= 0.1 * max_abs(yf), "percentile calibration")
end)

test("report", function()
  local lin = nn.Linear(2, 2)
  lin.weight:copy(tensor.from({{1, -2}, {0.5, 0.25}}))
  local q = quant.int8(lin, {calibrate = tensor.from({{-1, 3}, {0, 1}})})
  local said, print0 = 0, print
  print = function() said = said + 1 end
  local rows = quant.report(q)
  print = print0
  check(said == 0, "quant.report prints nothing itself (as prune.report)")
  check(tostring(rows):find("^layer +type +bits") and tostring(rows):find("QLinear", 1, true),
        "and prints as its table: " .. tostring(rows))
  check(#rows == 2 and rows[1].type == "Quantize" and rows[2].type == "QLinear", "two rows")
  check(math.abs(rows[1].out_scale - 4 / 255) < 1e-7, "input scale 4/255")
  check(math.abs(rows[2].wscale_max - 2 / 127) < 1e-7 and math.abs(rows[2].wscale_min - 0.5 / 127) < 1e-7,
        "per-channel weight scales")
  check(rows[2].bits == 8 and rows[2].weight_sqnr > 30, "bits and weight SQNR")
end)

test("isa", function()
  local cur = quant.isa()
  check(cur == "vnni" or cur == "avx2" or cur == "generic", "named")
  check(quant.isa("generic") == "generic", "forced portable path")
  local net = seed_cnn()
  local x = tensor.randn(4, 3, 16, 16)
  local q = quant.int8(net, {calibrate = x})
  local a = q(x):clone()
  quant.isa("auto")
  check(max_abs(q(x) - a) == 0, "portable and " .. quant.isa() .. " give the same outputs")
  check_error(function() quant.isa("sse9") end, "unknown ISA")
  for _, isa in ipairs{"avx2", "vnni"} do -- each that this CPU has against the portable path
    if pcall(quant.isa, isa) then
      check(max_abs(q(x) - a) == 0, "portable and " .. isa .. " give the same outputs")
    end
  end
  quant.isa("auto")
end)

test("checkpoints", function()
  local net = seed_cnn()
  local x = tensor.randn(4, 3, 16, 16)
  local q = quant.int8(net, {calibrate = x})
  local path = os.tmpname()
  q:save(path)
  local back = nn.load(path)
  back:eval()
  check(back[2]:type() == "QConv2d" and back[2].weight:dtype() == "i8", "int8 weights come back")
  check(max_abs(back(x) - q(x)) == 0, "same outputs after loading")
  check(back[2].pool == 2, "the fused pool comes back")
  os.remove(path)
end)

test("errors", function()
  local net = seed_cnn()
  check_error(function() quant.int8(net) end, "give calibration data")
  check_error(function() quant.int8(net, {calibrate = 3}) end, "calibrate must be")
  check_error(function() quant.int8(net, {calibrate = tensor.randn(2, 3, 16, 16), method = "x"}) end,
              "method must be")
  check_error(function() quant.int8(net, {calibrat = 1}) end, "unknown option 'calibrat'")
  check_error(function() quant.int8(net, {calibrate = tensor.randn(2, 5, 16, 16)}) end, "channels")
  local q = quant.int8(net, {calibrate = tensor.randn(2, 3, 16, 16)})
  check_error(function() q:backward(tensor.randn(2, 10)) end, "")
  check_error(function() nn.QConv2d(3, 8, 3, {pool = 4}) end, "a fused pool is at most 3x3, got pool=4")
  check_error(function() nn.QConv2d(3, 8, 3, {pool = 3}):forward(tensor.zeros(1, 4, 4, 3):to("u8")) end,
              "output 2x2 is smaller than the 3x3 pool")
end)

test("int4", function()
  local net = seed_cnn()
  local q = quant.int4(net, {group = 32})
  check(q[1]:type() == "Int4Conv2d" and q[8]:type() == "Int4Linear" and q[2]:type() == "ReLU", "layers")
  check(q[1].weight:dtype() == "u8" and q[1].weight:shape()[2] == 14 and q[1].scale:shape()[2] == 1,
        "27 weights per filter: 14 bytes, one group")
  local x = tensor.randn(2, 3, 16, 16)
  local yf, y4 = net(x), q(x)
  check(max_abs(yf - y4) <= 0.2 * max_abs(yf), "int4 outputs near float")
  local rows = quant.report(q)
  check(#rows == 3 and rows[1].bits == 4 and rows[1].weight_sqnr > 15, "int4 report")
  local path = os.tmpname()
  q:save(path)
  local back = nn.load(path)
  back:eval()
  check(max_abs(back(x) - y4) == 0, "int4 checkpoint round trip")
  os.remove(path)
  check_error(function() quant.int4(net, {group = 0}) end, "group must be")
  check_error(function() quant.int4(net, {grp = 2}) end, "unknown option 'grp'")
end)

test("int4 kernels against dequantize-then-float", function()
  -- the float net with each Int4 layer's weights (quant.weights) and bias in f32 layers: what the
  -- int4 forward computed before its kernels dequantized in place; only sgemm's summation order
  -- differs, so the stated tolerance is 1e-5 of the largest logit
  local net = nn.Sequential{
    nn.Conv2d(3, 8, 3, {stride = 2, padding = 1}), nn.ReLU(),
    nn.Conv2d(8, 6, 2, {bias = false}), nn.ReLU(),
    nn.Flatten(), nn.Linear(6 * 7 * 7, 5),
  }
  local q = quant.int4(net, {group = 7})
  local ref = nn.Sequential{
    nn.Conv2d(3, 8, 3, {stride = 2, padding = 1}), nn.ReLU(),
    nn.Conv2d(8, 6, 2, {bias = false}), nn.ReLU(),
    nn.Flatten(), nn.Linear(6 * 7 * 7, 5),
  }
  for _, i in ipairs{1, 3, 6} do
    ref[i].weight:copy(quant.weights(q[i]))
    if q[i].bias then ref[i].bias:copy(q[i].bias) end
  end
  ref:eval()
  local x = tensor.randn(3, 3, 16, 16)
  local y4, yr = q(x), ref(x)
  check(max_abs(y4 - yr) <= 1e-5 * max_abs(yr), "int4 net off its dequantized float net by "
        .. max_abs(y4 - yr))
  q[1].qparams:set(0, 1)
  check_error(function() q(x) end, "bad scale base")
end)

test("qat and convert", function()
  local net = seed_cnn()
  local qat = quant.qat(net, {bits = 8})
  check(qat[1]:type() == "FakeQuant" and qat[2]:type() == "QATConv2d", "fake-quant layers")
  check_error(function() quant.convert(qat) end, "has seen no data")
  -- a few SGD steps with the normal Trainer
  local x = tensor.randn(32, 3, 16, 16)
  local ds = nn.TensorDataset(x, tensor.ones(32):to("i32"))
  local t = nn.Trainer{net = qat, data = ds, loss = nn.CrossEntropyLoss(), batch = 16,
                       optim = optim.SGD(qat, {lr = 0.01}), verbose = false}
  local w0 = qat[2].weight:clone()
  t:fit{epochs = 1}
  check(max_abs(qat[2].weight - w0) > 0, "QAT weights train")
  qat:eval()
  local q = quant.convert(qat)
  check(q[2]:type() == "QConv2d", "converted")
  local yf, yq = qat(x), q(x)
  -- stated tolerance: 0.1% of the largest logit (measured ~1e-7: float rounding only)
  check(max_abs(yf - yq) <= 1e-3 * max_abs(yf), "integer model matches the fake-quant model")
  check_error(function() quant.qat(net, {bits = 9}) end, "bits must be")
end)

test("weights for plots", function()
  local l = nn.Linear(8, 3)
  local q8 = quant.int8(l, {calibrate = tensor.randn(4, 8)})
  local w = quant.weights(q8[2])
  check(w:shape()[1] == 3 and w:shape()[2] == 8, "the float layer's shape")
  -- within half a step of each channel's scale (max |w| / 127)
  check((w - l.weight):abs():max() <= l.weight:abs():max() / 127 / 2 + 1e-7, "int8 dequantized")
  local q4 = quant.int4(nn.Conv2d(3, 4, 3))
  check(#quant.weights(q4[1]):shape() == 4, "int4 conv weights [out, in, k, k]")
  check_error(function() quant.weights(nn.ReLU()) end, "no quantized weights")
end)
