//! ResNet v1.5 with bottleneck blocks (ResNet-50/101/152 layouts): stage depths, widths and
//! the class count are read from the weights; the stride sits in each stage's first 3×3.

use std::collections::HashMap;

use candle_core::Tensor;

use super::classifier::{check_input, Arch, Classifier, LayerInfo};
use crate::error::{Error, Result};
use crate::nn::{
    global_avg_pool, max_pool2d, window_out_len, Act, BatchNorm, BnAddRelu, Conv2d, Linear, Module,
    ParamStore, Post, Residual, WeightReader,
};
use crate::taps::Ctx;

/// torchvision's bottleneck (v1.5): 1×1 → 3×3 (the stride) → 1×1 ×4 channels, each
/// convolution followed by BatchNorm; ReLU after bn1 and bn2, and after bn3 plus the
/// shortcut. The block's output is a layer l of the paper.
struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Conv2d,
    bn3: BnAddRelu,
    downsample: Option<Downsample>,
}

impl Bottleneck {
    /// Block `p` (`layer{stage}.{i}`) taking `in_c` channels, whose output is layer `l`.
    fn read(r: &mut WeightReader, p: &str, in_c: usize, stride: usize, l: usize) -> Result<Self> {
        let conv1 = r.conv(&format!("{p}.conv1"), in_c, 1, 0)?;
        let width = conv1.out_channels();
        let bn1 = r.batch_norm(&format!("{p}.bn1"), width)?.then(Post::Relu);
        let conv2 = r.conv(&format!("{p}.conv2"), width, stride, 1)?;
        let bn2 = r
            .batch_norm(&format!("{p}.bn2"), conv2.out_channels())?
            .then(Post::Relu);
        let conv3 = r.conv(&format!("{p}.conv3"), conv2.out_channels(), 1, 0)?;
        let out_c = conv3.out_channels();
        let bn3 = r.batch_norm(&format!("{p}.bn3"), out_c)?;
        let bn3 = BnAddRelu::new(bn3, Act::new(l, p));
        let downsample = if r.has(&format!("{p}.downsample.0.weight")) {
            let conv = r.conv(&format!("{p}.downsample.0"), in_c, stride, 0)?;
            let bn = r.batch_norm(&format!("{p}.downsample.1"), conv.out_channels())?;
            Some(Downsample { conv, bn })
        } else {
            if in_c != out_c || stride != 1 {
                return Err(Error::Checkpoint {
                    path: r.source.clone().into(),
                    message: format!("missing key '{p}.downsample.0.weight' (block changes shape {in_c}->{out_c}, stride {stride})"),
                });
            }
            None
        };
        Ok(Bottleneck {
            conv1,
            bn1,
            conv2,
            bn2,
            conv3,
            bn3,
            downsample,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let h = self.conv1.forward(x, ctx)?;
        let h = self.bn1.forward(&h, ctx)?;
        let h = self.conv2.forward(&h, ctx)?;
        let h = self.bn2.forward(&h, ctx)?;
        let h = self.conv3.forward(&h, ctx)?;
        let residual = Residual {
            main: &h,
            shortcut: x,
            downsample: self.downsample.as_ref().map(|d| d as &dyn Module),
        };
        self.bn3.forward(residual, ctx)
    }
}

/// The shortcut's projection where a block changes shape: 1×1 convolution (with the
/// block's stride), then BatchNorm.
struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

impl Module for Downsample {
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let h = self.conv.forward(x, ctx)?;
        self.bn.forward(&h, ctx)
    }
}

pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    blocks: Vec<Bottleneck>,
    fc: Linear,
    layers: Vec<LayerInfo>,
    store: ParamStore,
    classes: usize,
}

