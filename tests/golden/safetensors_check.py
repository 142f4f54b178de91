#!/usr/bin/python3
"""safetensors_check.py: an independent reader and writer of the safetensors format (json + struct +
numpy only: Debian ships no `safetensors` package), used to check by hand that nnlab's checkpoints
are what Python tools expect, and by make_golden.py to write the PyTorch-made golden checkpoint.

    python3 tests/golden/safetensors_check.py FILE.safetensors [--torch]

validates FILE as the safetensors package does (header length, JSON, dtypes, shapes, offsets that
cover the data exactly), prints its metadata and tensors, and with --torch rebuilds the network
from the "nnlab.arch" metadata in PyTorch and loads the tensors with load_state_dict(strict=True)
(PyTorch's num_batches_tracked buffers excepted, which nnlab does not keep); if FILE.x.npy and
FILE.y.npy exist (test_checkpoint writes them), it also compares PyTorch's eval-mode output on x
with y (rtol 1e-5, atol 1e-6).
"""
import json
import os
import struct
import sys

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


def read(path):
    """Returns (metadata dict, {name: ndarray}); raises ValueError naming the problem."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError("shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"header length {n} beyond the end of the file")
    text = blob[8:8 + n].decode("utf-8")
    if not text.startswith("{"):
        raise ValueError("header is not a JSON object")
    header = json.loads(text)  # trailing spaces (padding) are allowed by json.loads
    meta = header.pop("__metadata__", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError("__metadata__ must map strings to strings")
    data = blob[8 + n:]
    spans, tensors = [], {}
    for name, e in header.items():
        dtype = np.dtype(DTYPES[e["dtype"]])
        shape = [int(d) for d in e["shape"]]
        begin, end = (int(x) for x in e["data_offsets"])
        if not 0 <= begin <= end <= len(data):
            raise ValueError(f"{name}: data_offsets out of range")
        if end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ValueError(f"{name}: dtype and shape do not match the byte count")
        spans.append((begin, end, name))
        tensors[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            raise ValueError(f"{name}: {'overlap' if begin < at else 'hole'} at byte {begin}")
        at = end
    if at != len(data):
        raise ValueError("bytes after the last tensor")
    return meta, tensors


def write(path, tensors, meta=None):
    """Writes {name: ndarray} as the safetensors package does: __metadata__ first, the header
    padded with spaces to a multiple of 8, tensors ordered by alignment then name."""
    names = {v: k for k, v in DTYPES.items()}
    order = sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k))
    header, at = {}, 0
    if meta:
        header["__metadata__"] = meta
    for k in order:
        a = np.ascontiguousarray(tensors[k])
        header[k] = {"dtype": names[a.dtype.str if a.dtype.itemsize > 1 else a.dtype.str[1:]],
                     "shape": list(a.shape), "data_offsets": [at, at + a.nbytes]}
        at += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for k in order:
            f.write(np.ascontiguousarray(tensors[k]).tobytes())


def _residual():
    import torch.nn as nn

    class Residual(nn.Sequential):
        """nnlab's Residual: y = block(x) + x, the block's modules named 0, 1, ... as here."""
        def forward(self, x):
            return super().forward(x) + x
    return Residual


def torch_module(arch):
    """The PyTorch module for an nnlab architecture (the JSON of nl_checkpoint_arch_json)."""
    import torch.nn as nn
    Residual = _residual()
    a = arch.get("args", {})
    kids = [torch_module(c) for c in arch.get("children", [])]
    i = lambda k: int(a[k])
    t = arch["type"]
    if t == "Sequential":
        return nn.Sequential(*kids)
    if t == "Linear":
        return nn.Linear(i("in"), i("out"), bias=bool(a.get("bias", 1)))
    if t == "Conv2d":
        return nn.Conv2d(i("in"), i("out"), i("k"), stride=i("stride"), padding=i("padding"),
                         bias=bool(a.get("bias", 1)))
    if t in ("MaxPool2d", "AvgPool2d"):
        return getattr(nn, t)(i("k"), stride=i("stride"), padding=i("padding"))
    if t == "Residual":
        return Residual(*kids)
    if t in ("BatchNorm2d", "BatchNorm1d"):
        return getattr(nn, t)(i("c"), eps=a["eps"], momentum=a["momentum"],
                              affine=bool(a.get("affine", 1)))
    simple = {"ReLU": nn.ReLU, "GELU": nn.GELU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh,
              "Flatten": nn.Flatten, "Identity": nn.Identity}
    if t in simple:
        return simple[t]()
    if t == "LeakyReLU":
        return nn.LeakyReLU(a["slope"])
    if t == "Softmax":
        return nn.Softmax(dim=-1)
    if t == "Dropout":
        return nn.Dropout(a["p"])
    if t == "GlobalAvgPool":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    raise ValueError(f"no PyTorch counterpart for {t}")


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    meta, tensors = read(argv[1])
    print(f"{argv[1]}: valid safetensors, {len(tensors)} tensors")
    for k, v in sorted(meta.items()):
        print(f"  meta {k} = {v[:100]}{'...' if len(v) > 100 else ''}")
    for k, v in tensors.items():
        print(f"  {k}: {v.dtype} {list(v.shape)}")
    if "--torch" in argv:
        import torch
        net = torch_module(json.loads(meta["nnlab.arch"]))
        state = {k: torch.from_numpy(v.copy()) for k, v in tensors.items()
                 if not k.startswith("optim.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            print(f"PyTorch state_dict mismatch: missing {missing}, unexpected {unexpected}")
            return 1
        print(f"  loads into PyTorch as {net}")
        if os.path.exists(argv[1] + ".x.npy"):
            net.eval()
            x = torch.from_numpy(np.load(argv[1] + ".x.npy"))
            want = np.load(argv[1] + ".y.npy")
            got = net(x).detach().numpy()
            err = np.max(np.abs(got - want) / (1e-6 + np.abs(want)))
            ok = np.allclose(got, want, rtol=1e-5, atol=1e-6)
            print(f"  PyTorch's output on {argv[1]}.x.npy vs nnlab's: max relative error {err:.3g}"
                  f" ({'OK' if ok else 'MISMATCH'})")
            if not ok:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
