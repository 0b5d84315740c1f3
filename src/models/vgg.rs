//! VGG (torchvision layout, without BatchNorm): the convolution widths, the depth, the
//! hidden width and the class count are read from the weights.

use std::collections::HashMap;

use candle_core::Tensor;

use super::layers::{
    adaptive_avg_pool2d, max_pool2d, relu, window_out_len, Conv2d, Linear, WeightReader,
};
use super::{Arch, Classifier, Ctx, LayerInfo, ParamStore};
use crate::error::{Error, Result};

pub struct Vgg {
    convs: Vec<Conv2d>,
    /// pool_after[i]: a 2×2 max-pool follows conv i.
    pool_after: Vec<bool>,
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
        let mut convs = Vec::new();
        let mut pool_after = Vec::new();
        let mut layers = Vec::new();
        let mut in_c = 3;
        for (j, &i) in idx.iter().enumerate() {
            let conv = r.conv(&format!("features.{i}"), in_c, 1, 1)?;
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
                index: j + 1,
                name: format!("features.{}", i + 1),
                channels: in_c,
            });
            convs.push(conv);
            pool_after.push(pool);
        }
        let fc0_in = in_c * 49;
        let c0 = r.linear("classifier.0", fc0_in)?;
        let h0 = c0.weight.dims()[0];
        let c3 = r.linear("classifier.3", h0)?;
        let h1 = c3.weight.dims()[0];
        let c6 = r.linear("classifier.6", h1)?;
        let classes = c6.weight.dims()[0];
        let store = r.finish()?;
        Ok(Self {
            convs,
            pool_after,
            classifier: [c0, c3, c6],
            layers,
            store,
            classes,
        })
    }
}

impl Classifier for Vgg {
    fn name(&self) -> String {
        format!("vgg{}", self.convs.len() + 3)
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
        self.convs
            .iter()
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
        let mut out = Vec::with_capacity(self.convs.len());
        let mut len = len;
        for (conv, &pool) in self.convs.iter().zip(&self.pool_after) {
            len = conv.out_len(len, axis)?;
            // The activation of layer l is taken after the ReLU, before the pool.
            out.push(len);
            if pool {
                len = window_out_len(len, 2, 2, 0)?;
            }
        }
        Some(out)
    }

    fn forward_ctx(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        check_input(x, self)?;
        let mut h = x.clone();
        for (j, conv) in self.convs.iter().enumerate() {
            ctx.layer = j + 1;
            h = conv.forward_relu_tapped(&h, ctx, j + 1, &self.layers[j].name)?;
            if self.pool_after[j] {
                h = max_pool2d(&h, 2, 2, 0, ctx)?;
            }
        }
        ctx.layer = self.layers.len() + 1;
        let h = adaptive_avg_pool2d(&h, 7, 7)?;
        let h = h.flatten_from(1)?;
        // Dropout is the identity in eval mode; it is not modelled.
        let h = relu(&self.classifier[0].forward(&h, ctx)?, ctx)?;
        let h = relu(&self.classifier[1].forward(&h, ctx)?, ctx)?;
        self.classifier[2].forward(&h, ctx)
    }
}

pub(crate) fn check_input(x: &Tensor, model: &dyn Classifier) -> Result<()> {
    match x.dims() {
        [_, 3, h, w] => super::check_input_size(model, *h, *w),
        d => Err(Error::Shape {
            what: "model input".into(),
            expected: "[N, 3, H, W]".into(),
            got: format!("{d:?}"),
        }),
    }
}
