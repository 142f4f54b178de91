#!/usr/bin/python3
"""make_golden.py: writes the PyTorch golden files that tests/c/test_golden.c compares nnlab with.
Run by hand from the repository root with Debian's PyTorch (apt-get install python3-torch):

    /usr/bin/python3 tests/golden/make_golden.py

For every layer, tests/golden/data/<case>/ gets x.npy (input), y.npy (output), gy.npy (a fixed
gradient of the output), gx.npy (gradient of the input) and, per parameter or buffer P (PyTorch's
names and layouts; "<i>.P" for the i-th module of a container), P.npy (its value before the
forward), P.grad.npy (its gradient) and, where the forward changes it, P.after.npy. Losses get
x.npy, target.npy, loss.npy and gx.npy (distillation also batch.npy, the teacher's logits,
temperature.npy and alpha.npy). The optimizer runs train a tiny CNN for 5 steps from optim_init/
and keep the loss of each step and the final weights; torch_cnn.safetensors holds the same initial
CNN, written by safetensors_check.write. New cases go in more_layers(), which runs last with a seed
of its own, so that the files made before stay byte for byte as they were.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import FakeQuantize, MinMaxObserver

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


def backward_saved(case, x, y, gy):
    """Backward of y from grad_output gy; saves x, y, gy and the input gradient gx."""
    y.backward(gy)
    for name, t in (("x", x), ("y", y), ("gy", gy), ("gx", x.grad)):
        save(case, name, t)


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
        if not name.endswith("num_batches_tracked"):
            save(case, name, t)
    x = f32(x).requires_grad_(True)
    y = module(x)
    backward_saved(case, x, y, randn(*y.shape))
    for name, p in module.named_parameters():
        save(case, name + ".grad", p.grad)
    if train:
        for name, b in module.named_buffers():
            if not name.endswith("num_batches_tracked"):
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


class Residual(nn.Sequential):
    """nnlab's Residual: y = block(x) + x, the block being its modules in order."""

    def forward(self, x):
        return super().forward(x) + x


