-- onnx.lua: the Lua half of onnx: onnx.export (its options, and the doc string that records
-- nnlab's version and the network's summary). Run once by nl_open_onnx with the private C helpers
-- P; returns the help rows of what it defines.
local P = ...
local onnx = onnx
local util = require "nnlab.util"
local raise, check_options = util.error, util.check_options

local function export(net, path, opts)
  local fname = "onnx.export"
  opts = check_options(opts, {"input", "opset", "batch"}, fname)
  if opts.input ~= nil and type(opts.input) ~= "table" then
    raise(fname .. ": input must be a shape such as {1, 3, 32, 32}, got " .. type(opts.input))
  end
  local opset = opts.opset or P.opset_default
  if math.type(opset) ~= "integer" and not (type(opset) == "number" and opset == math.floor(opset)) then
    raise(fname .. ": opset must be a whole number, got " .. tostring(opset))
  end
  if opset < P.opset_min or opset > P.opset_max then
    raise(string.format("%s: opset %s is not supported (%d to %d)", fname, tostring(opset),
                        P.opset_min, P.opset_max))
  end
  local batch = opts.batch == nil and "dynamic" or opts.batch
  if batch ~= "dynamic" and batch ~= "fixed" then
    raise(fname .. ": batch must be \"dynamic\" or \"fixed\", got " .. tostring(batch))
  end
  local ok, text = pcall(tostring, net)
  local doc = "nnlab " .. P.version .. "\n" .. (ok and text or "")
  P.export(net, path, opts.input, math.tointeger(opset), batch == "dynamic", doc)
end
onnx.export = export

return {
  {group = "onnx", name = "export",
   sig = "onnx.export(net, path, {input = {1, 3, 32, 32}, opset = 17, batch = \"dynamic\"})",
   doc = "Writes net as an ONNX model (input 'input', output 'logits', initializers named as in "
         .. "safetensors) for ONNX Runtime: float layers as their operators (BatchNorm with running "
         .. "statistics, Dropout as Identity), quant.int8 networks as QDQ (QuantizeLinear / "
         .. "DequantizeLinear, per-channel weight scales), int4 networks as dequantized floats. "
         .. "input defaults from the first layer; batch = \"fixed\" fixes the first size; opset 13 to 21.",
   example = "local p = os.tmpname(); onnx.export(nn.Sequential(nn.Linear(4, 2)), p); print(onnx.load(p)); os.remove(p)"},
}