impl ResNet {
    pub fn from_tensors(tensors: &HashMap<String, Tensor>, source: &str) -> Result<Self> {
        let mut r = WeightReader::new(tensors, source);
        if tensors.contains_key("layer1.0.conv3.weight") {
        } else if tensors.contains_key("layer1.0.conv2.weight") {
            return Err(Error::Checkpoint {
                path: source.into(),
                message: "ResNet with basic blocks (ResNet-18/34) is not supported: expected bottleneck blocks (layer1.0.conv3.weight)".into(),
            });
        }
        let conv1 = r.conv("conv1", 3, 2, 3)?;
        let stem = conv1.out_channels();
        let relu = Act::new(1, "relu");
        let bn1 = r
            .batch_norm("bn1", stem)?
            .then(Post::TappedRelu(relu.clone()));
        let mut layers = vec![LayerInfo {
            index: relu.layer,
            name: relu.name,
            channels: stem,
        }];
        let mut blocks = Vec::new();
        let mut in_c = stem;
        for stage in 1..=4 {
            let depth = (0..)
                .take_while(|i| tensors.contains_key(&format!("layer{stage}.{i}.conv1.weight")))
                .count();
            if depth == 0 {
                return Err(Error::Checkpoint {
                    path: source.into(),
                    message: format!(
                        "missing key 'layer{stage}.0.conv1.weight' (ResNet stage {stage})"
                    ),
                });
            }
            for i in 0..depth {
                let p = format!("layer{stage}.{i}");
                let stride = if stage > 1 && i == 0 { 2 } else { 1 };
                let block = Bottleneck::read(&mut r, &p, in_c, stride, layers.len() + 1)?;
                let out_c = block.conv3.out_channels();
                blocks.push(block);
                layers.push(LayerInfo {
                    index: layers.len() + 1,
                    name: p,
                    channels: out_c,
                });
                in_c = out_c;
            }
        }
        let fc = r.linear("fc", in_c)?;
        let classes = fc.out_features();
        let store = r.finish()?;
        Ok(Self {
            conv1,
            bn1,
            blocks,
            fc,
            layers,
            store,
            classes,
        })
    }
}

impl Classifier for ResNet {
    fn name(&self) -> String {
        format!("resnet{}", 3 * self.blocks.len() + 2)
    }
    fn arch(&self) -> Arch {
        Arch::ResNet
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
        name.starts_with("fc.")
    }
    fn bias_modules(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let conv = |c: &Conv2d, l: usize, out: &mut Vec<(String, usize)>| {
            if c.bias.is_some() {
                out.push((c.name.clone(), l));
            }
        };
        conv(&self.conv1, 1, &mut out);
        out.push(("bn1".into(), 1));
        for (i, b) in self.blocks.iter().enumerate() {
            let l = i + 2;
            for (c, bn) in [
                (&b.conv1, &b.bn1),
                (&b.conv2, &b.bn2),
                (&b.conv3, b.bn3.bn()),
            ] {
                conv(c, l, &mut out);
                out.push((bn.name.clone(), l));
            }
            if let Some(Downsample { conv: c, bn }) = &b.downsample {
                conv(c, l, &mut out);
                out.push((bn.name.clone(), l));
            }
        }
        if self.fc.bias.is_some() {
            out.push(("fc".into(), self.layers.len() + 1));
        }
        out
    }

    fn layer_lens(&self, len: usize, axis: usize) -> Option<Vec<usize>> {
        let mut len = self.conv1.out_len(len, axis)?;
        let mut out = vec![len];
        len = window_out_len(len, 3, 2, 1)?;
        for b in &self.blocks {
            // conv1 and conv3 are 1×1; the stride sits in conv2 (and the shortcut).
            let main = b
                .conv3
                .out_len(b.conv2.out_len(b.conv1.out_len(len, axis)?, axis)?, axis)?;
            if let Some(Downsample { conv, .. }) = &b.downsample {
                if conv.out_len(len, axis)? != main {
                    return None;
                }
            }
            len = main;
            out.push(len);
        }
        Some(out)
    }

    fn forward_ctx(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        check_input(x, self)?;
        ctx.layer = 1;
        let h = self.conv1.forward(x, ctx)?;
        let h = self.bn1.forward(&h, ctx)?;
        let mut h = max_pool2d(&h, 3, 2, 1, ctx)?;
        for (i, block) in self.blocks.iter().enumerate() {
            ctx.layer = i + 2;
            h = block.forward(&h, ctx)?;
        }
        ctx.layer = self.layers.len() + 1;
        let h = global_avg_pool(&h)?;
        self.fc.forward(&h, ctx)
    }
}
