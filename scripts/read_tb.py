#!/usr/bin/env python3
"""Dump a TensorBoard log directory as JSON using TensorBoard's own reader.

Usage: read_tb.py LOG_DIR

Used by tests/tensorboard_reader.rs to check that zerobias' hand-encoded
event files are what the real EventAccumulator sees. Images are returned as
hex-encoded bytes so the caller can decode and compare pixels itself.
"""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator as ea


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: read_tb.py LOG_DIR")
    # size_guidance 0 = keep every event, no reservoir sampling.
    guidance = {k: 0 for k in ea.DEFAULT_SIZE_GUIDANCE}
    acc = ea.EventAccumulator(sys.argv[1], size_guidance=guidance)
    acc.Reload()
    tags = acc.Tags()
    out = {
        "file_version": acc.file_version,
        "tags": {k: v for k, v in tags.items() if isinstance(v, list)},
        "scalars": {
            t: [{"step": e.step, "value": e.value} for e in acc.Scalars(t)]
            for t in tags.get(ea.SCALARS, [])
        },
        "histograms": {
            t: [
                {
                    "step": e.step,
                    "min": e.histogram_value.min,
                    "max": e.histogram_value.max,
                    "num": e.histogram_value.num,
                    "sum": e.histogram_value.sum,
                    "sum_squares": e.histogram_value.sum_squares,
                    "bucket_limit": list(e.histogram_value.bucket_limit),
                    "bucket": list(e.histogram_value.bucket),
                }
                for e in acc.Histograms(t)
            ]
            for t in tags.get(ea.HISTOGRAMS, [])
        },
        "images": {
            t: [
                {
                    "step": e.step,
                    "width": e.width,
                    "height": e.height,
                    "encoded_hex": e.encoded_image_string.hex(),
                }
                for e in acc.Images(t)
            ]
            for t in tags.get(ea.IMAGES, [])
        },
    }
    # allow_nan=False: a NaN here means a broken event, fail loudly.
    json.dump(out, sys.stdout, allow_nan=False)


if __name__ == "__main__":
    main()
