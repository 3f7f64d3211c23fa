//! Kernel modules: the fatbin `build.rs` embedded, else NVRTC at run time.

use super::*;

/// A kernel module as `build.rs` lists it.
#[derive(Clone, Copy, Debug)]
pub struct KernelModule {
    /// File stem, e.g. "censor".
    pub name: &'static str,
    /// File name, e.g. "censor.cu".
    pub file: &'static str,
    /// `common.cuh` followed by the file.
    pub source: &'static str,
    /// Prebuilt by nvcc at build time, when it was available.
    pub fatbin: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Folders searched for `libnvrtc.so*` before the loader's path: the
/// set-up script's `models/nvrtc/` next to the working directory and next
/// to the executable.
pub(super) fn nvrtc_dirs() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("models/nvrtc")];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
    {
        v.push(dir.join("models/nvrtc"));
        v.push(dir.join("../../models/nvrtc"));
    }
    v
}

/// The loaded functions, indexed like [`Kernel::ALL`].
pub(super) struct Kernels {
    pub(super) funcs: Vec<CudaFunction>,
    pub(super) _modules: Vec<Arc<CudaModule>>,
}

impl Kernels {
    pub(super) fn get(&self, k: Kernel) -> &CudaFunction {
        let i = Kernel::ALL.iter().position(|&x| x == k).unwrap_or(0);
        &self.funcs[i]
    }
}

pub(super) fn load_modules(
    ctx: &Arc<CudaContext>,
    (major, minor): (i32, i32),
    options: GpuOptions,
) -> Result<(Vec<Arc<CudaModule>>, String)> {
    let mut nvrtc: Option<Nvrtc> = None;
    let mut modules = Vec::new();
    let mut origins = Vec::new();
    for m in KERNEL_MODULES {
        if let Some(fb) = m.fatbin {
            match ctx.load_module(Ptx::from_binary(fb.to_vec())) {
                Ok(module) => {
                    modules.push(module);
                    origins.push("embedded fatbin".to_string());
                    continue;
                }
                Err(e) => {
                    tracing::warn!("{}: embedded fatbin rejected ({e}); trying NVRTC", m.file)
                }
            }
        }
        if nvrtc.is_none() {
            nvrtc = Some(Nvrtc::load(&nvrtc_dirs()).map_err(|e| {
                Error::Gpu(format!("kernels must be compiled at run time but {e}"))
            })?);
        }
        let Some(n) = nvrtc.as_ref() else {
            continue;
        };
        let version = n.version().map_err(Error::Gpu)?;
        let sm = format!("--gpu-architecture=sm_{major}{minor}");
        let mut opts = vec![sm.as_str(), "--fmad=false"];
        if options.fast_math {
            opts.push("--use_fast_math");
        }
        // CUBIN for this exact device; if this NVRTC does not know the
        // architecture, compute_80 PTX for the driver to JIT.
        let (image, how) = match n.compile(m.source, m.file, &opts) {
            Ok(c) => match c.cubin {
                Some(cubin) => (cubin, format!("sm_{major}{minor}")),
                None => (c.ptx, "PTX".to_string()),
            },
            Err(first) => {
                opts[0] = "--gpu-architecture=compute_80";
                let c = n
                    .compile(m.source, m.file, &opts)
                    .map_err(|e| Error::Gpu(format!("NVRTC: {first}\nthen: {e}")))?;
                (c.ptx, "compute_80 PTX".to_string())
            }
        };
        let module = ctx
            .load_module(Ptx::from_binary(image))
            .map_err(gpu_err(m.file))?;
        modules.push(module);
        origins.push(format!("NVRTC {}.{} ({how})", version.0, version.1));
    }
    origins.dedup();
    Ok((modules, origins.join(", ")))
}
