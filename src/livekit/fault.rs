//! Test-only fault injection on the input connection: RTP media datagrams
//! received on the hidden subscriber's socket are dropped or corrupted at
//! random, so the loss handling (key frame requests, frames censored whole
//! until the next IDR) can be exercised against a real server. Off unless
//! `serve --fault-rtp-drop P` / `--fault-rtp-corrupt P` ask for it.

use crate::error::LiveKitError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Fixed RTP header length: corruption lands past it, in the (encrypted)
/// payload, so SRTP authentication rejects the packet as on a bad wire.
const RTP_HEADER: usize = 12;

/// Probabilities of dropping and of corrupting one RTP media datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultConfig {
    pub drop: f64,
    pub corrupt: f64,
    pub seed: u64,
}

impl FaultConfig {
    /// Both probabilities must lie in 0..=1.
    pub fn new(drop: f64, corrupt: f64, seed: u64) -> Result<Self, LiveKitError> {
        probability("--fault-rtp-drop", drop)?;
        probability("--fault-rtp-corrupt", corrupt)?;
        Ok(FaultConfig {
            drop,
            corrupt,
            seed,
        })
    }

    pub fn is_active(&self) -> bool {
        self.drop > 0.0 || self.corrupt > 0.0
    }
}

/// Checks one probability; the error names the flag.
pub fn probability(name: &str, p: f64) -> Result<f64, LiveKitError> {
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(LiveKitError::Fault(format!(
            "{name} {p} is not a probability (0 to 1)"
        )))
    }
}

/// RFC 7983 demultiplexing: RTP or RTCP has a first byte in 128..=191;
/// RTCP's packet types put its second byte in 192..=223. Only RTP media
/// (with a payload past the header) is a target.
pub fn is_rtp_media(datagram: &[u8]) -> bool {
    match datagram {
        [first, second, ..] => {
            (128..=191).contains(first)
                && !(192..=223).contains(second)
                && datagram.len() > RTP_HEADER
        }
        _ => false,
    }
}

/// What happened to one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    Dropped,
    Corrupted,
}

