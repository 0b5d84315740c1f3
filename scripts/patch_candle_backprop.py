#!/usr/bin/env python3
"""Reapply zerobias's backprop patch to a vendored candle-core (see vendor/candle-core/ZEROBIAS.md).

    python3 scripts/patch_candle_backprop.py vendor/candle-core/src/backprop.rs
"""
import re
import sys

path = sys.argv[1]
src = open(path).read()
if "pub fn accumulate(" in src:
    sys.exit(f"{path} is already patched")
pattern = re.compile(
    r"(?m)^(?P<ind>[ \t]*)let (?P<v>\w+) = grads\.or_insert\((?P<arg>[^)]*)\)\?;\n"
    r"[ \t]*\*(?P=v) = (?P=v)\.add\(&(?P<g>\w+)\)\?;?"
)
src, count = pattern.subn(lambda m: f"{m['ind']}grads.accumulate({m['arg']}, &{m['g']})?;", src)
anchor = "    /// Get the gradient tensor associated with the given tensor, or, if it does not exist,"
if count == 0 or anchor not in src:
    sys.exit(f"{path}: the expected upstream code was not found; patch by hand")
method = '''    /// Adds `grad` to the gradient of `tensor`. The first gradient is stored as is (made
    /// contiguous) instead of being added to a fresh tensor of zeros, which saves a zero fill
    /// and a full-size add per edge of the graph (zerobias patch).
    pub fn accumulate(&mut self, tensor: &Tensor, grad: &Tensor) -> Result<()> {
        use std::collections::hash_map::Entry;
        match self.0.entry(tensor.id()) {
            Entry::Occupied(mut entry) => {
                let sum = entry.get().add(grad)?;
                entry.insert(sum);
            }
            Entry::Vacant(entry) => {
                entry.insert(grad.contiguous()?);
            }
        }
        Ok(())
    }

'''
src = src.replace(anchor, method + anchor, 1)
open(path, "w").write(src)
print(f"{path}: {count} accumulations rewritten")
