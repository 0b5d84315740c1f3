//! JPEG decoding with libjpeg-turbo's algorithms (islow IDCT, fancy chroma upsampling, its
//! YCbCr→RGB tables), through the `mozjpeg` crate, whose decoder is libjpeg-turbo's. PIL
//! decodes with libjpeg-turbo and the same defaults, so our pixels equal what torchvision's
//! ImageFolder sees; the `image` crate's decoder (zune-jpeg) rounds chroma upsampling
//! differently and reads padding at the right and bottom edges (up to 12 levels apart on
//! 4:2:0 files, docs/preprocessing.md), which moved 1–2% of a small model's argmaxes.
//!
//! libjpeg reports fatal errors through `error_exit`, which must not return: ours unwinds
//! (the C code is built with `-fexceptions`, mozjpeg-sys' `unwinding` feature) to the
//! `catch_unwind` in [`decode_jpeg`], which turns it into an error message. A build with
//! `panic = "abort"` would abort on a corrupt file instead.

use std::os::raw::c_int;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use image::RgbImage;
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, JWRN_JPEG_EOF, J_COLOR_SPACE};

/// Largest decoded image accepted, in bytes of RGB8 (the `image` crate's default limit).
const MAX_DECODED_BYTES: u64 = 512 * 1024 * 1024;

/// Why a JPEG could not be decoded (libjpeg's message, or ours).
#[derive(Debug)]
pub(crate) struct JpegError(pub String);

/// Decode a JPEG to RGB8 exactly as PIL's `Image.open(f).convert("RGB")` does for YCbCr,
/// grayscale and RGB files. `Ok(None)` for CMYK/YCCK files, whose conversion to RGB
/// libjpeg leaves to the caller (PIL has its own): the caller decodes those otherwise.
pub(crate) fn decode_jpeg(bytes: &[u8]) -> Result<Option<RgbImage>, JpegError> {
    match catch_unwind(AssertUnwindSafe(|| decode_unguarded(bytes))) {
        Ok(result) => result,
        Err(payload) => Err(JpegError(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg failed".to_string()),
        )),
    }
}

fn decode_unguarded(bytes: &[u8]) -> Result<Option<RgbImage>, JpegError> {
    let io = |e: std::io::Error| JpegError(e.to_string());
    let d = mozjpeg::Decompress::with_err(error_manager())
        .from_mem(bytes)
        .map_err(io)?;
    if matches!(
        d.color_space(),
        J_COLOR_SPACE::JCS_CMYK | J_COLOR_SPACE::JCS_YCCK
    ) {
        return Ok(None);
    }
    let (w, h) = d.size();
    if w == 0 || h == 0 {
        return Err(JpegError(format!("image has zero size ({w}x{h})")));
    }
    if (w as u64) * (h as u64) * 3 > MAX_DECODED_BYTES {
        return Err(JpegError(format!(
            "{w}x{h} pixels exceed the decoding limit of {} MiB",
            MAX_DECODED_BYTES >> 20
        )));
    }
    let mut started = d.rgb().map_err(io)?;
    let pixels: Vec<u8> = started.read_scanlines().map_err(io)?;
    started.finish().map_err(io)?;
    if pixels.len() != w * h * 3 {
        return Err(JpegError(format!(
            "decoded {} of {} bytes",
            pixels.len(),
            w * h * 3
        )));
    }
    let img = RgbImage::from_raw(w as u32, h as u32, pixels)
        .ok_or_else(|| JpegError(format!("{w}x{h} pixels do not fit an image")))?;
    Ok(Some(img))
}

fn error_manager() -> jpeg_error_mgr {
    // SAFETY: jpeg_error_mgr is a plain C struct (integers, pointers, Option<fn>), for which
    // all-zero is valid; jpeg_std_error then fills in libjpeg's defaults.
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    // SAFETY: `err` is a valid, exclusively borrowed error manager.
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(fatal);
    err.emit_message = Some(message);
    err
}

/// libjpeg's text for its current message.
fn formatted(cinfo: &mut jpeg_common_struct) -> String {
    // SAFETY: libjpeg calls our handlers with `cinfo.err` pointing at the manager we
    // installed, alive for the whole decompression.
    let err = unsafe { &*cinfo.err };
    let Some(format) = err.format_message else {
        return format!("libjpeg message {}", err.msg_code);
    };
    let mut buffer = [0u8; 80];
    // SAFETY: format_message writes at most JMSG_LENGTH_MAX (80) bytes, NUL-terminated, into
    // the buffer; the binding declares it `&[u8; 80]` although C writes through it, so we
    // pass a pointer derived from a mutable borrow.
    unsafe {
        let format: unsafe extern "C-unwind" fn(&mut jpeg_common_struct, *mut u8) =
            std::mem::transmute(format);
        format(cinfo, buffer.as_mut_ptr());
    }
    let end = buffer.iter().position(|&c| c == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

extern "C-unwind" fn fatal(cinfo: &mut jpeg_common_struct) {
    // resume_unwind skips the panic hook: nothing is printed, decode_jpeg reports it.
    resume_unwind(Box::new(formatted(cinfo)));
}

/// Warnings pass silently as in PIL, except running out of data: libjpeg would pad the image
/// with grey where PIL refuses the file ("image file is truncated").
extern "C-unwind" fn message(cinfo: &mut jpeg_common_struct, level: c_int) {
    // SAFETY: as in `formatted`.
    let code = unsafe { (*cinfo.err).msg_code };
    if level < 0 && code == JWRN_JPEG_EOF as c_int {
        resume_unwind(Box::new(format!("truncated: {}", formatted(cinfo))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: &RgbImage, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
            .encode_image(img)
            .unwrap();
        out
    }

    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x + y) * 3 % 256) as u8,
            ])
        })
    }

    #[test]
    fn decodes_close_to_the_source_and_keeps_the_size() {
        let src = pattern(37, 21);
        let img = decode_jpeg(&encode(&src, 95)).unwrap().unwrap();
        assert_eq!(img.dimensions(), (37, 21));
        let mean = src
            .as_raw()
            .iter()
            .zip(img.as_raw())
            .map(|(&a, &b)| (a as f64 - b as f64).abs())
            .sum::<f64>()
            / src.as_raw().len() as f64;
        assert!(mean < 6.0, "mean abs error {mean}");
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let err = decode_jpeg(b"\xFF\xD8\xFF\xE0garbage").unwrap_err();
        assert!(!err.0.is_empty());
        let bytes = encode(&pattern(64, 64), 90);
        let err = decode_jpeg(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(err.0.starts_with("truncated:"), "{}", err.0);
        assert!(decode_jpeg(b"not a jpeg at all").is_err());
    }
}
