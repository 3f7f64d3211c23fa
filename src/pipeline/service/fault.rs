//! Test-only detector faults: inside a time window, each batch stalls (a
//! slow or hung detector) and/or every Kth batch fails, so the fail-closed
//! path and the recovery after it can be exercised on the real pipeline
//! (`serve` and `bench`, hidden flags `--fault-detector-*`). The window is
//! measured from the first batch after the plan is (re)started: the first
//! frame of a `serve` process, the first frame of each bench run. The
//! decision is sans-IO ([`FaultState::on_batch`] takes `now`); the worker
//! does the waiting.

use std::time::{Duration, Instant};

/// What to inject, and when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectorFaults {
    /// Each batch started inside the window first waits this long.
    pub stall: Duration,
    /// Every Kth batch started inside the window fails (0: none).
    pub fail_every: u32,
    pub window: FaultWindow,
}

/// From `start` after the first batch, for `length` (`None`: to the end).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultWindow {
    pub start: Duration,
    pub length: Option<Duration>,
}

impl FaultWindow {
    fn contains(&self, since_origin: Duration) -> bool {
        since_origin >= self.start
            && self
                .length
                .is_none_or(|l| since_origin < self.start.saturating_add(l))
    }

    /// `START:LENGTH` in seconds (`3:2`), or `START:` for no end.
    pub fn parse(s: &str) -> Result<FaultWindow, String> {
        let bad = || format!("{s:?} is not START:LENGTH in seconds (e.g. 4:2, or 4: for no end)");
        let (a, b) = s.split_once(':').ok_or_else(bad)?;
        let secs = |v: &str| -> Result<Duration, String> {
            let x: f64 = v.trim().parse().map_err(|_| bad())?;
            if x.is_finite() && (0.0..=86_400.0).contains(&x) {
                Ok(Duration::from_secs_f64(x))
            } else {
                Err(bad())
            }
        };
        Ok(FaultWindow {
            start: secs(a)?,
            length: if b.trim().is_empty() {
                None
            } else {
                Some(secs(b)?)
            },
        })
    }
}

impl std::fmt::Display for FaultWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.length {
            Some(l) => write!(
                f,
                "{:.1} s to {:.1} s",
                self.start.as_secs_f64(),
                (self.start + l).as_secs_f64()
            ),
            None => write!(f, "from {:.1} s on", self.start.as_secs_f64()),
        }
    }
}

impl DetectorFaults {
    pub fn is_active(&self) -> bool {
        !self.stall.is_zero() || self.fail_every > 0
    }
}

impl std::fmt::Display for DetectorFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stall {} ms per batch, fail every {} batch(es), {} after the first batch",
            self.stall.as_millis(),
            self.fail_every,
            self.window
        )
    }
}

/// The hidden flags of `serve` and `bench`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DetectorFaultArgs {
    /// Test only (hidden): each detector batch started inside the fault
    /// window first stalls MS milliseconds.
    #[arg(
        id = "fault_detector_stall",
        long = "fault-detector-stall",
        value_name = "MS",
        default_value_t = 0,
        hide = true
    )]
    pub stall_ms: u64,
    /// Test only (hidden): every Kth detector batch started inside the
    /// fault window fails.
    #[arg(
        id = "fault_detector_fail_every",
        long = "fault-detector-fail-every",
        value_name = "K",
        default_value_t = 0,
        hide = true
    )]
    pub fail_every: u32,
    /// Test only (hidden): the fault window, START:LENGTH seconds after the
    /// first detector batch (of `serve`; of each bench run); default: all
    /// along.
    #[arg(id = "fault_detector_window", long = "fault-detector-window", value_name = "START:LENGTH", hide = true, value_parser = FaultWindow::parse)]
    pub window: Option<FaultWindow>,
}

impl DetectorFaultArgs {
    pub fn faults(&self) -> DetectorFaults {
        DetectorFaults {
            stall: Duration::from_millis(self.stall_ms),
            fail_every: self.fail_every,
            window: self.window.unwrap_or_default(),
        }
    }
}

