//! The bench's input, prepared before timing starts: each scenario's
//! synthetic clip rendered and encoded to H.264 once, and which scenario
//! each stream plays.

use super::{other, BenchOptions};
use crate::codec::{Encoder, EncoderConfig};
use crate::error::Error;
use crate::synth::{Scenario, Synth, SynthConfig};
use std::collections::HashMap;
use std::sync::Arc;

/// The clips, encoded once: per scenario, one access unit per frame.
pub struct Clips {
    pub(super) aus: HashMap<Scenario, Arc<Vec<Vec<u8>>>>,
    pub(super) frames: usize,
}

pub(super) fn synth_config(o: &BenchOptions) -> SynthConfig {
    SynthConfig {
        width: o.width,
        height: o.height,
        fps: o.fps,
        frames: o.frames,
        ..SynthConfig::new(o.photos.clone())
    }
}

pub(super) fn stream_scenario(o: &BenchOptions, stream: usize) -> Scenario {
    o.scenarios
        .get(stream % o.scenarios.len().max(1))
        .copied()
        .unwrap_or(Scenario::ConstantPan)
}

/// One scenario's access units.
type Clip = (Scenario, Vec<Vec<u8>>);

/// Renders and encodes the clips of the scenarios the first `max_streams`
/// streams use (one thread per scenario).
pub fn prepare_clips(o: &BenchOptions, max_streams: usize) -> Result<Clips, Error> {
    let mut wanted: Vec<Scenario> = Vec::new();
    for k in 0..max_streams.max(1) {
        let s = stream_scenario(o, k);
        if !wanted.contains(&s) {
            wanted.push(s);
        }
    }
    let cfg = synth_config(o);
    let results: Vec<Result<Clip, Error>> = std::thread::scope(|sc| {
        let handles: Vec<_> = wanted
            .iter()
            .map(|&s| {
                let cfg = cfg.clone();
                sc.spawn(move || -> Result<Clip, Error> {
                    let synth = Synth::new(s, cfg.clone())?;
                    let mut enc =
                        Encoder::new(EncoderConfig::new(cfg.width, cfg.height, cfg.fps as f32))?;
                    let mut aus = Vec::with_capacity(cfg.frames);
                    for i in 0..cfg.frames {
                        aus.push(enc.encode(&synth.frame(i).frame, false)?);
                    }
                    Ok((s, aus))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(other("clip encoder thread panicked")))
            })
            .collect()
    });
    let mut aus = HashMap::new();
    for r in results {
        let (s, v) = r?;
        aus.insert(s, Arc::new(v));
    }
    Ok(Clips {
        aus,
        frames: o.frames,
    })
}
