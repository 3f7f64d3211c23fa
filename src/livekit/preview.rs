//! The moderator's preview of a session: a small JPEG of the **censored**
//! output at most once a second, with the masks of that frame. Raw frames
//! never reach it: the engine copies a picture after censoring.

use crate::frame::{Frame, Mask};
use image::codecs::jpeg::JpegEncoder;
use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How often a session's preview is refreshed.
pub const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);

/// Width previews are scaled down to (at most).
const PREVIEW_WIDTH: usize = 480;

/// One preview image and what was masked on it (in the picture's pixels).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Preview {
    #[serde(skip)]
    pub jpeg: Vec<u8>,
    /// Size of the censored picture the masks refer to.
    pub width: usize,
    pub height: usize,
    pub masks: Vec<Mask>,
    pub pts: i64,
    /// Seconds since the Unix epoch.
    pub at: f64,
    /// Counts up with each new preview (the page reloads on a change).
    pub seq: u64,
}

/// The latest preview of a session, shared with the HTTP server.
#[derive(Debug, Default)]
pub struct PreviewSlot(Mutex<Option<Preview>>);

impl PreviewSlot {
    pub fn set(&self, p: Preview) {
        if let Ok(mut g) = self.0.lock() {
            let seq = g.as_ref().map_or(0, |q| q.seq + 1);
            *g = Some(Preview { seq, ..p });
        }
    }

    pub fn get(&self) -> Option<Preview> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
}

/// A censored picture as a preview: scaled to at most `PREVIEW_WIDTH`
/// wide (nearest neighbour: a preview, not a picture to judge by), JPEG.
pub fn preview_of(frame: &Frame, masks: &[Mask], pts: i64) -> Option<Preview> {
    let (w, h) = (frame.width, frame.height);
    if w == 0 || h == 0 || frame.data.len() != Frame::expected_len(w, h) {
        return None;
    }
    let scale = (PREVIEW_WIDTH as f64 / w as f64).min(1.0);
    let (pw, ph) = (
        ((w as f64 * scale).round() as usize).max(1),
        ((h as f64 * scale).round() as usize).max(1),
    );
    let mut rgb = Vec::with_capacity(pw * ph * 3);
    for y in 0..ph {
        let sy = (y * h / ph).min(h - 1);
        for x in 0..pw {
            let sx = (x * w / pw).min(w - 1);
            rgb.extend_from_slice(&frame.rgb_at(sx, sy));
        }
    }
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 70)
        .encode(&rgb, pw as u32, ph as u32, image::ExtendedColorType::Rgb8)
        .ok()?;
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Some(Preview {
        jpeg,
        width: w,
        height: h,
        masks: masks.to_vec(),
        pts,
        at,
        seq: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PixelFormat;

    #[test]
    fn a_preview_is_a_small_jpeg_of_the_picture_with_its_masks() {
        let f = Frame::new(PixelFormat::I420, 1280, 720);
        let p = preview_of(&f, &[], 3000).unwrap();
        assert_eq!(&p.jpeg[..2], &[0xff, 0xd8], "JPEG start of image");
        let img = image::load_from_memory(&p.jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (480, 270));
        assert_eq!((p.width, p.height, p.pts), (1280, 720, 3000));
        let slot = PreviewSlot::default();
        slot.set(p.clone());
        slot.set(p);
        assert_eq!(slot.get().map(|p| p.seq), Some(1));
    }

    #[test]
    fn a_buffer_that_does_not_match_its_size_gives_no_preview() {
        let mut f = Frame::new(PixelFormat::I420, 64, 48);
        f.data.truncate(10);
        assert!(preview_of(&f, &[], 0).is_none());
    }
}
