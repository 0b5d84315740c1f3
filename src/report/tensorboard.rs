//! Minimal TensorBoard event-file writer.
//!
//! TensorBoard reads TFRecord files of serialized `tensorflow.Event` protos.
//! Only a handful of message types are needed (scalars, histograms, images),
//! so they are hand-encoded here instead of pulling in a protobuf toolchain.
//!
//! Record framing (TFRecord):
//! `u64 LE length | u32 LE masked_crc32c(length) | data | u32 LE masked_crc32c(data)`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Number of uniform histogram buckets; TensorBoard re-bins for display, so a
/// modest fixed count keeps event files small without losing the shape.
const HISTOGRAM_BUCKETS: usize = 30;

/// Magic string TensorBoard expects in the first event of every file.
const FILE_VERSION: &str = "brain.Event:2";

/// `Summary.Image.colorspace` value for RGB.
const COLORSPACE_RGB: i32 = 3;

/// Errors from writing TensorBoard event files.
#[derive(Debug, thiserror::Error)]
pub enum TensorBoardError {
    /// Creating, writing or flushing the log directory or event file failed.
    #[error("TensorBoard I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The image could not be validated or PNG-encoded.
    #[error("TensorBoard image error: {0}")]
    Image(String),
}

/// Appends TensorBoard events to one `events.out.tfevents.*` file.
///
/// Every `add_*` call flushes, so a killed training run keeps what it logged.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `log_dir` (if needed) and a new event file in it, then writes
    /// and flushes the mandatory `file_version` event.
    pub fn create(log_dir: &Path) -> Result<Self, TensorBoardError> {
        fs::create_dir_all(log_dir).map_err(|source| TensorBoardError::Io {
            path: log_dir.to_path_buf(),
            source,
        })?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let base = format!("events.out.tfevents.{secs}.{}", hostname());
        let (path, file) = create_unique(log_dir, &base)?;
        let mut writer = Self {
            path,
            out: BufWriter::new(file),
        };
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time());
        put_bytes(&mut event, 3, FILE_VERSION.as_bytes());
        writer.write_record(&event)?;
        writer.flush()?;
        Ok(writer)
    }

    /// Logs one scalar (`Summary.Value.simple_value`).
    pub fn add_scalar(&mut self, tag: &str, value: f32, step: i64) -> Result<(), TensorBoardError> {
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_float(&mut v, 2, value);
        self.write_summary_value(&v, step)
    }

    /// Logs a histogram of `values` with uniform buckets between the finite
    /// minimum and maximum. Non-finite values are skipped; an empty (or
    /// all-non-finite) input still produces a valid, empty histogram.
    pub fn add_histogram(
        &mut self,
        tag: &str,
        values: &[f32],
        step: i64,
    ) -> Result<(), TensorBoardError> {
        let histo = encode_histogram(&Histogram::from_values(values));
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_bytes(&mut v, 5, &histo);
        self.write_summary_value(&v, step)
    }

    /// Logs an RGB image given as row-major HWC `u8` pixels; it is stored
    /// PNG-encoded, as TensorBoard expects.
    pub fn add_image_rgb(
        &mut self,
        tag: &str,
        width: u32,
        height: u32,
        rgb: &[u8],
        step: i64,
    ) -> Result<(), TensorBoardError> {
        let expected = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(3));
        if expected != Some(rgb.len()) {
            return Err(TensorBoardError::Image(format!(
                "image '{tag}' for {}: {width}x{height} RGB needs {} bytes, got {}",
                self.path.display(),
                expected.map_or_else(|| "too many".to_string(), |n| n.to_string()),
                rgb.len()
            )));
        }
        let png = encode_png(width, height, rgb).map_err(|e| {
            TensorBoardError::Image(format!(
                "image '{tag}' for {}: PNG encoding failed: {e}",
                self.path.display()
            ))
        })?;
        // Proto int32 fields; PNG caps dimensions at 2^31 - 1 so this never
        // truncates for an image that encoded successfully.
        let mut img = Vec::new();
        put_varint_field(&mut img, 1, i64::from(height));
        put_varint_field(&mut img, 2, i64::from(width));
        put_varint_field(&mut img, 3, i64::from(COLORSPACE_RGB));
        put_bytes(&mut img, 4, &png);
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_bytes(&mut v, 4, &img);
        self.write_summary_value(&v, step)
    }

    /// Flushes buffered events to the OS.
    pub fn flush(&mut self) -> Result<(), TensorBoardError> {
        self.out.flush().map_err(|source| self.io_err(source))
    }

    /// Path of the event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wraps one encoded `Summary.Value` in a `Summary` and an `Event`,
    /// writes it and flushes.
    fn write_summary_value(&mut self, value: &[u8], step: i64) -> Result<(), TensorBoardError> {
        let event = encode_summary_event(wall_time(), step, value);
        self.write_record(&event)?;
        self.flush()
    }

    fn write_record(&mut self, data: &[u8]) -> Result<(), TensorBoardError> {
        let record = frame_record(data);
        self.out
            .write_all(&record)
            .map_err(|source| self.io_err(source))
    }

    fn io_err(&self, source: io::Error) -> TensorBoardError {
        TensorBoardError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// Opens a fresh event file; a numeric suffix avoids clobbering another
/// writer that started in the same second in the same directory.
fn create_unique(dir: &Path, base: &str) -> Result<(PathBuf, File), TensorBoardError> {
    let mut attempt = 0u32;
    loop {
        let name = if attempt == 0 {
            base.to_string()
        } else {
            format!("{base}.{attempt}")
        };
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 1000 => attempt += 1,
            Err(source) => return Err(TensorBoardError::Io { path, source }),
        }
    }
}

