//! Training progress as stored in every checkpoint's metadata.

use serde::{Deserialize, Serialize};

/// Training progress stored in every checkpoint's metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    pub stage: usize,
    /// Steps done within the stage.
    pub stage_step: usize,
    /// Batch positions of the stage's data stream consumed (epoch × batches per epoch +
    /// batch index), counting batches left out because none of their images decoded, so
    /// that a resumed run continues with the same batch as an uninterrupted one.
    #[serde(default)]
    pub data_position: Option<usize>,
    pub global_step: usize,
    /// Rescales applied so far in a decay stage.
    pub rescales_done: usize,
    pub bias_scale: f64,
    pub adam_t: u64,
    pub seconds: f64,
    /// Times the first stage re-initialised the model after a chance plateau.
    #[serde(default)]
    pub restarts: usize,
    /// Sum of the training losses so far inside the stage's plateau window.
    #[serde(default)]
    pub plateau_loss: f64,
    /// Batches of this stage skipped for a non-finite loss or gradient.
    #[serde(default)]
    pub skipped_non_finite: usize,
    /// The same over all stages.
    #[serde(default)]
    pub skipped_non_finite_total: usize,
    /// Top-1s measured at each rescale so far (`decay_curve`), kept here so that a resumed
    /// run reports the whole curve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decay_curve: Vec<CurvePoint>,
}

/// One point of the decay curve (Supplementary Fig. 6), measured right after a rescale.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CurvePoint {
    pub stage: usize,
    /// Rescales of the stage done, this one included (1 = the first).
    pub rescale: usize,
    /// Global step after which the rescale happened.
    pub step: usize,
    /// Bias scale reached (0 on the last rescale).
    pub scale: f64,
    /// The stage's teacher with its biases set to `scale` times their values, untrained.
    pub teacher_scaled_top1: f64,
    /// The student, trained through the previous scales, with its biases just rescaled.
    pub student_top1: f64,
}

impl TrainState {
    /// Moves to the start of stage `stage`: its step count, data stream, rescales, bias
    /// scale and optimiser (fresh Adam moments need a fresh bias correction) start over.
    pub(super) fn begin_stage(&mut self, stage: usize) {
        self.stage = stage;
        self.stage_step = 0;
        self.data_position = Some(0);
        self.rescales_done = 0;
        self.bias_scale = 1.0;
        self.adam_t = 0;
        self.plateau_loss = 0.0;
        self.skipped_non_finite = 0;
        self.decay_curve.retain(|p| p.stage != stage);
    }
}

impl TrainState {
    pub(super) fn start() -> Self {
        TrainState {
            stage: 0,
            stage_step: 0,
            data_position: Some(0),
            global_step: 0,
            rescales_done: 0,
            bias_scale: 1.0,
            adam_t: 0,
            seconds: 0.0,
            restarts: 0,
            plateau_loss: 0.0,
            skipped_non_finite: 0,
            skipped_non_finite_total: 0,
            decay_curve: Vec::new(),
        }
    }
}
