//! One row per model × image × method of the flip metric, and the metrics derived from it.

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
    pub e_minus_noise: f64,
    pub e_plus_noise: f64,
    pub forwards: usize,
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
}

pub const METRICS: [&str; 6] = [
    "e_minus",
    "e_plus",
    "e_delta",
    "delta_e_minus",
    "delta_e_plus",
    "delta_e_delta",
];
