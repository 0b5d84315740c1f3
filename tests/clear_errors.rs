//! Issue #20, unclear errors: each bad input ends with a non-zero exit and a message that
//! names the thing and what was expected, before any output is written; files of the user's
//! are left as they were.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use zerobias::models::{self, Ctx};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zerobias"))
}

/// Run and return (exit code, stderr); asserts no panic.
fn run(args: &[&str]) -> (i32, String) {
    let out = bin()
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    (out.status.code().unwrap_or(-1), err)
}

/// Every file under `dir` with its bytes, to show that a failed command changed nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), Vec::new());
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The command fails (non-zero exit), its stderr holds every needle, and nothing under
/// `dir` changed (no file written, removed or modified, no directory created).
fn expect_error(dir: &Path, args: &[&str], needles: &[&str]) -> String {
    let before = snapshot(dir);
    let (code, err) = run(args);
    assert_ne!(code, 0, "{args:?} succeeded: {err}");
    assert!(err.trim_start().starts_with("error"), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: '{n}' not in: {err}");
    }
    let after = snapshot(dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "{args:?} changed the files"
    );
    assert!(before == after, "{args:?} modified a file");
    err
}

fn save(path: &Path, tensors: HashMapLike) {
    let mut named: Vec<(String, Tensor)> = tensors.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    zerobias::checkpoint::save(path, &named, Default::default()).unwrap();
}

type HashMapLike = std::collections::HashMap<String, Tensor>;

fn vgg_file(dir: &Path, name: &str, classes: usize) -> PathBuf {
    let p = dir.join(name);
    save(
        &p,
        models::init::vgg16(2, 8, classes, 1, &Device::Cpu).unwrap(),
    );
    p
}

fn input_file(dir: &Path, name: &str, n: usize, side: usize) -> PathBuf {
    let p = dir.join(name);
    let x = Tensor::zeros((n, 3, side, side), DType::F32, &Device::Cpu).unwrap();
    zerobias::checkpoint::save(&p, &[("input".into(), x)], Default::default()).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const RECIPE: &str = r#"name = "t"
[model]
source = "new"
arch = "vgg16"
width = 2
hidden = 8
[data]
kind = "synthetic"
size = 32
train_len = 8
val_len = 4
[[stage]]
kind = "train"
steps = 2
lr = 1e-3
batch_size = 2
"#;

#[test]
fn toml_syntax_error_has_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, RECIPE.replace("steps = 2", "steps = = 2")).unwrap();
    let run_dir = dir.path().join("run");
    expect_error(
        dir.path(),
        &["decay", s(&recipe), "--run-dir", s(&run_dir)],
        &["r.toml", "invalid TOML at line 14, column 9"],
    );
}

#[test]
fn type_errors_name_the_field_and_the_set_override() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.toml");
    let run_dir = dir.path().join("run");
    std::fs::write(&recipe, RECIPE.replace("steps = 2", "steps = \"many\"")).unwrap();
    let err = expect_error(
        dir.path(),
        &["decay", s(&recipe), "--run-dir", s(&run_dir)],
        &["stage.0.steps: expected a positive integer, got \"many\""],
    );
    assert!(!err.contains("--set"), "{err}");

    std::fs::write(&recipe, RECIPE).unwrap();
    expect_error(
        dir.path(),
        &[
            "decay",
            s(&recipe),
            "--run-dir",
            s(&run_dir),
            "--set",
            "stage.0.steps=many",
        ],
        &[
            "stage.0.steps: expected a positive integer, got \"many\"",
            "(from --set stage.0.steps=many)",
        ],
    );
    expect_error(
        dir.path(),
        &[
            "decay",
            s(&recipe),
            "--run-dir",
            s(&run_dir),
            "--set",
            "stage.0.cosine=3",
        ],
        &["stage.0.cosine: expected true or false, got 3", "--set"],
    );
    // Values that parse but fail validation say where they came from too.
    expect_error(
        dir.path(),
        &[
            "decay",
            s(&recipe),
            "--run-dir",
            s(&run_dir),
            "--set",
            "stage.0.lr=-1",
        ],
        &["stage[0].lr", "(from --set stage.0.lr=-1)"],
    );
}

