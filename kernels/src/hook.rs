//! Where an op stores the gradient arriving at its output, so that a caller can read the
//! gradient at a hidden tensor (candle drops the gradients of non-`Var` nodes). The kernels
//! know nothing of what the gradient is for; attribution's taps wrap these types.

use std::cell::Cell;
use std::sync::{Arc, Mutex};

use candle_core::Tensor;

/// A shared cell that an op fills with its output gradient during backward.
#[derive(Clone, Default)]
pub struct GradSlot(Arc<Mutex<Option<Tensor>>>);

impl GradSlot {
    /// Stores `grad` (the op calls this during backward).
    pub fn store(&self, grad: &Tensor) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(grad.clone());
        }
    }
    /// The stored gradient, if backward reached the op.
    pub fn get(&self) -> Option<Tensor> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
}

/// Offered to an op before it is built. An op that can store its output gradient itself
/// [`attach`](GradHook::attach)es the slot (the gradient then costs nothing); otherwise the
/// caller learns from [`GradHook::attached`] that it must obtain the gradient another way
/// (a zero `Var` added to the output). The default hook records nothing.
#[derive(Default)]
pub struct GradHook {
    slot: Option<GradSlot>,
    attached: Cell<bool>,
}

impl GradHook {
    /// A hook that records (`true`) or a no-op one.
    pub fn new(recording: bool) -> Self {
        GradHook {
            slot: recording.then(GradSlot::default),
            attached: Default::default(),
        }
    }
    /// For an op that will store its output gradient: the slot to store it in (None when
    /// nothing is being recorded).
    pub fn attach(&self) -> Option<GradSlot> {
        let slot = self.slot.clone()?;
        self.attached.set(true);
        Some(slot)
    }
    /// The slot, when an op attached it (and will fill it during backward).
    pub fn attached(self) -> Option<GradSlot> {
        self.slot.filter(|_| self.attached.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_attached_recording_hook_yields_its_slot() {
        assert!(GradHook::default().attach().is_none());
        assert!(GradHook::new(true).attached().is_none());
        let hook = GradHook::new(true);
        let slot = hook.attach().unwrap();
        let t = Tensor::new(&[1f32, 2.0], &candle_core::Device::Cpu).unwrap();
        slot.store(&t);
        let back = hook.attached().unwrap().get().unwrap();
        assert_eq!(back.to_vec1::<f32>().unwrap(), [1.0, 2.0]);
    }
}
