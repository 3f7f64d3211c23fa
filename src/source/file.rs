//! A video file as an engine [`Source`]: decoded by its reader (openh264,
//! or NVDEC on a GPU backend; Y4M read as it is), a window of frames kept
//! in flight so the detector and this thread overlap. The readers keep
//! their file-level promises (display-order timestamps, a grey frame
//! censored whole for every access unit that gave no picture), so the
//! output has a frame for every input frame.

use super::device::DeviceReader;
use super::{Container, VideoInfo, VideoReader};
use crate::backend::{Backend, Picture};
use crate::engine::{Feed, Input, Source};
use crate::error::Error;
use std::path::Path;
use std::time::{Duration, Instant};

enum Reader {
    Host(Box<VideoReader>),
    Device(Box<DeviceReader>),
}

pub struct FileSource {
    reader: Reader,
    info: VideoInfo,
    window: usize,
}

impl FileSource {
    /// H.264 through NVDEC on a GPU backend (openh264 with a warning when
    /// NVDEC does not open, as everywhere); everything else on the host.
    pub fn open(
        path: &Path,
        fps_hint: Option<f64>,
        backend: &Backend,
        window: usize,
    ) -> Result<FileSource, Error> {
        let host = |e: Option<Error>| -> Result<FileSource, Error> {
            if let Some(e) = e {
                tracing::warn!("NVDEC unavailable, decoding on the CPU: {e}");
            }
            let r = VideoReader::open(path, fps_hint)?;
            Ok(FileSource {
                info: r.info().clone(),
                reader: Reader::Host(Box::new(r)),
                window,
            })
        };
        let Backend::Cuda(ctx) = backend else {
            return host(None);
        };
        let r = VideoReader::open(path, fps_hint)?;
        if r.info().container == Container::Y4m {
            // Uploaded by the engine, on the stream that then reads it.
            return Ok(FileSource {
                info: r.info().clone(),
                reader: Reader::Host(Box::new(r)),
                window,
            });
        }
        drop(r);
        match DeviceReader::open(path, fps_hint, ctx) {
            Ok(d) => Ok(FileSource {
                info: d.info().clone(),
                reader: Reader::Device(Box::new(d)),
                window,
            }),
            Err(e) => host(Some(e)),
        }
    }

    pub fn info(&self) -> &VideoInfo {
        &self.info
    }
}

impl Source for FileSource {
    fn next(&mut self, in_flight: usize) -> Result<Feed, Error> {
        if in_flight >= self.window {
            return Ok(Feed::Wait(Duration::from_millis(20)));
        }
        let t0 = Instant::now();
        let (picture, pts, corrupt, au) = match &mut self.reader {
            Reader::Host(r) => match r.next_frame() {
                None => return Ok(Feed::End),
                Some(f) => {
                    let f = f?;
                    (Picture::Host(f.frame), f.pts, f.corrupt, f.au)
                }
            },
            Reader::Device(r) => match r.next_frame() {
                None => return Ok(Feed::End),
                Some(f) => {
                    let f = f?;
                    (Picture::Device(f.frame), f.pts, f.corrupt, f.au)
                }
            },
        };
        let now = Instant::now();
        Ok(Feed::Input(Input::Picture {
            picture,
            pts,
            arrival: now,
            origin: now,
            corrupt,
            decode: now.duration_since(t0).as_secs_f64(),
            au,
        }))
    }

    fn recycle(&mut self, picture: Picture) {
        if let (Reader::Device(r), Picture::Device(f)) = (&mut self.reader, picture) {
            r.recycle(f);
        }
    }
}