#[test]
fn pytorch_pickles_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(dir.path(), "x.safetensors", 1, 32);
    // What torch.save writes: a zip archive (any name), or a raw pickle (protocol 2).
    let zip = dir.path().join("model.safetensors");
    std::fs::write(&zip, b"PK\x03\x04archive/data.pkl....").unwrap();
    let pth = dir.path().join("resnet.pth");
    std::fs::write(&pth, b"\x80\x02\x8a\x0alZ\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    for model in [&zip, &pth] {
        for cmd in [
            vec!["info", "--model", s(model)],
            vec!["predict", "--model", s(model), "--input", s(&input)],
        ] {
            expect_error(
                dir.path(),
                &cmd,
                &[s(model), "PyTorch pickle", "safetensors.torch.save_file"],
            );
        }
    }
    // Safetensors under a pickle's name is still safetensors: good files load as before.
    let renamed = dir.path().join("renamed.pth");
    std::fs::copy(vgg_file(dir.path(), "vgg0.safetensors", 3), &renamed).unwrap();
    let (code, err) = run(&["info", "--model", s(&renamed)]);
    assert_eq!(code, 0, "{err}");
    // A recipe's model.source too (the run directory is another matter: not checked here).
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let (code, err) = run(&[
        "decay",
        s(&recipe),
        "--run-dir",
        s(&dir.path().join("run")),
        "--set",
        &format!("model.source={:?}", s(&pth)),
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("resnet.pth") && err.contains("PyTorch pickle"),
        "{err}"
    );
    let vgg = vgg_file(dir.path(), "vgg.safetensors", 3);
    let pt = dir.path().join("batch.pt");
    std::fs::write(&pt, b"PK\x03\x04batch/data.pkl").unwrap();
    expect_error(
        dir.path(),
        &["predict", "--model", s(&vgg), "--input", s(&pt)],
        &["batch.pt", "PyTorch pickle", "'input'"],
    );
}

#[test]
fn inputs_too_small_and_empty_batches() {
    let dir = tempfile::tempdir().unwrap();
    let vgg = vgg_file(dir.path(), "vgg.safetensors", 3);
    let small = input_file(dir.path(), "small.safetensors", 2, 16);
    let out = dir.path().join("out");
    let want = "VGG-16 needs at least 32×32 input, got 16×16";
    expect_error(
        dir.path(),
        &["predict", "--model", s(&vgg), "--input", s(&small)],
        &["--input", "small.safetensors", want],
    );
    expect_error(
        dir.path(),
        &[
            "attribute",
            "--model",
            s(&vgg),
            "--input",
            s(&small),
            "--png",
            s(&out),
        ],
        &[want],
    );
    expect_error(
        dir.path(),
        &[
            "evaluate",
            "--model",
            s(&vgg),
            "--input",
            s(&small),
            "--methods",
            "grad",
            "--out",
            s(&out),
        ],
        &[want],
    );
    expect_error(
        dir.path(),
        &[
            "survey",
            "--model",
            s(&vgg),
            "--input",
            s(&small),
            "--out",
            s(&out),
        ],
        &[want],
    );
    expect_error(
        dir.path(),
        &["info", "--model", s(&vgg), "--size", "16"],
        &["--size 16", want],
    );

    let empty = input_file(dir.path(), "empty.safetensors", 0, 32);
    expect_error(
        dir.path(),
        &["predict", "--model", s(&vgg), "--input", s(&empty)],
        &["empty.safetensors", "no images"],
    );
    let empty_dir = dir.path().join("nothing");
    std::fs::create_dir(&empty_dir).unwrap();
    expect_error(
        dir.path(),
        &["predict", "--model", s(&vgg), "--input", s(&empty_dir)],
        &["nothing", "no .png/.jpg/.jpeg images"],
    );
    expect_error(
        dir.path(),
        &[
            "survey",
            "--model",
            s(&vgg),
            "--data",
            s(&empty_dir),
            "--out",
            s(&out),
        ],
        &["nothing", "no .png/.jpg/.jpeg images"],
    );
}

