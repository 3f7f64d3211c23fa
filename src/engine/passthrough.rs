//! Whether a released frame may leave as the input's own access unit
//! (passthrough) or must be encoded, as a small pure state machine.
//!
//! The rule: a frame is forwarded only when it was verified with no mask at
//! all (`clean`), exactly one picture came of its access unit, and every
//! access unit from the last input IDR up to it was forwarded too: then the
//! viewer's reference pictures are exactly the ones the detector saw, and
//! so is the picture it decodes. Anything else is encoded; the first
//! encoded frame after a forwarded one is an IDR of our encoder (with its
//! parameter sets), and forwarding resumes only at an input IDR that itself
//! qualifies. While encoding clean frames, a key frame is asked of the
//! source every so often so that the switch back comes sooner.

use std::time::{Duration, Instant};

/// How passthrough behaves for a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassthroughOptions {
    pub enabled: bool,
    /// Clean frames in a row while encoding after which a key frame is
    /// asked of the source (live: a PLI to the broadcaster).
    pub keyframe_after: u32,
    /// The shortest time between two such requests.
    pub keyframe_gap: Duration,
    /// What the output decodes.
    pub publish: Publish,
}

/// The profiles the output takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// Any (a file, the bench).
    Any,
    /// Live, until the publisher's SDP answer tells: nothing is forwarded.
    Awaited,
    /// The `profile-level-id` the output was negotiated with:
    /// `(profile_idc, constraints, level_idc)`.
    Negotiated((u8, u8, u8)),
}

impl Default for PassthroughOptions {
    fn default() -> Self {
        PassthroughOptions {
            enabled: true,
            keyframe_after: 30,
            keyframe_gap: Duration::from_secs(2),
            publish: Publish::Any,
        }
    }
}

impl PassthroughOptions {
    pub fn off() -> Self {
        PassthroughOptions {
            enabled: false,
            ..PassthroughOptions::default()
        }
    }
}

/// One released frame, as passthrough sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameFacts {
    /// Verified by the detector with no mask at all, nothing found that
    /// could mask it, neither corrupt nor failed closed nor censored whole.
    pub clean: bool,
    /// Its input access unit, numbered in input order, when exactly one
    /// picture came of it (`None`: a picture with no access unit of its
    /// own).
    pub au: Option<u64>,
    /// That access unit is an IDR.
    pub idr: bool,
}

/// What to do with a released frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send the input's own access unit.
    Forward,
    /// Encode the censored picture; `idr`: as an IDR with parameter sets
    /// (the frame before it was forwarded, or nothing left yet).
    Encode { idr: bool },
}

/// The state of one stream's passthrough.
#[derive(Clone, Debug)]
pub struct Passthrough {
    opts: PassthroughOptions,
    /// Why passthrough is off for this stream, once it is.
    off: Option<String>,
    /// The access unit of the last frame that left, when it was forwarded.
    forwarded: Option<u64>,
    /// Whether anything has left yet (the first encoded frame is an IDR).
    started: bool,
    /// Clean frames in a row encoded since the last dirty one.
    clean_run: u32,
    last_request: Option<Instant>,
    keyframe_wanted: bool,
    /// A key frame of ours is due on the next frame to leave.
    break_pending: bool,
}

impl Passthrough {
    pub fn new(opts: PassthroughOptions) -> Self {
        Passthrough {
            opts,
            off: (!opts.enabled).then(|| "off in the configuration".to_string()),
            forwarded: None,
            started: false,
            clean_run: 0,
            last_request: None,
            keyframe_wanted: false,
            break_pending: false,
        }
    }

    pub fn options(&self) -> &PassthroughOptions {
        &self.opts
    }

    /// Turns passthrough off for the rest of the stream (the first reason
    /// given is kept).
    pub fn turn_off(&mut self, reason: impl Into<String>) {
        if self.off.is_none() {
            self.off = Some(reason.into());
        }
    }

    /// The output's negotiated profile is known (live).
    pub fn set_publish(&mut self, profile: (u8, u8, u8)) {
        self.opts.publish = Publish::Negotiated(profile);
    }

    /// `None` while passthrough may happen, else why not.
    pub fn off_reason(&self) -> Option<&str> {
        self.off.as_deref()
    }

    /// Whether the last frame that left was forwarded.
    pub fn forwarding(&self) -> bool {
        self.forwarded.is_some()
    }

    /// A key frame is due (a new viewer): the next frame to leave is a key
    /// frame, the input's own when it is a qualifying IDR, else an IDR of
    /// our encoder; then forwarding waits for the next qualifying input
    /// IDR, which is asked of the source at once (within `keyframe_gap`)
    /// rather than after `keyframe_after` clean frames: each viewer's
    /// request would otherwise cost a second of re-encoding or more.
    pub fn break_chain(&mut self) {
        self.break_pending = true;
    }

