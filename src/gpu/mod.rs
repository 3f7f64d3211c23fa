//! The CUDA backend for preprocessing, censoring and box decoding, with
//! frames kept in device memory.
//!
//! - [`plan`] (always compiled, plain Rust): the structs the kernels take,
//!   per-mask parameters and every launch's grid, shared by the CUDA path
//!   and the CPU-shim parity test (`tests/kernels_cpu_shim.rs`).
//! - With feature `cuda`: [`GpuContext`] (cudarc, loaded at run time; the
//!   kernels come from the fatbin `build.rs` embedded when `nvcc` was there,
//!   else NVRTC compiles `kernels/*.cu` for the device found), [`GpuStream`]
//!   with the safe launch wrappers, [`DeviceFrame`], [`FramePool`],
//!   [`GpuTimer`], and [`nvrtc`] (run-time loaded NVRTC).
//! - Without it: the same names, whose constructors return
//!   `Error::NotCompiled`, so callers carry no `cfg`.
//!
//! Every kernel mirrors a Rust reference bit for bit (`censor`,
//! `detect::preprocess`, `detect::postprocess::decode`); kernels are built
//! with FMA contraction off so f32 results round the same way.

pub mod decide;
pub mod fence;
pub mod nvcuvid;
pub mod nvdec;
pub mod nvenc;
pub mod nvenc_api;
pub mod nvenc_session;
pub mod plan;

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
pub mod nvrtc;
#[cfg(feature = "cuda")]
pub use cuda::*;

#[cfg(not(feature = "cuda"))]
mod stub;
#[cfg(not(feature = "cuda"))]
pub use stub::*;

use std::fmt;

/// One CUDA device as `doctor` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuDevice {
    pub ordinal: usize,
    pub name: String,
    /// (major, minor).
    pub compute_capability: (i32, i32),
    pub memory_bytes: usize,
}

/// What this machine offers the CUDA backend; built by [`probe`], which
/// never panics and never fails (problems are described in the fields).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuProbe {
    /// Built with feature `cuda`.
    pub compiled: bool,
    /// libcuda (the NVIDIA driver) could be loaded.
    pub driver_present: bool,
    /// Driver API version, e.g. 12080 for 12.8.
    pub driver_version: Option<i32>,
    pub devices: Vec<GpuDevice>,
    /// The kernels are embedded as a fatbin (no NVRTC needed).
    pub fatbin_embedded: bool,
    /// The libnvrtc chosen for the driver's CUDA version (12 below R580)
    /// and its version, e.g. "libnvrtc.so.12 (12.9)".
    pub nvrtc: Option<String>,
    /// Why the backend cannot run here, if it cannot.
    pub problem: Option<String>,
}

impl GpuProbe {
    /// Whether [`GpuContext::new`] can be expected to succeed on device 0.
    pub fn usable(&self) -> bool {
        self.compiled
            && self.driver_present
            && !self.devices.is_empty()
            && (self.fatbin_embedded || self.nvrtc.is_some())
    }
}

impl fmt::Display for GpuProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.compiled {
            return write!(
                f,
                "CUDA backend not compiled in (rebuild with `--features cuda`)"
            );
        }
        match self.driver_version {
            Some(v) => write!(f, "driver for CUDA {}.{}", v / 1000, (v % 1000) / 10)?,
            None if self.driver_present => write!(f, "driver present")?,
            None => write!(f, "no NVIDIA driver")?,
        }
        for d in &self.devices {
            write!(
                f,
                "; GPU {}: {} (sm_{}{}, {} MiB)",
                d.ordinal,
                d.name,
                d.compute_capability.0,
                d.compute_capability.1,
                d.memory_bytes >> 20
            )?;
        }
        if self.fatbin_embedded {
            write!(f, "; kernels: embedded fatbin")?;
        }
        match &self.nvrtc {
            Some(n) => write!(f, "; NVRTC chosen for this driver: {n}")?,
            None => write!(f, "; NVRTC not found")?,
        }
        if let Some(p) = &self.problem {
            write!(f, "; unusable: {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_never_panics_and_explains_itself() {
        let p = probe();
        assert_eq!(p.compiled, cfg!(feature = "cuda"));
        let text = p.to_string();
        assert!(!text.is_empty());
        if !p.usable() {
            // Either not compiled or a stated problem / missing piece.
            assert!(
                !p.compiled || p.problem.is_some() || p.nvrtc.is_none() || p.devices.is_empty()
            );
        }
    }

    #[test]
    fn context_without_gpu_is_an_error_not_a_panic() {
        if probe().usable() {
            return;
        }
        let err = GpuContext::new(0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!err.is_empty());
        if !cfg!(feature = "cuda") {
            assert!(err.contains("--features cuda"), "{err}");
        }
    }

    #[test]
    fn display_of_a_usable_probe() {
        let p = GpuProbe {
            compiled: true,
            driver_present: true,
            driver_version: Some(12080),
            devices: vec![GpuDevice {
                ordinal: 0,
                name: "NVIDIA H100".into(),
                compute_capability: (9, 0),
                memory_bytes: 80 << 30,
            }],
            fatbin_embedded: false,
            nvrtc: Some("libnvrtc.so.13 (13.5)".into()),
            problem: None,
        };
        assert!(p.usable());
        let s = p.to_string();
        assert!(
            s.contains("driver for CUDA 12.8")
                && s.contains("NVRTC chosen for this driver: libnvrtc.so.13")
                && s.contains("sm_90")
                && s.contains("81920 MiB"),
            "{s}"
        );
        let none = GpuProbe {
            nvrtc: None,
            ..p.clone()
        };
        assert!(!none.usable());
    }
}
