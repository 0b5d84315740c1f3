"""torchvision's eval preprocessing (Resize(resize) + CenterCrop(crop) on PIL images),
rewritten on PIL alone so that it runs without torch: prints the RGB8 crop of each image
as hex, one line per file.

Usage: torchvision_eval_crop.py RESIZE CROP FILE...
"""

import sys

from PIL import Image


def resize_dims(w, h, size):
    # torchvision.transforms.functional._compute_resized_output_size with an int size.
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def center_crop(img, crop):
    w, h = img.size
    if crop > w or crop > h:
        raise SystemExit("padding is not needed by this test")
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop))


def main():
    resize, crop = int(sys.argv[1]), int(sys.argv[2])
    for path in sys.argv[3:]:
        img = Image.open(path).convert("RGB")
        nw, nh = resize_dims(*img.size, resize)
        if (nw, nh) != img.size:
            img = img.resize((nw, nh), Image.BILINEAR)
        print(center_crop(img, crop).tobytes().hex())


if __name__ == "__main__":
    main()