    /// Decides for the next frame to leave, in output order.
    pub fn decide(&mut self, now: Instant, f: FrameFacts) -> Decision {
        let qualifies = self.off.is_none()
            && self.opts.publish != Publish::Awaited
            && f.clean
            && f.au.is_some();
        if std::mem::take(&mut self.break_pending) {
            if qualifies && f.idr {
                self.forwarded = f.au;
                self.started = true;
                self.clean_run = 0;
                return Decision::Forward;
            }
            self.forwarded = None;
            self.started = true;
            if self.off.is_none() {
                self.request(now);
            }
            self.count_clean(now, f.clean);
            return Decision::Encode { idr: true };
        }
        let follows = match (f.au, self.forwarded) {
            (Some(au), Some(last)) => last.checked_add(1) == Some(au),
            _ => false,
        };
        let forward = qualifies && (f.idr || follows);
        if forward {
            self.forwarded = f.au;
            self.started = true;
            self.clean_run = 0;
            return Decision::Forward;
        }
        let idr = self.forwarded.is_some() || !self.started;
        self.forwarded = None;
        self.started = true;
        self.count_clean(now, f.clean);
        Decision::Encode { idr }
    }

    /// Clean frames encoded in a row ask for a key frame (at most one per
    /// `keyframe_gap`).
    fn count_clean(&mut self, now: Instant, clean: bool) {
        self.started = true;
        if clean && self.off.is_none() {
            self.clean_run = self.clean_run.saturating_add(1);
            if self.clean_run >= self.opts.keyframe_after.max(1) && self.request(now) {
                self.clean_run = 0;
            }
        } else {
            self.clean_run = 0;
        }
    }

    /// Asks the source for a key frame unless one was asked within
    /// `keyframe_gap`; whether it was asked.
    fn request(&mut self, now: Instant) -> bool {
        let due = self
            .last_request
            .is_none_or(|t| now.saturating_duration_since(t) >= self.opts.keyframe_gap);
        if due {
            self.keyframe_wanted = true;
            self.last_request = Some(now);
        }
        due
    }

