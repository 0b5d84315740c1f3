#!/usr/bin/env python3
"""PyTorch (CPU) reference timings for the phases of `zerobias bench` / examples/bench.rs.

    python scripts/bench_torch.py resnet50 224 1,8 --repeats 3 [--threads 2] [--phases ...]
        [--device cuda [--tf32]]

Prints one JSON object per measurement with the same fields as the Rust benchmark
(conv = "torch"). Models are VGG-16 / ResNet-50 (v1.5) with random weights, written out
here so that only `torch` is needed. Phases:

- forward: eval mode, no autograd.
- attribution: the workload of zerobias' `attribute` with every method: one forward with
  every layer activation and every bias-carrying module output retained, one backward of
  the sum of the predicted-class logits to the input and to all of them (weights frozen),
  then the maps: input x grad, per-layer activation x gradient and bias x gradient summed
  over channels, each upsampled to the input size and accumulated (aggregate, FullGrad),
  plus Grad-CAM on the last layer.
- train_step: forward with parameters tracked (BN in eval mode, as Ctx::training(false)),
  cross-entropy, backward over all parameters; no optimizer update.
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def vgg16():
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    model = nn.Sequential()
    model.features = nn.Sequential(*layers)
    model.avgpool = nn.AdaptiveAvgPool2d(7)
    model.flatten = nn.Flatten(1)
    model.classifier = nn.Sequential(
        nn.Linear(512 * 49, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(),
        nn.Dropout(), nn.Linear(4096, 1000),
    )
    return model


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        out = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(h + s)


class ResNet50(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, cin = [], 64
        for stage, (depth, width) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)]):
            for i in range(depth):
                blocks.append(Bottleneck(cin, width, 2 if stage > 0 and i == 0 else 1))
                cin = width * 4
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x):
        h = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        h = self.blocks(h)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


def build(arch):
    model = {"vgg16": vgg16, "resnet50": ResNet50}[arch]()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.normal_(m.bias, std=0.01)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.bias, std=0.01)
            nn.init.normal_(m.running_mean, std=0.01)
    return model.eval()


def taps(model):
    """Modules whose outputs zerobias records: ReLUs / blocks (activations) and every
    bias-carrying module (conv with bias, BN, linear)."""
    acts, biased = [], []
    for m in model.modules():
        if isinstance(m, (nn.ReLU, Bottleneck)):
            acts.append(m)
        if isinstance(m, nn.BatchNorm2d) or (
            isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None
        ):
            biased.append(m)
    return acts, biased


def bias_of(m):
    if isinstance(m, nn.BatchNorm2d):
        scale = m.weight / torch.sqrt(m.running_var + m.eps)
        return m.bias - m.running_mean * scale
    return m.bias


def attribution(model, x):
    for p in model.parameters():
        p.requires_grad_(False)
    acts, biased = taps(model)
    outs = {}

    def keep(m, _inp, out):
        out.retain_grad()
        outs.setdefault(m, []).append(out)

    hooks = [m.register_forward_hook(keep) for m in set(acts + biased)]
    try:
        x = x.clone().requires_grad_(True)
        logits = model(x)
        target = logits.detach().argmax(1)
        logits.gather(1, target[:, None]).sum().backward()
    finally:
        for h in hooks:
            h.remove()
    size = x.shape[-2:]
    up = lambda m: F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    maps = {"act.0": (x * x.grad).sum(1), "grad": x.grad.abs().sum(1)}
    agg = maps["act.0"].clone()
    full = torch.zeros_like(agg)
    for m in acts:
        for a in outs.get(m, []):
            if a.dim() != 4:  # classifier ReLUs: not a layer of the aggregate
                continue
            s = (a * a.grad).sum(1)
            agg = agg + up(s)
    for m in biased:
        b = bias_of(m)
        for o in outs.get(m, []):
            if o.dim() == 4:
                s = (o.grad * b[None, :, None, None]).sum(1)
                full = full + up(s.abs())
            else:
                (o.grad * b).sum(1)
    last = [a for m in acts for a in outs.get(m, []) if a.dim() == 4][-1]
    w = last.grad.mean((2, 3), keepdim=True)
    maps["gradcam"] = F.relu((w * last).sum(1))
    maps["agg"], maps["fullgrad"] = agg, full
    return maps


def train_step(model, x):
    for p in model.parameters():
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    logits = model(x)
    labels = torch.arange(x.shape[0], device=x.device) % logits.shape[1]
    F.cross_entropy(logits, labels).backward()


def forward(model, x):
    with torch.no_grad():
        model(x)


def forward_backward(model, x):
    """Forward and backward of the predicted logits to the input only (weights frozen)."""
    for p in model.parameters():
        p.requires_grad_(False)
    x = x.clone().requires_grad_(True)
    logits = model(x)
    logits.gather(1, logits.detach().argmax(1, keepdim=True)).sum().backward()


PHASES = {
    "forward": forward,
    "forward_backward": forward_backward,
    "attribution": attribution,
    # zerobias' evaluation phase is one batch of perturbed copies through an
    # inference-only forward: the same work as `forward` here.
    "evaluation": forward,
    "train_step": train_step,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arch", choices=["vgg16", "resnet50"])
    ap.add_argument("size", type=int)
    ap.add_argument("batches", help="comma-separated batch sizes, e.g. 1,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--tf32", action="store_true",
                    help="allow TF32 in matmuls and cuDNN convolutions (off: full f32, as zerobias' default)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    # PyTorch allows TF32 in cuDNN convolutions by default; compare like with like.
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = build(args.arch).to(device)
    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.randn(batch, 3, args.size, args.size).to(device)
        for phase in args.phases.split(","):
            if phase not in PHASES:
                sys.exit(f"unknown phase '{phase}': expected one of {', '.join(PHASES)}")
            PHASES[phase](model, x)  # untimed warm-up, as zerobias bench does
            sync()
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                PHASES[phase](model, x)
                sync()  # CUDA kernels run asynchronously: time them to completion
                times.append(time.perf_counter() - t0)
            times.sort()
            print(json.dumps({
                "arch": args.arch, "device": args.device, "size": args.size, "batch": batch,
                "phase": phase, "conv": "torch", "tf32": args.tf32, "threads": torch.get_num_threads(),
                "repeats": args.repeats, "min_s": times[0],
                "median_s": statistics.median(times), "max_s": times[-1],
            }), flush=True)


if __name__ == "__main__":
    main()
