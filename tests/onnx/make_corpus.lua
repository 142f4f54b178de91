-- make_corpus.lua: writes the seed corpus of the ONNX fuzz target, tests/fuzz/corpus/onnx/: small
-- models that onnx.export wrote (good_*), and damaged ones (bad_*) that tests/lua/test_onnx.lua
-- loads expecting a clear error each. The damaged models are written field by field here with a
-- minimal protobuf writer (test tooling only: nnlab itself reads and writes ONNX with protobuf-c).
-- Run from the repository root:   build/nnlab tests/onnx/make_corpus.lua
local root = "tests/fuzz/corpus/onnx/"
os.execute("mkdir -p " .. root)

local function write(name, bytes)
  local f = assert(io.open(root .. name, "wb"))
  f:write(bytes)
  f:close()
end

local function exported(net, opts)
  local p = os.tmpname()
  onnx.export(net, p, opts)
  local f = assert(io.open(p, "rb"))
  local s = f:read("a")
  f:close()
  os.remove(p)
  return s
end

-- ---- protobuf wire format: varints, and fields as (number, wire type, payload)
local function varint(v)
  local out = {}
  repeat
    local b = v & 0x7f
    v = v >> 7 -- logical shift: negative numbers take ten bytes, as protobuf writes them
    out[#out + 1] = string.char(v ~= 0 and (b | 0x80) or b)
  until v == 0
  return table.concat(out)
end
local function int(n, v) return varint(n << 3) .. varint(v) end
local function bytes(n, s) return varint((n << 3) | 2) .. varint(#s) .. s end
local function msg(n, parts) return bytes(n, table.concat(parts)) end

local FLOAT = 1
local function floats(...) return string.pack("<" .. string.rep("f", select("#", ...)), ...) end
-- TensorProto: dims (1), data_type (2), name (8), raw_data (9), external_data (13), data_location (14)
local function tproto(name, dims, raw, extra)
  local p = {}
  for _, d in ipairs(dims) do p[#p + 1] = int(1, d) end
  p[#p + 1] = int(2, FLOAT)
  p[#p + 1] = bytes(8, name)
  if raw then p[#p + 1] = bytes(9, raw) end
  if extra then p[#p + 1] = extra end
  return table.concat(p)
end
-- ValueInfoProto of a float tensor of shape dims (a string dim is symbolic)
local function value_info(n, name, dims)
  local ds = {}
  for _, d in ipairs(dims) do
    ds[#ds + 1] = msg(1, {type(d) == "string" and bytes(2, d) or int(1, d)})
  end
  return msg(n, {bytes(1, name), msg(2, {msg(1, {int(1, FLOAT), msg(2, ds)})})})
end
-- NodeProto: input (1), output (2), name (3), op_type (4), attribute (5)
local function node(name, op, inputs, outputs, attrs)
  local p = {}
  for _, s in ipairs(inputs) do p[#p + 1] = bytes(1, s) end
  for _, s in ipairs(outputs) do p[#p + 1] = bytes(2, s) end
  p[#p + 1] = bytes(3, name)
  p[#p + 1] = bytes(4, op)
  for _, a in ipairs(attrs or {}) do p[#p + 1] = msg(5, a) end
  return msg(1, p)
end
local function attr_int(name, v) return {bytes(1, name), int(3, v), int(20, 2)} end
local function attr_ints(name, vs)
  local p = {bytes(1, name), int(20, 7)}
  for _, v in ipairs(vs) do p[#p + 1] = int(8, v) end
  return p
end
-- ModelProto: ir_version 8, opset 17, the graph's nodes, initializers, input x and output y
local function model(nodes, inits, input_dims)
  local g = {}
  for _, n in ipairs(nodes) do g[#g + 1] = n end
  for _, t in ipairs(inits or {}) do g[#g + 1] = bytes(5, t) end
  g[#g + 1] = value_info(11, "x", input_dims or {"N", 4})
  g[#g + 1] = value_info(12, "y", {"N", 4})
  return int(1, 8) .. msg(8, {bytes(1, ""), int(2, 17)}) .. bytes(2, "corpus") .. msg(7, g)
end

-- ---- good files, written by onnx.export
tensor.seed(5)
write("good_linear.onnx", exported(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), {opset = 13}))
write("good_cnn.onnx", exported(nn.Sequential(nn.Conv2d(1, 2, 3, {padding = 1}), nn.BatchNorm2d(2), nn.GELU(),
                                              nn.Residual(nn.Conv2d(2, 2, 1), nn.Tanh()), nn.MaxPool2d(2),
                                              nn.AvgPool2d(2), nn.GlobalAvgPool(), nn.Linear(2, 3), nn.Softmax()),
                                {input = {1, 1, 8, 8}}))
local q = quant.int8(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)),
                     {calibrate = tensor.randn(4, 1, 4, 4)})
write("good_int8.onnx", exported(q, {input = {1, 1, 4, 4}}))
write("good_handmade.onnx", model({node("relu", "Relu", {"x"}, {"y"})}))

-- ---- damaged files
local good = exported(nn.Sequential(nn.Linear(4, 3), nn.Sigmoid()))
write("bad_truncated.onnx", good:sub(1, #good // 2))
write("bad_not_protobuf.onnx", "This is not an ONNX model, only text.\n")
write("bad_no_graph.onnx", int(1, 8))
write("bad_cycle.onnx", model({node("a", "Relu", {"b_out"}, {"a_out"}), node("b", "Relu", {"a_out"}, {"b_out"}),
                               node("c", "Relu", {"b_out"}, {"y"})}))
write("bad_undefined_input.onnx", model({node("a", "Relu", {"nowhere"}, {"y"})}))
write("bad_twice_defined.onnx", model({node("a", "Relu", {"x"}, {"y"}), node("b", "Relu", {"x"}, {"y"})}))
local w = tproto("w", {4, 4}, floats(1, 2, 3)) -- 12 bytes for 64
write("bad_size_mismatch.onnx", model({node("fc", "Gemm", {"x", "w"}, {"y"}, {attr_int("transB", 1)})}, {w}))
local huge = tproto("w", {1 << 40, 1 << 40}, floats(1))
write("bad_huge_dims.onnx", model({node("fc", "Gemm", {"x", "w"}, {"y"}, {attr_int("transB", 1)})}, {huge}))
local huge2 = tproto("w", {-1, 4}, floats(1))
write("bad_negative_dim.onnx", model({node("fc", "Gemm", {"x", "w"}, {"y"}, {attr_int("transB", 1)})}, {huge2}))
write("bad_huge_input.onnx", model({node("a", "Relu", {"x"}, {"y"})}, nil, {1, 1 << 50}))
local ext = tproto("w", {4, 4}, nil, msg(13, {bytes(1, "location"), bytes(2, "/etc/passwd")}) .. int(14, 1))
write("bad_external_data.onnx", model({node("fc", "Gemm", {"x", "w"}, {"y"}, {attr_int("transB", 1)})}, {ext}))
write("bad_unknown_op.onnx", model({node("rnn", "LSTM", {"x"}, {"y"})}))
local wc = tproto("wc", {4, 2, 3, 3}, floats(table.unpack((function() local t = {} for i = 1, 72 do t[i] = i end return t end)())))
write("bad_grouped_conv.onnx", model({node("conv", "Conv", {"x", "wc"}, {"y"}, {attr_int("group", 2)})}, {wc},
                                     {"N", 4, 6, 6}))
write("bad_dilated_conv.onnx", model({node("conv", "Conv", {"x", "wc"}, {"y"}, {attr_ints("dilations", {2, 2})})},
                                     {tproto("wc", {4, 4, 1, 1}, floats(table.unpack((function() local t = {} for i = 1, 16 do t[i] = i end return t end)())))},
                                     {"N", 4, 6, 6}))
-- a downsampling shortcut: the skip path has a layer of its own
local w1 = tproto("w1", {4, 4}, floats(table.unpack((function() local t = {} for i = 1, 16 do t[i] = i / 16 end return t end)())))
write("bad_branch.onnx", model({node("fc1", "Gemm", {"x", "w1"}, {"a"}, {attr_int("transB", 1)}),
                                node("fc2", "Gemm", {"x", "w1"}, {"b"}, {attr_int("transB", 1)}),
                                node("add", "Add", {"a", "b"}, {"y"})}, {w1}))
write("bad_two_outputs.onnx", int(1, 8) .. msg(8, {int(2, 17)}) .. msg(7, {node("a", "Relu", {"x"}, {"y"}),
      value_info(11, "x", {1, 4}), value_info(12, "y", {1, 4}), value_info(12, "z", {1, 4})}))
write("bad_opset.onnx", int(1, 8) .. msg(8, {int(2, 3)}) .. msg(7, {node("a", "Relu", {"x"}, {"y"}),
      value_info(11, "x", {1, 4}), value_info(12, "y", {1, 4})}))
print("wrote " .. root)
