#!/usr/bin/env python3
"""Generate reference test vectors for src/stats.rs from real scipy/numpy.

Usage:
    pip install scipy numpy
    python3 scripts/stats_vectors.py                       # print Rust snippet
    python3 scripts/stats_vectors.py --splice src/stats.rs # rewrite in place
    rustfmt --edition 2021 src/stats.rs                    # then reformat

The Rust snippet lives in `src/stats.rs` between the lines
`// BEGIN GENERATED VECTORS` and `// END GENERATED VECTORS`.

Large Wilcoxon cases are not pasted as literals; both sides build them with the
same integer formula (`gen` below / `gen_series` in Rust), which is exact in
IEEE f64 on both sides.
"""
import math
import sys

import numpy as np
import scipy
import scipy.special as sp
import scipy.stats as st


def gen(n, mul, add, mod, scale, off):
    # Must match `gen_series` in the Rust tests bit for bit.
    return [((i * mul + add) % mod) / scale + off for i in range(n)]


def scipy_method(d):
    """Replicates the 'auto' branch of scipy.stats._wilcoxon._wilcoxon_nd."""
    total = len(d)
    nz = d[d != 0]
    n_zero = total - len(nz)
    absd = np.abs(nz)
    has_ties = len(np.unique(absd)) != len(absd)
    if total > 50:
        return "normal"
    if not (has_ties or n_zero > 0):
        return "exact"
    if total <= 13:
        return "perm"
    return "normal"


def wilcoxon_case(name, a, b, want_method=None):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = a - b
    res = st.wilcoxon(a, b)  # scipy defaults: wilcox zeros, no correction, auto
    method = scipy_method(d)
    if want_method is not None:
        assert method == want_method, (name, method, want_method)
    n = int(np.count_nonzero(d))
    p = float(res.pvalue)
    if method == "exact":
        assert p == float(st.wilcoxon(a, b, method="exact").pvalue)
    if method == "normal":
        asy = st.wilcoxon(a, b, method="asymptotic")
        assert p == float(asy.pvalue)
        z = float(asy.zstatistic)  # scipy reports -|z| for two-sided
        log10_tail = (math.log(2.0) + float(sp.log_ndtr(-abs(z)))) / math.log(10.0)
        if p > 0:
            assert abs(log10_tail - math.log10(p)) <= 1e-9 * abs(math.log10(p))
    log10_p = math.log10(p) if p > 0 else log10_tail
    return dict(
        name=name,
        a=a,
        b=b,
        n=n,
        statistic=float(res.statistic),
        p=p,
        log10_p=log10_p,
        median_diff=float(np.median(d)),
        exact=method != "normal",
    )


def fmt(x):
    r = repr(float(x))
    return r


def fmt_arr(xs):
    return "&[" + ", ".join(fmt(x) for x in xs) + "]"


