#!/usr/bin/python3
"""make_golden.py: writes the PyTorch golden files that tests/c/test_golden.c compares nnlab with.
Run by hand from the repository root with Debian's PyTorch (apt-get install python3-torch):

    /usr/bin/python3 tests/golden/make_golden.py

For every layer, tests/golden/data/<case>/ gets x.npy (input), y.npy (output), gy.npy (a fixed
gradient of the output), gx.npy (gradient of the input) and, per parameter or buffer P (PyTorch's
names and layouts), P.npy (its value before the forward), P.grad.npy (its gradient) and, where the
forward changes it, P.after.npy. Losses get x.npy, target.npy, loss.npy and gx.npy. The optimizer
runs train a tiny CNN for 5 steps from optim_init/ and keep the loss of each step and the final
weights; torch_cnn.safetensors holds the same initial CNN, written by safetensors_check.write.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_check  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
torch.manual_seed(1234)
torch.set_num_threads(1)
# PyTorch computes in double on inputs and parameters rounded to float32 (what the .npy files
# hold): the golden values are then exact to float32 rounding, and a comparison measures nnlab's
# own error rather than the sum of nnlab's and PyTorch's float32 rounding errors.
torch.set_default_dtype(torch.float64)


def save(case, name, t):
    os.makedirs(os.path.join(OUT, case), exist_ok=True)
    a = t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    np.save(os.path.join(OUT, case, name + ".npy"), a)


def f32(t):
    """t rounded to float32 values (kept in double)."""
    return t.float().double()


def randn(*shape):
    return f32(torch.randn(*shape))


def rounded(module):
    """module with every parameter and buffer rounded to float32 values."""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point():
                t.copy_(f32(t))
    return module


def layer(case, module, x, train=True):
    """Forward and backward of module at x with a fixed grad_output; saves everything."""
    module = rounded(module)
    module.train(train)
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if name != "num_batches_tracked":
            save(case, name, t)
    x = f32(x).requires_grad_(True)
    y = module(x)
    gy = randn(*y.shape)
    y.backward(gy)
    save(case, "x", x)
    save(case, "y", y)
    save(case, "gy", gy)
    save(case, "gx", x.grad)
    for name, p in module.named_parameters():
        save(case, name + ".grad", p.grad)
    if train:
        for name, b in module.named_buffers():
            if name != "num_batches_tracked":
                save(case, name + ".after", b)


def loss(case, fn, x, target):
    x = f32(x).requires_grad_(True)
    value = fn(x, target)
    value.backward()
    save(case, "x", x)
    save(case, "target", target.to(torch.int32) if target.dtype == torch.int64 else target)
    save(case, "loss", value)
    save(case, "gx", x.grad)


def batchnorm(bn, running=False):
    """bn with weight and bias away from 1 and 0 (which hide bugs), running statistics too."""
    with torch.no_grad():
        bn.weight.copy_(randn(*bn.weight.shape) * 0.5 + 1)
        bn.bias.copy_(randn(*bn.bias.shape) * 0.5)
        if running:
            bn.running_mean.copy_(randn(*bn.running_mean.shape) * 0.3)
            bn.running_var.copy_(f32(torch.rand(*bn.running_var.shape) + 0.5))
    return bn


def layers():
    layer("linear", nn.Linear(5, 3), randn(4, 5))
    layer("conv_s2p1", nn.Conv2d(3, 4, 3, stride=2, padding=1), randn(2, 3, 7, 7))
    layer("conv_s1p0", nn.Conv2d(2, 3, 3, stride=1, padding=0), randn(2, 2, 6, 5))
    layer("maxpool", nn.MaxPool2d(2), randn(2, 3, 6, 6))
    layer("maxpool_k3s2p1", nn.MaxPool2d(3, stride=2, padding=1), randn(2, 2, 7, 7))
    layer("avgpool", nn.AvgPool2d(3, stride=2, padding=1), randn(2, 3, 7, 7))
    layer("gap", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), randn(2, 3, 4, 5))
    layer("bn2d_train", batchnorm(nn.BatchNorm2d(3)), randn(4, 3, 5, 5) * 2 + 0.5)
    layer("bn2d_eval", batchnorm(nn.BatchNorm2d(3), running=True), randn(4, 3, 5, 5), train=False)
    layer("bn1d", batchnorm(nn.BatchNorm1d(6)), randn(8, 6) * 3 - 1)
    layer("relu", nn.ReLU(), randn(4, 6))
    layer("leakyrelu", nn.LeakyReLU(0.2), randn(4, 6))
    layer("gelu", nn.GELU(), randn(4, 6) * 2)
    layer("sigmoid", nn.Sigmoid(), randn(4, 6) * 2)
    layer("tanh", nn.Tanh(), randn(4, 6) * 2)
    layer("softmax", nn.Softmax(dim=1), randn(4, 7) * 2)
    layer("flatten", nn.Flatten(), randn(2, 3, 4, 5))
    labels = torch.tensor([2, 0, 3, 1, 3])
    loss("ce", nn.CrossEntropyLoss(), randn(5, 4) * 2, labels)
    loss("ce_ls", nn.CrossEntropyLoss(label_smoothing=0.1), randn(5, 4) * 2, labels)
    loss("ce_prob", nn.CrossEntropyLoss(), randn(5, 4) * 2, f32(torch.softmax(randn(5, 4), dim=1)))
    loss("mse", nn.MSELoss(), randn(4, 3), randn(4, 3))


def tiny_cnn():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64, 5))


# The optimizer runs: name -> (constructor, keyword arguments); test_golden.c has the same table.
RUNS = {
    "sgd": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=5e-4)),
    "sgd_nesterov": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)),
    "sgd_dampening": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.5)),
    "sgd_plain": (torch.optim.SGD, dict(lr=0.1)),
    "adam": (torch.optim.Adam, dict(lr=0.01, weight_decay=5e-4)),
    "adamw": (torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
}
STEPS = 5


def optimizers():
    net = rounded(tiny_cnn())
    init = {k: v.clone() for k, v in net.state_dict().items()}
    x, labels = randn(4, 3, 8, 8), torch.tensor([1, 4, 0, 2])
    for k, v in init.items():
        save("optim_init", k, v)
    save("optim_init", "x", x)
    save("optim_init", "labels", labels.to(torch.int32))
    save("optim_init", "logits", net(x))
    for run, (cls, kw) in RUNS.items():
        net.load_state_dict(init)
        opt = cls(net.parameters(), **kw)
        losses = []
        for _ in range(STEPS):
            opt.zero_grad()
            value = F.cross_entropy(net(x), labels)
            value.backward()
            opt.step()
            losses.append(value.item())
        save("optim_" + run, "losses", np.array(losses, dtype=np.float32))
        for k, v in net.state_dict().items():
            save("optim_" + run, k, v)
    # clip_grad_norm_ on the first step's gradients
    net.load_state_dict(init)
    net.zero_grad()
    F.cross_entropy(net(x), labels).backward()
    total = nn.utils.clip_grad_norm_(net.parameters(), 0.5)
    assert total > 0.5, "the clipping case must clip"
    save("clip", "total_norm", total)
    for k, p in net.named_parameters():
        save("clip", k + ".grad", p.grad)
    # the same initial CNN as a safetensors checkpoint with nnlab's architecture metadata
    conv = dict(stride=1, padding=1, bias=1)
    arch = {"type": "Sequential", "args": {}, "children": [
        {"type": "Conv2d", "args": dict({"in": 3, "out": 4, "k": 3}, **conv)},
        {"type": "ReLU", "args": {}},
        {"type": "MaxPool2d", "args": {"k": 2, "stride": 2, "padding": 0}},
        {"type": "Flatten", "args": {}},
        {"type": "Linear", "args": {"in": 64, "out": 5, "bias": 1}}]}
    safetensors_check.write(os.path.join(OUT, "torch_cnn.safetensors"),
                            {k: v.float().numpy() for k, v in init.items()},
                            {"nnlab.arch": json.dumps(arch), "made.by": "make_golden.py"})


if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    layers()
    optimizers()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT}: {total} bytes")
