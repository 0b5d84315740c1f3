//! Preprocessing as configured: `--size`/`--resize` (evaluate, survey) and an ImageFolder's
//! `resize`/`augment` follow torchvision's Resize(resize) + CenterCrop(size), checked
//! against PIL (what torchvision calls on PIL images; skipped with a message when python3
//! cannot import PIL; `ZEROBIAS_PYTHON` picks another interpreter).

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use zerobias::data::{Augment, Dataset, ImageFolder, Rng};
use zerobias::inputs::{load_data_dir_with, Preprocess};

/// (width, height) of the test images: square at the trained size, longer side larger,
/// and a real downscale.
const SIZES: [(u32, u32); 4] = [(64, 64), (80, 64), (64, 90), (100, 120)];

fn folder(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut rng = Rng::new(21);
    for (k, (w, h)) in SIZES.iter().enumerate() {
        let class = root.join(format!("c{}", k % 2));
        std::fs::create_dir_all(&class).unwrap();
        let img = image::RgbImage::from_fn(*w, *h, |x, y| {
            let n = rng.below(40) as u32;
            image::Rgb([
                ((x * 3 + n) % 256) as u8,
                ((y * 5 + n) % 256) as u8,
                ((x * y + n) % 256) as u8,
            ])
        });
        let p = class.join(format!("img{k}.png"));
        img.save(&p).unwrap();
        files.push(p);
    }
    files
}

