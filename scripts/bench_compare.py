#!/usr/bin/env python3
"""zerobias against PyTorch, side by side on this machine: ms/image and the ratio.

    python3 scripts/bench_compare.py [--arch resnet50,vgg16] [--size 224] [--batch 8]
                                     [--phases attribution,train_step] [--repeats 3]
                                     [--rounds 1] [--threads N] [--venv DIR]
                                     [--index-url URL]
                                     [--features F]

Runs `zerobias bench --json` (built with `cargo build --release`) and
`scripts/bench_torch.py` with the same architectures, sizes, batches and phases, one after
the other so they never share the cores, and prints a table and a JSON summary. With
--rounds N both sides run N times in turn; each row then shows the medians over the rounds
(of each side's ms/image and of the per-round ratios) and the range of the ratios.

PyTorch comes from the first of: the Python running this script if it imports `torch`;
the venv given by --venv (default target/torch-venv) if it exists; otherwise that venv is
created and `torch` pip-installed into it. On Linux, PyPI's torch wheel brings the CUDA
libraries (several GB); pass --index-url with a CPU-only wheel index to avoid that where
one is reachable. Both sides use --threads threads (default: every core).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def has_torch(python):
    return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


def torch_python(args):
    if has_torch(sys.executable):
        return sys.executable
    env_dir = Path(args.venv)
    python = env_dir / "bin" / "python"
    if python.exists() and has_torch(str(python)):
        return str(python)
    print(f"creating {env_dir} and installing torch (large download)...", file=sys.stderr)
    venv.create(env_dir, with_pip=True)
    cmd = [str(python), "-m", "pip", "install", "--quiet", "torch"]
    if args.index_url:
        cmd += ["--index-url", args.index_url]
    subprocess.run(cmd, check=True)
    return str(python)


def zerobias_rows(args):
    binary = ROOT / "target" / "release" / "zerobias"
    build = ["cargo", "build", "--release", "--quiet"]
    if args.features:
        build += ["--features", args.features]
    subprocess.run(build, cwd=ROOT, check=True)
    rows = []
    for arch in args.arch.split(","):
        cmd = [str(binary), "bench", "--json", "--arch", arch, "--size", str(args.size),
               "--batch", args.batch, "--phases", args.phases, "--repeats", str(args.repeats)]
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
        rows += json.loads(out.stdout)
    return rows


def torch_rows(args, python):
    rows = []
    for arch in args.arch.split(","):
        cmd = [python, str(ROOT / "scripts" / "bench_torch.py"), arch, str(args.size), args.batch,
               "--repeats", str(args.repeats), "--threads", str(args.threads),
               "--phases", args.phases]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
        rows += [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50,vgg16")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", default="8", help="comma-separated batch sizes")
    ap.add_argument("--phases", default="forward,attribution,train_step")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate both sides this many times; report the median ratio")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--venv", default=str(ROOT / "target" / "torch-venv"))
    ap.add_argument("--index-url", default=None)
    ap.add_argument("--features", default="", help="cargo features for the zerobias build")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    python = torch_python(args)
    key = lambda r: (r["arch"], r["size"], r["batch"], r["phase"])
    # Rounds alternate the two sides, so that a slow spell of a shared machine hits both;
    # each round gives one ratio per row; the table shows medians over rounds and the range.
    rounds = []
    for i in range(args.rounds):
        if args.rounds > 1:
            print(f"round {i + 1}/{args.rounds}...", file=sys.stderr)
        ours = zerobias_rows(args)
        theirs = {key(r): r for r in torch_rows(args, python)}
        rounds.append([(r, theirs[key(r)]) for r in ours if key(r) in theirs])
    summary = []
    print(f"{'arch':<9} {'size':>4} {'batch':>5} {'phase':<16} {'zerobias ms/img':>16} "
          f"{'torch ms/img':>13} {'speed vs torch':>15}"
          + (f" {'range':>13}" if args.rounds > 1 else ""))
    for row in range(len(rounds[0])):
        per_round = []
        for pairs in rounds:
            r, t = pairs[row]
            ms_ours = 1e3 * r["median_s"] / r["batch"]
            ms_torch = 1e3 * t["median_s"] / t["batch"]
            per_round.append((ms_torch / ms_ours, ms_ours, ms_torch))
        ratios = [x[0] for x in per_round]
        ratio, lo, hi = statistics.median(ratios), min(ratios), max(ratios)
        ms_ours = statistics.median(x[1] for x in per_round)
        ms_torch = statistics.median(x[2] for x in per_round)
        r = rounds[0][row][0]
        summary.append({"arch": r["arch"], "size": r["size"], "batch": r["batch"],
                        "phase": r["phase"], "zerobias_ms_per_image": ms_ours,
                        "torch_ms_per_image": ms_torch, "speed_vs_torch": ratio,
                        "speed_vs_torch_per_round": [x[0] for x in per_round],
                        "threads": args.threads, "features": args.features})
        print(f"{r['arch']:<9} {r['size']:>4} {r['batch']:>5} {r['phase']:<16} "
              f"{ms_ours:>16.1f} {ms_torch:>13.1f} {ratio:>14.2f}x"
              + (f" {lo:>6.2f}-{hi:.2f}x" if args.rounds > 1 else ""))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