def main():
    rng = np.random.default_rng(20240611)

    def rnd(size, loc, scale, decimals=6):
        return np.round(rng.normal(loc, scale, size), decimals)

    lit = []  # cases pasted as literals
    lit.append(wilcoxon_case("exact_n10", rnd(10, 0.0, 1.0), rnd(10, 0.3, 1.0), "exact"))
    lit.append(wilcoxon_case("exact_n20", rnd(20, 0.5, 1.0), rnd(20, 0.0, 1.0), "exact"))
    lit.append(wilcoxon_case("exact_n50", rnd(50, 0.3, 1.0), rnd(50, 0.0, 1.0), "exact"))
    lit.append(wilcoxon_case("exact_n1", [2.5], [1.0], "exact"))
    b20 = rnd(20, 0.0, 1.0)
    lit.append(wilcoxon_case("exact_n20_all_positive",
                             b20 + np.arange(1, 21) * 0.125, b20, "exact"))
    lit.append(wilcoxon_case("normal_n51_no_ties", rnd(51, 0.2, 1.0), rnd(51, 0.0, 1.0),
                             "normal"))
    lit.append(wilcoxon_case("normal_n30_ties", rnd(30, 0.4, 1.0, 1), rnd(30, 0.0, 1.0, 1),
                             "normal"))
    a = rnd(30, 0.3, 1.0)
    b = rnd(30, 0.0, 1.0)
    b[[3, 11, 25]] = a[[3, 11, 25]]
    lit.append(wilcoxon_case("normal_n30_three_zeros", a, b, "normal"))
    # 14 pairs, 2 zeros: 12 nonzero would be <= 13, but scipy decides on the
    # full length (14 > 13), so the normal approximation is used.
    a = rnd(14, 0.5, 1.0)
    b = rnd(14, 0.0, 1.0)
    b[[0, 7]] = a[[0, 7]]
    lit.append(wilcoxon_case("normal_n14_two_zeros", a, b, "normal"))
    # 52 pairs with 2 zeros: 50 nonzero, still normal (zeros present).
    a = rnd(52, 0.2, 1.0)
    b = rnd(52, 0.0, 1.0)
    b[[5, 40]] = a[[5, 40]]
    lit.append(wilcoxon_case("normal_n52_two_zeros", a, b, "normal"))
    # <= 13 pairs with zeros/ties: scipy runs an exhaustive sign-flip
    # permutation test, which is exact.
    lit.append(wilcoxon_case(
        "perm_n10_zero_and_ties",
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
        [0.5, 2.0, 2.5, 3.0, 5.5, 4.0, 5.0, 6.5, 6.0, 7.0],
        "perm"))
    lit.append(wilcoxon_case("perm_n13_ties", rnd(13, 0.6, 1.0, 1), rnd(13, 0.0, 1.0, 1),
                             "perm"))
    lit.append(wilcoxon_case("perm_n3_zero", [1.0, 2.0, 3.0], [1.0, 1.5, 4.0], "perm"))

    gens = []  # cases built from the integer formula
    specs = [
        ("gen_n200_ties", 200, (7919, 13, 101, 10.0, 0.3), (104729, 7, 97, 10.0, 0.0)),
        ("gen_n2000_p_1e150", 2000, (7919, 13, 1009, 100.0, 2.875),
         (104729, 7, 997, 100.0, 0.0)),
        ("gen_n2000_p_underflow", 2000, (7919, 13, 1009, 100.0, 20.0),
         (104729, 7, 997, 100.0, 0.0)),
    ]
    for name, n, ga, gb in specs:
        c = wilcoxon_case(name, gen(n, *ga), gen(n, *gb), "normal")
        c["ga"], c["gb"], c["len"] = ga, gb, n
        gens.append(c)
    assert 1e-152 < gens[1]["p"] < 1e-148, gens[1]["p"]
    assert gens[2]["p"] == 0.0

    zs = [-3.0, -0.5, 0.0, 0.5, 1.0, 1.959963984540054, 5.0, 10.0, 20.0, 30.0, 37.0,
          37.5, 38.5, 40.0, 100.0, 1000.0]
    sf = [(z, float(sp.ndtr(-z)), float(sp.log_ndtr(-z)) / math.log(10.0)) for z in zs]

    px = rnd(25, 0.0, 1.0)
    py = np.round(0.6 * px + rnd(25, 0.0, 0.8), 6)
    pear = [
        (px, py),
        ([1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 4.5, 2.0, 1.0, -3.0]),
        ([1.0, 2.0], [3.0, 7.0]),
        ([1e6 + 1.0, 1e6 + 2.0, 1e6 + 4.0, 1e6 + 3.5], [1.0, 0.5, 0.25, 0.3]),
    ]
    pear_out = []
    for x, y in pear:
        r = float(st.pearsonr(x, y).statistic)
        assert abs(r - float(np.corrcoef(x, y)[0, 1])) < 1e-12
        pear_out.append((np.asarray(x, float), np.asarray(y, float), r))

    qs = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    qvals = [
        rnd(17, 0.0, 3.0, 3),
        np.array([3.0, -1.0, 2.0, 2.0, 10.0, 0.5]),
        np.array([42.0]),
        np.array([5.0, 1.0]),
    ]
    quant = [(v, [float(np.quantile(v, q)) for q in qs], float(np.median(v))) for v in qvals]

    out = []
    w = out.append
    w("// BEGIN GENERATED VECTORS")
    w(f"// Generated by scripts/stats_vectors.py with scipy {scipy.__version__}, "
      f"numpy {np.__version__}.")
    w("// Do not edit by hand; rerun the script with --splice src/stats.rs, then rustfmt.")
    w("")
    w("const WILCOXON_LITERAL: &[WCase] = &[")
    for c in lit:
        w("    WCase {")
        w(f"        name: {c['name']!r},".replace("'", '"'))
        w(f"        a: {fmt_arr(c['a'])},")
        w(f"        b: {fmt_arr(c['b'])},")
        w(f"        n: {c['n']},")
        w(f"        statistic: {fmt(c['statistic'])},")
        w(f"        p: {fmt(c['p'])},")
        w(f"        log10_p: {fmt(c['log10_p'])},")
        w(f"        median_diff: {fmt(c['median_diff'])},")
        w(f"        exact: {'true' if c['exact'] else 'false'},")
        w("    },")
    w("];")
    w("")
    w("const WILCOXON_GENERATED: &[GCase] = &[")
    for c in gens:
        w("    GCase {")
        w(f"        name: \"{c['name']}\",")
        w(f"        len: {c['len']},")
        w("        a: Gen { mul: %d, add: %d, modulus: %d, scale: %s, off: %s }," %
          (c['ga'][0], c['ga'][1], c['ga'][2], fmt(c['ga'][3]), fmt(c['ga'][4])))
        w("        b: Gen { mul: %d, add: %d, modulus: %d, scale: %s, off: %s }," %
          (c['gb'][0], c['gb'][1], c['gb'][2], fmt(c['gb'][3]), fmt(c['gb'][4])))
        w(f"        n: {c['n']},")
        w(f"        statistic: {fmt(c['statistic'])},")
        w(f"        p: {fmt(c['p'])},")
        w(f"        log10_p: {fmt(c['log10_p'])},")
        w(f"        median_diff: {fmt(c['median_diff'])},")
        w("    },")
    w("];")
    w("")
    w("/// (z, scipy.special.ndtr(-z), scipy.special.log_ndtr(-z) / ln 10)")
    w("const NORMAL_SF: &[(f64, f64, f64)] = &[")
    for z, s, l in sf:
        w(f"    ({fmt(z)}, {fmt(s)}, {fmt(l)}),")
    w("];")
    w("")
    w("/// (x, y, scipy.stats.pearsonr(x, y).statistic)")
    w("const PEARSON: &[(&[f64], &[f64], f64)] = &[")
    for x, y, r in pear_out:
        w(f"    ({fmt_arr(x)}, {fmt_arr(y)}, {fmt(r)}),")
    w("];")
    w("")
    w(f"const QUANTILE_QS: &[f64] = {fmt_arr(qs)};")
    w("")
    w("/// (values, numpy.quantile(values, q) for q in QUANTILE_QS, numpy.median(values))")
    w("const QUANTILES: &[(&[f64], &[f64], f64)] = &[")
    for v, qv, m in quant:
        w(f"    ({fmt_arr(v)}, {fmt_arr(qv)}, {fmt(m)}),")
    w("];")
    w("// END GENERATED VECTORS")
    text = "\n".join(out) + "\n"

    if len(sys.argv) == 3 and sys.argv[1] == "--splice":
        path = sys.argv[2]
        src = open(path).read()
        start = src.index("// BEGIN GENERATED VECTORS")
        end = src.index("// END GENERATED VECTORS")
        end = src.index("\n", end) + 1
        # Keep the indentation of the marker line.
        indent = src[src.rindex("\n", 0, start) + 1:start]
        body = "".join(indent + l if l else l for l in text.splitlines(True))
        open(path, "w").write(src[:src.rindex("\n", 0, start) + 1] + body + src[end:])
        print(f"spliced vectors into {path}", file=sys.stderr)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
