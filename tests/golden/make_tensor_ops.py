#!/usr/bin/python3
"""make_tensor_ops.py: writes the PyTorch golden files that tests/lua/test_tensor_ops.lua compares
nnlab's tensor operations with (tensor_ops/<name>.npy). Run by hand from the repository root:

    /usr/bin/python3 tests/golden/make_tensor_ops.py

Inputs are float32; indices are saved 1-based (as nnlab's Lua API counts) in int32. Computed in
float64 on the float32 inputs, so the files hold values exact to float32 rounding.
"""
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tensor_ops")
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(15)


def save(name, t):
    a = t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    if a.dtype == np.int64:
        a = a.astype(np.int32)
    np.save(os.path.join(OUT, name + ".npy"), a)


x = torch.randn(3, 4, 5).float().double()
y = torch.randn(3, 4, 5).float().double()
save("x", x)
save("y", y)
xt = x.transpose(0, 2)  # [5, 4, 3], not contiguous: the tests build it with x:transpose(1, 3)

for d in range(3):
    save(f"softmax_d{d + 1}", torch.softmax(x, d))
save("log_softmax_t_d2", torch.log_softmax(xt, 1))
save("cumsum_d2", torch.cumsum(x, 1))
save("cumsum_t_d3", torch.cumsum(xt, 2))

v, i = torch.sort(x, 2)
save("sort_d3_values", v)
save("sort_d3_indices", i + 1)
v, i = torch.sort(xt, 0, descending=True)
save("sort_t_d1_desc_values", v)
save("sort_t_d1_desc_indices", i + 1)
v, i = torch.topk(x, 2, 1)
save("topk2_d2_values", v)
save("topk2_d2_indices", i + 1)
v, i = torch.topk(x, 3, 2, largest=False)
save("topk3_d3_smallest_values", v)
save("topk3_d3_smallest_indices", i + 1)

# ties, NaN and infinities: stable sort in both directions
s = torch.tensor([3.0, float("nan"), 1.0, 3.0, float("-inf"), 2.0, float("inf"), 1.0])
save("s", s)
v, i = torch.sort(s, stable=True)
save("sort_s_values", v)
save("sort_s_indices", i + 1)
v, i = torch.sort(s, stable=True, descending=True)
save("sort_s_desc_values", v)
save("sort_s_desc_indices", i + 1)

g = torch.randint(0, 4, (3, 2, 5))
save("gather_index_d2", g + 1)
save("gather_d2", torch.gather(x, 1, g))
sel = torch.tensor([4, 0, 2, 2])
save("index_select_index", sel + 1)
save("index_select_d3", torch.index_select(x, 2, sel))

save("norm_all", torch.norm(x))
save("norm_p1_d2", torch.norm(x, 1, 1))
save("norm_inf_d3", torch.norm(x, float("inf"), 2))
save("norm_p3_d1_keep", torch.norm(x, 3, 0, keepdim=True))
save("norm_p0_t_d2", torch.norm(torch.relu(xt), 0, 1))
save("var_d2", torch.var(x, 1))
save("var_biased_d3_keep", torch.var(x, 2, unbiased=False, keepdim=True))
save("std_all", torch.std(x))
save("std_t_d1", torch.std(xt, 0))

save("clamp", torch.clamp(x, -0.5, 0.5))
save("clamp_min", torch.clamp(x, min=0.25))
save("where_xy", torch.where(x > 0, x, y))
save("masked_fill", x.masked_fill(y < 0, -7))
save("outer", torch.outer(x[0, 0], y[1, 1, :3]))
save("max_d2_values", torch.max(x, 1).values)
save("max_d2_indices", torch.max(x, 1).indices + 1)
save("min_d3_values", torch.min(x, 2).values)
save("min_d3_indices", torch.min(x, 2).indices + 1)
save("maximum_xy", torch.max(x, y))
save("repeat", x[:, :2, :3].repeat(2, 1, 1, 3))
save("cat_d2", torch.cat([x, y[:, :1]], 1))
save("stack_d3", torch.stack([x, y], 2))
save("permute_312", x.permute(2, 0, 1).contiguous())
