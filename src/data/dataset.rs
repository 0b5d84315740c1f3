//! What a data set is to the loader: normalised samples by index, each with its label.

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
