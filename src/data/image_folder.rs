//! Image files on disk: decoding (PNG/JPEG by content), listing a directory, and
//! [`ImageFolder`], the ImageNet layout `root/class_name/*.jpg`.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat};

use super::dataset::{Dataset, Sample};
use super::error::DataError;
use super::rng::Rng;
use super::transforms::{augment_with, preprocess_eval, Augment};

/// Directory depth [`ImageFolder`] descends below a class folder (guards symlink loops).
const MAX_WALK_DEPTH: usize = 8;

/// Read and decode an image file, recognising PNG/JPEG by content (not by extension).
pub fn decode_image_file(path: &Path) -> Result<DynamicImage, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let decode_err = |message: String| DataError::Decode {
        path: path.to_path_buf(),
        message,
    };
    if bytes.is_empty() {
        return Err(decode_err(
            "empty file (expected a PNG or JPEG image)".into(),
        ));
    }
    let reader = image::ImageReader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let format = match reader.format() {
        Some(ImageFormat::Png) => "PNG",
        Some(ImageFormat::Jpeg) => "JPEG",
        Some(other) => {
            return Err(decode_err(format!(
                "unsupported image format {other:?} (expected PNG or JPEG)"
            )))
        }
        None => {
            return Err(decode_err(format!(
                "not an image: unrecognised content ({} bytes; expected PNG or JPEG)",
                bytes.len()
            )))
        }
    };
    // JPEGs go through libjpeg-turbo's decoder (`jpeg`), as in PIL; CMYK/YCCK ones, whose
    // RGB conversion libjpeg leaves to the caller, through the `image` crate.
    let jpeg = if format == "JPEG" {
        super::jpeg::decode_jpeg(&bytes)
            .map_err(|e| decode_err(format!("corrupt or truncated JPEG image: {}", e.0)))?
    } else {
        None
    };
    let img = match jpeg {
        Some(rgb) => DynamicImage::ImageRgb8(rgb),
        None => reader
            .decode()
            .map_err(|e| decode_err(format!("corrupt or truncated {format} image: {e}")))?,
    };
    if img.width() == 0 || img.height() == 0 {
        return Err(decode_err(format!(
            "image has zero size ({}x{})",
            img.width(),
            img.height()
        )));
    }
    Ok(img)
}