/// xorshift64*: deterministic for a seed, no dependency, plenty for tests.
#[derive(Clone, Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Zero is xorshift's fixed point.
        XorShift((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1): `p = 0` never fires, `p = 1` always does.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The injector of one connection; counts what it did into `injected`.
#[derive(Debug)]
pub struct RtpFaults {
    cfg: FaultConfig,
    rng: XorShift,
    injected: Arc<AtomicU64>,
}

impl RtpFaults {
    pub fn new(cfg: FaultConfig, injected: Arc<AtomicU64>) -> Self {
        RtpFaults {
            rng: XorShift::new(cfg.seed),
            cfg,
            injected,
        }
    }

    /// Decides the fate of one received datagram, corrupting it in place.
    pub fn apply(&mut self, datagram: &mut [u8]) -> Fault {
        if !is_rtp_media(datagram) {
            return Fault::None;
        }
        let fault = if self.rng.next_f64() < self.cfg.drop {
            Fault::Dropped
        } else if self.rng.next_f64() < self.cfg.corrupt {
            let span = (datagram.len() - RTP_HEADER) as u64;
            let at = RTP_HEADER + (self.rng.next_u64() % span) as usize;
            // A non-zero mask: at least one bit flips.
            let mask = (self.rng.next_u64() as u8) | 1;
            if let Some(b) = datagram.get_mut(at) {
                *b ^= mask;
            }
            Fault::Corrupted
        } else {
            Fault::None
        };
        if fault != Fault::None {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        fault
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(pt: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        v[0] = 0x80;
        v[1] = pt;
        for (i, b) in v.iter_mut().enumerate().skip(2) {
            *b = i as u8;
        }
        v
    }

    #[test]
    fn classifier_takes_rtp_media_only() {
        // RTP: H.264 / Opus payload types, with and without the marker bit.
        assert!(is_rtp_media(&rtp(96, 100)));
        assert!(is_rtp_media(&rtp(96 | 0x80, 100)));
        assert!(is_rtp_media(&rtp(111, 13)));
        // RTCP (SR 200, RR 201, PSFB 206, ...), STUN (0..=3), DTLS
        // (20..=63), a bare header and runts are left alone.
        for pt in [192u8, 200, 201, 206, 223] {
            assert!(!is_rtp_media(&rtp(pt, 100)), "RTCP {pt}");
        }
        let mut stun = rtp(96, 100);
        stun[0] = 0x00;
        assert!(!is_rtp_media(&stun));
        let mut dtls = rtp(96, 100);
        dtls[0] = 22;
        assert!(!is_rtp_media(&dtls));
        let mut high = rtp(96, 100);
        high[0] = 192;
        assert!(!is_rtp_media(&high));
        assert!(!is_rtp_media(&rtp(96, 12)));
        assert!(!is_rtp_media(&[0x80]));
        assert!(!is_rtp_media(&[]));
    }

    fn run(drop: f64, corrupt: f64, n: usize) -> (Vec<Fault>, u64) {
        let count = Arc::new(AtomicU64::new(0));
        let mut f = RtpFaults::new(FaultConfig::new(drop, corrupt, 7).unwrap(), count.clone());
        let faults = (0..n)
            .map(|i| {
                let orig = rtp(96, 20 + i % 50);
                let mut d = orig.clone();
                let fault = f.apply(&mut d);
                let changed: Vec<usize> = (0..d.len()).filter(|&j| d[j] != orig[j]).collect();
                match fault {
                    Fault::Corrupted => {
                        assert_eq!(changed.len(), 1);
                        assert!(changed[0] >= RTP_HEADER);
                    }
                    _ => assert!(changed.is_empty()),
                }
                fault
            })
            .collect();
        (faults, count.load(Ordering::Relaxed))
    }

    #[test]
    fn zero_never_touches_and_one_always_does() {
        let (faults, n) = run(0.0, 0.0, 1000);
        assert!(faults.iter().all(|f| *f == Fault::None));
        assert_eq!(n, 0);
        let (faults, n) = run(1.0, 0.0, 1000);
        assert!(faults.iter().all(|f| *f == Fault::Dropped));
        assert_eq!(n, 1000);
        let (faults, n) = run(0.0, 1.0, 1000);
        assert!(faults.iter().all(|f| *f == Fault::Corrupted));
        assert_eq!(n, 1000);
        // Drop wins over corrupt.
        let (faults, _) = run(1.0, 1.0, 100);
        assert!(faults.iter().all(|f| *f == Fault::Dropped));
    }

    #[test]
    fn rates_are_about_right_and_rtcp_is_never_touched() {
        let (faults, n) = run(0.1, 0.2, 10_000);
        let dropped = faults.iter().filter(|f| **f == Fault::Dropped).count();
        let corrupted = faults.iter().filter(|f| **f == Fault::Corrupted).count();
        assert!((800..1200).contains(&dropped), "{dropped}");
        // Corruption draws from what was not dropped: 0.9 * 0.2.
        assert!((1500..2100).contains(&corrupted), "{corrupted}");
        assert_eq!(n as usize, dropped + corrupted);
        let mut f = RtpFaults::new(
            FaultConfig::new(1.0, 1.0, 1).unwrap(),
            Arc::new(AtomicU64::new(0)),
        );
        let mut rr = rtp(201, 60);
        assert_eq!(f.apply(&mut rr), Fault::None);
        assert_eq!(rr, rtp(201, 60));
    }

    #[test]
    fn bad_probabilities_are_errors_naming_the_flag() {
        for p in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            let e = FaultConfig::new(p, 0.0, 0).unwrap_err().to_string();
            assert!(e.contains("--fault-rtp-drop"), "{e}");
            let e = FaultConfig::new(0.0, p, 0).unwrap_err().to_string();
            assert!(e.contains("--fault-rtp-corrupt"), "{e}");
        }
        assert!(FaultConfig::new(0.0, 1.0, 0).is_ok());
        assert!(!FaultConfig::default().is_active());
    }
}
