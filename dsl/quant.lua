-- quant.lua: the Lua half of quant: quant.int8 (calibration batches drawn from a data set) and
-- quant.report (a table that prints as one). Run once by nl_open_quant with the private C helpers P;
-- returns the help rows of what it defines.
local P = ...
local quant, tensor, nn = quant, tensor, nn
local floor = math.floor
local util = require "nnlab.util"
local raise, check_options, check_int = util.error, util.check_options, util.check_int

local help_rows, doc = util.help_rows("quant")



-- The calibration inputs: a Tensor (one batch), a list of Tensors, the first batches of a
-- data.loader (its normalisation applied; the loader's position is kept), or the first
-- batches*batch samples of a data set (its :batch(indices), else :get(i) one at a time).
local function calibration(data, nbatches, batch, fname)
  if tensor.is_tensor(data) then return {data} end
  if type(data) == "table" and tensor.is_tensor(data[1]) then return data end
  if type(data) == "userdata" and data.next and data.state and data.set_state then
    local saved, xs = data:state(), {}
    data:reset()
    for _ = 1, nbatches do
      local x = data:next()
      if not x then break end
      xs[#xs + 1] = x
    end
    data:set_state(saved)
    return xs
  end
  local ok = (type(data) == "table" or type(data) == "userdata") and data.size
             and (data.batch or data.get)
  if not ok then
    raise(fname .. ": calibrate must be a data set (:size() and :batch(indices) or :get(i)), a "
          .. "Tensor or a list of Tensors, got " .. type(data))
  end
  local n, xs = data:size(), {}
  for first = 1, math.min(n, nbatches * batch), batch do
    local last = math.min(first + batch - 1, n)
    if data.batch then
      xs[#xs + 1] = data:batch(tensor.arange(first, last + 1):to("i32"))
    else
      local samples = {}
      for i = first, last do samples[#samples + 1] = data:get(i) end
      xs[#xs + 1] = P.stack(samples)
    end
  end
  if #xs == 0 then raise(fname .. ": the calibration data set is empty") end
  return xs
end

function quant.int8(net, opts)
  local f = "quant.int8"
  if not nn.is_module(net) then raise(f .. ": the first argument must be a network") end
  opts = check_options(opts, {"calibrate", "batches", "batch", "method", "percentile"}, f)
  if opts.calibrate == nil then
    raise(f .. ": give calibration data, e.g. quant.int8(net, {calibrate=train_set})")
  end
  local method = opts.method or "minmax"
  if method ~= "minmax" and method ~= "percentile" then
    raise(f .. ": method must be 'minmax' or 'percentile', got " .. tostring(method))
  end
  local xs = calibration(opts.calibrate, check_int(opts.batches or 8, "batches", 1, f),
                         check_int(opts.batch or 64, "batch", 1, f), f)
  return P.int8(net, xs, method, opts.percentile or 99.99)
end
doc("int8", "quant.int8(net, {calibrate=data, batches=8, batch=64, method='minmax', "
    .. "percentile=99.99}) -> net",
    "Post-training int8: a NEW network (net is unchanged) whose Conv2d/Linear (+ ReLU, fused) run "
    .. "on int8 kernels (per-channel i8 weights, u8 activations, AVX-512 VNNI) and MaxPool2d on "
    .. "u8; activation ranges from the first batches*batch samples of data (a data set, a "
    .. "data.loader's first batches, a Tensor or a list of Tensors), by min/max or percentiles. "
    .. "Other layers stay float.",
    "local net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)); "
    .. "print(quant.int8(net, {calibrate=tensor.randn(16, 4)}))")

local function num(v, fmt)
  if v == nil then return "-" end
  if v == math.huge then return "inf" end
  return string.format(fmt, v)
end

-- A report prints as its table (as prune.report's does).
local Report = {__tostring = function(rows)
  local lines = {string.format("%-6s %-11s %4s  %-21s %-10s %-10s %8s %8s", "layer", "type", "bits",
                               "weight scales", "in scale", "out scale", "SQNR w", "SQNR a")}
  for _, r in ipairs(rows) do
    local ws = r.wscale_min and string.format("%.3g .. %.3g", r.wscale_min, r.wscale_max) or "-"
    lines[#lines + 1] = string.format("%-6s %-11s %4d  %-21s %-10s %-10s %8s %8s", r.layer, r.type,
                                      r.bits, ws, num(r.in_scale, "%.4g"), num(r.out_scale, "%.4g"),
                                      num(r.weight_sqnr, "%.1f dB"), num(r.act_sqnr, "%.1f dB"))
  end
  if #rows == 0 then lines[#lines + 1] = "(no quantized layers)" end
  return table.concat(lines, "\n")
end}

function quant.report(net)
  if not nn.is_module(net) then raise("quant.report: the argument must be a network") end
  return setmetatable(P.report(net), Report)
end
doc("report", "quant.report(net) -> rows",
    "Per quantized layer: bits, the range of per-channel weight scales, input and output activation "
    .. "scales, and the SQNR (dB) of the weights and of the output activations measured at "
    .. "quantization. Returns a list of tables that prints as the table (as prune.report does).",
    "local q = quant.int8(nn.Linear(4, 2), {calibrate=tensor.randn(8, 4)}); print(quant.report(q))")

return util.publish(help_rows, {quant = quant})