/// What one batch gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultAction {
    pub stall: Duration,
    pub fail: bool,
}

/// A plan's clock and count, shared by every worker (under the service's
/// lock).
#[derive(Debug, Default)]
pub(super) struct FaultState {
    pub(super) plan: DetectorFaults,
    origin: Option<Instant>,
    in_window: u64,
}

impl FaultState {
    pub(super) fn new(plan: DetectorFaults) -> FaultState {
        FaultState {
            plan,
            origin: None,
            in_window: 0,
        }
    }

    /// The window's clock starts again at the next batch.
    pub(super) fn restart(&mut self) {
        self.origin = None;
        self.in_window = 0;
    }

    pub(super) fn origin(&self) -> Option<Instant> {
        self.origin
    }

    /// The fault for a batch starting at `now`.
    pub(super) fn on_batch(&mut self, now: Instant) -> FaultAction {
        if !self.plan.is_active() {
            return FaultAction::default();
        }
        let origin = *self.origin.get_or_insert(now);
        if !self
            .plan
            .window
            .contains(now.saturating_duration_since(origin))
        {
            return FaultAction::default();
        }
        self.in_window += 1;
        FaultAction {
            stall: self.plan.stall,
            fail: self.plan.fail_every > 0 && self.in_window % u64::from(self.plan.fail_every) == 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn faults_hit_only_inside_the_window_from_the_first_batch() {
        let plan = DetectorFaults {
            stall: ms(300),
            fail_every: 3,
            window: FaultWindow {
                start: ms(1000),
                length: Some(ms(500)),
            },
        };
        let mut st = FaultState::new(plan);
        let t0 = Instant::now();
        // The first batch starts the clock; before the window: nothing.
        assert_eq!(st.on_batch(t0), FaultAction::default());
        assert_eq!(st.origin(), Some(t0));
        assert_eq!(st.on_batch(t0 + ms(999)), FaultAction::default());
        let got: Vec<_> = (0..6)
            .map(|i| st.on_batch(t0 + ms(1000 + 80 * i)))
            .collect();
        assert!(got.iter().all(|a| a.stall == ms(300)));
        let fails: Vec<bool> = got.iter().map(|a| a.fail).collect();
        assert_eq!(fails, [false, false, true, false, false, true]);
        // The window ends: the fault ends.
        assert_eq!(st.on_batch(t0 + ms(1500)), FaultAction::default());
        assert_eq!(st.on_batch(t0 + ms(60_000)), FaultAction::default());
        // A restart starts the clock at the next batch.
        st.restart();
        let t1 = t0 + ms(90_000);
        assert_eq!(st.on_batch(t1), FaultAction::default());
        assert_eq!(st.on_batch(t1 + ms(1200)).stall, ms(300));
    }

    #[test]
    fn no_plan_no_fault_and_open_windows_never_end() {
        let mut st = FaultState::new(DetectorFaults::default());
        let t0 = Instant::now();
        assert_eq!(st.on_batch(t0), FaultAction::default());
        assert_eq!(st.origin(), None, "an idle plan keeps no clock");
        let mut st = FaultState::new(DetectorFaults {
            fail_every: 1,
            ..Default::default()
        });
        assert!(st.on_batch(t0).fail);
        assert!(st.on_batch(t0 + ms(3_600_000)).fail);
    }

    #[test]
    fn windows_parse_or_say_why() {
        assert_eq!(
            FaultWindow::parse("4:2.5"),
            Ok(FaultWindow {
                start: ms(4000),
                length: Some(ms(2500))
            })
        );
        assert_eq!(
            FaultWindow::parse("0.5:"),
            Ok(FaultWindow {
                start: ms(500),
                length: None
            })
        );
        for bad in ["", "4", "a:1", "-1:2", "1:inf", "1:-3"] {
            let e = FaultWindow::parse(bad).unwrap_err();
            assert!(e.contains("START:LENGTH"), "{bad}: {e}");
        }
    }
}
