"""PyTorch side of `cargo test --lib nn::bench::conv_probe -- --ignored --nocapture`: the refiner's
64->64 3x3 SAME conv on [64, 64, 35, 55], forward and forward+backward, 2 threads. Prints ms.
usage: torch_conv.py [THREADS]
"""
import sys
import time

import torch

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
x = torch.randn(64, 64, 35, 55, requires_grad=True)
conv = torch.nn.Conv2d(64, 64, 3, padding=1)
for _ in range(2):  # the first round warms up
    t = time.perf_counter()
    with torch.no_grad():
        conv(x)
    fwd = time.perf_counter() - t
    t = time.perf_counter()
    conv(x).sum().backward()
    fwd_bwd = time.perf_counter() - t
print(f"fwd: {fwd * 1e3:.1f} ms  fwd+bwd: {fwd_bwd * 1e3:.1f} ms")
