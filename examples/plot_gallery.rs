//! Renders one figure of each kind with made-up data into a folder, to look at:
//! `cargo run --release --example plot_gallery -- /tmp/gallery`.

use std::path::PathBuf;

use zerobias::report::plot::{
    box_plot, line_plot, saliency_overlays, save_png, scatter_plot, signed_panel, BoxSeries,
    LineSeries, Map2, PanelRow,
};

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "gallery".into()));
    std::fs::create_dir_all(&out)?;
    // Deterministic pseudo-random values, so the pictures are the same on every run.
    let mut state = 12345u64;
    let mut rand = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64) / ((1u64 << 53) as f64)
    };

    let layers = 13;
    let cats: Vec<String> = (1..=layers).map(|l| l.to_string()).collect();
    let group = |rand: &mut dyn FnMut() -> f64, centre: f64| -> Vec<f64> {
        (0..50)
            .map(|_| centre + (rand() - 0.5) * 0.2 + (rand() - 0.5).powi(5) * 8.0)
            .collect()
    };
    let act: Vec<Vec<f64>> = (0..layers)
        .map(|l| group(&mut rand, 0.1 - 0.01 * l as f64))
        .collect();
    let bias: Vec<Vec<f64>> = (0..layers)
        .map(|l| group(&mut rand, -0.05 + 0.012 * l as f64))
        .collect();
    let series = [
        BoxSeries {
            name: "act".into(),
            color: [214, 96, 77],
            groups: act,
        },
        BoxSeries {
            name: "bias".into(),
            color: [67, 147, 195],
            groups: bias,
        },
    ];
    let img = box_plot(&cats, &series, "VGG-16: δe⁻ per layer", "layer l", "δe⁻")?;
    save_png(&img, &out.join("box.png"))?;
    // ResNet-50 has 50 layers: the canvas widens and labels thin out.
    let cats: Vec<String> = (0..=50).map(|l| l.to_string()).collect();
    let groups: Vec<Vec<f64>> = (0..=50)
        .map(|l| group(&mut rand, 0.002 * l as f64 - 0.05))
        .collect();
    let diff = [BoxSeries {
        name: "zero-bias − vanilla".into(),
        color: [90, 174, 97],
        groups,
    }];
    let img = box_plot(
        &cats,
        &diff,
        "ResNet-50: δe⁻, zero-bias minus vanilla",
        "layer l",
        "difference in δe⁻",
    )?;
    save_png(&img, &out.join("box-wide.png"))?;

    let scales = [0.001, 0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0, 1000.0];
    let curve = |drop: f64| -> Vec<f64> {
        scales
            .iter()
            .map(|s: &f64| 0.76 * (-(s.log10().abs() * drop)).exp())
            .collect()
    };
    let lines = [
        LineSeries {
            name: "vanilla".into(),
            color: [214, 96, 77],
            x: scales.to_vec(),
            y: curve(1.2),
        },
        LineSeries {
            name: "zero-bias".into(),
            color: [67, 147, 195],
            x: scales.to_vec(),
            y: curve(0.1),
        },
    ];
    let img = line_plot(
        &lines,
        true,
        "VGG-16: top-1 under input scaling",
        "input scale",
        "top-1",
    )?;
    save_png(&img, &out.join("line.png"))?;

    let x: Vec<f64> = (0..400).map(|_| rand() * 20.0 - 5.0).collect();
    let y: Vec<f64> = x
        .iter()
        .map(|v| 0.8 * v + 1.5 + (rand() - 0.5) * 3.0)
        .collect();
    let img = scatter_plot(
        &x,
        &y,
        Some((0.8, 1.5)),
        "VGG-16: zero-bias vs vanilla logits",
        "vanilla logit f",
        "zero-bias logit f0",
    )?;
    save_png(&img, &out.join("scatter.png"))?;

    let (h, w) = (16, 16);
    let map = |k: f32| {
        let data = (0..h * w)
            .map(|i| (((i % w) as f32 - 7.5) * k).sin() * ((i / w) as f32 - 7.5) / 8.0)
            .collect();
        Map2::new(h, w, data)
    };
    let rows = vec![
        PanelRow {
            label: "aʰ".into(),
            cells: (1..=5)
                .map(|l| (format!("l={l}"), map(l as f32 * 0.3).unwrap()))
                .collect(),
        },
        PanelRow {
            label: "aᵇ".into(),
            cells: (1..=5)
                .map(|l| (format!("l={l}"), map(-(l as f32) * 0.2).unwrap()))
                .collect(),
        },
    ];
    save_png(
        &signed_panel(&rows, 96, "image 0: gradient × activation per layer")?,
        &out.join("panel.png"),
    )?;

    let rgb: Vec<u8> = (0..h * w)
        .flat_map(|i| [(i * 3 % 256) as u8, 120, 200])
        .collect();
    let maps = vec![
        ("grad".to_string(), map(0.4)?),
        ("fullgrad".to_string(), map(0.9)?),
    ];
    save_png(
        &saliency_overlays(&rgb, w as u32, h as u32, &maps)?,
        &out.join("overlay.png"),
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