/// Load + eval-preprocess one image file (CHW, `3*crop*crop`). Errors name the file.
pub fn load_image_file(path: &Path, resize: u32, crop: u32) -> Result<Vec<f32>, DataError> {
    let img = decode_image_file(path)?;
    Ok(preprocess_eval(&img, resize, crop))
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            e.eq_ignore_ascii_case("png")
                || e.eq_ignore_ascii_case("jpg")
                || e.eq_ignore_ascii_case("jpeg")
        })
        .unwrap_or(false)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        paths.push(entry.map_err(io)?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Image files directly in `dir` (not recursive), sorted, by extension png/jpg/jpeg (any case).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    if !dir.exists() {
        return Err(DataError::NotFound {
            path: dir.to_path_buf(),
            expected: "a directory of .png/.jpg/.jpeg images".into(),
        });
    }
    if !dir.is_dir() {
        return Err(DataError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    Ok(read_dir_sorted(dir)?
        .into_iter()
        .filter(|p| p.is_file() && has_image_extension(p))
        .collect())
}

/// torchvision's ImageNet ratio: the shorter side `round(size·256/224)` before a centre
/// crop of `size`.
pub fn default_resize(size: u32) -> u32 {
    (f64::from(size) * 256.0 / 224.0).round() as u32
}

/// ImageNet layout `root/class_name/**/*.{png,jpg,jpeg}` like torchvision's `ImageFolder`:
/// classes are the sorted sub-directory names, label = position, files walked recursively in
/// torchvision's order.
pub struct ImageFolder {
    root: PathBuf,
    size: u32,
    resize: u32,
    augment: Augment,
    classes: Vec<String>,
    samples: Vec<(PathBuf, u32)>,
}

impl ImageFolder {
    /// `size` is the crop; eval resizes the shorter side to `round(size*256/224)` first.
    pub fn open(root: &Path, size: u32) -> Result<Self, DataError> {
        if size == 0 {
            return Err(DataError::Invalid("image size must be > 0".into()));
        }
        if !root.exists() {
            return Err(DataError::NotFound {
                path: root.to_path_buf(),
                expected:
                    "a dataset directory with one sub-folder per class (root/class_name/*.jpg)"
                        .into(),
            });
        }
        if !root.is_dir() {
            return Err(DataError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        let class_dirs: Vec<PathBuf> = read_dir_sorted(root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        if class_dirs.is_empty() {
            return Err(DataError::NoClasses {
                path: root.to_path_buf(),
            });
        }
        let mut classes = Vec::with_capacity(class_dirs.len());
        let mut samples = Vec::new();
        for (label, dir) in class_dirs.iter().enumerate() {
            classes.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            // torchvision: `sorted(os.walk(dir))` sorts directories by path string, then the
            // sorted file names within each.
            let mut dirs = Vec::new();
            collect_dirs(dir, 0, &mut dirs)?;
            dirs.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, files) in dirs {
                samples.extend(files.into_iter().map(|f| (f, label as u32)));
            }
        }
        if samples.is_empty() {
            return Err(DataError::EmptyDataset {
                path: root.to_path_buf(),
            });
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            size,
            resize: default_resize(size),
            augment: Augment::default(),
            classes,
            samples,
        })
    }

    /// The preprocessing as configured: `resize`, the shorter side before the eval centre
    /// crop (and before the crop of [`Augment::Flip`] / [`Augment::None`]), and the training
    /// augmentation.
    pub fn with_preprocessing(mut self, resize: u32, augment: Augment) -> Result<Self, DataError> {
        if resize == 0 {
            return Err(DataError::Invalid(
                "resize (the shorter side before the centre crop) must be > 0".into(),
            ));
        }
        self.resize = resize;
        self.augment = augment;
        Ok(self)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Shorter-side size used before the eval centre crop.
    pub fn eval_resize(&self) -> u32 {
        self.resize
    }

    /// `(file, label)` for every sample, in dataset index order.
    pub fn samples(&self) -> &[(PathBuf, u32)] {
        &self.samples
    }

    /// Class folders without a single image (their labels never occur).
    pub fn empty_classes(&self) -> Vec<PathBuf> {
        let mut seen = vec![false; self.classes.len()];
        for (_, label) in &self.samples {
            seen[*label as usize] = true;
        }
        self.classes
            .iter()
            .zip(seen)
            .filter(|(_, s)| !s)
            .map(|(c, _)| self.root.join(c))
            .collect()
    }
}

/// Train and val must have the same class folders: labels are positions in the sorted
/// folder list, so one extra or missing folder shifts every label after it. Empty class
/// folders are warned about on stderr (and returned).
pub fn check_splits(train: &ImageFolder, val: &ImageFolder) -> Result<Vec<String>, DataError> {
    if train.classes != val.classes {
        let only = |a: &ImageFolder, b: &ImageFolder| -> Vec<String> {
            a.classes
                .iter()
                .filter(|c| !b.classes.contains(c))
                .cloned()
                .collect()
        };
        let list = |names: Vec<String>| {
            const SHOWN: usize = 10;
            let more = names.len().saturating_sub(SHOWN);
            let mut s = names.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
            if more > 0 {
                s.push_str(&format!(" and {more} more"));
            }
            s
        };
        let (in_train, in_val) = (only(train, val), only(val, train));
        let mut differ = Vec::new();
        if !in_train.is_empty() {
            differ.push(format!("only in train: {}", list(in_train)));
        }
        if !in_val.is_empty() {
            differ.push(format!("only in val: {}", list(in_val)));
        }
        return Err(DataError::ClassMismatch {
            train: train.root.clone(),
            val: val.root.clone(),
            differ: differ.join("; "),
        });
    }
    let warnings: Vec<String> = [train, val]
        .iter()
        .flat_map(|f| f.empty_classes())
        .map(|dir| format!("class folder {} has no images", dir.display()))
        .collect();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    Ok(warnings)
}

/// Every directory under (and including) `dir` with its sorted image files.
fn collect_dirs(
    dir: &Path,
    depth: usize,
    out: &mut Vec<(String, Vec<PathBuf>)>,
) -> Result<(), DataError> {
    let entries = read_dir_sorted(dir)?;
    let files = entries
        .iter()
        .filter(|p| p.is_file() && has_image_extension(p))
        .cloned()
        .collect();
    out.push((dir.to_string_lossy().into_owned(), files));
    if depth < MAX_WALK_DEPTH {
        for sub in entries.iter().filter(|p| p.is_dir()) {
            collect_dirs(sub, depth + 1, out)?;
        }
    }
    Ok(())
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn num_classes(&self) -> usize {
        self.classes.len()
    }
    fn class_names(&self) -> Vec<String> {
        self.classes.clone()
    }
    fn image_size(&self) -> (usize, usize) {
        (self.size as usize, self.size as usize)
    }
    fn get(&self, index: usize, train: bool, rng: &mut Rng) -> Result<Sample, DataError> {
        let (path, label) = self.samples.get(index).ok_or(DataError::Index {
            index,
            len: self.samples.len(),
        })?;
        let img = decode_image_file(path)?;
        let pixels = if train {
            augment_with(&img, self.augment, self.resize, self.size, rng)
        } else {
            preprocess_eval(&img, self.resize, self.size)
        };
        Ok(Sample {
            pixels,
            label: *label,
            mask: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use image::RgbImage;

    use crate::data::loader::{Batch, Loader};

    fn write_png(path: &Path, w: u32, h: u32, colour: [u8; 3]) {
        RgbImage::from_pixel(w, h, image::Rgb(colour))
            .save(path)
            .unwrap();
    }

    #[test]
    fn list_images_filters_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("b.PNG"), 4, 4, [1, 2, 3]);
        write_png(&dir.path().join("a.png"), 4, 4, [1, 2, 3]);
        std::fs::write(dir.path().join("c.JpEg"), b"x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub.png")).unwrap();
        let names: Vec<String> = list_images(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.png", "b.PNG", "c.JpEg"]);
        let missing = dir.path().join("nope");
        let err = list_images(&missing).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn non_image_file_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("readme_disguised.png");
        std::fs::write(&path, b"this is not an image").unwrap();
        let err = load_image_file(&path, 256, 224).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("readme_disguised.png"), "{msg}");
        assert!(msg.contains("not an image"), "{msg}");

        let truncated = dir.path().join("truncated.png");
        let mut bytes = Vec::new();
        RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let msg = load_image_file(&truncated, 8, 8).unwrap_err().to_string();
        assert!(msg.contains("truncated.png"), "{msg}");

        let missing = dir.path().join("missing.jpg");
        let msg = load_image_file(&missing, 8, 8).unwrap_err().to_string();
        assert!(msg.contains("missing.jpg"), "{msg}");
    }

    /// root/{cat,dog,emu}/ with 3 PNGs each (one nested), one JPEG, and one corrupt .jpg.
    fn build_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (k, class) in ["dog", "cat", "emu"].iter().enumerate() {
            let d = dir.path().join(class);
            std::fs::create_dir(&d).unwrap();
            for i in 0..3u8 {
                write_png(
                    &d.join(format!("img{i}.png")),
                    20 + u32::from(i),
                    16,
                    [k as u8 * 80, i * 40, 7],
                );
            }
        }
        std::fs::create_dir(dir.path().join("cat/nested")).unwrap();
        write_png(&dir.path().join("cat/nested/deep.png"), 12, 30, [9, 9, 9]);
        RgbImage::from_pixel(24, 24, image::Rgb([10, 200, 30]))
            .save(dir.path().join("dog/photo.jpg"))
            .unwrap();
        std::fs::write(
            dir.path().join("emu/corrupt.jpg"),
            b"\xFF\xD8\xFF\xE0garbage",
        )
        .unwrap();
        std::fs::write(dir.path().join("emu/notes.txt"), b"ignored").unwrap();
        std::fs::write(dir.path().join("stray.png"), b"root files are not classes").unwrap();
        dir
    }

    #[test]
    fn image_folder_and_loader_skip_corrupt_files() {
        let dir = build_folder();
        let ds = ImageFolder::open(dir.path(), 16).unwrap();
        assert_eq!(ds.class_names(), ["cat", "dog", "emu"]);
        assert_eq!(ds.len(), 3 + 1 + 3 + 1 + 3 + 1);
        assert_eq!(ds.eval_resize(), 18);
        assert_eq!(ds.image_size(), (16, 16));
        // cat: its own files first, then the nested folder (torchvision's os.walk order).
        assert!(ds.samples()[3].0.ends_with("cat/nested/deep.png"));
        assert_eq!(ds.samples()[4].1, 1);

        let ds: Arc<dyn Dataset> = Arc::new(ds);
        let loader = Loader::new(Arc::clone(&ds), 4, false, 0, 2);
        assert_eq!(loader.batches_per_epoch(), 3);
        let batches: Vec<Batch> = loader.epoch(0, 0).collect();
        let total: usize = batches.iter().map(|b| b.n).sum();
        assert_eq!(total, ds.len() - 1);
        assert_eq!(loader.skipped(), 1);
        let msgs = loader.skip_messages();
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].contains("corrupt.jpg"), "{msgs:?}");
        for b in &batches {
            assert_eq!(b.pixels.len(), b.n * 3 * 16 * 16);
            assert_eq!(b.labels.len(), b.n);
            assert!(b.masks.is_none());
        }
        let labels: Vec<u32> = batches.iter().flat_map(|b| b.labels.clone()).collect();
        assert_eq!(labels, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2]);

        // Training mode: augmented, shuffled, drop_last; corrupt file skipped again.
        let train = Loader::new(Arc::clone(&ds), 4, true, 1, 0);
        assert_eq!(train.batches_per_epoch(), 3);
        let n: usize = train.epoch(0, 0).map(|b| b.n).sum();
        assert_eq!(n, 11);
        assert_eq!(train.skipped(), 1);
    }

    #[test]
    fn image_folder_errors_name_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no_such_root");
        let msg = ImageFolder::open(&missing, 16).err().unwrap().to_string();
        assert!(msg.contains("no_such_root"), "{msg}");

        let msg = ImageFolder::open(dir.path(), 16).err().unwrap().to_string();
        assert!(msg.contains("no class folders"), "{msg}");

        std::fs::create_dir(dir.path().join("empty_class")).unwrap();
        let err = ImageFolder::open(dir.path(), 16).err().unwrap();
        assert!(matches!(err, DataError::EmptyDataset { .. }));
        assert!(err.to_string().contains(&*dir.path().to_string_lossy()));
    }
}