#[test]
fn minimum_input_sizes_come_from_the_architecture() {
    let dev = Device::Cpu;
    let vgg = models::build(&models::init::vgg16(2, 8, 3, 1, &dev).unwrap(), "vgg").unwrap();
    let resnet = models::build(&models::init::resnet50(2, 3, 1, &dev).unwrap(), "rn").unwrap();
    // Five 2×2 max-pools; ResNet's strided windows all pad, so one pixel goes through.
    assert_eq!(models::min_input_len(vgg.as_ref(), 0), Some(32));
    assert_eq!(models::min_input_len(resnet.as_ref(), 1), Some(1));
    let e = models::check_input_size(vgg.as_ref(), 31, 64)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("VGG-16 needs at least 32×32 input, got 31×64"),
        "{e}"
    );
    let e = models::check_input_size(resnet.as_ref(), 0, 5)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ResNet-50 needs at least 1×1 input, got 0×5"),
        "{e}"
    );
    // The smallest inputs really run, and the shape-only pass agrees with a recorded one.
    for (model, sizes) in [(&vgg, [32usize, 33, 47, 64]), (&resnet, [1, 2, 7, 33])] {
        for size in sizes {
            let x = Tensor::zeros((1, 3, size, size), DType::F32, &dev).unwrap();
            let mut rec = zerobias::taps::Recorder::default();
            let logits = model
                .forward_ctx(&x, &mut Ctx::recording(&mut rec))
                .unwrap();
            assert_eq!(logits.dims(), &[1, 3]);
            assert_eq!(
                models::layer_shapes(model.as_ref(), size).unwrap(),
                rec.act_shapes(),
                "{} at {size}",
                model.name()
            );
        }
    }
    let x = Tensor::zeros((1, 3, 16, 32), DType::F32, &dev).unwrap();
    let e = vgg.forward(&x).unwrap_err().to_string();
    assert!(
        e.contains("VGG-16 needs at least 32×32 input, got 16×32"),
        "{e}"
    );
}

#[test]
fn batch_zero_is_rejected_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let vgg = vgg_file(dir.path(), "vgg.safetensors", 3);
    let input = input_file(dir.path(), "x.safetensors", 2, 32);
    let out = dir.path().join("out");
    let common = ["--model", s(&vgg), "--input", s(&input)];
    for cmd in [
        [&["attribute"][..], &common[..], &["--batch", "0"]].concat(),
        [
            &["evaluate"][..],
            &common[..],
            &["--out", s(&out), "--batch", "0"],
        ]
        .concat(),
        [
            &["survey"][..],
            &common[..],
            &["--out", s(&out), "--batch", "0"],
        ]
        .concat(),
        vec!["bench", "--batch", "1,0"],
    ] {
        expect_error(
            dir.path(),
            &cmd,
            &["--batch", "expected at least 1 image per pass, got 0"],
        );
    }
}

#[test]
fn evaluate_clamps_steps_and_noise_samples_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let vgg = vgg_file(dir.path(), "vgg.safetensors", 3);
    // Random images flip early, so the clamped grid is cheap to scan.
    let input = dir.path().join("x.safetensors");
    let x = Tensor::randn(0f32, 1.0, (3, 3, 32, 32), &Device::Cpu).unwrap();
    zerobias::checkpoint::save(&input, &[("input".into(), x)], Default::default()).unwrap();
    let out = dir.path().join("ev");
    let (code, err) = run(&[
        "evaluate",
        "--model",
        s(&vgg),
        "--input",
        s(&input),
        "--methods",
        "grad",
        "--steps",
        "5000",
        "--noise-samples",
        "7",
        "--out",
        s(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "warning: --steps 5000 is more than the 1024 pixels of a 32×32 input; using 1024 steps"
        ),
        "{err}"
    );
    assert!(
        err.contains("warning: --noise-samples 7 is more than the 2 other images (N = 3); using 2"),
        "{err}"
    );
    let csv = std::fs::read_to_string(out.join("per_image.csv")).unwrap();
    // Flip steps are counted on the clamped grid.
    for line in csv.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let step: usize = cols[6].parse().unwrap();
        assert!((1..=1024).contains(&step), "{line}");
    }
}

#[test]
fn models_with_different_class_counts_are_not_compared() {
    let dir = tempfile::tempdir().unwrap();
    let a = vgg_file(dir.path(), "three.safetensors", 3);
    let b = vgg_file(dir.path(), "five.safetensors", 5);
    let input = input_file(dir.path(), "x.safetensors", 2, 32);
    let out = dir.path().join("ev");
    expect_error(
        dir.path(),
        &[
            "evaluate",
            "--model",
            s(&a),
            "--model",
            s(&b),
            "--input",
            s(&input),
            "--out",
            s(&out),
        ],
        &["three has 3 classes", "five has 5 classes"],
    );
}

