//! One row per model × image × method of the flip metric, and the metrics derived from it.

use crate::error::{Error, Result};

/// The statistical unit of the δ metrics (the comparisons with the noise baseline).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NoiseUnit {
    /// One value per (image, noise map): the paper's "100x50 samples".
    #[default]
    Pair,
    /// One value per image: the noise maps of an image averaged first.
    Image,
}

impl NoiseUnit {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "pair" => Ok(NoiseUnit::Pair),
            "image" => Ok(NoiseUnit::Image),
            _ => Err(Error::input(format!(
                "unknown noise unit '{s}': expected 'pair' or 'image'"
            ))),
        }
    }
    pub fn label(&self) -> &'static str {
        match self {
            NoiseUnit::Pair => "pair",
            NoiseUnit::Image => "image",
        }
    }
}

/// One row of per_image.csv.
#[derive(Clone, Debug)]
pub struct Row {
    pub model: String,
    pub image: usize,
    pub method: String,
    pub e_minus: f64,
    pub e_plus: f64,
    pub flip_step_minus: usize,
    pub flip_step_plus: usize,
    pub flipped_minus: bool,
    pub flipped_plus: bool,
    /// Mean of `noise_minus` (NaN without noise samples).
    pub e_minus_noise: f64,
    /// Mean of `noise_plus` (NaN without noise samples).
    pub e_plus_noise: f64,
    pub forwards: usize,
    /// The images whose maps served as noise ξ, in draw order (the same for every method
    /// and model of a run).
    pub noise_images: Vec<usize>,
    /// e(x, −ξ_k) for each noise map k.
    pub noise_minus: Vec<f64>,
    /// e(x, +ξ_k) for each noise map k.
    pub noise_plus: Vec<f64>,
}

impl Row {
    pub fn e_delta(&self) -> f64 {
        self.e_minus - self.e_plus
    }
    pub fn e_delta_noise(&self) -> f64 {
        self.e_minus_noise - self.e_plus_noise
    }
    pub fn metric(&self, name: &str) -> f64 {
        match name {
            "e_minus" => self.e_minus,
            "e_plus" => self.e_plus,
            "e_delta" => self.e_delta(),
            "delta_e_minus" => self.e_minus - self.e_minus_noise,
            "delta_e_plus" => self.e_plus - self.e_plus_noise,
            "delta_e_delta" => self.e_delta() - self.e_delta_noise(),
            _ => f64::NAN,
        }
    }

    /// The metric against the k-th noise map alone (δ metrics; others ignore k).
    pub fn pair_metric(&self, name: &str, k: usize) -> f64 {
        let (m, p) = (self.noise_minus[k], self.noise_plus[k]);
        match name {
            "delta_e_minus" => self.e_minus - m,
            "delta_e_plus" => self.e_plus - p,
            "delta_e_delta" => self.e_delta() - (m - p),
            other => self.metric(other),
        }
    }

    /// The values of a metric for this row in the statistical unit `unit`: one per noise
    /// map for δ metrics under [`NoiseUnit::Pair`], otherwise one.
    pub fn samples(&self, name: &str, unit: NoiseUnit) -> Vec<f64> {
        if unit == NoiseUnit::Pair && is_delta(name) && !self.noise_minus.is_empty() {
            (0..self.noise_minus.len())
                .map(|k| self.pair_metric(name, k))
                .collect()
        } else {
            vec![self.metric(name)]
        }
    }
}

/// Whether a metric compares with the noise baseline.
pub fn is_delta(name: &str) -> bool {
    name.starts_with("delta_")
}

pub const METRICS: [&str; 6] = [
    "e_minus",
    "e_plus",
    "e_delta",
    "delta_e_minus",
    "delta_e_plus",
    "delta_e_delta",
];
