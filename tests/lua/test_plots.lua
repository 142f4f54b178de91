-- test_plots.lua: viz.plot and viz.scatter, your own plots: pixel checks that the line goes the way
-- the values go and that the classes of a scatter land where their points are; argument errors.

local BLUE, ORANGE = {31, 119, 180}, {255, 127, 14} -- the palette's first two colours (tab10)

-- The mean column and row of the pixels of exactly colour rgb, and their count.
local function where(c, rgb)
  local w, h = c:size()
  local n, sx, sy = 0, 0, 0
  for y = 1, h do
    for x = 1, w do
      local r, g, b = c:pixel(x, y)
      if r == rgb[1] and g == rgb[2] and b == rgb[3] then n, sx, sy = n + 1, sx + x, sy + y end
    end
  end
  return n > 0 and sx / n or 0, n > 0 and sy / n or 0, n
end

-- Mean row of the colour's pixels in the left and the right third of the canvas.
local function rows_left_right(c, rgb)
  local w, h = c:size()
  local acc = {{0, 0}, {0, 0}}
  for y = 1, h do
    for x = 1, w do
      local r, g, b = c:pixel(x, y)
      if r == rgb[1] and g == rgb[2] and b == rgb[3] then
        local k = x < w / 3 and 1 or x > 2 * w / 3 and 2 or nil
        if k then acc[k][1], acc[k][2] = acc[k][1] + y, acc[k][2] + 1 end
      end
    end
  end
  return acc[1][1] / math.max(acc[1][2], 1), acc[2][1] / math.max(acc[2][2], 1), acc[1][2], acc[2][2]
end

test("viz.plot draws the line the way the values go", function()
  local up = {}
  for i = 1, 20 do up[i] = i * i end
  local c = viz.plot(up, {width = 240, height = 160, title = "up"})
  local left, right, nl, nr = rows_left_right(c, BLUE)
  check(nl > 5 and nr > 5, "line pixels on both sides: " .. nl .. ", " .. nr)
  check(left > right + 40, string.format("rising: left row %.0f, right row %.0f", left, right))
  local down = {}
  for i = 1, 20 do down[i] = -i end
  c = viz.plot(tensor.arange(1, 21), tensor.from(down), {width = 240, height = 160})
  left, right = rows_left_right(c, BLUE)
  check(right > left + 40, string.format("falling: left row %.0f, right row %.0f", left, right))
  check(c:pixel(1, 1) == 255, "white background")
  c:save(os.tmpname())
end)

test("viz.scatter colours each class and puts it where its points are", function()
  local x, y, k = {}, {}, {}
  for i = 1, 20 do
    x[#x + 1], y[#y + 1], k[#k + 1] = (i % 5) * 0.2, (i // 5) * 0.2, 1   -- class 1 on the left
    x[#x + 1], y[#y + 1], k[#k + 1] = 9 + (i % 5) * 0.2, (i // 5) * 0.2, 2 -- class 2 on the right
  end
  local c = viz.scatter(x, y, k, {width = 300, height = 200})
  local bx, _, bn = where(c, BLUE)
  local ox, _, on = where(c, ORANGE)
  check(bn > 100 and on > 100, "dots of both colours: " .. bn .. ", " .. on)
  check(bx < 150 and ox > 150, string.format("class 1 left (%.0f), class 2 right (%.0f)", bx, ox))
  c = viz.scatter(x, y, {width = 300, height = 200}) -- no classes: one colour
  local _, _, n2 = where(c, ORANGE)
  check(n2 == 0, "one series only")
end)

test("viz.plot and viz.scatter refuse bad input with a message", function()
  check_error(function() viz.plot({1, 2}, {1}) end, "2 xs and 1 ys")
  check_error(function() viz.plot({1, "a"}) end, "ys%[2%] is a string")
  check_error(function() viz.plot(5) end, "must be a table of numbers or a Tensor")
  check_error(function() viz.scatter({1, 2}, {1, 2}, {1}) end, "2 points and 1 classes")
  check_error(function() viz.scatter({1, 2}, {1, 2}, {1, 1.5}) end, "not a whole number")
  check_error(function() viz.plot({1, 2}, {bogus = 1}) end, "bogus")
  local c = viz.plot({}, {width = 200, height = 120}) -- no data: a note, no crash
  check(c:size() == 200, "an empty plot")
end)

test("viz.image shows a tensor's values where they are", function()
  local c = viz.image(tensor.from{{0, 1}, {1, 0}}, {grey = true, width = 200, height = 200})
  local function grey(x, y) local r, g, b = c:pixel(x, y); return r == g and g == b and r end
  check(grey(51, 51) == 0 and grey(151, 151) == 0, "the zeros black: " .. tostring(grey(51, 51)))
  check(grey(151, 51) == 255 and grey(51, 151) == 255, "the ones white")
  local rgb = tensor.zeros(3, 2, 2)
  rgb:set(1, 1, 1, 1); rgb:set(1, 1, 1, 2); rgb:set(1, 1, 2, 1); rgb:set(1, 1, 2, 2) -- red plane 1
  c = viz.image(rgb, {width = 200, height = 200})
  local r, g, b = c:pixel(100, 100)
  check(r == 255 and g == 0 and b == 0, "three planes as RGB: " .. r .. "," .. g .. "," .. b)
  check_error(function() viz.image("x") end, "expected a Tensor")
  check_error(function() viz.image(tensor.zeros(5)) end, "%[C, H, W%] or %[H, W%]")
end)

test("viz.decision paints each side of a linear classifier in its class's colour", function()
  local net = nn.Linear(2, 2)
  net.weight = tensor.from{{1, 0}, {-1, 0}} -- class 1 where x > 0, class 2 where x < 0
  net.bias = tensor.zeros(2)
  local c = viz.decision(net, {-1, 1, -1, 1}, {width = 300, height = 200, res = 20})
  local r1, _, b1 = c:pixel(math.floor(300 * 0.85), 100)
  local r2, _, b2 = c:pixel(math.floor(300 * 0.3), 100)
  check(b1 > r1, string.format("right: class 1 (blue) %d,%d", r1, b1))
  check(r2 > b2, string.format("left: class 2 (orange) %d,%d", r2, b2))
  local pts = nn.TensorDataset(tensor.from{{0.5, 0.5}, {-0.5, -0.5}}, tensor.from{1, 2})
  c = viz.decision(net, {xmin = -1, xmax = 1, ymin = -1, ymax = 1}, {data = pts, width = 300, height = 200})
  local _, _, nb = where(c, BLUE)
  check(nb > 10, "the data's points on top: " .. nb)
  check(net.training, "the network is back in training mode")
  check_error(function() viz.decision(net, {1, -1, 0, 1}) end, "xmin < xmax")
  check_error(function() viz.decision(net, {0, 1}) end, "ymin must be a number")
  check_error(function() viz.decision(nn.Linear(3, 2), {0, 1, 0, 1}) end, "viz.decision")
end)