    /// Whether a key frame should be asked of the source (cleared).
    pub fn take_keyframe_wanted(&mut self) -> bool {
        std::mem::take(&mut self.keyframe_wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn facts(clean: bool, au: u64, idr: bool) -> FrameFacts {
        FrameFacts {
            clean,
            au: Some(au),
            idr,
        }
    }

    #[test]
    fn switches_at_the_first_dirty_frame_and_back_at_a_clean_idr() {
        let now = Instant::now();
        let mut p = Passthrough::new(PassthroughOptions::default());
        let seq = [
            (true, true, Decision::Forward),
            (true, false, Decision::Forward),
            (false, false, Decision::Encode { idr: true }),
            (true, false, Decision::Encode { idr: false }),
            (false, true, Decision::Encode { idr: false }),
            (true, false, Decision::Encode { idr: false }),
            (true, true, Decision::Forward),
            (true, false, Decision::Forward),
        ];
        for (k, (clean, idr, want)) in seq.into_iter().enumerate() {
            assert_eq!(
                p.decide(now, facts(clean, k as u64, idr)),
                want,
                "frame {k}"
            );
        }
    }

    #[test]
    fn a_gap_in_the_access_units_stops_forwarding() {
        let now = Instant::now();
        let mut p = Passthrough::new(PassthroughOptions::default());
        assert_eq!(p.decide(now, facts(true, 0, true)), Decision::Forward);
        assert_eq!(
            p.decide(now, facts(true, 2, false)),
            Decision::Encode { idr: true }
        );
        let none = FrameFacts {
            clean: true,
            au: None,
            idr: false,
        };
        assert_eq!(p.decide(now, none), Decision::Encode { idr: false });
    }

    #[test]
    fn off_encodes_everything_with_one_idr_first() {
        let now = Instant::now();
        let mut p = Passthrough::new(PassthroughOptions::off());
        assert_eq!(p.off_reason(), Some("off in the configuration"));
        assert_eq!(
            p.decide(now, facts(true, 0, true)),
            Decision::Encode { idr: true }
        );
        assert_eq!(
            p.decide(now, facts(true, 1, true)),
            Decision::Encode { idr: false }
        );
        assert!(!p.take_keyframe_wanted());
    }

    #[test]
    fn clean_frames_while_encoding_ask_for_a_key_frame_at_most_every_gap() {
        let t0 = Instant::now();
        let mut p = Passthrough::new(PassthroughOptions {
            keyframe_after: 3,
            ..PassthroughOptions::default()
        });
        p.decide(t0, facts(false, 0, true));
        let mut asked = Vec::new();
        for k in 1..200u64 {
            let now = t0 + Duration::from_millis(k * 33);
            p.decide(now, facts(true, k, false));
            if p.take_keyframe_wanted() {
                asked.push(k);
            }
        }
        assert_eq!(asked.first(), Some(&3));
        assert!(
            asked.windows(2).all(|w| (w[1] - w[0]) * 33 >= 2000),
            "{asked:?}"
        );
        assert!(asked.len() >= 3, "{asked:?}");
    }

    #[test]
    fn breaking_the_chain_makes_the_next_frame_an_idr_and_asks_for_one() {
        let t0 = Instant::now();
        let mut p = Passthrough::new(PassthroughOptions::default());
        assert_eq!(p.decide(t0, facts(true, 0, true)), Decision::Forward);
        p.break_chain();
        assert_eq!(
            p.decide(t0, facts(true, 1, false)),
            Decision::Encode { idr: true }
        );
        // The source is asked for a key frame at once, not after
        // `keyframe_after` clean frames.
        assert!(p.take_keyframe_wanted());
        assert_eq!(
            p.decide(t0, facts(true, 2, false)),
            Decision::Encode { idr: false }
        );
        assert_eq!(p.decide(t0, facts(true, 3, true)), Decision::Forward);
        // A second request within the gap is not passed on.
        p.break_chain();
        assert_eq!(
            p.decide(t0 + Duration::from_secs(1), facts(true, 4, false)),
            Decision::Encode { idr: true }
        );
        assert!(!p.take_keyframe_wanted());
    }

    #[test]
    fn a_key_frame_due_on_a_clean_input_idr_forwards_it() {
        let now = Instant::now();
        let mut p = Passthrough::new(PassthroughOptions::default());
        p.break_chain();
        assert_eq!(p.decide(now, facts(true, 0, true)), Decision::Forward);
        assert_eq!(p.decide(now, facts(true, 1, false)), Decision::Forward);
        assert!(!p.take_keyframe_wanted());
        // Not when it is dirty, nor with passthrough off.
        p.break_chain();
        assert_eq!(
            p.decide(now, facts(false, 2, true)),
            Decision::Encode { idr: true }
        );
        let mut off = Passthrough::new(PassthroughOptions::off());
        off.decide(now, facts(true, 0, true));
        off.break_chain();
        assert_eq!(
            off.decide(now, facts(true, 1, true)),
            Decision::Encode { idr: true }
        );
        assert!(!off.take_keyframe_wanted());
    }

    #[test]
    fn nothing_is_forwarded_until_the_output_profile_is_known() {
        let now = Instant::now();
        let mut p = Passthrough::new(PassthroughOptions {
            publish: Publish::Awaited,
            ..PassthroughOptions::default()
        });
        assert_eq!(
            p.decide(now, facts(true, 0, true)),
            Decision::Encode { idr: true }
        );
        p.set_publish((0x42, 0x00, 0x1f));
        assert_eq!(p.decide(now, facts(true, 1, true)), Decision::Forward);
        assert!(p.off_reason().is_none());
    }

    proptest! {
        /// Over random clean/dirty frames, IDR positions and lost access
        /// units: no dirty frame is ever forwarded; every forwarded frame is
        /// an IDR or follows a forwarded frame of the access unit just
        /// before it (so no reference it uses was re-encoded or skipped);
        /// every switch to the encoder, and the first frame, is an IDR.
        #[test]
        fn the_rule_holds(
            frames in proptest::collection::vec((any::<bool>(), 0u8..10, 0u8..20, 0u8..15), 1..300),
        ) {
            let t0 = Instant::now();
            let mut p = Passthrough::new(PassthroughOptions::default());
            let mut au = 0u64;
            // What left for each decided frame: (au, decision, idr input,
            // clean, a key frame was due).
            let mut out: Vec<(Option<u64>, Decision, bool, bool, bool)> = Vec::new();
            for (k, (clean, idr_roll, gap_roll, break_roll)) in frames.into_iter().enumerate() {
                let due = break_roll == 0;
                if due {
                    p.break_chain();
                }
                // Sometimes an access unit is skipped, or gave no picture.
                if gap_roll == 0 {
                    au += 1;
                }
                let this = (gap_roll != 1).then_some(au);
                let idr = idr_roll == 0;
                au += 1;
                let f = FrameFacts { clean, au: this, idr };
                let now = t0 + Duration::from_millis(k as u64 * 33);
                out.push((this, p.decide(now, f), idr, clean, due));
            }
            let mut prev: Option<(Option<u64>, Decision)> = None;
            for &(this, d, idr, clean, due) in &out {
                if due {
                    prop_assert!(
                        d == Decision::Encode { idr: true } || (d == Decision::Forward && idr),
                        "a key frame was due"
                    );
                }
                if d == Decision::Forward {
                    prop_assert!(clean, "a dirty frame was forwarded");
                    prop_assert!(this.is_some());
                    if !idr {
                        match prev {
                            Some((Some(a), Decision::Forward)) => {
                                prop_assert_eq!(Some(a + 1), this, "a reference was not forwarded");
                            }
                            _ => prop_assert!(false, "a non-IDR forwarded after an encoded frame"),
                        }
                    }
                } else {
                    let must_idr = matches!(prev, None | Some((_, Decision::Forward)));
                    if must_idr {
                        prop_assert_eq!(d, Decision::Encode { idr: true });
                    }
                }
                prev = Some((this, d));
            }
        }
    }
}
