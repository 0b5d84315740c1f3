//! VGG (torchvision layout, without BatchNorm): the convolution widths, the depth, the
//! hidden width and the class count are read from the weights.

use std::collections::HashMap;

use candle_core::Tensor;

use super::classifier::{check_input, Arch, Classifier, LayerInfo};
use crate::error::{Error, Result};
use crate::nn::{
    adaptive_avg_pool2d, max_pool2d, window_out_len, Act, Conv2d, Linear, Module, ParamStore, Post,
    WeightReader,
};
use crate::taps::Ctx;

/// One entry of torchvision's `features`, as in its configuration lists (VGG-16: 64, 64,
/// M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M).
enum Feature {
    /// A 3×3 convolution and its ReLU, whose output is a layer l of the paper.
    Conv(Conv2d),
    /// "M": a 2×2 max-pool, stride 2.
    MaxPool,
}

pub struct Vgg {
    features: Vec<Feature>,
    /// fc → ReLU → fc → ReLU → fc (dropout is the identity in eval mode; not modelled).
    classifier: [Linear; 3],
    layers: Vec<LayerInfo>,
    store: ParamStore,
    classes: usize,
}

impl Vgg {
    pub fn from_tensors(tensors: &HashMap<String, Tensor>, source: &str) -> Result<Self> {
        let mut idx: Vec<usize> = tensors
            .keys()
            .filter_map(|k| {
                k.strip_prefix("features.")?
                    .strip_suffix(".weight")?
                    .parse()
                    .ok()
            })
            .collect();
        idx.sort_unstable();
        if idx.first() != Some(&0) {
            return Err(Error::Checkpoint {
                path: source.into(),
                message: "missing key 'features.0.weight' (VGG's first convolution)".into(),
            });
        }
        // torchvision: conv at i, ReLU at i+1, then either the next conv at i+2 or a
        // pool at i+2 and the next conv at i+3; a pool always follows the last conv.
        let mut r = WeightReader::new(tensors, source);
        let mut features = Vec::new();
        let mut layers = Vec::new();
        let mut in_c = 3;
        for (j, &i) in idx.iter().enumerate() {
            let relu = Act::new(j + 1, format!("features.{}", i + 1));
            let conv = r
                .conv(&format!("features.{i}"), in_c, 1, 1)?
                .then(Post::TappedRelu(relu.clone()));
            let next = idx.get(j + 1).copied();
            let pool = match next {
                None => true,
                Some(n) if n == i + 3 => true,
                Some(n) if n == i + 2 => false,
                Some(n) => {
                    return Err(Error::Checkpoint {
                        path: source.into(),
                        message: format!("features.{n} follows features.{i}: not a torchvision VGG layout (expected index {} or {})", i + 2, i + 3),
                    })
                }
            };
            in_c = conv.out_channels();
            layers.push(LayerInfo {
                index: relu.layer,
                name: relu.name,
                channels: in_c,
            });
            features.push(Feature::Conv(conv));
            if pool {
                features.push(Feature::MaxPool);
            }
        }
        // The adaptive pool to 7×7 flattens into the first fc.
        let c0 = r.linear("classifier.0", in_c * 49)?.then(Post::Relu);
        let c3 = r
            .linear("classifier.3", c0.out_features())?
            .then(Post::Relu);
        let c6 = r.linear("classifier.6", c3.out_features())?;
        let classes = c6.out_features();
        let store = r.finish()?;
        Ok(Self {
            features,
            classifier: [c0, c3, c6],
            layers,
            store,
            classes,
        })
    }
}

impl Vgg {
    fn convs(&self) -> impl Iterator<Item = &Conv2d> {
        self.features.iter().filter_map(|f| match f {
            Feature::Conv(conv) => Some(conv),
            Feature::MaxPool => None,
        })
    }
}

impl Classifier for Vgg {
    fn name(&self) -> String {
        format!("vgg{}", self.layers.len() + 3)
    }
    fn arch(&self) -> Arch {
        Arch::Vgg
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }
    fn params(&self) -> &ParamStore {
        &self.store
    }
    fn is_linear(&self, name: &str) -> bool {
        name.starts_with("classifier.")
    }
    fn bias_modules(&self) -> Vec<(String, usize)> {
        let l = self.layers.len();
        self.convs()
            .enumerate()
            .filter(|(_, c)| c.bias.is_some())
            .map(|(j, c)| (c.name.clone(), j + 1))
            .chain(
                self.classifier
                    .iter()
                    .filter(|c| c.bias.is_some())
                    .map(|c| (c.name.clone(), l + 1)),
            )
            .collect()
    }

    fn layer_lens(&self, len: usize, axis: usize) -> Option<Vec<usize>> {
        let mut out = Vec::with_capacity(self.layers.len());
        let mut len = len;
        for f in &self.features {
            match f {
                Feature::Conv(conv) => {
                    len = conv.out_len(len, axis)?;
                    // The activation of layer l is taken after the ReLU, before the pool.
                    out.push(len);
                }
                Feature::MaxPool => len = window_out_len(len, 2, 2, 0)?,
            }
        }
        Some(out)
    }

    fn forward_ctx(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        check_input(x, self)?;
        let mut h = x.clone();
        let mut l = 0;
        for f in &self.features {
            match f {
                Feature::Conv(conv) => {
                    l += 1;
                    ctx.layer = l;
                    h = conv.forward(&h, ctx)?;
                }
                Feature::MaxPool => h = max_pool2d(&h, 2, 2, 0, ctx)?,
            }
        }
        ctx.layer = self.layers.len() + 1;
        let mut h = adaptive_avg_pool2d(&h, 7, 7)?.flatten_from(1)?;
        for fc in &self.classifier {
            h = fc.forward(&h, ctx)?;
        }
        Ok(h)
    }
}
