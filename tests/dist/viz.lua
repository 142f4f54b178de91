-- viz.lua: under mpirun, rank 1 alone draws the panels and the dashboard, follows training and
-- writes PNG files; the other ranks train alike without drawing or writing. Prints "ok <what>" and
-- "FAIL <what>" lines that run.sh counts. Argument: a folder for the pictures.
local dir = assert(arg[1], "usage: viz.lua DIR")
local r = dist.rank()
local function check(cond, what)
  print((cond and "ok " or "FAIL ") .. what .. " (rank " .. r .. ")")
end
local function blank(c) -- every 7th pixel of the canvas is the background's white
  local w, h = c:size()
  for y = 1, h, 7 do
    for x = 1, w, 7 do
      local R, G, B = c:pixel(x, y)
      if R ~= 255 or G ~= 255 or B ~= 255 then return false end
    end
  end
  return true
end
local function exists(p)
  local f = io.open(p)
  if f then f:close() end
  return f ~= nil
end

tensor.seed(1)
local net = nn.Sequential{nn.Conv2d(1, 4, 3, {padding = 1}), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2)}
local ds = nn.TensorDataset(tensor.randn(32, 1, 4, 4), (tensor.rand(32) * 2 - 0.5):to("i32") + 1)
local t = nn.Trainer{net = net, data = ds, batch = 4, verbose = false}
local dash = viz.dashboard(t, {every = 1, width = 320, height = 200})
local curves = viz.curves(t, {every = 1, width = 200, height = 120})
local drawn = 0 -- steps after which the curves were not blank
t:on_step(function() drawn = drawn + (blank(curves) and 0 or 1) end)
t:fit{epochs = 1}
check(t.steps == t:steps_per_epoch(), "trained an epoch")
viz.save(dir .. "/dash" .. r .. ".png") -- the current view
curves:save(dir .. "/curves" .. r .. ".png")
viz.save(dir .. "/shared.png", dash)
local shown, why = true, nil
if r > 1 then shown, why = viz.show() end -- rank 1 would open a window where there is a display
dist.barrier()
if r == 1 then
  check(not blank(dash) and not blank(curves), "rank 1 draws the dashboard and the curves")
  check(exists(dir .. "/dash1.png") and exists(dir .. "/curves1.png") and exists(dir .. "/shared.png"),
        "rank 1 writes its pictures")
  for k = 2, dist.size() do
    check(not exists(dir .. "/dash" .. k .. ".png") and not exists(dir .. "/curves" .. k .. ".png"),
          "rank " .. k .. " wrote no picture")
  end
else
  check(blank(dash) and blank(curves) and drawn == 0, "nothing is drawn here")
  check(shown == false and tostring(why):find("only rank 1", 1, true) ~= nil, "no window here: " .. tostring(why))
end
print("ok done (rank " .. r .. ")")
