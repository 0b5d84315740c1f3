//! `zerobias report` on two tiny models: index.html, its images, and the page in a real
//! headless browser (Chromium from the OS packages: skipped with a message when
//! `chromium` is missing; CI installs it; `ZEROBIAS_CHROMIUM` picks another binary).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};

const IMAGES: usize = 6;

fn save_inputs(dir: &Path) -> PathBuf {
    let mut rng = zerobias::data::Rng::new(5);
    let mut x = Vec::new();
    for _ in 0..IMAGES {
        let rgb: Vec<u8> = (0..32 * 32 * 3).map(|_| rng.below(256) as u8).collect();
        x.extend(zerobias::data::normalise::normalise_hwc(&rgb, 32, 32));
    }
    let p = dir.join("x.safetensors");
    let t = Tensor::from_vec(x, (IMAGES, 3, 32, 32), &Device::Cpu).unwrap();
    zerobias::checkpoint::save(&p, &[("input".into(), t)], Default::default()).unwrap();
    p
}

fn report(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .arg("report")
        .args(args)
        .output()
        .unwrap()
}

/// Every `<img src="...">` of a page.
fn img_sources(html: &str) -> Vec<String> {
    html.split("<img src=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect()
}

fn chromium() -> Option<String> {
    let bin = std::env::var("ZEROBIAS_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    match Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => Some(bin),
        _ => None,
    }
}

/// Load `page` in headless Chromium: (the console messages it logged, the result the probe
/// page wrote: how many images the page has and which failed to load).
fn browse(bin: &str, page: &Path, work: &Path) -> (Vec<String>, String) {
    let url = format!("file://{}", page.display());
    let run = |target: &str, profile: &str| {
        let o = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--allow-file-access-from-files",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=10000",
            ])
            .arg(format!("--user-data-dir={}", work.join(profile).display()))
            .arg("--dump-dom")
            .arg(target)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    // The page itself: it has no script, so any console message is a load error.
    let direct = run(&url, "profile-page");
    let console: Vec<String> = String::from_utf8_lossy(&direct.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .map(String::from)
        .collect();
    // A probe page (ours, not the report's) frames the page and reads each image's
    // naturalWidth once the frame has loaded.
    let probe = work.join("probe.html");
    std::fs::write(
        &probe,
        format!(
            "<!DOCTYPE html><html><body><iframe id=\"f\" src=\"{url}\"></iframe><script>\
             document.getElementById('f').onload = function () {{\
               var d = this.contentDocument; var bad = [];\
               for (var i = 0; i < d.images.length; i++) {{\
                 var im = d.images[i];\
                 if (!im.complete || im.naturalWidth === 0) bad.push(im.getAttribute('src'));\
               }}\
               document.body.setAttribute('data-result', 'images=' + d.images.length + ' bad=' + bad.join('|'));\
             }};</script></body></html>"
        ),
    )
    .unwrap();
    let o = run(&format!("file://{}", probe.display()), "profile-probe");
    let dom = String::from_utf8_lossy(&o.stdout);
    let result = dom
        .split("data-result=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("no result")
        .to_string();
    (console, result)
}

#[test]
fn report_page_loads_with_every_image() {
    let dir = tempfile::tempdir().unwrap();
    let vanilla = common::save_tiny_vgg(dir.path(), "vanilla.safetensors", 0.3);
    let zero = common::save_tiny_vgg(dir.path(), "zero.safetensors", 0.0);
    let x = save_inputs(dir.path());
    let out = dir.path().join("rep");
    let o = report(&[
        "--model",
        vanilla.to_str().unwrap(),
        "--model",
        zero.to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--methods",
        "act.*,bias.*,grad,gradcam,fullgrad,fullgrad.layers,agg.0,agg.1,agg.7",
        "--steps",
        "4",
        "--noise-samples",
        "2",
        "--examples",
        "1",
        "--limit",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let index = out.join("index.html");
    let html = std::fs::read_to_string(&index).unwrap();
    assert!(!html.contains("<script"), "the page must carry no script");
    assert!(!html.contains("http://") && !html.contains("https://"));
    for part in [
        "Settings",
        "Headline comparisons",
        "Bonferroni",
        "Fig. 5",
        "Fig. 6",
        "Fig. 8",
        "Fig. 9",
        "Supp. Figs 1–2",
        "Supp. Figs 4–5",
        "log10 p",
        "vanilla, delta_e_minus act against bias",
        "5 of 32×32 pixels",
        "agg.1 (all layers but the input) against the reference methods",
    ] {
        assert!(html.contains(part), "index.html lacks '{part}'");
    }
    // Fig. 8 is computed in full: act vs bias within the first model, and between models.
    assert!(
        !html.contains("not computed"),
        "a 'not computed' note is left"
    );
    assert!(
        html.contains("between a^{h,l} and a^{b,l}"),
        "no Fig. 8 caption"
    );
    let srcs = img_sources(&html);
    for want in [
        "attr-vanilla/image-0000-layers.png",
        "attr-zero/image-0000-saliency.png",
        "eval/fig5-vanilla-delta_e_minus.png",
        "eval/fig6-zero-e_plus.png",
        "eval/fig9-difference-delta_e_delta.png",
        "eval/fig8-correlations.png",
        "survey-zero/scaling.png",
        "survey-zero/input_scaling.png",
        "survey-vanilla/supp5-alpha-beta.png",
    ] {
        assert!(
            srcs.iter().any(|s| s == want),
            "no <img> of {want}: {srcs:?}"
        );
    }
    for s in &srcs {
        assert!(
            !s.starts_with('/') && !s.contains(".."),
            "not relative: {s}"
        );
        let img = image::open(out.join(s)).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert!(img.width() > 0 && img.height() > 0, "{s}");
    }
    // The tables of the run sit beside the page.
    for t in [
        "eval/tests.csv",
        "eval/noise.csv",
        "survey-vanilla/robustness.csv",
    ] {
        assert!(out.join(t).exists(), "{t}");
    }

    let Some(bin) = chromium() else {
        eprintln!("skipping the browser check: `chromium` not found (apt-get install chromium)");
        return;
    };
    let (console, result) = browse(&bin, &index, dir.path());
    assert!(console.is_empty(), "console messages: {console:?}");
    assert_eq!(result, format!("images={} bad=", srcs.len()));

    // The same checks catch a console error (Chromium logs script errors, not failed
    // image loads, to the console: the probe catches those) and a missing image.
    let broken = dir.path().join("broken.html");
    std::fs::write(
        &broken,
        "<html><body><script>undefinedFn();</script></body></html>",
    )
    .unwrap();
    let (console, _) = browse(&bin, &broken, dir.path());
    assert!(
        console.iter().any(|l| l.contains("undefinedFn")),
        "a script error logged nothing: {console:?}"
    );
    std::fs::remove_file(out.join("eval/fig8-correlations.png")).unwrap();
    let (_, result) = browse(&bin, &index, dir.path());
    assert_eq!(
        result,
        format!("images={} bad=eval/fig8-correlations.png", srcs.len())
    );
}

#[test]
fn report_refuses_bad_arguments_before_work() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::save_tiny_vgg(dir.path(), "m.safetensors", 0.3);
    let x = save_inputs(dir.path());
    let one = report(&[
        "--model",
        m.to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert!(!one.status.success());
    assert!(
        String::from_utf8_lossy(&one.stderr).contains("expected exactly two models"),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    // --out must not be an input.
    let clash = report(&[
        "--model",
        m.to_str().unwrap(),
        "--model",
        m.to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--out",
        x.to_str().unwrap(),
    ]);
    assert!(!clash.status.success());
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(err.contains("--out"), "{err}");
    assert!(x.exists());
}
