-- window.lua: the viz window on a real X display (run by tests/viz/run.sh under Xvfb through
-- tests/lua/harness.lua): open, the dashboard during training, the window read back and its
-- panel layout, tab, resizing, degenerate panels with the window open, close and reopen.
-- Screenshots go to $VIZ_SHOTS (a folder) when it is set.
local shots = os.getenv("VIZ_SHOTS")

local function region_count(c, x0, y0, x1, y1, pred)
  local n = 0
  for y = y0, y1, 2 do
    for x = x0, x1, 2 do
      if pred(c:pixel(x, y)) then n = n + 1 end
    end
  end
  return n
end
local function blue(r, g, b) return r == 31 and g == 119 and b == 180 end
local function inked(r, g, b) return r + g + b < 600 end
-- The colours of feature maps: saturated, not grey.
local function colourful(r, g, b) return math.max(r, g, b) - math.min(r, g, b) > 40 end

local function tiny_trainer()
  local labels = {}
  for i = 1, 48 do labels[i] = i % 3 + 1 end
  local ds = nn.TensorDataset(tensor.rand(48, 3, 16, 16), tensor.from(labels))
  local net = nn.Sequential(nn.Conv2d(3, 6, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Flatten(), nn.Linear(6 * 8 * 8, 3))
  return nn.Trainer{net = net, data = ds, batch = 8, verbose = false}, ds
end

local t, ds = tiny_trainer()
local board

test("open and follow training", function()
  local ok, why = viz.show()
  check(ok == true, "viz.show() opens a window on " .. tostring(os.getenv("DISPLAY")) .. ": " .. tostring(why))
  check(viz.status().open, "status says open")
  board = viz.dashboard(t, {every = 2})
  t:fit{epochs = 2, eval = ds}
  viz.wait(0.2)
  local shot = viz.screenshot()
  check(shot ~= nil, "the window reads back")
  local w, h = shot:size()
  check(w == 1200 and h == 720, "the window is 1200 x 720: " .. w .. " x " .. h)
  if shots then shot:save(shots .. "/window-dashboard.png") end
  check(region_count(shot, 1, 1, w, h, inked) > 3000, "not blank")
  -- the layout: status line, loss (top left), accuracy (top right), features (bottom left),
  -- weight histograms (bottom right)
  check(region_count(shot, 1, 1, w, 18, inked) > 50, "the status line on top")
  check(region_count(shot, 1, 20, w * 0.58, h / 2, blue) > 40, "the loss curve top left")
  check(region_count(shot, w * 0.6, 20, w, h / 2, blue) > 10, "accuracy markers top right")
  check(region_count(shot, 1, h / 2 + 20, w / 2, h, colourful) > 500, "feature maps bottom left")
  check(region_count(shot, w / 2 + 10, h / 2 + 20, w, h, blue) > 100, "histogram bars bottom right")
  local same = true
  for y = 1, h, 7 do
    for x = 1, w, 7 do
      local r1, g1, b1 = shot:pixel(x, y)
      local r2, g2, b2 = board:pixel(x, y)
      same = same and r1 == r2 and g1 == g2 and b1 == b2
    end
  end
  check(same, "the window shows the dashboard canvas pixel for pixel")
end)

test("tab and the other views", function()
  viz.curves(t)
  viz.features(t.net, 1, (ds:get(1)))
  check(viz.status().view == "features", "a new panel becomes the view")
  local before = viz.screenshot()
  viz.press("tab")
  local after = viz.screenshot()
  local differ = false
  for y = 1, 720, 9 do
    local r1 = before:pixel(600, y)
    local r2 = after:pixel(600, y)
    differ = differ or r1 ~= r2
  end
  check(differ and viz.status().view ~= "features", "tab shows another view: " .. tostring(viz.status().view))
  if shots then after:save(shots .. "/window-tab.png") end
end)

test("resizing and degenerate panels with the window open", function()
  viz.resize(700, 450)
  viz.wait(0.3)
  local shot = viz.screenshot()
  local w, h = shot:size()
  check(w == 700 and h == 450, "resized to " .. w .. " x " .. h)
  viz.curves{loss = {}}
  viz.curves{loss = {1, 0 / 0, 2, math.huge, 0.5}, test_acc = {0 / 0, 0.5}}
  viz.histogram(nn.Linear(1, 1))
  viz.features(nn.Sequential(nn.Conv2d(3, 1, 3)), 1, tensor.rand(3, 8, 8))
  viz.wait(0.1)
  shot = viz.screenshot()
  w, h = shot:size()
  check(w == 700 and h == 450 and region_count(shot, 1, 1, w, h, colourful) > 200,
        "degenerate panels show at the new size: " .. w .. " x " .. h .. ", " .. region_count(shot, 1, 1, w, h, colourful))
  if shots then shot:save(shots .. "/window-resized.png") end
  t:step()
  viz.wait(0.2)
  viz.press("tab")
  check(viz.status().open, "still open after all that")
  viz.resize(1200, 720)
end)

test("close and reopen", function()
  viz.close()
  check(not viz.status().open and viz.screenshot() == nil, "closed")
  t:step() -- training goes on without the window
  check(t.steps > 0, "training goes on")
  check(viz.show() == true and viz.status().open, "reopens")
  viz.wait(0.1)
  check(viz.screenshot() ~= nil, "reads back after reopening")
  local function banner_pixels(shot)
    local n = 0
    local w = shot:size()
    for x = 1, w, 5 do
      local r, g, b = shot:pixel(x, 6)
      if r == 190 and g == 50 and b == 40 then n = n + 1 end
    end
    return n
  end
  check(banner_pixels(viz.screenshot()) == 0, "no pause banner before the pause")
  viz.press("space")
  check(viz.status().paused, "space pauses while open")
  local paused_shot = viz.screenshot()
  check(banner_pixels(paused_shot) > 100, "the picture shows the pause: a banner across the top ("
        .. banner_pixels(paused_shot) .. " pixels)")
  if shots then paused_shot:save(shots .. "/window-paused.png") end
  -- The step hook waits while paused, saying so in the terminal; a Ctrl-C half a second later
  -- ends the wait and pauses fit instead, so that resume() continues at once.
  local said, print0 = {}, print
  print = function(...) said[#said + 1] = table.concat({...}, " ") end
  os.execute("(sleep 0.5; kill -INT $PPID) &")
  local t0 = sys.clock()
  local _, how = t:fit{epochs = 1}
  local waited = sys.clock() - t0
  print = print0
  check(waited > 0.4 and waited < 5 and how == "paused",
        string.format("a paused fit waits until Ctrl-C (%.2f s, %s)", waited, tostring(how)))
  check(said[1] and said[1]:find("paused in the window: space there resumes", 1, true),
        "the terminal says training waits for the window: " .. tostring(said[1]))
  check(not viz.status().paused, "Ctrl-C took the pause over from the window")
  check(banner_pixels(viz.screenshot()) == 0, "the banner is gone with the window's pause")
  local steps = t.steps
  t:resume()
  check(t.steps > steps, "t:resume() trains at once, without space in the window")
  viz.press("space")
  viz.press("space")
  check(not viz.status().paused, "space resumes")
  viz.press("q")
  check(not viz.status().open and not viz.status().paused, "q closes and unpauses")
end)