#[test]
fn directory_arguments_that_are_files_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let vgg = vgg_file(dir.path(), "vgg.safetensors", 3);
    let input = input_file(dir.path(), "x.safetensors", 2, 32);
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"keep me").unwrap();
    let below = file.join("sub");
    let common = ["--model", s(&vgg), "--input", s(&input)];
    for (cmd, flag, path) in [
        (
            [&["evaluate"][..], &common[..], &["--out", s(&file)]].concat(),
            "--out",
            &file,
        ),
        (
            [&["survey"][..], &common[..], &["--out", s(&file)]].concat(),
            "--out",
            &file,
        ),
        (
            [&["attribute"][..], &common[..], &["--png", s(&file)]].concat(),
            "--png",
            &file,
        ),
        (
            [&["attribute"][..], &common[..], &["--png", s(&below)]].concat(),
            "--png",
            &below,
        ),
        (
            vec![
                "evaluate",
                "--model",
                s(&vgg),
                "--data",
                s(&file),
                "--out",
                s(&below),
            ],
            "--out",
            &below,
        ),
        (
            vec![
                "survey",
                "--model",
                s(&vgg),
                "--data",
                s(&file),
                "--out",
                "unused-dir",
            ],
            "--data",
            &file,
        ),
    ] {
        expect_error(
            dir.path(),
            &cmd,
            &[
                &format!("{flag} {}", path.display()),
                "expected a directory",
            ],
        );
    }
    // Output files that are directories.
    expect_error(
        dir.path(),
        &[&["predict"][..], &common[..], &["--out", s(dir.path())]].concat(),
        &["--out", "is a directory, expected a file path"],
    );
    assert!(!Path::new("unused-dir").exists());
}

fn write_png(path: &Path, colour: [u8; 3]) {
    image::RgbImage::from_pixel(8, 8, image::Rgb(colour))
        .save(path)
        .unwrap();
}

#[test]
fn corrupt_image_is_named_once_with_the_decoders_reason() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("train");
    for class in ["a", "b"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..3 {
            write_png(&root.join(class).join(format!("{i}.png")), [40 * i, 9, 9]);
        }
    }
    let bad = root.join("b").join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    // Training-style loading: several epochs and batches meet the same file.
    let folder: std::sync::Arc<dyn zerobias::data::Dataset> =
        std::sync::Arc::new(zerobias::data::ImageFolder::open(&root, 32).unwrap());
    let loader = zerobias::data::Loader::new(folder, 2, true, 0, 0);
    for epoch in 0..3 {
        assert_eq!(loader.epoch(epoch, 0).count(), 3);
    }
    // Met again in later epochs (counted each time; named once, see the next test).
    assert!(loader.skipped() >= 2, "{}", loader.skipped());

    // The command line: one error naming the file and why, once.
    let vgg = vgg_file(dir.path(), "vgg.safetensors", 2);
    let err = expect_error(
        dir.path(),
        &["predict", "--model", s(&vgg), "--input", s(&root.join("b"))],
        &["broken.png", "corrupt or truncated PNG image"],
    );
    assert_eq!(err.matches("broken.png").count(), 1, "{err}");
}

#[test]
fn corrupt_image_warning_is_printed_once_per_process() {
    // The loader's warning goes to stderr once per file: run it in a child process.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    for class in ["a", "b"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..3 {
            write_png(&root.join(class).join(format!("{i}.png")), [40 * i, 9, 9]);
        }
    }
    std::fs::write(root.join("a").join("zz.jpg"), b"\xFF\xD8\xFF\xE0garbage").unwrap();
    let recipe = dir.path().join("r.toml");
    std::fs::write(
        &recipe,
        format!(
            "{}\n",
            RECIPE
                .replace(
                    "kind = \"synthetic\"",
                    &format!(
                        "kind = \"imagefolder\"\ntrain = {:?}\nval = {:?}",
                        s(&root),
                        s(&root)
                    )
                )
                .replace("steps = 2", "steps = 9\neval_every = 3")
                .replace("train_len = 8\nval_len = 4\n", "")
        ),
    )
    .unwrap();
    let out = bin()
        .args(["decay", s(&recipe), "--run-dir", s(&dir.path().join("run"))])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // The file failed in several epochs and evaluations, and is named once.
    assert!(err.contains("stage 0: skipped"), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("zz.jpg")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("warning: skipping")
            && warnings[0].contains("corrupt or truncated JPEG"),
        "{err}"
    );
}

