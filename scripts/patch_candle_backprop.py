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
                let sum = match Self::add_on_rayon(entry.get(), grad)? {
                    Some(sum) => sum,
                    None => entry.get().add(grad)?,
                };
                entry.insert(sum);
            }
            Entry::Vacant(entry) => {
                entry.insert(grad.contiguous()?);
            }
        }
        Ok(())
    }

    /// a + b on the rayon pool for large contiguous f32 CPU tensors of one shape, else None
    /// (zerobias patch: it pins candle's busy-waiting element-wise pool to one thread, which
    /// left the other cores idle during these adds). Same f32 sums as `add`.
    fn add_on_rayon(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
        use rayon::prelude::*;
        const MIN: usize = 1 << 16;
        const CHUNK: usize = 1 << 14;
        if a.shape() != b.shape()
            || a.dtype() != crate::DType::F32
            || b.dtype() != crate::DType::F32
            || !a.device().is_cpu()
            || !b.device().is_cpu()
            || a.elem_count() < MIN
        {
            return Ok(None);
        }
        let (sa, la) = a.storage_and_layout();
        let (sb, lb) = b.storage_and_layout();
        let (crate::Storage::Cpu(crate::CpuStorage::F32(va)), crate::Storage::Cpu(crate::CpuStorage::F32(vb))) =
            (&*sa, &*sb)
        else {
            return Ok(None);
        };
        let (Some((a0, a1)), Some((b0, b1))) = (la.contiguous_offsets(), lb.contiguous_offsets())
        else {
            return Ok(None);
        };
        let (va, vb) = (&va[a0..a1], &vb[b0..b1]);
        let mut sum = Vec::<f32>::with_capacity(va.len());
        sum.spare_capacity_mut()[..va.len()]
            .par_chunks_mut(CHUNK)
            .zip(va.par_chunks(CHUNK).zip(vb.par_chunks(CHUNK)))
            .for_each(|(out, (x, y))| {
                for ((o, &x), &y) in out.iter_mut().zip(x).zip(y) {
                    o.write(x + y);
                }
            });
        // SAFETY: the chunks above cover all va.len() values.
        unsafe { sum.set_len(va.len()) };
        let shape = a.shape().clone();
        drop((sa, sb));
        Ok(Some(Tensor::from_vec(sum, shape, a.device())?))
    }

'''
src = src.replace(anchor, method + anchor, 1)
open(path, "w").write(src)
print(f"{path}: {count} accumulations rewritten")
