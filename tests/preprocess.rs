//! Preprocessing as configured: `--size`/`--resize` (evaluate, survey, predict) and an ImageFolder's
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
/// on the same folder with the same preprocessing, and what `predict --data` prints (its
/// logits: the model's on the folder preprocessed so).
#[test]
fn recipe_resize_is_recorded_and_matches_survey_and_predict() {
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

    // predict on the labelled folder: the same preprocessing, in passes of 3 images.
    let logits_out = dir.path().join("predict.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .args(["predict", "--model"])
        .arg(&teacher)
        .arg("--data")
        .arg(dir.path().join("val"))
        .args(["--size", "32", "--resize", "32", "--batch", "3", "--out"])
        .arg(&logits_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let printed: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("top-1"))
        .and_then(|v| v.trim().trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("no top-1 line in: {text}"));
    assert!(
        (printed - 100.0 * teacher_top1).abs() < 0.01,
        "predict {printed}% vs run {teacher_top1}\n{text}"
    );
    let (saved, _) = zerobias::checkpoint::read_tensors(&logits_out, &Device::Cpu).unwrap();
    let labels: Vec<i64> = saved["labels"].to_vec1().unwrap();
    assert_eq!(labels, [0, 0, 0, 0, 1, 1, 1, 1]);
    let pre = Preprocess::new(Some(32), Some(32)).unwrap();
    let (batch, _) = load_data_dir_with(&dir.path().join("val"), 0, 0, pre, &Device::Cpu).unwrap();
    let model = zerobias::models::open(teacher.to_str().unwrap(), None, &Device::Cpu).unwrap();
    let expected: Vec<Vec<f32>> = model.forward(&batch.tensor).unwrap().to_vec2().unwrap();
    let got: Vec<Vec<f32>> = saved["logits"].to_vec2().unwrap();
    for (g, e) in got.iter().flatten().zip(expected.iter().flatten()) {
        assert!(
            (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
            "{got:?}\n{expected:?}"
        );
    }
}

/// A photo-like image: smooth colour gradients, sharp coloured edges (where chroma
/// subsampling and upsampling matter most) and fine noise. Odd sizes leave partial MCUs at
/// the right and bottom edges.
fn photo_like(w: u32, h: u32) -> image::RgbImage {
    let mut rng = Rng::new(5);
    image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let disc = ((fx - 0.6).powi(2) + (fy - 0.4).powi(2)) < 0.06;
        let stripe = (x / 7 + y / 11) % 3 == 0;
        let base = [
            200.0 * fx + 30.0 * (fy * 9.0).sin(),
            160.0 * fy + 40.0 * (fx * 13.0).cos(),
            120.0 + 100.0 * (fx * fy * 20.0).sin(),
        ];
        let mut px = [0u8; 3];
        for c in 0..3 {
            let mut v = base[c] + rng.below(17) as f32 - 8.0;
            if disc {
                v = [230.0, 40.0, 60.0][c];
            } else if stripe && fx < 0.3 {
                v = [20.0, 90.0, 240.0][c];
            }
            px[c] = v.clamp(0.0, 255.0) as u8;
        }
        image::Rgb(px)
    })
}

/// JPEG decoding equals PIL's (libjpeg-turbo: islow IDCT, fancy upsampling): every decoded
/// pixel, in every chroma subsampling, baseline and progressive, at sizes that are not a
/// multiple of 16. The `image` crate's decoder (zune-jpeg) was up to 12 levels off at the
/// edges of 4:2:0 files and 0.17 levels off on average (docs/preprocessing.md); the eval
/// crops of the same files match torchvision's too.
#[test]
fn jpeg_decoding_matches_pil() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.png");
    photo_like(133, 91).save(&src).unwrap();
    let jpegs = dir.path().join("data").join("c0");
    std::fs::create_dir_all(&jpegs).unwrap();
    match Command::new(python()).args(["-c", "import PIL"]).output() {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!(
                "skipping the PIL JPEG comparison: `{} -c \"import PIL\"` failed",
                python()
            );
            return;
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pil_jpeg_variants.py");
    let o = Command::new(python())
        .arg(script)
        .arg(&src)
        .arg(&jpegs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listing = String::from_utf8(o.stdout).unwrap();
    let mut files = Vec::new();
    for line in listing.lines() {
        let mut parts = line.split_whitespace();
        let (name, w, h) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let path = jpegs.join(name);
        let want = std::fs::read(format!("{}.rgb", path.display())).unwrap();
        let got = zerobias::data::decode_image_file(&path).unwrap().to_rgb8();
        assert_eq!(
            (got.width().to_string(), got.height().to_string()),
            (w.to_string(), h.to_string()),
            "{name}"
        );
        let diffs: Vec<i32> = got
            .as_raw()
            .iter()
            .zip(&want)
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .collect();
        let max = diffs.iter().copied().max().unwrap();
        let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
        assert!(
            max == 0,
            "{name}: decoded pixels differ from PIL's (max {max}, mean {mean:.4})"
        );
        // The .rgb files are not images: move them out of the folder read below.
        std::fs::rename(
            format!("{}.rgb", path.display()),
            dir.path().join(format!("{name}.rgb")),
        )
        .unwrap();
        files.push(path);
    }
    assert_eq!(files.len(), 19, "{listing}");
    // CMYK, whose conversion to RGB libjpeg leaves to the application, goes through the
    // `image` crate: close to PIL's own conversion, not equal.
    let cmyk = dir.path().join("cmyk.jpg");
    let o = Command::new(python())
        .args([
            "-c",
            "import sys; from PIL import Image; im = Image.open(sys.argv[1]).convert('CMYK'); \
             im.save(sys.argv[2], quality=90); \
             open(sys.argv[2] + '.rgb', 'wb').write(Image.open(sys.argv[2]).convert('RGB').tobytes())",
        ])
        .arg(&src)
        .arg(&cmyk)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = std::fs::read(format!("{}.rgb", cmyk.display())).unwrap();
    let got = zerobias::data::decode_image_file(&cmyk).unwrap().to_rgb8();
    assert_eq!(got.dimensions(), (133, 91));
    let max = got
        .as_raw()
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .max()
        .unwrap();
    assert!(max <= 2, "CMYK: max difference {max} from PIL");
    // The whole eval pipeline on these files: torchvision's crops, byte for byte.
    files.sort();
    let pre = Preprocess::new(Some(48), Some(56)).unwrap();
    let data = dir.path().join("data");
    let (batch, _) = load_data_dir_with(&data, 0, 0, pre, &Device::Cpu).unwrap();
    let want = reference(56, 48, &files).expect("PIL was importable above");
    for (i, w) in want.iter().enumerate() {
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
            zerobias::data::normalise_hwc(w, 48, 48),
            "{}",
            files[i].display()
        );
    }
}
