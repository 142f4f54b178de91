#!/usr/bin/python3
"""make_onnx.py: writes the PyTorch-exported ONNX files that tests/lua/test_onnx.lua imports with
onnx.load and compares with PyTorch's own outputs. Run by hand from the repository root with
Debian's PyTorch 1.13 (apt-get install python3-torch):

    /usr/bin/python3 tests/golden/make_onnx.py

For each network, tests/onnx/torch_<name>.onnx is torch.onnx.export's file (opset 14, input
"input" with a dynamic batch, output "logits"), torch_<name>_x.npy a batch of inputs and
torch_<name>_y.npy PyTorch's outputs for it (in evaluation mode). The networks:
  seed_cnn  the seed CNN (conv 3-32, ReLU, maxpool 2, conv 32-64, ReLU, maxpool 2, flatten,
            linear 4096-10), exported as PyTorch does by default (evaluation mode);
  bn_relu   a conv net with BatchNorm + ReLU blocks, a LeakyReLU, an average pool, GELU, dropout
            and a softmax, exported with training=PRESERVE so that BatchNormalization stays a
            node (the default folds it into the convolutions, which the seed CNN covers);
  resnet    a small ResNet: a stem, two basic blocks with identity skip connections
            (x + block(x), then ReLU), global average pooling and a linear layer.
Batch norm statistics are made non-trivial by a few training-mode forwards first.
"""
import os

import numpy as np
import torch
import torch.nn as nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "onnx")


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(x + y)


def seed_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4096, 10))


def bn_relu():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.LeakyReLU(0.1),
        nn.AvgPool2d(2), nn.Conv2d(16, 16, 1), nn.GELU(), nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(16 * 2 * 2, 12), nn.BatchNorm1d(12), nn.Tanh(),
        nn.Linear(12, 10), nn.Softmax(dim=1))


def resnet():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        Block(8), nn.MaxPool2d(2), Block(8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def write(name, net, side, training):
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, 3, side, side) * 2 + 0.5)
    net.eval()
    x = torch.randn(4, 3, side, side)
    with torch.no_grad():
        y = net(x)
    path = os.path.join(OUT, "torch_%s.onnx" % name)
    torch.onnx.export(net, x, path, opset_version=14, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, training=training)
    np.save(os.path.join(OUT, "torch_%s_x.npy" % name), x.numpy().astype(np.float32))
    np.save(os.path.join(OUT, "torch_%s_y.npy" % name), y.numpy().astype(np.float32))
    print("%s: %d bytes" % (path, os.path.getsize(path)))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(18)
    write("seed_cnn", seed_cnn(), 32, torch.onnx.TrainingMode.EVAL)
    write("bn_relu", bn_relu(), 16, torch.onnx.TrainingMode.PRESERVE)
    write("resnet", resnet(), 16, torch.onnx.TrainingMode.EVAL)


if __name__ == "__main__":
    main()
