-- tensors.lua: a first lesson on tensors. Run it with `build/nnlab examples/tensors.lua`,
-- or type the lines one by one in the REPL and look at each result.

tensor.seed(1)                       -- the same seed gives the same numbers on every run

-- A tensor is a block of numbers with a shape.
local x = tensor.arange(12):reshape(3, 4)
print("x =", x)
print("shape:", table.concat(x:shape(), " x "), "dtype:", x:dtype())

-- Views share memory: changing a slice changes x.
local row2 = x:slice(1, 2, 2)        -- the second row (1-based, inclusive)
row2:fill(-1)
print("after filling row 2 with -1:", x)
print("x[3] is the third row, also a view:", x[3])
x[3][1] = 12                         -- writes through to x

-- Broadcasting: a row of 4 numbers is added to every row of x.
local bias = tensor.from{10, 20, 30, 40}
print("x + bias =", x + bias)

-- Reductions along a dimension: 1 = down the rows, 2 = across the columns.
print("column sums:", x:sum(1))
local values, where = x:max(2)        -- as in PyTorch: the maxima and where they are
print("row maxima:", values, "at columns:", where)
print("softmax of each row:", x:softmax(2))

-- Matrix product: a linear layer is y = x W^T + b.
local W = tensor.randn(2, 4)
print("x W^T =", x:matmul(W:t()))

-- Integer dtypes round and saturate.
print(tensor.from{1.6, -1.5, 300}:to("i8"))
