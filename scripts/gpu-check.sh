#!/usr/bin/env bash
# One-shot GPU check, for a machine with an NVIDIA GPU and the CUDA toolkit (no network
# needed once the crates are fetched or vendored; see docs/gpu.md). About 10 minutes:
#
#   1. build   cargo build --release --features cuda (binary + parity test binaries)
#   2. parity  the PyTorch parity tests (tests/parity.rs, tests/flip_reference.rs) with
#              ZEROBIAS_TEST_DEVICE=$DEVICE, then the device unit tests
#   3. quick   the quickstart recipe with --set device=$DEVICE
#   4. bench   `zerobias bench` for vgg16 and resnet50 at $SIZE, batches $BATCHES, all phases
#   5. torch   scripts/bench_torch.py on the same shapes, when `import torch` works
#
# Every step runs under its own timeout; a failed step is recorded and the script goes on.
# Results: one JSON ($OUT/gpu-check.json) and a table on stdout. Exit status 1 if any step
# failed.
#
#   scripts/gpu-check.sh                      # on the GPU machine
#   DEVICE=cpu QUICK=tiny SIZE=32 BATCHES=1,2 REPEATS=1 scripts/gpu-check.sh   # dry run
#
# Env: DEVICE (cuda), OUT (target/gpu-check), SIZE (224), BATCHES (1,64), REPEATS (3),
# QUICK (full | tiny: a few steps, for dry runs), PRECISION (f32 | tf32, for quick and
# bench), CARGO_OFFLINE=1 or VENDOR_DIR (no network), and per-step timeouts in seconds: T_BUILD (420), T_PARITY (120), T_QUICK (240),
# T_BENCH (180 per model), T_TORCH (120 per model).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE="${DEVICE:-cuda}"
OUT="${OUT:-target/gpu-check}"
SIZE="${SIZE:-224}"
BATCHES="${BATCHES:-1,64}"
REPEATS="${REPEATS:-3}"
QUICK="${QUICK:-full}"
PRECISION="${PRECISION:-f32}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
STEPS="$OUT/steps.tsv"
: >"$STEPS"

FEATURES=()
case "$DEVICE" in
cpu) ;;
cuda | cuda:*)
    FEATURES=(--features cuda)
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
            >"$OUT/gpu.txt" 2>&1 || true
        if [[ -z "${CUDA_COMPUTE_CAP:-}" ]]; then
            cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '. ')
            [[ -n "$cap" ]] && export CUDA_COMPUTE_CAP="$cap"
        fi
    fi
    if [[ -z "${CUDARC_CUDA_VERSION:-}" ]] && command -v nvcc >/dev/null; then
        # cudarc 0.19.10 knows CUDA 11.4 to 13.4: pin newer toolkits to 13.4's bindings.
        v=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
        read -r major minor <<<"$v"
        if ((major > 13 || (major == 13 && minor > 4))); then
            export CUDARC_CUDA_VERSION=13040
        fi
    fi
    ;;
*)
    echo "gpu-check: DEVICE=$DEVICE: expected cpu, cuda or cuda:N" >&2
    exit 2
    ;;
esac
# Offline machines: the crates already fetched (CARGO_OFFLINE=1) or vendored with
# `cargo vendor DIR` (VENDOR_DIR=DIR); see docs/gpu.md.
CARGO=(cargo)
if [[ -n "${VENDOR_DIR:-}" ]]; then
    CARGO+=(--offline --config "source.crates-io.replace-with='vendored'"
        --config "source.vendored.directory='$(cd "$VENDOR_DIR" && pwd)'")
elif [[ -n "${CARGO_OFFLINE:-}" ]]; then
    CARGO+=(--offline)
fi

# step NAME TIMEOUT_S CMD...: runs CMD with stdout+stderr in $OUT/NAME.log, records
# name, status (ok / failed / timeout), exit code and milliseconds in $STEPS.
step() {
    local name=$1 limit=$2
    shift 2
    local t0 t1 rc status
    echo "== $name (timeout ${limit}s): $*" >&2
    t0=$(date +%s%N)
    set +e
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    set -e
    t1=$(date +%s%N)
    case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$(((t1 - t0) / 1000000))" >>"$STEPS"
    echo "   $status (exit $rc); log: $OUT/$name.log" >&2
    [[ $status == ok ]] || tail -n 15 "$OUT/$name.log" >&2
    return 0
}
ok() { grep -q "^$1	ok	" "$STEPS"; }

step build "${T_BUILD:-420}" "${CARGO[@]}" build --release "${FEATURES[@]}" --bins --tests
BIN="${CARGO_TARGET_DIR:-target}/release/zerobias"

