//! Grey regions of JPEG files, decoded by libjpeg-turbo (the `mozjpeg-sys` build of it): only the
//! luma plane, only the rows down to the region's last one, and of those only the region's
//! iMCU columns and rows get an inverse DCT (`jpeg_crop_scanline`, `jpeg_skip_scanlines`). Rows
//! above the region are entropy-decoded but not transformed, rows below are never read. A
//! 140×84 eye crop out of a 640×480 UnityEyes render decodes ≈ 4× faster than the whole image
//! (`simgan bench --sections ingest`), pixel for pixel the same as libjpeg's full decode of that
//! region.
//!
//! **Errors.** libjpeg reports a fatal error through `error_exit`, which must not return: here it
//! unwinds (`resume_unwind`, so no panic message is printed) back to [`gray_region`], which
//! destroys the decompressor (freeing all of libjpeg's memory) and returns the message. Warnings
//! — "premature end of data segment", corrupt entropy data, which libjpeg would paper over with
//! grey — are errors too: a half-decoded render is not a training sample.
//!
//! This module owns no policy: the caller decides the region and what an error means.

use std::os::raw::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use image::GrayImage;
use mozjpeg_sys as ffi;

/// A JPEG's frame size (from its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegSize {
    pub width: u32,
    pub height: u32,
}

/// Why a JPEG could not be decoded: libjpeg's message, or a bound this module checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    #[error("{0}")]
    Decoder(String),
    #[error("region {w}×{h} at ({x0}, {y0}) is not inside the {img_w}×{img_h} image")]
    Region {
        x0: u32,
        y0: u32,
        w: u32,
        h: u32,
        img_w: u32,
        img_h: u32,
    },
    #[error("{width}×{height} is larger than the {max}-pixel side this reader accepts")]
    TooLarge { width: u32, height: u32, max: u32 },
    #[error("colour space {0} has no luma plane to decode (not grey or YCbCr)")]
    ColourSpace(String),
}

/// The unwind payload of [`error_exit`] and [`emit_message`].
struct Abort(String);

/// The decompressor and its error manager, destroyed on drop (also after an unwind).
struct Decoder {
    // Boxed: libjpeg keeps pointers to both, so neither may move.
    cinfo: Box<ffi::jpeg_decompress_struct>,
    _err: Box<ffi::jpeg_error_mgr>,
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created by jpeg_CreateDecompress in `Decoder::new`; destroy frees every pool,
        // whatever state an unwind left the decompressor in.
        unsafe { ffi::jpeg_destroy_decompress(&mut self.cinfo) }
    }
}

fn message(cinfo: &mut ffi::jpeg_common_struct) -> String {
    let mut buffer = [0u8; 80];
    // SAFETY: `err` points at our boxed error manager, whose `format_message` is libjpeg's
    // (set by jpeg_std_error); it writes at most 80 bytes, NUL-terminated. The binding
    // declares the buffer `&[u8; 80]`, but libjpeg writes it.
    unsafe {
        if let Some(format) = cinfo.err.as_ref().and_then(|e| e.format_message) {
            let format: unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, &mut [u8; 80]) =
                std::mem::transmute(format);
            format(cinfo, &mut buffer);
        }
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    resume_unwind(Box::new(Abort(message(cinfo))));
}

extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
    // level −1 is a warning (corrupt or truncated data); ≥ 0 are trace messages.
    if level < 0 {
        resume_unwind(Box::new(Abort(message(cinfo))));
    }
}

impl Decoder {
    /// A decompressor reading `bytes`, its header read.
    ///
    /// # Safety
    /// `bytes` must outlive the decoder (libjpeg reads it in place).
    unsafe fn new(bytes: &[u8]) -> Decoder {
        // SAFETY: zeroed structs are what libjpeg's C callers start from; the error manager is
        // filled by jpeg_std_error before jpeg_CreateDecompress uses it.
        unsafe {
            let mut err: Box<ffi::jpeg_error_mgr> = Box::new(std::mem::zeroed());
            ffi::jpeg_std_error(&mut err);
            err.error_exit = Some(error_exit);
            err.emit_message = Some(emit_message);
            let mut cinfo: Box<ffi::jpeg_decompress_struct> = Box::new(std::mem::zeroed());
            cinfo.common.err = &mut *err;
            ffi::jpeg_CreateDecompress(
                &mut *cinfo,
                ffi::JPEG_LIB_VERSION,
                std::mem::size_of::<ffi::jpeg_decompress_struct>(),
            );
            let mut d = Decoder { cinfo, _err: err };
            ffi::jpeg_mem_src(&mut d.cinfo, bytes.as_ptr(), bytes.len() as _);
            ffi::jpeg_read_header(&mut d.cinfo, 1);
            d
        }
    }

    fn size(&self) -> JpegSize {
        JpegSize {
            width: self.cinfo.image_width,
            height: self.cinfo.image_height,
        }
    }
}

/// Run `f` on a decoder of `bytes`, turning libjpeg's errors (unwinds) into [`JpegError`].
fn with_decoder<T>(
    bytes: &[u8],
    f: impl FnOnce(&mut Decoder) -> Result<T, JpegError>,
) -> Result<T, JpegError> {
    let mut decoder = None;
    let run = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `bytes` outlives `decoder`, dropped before this function returns.
        let d = decoder.insert(unsafe { Decoder::new(bytes) });
        f(d)
    }));
    drop(decoder);
    match run {
        Ok(r) => r,
        Err(payload) => match payload.downcast::<Abort>() {
            Ok(abort) => Err(JpegError::Decoder(abort.0)),
            // Not libjpeg's: a bug of ours, not bad data.
            Err(other) => resume_unwind(other),
        },
    }
}

