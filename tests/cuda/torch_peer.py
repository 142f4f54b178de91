#!/usr/bin/python3
"""torch_peer.py: eager PyTorch's side of tests/cuda/speed.lua (check.sh part 4): the seed CNN of
../shared/bench/torch_seed_cnn.py (or the better net of examples/cifar10_better.lua) trained on
random data at a given batch size, with its peak GPU memory. That script trains at batch 64 only;
this one takes --batch.

usage: torch_peer.py [--device cuda] [--batch 64] [--net seed|better] [--steps 200]
Prints 'RESULT net= batch= train_img_s= eval_img_s= peak_mb='."""
import argparse, time
import torch, torch.nn as nn, torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cuda")
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--net", default="seed")
ap.add_argument("--steps", type=int, default=200)
a = ap.parse_args()
torch.manual_seed(0)
dev = torch.device(a.device)

def seed_cnn():
    return nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 8 * 8, 10))

def better():
    layers, cin = [], 3
    for cout, pool in ((32, True), (64, True), (128, False), (128, True), (256, False)):
        layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        if pool: layers.append(nn.MaxPool2d(2))
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10))

m = (better if a.net == "better" else seed_cnn)().to(dev)
opt = (torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) if a.net == "better"
       else torch.optim.Adam(m.parameters(), lr=1e-3))
crit = nn.CrossEntropyLoss()
n = a.batch * 20
x, y = torch.randn(n, 3, 32, 32, device=dev), torch.randint(0, 10, (n,), device=dev)
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

def step(i):
    j = (i * a.batch) % n
    opt.zero_grad(); loss = crit(m(x[j:j + a.batch]), y[j:j + a.batch]); loss.backward(); opt.step()
    return loss.item()

m.train()
for i in range(5): step(i)
sync(); t0 = time.perf_counter()
for i in range(a.steps): step(i)
sync(); train_s = time.perf_counter() - t0
xt = torch.randn(10000, 3, 32, 32, device=dev)
m.eval()
def evaluate():
    with torch.no_grad():
        for i in range(0, 10000, a.batch): m(xt[i:i + a.batch]).argmax(1).sum().item()
evaluate(); sync(); t1 = time.perf_counter(); evaluate(); sync(); eval_s = time.perf_counter() - t1
peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else 0
print(f"RESULT net={a.net} batch={a.batch} train_img_s={a.steps * a.batch / train_s:.0f} "
      f"eval_img_s={10000 / eval_s:.0f} peak_mb={peak:.0f}")
