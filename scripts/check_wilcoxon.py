"""Recompute every row of an evaluation's tests.csv with scipy.stats.wilcoxon.

Usage: check_wilcoxon.py RESULTS_DIR pair|image

With `pair`, the δ metrics are paired by (image, noise map) from noise.csv; every other
metric (and every metric with `image`) by image from per_image.csv. scipy runs with its
defaults (zero_method='wilcox', correction=False, method='auto', two-sided), which is
what zerobias' test reproduces. Prints a JSON summary; exits 1 on any mismatch.
"""

import csv
import json
import math
import sys
from collections import defaultdict

import numpy as np
from scipy import stats


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main():
    out, unit = sys.argv[1], sys.argv[2]
    per_image = defaultdict(dict)  # (model, method) -> image -> row
    for r in read(f"{out}/per_image.csv"):
        per_image[(r["model"], r["method"])][int(r["image"])] = r
    noise = defaultdict(dict)  # (model, method) -> (image, noise) -> row
    try:
        for r in read(f"{out}/noise.csv"):
            noise[(r["model"], r["method"])][(int(r["image"]), int(r["noise"]))] = r
    except FileNotFoundError:
        pass
    mismatches, checked, methods, max_n = [], 0, defaultdict(int), 0
    for t in read(f"{out}/tests.csv"):
        metric = t["metric"]
        a = tuple(t["a"].split(":", 1))
        b = tuple(t["b"].split(":", 1))
        pair = unit == "pair" and metric.startswith("delta_")
        table = noise if pair else per_image
        keys = sorted(set(table[a]) & set(table[b]))
        if pair:
            for k in keys:
                if table[a][k]["noise_image"] != table[b][k]["noise_image"]:
                    mismatches.append(f"{t['a']} vs {t['b']} at {k}: different noise maps")
        x = np.array([float(table[a][k][metric]) for k in keys])
        y = np.array([float(table[b][k][metric]) for k in keys])
        if int(t["n"]) != len(keys):
            mismatches.append(f"{metric} {t['a']} vs {t['b']}: n {t['n']} vs {len(keys)}")
            continue
        max_n = max(max_n, len(keys))
        nonzero = int(np.count_nonzero(x - y))
        if int(t["n_nonzero"]) != nonzero:
            mismatches.append(f"{metric} {t['a']} vs {t['b']}: n_nonzero {t['n_nonzero']} vs {nonzero}")
        if np.all(x - y == 0):
            if t["p_value"] != "":
                mismatches.append(f"{metric} {t['a']} vs {t['b']}: p for all-zero differences")
            checked += 1
            continue
        res = stats.wilcoxon(x, y)
        d = x - y
        nz = np.abs(d[d != 0])
        ties = len(np.unique(nz)) < len(nz)
        kind = "exact" if len(d) <= 50 and not ties and len(nz) == len(d) else (
            "permutation" if len(d) <= 13 else "normal")
        methods[kind] += 1
        if t["p_method"] != ("normal" if kind == "normal" else "exact"):
            mismatches.append(f"{metric} {t['a']} vs {t['b']}: p_method {t['p_method']}, scipy {kind}")
        want_p, want_s = float(res.pvalue), float(res.statistic)
        got_p, got_s = float(t["p_value"]), float(t["statistic"])
        ok_s = math.isclose(got_s, want_s, rel_tol=1e-12, abs_tol=1e-9)
        ok_p = math.isclose(got_p, want_p, rel_tol=1e-6, abs_tol=1e-300)
        if not (ok_s and ok_p):
            mismatches.append(
                f"{metric} {t['a']} vs {t['b']} (n={len(d)}, {kind}): "
                f"statistic {got_s} vs scipy {want_s}, p {got_p} vs scipy {want_p}")
        checked += 1
    print(json.dumps({"checked": checked, "methods": methods, "max_n": max_n,
                      "mismatches": mismatches[:20], "mismatch_count": len(mismatches)}))
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
