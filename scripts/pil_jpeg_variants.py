"""Encode a source image as JPEG with PIL in every setting libjpeg's decoder treats
differently (4:4:4 / 4:2:2 / 4:2:0 chroma, baseline / progressive, several qualities,
grayscale), and write what PIL decodes from each: `NAME.jpg` and `NAME.jpg.rgb` (raw RGB8,
`Image.open(f).convert("RGB")`, which torchvision's ImageFolder loader calls).

Usage: pil_jpeg_variants.py SOURCE.png OUT_DIR
Prints one line per file: NAME.jpg WIDTH HEIGHT.
"""

import os
import sys

from PIL import Image


def main():
    src, out = sys.argv[1], sys.argv[2]
    img = Image.open(src).convert("RGB")
    variants = []
    for quality in (60, 90, 97):
        for subsampling in (0, 1, 2):  # PIL's 4:4:4, 4:2:2, 4:2:0
            for progressive in (False, True):
                variants.append((img, quality, subsampling, progressive))
    variants.append((img.convert("L"), 85, 0, False))
    for k, (im, quality, subsampling, progressive) in enumerate(variants):
        path = os.path.join(out, f"v{k:02d}_q{quality}_s{subsampling}_p{int(progressive)}.jpg")
        im.save(path, quality=quality, subsampling=subsampling, progressive=progressive)
        with Image.open(path) as back:
            rgb = back.convert("RGB")
            with open(path + ".rgb", "wb") as f:
                f.write(rgb.tobytes())
            print(os.path.basename(path), rgb.width, rgb.height)


if __name__ == "__main__":
    main()
