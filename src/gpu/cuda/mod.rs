//! The CUDA implementation (feature `cuda`): cudarc with the driver loaded
//! at run time, so the binary builds and starts on machines without CUDA;
//! every missing piece is an `Error::Gpu` with the reason, never a panic.

use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr,
    DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::decide::{
    alloc_kind, arch_targets, nvrtc_major, nvrtc_sonames, nvrtc_suits_driver,
    primary_context_flags, AllocKind, BufferUse,
};
use super::fence::{Fence, StreamSync};
use super::nvrtc::Nvrtc;
use super::plan::{
    candidates_to_detections, decode_dims, preprocess_dims, Candidate, CensorPlan, ImageInfo,
    Kernel, KernelMask, LaunchDims, Plane,
};
use super::{GpuDevice, GpuProbe};
use crate::detect::preprocess::{Letterbox, LetterboxMode, ResizeFilter};
use crate::error::{Error, Result};
use crate::frame::{CensorMethod, Detection, Frame, Mask, PixelFormat};

mod context;
mod launch;
mod memory;
mod modules;
mod stream;
mod transfer;

pub use context::*;
pub use memory::*;
pub use modules::KernelModule;
use modules::*;
pub use stream::*;

// SAFETY: plain #[repr(C)] structs of i32/f32, identical to the C structs;
// all-zero bits are a valid value of each.
unsafe impl DeviceRepr for KernelMask {}
unsafe impl DeviceRepr for ImageInfo {}
unsafe impl DeviceRepr for Candidate {}
unsafe impl cudarc::driver::ValidAsZeroBits for KernelMask {}
unsafe impl cudarc::driver::ValidAsZeroBits for ImageInfo {}
unsafe impl cudarc::driver::ValidAsZeroBits for Candidate {}

pub(super) fn gpu_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Gpu(format!("{what}: {e}"))
}

/// `slot` is a buffer with at least `need` elements, reallocating if not.
pub(super) fn ensure<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    slot: &mut Option<CudaSlice<T>>,
    need: usize,
) -> Result<()> {
    if slot.as_ref().is_none_or(|s| s.len() < need.max(1)) {
        *slot = Some(
            stream
                .alloc_zeros::<T>(need.max(1))
                .map_err(gpu_err("allocating scratch"))?,
        );
    }
    Ok(())
}

pub(super) fn cfg(d: &LaunchDims) -> LaunchConfig {
    LaunchConfig {
        grid_dim: d.grid,
        block_dim: d.block,
        shared_mem_bytes: 0,
    }
}

/// End of `len` values written from `offset` into a tensor of `capacity`.
pub(super) fn slot_end(len: usize, offset: usize, capacity: usize) -> Result<usize> {
    offset
        .checked_add(len)
        .filter(|&e| e <= capacity)
        .ok_or_else(|| {
            Error::Gpu(format!(
                "{len} values at {offset} do not fit a tensor of {capacity}"
            ))
        })
}

pub(super) fn to_i32(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Gpu(format!("{what} {v} is too large for the kernels")))
}

pub(super) fn bad_dims(width: usize, height: usize, reason: &str) -> Error {
    crate::error::MediaError::BadDimensions {
        width,
        height,
        reason: reason.into(),
    }
    .into()
}

/// IEEE half bits -> f32 (exact).
pub(super) fn half_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_listing_names_every_kernel_file() {
        for k in Kernel::ALL {
            let m = KERNEL_MODULES.iter().find(|m| m.file == k.source_file());
            let m = m.unwrap_or_else(|| panic!("{} missing", k.source_file()));
            assert!(m.source.contains(k.name()), "{}", k.name());
            assert!(m.source.contains("struct LcMask"), "common.cuh prepended");
        }
    }

    #[test]
    fn frame_layout_is_pitched_and_aligned() {
        assert_eq!(
            DeviceFrame::layout(1280, 720),
            (1280, 1280 * 720, 1280 * 1080)
        );
        let (p, uv, total) = DeviceFrame::layout(65, 47);
        assert_eq!((p, uv, total), (256, 256 * 47, 256 * 47 + 256 * 24));
    }

    #[test]
    fn half_decoding() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(half_to_f32(0x7bff), 65504.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert!(half_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn no_driver_means_an_error() {
        if driver_present() {
            return;
        }
        match GpuContext::new(0) {
            Err(Error::Gpu(msg)) => assert!(msg.contains("libcuda"), "{msg}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a context without a driver"),
        }
        let p = probe();
        assert!(!p.driver_present && !p.usable());
        assert!(p.problem.is_some_and(|m| m.contains("libcuda")));
    }
}