fn python() -> String {
    std::env::var("ZEROBIAS_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// torchvision's crops of `files` (RGB8 HWC), or None without PIL.
fn reference(resize: u32, crop: u32, files: &[PathBuf]) -> Option<Vec<Vec<u8>>> {
    match Command::new(python()).args(["-c", "import PIL"]).output() {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!(
                "skipping the PIL comparison: `{} -c \"import PIL\"` failed",
                python()
            );
            return None;
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/torchvision_eval_crop.py");
    let o = Command::new(python())
        .arg(script)
        .arg(resize.to_string())
        .arg(crop.to_string())
        .args(files)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    Some(
        text.lines()
            .map(|l| {
                (0..l.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                    .collect()
            })
            .collect(),
    )
}

#[test]
fn data_dir_crops_match_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    let files = folder(dir.path());
    for (resize, crop) in [(Some(64), 64), (None, 64), (Some(70), 48)] {
        let pre = Preprocess::new(Some(crop), resize).unwrap();
        let (batch, labels) = load_data_dir_with(dir.path(), 0, 0, pre, &Device::Cpu).unwrap();
        assert_eq!(batch.tensor.dims(), [4, 3, crop as usize, crop as usize]);
        assert_eq!(labels.unwrap().len(), 4);
        // ImageFolder order: c0/img0, c0/img2, c1/img1, c1/img3.
        let order = [0, 2, 1, 3];
        let ordered: Vec<PathBuf> = order.iter().map(|&i| files[i].clone()).collect();
        // The shorter side already at 64 is left as it is: the crop is raw pixels.
        if resize == Some(64) {
            for (i, &k) in order.iter().enumerate() {
                if SIZES[k].0.min(SIZES[k].1) != 64 {
                    continue;
                }
                let rgb = image::open(&files[k]).unwrap().to_rgb8();
                let (w, h) = rgb.dimensions();
                let (l, t) = ((w - 64) / 2, (h - 64) / 2);
                let mut raw = Vec::new();
                for y in t..t + 64 {
                    for x in l..l + 64 {
                        raw.extend_from_slice(&rgb.get_pixel(x, y).0);
                    }
                }
                let got: Vec<f32> = batch
                    .tensor
                    .get(i)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_eq!(
                    got,
                    zerobias::data::normalise_hwc(&raw, 64, 64),
                    "image {k}"
                );
            }
        }
        let Some(want) = reference(pre.resize, crop, &ordered) else {
            continue;
        };
        for (i, w) in want.iter().enumerate() {
            let got: Vec<f32> = batch
                .tensor
                .get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let want = zerobias::data::normalise_hwc(w, crop as usize, crop as usize);
            assert_eq!(
                got,
                want,
                "resize {:?} crop {crop}: image {}",
                pre.resize,
                ordered[i].display()
            );
        }
    }
    assert_eq!(Preprocess::new(Some(64), None).unwrap().resize, 73);
    assert_eq!(Preprocess::new(None, None).unwrap(), Preprocess::default());
}

#[test]
fn image_folder_training_follows_resize_and_augment() {
    let dir = tempfile::tempdir().unwrap();
    let _ = folder(dir.path());
    let plain = ImageFolder::open(dir.path(), 64).unwrap();
    let none = ImageFolder::open(dir.path(), 64)
        .unwrap()
        .with_preprocessing(64, Augment::None)
        .unwrap();
    let pre = Preprocess::new(Some(64), Some(64)).unwrap();
    let (batch, _) = load_data_dir_with(dir.path(), 0, 0, pre, &Device::Cpu).unwrap();
    for i in 0..none.len() {
        let want: Vec<f32> = batch
            .tensor
            .get(i)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // Training and validation with augment = "none" are the eval pipeline.
        assert_eq!(none.get(i, true, &mut Rng::new(1)).unwrap().pixels, want);
        assert_eq!(none.get(i, false, &mut Rng::new(1)).unwrap().pixels, want);
    }
    // The default stays torchvision's ImageNet pipeline: resize 73 for eval, and a random
    // resized crop in training.
    assert_eq!(plain.eval_resize(), 73);
    assert_ne!(
        plain.get(3, true, &mut Rng::new(1)).unwrap().pixels,
        plain.get(3, false, &mut Rng::new(1)).unwrap().pixels
    );
    assert!(ImageFolder::open(dir.path(), 64)
        .unwrap()
        .with_preprocessing(0, Augment::None)
        .is_err());
}

#[test]
fn resize_zero_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _ = folder(&data);
    let o = Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .args(["survey", "--model", "none.safetensors", "--data"])
        .arg(&data)
        .args(["--resize", "0", "--out"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--resize 0"), "{err}");
}

/// A recipe's `data.resize`/`data.augment` reach the run: recorded in its recipe.toml, and
/// the teacher's top-1 on the validation folder is what `survey --size --resize` measures
/// on the same folder with the same preprocessing.
#[test]
fn recipe_resize_is_recorded_and_matches_survey() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(8);
    for split in ["train", "val"] {
        for class in ["a", "b"] {
            let d = dir.path().join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for k in 0..4 {
                // Larger than the crop and not square, so the resize step matters.
                let img = image::RgbImage::from_fn(40, 48, |_, _| {
                    image::Rgb([
                        rng.below(256) as u8,
                        rng.below(256) as u8,
                        rng.below(256) as u8,
                    ])
                });
                img.save(d.join(format!("{k}.png"))).unwrap();
            }
        }
    }
    let t = zerobias::models::init::vgg16(2, 8, 2, 1, &Device::Cpu).unwrap();
    let mut named: Vec<(String, candle_core::Tensor)> = t.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let teacher = dir.path().join("teacher.safetensors");
    zerobias::checkpoint::save(&teacher, &named, Default::default()).unwrap();
    let recipe = format!(
        r#"
name = "resize"
seed = 1
[model]
source = "{}"
[data]
kind = "imagefolder"
train = "{}"
val = "{}"
size = 32
resize = 32
augment = "none"
prefetch = 1
[[stage]]
kind = "decay"
schedule = "linear"
rescales = 1
rescale_every = 1
zero_steps = 1
lr = 1e-4
batch_size = 4
"#,
        teacher.display(),
        dir.path().join("train").display(),
        dir.path().join("val").display()
    );
    let rp = dir.path().join("r.toml");
    std::fs::write(&rp, recipe).unwrap();
    let run_dir = dir.path().join("run");
    let o = Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .arg("decay")
        .arg(&rp)
        .arg("--run-dir")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let recorded = std::fs::read_to_string(run_dir.join("recipe.toml")).unwrap();
    assert!(
        recorded.contains("resize = 32") && recorded.contains("augment = \"none\""),
        "{recorded}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    let teacher_top1 = summary["teacher_top1"].as_f64().unwrap();

    let out = dir.path().join("survey");
    let o = Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .args(["survey", "--model"])
        .arg(&teacher)
        .arg("--data")
        .arg(dir.path().join("val"))
        .args(["--size", "32", "--resize", "32", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let acc = std::fs::read_to_string(out.join("accuracy.csv")).unwrap();
    let vanilla: f64 = acc
        .lines()
        .find(|l| l.contains(",vanilla,"))
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (vanilla - teacher_top1).abs() < 1e-6,
        "survey {vanilla} vs run {teacher_top1}\n{acc}"
    );
}
