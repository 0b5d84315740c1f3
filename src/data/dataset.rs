//! What a data set is to the loader: normalised samples by index, each with its label.

use std::sync::Arc;

use super::error::DataError;
use super::rng::Rng;

/// One normalised sample: CHW pixels, its label, and (synthetic data) an object mask `h*w`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub pixels: Vec<f32>,
    pub label: u32,
    pub mask: Option<Vec<u8>>,
}

pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn num_classes(&self) -> usize;
    fn class_names(&self) -> Vec<String>;
    /// `(height, width)` of every sample.
    fn image_size(&self) -> (usize, usize);
    /// One normalised CHW sample; `train` applies augmentation drawn from `rng`.
    fn get(&self, index: usize, train: bool, rng: &mut Rng) -> Result<Sample, DataError>;
}

/// A fixed selection of another data set's samples, in their original order.
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

/// Seed of [`Subset::spread`]'s draw: one fixed selection for every run and evaluation.
const SPREAD_SEED: u64 = 0x5eed_5b5e7;

impl Subset {
    /// `limit` samples of `data` drawn uniformly without replacement by a fixed seed, kept in
    /// their original order; all of `data` when `limit` is 0 or not smaller than it. Not the
    /// first `limit`: image folders list one class after another, so a prefix would measure
    /// only the first classes (the first 10 000 of ImageNet's validation set are 200 of its
    /// 1000).
    pub fn spread(data: Arc<dyn Dataset>, limit: usize) -> Arc<dyn Dataset> {
        if limit == 0 || limit >= data.len() {
            return data;
        }
        let indices = Rng::new(SPREAD_SEED).sorted_sample(data.len(), limit);
        Arc::new(Subset {
            inner: data,
            indices,
        })
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn class_names(&self) -> Vec<String> {
        self.inner.class_names()
    }
    fn image_size(&self) -> (usize, usize) {
        self.inner.image_size()
    }
    fn get(&self, index: usize, train: bool, rng: &mut Rng) -> Result<Sample, DataError> {
        let inner = *self.indices.get(index).ok_or(DataError::Index {
            index,
            len: self.indices.len(),
        })?;
        self.inner.get(inner, train, rng)
    }
}

/// Test data: `classes` classes of `per_class` samples each, listed class by class as an
/// image folder lists them; every pixel of sample `i` is `i`.
#[cfg(test)]
pub(crate) struct ClassSorted {
    pub classes: usize,
    pub per_class: usize,
    /// Height and width of every sample.
    pub size: usize,
}

#[cfg(test)]
impl Dataset for ClassSorted {
    fn len(&self) -> usize {
        self.classes * self.per_class
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn class_names(&self) -> Vec<String> {
        (0..self.classes).map(|c| format!("c{c}")).collect()
    }
    fn image_size(&self) -> (usize, usize) {
        (self.size, self.size)
    }
    fn get(&self, index: usize, _: bool, _: &mut Rng) -> Result<Sample, DataError> {
        Ok(Sample {
            pixels: vec![index as f32; 3 * self.size * self.size],
            label: (index / self.per_class) as u32,
            mask: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels_and_indices(d: &dyn Dataset) -> (Vec<u32>, Vec<usize>) {
        let mut rng = Rng::new(1);
        (0..d.len())
            .map(|i| {
                let s = d.get(i, false, &mut rng).unwrap();
                (s.label, s.pixels[0] as usize)
            })
            .unzip()
    }

    #[test]
    fn spread_covers_every_class_of_a_class_sorted_set_in_proportion() {
        let data: Arc<dyn Dataset> = Arc::new(ClassSorted {
            classes: 10,
            per_class: 150,
            size: 1,
        });
        let sub = Subset::spread(data, 1000);
        assert_eq!(sub.len(), 1000);
        let (labels, indices) = labels_and_indices(sub.as_ref());
        for c in 0..10u32 {
            let n = labels.iter().filter(|&&l| l == c).count();
            // A prefix of 1000 would hold six classes in full and none of the last three.
            assert!((70..=130).contains(&n), "class {c}: {n} of 1000");
        }
        assert!(
            indices.windows(2).all(|w| w[0] < w[1]),
            "distinct, in order"
        );
        assert!(*indices.last().unwrap() < 1500);
    }

    #[test]
    fn spread_is_one_fixed_selection_and_all_when_not_limited() {
        let data: Arc<dyn Dataset> = Arc::new(ClassSorted {
            classes: 4,
            per_class: 50,
            size: 1,
        });
        let a = labels_and_indices(Subset::spread(data.clone(), 64).as_ref());
        let b = labels_and_indices(Subset::spread(data.clone(), 64).as_ref());
        assert_eq!(a, b);
        for limit in [0, 200, 500] {
            let all = Subset::spread(data.clone(), limit);
            assert_eq!(
                labels_and_indices(all.as_ref()).1,
                (0..200).collect::<Vec<_>>()
            );
        }
        let err = Subset::spread(data, 10).get(10, false, &mut Rng::new(0));
        assert!(matches!(err, Err(DataError::Index { index: 10, len: 10 })));
    }
}
