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

/// The driver's CUDA version (`cuDriverGetVersion`, e.g. 12080), if the
/// driver is loaded.
pub(super) fn driver_version() -> Option<i32> {
    let mut v = 0;
    // SAFETY: a valid out-pointer; cuDriverGetVersion needs no cuInit.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some(v)
}

/// The NVRTC libraries to try for this driver, best first: the override
/// alone when set; else the set-up folders' and the loader's libraries
/// whose major the driver can load (NVRTC 13 output needs R580+), newest
/// first.
pub(super) fn nvrtc_candidates(driver: Option<i32>) -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os(super::super::nvrtc::NVRTC_ENV) {
        return vec![PathBuf::from(p)];
    }
    let name_major = |p: &PathBuf| p.file_name().and_then(|n| n.to_str()).and_then(nvrtc_major);
    let mut files: Vec<PathBuf> = nvrtc_dirs()
        .iter()
        .flat_map(|d| super::super::nvrtc::libs_in(d))
        .filter(|p| name_major(p).is_none_or(|m| nvrtc_suits_driver(m, driver)))
        .collect();
    files.sort_by_key(|p| std::cmp::Reverse(name_major(p)));
    files.extend(nvrtc_sonames(driver).into_iter().map(PathBuf::from));
    files
}

/// The first NVRTC of [`nvrtc_candidates`] that loads.
pub(super) fn load_nvrtc(driver: Option<i32>) -> std::result::Result<Nvrtc, String> {
    let mut tried = Vec::new();
    for c in nvrtc_candidates(driver) {
        match Nvrtc::load_from(&c) {
            Ok(n) => return Ok(n),
            Err(e) => tried.push(e),
        }
    }
    Err(format!(
        "no libnvrtc this driver can use (set {}, or run `bash scripts/nvrtc-setup.sh`); tried: {}",
        super::super::nvrtc::NVRTC_ENV,
        tried.join("; ")
    ))
}

pub(super) fn load_modules(
    ctx: &Arc<CudaContext>,
    cc: (i32, i32),
    options: GpuOptions,
) -> Result<(Vec<Arc<CudaModule>>, String)> {
    let driver = driver_version();
    // Libraries loaded so far, in candidate order (loaded lazily: an
    // embedded fatbin needs none).
    let mut libs: Vec<Nvrtc> = Vec::new();
    let mut candidates = nvrtc_candidates(driver).into_iter();
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
        let mut errors = Vec::new();
        let mut loaded = None;
        let mut i = 0;
        while loaded.is_none() {
            if i == libs.len() {
                match candidates.by_ref().find_map(|c| Nvrtc::load_from(&c).ok()) {
                    Some(n) => libs.push(n),
                    None => break,
                }
            }
            let n = &libs[i];
            i += 1;
            loaded = compile_and_load(ctx, n, m, cc, options, &mut errors);
        }
        let Some((module, origin)) = loaded else {
            let driver = driver.map_or("unknown".into(), |v| {
                format!("{}.{}", v / 1000, (v % 1000) / 10)
            });
            return Err(Error::Gpu(format!(
                "{}: no NVRTC output this driver (CUDA {driver}) loads{}",
                m.file,
                if errors.is_empty() {
                    " (no usable libnvrtc: run `bash scripts/nvrtc-setup.sh`)".to_string()
                } else {
                    format!(": {}", errors.join("; "))
                }
            )));
        };
        modules.push(module);
        origins.push(origin);
    }
    origins.dedup();
    Ok((modules, origins.join(", ")))
}

/// One module through one NVRTC: each target of [`arch_targets`] in turn
/// until the driver loads the result (a newer PTX ISA than the driver
/// knows fails at load time, not at compile time).
fn compile_and_load(
    ctx: &Arc<CudaContext>,
    n: &Nvrtc,
    m: &KernelModule,
    cc: (i32, i32),
    options: GpuOptions,
    errors: &mut Vec<String>,
) -> Option<(Arc<CudaModule>, String)> {
    let version = n
        .version()
        .map(|(a, b)| format!("{a}.{b}"))
        .unwrap_or_else(|e| e);
    for target in arch_targets(cc) {
        let arch = format!("--gpu-architecture={target}");
        let mut opts = vec![arch.as_str(), "--fmad=false"];
        if options.fast_math {
            opts.push("--use_fast_math");
        }
        let c = match n.compile(m.source, m.file, &opts) {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("NVRTC {version} {target}: {e}"));
                continue;
            }
        };
        let (image, how) = match c.cubin {
            Some(cubin) if target.starts_with("sm_") => (cubin, target.clone()),
            _ => (c.ptx, format!("{target} PTX")),
        };
        match ctx.load_module(Ptx::from_binary(image)) {
            Ok(module) => return Some((module, format!("NVRTC {version} ({how})"))),
            Err(e) => errors.push(format!("NVRTC {version} {how} refused by the driver: {e}")),
        }
    }
    None
}
