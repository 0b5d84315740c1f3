//! The interface every attribution method implements, and the named maps it writes.

use candle_core::Tensor;

use crate::error::Result;
use crate::models::Classifier;
use crate::taps::Recorded;

/// Named maps in a fixed order: `act.{l}`, `bias.{module}`, `grad`, `gradcam`, ...
#[derive(Default, Clone)]
pub struct Maps {
    entries: Vec<(String, Tensor)>,
}

impl Maps {
    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        let name = name.into();
        match self.entries.iter_mut().find(|(k, _)| *k == name) {
            Some(e) => e.1 = t,
            None => self.entries.push((name, t)),
        }
    }
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
    pub fn iter(&self) -> impl Iterator<Item = &(String, Tensor)> {
        self.entries.iter()
    }
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|(k, _)| k.clone()).collect()
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn into_vec(self) -> Vec<(String, Tensor)> {
        self.entries
    }
}

/// One attribution method: reads the recording, writes its maps.
pub trait Method {
    /// Names of the maps this method produces for `model`.
    fn outputs(&self, model: &dyn Classifier) -> Vec<String>;
    fn compute(&self, rec: &Recorded, out: &mut Maps) -> Result<()>;
}
