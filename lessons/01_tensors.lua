-- 01_tensors.lua: the first lesson: tensors, shapes, views and broadcasting.
lesson.define{
  name = "tensors", title = "Tensors and broadcasting",
  intro = [[
    A tensor is a block of numbers with a shape: tensor.zeros(2, 3) has 2 rows of 3.
    Everything in nnlab is 1-based, as Lua is.]],
  steps = {
    {[[
      Make a 2 x 3 tensor `a` holding 1, 2, 3 in its first row and 4, 5, 6 in its second.
      Two ways: tensor.from{{...}, {...}}, or tensor.arange(start, stop) then :reshape(2, 3)
      (arange stops before `stop`).]],
      check = function(env)
        return lesson.expect(env.a, "a", {shape = {2, 3}, values = {{1, 2, 3}, {4, 5, 6}}})
      end,
      hint = {"tensor.arange(1, 7) gives 1 2 3 4 5 6; reshape it.", "a = tensor.arange(1, 7):reshape(2, 3)"}},
    {[[
      Broadcasting: in a + b, shapes are aligned at the right and a size of 1 stretches to match.
      Make `c`: `a` with each row's own mean subtracted, so each row of c sums to 0, in one line
      without a loop. a:mean(2) averages along dim 2; keep that dim (a:mean(2, true) has shape
      [2, 1]) so that it stretches along the columns.]],
      check = function(env)
        local a = tensor.from{{1, 2, 3}, {4, 5, 6}}
        local ok, msg = lesson.expect(env.c, "c", {shape = {2, 3}})
        if not ok then return false, msg end
        if env.c:eq(a - a:mean()):min() == 1 then
          return false, "c subtracts the mean of the whole tensor (3.5), not each row's own mean"
        end
        return lesson.expect(env.c, "c", {values = {{-1, 0, 1}, {-1, 0, 1}}})
      end,
      hint = {"a:mean(2) has shape [2]: [2, 3] - [2] aligns 3 with 2 and does not broadcast.",
              "c = a - a:mean(2, true)"}},
    {[[
      A multiplication table by broadcasting: make `t` of shape [3, 4] with t[i][j] = i * j, by
      multiplying a column [3, 1] by a row [1, 4] (no loop). tensor.arange(1, 4) is 1 2 3;
      :reshape(3, 1) or :unsqueeze(2) makes it a column.]],
      check = function(env)
        return lesson.expect(env.t, "t", {shape = {3, 4},
                                          values = {{1, 2, 3, 4}, {2, 4, 6, 8}, {3, 6, 9, 12}}})
      end,
      hint = {"A [3, 1] times a [1, 4] broadcasts to [3, 4].",
              "t = tensor.arange(1, 4):reshape(3, 1) * tensor.arange(1, 5):reshape(1, 4)"}},
    {[[
      Views share memory: x:slice(dim, from, to) and x[i] do not copy. Make `v` a view of the
      second column of `a` (a:slice(2, 2, 2)), then set every value of v to 0 with v:fill(0):
      `a` itself changes. The step is passed when a's second column is 0 and v is a view of it.]],
      check = function(env)
        local ok, msg = lesson.expect(env.a, "a", {shape = {2, 3}, values = {{1, 0, 3}, {4, 0, 6}}})
        if not ok then
          return false, msg .. " (a's second column must be 0, set through the view v; a:clone() copies instead)"
        end
        ok, msg = lesson.expect(env.v, "v", {values = {0, 0}})
        if not ok then return false, msg end
        env.v:fill(7)
        local shared = env.a:get(1, 2) == 7
        env.v:fill(0)
        if not shared then return false, "v is a copy, not a view of a: writing to v does not change a" end
        return true, "v is a view: writing to it wrote into a"
      end,
      hint = {"v = a:slice(2, 2, 2)  then  v:fill(0)"}},
  },
}
