//! Photos (PNG, JPEG) as network inputs: decoded to 8-bit RGB (grey is repeated, alpha
//! dropped), resized to the network's 47 x 55 (width x height) with bilinear filtering when
//! their size differs (aspect ratio not kept: crop faces first for best results), and laid out
//! (C, H, W) in 0..255 as CSAW stores its images. A photo of exactly 47 x 55 is taken pixel for
//! pixel.

use crate::error::{Error, Result};
use image::imageops::FilterType;
use model::geometry::{IMAGE_LEN, INPUT_HW};
use std::path::Path;

/// File name extensions taken as photos when a folder is searched.
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Whether `path` is named like a photo.
pub fn is_photo_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Whether `bytes` start like a PNG or JPEG file.
pub fn is_photo(bytes: &[u8]) -> bool {
    matches!(
        image::guess_format(bytes),
        Ok(image::ImageFormat::Png | image::ImageFormat::Jpeg)
    )
}

/// Decodes a PNG or JPEG file's bytes into CSAW pixels ([`IMAGE_LEN`] values).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Vec<f32>> {
    if !is_photo(bytes) {
        return Err(Error::invalid(path, "not a PNG or JPEG image"));
    }
    let decoded = image::load_from_memory(bytes)
        .map_err(|e| Error::invalid(path, format!("cannot decode the image: {e}")))?;
    let (h, w) = INPUT_HW;
    let mut rgb = decoded.to_rgb8();
    if rgb.dimensions() != (w as u32, h as u32) {
        rgb = image::imageops::resize(&rgb, w as u32, h as u32, FilterType::Triangle);
    }
    let mut pixels = vec![0.0f32; IMAGE_LEN];
    for (x, y, p) in rgb.enumerate_pixels() {
        for c in 0..3 {
            pixels[(c * h + y as usize) * w + x as usize] = p.0[c] as f32;
        }
    }
    Ok(pixels)
}

/// Reads and decodes a photo file.
pub fn read(path: &Path) -> Result<Vec<f32>> {
    crate::files::regular(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(path, &bytes)
}