/// The frame size in `bytes`' header (nothing decoded).
pub fn size(bytes: &[u8]) -> Result<JpegSize, JpegError> {
    with_decoder(bytes, |d| Ok(d.size()))
}

/// Decode the grey (luma) pixels of the `w`×`h` region at (`x0`, `y0`) of a JPEG, refusing
/// frames with a side over `max_side`. Grey for a grey JPEG, the Y plane of a YCbCr one (what
/// libjpeg's and PIL's conversion to grey give); other colour spaces are refused.
pub fn gray_region(
    bytes: &[u8],
    (x0, y0, w, h): (u32, u32, u32, u32),
    max_side: u32,
) -> Result<GrayImage, JpegError> {
    with_decoder(bytes, |d| {
        let JpegSize { width, height } = d.size();
        if width > max_side || height > max_side {
            return Err(JpegError::TooLarge {
                width,
                height,
                max: max_side,
            });
        }
        let inside = w > 0
            && h > 0
            && x0.checked_add(w).is_some_and(|e| e <= width)
            && y0.checked_add(h).is_some_and(|e| e <= height);
        if !inside {
            return Err(JpegError::Region {
                x0,
                y0,
                w,
                h,
                img_w: width,
                img_h: height,
            });
        }
        use ffi::J_COLOR_SPACE::{JCS_GRAYSCALE, JCS_YCbCr};
        let space = d.cinfo.jpeg_color_space;
        if !matches!(space, JCS_GRAYSCALE | JCS_YCbCr) {
            return Err(JpegError::ColourSpace(format!("{space:?}")));
        }
        let c = &mut *d.cinfo;
        c.out_color_space = JCS_GRAYSCALE;
        // SAFETY: the header is read; every call below is in libjpeg's documented order
        // (start, crop, skip, read), and each scanline pointer has `output_width` bytes.
        unsafe {
            ffi::jpeg_start_decompress(c);
            // Widens the region to iMCU column boundaries: `x` moves left, `cw` grows.
            let (mut x, mut cw) = (x0, w);
            ffi::jpeg_crop_scanline(c, &mut x, &mut cw);
            let skipped = ffi::jpeg_skip_scanlines(c, y0);
            if skipped != y0 {
                return Err(JpegError::Decoder(format!(
                    "skipped {skipped} of the {y0} rows above the region"
                )));
            }
            let stride = c.output_width as usize;
            let left = (x0 - x) as usize;
            let mut row = vec![0u8; stride];
            let mut out = Vec::with_capacity((w * h) as usize);
            for r in 0..h {
                let mut p = row.as_mut_ptr();
                if ffi::jpeg_read_scanlines(c, &mut p, 1) != 1 {
                    return Err(JpegError::Decoder(format!(
                        "no scanline {} of the region",
                        y0 + r
                    )));
                }
                out.extend_from_slice(&row[left..left + w as usize]);
            }
            // The rows below are never read; dropping the decoder aborts the decompression.
            GrayImage::from_raw(w, h, out)
                .ok_or_else(|| JpegError::Decoder("region buffer of the wrong size".into()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, RgbImage};

    /// A textured 4:2:0 colour JPEG (the image crate's encoder) and its size.
    fn textured(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            let v = ((x * 7 + y * 13) % 251) as u8 ^ ((x * y) % 17) as u8;
            image::Rgb([v, v.wrapping_mul(3), 255 - v])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
            .unwrap_or_else(|e| panic!("encode: {e}"));
        out
    }

    /// A region equals the same window of the whole image decoded by the same library (so
    /// skipping rows and columns changes no pixel), wherever the region sits against the iMCU
    /// grid, including the image's edges.
    #[test]
    fn a_region_is_the_same_window_of_the_whole_image() {
        let bytes = textured(97, 61);
        let whole = gray_region(&bytes, (0, 0, 97, 61), 16384).unwrap_or_else(|e| panic!("{e}"));
        for (x0, y0, w, h) in [
            (0, 0, 5, 3),
            (13, 9, 40, 21),
            (17, 31, 80, 30),
            (96, 60, 1, 1),
        ] {
            let r = gray_region(&bytes, (x0, y0, w, h), 16384).unwrap_or_else(|e| panic!("{e}"));
            let want = image::imageops::crop_imm(&whole, x0, y0, w, h).to_image();
            assert_eq!(r, want, "region {x0},{y0} {w}×{h}");
        }
        assert_eq!(
            size(&bytes),
            Ok(JpegSize {
                width: 97,
                height: 61
            })
        );
    }

    /// Bad input is an error naming the problem, never a panic or grey pixels: a region
    /// outside the frame, an oversized frame, a truncated scan, bytes that are not a JPEG.
    #[test]
    fn bad_input_is_an_error() {
        let bytes = textured(64, 48);
        assert!(matches!(
            gray_region(&bytes, (60, 0, 8, 8), 16384),
            Err(JpegError::Region { img_w: 64, .. })
        ));
        assert!(matches!(
            gray_region(&bytes, (0, 0, 8, 8), 32),
            Err(JpegError::TooLarge { width: 64, .. })
        ));
        let cut = &bytes[..bytes.len() * 2 / 3];
        let e = gray_region(cut, (0, 40, 64, 8), 16384).unwrap_err();
        assert!(
            e.to_string().contains("Premature end"),
            "truncated scan: {e}"
        );
        let e = size(b"not a jpeg at all").unwrap_err();
        assert!(e.to_string().contains("Not a JPEG"), "{e}");
    }
}