if ok build; then
    step parity "${T_PARITY:-120}" env ZEROBIAS_TEST_DEVICE="$DEVICE" \
        "${CARGO[@]}" test --release "${FEATURES[@]}" --test parity --test flip_reference
    step device_units 60 "${CARGO[@]}" test --release "${FEATURES[@]}" --lib device::
    quick_sets=(--set "device=$DEVICE" --set "precision=$PRECISION")
    if [[ $QUICK == tiny ]]; then
        quick_sets+=(--set data.train_len=64 --set data.val_len=64 --set stage.0.steps=4
            --set stage.0.warmup_steps=1 --set stage.0.restart_patience=0 --set stage.0.eval_every=4 --set stage.1.rescales=2
            --set stage.1.rescale_every=2 --set stage.1.zero_steps=2 --set stage.1.eval_every=4)
    fi
    rm -rf "$OUT/quickstart"
    step quickstart "${T_QUICK:-240}" "$BIN" decay recipes/quickstart.toml \
        --run-dir "$OUT/quickstart" "${quick_sets[@]}"
    for arch in vgg16 resnet50; do
        # The JSON array goes to stdout (the .json file), progress rows to the log.
        step "bench_$arch" "${T_BENCH:-180}" bash -c \
            '"$1" --device "$2" --precision "$3" bench --arch "$4" --size "$5" --batch "$6" --repeats "$7" --json >"$8"' \
            _ "$BIN" "$DEVICE" "$PRECISION" "$arch" "$SIZE" "$BATCHES" "$REPEATS" "$OUT/bench_$arch.json"
    done
fi

if python3 -c 'import torch' >/dev/null 2>&1; then
    torch_dev=$DEVICE
    [[ $DEVICE == cpu ]] || torch_dev=cuda:${DEVICE#cuda:}
    [[ $DEVICE == cuda ]] && torch_dev=cuda
    tf32=()
    [[ $PRECISION == tf32 ]] && tf32=(--tf32)
    for arch in vgg16 resnet50; do
        step "torch_$arch" "${T_TORCH:-120}" bash -c \
            'python3 scripts/bench_torch.py "$1" "$2" "$3" --repeats "$4" --threads "$5" --device "$6" "${@:8}" >"$7"' \
            _ "$arch" "$SIZE" "$BATCHES" "$REPEATS" "$(nproc)" "$torch_dev" "$OUT/torch_$arch.jsonl" "${tf32[@]}"
    done
else
    printf 'torch\tskipped\t-\t0\n' >>"$STEPS"  # no PyTorch here
fi

# One JSON and a table. python3 is part of any CUDA machine with PyTorch; without it the
# per-step files in $OUT are the results.
python3 - "$OUT" "$DEVICE" "$PRECISION" <<'PY'
import json, os, subprocess, sys, datetime

out, device, precision = sys.argv[1:4]

def read(path, lines=False):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip()] if lines else json.load(f)
    except (OSError, ValueError):
        return None

steps = []
for line in open(os.path.join(out, "steps.tsv")):
    name, status, rc, ms = line.rstrip("\n").split("\t")
    steps.append({"step": name, "status": status, "exit": rc, "seconds": round(int(ms) / 1e3, 1)})

def tail(name, n=3):
    try:
        with open(os.path.join(out, name + ".log")) as f:
            return [l.rstrip() for l in f.readlines()[-n:]]
    except OSError:
        return []

for s in steps:
    if s["status"] not in ("ok", "skipped"):
        s["log_tail"] = tail(s["step"], 15)
parity = next((s for s in steps if s["step"] == "parity"), None)
if parity:
    parity["summary"] = [l.strip() for l in open(os.path.join(out, "parity.log"))
                         if l.startswith("test result:")]

def git(*a):
    try:
        return subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""

gpu = open(os.path.join(out, "gpu.txt")).read().strip() if os.path.exists(os.path.join(out, "gpu.txt")) else ""
result = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "commit": git("rev-parse", "--short", "HEAD"),
    "device": device, "precision": precision, "gpu": gpu,
    "steps": steps,
    "zerobias": [m for a in ("vgg16", "resnet50") for m in (read(os.path.join(out, f"bench_{a}.json")) or [])],
    "torch": [m for a in ("vgg16", "resnet50") for m in (read(os.path.join(out, f"torch_{a}.jsonl"), True) or [])],
    "quickstart": read(os.path.join(out, "quickstart", "summary.json")),
}
path = os.path.join(out, "gpu-check.json")
with open(path + ".tmp", "w") as f:
    json.dump(result, f, indent=1)
os.replace(path + ".tmp", path)

print(f"\ngpu-check {result['date']} commit {result['commit']} device {device} ({gpu or 'no nvidia-smi'}) precision {precision}")
print(f"\n{'step':<16} {'status':<8} {'seconds':>8}")
for s in steps:
    print(f"{s['step']:<16} {s['status']:<8} {s['seconds']:>8}")
torch = {(m["arch"], m["batch"], m["phase"]): m["median_s"] for m in result["torch"]}
if result["zerobias"]:
    print(f"\n{'model':<9} {'size':>4} {'batch':>5} {'phase':<17} {'zerobias ms/img':>15} {'torch ms/img':>12} {'ratio':>6}")
    for m in result["zerobias"]:
        z = 1e3 * m["median_s"] / m["batch"]
        t = torch.get((m["arch"], m["batch"], m["phase"]))
        t_ms = f"{1e3 * t / m['batch']:.2f}" if t else "-"
        ratio = f"{z / (1e3 * t / m['batch']):.2f}" if t else "-"
        print(f"{m['arch']:<9} {m['size']:>4} {m['batch']:>5} {m['phase']:<17} {z:>15.2f} {t_ms:>12} {ratio:>6}")
print(f"\nresults: {path}")
PY

! grep -qv -P '\t(ok|skipped)\t' "$STEPS"
