//! Figures for the paper's plots.
//!
//! Box plots, line and scatter charts are drawn with `plotters` (bitmap backend) in the
//! `frame`, `boxes` and `charts` modules; attribution panels and saliency overlays are
//! image compositing of our own (`panels`). All text is DejaVu Sans, embedded in the binary
//! and anti-aliased (`text`), so figures render identically on every machine without system
//! fonts.
//!
//! Conventions:
//! * White background; charts default to [`PLOT_WIDTH`] x [`PLOT_HEIGHT`] pixels (box plots
//!   widen when there are many categories).
//! * Non-finite data values in charts are an error ([`PlotError::NonFinite`]) naming the
//!   series and the point: a fault is never drawn as a silent gap. Non-positive x on a log
//!   axis is an error too. A non-finite fitted line (`scatter_plot`'s `fit`, undefined for
//!   fewer than two distinct x) is not drawn, and the legend says so.
//! * Empty input policy: when there is nothing structural to lay out (no rows, no cells,
//!   no series, no categories, zero-length point slices, a 0x0 image) the functions return
//!   [`PlotError::Empty`]. When the structure exists but every box-plot group is empty, a
//!   valid plot is returned with "no data" written in the plot area, so batch figure
//!   generation keeps going.
//! * Attribution maps are compositing input: a non-finite map pixel shows as "no signal"
//!   (white, or the plain image in an overlay); the attribution code refuses non-finite maps
//!   before they reach a figure.
//!
//! This file declares the modules and re-exports their items; what several of them share
//! ([`PlotError`] in `error`, the canvas size in `frame`) lives in a sibling file that they
//! import directly, so the imports form no circle.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use image::RgbImage;

mod boxes;
mod charts;
mod colour;
mod error;
mod frame;
mod panels;
mod text;
mod ticks;

pub use boxes::{
    box_plot, box_plot_with_refs, box_stats, quantile_sorted, BoxSeries, BoxStats, RefLine,
};
pub use charts::{
    line_plot, line_plot_bands, line_plot_with, scatter_plot, Band, ChartOptions, LineSeries,
};
pub use colour::{diverging_rgb, sequential_rgb};
pub use error::PlotError;
pub use frame::{PLOT_HEIGHT, PLOT_WIDTH};
pub use panels::{saliency_overlays, signed_panel, Map2, PanelRow};
pub use ticks::{format_sci, format_tick, nice_step, nice_ticks};

/// Atomic PNG write: encodes to `<path>.tmp-<pid>` in the same directory, syncs
/// it, then renames over `path`, so readers never see a half-written figure.
/// The temporary file is removed on failure. The parent directory must exist.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<(), PlotError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let io_err = |p: &Path, source: std::io::Error| PlotError::Io {
        path: p.to_path_buf(),
        source,
    };

    let write = || -> std::io::Result<()> {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        let enc = image::codecs::png::PngEncoder::new(&mut w);
        image::ImageEncoder::write_image(
            enc,
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| match e {
            image::ImageError::IoError(io) => io,
            other => std::io::Error::other(other),
        })?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_png_round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("zerobias-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fig.png");
        let mut img = RgbImage::from_pixel(7, 5, image::Rgb([255, 255, 255]));
        img.put_pixel(3, 2, image::Rgb([1, 2, 3]));
        save_png(&img, &path).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back, img);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();

        let missing = dir.join("no/such/dir/fig.png");
        let err = save_png(&img, &missing).unwrap_err();
        assert!(matches!(err, PlotError::Io { .. }));
        assert!(err.to_string().contains("fig.png"), "{err}");
    }
}
