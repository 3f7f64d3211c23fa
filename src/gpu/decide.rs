//! Plain decisions of the GPU path, kept apart from the driver calls so the
//! CPU tests can check them: which allocator a buffer uses, which NVRTC
//! and which targets suit a driver, how a context schedules, and whether an
//! NVENC failure means NVENC is broken for good.

/// How a device buffer is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocKind {
    /// `cuMemAllocAsync` from the device's memory pool (cudarc's `alloc`
    /// on every GPU with pools): cheap, stream-ordered, but
    /// `nvEncRegisterResource` refuses it.
    StreamOrdered,
    /// `cuMemAlloc`, freed with `cuMemFree`: what NVENC can register.
    Linear,
}

/// What a buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferUse {
    /// An NV12 frame: may be handed to NVENC (`keep_on_device`).
    Frame,
    /// Detector tensors and kernel scratch: never seen by NVENC.
    Tensor,
}

/// Frames NVENC may see come from `cuMemAlloc`; the rest from the pool.
pub fn alloc_kind(what: BufferUse) -> AllocKind {
    match what {
        BufferUse::Frame => AllocKind::Linear,
        BufferUse::Tensor => AllocKind::StreamOrdered,
    }
}

/// `CU_CTX_SCHED_BLOCKING_SYNC`: a synchronize sleeps on the driver
/// instead of spinning a core (the default `AUTO` spins when there are
/// fewer contexts than cores, i.e. always here).
pub const CTX_SCHED_BLOCKING_SYNC: u32 = 0x04;

/// The primary context's flags, set before its first use.
pub fn primary_context_flags() -> u32 {
    CTX_SCHED_BLOCKING_SYNC
}

/// Lowest driver (`cuDriverGetVersion`) that loads CUDA 13 output: R580
/// reports 13000.
pub const CUDA13_DRIVER: i32 = 13000;

/// The NVRTC sonames to try, best first, for a driver: a CUDA 12 driver
/// (R525-R570, version 12000..13000) cannot load what NVRTC 13 emits, so
/// it gets libnvrtc.so.12 only; a CUDA 13 driver prefers .13 and can use
/// .12. Unknown driver: both, newest first (the module load decides).
pub fn nvrtc_sonames(driver: Option<i32>) -> Vec<&'static str> {
    match driver {
        Some(v) if v < CUDA13_DRIVER => vec!["libnvrtc.so.12", "libnvrtc.so"],
        _ => vec!["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
    }
}

/// The NVRTC major a library file name says (`libnvrtc.so.12.9.86` -> 12).
pub fn nvrtc_major(file_name: &str) -> Option<u32> {
    file_name
        .strip_prefix("libnvrtc.so.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Whether a library of NVRTC `major` emits code this driver can load.
pub fn nvrtc_suits_driver(major: u32, driver: Option<i32>) -> bool {
    match driver {
        Some(v) => (major as i32) * 1000 <= v,
        None => true,
    }
}

/// The `--gpu-architecture` values to compile for, in order: CUBIN for the
/// device, then PTX for the device's own virtual architecture, then
/// compute_75 PTX (the oldest both CUDA 12 and 13 accept) for the driver
/// to JIT when the newer output is refused at load time.
pub fn arch_targets(cc: (i32, i32)) -> Vec<String> {
    let mut v = vec![
        format!("sm_{}{}", cc.0, cc.1),
        format!("compute_{}{}", cc.0, cc.1),
    ];
    if (cc.0, cc.1) > (7, 5) {
        v.push("compute_75".into());
    }
    v
}

/// What a failed NVENC call means for the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NvencFailure {
    /// This frame failed; the next may encode (e.g. a busy encoder).
    Transient,
    /// NVENC cannot encode this session's frames at all (memory it cannot
    /// register, a lost device, an invalid session): switch to the CPU
    /// encoder for the rest of the stream.
    Fatal,
}

/// Classifies an `NVENCSTATUS` from `nvEncRegisterResource`,
/// `nvEncMapInputResource` or `nvEncEncodePicture`.
pub fn nvenc_failure(status: i32) -> NvencFailure {
    use super::nvenc_api as n;
    match status {
        n::NV_ENC_ERR_ENCODER_BUSY | n::NV_ENC_ERR_LOCK_BUSY | n::NV_ENC_ERR_OUT_OF_MEMORY => {
            NvencFailure::Transient
        }
        _ => NvencFailure::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::nvenc_api as n;

    #[test]
    fn nvenc_visible_frames_are_linear_memory() {
        assert_eq!(alloc_kind(BufferUse::Frame), AllocKind::Linear);
        assert_eq!(alloc_kind(BufferUse::Tensor), AllocKind::StreamOrdered);
    }

    #[test]
    fn contexts_block_instead_of_spinning() {
        assert_eq!(primary_context_flags() & 0x07, CTX_SCHED_BLOCKING_SYNC);
    }

    #[test]
    fn nvrtc_follows_the_driver() {
        assert_eq!(nvrtc_sonames(Some(12040))[0], "libnvrtc.so.12");
        assert!(!nvrtc_sonames(Some(12080)).contains(&"libnvrtc.so.13"));
        assert_eq!(
            nvrtc_sonames(Some(13000)),
            ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
        );
        assert_eq!(nvrtc_sonames(None)[0], "libnvrtc.so.13");
        assert!(nvrtc_suits_driver(12, Some(12040)));
        assert!(!nvrtc_suits_driver(13, Some(12080)));
        assert!(nvrtc_suits_driver(13, Some(13000)));
        assert!(nvrtc_suits_driver(12, Some(13000)));
        assert_eq!(nvrtc_major("libnvrtc.so.12.9.86"), Some(12));
        assert_eq!(nvrtc_major("libnvrtc.so.13"), Some(13));
        assert_eq!(nvrtc_major("libnvrtc.so"), None);
        assert_eq!(nvrtc_major("libnvrtc-builtins.so.13"), None);
    }

    #[test]
    fn arch_targets_fall_back_to_older_ptx() {
        assert_eq!(arch_targets((9, 0)), ["sm_90", "compute_90", "compute_75"]);
        assert_eq!(arch_targets((7, 5)), ["sm_75", "compute_75"]);
    }

    #[test]
    fn register_failure_is_fatal_busy_is_not() {
        assert_eq!(
            nvenc_failure(n::NV_ENC_ERR_RESOURCE_REGISTER_FAILED),
            NvencFailure::Fatal
        );
        assert_eq!(
            nvenc_failure(n::NV_ENC_ERR_ENCODER_BUSY),
            NvencFailure::Transient
        );
    }
}