/// Hostname for the file name; sanitized because it becomes a path component.
fn hostname() -> String {
    let raw = fs::read_to_string("/etc/hostname").unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".to_string()
    } else {
        clean
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>, image::ImageError> {
    use image::ImageEncoder;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image(
        rgb,
        width,
        height,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(png)
}

// ---------------------------------------------------------------------------
// TFRecord framing
// ---------------------------------------------------------------------------

/// TFRecord's CRC mask: rotate right by 15 and add a constant, so that CRCs
/// of data that itself contains CRCs stay well distributed.
fn masked_crc32c(data: &[u8]) -> u32 {
    mask_crc(crc32c::crc32c(data))
}

fn mask_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn frame_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

// ---------------------------------------------------------------------------
// Protobuf wire encoding (just the pieces the Event schema needs)
// ---------------------------------------------------------------------------

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_FIXED32: u32 = 5;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(buf, u64::from((field << 3) | wire));
}

/// int32/int64 fields: negative values are sign-extended to 64 bits (10 bytes).
fn put_varint_field(buf: &mut Vec<u8>, field: u32, v: i64) {
    put_key(buf, field, WIRE_VARINT);
    put_varint(buf, v as u64);
}

fn put_double(buf: &mut Vec<u8>, field: u32, v: f64) {
    put_key(buf, field, WIRE_FIXED64);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_float(buf: &mut Vec<u8>, field: u32, v: f32) {
    put_key(buf, field, WIRE_FIXED32);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, WIRE_LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn put_packed_doubles(buf: &mut Vec<u8>, field: u32, vs: &[f64]) {
    put_key(buf, field, WIRE_LEN);
    put_varint(buf, (vs.len() * 8) as u64);
    for v in vs {
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// `Event { wall_time, step, summary: Summary { value: [value] } }`.
fn encode_summary_event(wall_time: f64, step: i64, value: &[u8]) -> Vec<u8> {
    let mut summary = Vec::with_capacity(value.len() + 8);
    put_bytes(&mut summary, 1, value);
    let mut event = Vec::with_capacity(summary.len() + 24);
    put_double(&mut event, 1, wall_time);
    put_varint_field(&mut event, 2, step);
    put_bytes(&mut event, 5, &summary);
    event
}

// ---------------------------------------------------------------------------
// Histograms
// ---------------------------------------------------------------------------

/// Contents of a `HistogramProto`. Bucket `i` counts values in
/// `(bucket_limit[i-1], bucket_limit[i]]`, the first one starting at `min`.
#[derive(Debug, Clone, PartialEq)]
struct Histogram {
    min: f64,
    max: f64,
    num: f64,
    sum: f64,
    sum_squares: f64,
    bucket_limit: Vec<f64>,
    bucket: Vec<f64>,
}

impl Histogram {
    fn from_values(values: &[f32]) -> Self {
        let finite: Vec<f64> = values
            .iter()
            .filter(|v| v.is_finite())
            .map(|&v| f64::from(v))
            .collect();
        if finite.is_empty() {
            // One zero-count bucket rather than none: TensorBoard's converter
            // zips `[min] + limits[:-1]` with counts and chokes on empty lists.
            return Self {
                min: 0.0,
                max: 0.0,
                num: 0.0,
                sum: 0.0,
                sum_squares: 0.0,
                bucket_limit: vec![0.0],
                bucket: vec![0.0],
            };
        }
        let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let bucket_limit: Vec<f64> = if min == max {
            vec![max]
        } else {
            let width = (max - min) / HISTOGRAM_BUCKETS as f64;
            let mut limits: Vec<f64> = (1..HISTOGRAM_BUCKETS)
                .map(|i| min + width * i as f64)
                .collect();
            // Exact `max` as the last edge so rounding never leaves the
            // largest value outside every bucket.
            limits.push(max);
            limits
        };
        let mut bucket = vec![0.0; bucket_limit.len()];
        let last = bucket.len() - 1;
        for &v in &finite {
            // First limit >= v, matching the (lower, upper] bucket convention.
            let i = bucket_limit.partition_point(|&limit| limit < v);
            bucket[i.min(last)] += 1.0;
        }
        Self {
            min,
            max,
            num: finite.len() as f64,
            sum: finite.iter().sum(),
            sum_squares: finite.iter().map(|v| v * v).sum(),
            bucket_limit,
            bucket,
        }
    }
}

fn encode_histogram(h: &Histogram) -> Vec<u8> {
    let mut buf = Vec::with_capacity(48 + 16 * h.bucket.len());
    put_double(&mut buf, 1, h.min);
    put_double(&mut buf, 2, h.max);
    put_double(&mut buf, 3, h.num);
    put_double(&mut buf, 4, h.sum);
    put_double(&mut buf, 5, h.sum_squares);
    put_packed_doubles(&mut buf, 6, &h.bucket_limit);
    put_packed_doubles(&mut buf, 7, &h.bucket);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_encoding() {
        let enc = |v: u64| {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            b
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        // int64 -1 is sign-extended: nine 0xff then 0x01.
        let mut b = Vec::new();
        put_varint_field(&mut b, 2, -1);
        assert_eq!(
            b,
            [0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn scalar_event_bytes() {
        let mut value = Vec::new();
        put_bytes(&mut value, 1, b"a");
        put_float(&mut value, 2, 1.0);
        let event = encode_summary_event(1.0, 5, &value);
        // Hand-computed; identical to tensorboard's own event_pb2
        // serialization of the same Event.
        let expected: [u8; 23] = [
            0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x3f, // wall_time = 1.0
            0x10, 0x05, // step = 5
            0x2a, 0x0a, // summary, 10 bytes
            0x0a, 0x08, // value, 8 bytes
            0x0a, 0x01, b'a', // tag = "a"
            0x15, 0x00, 0x00, 0x80, 0x3f, // simple_value = 1.0f
        ];
        assert_eq!(event, expected);

        let record = frame_record(&event);
        assert_eq!(record.len(), 8 + 4 + 23 + 4);
        assert_eq!(&record[..8], &23u64.to_le_bytes());
        assert_eq!(&record[8..12], &0x1ef8_cee7u32.to_le_bytes());
        assert_eq!(&record[12..35], &expected);
        assert_eq!(&record[35..], &0x4667_b76au32.to_le_bytes());
    }

    #[test]
    fn file_version_event_bytes() {
        let mut event = Vec::new();
        put_double(&mut event, 1, 1.0);
        put_bytes(&mut event, 3, FILE_VERSION.as_bytes());
        let mut expected = vec![0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x1a, 0x0d];
        expected.extend_from_slice(b"brain.Event:2");
        assert_eq!(event, expected);
    }

    #[test]
    fn crc_mask_known_values() {
        assert_eq!(crc32c::crc32c(b""), 0);
        assert_eq!(masked_crc32c(b""), 0xa282_ead8);
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
        assert_eq!(masked_crc32c(b"a"), 0x28e4_6e78);
        assert_eq!(masked_crc32c(&0u64.to_le_bytes()), 0x0798_0329);
    }

    #[test]
    fn histogram_bucket_sums_equal_count() {
        let values: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
        let h = Histogram::from_values(&values);
        assert_eq!(h.bucket.len(), HISTOGRAM_BUCKETS);
        assert_eq!(h.bucket_limit.len(), HISTOGRAM_BUCKETS);
        assert_eq!(h.bucket.iter().sum::<f64>(), 1000.0);
        assert_eq!(h.num, 1000.0);
        assert_eq!(h.min, -50.0);
        assert_eq!(h.max, 50.0);
        assert_eq!(*h.bucket_limit.last().unwrap(), 50.0);
        assert!(h.bucket_limit.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn histogram_skips_non_finite_and_handles_degenerate_input() {
        let h = Histogram::from_values(&[1.0, f32::NAN, f32::INFINITY, 3.0, f32::NEG_INFINITY]);
        assert_eq!(h.num, 2.0);
        assert_eq!(h.bucket.iter().sum::<f64>(), 2.0);
        assert_eq!(h.bucket[0], 1.0);
        assert_eq!(*h.bucket.last().unwrap(), 1.0);
        assert_eq!(h.sum, 4.0);
        assert_eq!(h.sum_squares, 10.0);

        let same = Histogram::from_values(&[2.5; 7]);
        assert_eq!(same.bucket_limit, [2.5]);
        assert_eq!(same.bucket, [7.0]);

        for empty in [&[][..], &[f32::NAN][..]] {
            let h = Histogram::from_values(empty);
            assert_eq!(h.num, 0.0);
            assert_eq!(h.bucket, [0.0]);
            assert_eq!(h.bucket_limit.len(), h.bucket.len());
        }
    }

    #[test]
    fn histogram_proto_layout() {
        let h = Histogram::from_values(&[1.0]);
        let enc = encode_histogram(&h);
        // Five doubles (9 bytes each), then two packed fields of one double.
        assert_eq!(enc.len(), 5 * 9 + 2 * (2 + 8));
        assert_eq!(enc[45], 0x32);
        assert_eq!(enc[46], 8);
        assert_eq!(enc[55], 0x3a);
        assert_eq!(enc[56], 8);
    }

    #[test]
    fn image_length_mismatch_is_an_error() {
        let dir = std::env::temp_dir().join(format!("zerobias_tb_unit_{}", std::process::id()));
        let mut w = EventWriter::create(&dir).unwrap();
        let err = w.add_image_rgb("img", 2, 2, &[0; 11], 0).unwrap_err();
        assert!(matches!(err, TensorBoardError::Image(_)), "{err}");
        w.add_image_rgb("img", 2, 2, &[0; 12], 0).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let _ = fs::remove_dir_all(&dir);
    }
}
