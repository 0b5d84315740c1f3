#!/usr/bin/env python3
"""An offline ImageFolder of real photographs for measuring bias decay (docs/decay.md).

Ten classes, one per photograph shipped with scikit-image and scikit-learn (no download).
Each image is a random crop of its photograph (side 48-224 px, aspect 3:4-4:3, mild
brightness/contrast jitter) resized to SIDE px and saved as JPEG. Training crops come from
the top 60% of each photograph, validation crops from the bottom 35%, so validation tests
generalisation to unseen parts of the scene, not memorised pixels.

    pip install scikit-image scikit-learn pillow
    python3 scripts/make-photo-folder.py OUT [--train 500] [--val 150] [--side 72] [--seed 0]
"""
import argparse
import hashlib
import io
import os

import numpy as np
from PIL import Image, ImageEnhance


def photographs():
    import skimage.data as d
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    gray = d.camera()
    return {
        "astronaut": d.astronaut(),
        "camera": np.stack([gray] * 3, axis=-1),
        "cat": d.chelsea(),
        "china": china,
        "coffee": d.coffee(),
        "flower": flower,
        "hubble": d.hubble_deep_field(),
        "immunohistochemistry": d.immunohistochemistry(),
        "retina": d.retina(),
        "rocket": d.rocket(),
    }


def crops(photo, rows, n, side, rng):
    h, w = photo.shape[:2]
    top, bottom = int(rows[0] * h), int(rows[1] * h)
    out = []
    for _ in range(n):
        limit = min(bottom - top, w, 224)
        s = int(rng.uniform(48, limit))
        aspect = rng.uniform(0.75, 4 / 3)
        ch = min(bottom - top, max(24, int(s / np.sqrt(aspect))))
        cw = min(w, max(24, int(s * np.sqrt(aspect))))
        y = int(rng.integers(top, bottom - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        img = Image.fromarray(photo[y : y + ch, x : x + cw]).resize((side, side), Image.BILINEAR)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
        img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(img)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=500)
    ap.add_argument("--val", type=int, default=150)
    ap.add_argument("--side", type=int, default=72)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    # Pillow's resampling and JPEG encoder change between releases, and so would the
    # data: the digest says whether two machines measured on the same images.
    digest = hashlib.sha256()
    for name, photo in sorted(photographs().items()):
        for split, rows, n in (("train", (0.0, 0.6), a.train), ("val", (0.65, 1.0), a.val)):
            d = os.path.join(a.out, split, name)
            os.makedirs(d, exist_ok=True)
            for i, img in enumerate(crops(photo, rows, n, a.side, rng)):
                buffer = io.BytesIO()
                img.save(buffer, format="JPEG", quality=90)
                jpeg, file = buffer.getvalue(), f"{i:05d}.jpg"
                digest.update(f"{split}/{name}/{file}\n".encode())
                digest.update(jpeg)
                with open(os.path.join(d, file), "wb") as f:
                    f.write(jpeg)
    print(f"wrote {a.out}/train and {a.out}/val ({a.train}/{a.val} images per class)")
    print(f"sha256 of the images: {digest.hexdigest()} (Pillow {Image.__version__})")


if __name__ == "__main__":
    main()
