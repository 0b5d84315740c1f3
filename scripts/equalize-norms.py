#!/usr/bin/env python3
"""Copy an ImageFolder with every image's norm set to one value (docs/decay.md, "What a
zero-bias network cannot see"): the root mean square of its ImageNet-normalised pixels
becomes NORM, by scaling the image's deviation from the normalisation mean (clipped to the
pixel range, saved as PNG). A zero-bias network cannot see that norm; this removes it from
the data, to measure how much of a decay's loss it explains.
    python3 scripts/equalize-norms.py data/photos data/photos-eq [--norm 1.2]
"""
import argparse
import os

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--norm", type=float, default=1.2)
    a = ap.parse_args()
    count = 0
    for root, _, files in sorted(os.walk(a.src)):
        out = os.path.join(a.dst, os.path.relpath(root, a.src))
        for f in sorted(files):
            if not f.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            os.makedirs(out, exist_ok=True)
            p = np.asarray(Image.open(os.path.join(root, f)).convert("RGB"), dtype=np.float64) / 255
            rms = np.sqrt((((p - MEAN) / STD) ** 2).mean())
            q = np.clip(MEAN + (p - MEAN) * (a.norm / max(rms, 1e-3)), 0, 1)
            name = os.path.splitext(f)[0] + ".png"
            Image.fromarray((q * 255 + 0.5).astype(np.uint8)).save(os.path.join(out, name))
            count += 1
    print(f"wrote {count} images to {a.dst} (norm {a.norm})")


if __name__ == "__main__":
    main()
