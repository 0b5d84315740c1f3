//! Per-image figures of `attribute --png`: the Fig. 2/4-style panel of signed a^{h,l} and
//! a^{b,l} per layer, and saliency overlays on the image.

use std::path::Path;

use candle_core::Tensor;

use super::plot::{saliency_overlays, save_png, signed_panel, Map2, PanelRow};
use crate::attribution::Attribution;
use crate::data::{IMAGENET_MEAN, IMAGENET_STD};
use crate::error::{Error, Result};
use crate::models::Classifier;

fn map2(t: &Tensor) -> Result<Map2> {
    let (h, w) = t.dims2()?;
    Ok(Map2 {
        height: h,
        width: w,
        data: t.flatten_all()?.to_vec1()?,
    })
}

/// Sum-pool a [H, W] map by integer factors down to (h, w), preserving its total.
fn sum_pool(t: &Tensor, h: usize, w: usize) -> Result<Option<Tensor>> {
    let (mh, mw) = t.dims2()?;
    if mh == h && mw == w {
        return Ok(Some(t.clone()));
    }
    if h == 0 || w == 0 || mh % h != 0 || mw % w != 0 {
        return Ok(None);
    }
    let (fh, fw) = (mh / h, mw / w);
    Ok(Some(t.reshape((h, fh, w, fw))?.sum(3)?.sum(1)?))
}

/// The image behind a normalised [3, H, W] input, as HWC bytes.
pub fn denormalise(x: &Tensor) -> Result<(Vec<u8>, u32, u32)> {
    let (c, h, w) = x.dims3()?;
    if c != 3 {
        return Err(Error::input(format!(
            "expected a 3-channel image, got {c} channels"
        )));
    }
    let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let mut rgb = vec![0u8; h * w * 3];
    for ch in 0..3 {
        for i in 0..h * w {
            let val = (v[ch * h * w + i] * IMAGENET_STD[ch] + IMAGENET_MEAN[ch]) * 255.0;
            rgb[i * 3 + ch] = val.round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok((rgb, w as u32, h as u32))
}

/// The Fig. 2/4-style panel of image `i` of a batch: signed a^{h,l} and a^{b,l} per layer,
/// from l = 0 (input attributions; no bias there, so its a^b cell is empty).
pub fn layer_panel(
    model: &dyn Classifier,
    att: &Attribution,
    i: usize,
    title: &str,
) -> Result<image::RgbImage> {
    let layers = model.num_layers();
    let modules = model.bias_modules();
    let mut act_row = Vec::new();
    let mut bias_row = Vec::new();
    for l in 0..=layers {
        let Some(a) = att.maps.get(&format!("act.{l}")) else {
            continue;
        };
        let a = a.get(i)?;
        let (h, w) = a.dims2()?;
        act_row.push((format!("l={l}"), map2(&a)?));
        let mut b = Tensor::zeros((h, w), candle_core::DType::F32, a.device())?;
        // A layer without bias modules (the input) has no a^b: its cell says so.
        let mut has_bias = false;
        for (m, _) in modules.iter().filter(|(_, ml)| *ml == l) {
            if let Some(t) = att.maps.get(&format!("bias.{m}")) {
                if t.rank() == 3 {
                    if let Some(p) = sum_pool(&t.get(i)?, h, w)? {
                        b = (b + p)?;
                        has_bias = true;
                    }
                }
            }
        }
        let name = if has_bias {
            format!("l={l}")
        } else {
            format!("l={l}: none")
        };
        bias_row.push((name, map2(&b)?));
    }
    let rows = [
        PanelRow {
            label: "a^h".into(),
            cells: act_row,
        },
        PanelRow {
            label: "a^b".into(),
            cells: bias_row,
        },
    ];
    Ok(signed_panel(&rows, 96, title)?)
}

/// Fig. 2/4 panels and Fig. 7 saliency overlays of every image of `x` into `dir`, titled
/// with `label` (the model's name in a report, its architecture otherwise).
pub fn attribution_figures(
    model: &dyn Classifier,
    label: &str,
    x: &Tensor,
    att: &Attribution,
    offset: usize,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let n = x.dim(0)?;
    let layers = model.num_layers();
    for i in 0..n {
        let idx = offset + i;
        let title = format!("{label} image {idx}, class {}", att.target[i]);
        let panel = layer_panel(model, att, i, &title)?;
        save_png(&panel, &dir.join(format!("image-{idx:04}-layers.png")))?;

        let (rgb, w, h) = denormalise(&x.get(i)?)?;
        let mut maps = Vec::new();
        for name in [
            "act.0".to_string(),
            "grad".into(),
            "fullgrad".into(),
            "gradcam".into(),
            "agg.1".into(),
            format!("agg.{}", layers.saturating_sub(1).max(1)),
        ] {
            if let Some(t) = att.maps.get(&name) {
                let m = crate::attribution::upsample(
                    &t.get(i)?.unsqueeze(0)?,
                    h as usize,
                    w as usize,
                    false,
                )?
                .squeeze(0)?;
                maps.push((name, map2(&m)?));
            }
        }
        let overlay = saliency_overlays(&rgb, w, h, &maps)?;
        save_png(&overlay, &dir.join(format!("image-{idx:04}-saliency.png")))?;
    }
    Ok(())
}
