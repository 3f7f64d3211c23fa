//! The driver, the device's primary context and the loaded kernels.

use super::*;

/// Runs `f`, turning a cudarc panic (it panics when a library or symbol is
/// missing) into an ordinary error.
pub(super) fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Gpu(format!("{what}: {msg}")))
        }
    }
}

pub(super) fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

pub(super) const NO_DRIVER: &str =
    "the NVIDIA driver library (libcuda.so.1) is not installed or not on the loader path";

/// What this machine offers the CUDA backend (for `doctor`); never panics.
pub fn probe() -> GpuProbe {
    let mut p = GpuProbe {
        compiled: true,
        fatbin_embedded: !KERNEL_MODULES.is_empty()
            && KERNEL_MODULES.iter().all(|m| m.fatbin.is_some()),
        ..GpuProbe::default()
    };
    // The NVRTC the kernels would use: chosen by the driver's CUDA version.
    let driver = driver_present().then(driver_version).flatten();
    match load_nvrtc(driver) {
        Ok(n) => {
            let v = n
                .version()
                .map(|(a, b)| format!("{a}.{b}"))
                .unwrap_or_else(|e| e);
            p.nvrtc = Some(format!("{} ({v})", n.path().display()));
        }
        Err(e) => {
            if !p.fatbin_embedded {
                p.problem = Some(e);
            }
        }
    }
    if !driver_present() {
        p.problem = Some(NO_DRIVER.into());
        return p;
    }
    p.driver_present = true;
    let found = guarded("CUDA driver", || {
        use cudarc::driver::result;
        result::init().map_err(gpu_err("cuInit"))?;
        let mut version = 0;
        // SAFETY: a valid out-pointer; the driver is initialised.
        let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
        let version = (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some(version);
        let count = result::device::get_count().map_err(gpu_err("cuDeviceGetCount"))?;
        let mut devices = Vec::new();
        for i in 0..count.max(0) {
            let dev = result::device::get(i).map_err(gpu_err("cuDeviceGet"))?;
            let name = result::device::get_name(dev).map_err(gpu_err("cuDeviceGetName"))?;
            use cudarc::driver::sys::CUdevice_attribute as A;
            // SAFETY: a valid device handle from cuDeviceGet.
            let (major, minor, mem) = unsafe {
                (
                    result::device::get_attribute(
                        dev,
                        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                    )
                    .map_err(gpu_err("compute capability"))?,
                    result::device::get_attribute(
                        dev,
                        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                    )
                    .map_err(gpu_err("compute capability"))?,
                    result::device::total_mem(dev).map_err(gpu_err("cuDeviceTotalMem"))?,
                )
            };
            devices.push(GpuDevice {
                ordinal: i as usize,
                name,
                compute_capability: (major, minor),
                memory_bytes: mem,
            });
        }
        Ok((version, devices))
    });
    match found {
        Ok((version, devices)) => {
            p.driver_version = version;
            if devices.is_empty() && p.problem.is_none() {
                p.problem = Some("the driver reports no CUDA device".into());
            }
            p.devices = devices;
        }
        Err(e) => p.problem = Some(e.to_string()),
    }
    p
}

/// The primary context of device `ordinal`, with cudarc's event tracking
/// off; an error (never a panic) without a driver or that device. Shared by
/// [`GpuContext`] and the TensorRT detector.
pub(crate) fn open_context(ordinal: usize) -> Result<Arc<CudaContext>> {
    if !driver_present() {
        return Err(Error::Gpu(NO_DRIVER.into()));
    }
    guarded("CUDA initialisation", || {
        let count = CudaContext::device_count().map_err(gpu_err("cuDeviceGetCount"))?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::Gpu(format!(
                "CUDA device {ordinal} requested, the driver reports {count}"
            )));
        }
        // Blocking sync before the primary context is first used, so a
        // synchronize sleeps instead of spinning a core (the default AUTO
        // spins with fewer contexts than cores). Allowed on an active
        // primary context too; a refusal only costs CPU, so it is logged.
        let dev =
            cudarc::driver::result::device::get(ordinal as i32).map_err(gpu_err("cuDeviceGet"))?;
        // SAFETY: a device handle from cuDeviceGet; the driver is initialised.
        let r = unsafe {
            cudarc::driver::sys::cuDevicePrimaryCtxSetFlags_v2(dev, primary_context_flags())
        };
        if r != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
            tracing::warn!("cuDevicePrimaryCtxSetFlags(blocking sync): {r:?}");
        }
        let ctx = CudaContext::new(ordinal).map_err(gpu_err("creating the CUDA context"))?;
        // Kernels and TensorRT get raw device pointers, so cudarc's
        // per-buffer event tracking would be incomplete anyway: work is
        // ordered by stream, and sharing a buffer across streams needs an
        // explicit synchronisation by the caller.
        // SAFETY: called before any stream or buffer exists.
        unsafe { ctx.disable_event_tracking() };
        Ok(ctx)
    })
}

/// Options for [`GpuContext::with_options`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuOptions {
    /// Compile NVRTC kernels with `--use_fast_math` (breaks bit parity with
    /// the CPU references; off by default). Ignored for an embedded fatbin.
    pub fast_math: bool,
}

/// One CUDA device with the livecensor kernels loaded.
pub struct GpuContext {
    pub(super) ctx: Arc<CudaContext>,
    pub(super) kernels: Arc<Kernels>,
    pub(super) device: GpuDevice,
    pub(super) origin: String,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("device", &self.device)
            .field("kernels", &self.origin)
            .finish()
    }
}

impl GpuContext {
    /// Opens device `ordinal` and loads the kernels (embedded fatbin, else
    /// NVRTC for the device's architecture).
    pub fn new(ordinal: usize) -> Result<GpuContext> {
        GpuContext::with_options(ordinal, GpuOptions::default())
    }

    pub fn with_options(ordinal: usize, options: GpuOptions) -> Result<GpuContext> {
        let ctx = open_context(ordinal)?;
        guarded("CUDA initialisation", || {
            let device = GpuDevice {
                ordinal,
                name: ctx.name().map_err(gpu_err("device name"))?,
                compute_capability: ctx
                    .compute_capability()
                    .map_err(gpu_err("compute capability"))?,
                memory_bytes: ctx.total_mem().map_err(gpu_err("device memory"))?,
            };
            let (modules, origin) = load_modules(&ctx, device.compute_capability, options)?;
            let mut funcs = Vec::with_capacity(Kernel::ALL.len());
            for k in Kernel::ALL {
                let stem = k.source_file().trim_end_matches(".cu");
                let module = KERNEL_MODULES
                    .iter()
                    .position(|m| m.name == stem)
                    .and_then(|i| modules.get(i))
                    .ok_or_else(|| Error::Gpu(format!("no kernel module {stem}")))?;
                funcs.push(module.load_function(k.name()).map_err(gpu_err(k.name()))?);
            }
            Ok(GpuContext {
                ctx,
                kernels: Arc::new(Kernels {
                    funcs,
                    _modules: modules,
                }),
                device,
                origin,
            })
        })
    }

    pub fn device(&self) -> &GpuDevice {
        &self.device
    }

    /// Where the kernels came from, e.g. "embedded fatbin" or
    /// "NVRTC 13.5 (sm_90)".
    pub fn kernel_origin(&self) -> &str {
        &self.origin
    }

    /// A new CUDA stream with its own scratch buffers; use one per worker.
    pub fn stream(&self) -> Result<GpuStream> {
        GpuStream::open(&self.ctx, &self.kernels)
    }
}
