//! Reading a video file into device memory: H.264 (Annex-B, MP4) through
//! NVDEC, Y4M uploaded once per frame. The GPU counterpart of
//! [`super::VideoReader`], with the same demuxers and the same promise:
//! damaged data gives frames marked `corrupt` until the next IDR, never a
//! stop; only a stream with no decodable picture is an error.

use super::demux::{AnnexBDemux, Mp4Demux, Y4mDemux};
use super::{sniff, usable_fps, Container, Demux, VideoInfo, DEFAULT_FPS};
use crate::codec::is_keyframe;
use crate::error::{Error, MediaError};
use crate::gpu::{nvdec::NvDecoder, DeviceFrame, GpuContext, GpuStream};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One picture in device memory, in display order.
pub struct DeviceDecoded {
    pub index: u64,
    /// Presentation time in `VideoInfo::timescale` units.
    pub pts: i64,
    pub frame: DeviceFrame,
    /// Decoded from damaged data: censor the whole frame.
    pub corrupt: bool,
    /// The access unit this picture, and only this one, came of (what
    /// passthrough forwards); `None` when that is not known for sure.
    pub au: Option<Arc<[u8]>>,
}

/// A decoded picture waiting to be taken: pts, frame, damaged, its unit.
type Ready = (i64, DeviceFrame, bool, Option<Arc<[u8]>>);

enum Kind {
    Nvdec {
        demux: Box<Demux>,
        decoder: Box<NvDecoder>,
        last_pts: i64,
        step: i64,
        damaged_until_idr: bool,
        finished: bool,
    },
    Upload {
        y4m: Box<Y4mDemux>,
        stream: Box<GpuStream>,
        /// Uploaded frames given back, reused instead of allocating.
        free: Vec<DeviceFrame>,
    },
}

/// Decodes one file into device NV12 frames.
pub struct DeviceReader {
    path: PathBuf,
    info: VideoInfo,
    kind: Kind,
    ready: VecDeque<Ready>,
    next_index: u64,
}

