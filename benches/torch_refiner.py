"""PyTorch CPU baseline for `simgan bench`: the same eye refiner and local discriminator as
src/nn/model.rs, timed the same way (one refiner step + one discriminator step per iteration,
inference in batches). Prints one JSON object.

usage: torch_refiner.py --width 64 --batch 64 --iters 3 --threads 2 --gaze-divisor 4
       torch_refiner.py --device cuda --width 64 --batch 512 --batches 256,1024,4096
         (GPU: refiner inference images/s per batch and one R + D iteration, in fp32, TF32 and
          bf16 autocast with channels_last; what ci/gpu-check.sh compares simgan against)
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return F.relu(x + self.c2(F.relu(self.c1(x))))


class Refiner(nn.Module):
    def __init__(self, width, blocks=4):
        super().__init__()
        self.inp = nn.Conv2d(1, width, 3, padding=1)
        self.blocks = nn.Sequential(*[Block(width) for _ in range(blocks)])
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        return torch.tanh(self.out(self.blocks(F.relu(self.inp(x)))))


class Discriminator(nn.Module):
    def __init__(self, div=1):
        super().__init__()
        c = [96 // div, 64 // div, 32 // div, 32 // div]
        self.c1 = nn.Conv2d(1, c[0], 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(c[0], c[1], 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.c3 = nn.Conv2d(c[1], c[2], 3, padding=1)
        self.c4 = nn.Conv2d(c[2], c[3], 1)
        self.c5 = nn.Conv2d(c[3], 2, 1)

    def forward(self, x):
        x = F.leaky_relu(self.c1(x), 0.2)
        x = self.pool(F.leaky_relu(self.c2(x), 0.2))
        x = F.leaky_relu(self.c3(x), 0.2)
        x = F.leaky_relu(self.c4(x), 0.2)
        return self.c5(x)


class GazeNet(nn.Module):
    def __init__(self, div):
        super().__init__()
        c = [max(2, n // div) for n in (32, 32, 64, 80, 192)]
        self.convs = nn.ModuleList([nn.Conv2d(a, b, 3) for a, b in zip([1] + c[:-1], c)])
        self.fc1 = nn.Linear(c[4] * 5 * 10, max(8, 1000 // div))
        self.fc2 = nn.Linear(max(8, 1000 // div), 3)

    def forward(self, x):
        x = F.relu(self.convs[0](x))
        x = F.relu(self.convs[1](x))
        x = F.max_pool2d(F.relu(self.convs[2](x)), 3, 2)
        x = F.relu(self.convs[3](x))
        x = F.max_pool2d(F.relu(self.convs[4](x)), 2, 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def patch_ce(logits, target):
    b, _, h, w = logits.shape
    return F.cross_entropy(
        logits, torch.full((b, h, w), target, dtype=torch.long, device=logits.device))


def gpu_main(a):
    """Inference and one training iteration on a CUDA device, per precision setting."""
    dev = torch.device(a.device)
    torch.manual_seed(0)
    out = {"backend": f"pytorch {torch.__version__} {torch.cuda.get_device_name(dev)}",
           "cudnn": torch.backends.cudnn.version(), "width": a.width, "batch": a.batch,
           "iters": a.iters}
    torch.backends.cudnn.benchmark = True
    for mode in ("fp32", "tf32", "bf16_channels_last"):
        tf32 = mode != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        fmt = torch.channels_last if mode.endswith("channels_last") else torch.contiguous_format
        amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode.startswith("bf16"))
        R = Refiner(a.width).to(dev, memory_format=fmt)
        D = Discriminator().to(dev, memory_format=fmt)
        infer = {}
        with torch.no_grad(), amp:
            for b in [int(x) for x in a.batches.split(",") if x]:
                x = (torch.rand(b, 1, 35, 55, device=dev) * 2 - 1).to(memory_format=fmt)
                R(x); torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(a.iters):
                    y = R(x).float().cpu()
                infer[b] = a.iters * b / (time.perf_counter() - t)
        opt_r = torch.optim.Adam(R.parameters(), 1e-3)
        opt_d = torch.optim.Adam(D.parameters(), 1e-3)
        synth = (torch.rand(a.batch, 1, 35, 55, device=dev) * 2 - 1).to(memory_format=fmt)
        real = synth * 0.9

        def iteration():
            opt_r.zero_grad()
            with amp:
                y = R(synth)
                loss = patch_ce(D(y).float(), 0) + 0.5 * (y.float() - synth).abs().mean()
            loss.backward(); opt_r.step()
            opt_d.zero_grad()
            with amp:
                with torch.no_grad():
                    y = R(synth)
                loss = patch_ce(D(y).float(), 1) + patch_ce(D(real).float(), 0)
            loss.backward(); opt_d.step()
            return loss.item()

        iteration(); torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(a.iters):
            iteration()
        torch.cuda.synchronize()
        out[mode] = {"infer_images_per_s": infer,
                     "train_iter_ms": (time.perf_counter() - t) * 1e3 / a.iters}
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gaze-divisor", type=int, default=4)
    ap.add_argument("--gaze-batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="256,1024,4096")
    a = ap.parse_args()
    if a.device != "cpu":
        return gpu_main(a)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    R, D = Refiner(a.width), Discriminator()
    opt_r, opt_d = torch.optim.Adam(R.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 1e-3)
    synth = torch.rand(a.batch, 1, 35, 55) * 2 - 1
    real = synth * 0.9

    def r_step():
        opt_r.zero_grad()
        y = R(synth)
        loss = patch_ce(D(y), 0) + 0.5 * (y - synth).abs().mean()
        loss.backward()
        opt_r.step()
        return loss.item()

    def d_step():
        opt_d.zero_grad()
        with torch.no_grad():
            y = R(synth)
        loss = patch_ce(D(y), 1) + patch_ce(D(real), 0)
        loss.backward()
        opt_d.step()
        return loss.item()

    r_step(); d_step()
    r_ms = d_ms = 0.0
    for _ in range(a.iters):
        t = time.perf_counter(); r_step(); r_ms += (time.perf_counter() - t) * 1e3
        t = time.perf_counter(); d_step(); d_ms += (time.perf_counter() - t) * 1e3
    infer_batch = 4 * a.batch
    x = torch.rand(infer_batch, 1, 35, 55) * 2 - 1
    with torch.no_grad():
        R(x)
        t = time.perf_counter()
        for _ in range(a.iters):
            R(x)
        infer = a.iters * infer_batch / (time.perf_counter() - t)
    G = GazeNet(a.gaze_divisor)
    opt_g = torch.optim.Adam(G.parameters(), 1e-3)
    xg = torch.rand(a.gaze_batch, 1, 35, 55) * 2 - 1
    yg = F.normalize(torch.rand(a.gaze_batch, 3) - 0.5, dim=1)
    def g_step():
        opt_g.zero_grad(); l = ((G(xg) - yg) ** 2).sum(1).mean(); l.backward(); opt_g.step()
    g_step()
    t = time.perf_counter()
    for _ in range(10):
        g_step()
    g_ms = (time.perf_counter() - t) * 100
    print(json.dumps({
        "backend": f"pytorch {torch.__version__} cpu",
        "threads": torch.get_num_threads(),
        "width": a.width, "batch": a.batch, "iters": a.iters,
        "r_step_ms": r_ms / a.iters, "d_step_ms": d_ms / a.iters,
        "train_iter_ms": (r_ms + d_ms) / a.iters,
        "infer_batch": infer_batch, "infer_images_per_s": infer,
        "gaze_step_ms": g_ms, "gaze_divisor": a.gaze_divisor, "gaze_batch": a.gaze_batch,
    }))


if __name__ == "__main__":
    main()
