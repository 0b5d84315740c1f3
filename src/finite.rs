//! Non-finite values (NaN, ±inf): found, counted and named, so that a NaN weight, input,
//! logit or attribution stops the command with a message instead of becoming a result.

use std::fmt;

use candle_core::{CpuStorage, DType, Storage, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// How many values of each non-finite kind a tensor (or one image of it) holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NonFinite {
    pub nan: usize,
    pub pos_inf: usize,
    pub neg_inf: usize,
}

impl NonFinite {
    pub fn total(&self) -> usize {
        self.nan + self.pos_inf + self.neg_inf
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    fn of(values: &[f32]) -> Self {
        let mut c = Self::default();
        for v in values {
            if v.is_nan() {
                c.nan += 1;
            } else if *v == f32::INFINITY {
                c.pos_inf += 1;
            } else if *v == f32::NEG_INFINITY {
                c.neg_inf += 1;
            }
        }
        c
    }

    fn plus(self, o: Self) -> Self {
        Self {
            nan: self.nan + o.nan,
            pos_inf: self.pos_inf + o.pos_inf,
            neg_inf: self.neg_inf + o.neg_inf,
        }
    }
}

/// "3 non-finite values (2 NaN, 1 +inf)".
impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.total();
        let kinds: Vec<String> = [
            (self.nan, "NaN"),
            (self.pos_inf, "+inf"),
            (self.neg_inf, "-inf"),
        ]
        .iter()
        .filter(|(k, _)| *k > 0)
        .map(|(k, name)| format!("{k} {name}"))
        .collect();
        let s = if n == 1 { "" } else { "s" };
        write!(f, "{n} non-finite value{s} ({})", kinds.join(", "))
    }
}

/// Counts over a slice: a vectorised all-finite scan first (the common case costs one
/// read), the per-kind count only when something is found.
fn count_values(values: &[f32]) -> NonFinite {
    const CHUNK: usize = 1 << 16;
    let finite = |c: &[f32]| c.iter().fold(true, |ok, v| ok & v.is_finite());
    let all_finite = if values.len() > CHUNK {
        values.par_chunks(CHUNK).all(finite)
    } else {
        finite(values)
    };
    if all_finite {
        return NonFinite::default();
    }
    values
        .par_chunks(CHUNK)
        .map(NonFinite::of)
        .reduce(NonFinite::default, NonFinite::plus)
}

/// Apply `f` to the values of a floating-point tensor (read in place when it is a dense
/// CPU f32 tensor, else copied as f32); `None` for integer tensors, which cannot be
/// non-finite.
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<Option<R>> {
    if !t.dtype().is_float() {
        return Ok(None);
    }
    if t.dtype() == DType::F32 {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(Some(f(&v[a..b])));
        }
    }
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(Some(f(&v)))
}

/// The non-finite values of a whole tensor (none for integer tensors).
pub fn count(t: &Tensor) -> Result<NonFinite> {
    Ok(with_values(t, count_values)?.unwrap_or_default())
}

/// The non-finite values of each slice along the first dimension (one per image), for the
/// slices that hold any: (index, counts). A scalar counts as one slice.
pub fn per_item(t: &Tensor) -> Result<Vec<(usize, NonFinite)>> {
    let n = t.dims().first().copied().unwrap_or(1).max(1);
    let found = with_values(t, |v| {
        if count_values(v).is_empty() {
            return Vec::new();
        }
        let per = v.len() / n;
        (0..n)
            .map(|i| (i, NonFinite::of(&v[i * per..(i + 1) * per])))
            .filter(|(_, c)| !c.is_empty())
            .collect()
    })?;
    Ok(found.unwrap_or_default())
}

/// Refuse a result with non-finite values: `what` names the result (e.g. "logits"),
/// `name(i)` the image of slice i. The error names the first such image, its counts and how
/// many other images are affected.
pub fn check_result(t: &Tensor, what: &str, name: impl Fn(usize) -> String) -> Result<()> {
    let bad = per_item(t)?;
    let Some((i, c)) = bad.first() else {
        return Ok(());
    };
    let more = match bad.len() - 1 {
        0 => String::new(),
        1 => " (and 1 other image)".into(),
        k => format!(" (and {k} other images)"),
    };
    Err(Error::NonFinite(format!(
        "{what} of {} contain {c}{more}; nothing was written",
        name(*i)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn counts_each_kind_per_image_and_names_the_first() {
        let mut v = vec![1f32; 2 * 3 * 40_000];
        v[3 * 40_000 + 5] = f32::NAN;
        v[3 * 40_000 + 9] = f32::NEG_INFINITY;
        v[3 * 40_000 + 11] = f32::NAN;
        let t = Tensor::from_vec(v, (2, 3, 200, 200), &Device::Cpu).unwrap();
        let want = NonFinite {
            nan: 2,
            pos_inf: 0,
            neg_inf: 1,
        };
        assert_eq!(count(&t).unwrap(), want);
        assert_eq!(per_item(&t).unwrap(), vec![(1, want)]);
        assert_eq!(want.to_string(), "3 non-finite values (2 NaN, 1 -inf)");
        let err = check_result(&t, "logits", |i| format!("input[{i}]")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "non-finite result: logits of input[1] contain 3 non-finite values (2 NaN, 1 -inf); nothing was written"
        );
        // Non-contiguous and f64 tensors are read through a copy; integers never count.
        let tt = t.transpose(2, 3).unwrap().to_dtype(DType::F64).unwrap();
        assert_eq!(count(&tt).unwrap(), want);
        let ints = Tensor::new(&[1i64, 2], &Device::Cpu).unwrap();
        assert!(count(&ints).unwrap().is_empty());
        let fine = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(check_result(&fine, "logits", |i| i.to_string()).is_ok());
    }
}