impl DeviceReader {
    pub fn open(path: &Path, fps_hint: Option<f64>, ctx: &GpuContext) -> Result<Self, Error> {
        let hint = usable_fps(fps_hint);
        let container = sniff(path)?;
        let (demux, fps, timescale, frame_count) = match container {
            Container::Y4m => {
                let d = Y4mDemux::new(path)?;
                let info = VideoInfo::of_y4m(&d, hint);
                return Ok(DeviceReader {
                    path: path.into(),
                    info,
                    kind: Kind::Upload {
                        y4m: Box::new(d),
                        stream: Box::new(ctx.stream()?),
                        free: Vec::new(),
                    },
                    ready: VecDeque::new(),
                    next_index: 0,
                });
            }
            Container::AnnexB => {
                let fps = hint.unwrap_or(DEFAULT_FPS);
                let d = Demux::AnnexB(AnnexBDemux::new(path, fps)?);
                (d, fps, AnnexBDemux::TIMESCALE, None)
            }
            Container::Mp4 => {
                let d = Mp4Demux::new(path)?;
                let fps = d.fps.or(hint).unwrap_or(DEFAULT_FPS);
                let (ts, count) = (d.timescale, Some(d.sample_count() as u64));
                (Demux::Mp4(d), fps, ts, count)
            }
        };
        let mut r = DeviceReader {
            path: path.into(),
            info: VideoInfo {
                width: 0,
                height: 0,
                fps,
                timescale,
                frame_count,
                container,
            },
            kind: Kind::Nvdec {
                demux: Box::new(demux),
                decoder: Box::new(NvDecoder::new(ctx)?),
                last_pts: 0,
                step: ((timescale as f64 / fps).round() as i64).max(1),
                damaged_until_idr: false,
                finished: false,
            },
            ready: VecDeque::new(),
            next_index: 0,
        };
        r.fill()?;
        let Some((_, f, _, _)) = r.ready.front() else {
            return Err(MediaError::Malformed {
                path: path.into(),
                container: if container == Container::Mp4 {
                    "MP4"
                } else {
                    "H.264 Annex-B"
                },
                reason: "no picture NVDEC could decode".into(),
            }
            .into());
        };
        r.info.width = f.width();
        r.info.height = f.height();
        Ok(r)
    }

    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// Feeds NVDEC until it gives a picture or the file ends.
    fn fill(&mut self) -> Result<(), Error> {
        let Kind::Nvdec {
            demux,
            decoder,
            last_pts,
            step,
            damaged_until_idr,
            finished,
        } = &mut self.kind
        else {
            return Ok(());
        };
        while self.ready.is_empty() && !*finished {
            // The unit fed this round and its timestamp, when it has both.
            let mut unit: Option<(Arc<[u8]>, i64)> = None;
            let frames = match demux.next_packet() {
                None => {
                    *finished = true;
                    decoder.flush()?
                }
                Some(Err(e)) => {
                    tracing::warn!(path = %self.path.display(), "{e}; frames censored until the next IDR");
                    *finished = true;
                    decoder.flush()?
                }
                Some(Ok(p)) => {
                    let pts = p.pts.unwrap_or(*last_pts + *step);
                    *last_pts = pts;
                    match p.data {
                        Ok(au) => {
                            if is_keyframe(&au) {
                                *damaged_until_idr = false;
                            }
                            match decoder.decode(&au, pts) {
                                Ok(f) => {
                                    if p.pts.is_some() {
                                        unit = Some((Arc::from(au), pts));
                                    }
                                    f
                                }
                                Err(e) => {
                                    tracing::warn!(
                                        "NVDEC: {e}; frames censored until the next IDR"
                                    );
                                    *damaged_until_idr = true;
                                    Vec::new()
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!("{e}; frames censored until the next IDR");
                            *damaged_until_idr = true;
                            Vec::new()
                        }
                    }
                }
            };
            let errors = decoder.take_errors();
            if !errors.is_empty() {
                tracing::warn!("NVDEC: {}", errors.join("; "));
                *damaged_until_idr = true;
            }
            let only = frames.len() == 1;
            for f in frames {
                let damaged = f.damaged || *damaged_until_idr;
                // The unit goes with its picture only when that is the one
                // picture out and carries the unit's own timestamp.
                let au = match &unit {
                    Some((data, pts)) if only && !damaged && f.timestamp == *pts => {
                        Some(data.clone())
                    }
                    _ => None,
                };
                self.ready.push_back((f.timestamp, f.frame, damaged, au));
            }
        }
        Ok(())
    }

    /// Gives a frame back for reuse (NVDEC's pool, or the upload's); frames
    /// of another size are freed.
    pub fn recycle(&mut self, frame: DeviceFrame) {
        match &mut self.kind {
            Kind::Nvdec { decoder, .. } => decoder.recycle(frame),
            Kind::Upload { free, .. } => {
                if (frame.width(), frame.height()) == (self.info.width, self.info.height)
                    && free.len() < 16
                {
                    free.push(frame);
                }
            }
        }
    }

    /// The next frame in display order; `None` at the end.
    pub fn next_frame(&mut self) -> Option<Result<DeviceDecoded, Error>> {
        let (pts, frame, corrupt, au) = match &mut self.kind {
            Kind::Upload { y4m, stream, free } => {
                let host = match y4m.next_picture()? {
                    Ok(f) => f,
                    Err(e) => return Some(Err(e)),
                };
                let pts = (self.next_index as f64 * self.info.timescale as f64 / self.info.fps)
                    .round() as i64;
                let reused = free
                    .pop()
                    .filter(|d| (d.width(), d.height()) == (host.width, host.height));
                let up = reused
                    .map_or_else(|| stream.alloc_frame(host.width, host.height), Ok)
                    .and_then(|mut d| stream.upload(&host, &mut d).map(|()| d));
                match up {
                    Ok(d) => (pts, d, false, None),
                    Err(e) => return Some(Err(e)),
                }
            }
            Kind::Nvdec { .. } => {
                if let Err(e) = self.fill() {
                    return Some(Err(e));
                }
                self.ready.pop_front()?
            }
        };
        let index = self.next_index;
        self.next_index += 1;
        Some(Ok(DeviceDecoded {
            index,
            pts,
            frame,
            corrupt,
            au,
        }))
    }
}