def fakequant(case, x, bits, calibration=None):
    """nnlab's FakeQuant(bits) as PyTorch's FakeQuantize with a MinMaxObserver on the affine
    [0, 2^bits - 1] grid. Training (calibration None): it observes x. Evaluation: the range was
    observed on calibration and is frozen. Saves nnlab's "range" buffer {lo, hi, observed}."""
    fq = FakeQuantize(observer=MinMaxObserver, quant_min=0, quant_max=2 ** bits - 1,
                      dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    seen = x if calibration is None else calibration
    if calibration is not None:
        fq(calibration.float())
        fq.disable_observer()
        fq.eval()
    observed = [seen.min().item(), seen.max().item(), 1.0]
    save(case, "range", observed if calibration is not None else [0.0, 0.0, 0.0])
    if calibration is None:
        save(case, "range.after", observed)
    x = x.float().requires_grad_(True)  # PyTorch fake-quantizes float32 only
    y = fq(x)
    backward_saved(case, x, y, randn(*y.shape).float())


def qat(case, module, x, bits=8):
    """nnlab's QATLinear / QATConv2d: module on its weights fake-quantized per output channel,
    symmetric, scale max|w_o| / (2^(bits-1) - 1) in float32, straight-through weight gradient."""
    module = rounded(module)
    save(case, "weight", module.weight)
    save(case, "bias", module.bias)
    qmax = 2 ** (bits - 1) - 1
    w = module.weight.float()
    scale = w.detach().abs().flatten(1).max(1).values / qmax
    zeros = torch.zeros(w.shape[0], dtype=torch.int32)
    wq = torch.fake_quantize_per_channel_affine(w, scale, zeros, 0, -qmax, qmax).double()
    x = f32(x).requires_grad_(True)
    if isinstance(module, nn.Conv2d):
        y = F.conv2d(x, wq, module.bias, module.stride, module.padding)
    else:
        y = F.linear(x, wq, module.bias)
    backward_saved(case, x, y, randn(*y.shape))
    save(case, "weight.grad", module.weight.grad)
    save(case, "bias.grad", module.bias.grad)


def distill(case, x, teacher, labels, temperature, alpha):
    """nnlab's distillation loss: alpha T^2 KL(softmax(t / T) || softmax(x / T)) per sample +
    (1 - alpha) cross-entropy(x, labels), the teacher's logits t given."""
    x = f32(x).requires_grad_(True)
    kl = F.kl_div(F.log_softmax(x / temperature, dim=1), F.softmax(teacher / temperature, dim=1),
                  reduction="batchmean")
    value = alpha * temperature ** 2 * kl + (1 - alpha) * F.cross_entropy(x, labels)
    value.backward()
    save(case, "x", x)
    save(case, "batch", teacher)
    save(case, "target", labels.to(torch.int32))
    save(case, "temperature", np.array(temperature, dtype=np.float32))
    save(case, "alpha", np.array(alpha, dtype=np.float32))
    save(case, "loss", value)
    save(case, "gx", x.grad)


def more_layers():
    """The containers, Identity, Dropout, FakeQuant and the QAT layers; batch 1, odd shapes and
    other options of the layers above; more losses."""
    torch.manual_seed(4321)
    layer("identity", nn.Identity(), randn(3, 5))
    layer("dropout_eval", nn.Dropout(0.5), randn(3, 5), train=False)
    layer("dropout_p0", nn.Dropout(0.0), randn(2, 3, 4))
    layer("residual", Residual(nn.Conv2d(3, 3, 3, padding=1, bias=False), batchnorm(nn.BatchNorm2d(3)),
                               nn.ReLU()),
          randn(2, 3, 5, 4))
    layer("sequential", nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Flatten(), nn.Linear(12, 4)), randn(3, 2, 5, 5))
    layer("linear_b1", nn.Linear(7, 1), randn(1, 7))
    layer("linear_3d_nobias", nn.Linear(4, 2, bias=False), randn(2, 3, 4))
    layer("conv_b1_s3_nobias", nn.Conv2d(2, 3, 2, stride=3, bias=False), randn(1, 2, 7, 8))
    layer("maxpool_b1_k3", nn.MaxPool2d(3), randn(1, 2, 7, 8))
    layer("avgpool_k2s1", nn.AvgPool2d(2, stride=1), randn(1, 2, 4, 5))
    layer("bn2d_b1", batchnorm(nn.BatchNorm2d(2)), randn(1, 2, 3, 4) * 2 - 0.5)
    layer("bn1d_3d", batchnorm(nn.BatchNorm1d(4)), randn(3, 4, 5) + 1)
    layer("bn1d_eval_b1", batchnorm(nn.BatchNorm1d(5), running=True), randn(1, 5), train=False)
    layer("leakyrelu_default", nn.LeakyReLU(), randn(2, 5))
    layer("softmax_3d", nn.Softmax(dim=-1), randn(2, 3, 5) * 2)
    fakequant("fakequant_train", randn(4, 6) * 2, 8)
    fakequant("fakequant_eval4", randn(3, 7) * 2, 4, calibration=randn(3, 7))
    qat("qatlinear", nn.Linear(6, 3), randn(2, 6))
    qat("qatconv2d", nn.Conv2d(2, 3, 3, stride=2, padding=1), randn(2, 2, 5, 5), bits=4)
    labels = torch.tensor([1, 0, 2])
    loss("ce_b1", nn.CrossEntropyLoss(), randn(1, 3) * 2, torch.tensor([2]))
    loss("ce_prob_ls", nn.CrossEntropyLoss(label_smoothing=0.1), randn(3, 4) * 2,
         f32(torch.softmax(randn(3, 4), dim=1)))
    loss("mse_3d", nn.MSELoss(), randn(2, 3, 4), randn(2, 3, 4))
    distill("distill", randn(3, 3) * 2, randn(3, 3) * 2, labels, 3.0, 0.7)


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
    more_layers()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT}: {total} bytes")