#[test]
fn imagefolder_splits_with_different_classes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, classes: &[&str], empty: &[&str]| {
        let root = dir.path().join(name);
        for c in classes {
            std::fs::create_dir_all(root.join(c)).unwrap();
            if !empty.contains(c) {
                write_png(&root.join(c).join("0.png"), [1, 2, 3]);
            }
        }
        zerobias::data::ImageFolder::open(&root, 32).unwrap()
    };
    let train = make("train", &["cat", "dog", "emu"], &[]);
    let val = make("val", &["cat", "eel", "emu", "fox"], &[]);
    let e = zerobias::data::check_splits(&train, &val)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("only in train: dog") && e.contains("only in val: eel, fox"),
        "{e}"
    );
    assert!(e.contains("train") && e.contains("val"), "{e}");
    let same = make("val2", &["cat", "dog", "emu"], &["dog"]);
    let warnings = zerobias::data::check_splits(&train, &same).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("dog") && warnings[0].contains("no images"),
        "{warnings:?}"
    );
}

#[test]
fn info_sizes_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let vgg = vgg_file(dir.path(), "vgg.safetensors", 3);
    expect_error(
        dir.path(),
        &["info", "--model", s(&vgg), "--size", "100000"],
        &["--size 100000", "limit of 16384"],
    );
    expect_error(
        dir.path(),
        &["info", "--model", s(&vgg), "--size", "0"],
        &["--size 0", "at least 32×32"],
    );
    // The largest size allowed prints its shapes at once (a forward pass would need
    // 3 GiB for the input alone).
    let out = bin()
        .args(["info", "--model", s(&vgg), "--size", "16384"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("[2, 16384, 16384]") && text.contains("[16, 1024, 1024]"),
        "{text}"
    );
}

/// RECIPE on the ImageFolder splits `dir/train` and `dir/val`, with `extra` appended to
/// its `[data]` table, written to `dir/name`.
fn imagefolder_recipe(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let recipe = dir.join(name);
    std::fs::write(
        &recipe,
        RECIPE
            .replace(
                "kind = \"synthetic\"",
                &format!(
                    "kind = \"imagefolder\"\ntrain = {:?}\nval = {:?}{extra}",
                    s(&dir.join("train")),
                    s(&dir.join("val"))
                ),
            )
            .replace("train_len = 8\nval_len = 4\n", ""),
    )
    .unwrap();
    recipe
}

/// `decay` on ImageFolder splits whose class folders differ stops before training (and
/// before creating the run directory), naming the classes that differ.
#[test]
fn decay_refuses_imagefolder_splits_with_different_classes() {
    let dir = tempfile::tempdir().unwrap();
    for (split, classes) in [("train", ["cat", "dog"]), ("val", ["cat", "eel"])] {
        for c in classes {
            let d = dir.path().join(split).join(c);
            std::fs::create_dir_all(&d).unwrap();
            write_png(&d.join("0.png"), [30, 60, 90]);
        }
    }
    let recipe = imagefolder_recipe(dir.path(), "r.toml", "");
    let run_dir = dir.path().join("run");
    expect_error(
        dir.path(),
        &["decay", s(&recipe), "--run-dir", s(&run_dir)],
        &["only in train: dog", "only in val: eel"],
    );
    assert!(!run_dir.exists(), "no run directory is left behind");
}

/// ImageFolder data takes its classes from the folders; a `data.classes` that disagrees is
/// warned about (and one that agrees is not).
#[test]
fn data_classes_disagreeing_with_the_folders_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "val"] {
        for c in ["cat", "dog"] {
            let d = dir.path().join(split).join(c);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..2 {
                write_png(&d.join(format!("{i}.png")), [40 * i, 80, 120]);
            }
        }
    }
    for (classes, warned) in [(5, true), (2, false)] {
        let recipe = imagefolder_recipe(
            dir.path(),
            &format!("r{classes}.toml"),
            &format!("\nclasses = {classes}"),
        );
        let run_dir = dir.path().join(format!("run{classes}"));
        let out = bin()
            .args(["decay", s(&recipe), "--run-dir", s(&run_dir)])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let warning = "warning: data.classes = 5, but";
        assert_eq!(err.contains(warning), warned, "{err}");
        if warned {
            assert!(err.contains("holds 2 class folders"), "{err}");
        }
    }
}

#[test]
fn predict_on_a_folder_with_more_classes_than_the_model_names_both() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("val");
    for class in ["a", "b", "c"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        write_png(&root.join(class).join("0.png"), [9, 40, 9]);
    }
    let vgg = vgg_file(dir.path(), "vgg.safetensors", 2);
    expect_error(
        dir.path(),
        &[
            "predict",
            "--model",
            s(&vgg),
            "--data",
            s(&root),
            "--size",
            "32",
        ],
        &[
            &format!("--data {}", root.display()),
            "at least 3 class folders",
            "the model has 2 classes",
        ],
    );
}
