#!/usr/bin/env bash
# Checks that vendor/candle-core is exactly the published candle-core (the version its
# Cargo.toml names) plus vendor/candle-core.patch: no other change can hide in the
# vendored tree. Run by .ci/run; exits non-zero, listing the differences, on any drift.
#
# To regenerate the patch after a deliberate change to the vendored tree:
#   scripts/check-vendor.sh --write
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
vendored=vendor/candle-core
patch_file=vendor/candle-core.patch
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$vendored/Cargo.toml" | head -n 1)
[ -n "$version" ] || { echo "check-vendor: no version in $vendored/Cargo.toml" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The published crate, fetched by cargo itself through a throwaway manifest that depends
# on it without our [patch] (so it lands in cargo's registry cache as published).
mkdir -p "$tmp/fetch/src"
: > "$tmp/fetch/src/lib.rs"
cat > "$tmp/fetch/Cargo.toml" <<TOML
[package]
name = "vendor-check"
version = "0.0.0"
edition = "2021"
[dependencies]
candle-core = "=$version"
TOML
cargo fetch --quiet --manifest-path "$tmp/fetch/Cargo.toml"
published=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"candle-core-$version" | head -n 1)
[ -d "$published" ] || { echo "check-vendor: candle-core $version not found in cargo's registry cache" >&2; exit 1; }

# Only what we vendor: the sources, licence, readme and manifest (the published example,
# test and bench sources are left out, and so are their targets in the manifest: see the patch).
mkdir -p "$tmp/published"
cp -r "$published/src" "$published/LICENSE" "$published/README.md" "$published/Cargo.toml" "$tmp/published/"

if [ "${1:-}" = "--write" ]; then
    mkdir -p "$tmp/vendored"
    cp -r "$root/$vendored/." "$tmp/vendored/"
    (cd "$tmp" && git diff --no-index published vendored > "$root/$patch_file") || true
    echo "check-vendor: wrote $patch_file ($(grep -c '^diff ' "$root/$patch_file") files)"
    exit 0
fi

# The patch's paths read a/published/... and b/vendored/...: strip two components.
(cd "$tmp/published" && git apply -p2 "$root/$patch_file")
if ! diff -r "$tmp/published" "$root/$vendored" > "$tmp/drift"; then
    echo "check-vendor: $vendored is not candle-core $version + $patch_file:" >&2
    sed 's|'"$tmp"'/published|published+patch|g' "$tmp/drift" | head -n 40 >&2
    echo "If the change is deliberate, run scripts/check-vendor.sh --write and review the patch." >&2
    exit 1
fi
echo "check-vendor: $vendored = candle-core $version + $patch_file ($(grep -c '^diff ' "$patch_file") files changed)"
