//! `livecensor doctor`: what this machine offers and which backend each
//! stage uses, with the reason. [`gather`] looks at the machine (never
//! panics: every probe is a library load or a file read that can fail);
//! [`decide`] is a pure function of what was found, unit-tested below.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::detect::tensorrt::{read_plan, TrtProbe};
use crate::detect::{DetectorBackend, DetectorConfig};
use crate::gpu::nvcuvid::dl_error;
use crate::gpu::nvenc_api::gpu_lacks_nvenc;
use crate::gpu::GpuProbe;

/// sha256 of `models/320n.onnx` pinned in `scripts/setup.sh`.
pub const MODEL_SHA256: &str = "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f";

/// Everything `doctor` looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Findings {
    pub cuda_compiled: bool,
    pub tensorrt_compiled: bool,
    /// libcuda.so.1 load result: Ok(driver version, e.g. 12080) / Err(why).
    pub driver: Result<Option<i32>, String>,
    pub probe: GpuProbe,
    /// libnvcuvid.so.1: Ok(path) / Err(why).
    pub nvdec: Result<String, String>,
    /// libnvidia-encode.so.1: Ok(path) / Err(why).
    pub nvenc: Result<String, String>,
    /// The TensorRT backend: shim compiled in, libnvinfer found.
    pub trt: TrtProbe,
    /// The configured detector and TensorRT plan.
    pub detector_backend: DetectorBackend,
    pub engine: PathBuf,
    /// The plan checked against its sidecar (no TensorRT needed): Ok(what
    /// it is) / Err(why not).
    pub engine_state: Result<String, String>,
    pub ort_library: PathBuf,
    pub ort_present: bool,
    pub model: PathBuf,
    /// None: file missing; Some(matches the pinned sum).
    pub model_sha_ok: Option<bool>,
    pub detector_threads: usize,
}

impl Default for Findings {
    /// A machine with nothing: no driver, no libraries, no model.
    fn default() -> Self {
        let none = || Err("not probed".to_string());
        Findings {
            cuda_compiled: false,
            tensorrt_compiled: false,
            driver: Err("not probed".into()),
            probe: GpuProbe::default(),
            nvdec: none(),
            nvenc: none(),
            trt: TrtProbe {
                feature: false,
                shim: None,
                stub_reason: Some("not probed".into()),
                library: none(),
            },
            detector_backend: DetectorBackend::Onnx,
            engine: PathBuf::new(),
            engine_state: none(),
            ort_library: PathBuf::new(),
            ort_present: false,
            model: PathBuf::new(),
            model_sha_ok: None,
            detector_threads: 1,
        }
    }
}

/// One line of the machine check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The backend a stage uses and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageChoice {
    pub stage: &'static str,
    pub backend: String,
    pub reason: String,
}

/// What `doctor` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoctorReport {
    pub version: &'static str,
    pub checks: Vec<Check>,
    pub stages: Vec<StageChoice>,
    pub notes: Vec<String>,
}

impl DoctorReport {
    pub fn stage(&self, name: &str) -> Option<&StageChoice> {
        self.stages.iter().find(|s| s.stage == name)
    }
}

/// Tries each name with dlopen; the first that loads wins.
pub fn try_load(names: &[&str]) -> Result<String, String> {
    let mut last = String::from("no candidates");
    for n in names {
        // SAFETY: loading a shared library runs its initialisers; these are
        // vendor libraries (NVIDIA, onnxruntime) whose initialisers have no
        // preconditions. The handle is closed at once.
        match unsafe { libloading::Library::new(*n) } {
            Ok(_lib) => return Ok((*n).to_string()),
            Err(e) => last = dl_error(&e),
        }
    }
    Err(last)
}

/// Loads libcuda.so.1 and asks for the driver version (no cuInit needed).
pub fn driver_version() -> Result<Option<i32>, String> {
    // SAFETY: as in `try_load`.
    let lib = unsafe { libloading::Library::new("libcuda.so.1") }.map_err(|e| dl_error(&e))?;
    type F = unsafe extern "C" fn(*mut std::ffi::c_int) -> std::ffi::c_int;
    // SAFETY: cuDriverGetVersion has this signature in cuda.h.
    let f: libloading::Symbol<F> = match unsafe { lib.get(b"cuDriverGetVersion\0") } {
        Ok(f) => f,
        Err(_) => return Ok(None),
    };
    let mut v = 0;
    // SAFETY: a valid out-pointer.
    let r = unsafe { f(&mut v) };
    Ok((r == 0).then_some(v))
}

/// sha256 of a file, hex; None if it cannot be read.
pub fn sha256_file(path: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).ok()?;
    Some(
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

/// Looks at this machine.
pub fn gather(detector: &DetectorConfig) -> Findings {
    let ort_library = crate::detect::resolve_ort_library(detector);
    let model = detector.model.clone();
    let model_sha_ok = sha256_file(&model).map(|s| s == MODEL_SHA256);
    Findings {
        cuda_compiled: cfg!(feature = "cuda"),
        tensorrt_compiled: cfg!(feature = "tensorrt"),
        driver: driver_version(),
        probe: crate::gpu::probe(),
        nvdec: try_load(&["libnvcuvid.so.1"]),
        nvenc: try_load(&["libnvidia-encode.so.1"]),
        trt: crate::detect::tensorrt::probe(),
        detector_backend: detector.backend,
        engine: detector.engine.clone(),
        engine_state: plan_state(&detector.engine),
        ort_present: ort_library.exists(),
        ort_library,
        model,
        model_sha_ok,
        detector_threads: detector.threads,
    }
}

fn yes_no<T>(r: &Result<T, String>, ok: impl Fn(&T) -> String) -> (bool, String) {
    match r {
        Ok(v) => (true, ok(v)),
        Err(e) => (false, e.clone()),
    }
}

/// Turns findings into the report: checks, then per stage the backend and
/// the reason.
pub fn decide(f: &Findings) -> DoctorReport {
    let mut checks = Vec::new();
    let (ok, detail) = yes_no(&f.driver, |v| match v {
        Some(v) => format!(
            "libcuda.so.1, driver API {}.{} (runs CUDA {} output: NVRTC {} chosen)",
            v / 1000,
            (v % 1000) / 10,
            if *v >= crate::gpu::decide::CUDA13_DRIVER {
                "12 and 13"
            } else {
                "12, not 13"
            },
            crate::gpu::decide::nvrtc_sonames(Some(*v))[0].trim_start_matches("libnvrtc.so.")
        ),
        None => "libcuda.so.1 (version unknown)".into(),
    });
    checks.push(Check {
        name: "NVIDIA driver",
        ok,
        detail,
    });
    let gpu_names: Vec<String> = f
        .probe
        .devices
        .iter()
        .map(|d| {
            format!(
                "{}: {} (sm_{}{}, {} MiB)",
                d.ordinal,
                d.name,
                d.compute_capability.0,
                d.compute_capability.1,
                d.memory_bytes >> 20
            )
        })
        .collect();
    checks.push(Check {
        name: "GPUs",
        ok: !gpu_names.is_empty(),
        detail: if gpu_names.is_empty() {
            f.probe
                .problem
                .clone()
                .unwrap_or_else(|| "none found".into())
        } else {
            gpu_names.join("; ")
        },
    });
    checks.push(Check {
        name: "NVRTC",
        ok: f.probe.nvrtc.is_some() || f.probe.fatbin_embedded,
        detail: match (&f.probe.nvrtc, f.probe.fatbin_embedded, f.cuda_compiled) {
            (_, _, false) => "not probed (built without --features cuda)".into(),
            (Some(n), _, _) => n.clone(),
            (None, true, _) => "not found (not needed: kernels embedded as a fatbin)".into(),
            (None, false, _) => {
                "not found: run `bash scripts/nvrtc-setup.sh` or put libnvrtc.so.13 on LD_LIBRARY_PATH"
                    .into()
            }
        },
    });
    checks.push(Check {
        name: "CUDA backend",
        ok: f.probe.usable(),
        detail: f.probe.to_string(),
    });
    let (ok, detail) = yes_no(&f.nvdec, |p| p.clone());
    checks.push(Check {
        name: "NVDEC library",
        ok,
        detail,
    });
    let first_gpu = f.probe.devices.first().map(|d| d.name.as_str());
    let no_nvenc_gpu = first_gpu.filter(|n| gpu_lacks_nvenc(n));
    let (mut ok, mut detail) = yes_no(&f.nvenc, |p| p.clone());
    if let Some(n) = no_nvenc_gpu {
        ok = false;
        detail = format!("{detail} (but {n} has no NVENC hardware)");
    }
    checks.push(Check {
        name: "NVENC",
        ok,
        detail,
    });
    checks.push(Check {
        name: "TensorRT",
        ok: f.trt.usable(),
        detail: f.trt.to_string(),
    });
    let (ok, detail) = yes_no(&f.engine_state, |s| format!("{} ({s})", f.engine.display()));
    checks.push(Check {
        name: "TensorRT plan",
        ok,
        detail,
    });
    checks.push(Check {
        name: "onnxruntime",
        ok: f.ort_present,
        detail: f.ort_library.display().to_string(),
    });
    checks.push(Check {
        name: "model",
        ok: f.model_sha_ok == Some(true),
        detail: format!(
            "{} ({})",
            f.model.display(),
            match f.model_sha_ok {
                None => "missing: run `bash scripts/setup.sh`",
                Some(true) => "sha256 matches the pinned sum",
                Some(false) => "sha256 does NOT match the pinned sum",
            }
        ),
    });

    let gpu = f.probe.usable();
    let gpu_why = || {
        if !f.cuda_compiled {
            "built without --features cuda".to_string()
        } else {
            f.probe
                .problem
                .clone()
                .unwrap_or_else(|| "the CUDA backend is not usable here".into())
        }
    };
    let mut stages = Vec::new();
    stages.push(match (&f.nvdec, gpu) {
        (Ok(_), true) => StageChoice {
            stage: "decode",
            backend: "NVDEC".into(),
            reason: "libnvcuvid loaded, frames stay in device memory".into(),
        },
        (Err(e), true) => StageChoice {
            stage: "decode",
            backend: "CPU openh264".into(),
            reason: format!("NVDEC library missing: {e}"),
        },
        (_, false) => StageChoice {
            stage: "decode",
            backend: "CPU openh264".into(),
            reason: gpu_why(),
        },
    });
    for stage in ["preprocess", "censor"] {
        stages.push(if gpu {
            StageChoice {
                stage,
                backend: "CUDA kernels".into(),
                reason: f
                    .probe
                    .nvrtc
                    .as_ref()
                    .map(|n| format!("NVRTC {n}, chosen for the driver's CUDA version"))
                    .unwrap_or_else(|| "embedded fatbin".into()),
            }
        } else {
            StageChoice {
                stage,
                backend: "CPU (Rust)".into(),
                reason: gpu_why(),
            }
        });
    }
    stages.push(detect_stage(f, gpu, &gpu_why()));
    stages.push(match (&f.nvenc, gpu, no_nvenc_gpu) {
        (_, true, Some(n)) => StageChoice {
            stage: "encode",
            backend: "CPU openh264".into(),
            reason: format!(
                "NVENC: not on {n} (no encoder hardware), one device->host copy per frame"
            ),
        },
        (Ok(_), true, None) => StageChoice {
            stage: "encode",
            backend: "NVENC".into(),
            reason: "libnvidia-encode loaded (session opened at start; CPU if it fails)".into(),
        },
        (Err(e), true, None) => StageChoice {
            stage: "encode",
            backend: "CPU openh264".into(),
            reason: format!("NVENC library missing: {e}"),
        },
        (_, false, _) => StageChoice {
            stage: "encode",
            backend: "CPU openh264".into(),
            reason: gpu_why(),
        },
    });
    let mut notes = Vec::new();
    if gpu {
        notes.push(
            "the GPU stages above are what `censor --gpu` and `bench --gpu` (config [gpu] \
             enabled) use; without it, and always for `serve`, the pipeline runs on the CPU"
                .into(),
        );
    }
    if f.model_sha_ok.is_none() || !f.ort_present {
        notes.push("run `bash scripts/setup.sh` to fetch the model and onnxruntime".into());
    }
    DoctorReport {
        version: env!("CARGO_PKG_VERSION"),
        checks,
        stages,
        notes,
    }
}

/// What the plan at `path` is, from its sidecar (no TensorRT needed).
pub fn plan_state(path: &Path) -> Result<String, String> {
    match read_plan(path) {
        Ok((_, Some(m))) => Ok(format!(
            "TensorRT {}, {}, batch 1..={}, {} profile(s), built on {}",
            m.tensorrt, m.precision, m.max_batch, m.profiles, m.gpu
        )),
        Ok((bytes, None)) => Ok(format!("{} bytes, no sidecar: not checked", bytes.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// The detector the configuration selects, whether it can run here, and
/// what TensorRT would need when it is not the one selected.
fn detect_stage(f: &Findings, gpu: bool, gpu_why: &str) -> StageChoice {
    let unavailable = |reason: String| StageChoice {
        stage: "detect",
        backend: "unavailable".into(),
        reason,
    };
    if f.detector_backend == DetectorBackend::TensorRt {
        let missing = if f.trt.shim.is_none() {
            Some(f.trt.to_string())
        } else if let Err(e) = &f.trt.library {
            Some(e.clone())
        } else if let Err(e) = &f.engine_state {
            Some(e.clone())
        } else if !gpu {
            Some(gpu_why.to_string())
        } else {
            None
        };
        return match missing {
            Some(r) => unavailable(format!("detector.backend = tensorrt, but {r}")),
            None => StageChoice {
                stage: "detect",
                backend: format!("TensorRT ({})", f.engine.display()),
                reason: format!(
                    "detector.backend = tensorrt; one execution context per profile; device frames' inputs read in place and outputs decoded on the device, only boxes copied ({})",
                    f.trt.library.as_deref().unwrap_or("libnvinfer")
                ),
            },
        };
    }
    if !f.ort_present || f.model_sha_ok.is_none() {
        return unavailable("run `bash scripts/setup.sh` (model or onnxruntime missing)".into());
    }
    let why_not_trt = if !f.tensorrt_compiled {
        match &f.trt.library {
            Ok(l) => format!("TensorRT found ({l}) but built without --features tensorrt"),
            Err(_) => {
                "TensorRT (libnvinfer) not found, and built without --features tensorrt".into()
            }
        }
    } else if f.trt.shim.is_none() {
        f.trt.to_string()
    } else if let Err(e) = &f.trt.library {
        e.clone()
    } else if let Err(e) = &f.engine_state {
        format!("TensorRT is usable but {e}")
    } else if !gpu {
        format!("TensorRT is usable but {gpu_why}")
    } else {
        "TensorRT is usable here too: set detector.backend = \"tensorrt\" (--detector tensorrt)"
            .into()
    };
    StageChoice {
        stage: "detect",
        backend: format!("CPU onnxruntime ({} threads)", f.detector_threads),
        reason: if gpu {
            format!(
                "detector.backend = onnx; a device frame's input is copied to the host once; {why_not_trt}"
            )
        } else {
            format!("detector.backend = onnx; {why_not_trt}")
        },
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "livecensor {}", self.version)?;
        writeln!(
            f,
            "features         cuda: {}  tensorrt: {}",
            if cfg!(feature = "cuda") { "yes" } else { "no" },
            if cfg!(feature = "tensorrt") {
                "yes"
            } else {
                "no"
            }
        )?;
        for c in &self.checks {
            writeln!(
                f,
                "{:<16} {:<4} {}",
                c.name,
                if c.ok { "yes" } else { "NO" },
                c.detail
            )?;
        }
        writeln!(f)?;
        for s in &self.stages {
            writeln!(f, "{:<16} {}  ({})", s.stage, s.backend, s.reason)?;
        }
        writeln!(f, "\nfallbacks (censor, bench and serve alike):")?;
        for (when, what) in crate::backend::FALLBACKS {
            writeln!(f, "  {when}: {what}")?;
        }
        for n in &self.notes {
            writeln!(f, "\nnote: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuDevice;

    fn h100_box() -> Findings {
        Findings {
            cuda_compiled: true,
            tensorrt_compiled: false,
            driver: Ok(Some(12080)),
            probe: GpuProbe {
                compiled: true,
                driver_present: true,
                driver_version: Some(12080),
                devices: vec![GpuDevice {
                    ordinal: 0,
                    name: "NVIDIA H100 80GB HBM3".into(),
                    compute_capability: (9, 0),
                    memory_bytes: 80 << 30,
                }],
                fatbin_embedded: false,
                nvrtc: Some("libnvrtc.so.13 (13.0)".into()),
                problem: None,
            },
            nvdec: Ok("libnvcuvid.so.1".into()),
            nvenc: Ok("libnvidia-encode.so.1".into()),
            trt: TrtProbe {
                feature: false,
                shim: None,
                stub_reason: Some("TensorRT backend not built".into()),
                library: Err("TensorRT library not found: libnvinfer.so.11: cannot open".into()),
            },
            detector_backend: DetectorBackend::Onnx,
            engine: "models/320n.plan".into(),
            engine_state: Err("TensorRT plan models/320n.plan: not found".into()),
            ort_library: "models/libonnxruntime.so".into(),
            ort_present: true,
            model: "models/320n.onnx".into(),
            model_sha_ok: Some(true),
            detector_threads: 4,
        }
    }

    #[test]
    fn h100_decodes_on_the_gpu_and_encodes_on_the_cpu() {
        let r = decide(&h100_box());
        assert_eq!(r.stage("decode").map(|s| s.backend.as_str()), Some("NVDEC"));
        assert_eq!(
            r.stage("censor").map(|s| s.backend.as_str()),
            Some("CUDA kernels")
        );
        let enc = r.stage("encode").unwrap();
        assert_eq!(enc.backend, "CPU openh264");
        assert!(enc.reason.contains("not on NVIDIA H100"), "{}", enc.reason);
        let detect = r.stage("detect").unwrap();
        assert!(detect.backend.starts_with("CPU onnxruntime"));
        assert!(detect.reason.contains("TensorRT"));
        let text = r.to_string();
        assert!(
            text.contains("sm_90") && text.contains("driver API 12.8"),
            "{text}"
        );
        assert!(text.contains("no NVENC hardware"), "{text}");
        assert!(text.contains("libnvrtc.so.13 (13.0)"), "{text}");
    }

    #[test]
    fn a_gpu_with_nvenc_encodes_on_it() {
        let mut f = h100_box();
        f.probe.devices[0].name = "NVIDIA L40S".into();
        let r = decide(&f);
        assert_eq!(r.stage("encode").map(|s| s.backend.as_str()), Some("NVENC"));
        f.nvenc = Err("libnvidia-encode.so.1: cannot open".into());
        let r = decide(&f);
        let enc = r.stage("encode").unwrap();
        assert_eq!(enc.backend, "CPU openh264");
        assert!(enc.reason.contains("library missing"));
    }

    #[test]
    fn a_bare_machine_is_all_cpu_with_reasons() {
        let f = Findings {
            driver: Err("libcuda.so.1: cannot open shared object file".into()),
            nvdec: Err("x".into()),
            nvenc: Err("y".into()),
            ..Findings::default()
        };
        let r = decide(&f);
        for s in ["decode", "preprocess", "censor", "encode"] {
            let c = r.stage(s).unwrap();
            assert!(c.backend.starts_with("CPU"), "{s}: {c:?}");
            assert!(c.reason.contains("--features cuda"), "{s}: {c:?}");
        }
        assert_eq!(r.stage("detect").unwrap().backend, "unavailable");
        assert!(r.to_string().contains("scripts/setup.sh"));
    }

    fn trt_ready(f: &mut Findings) {
        f.tensorrt_compiled = true;
        f.trt = TrtProbe {
            feature: true,
            shim: Some("TensorRT 11.4.0 headers in .cache/tensorrt/include".into()),
            stub_reason: None,
            library: Ok("libnvinfer.so.11 (TensorRT 11.4.0)".into()),
        };
        f.engine_state = Ok("TensorRT 11.4.0, fp32, batch 1..=8, 2 profile(s)".into());
    }

    #[test]
    fn tensorrt_is_used_when_configured_and_everything_is_there() {
        let mut f = h100_box();
        trt_ready(&mut f);
        f.detector_backend = DetectorBackend::TensorRt;
        let r = decide(&f);
        let d = r.stage("detect").unwrap();
        assert_eq!(d.backend, "TensorRT (models/320n.plan)");
        assert!(d.reason.contains("libnvinfer.so.11"), "{d:?}");
        let text = r.to_string();
        assert!(
            text.contains("TensorRT plan") && text.contains("2 profile(s)"),
            "{text}"
        );

        // Configured for ONNX: says TensorRT would work.
        f.detector_backend = DetectorBackend::Onnx;
        let d = decide(&f).stage("detect").cloned().unwrap();
        assert!(d.backend.starts_with("CPU onnxruntime"));
        assert!(d.reason.contains("--detector tensorrt"), "{d:?}");
    }

    #[test]
    fn tensorrt_configured_but_missing_says_which_piece() {
        let mut f = h100_box();
        f.detector_backend = DetectorBackend::TensorRt;
        let d = decide(&f).stage("detect").cloned().unwrap();
        assert_eq!(d.backend, "unavailable");
        assert!(d.reason.contains("TensorRT backend not built"), "{d:?}");

        trt_ready(&mut f);
        f.trt.library = Err("TensorRT library not found: libnvinfer.so.11: cannot open".into());
        let d = decide(&f).stage("detect").cloned().unwrap();
        assert!(d.reason.contains("libnvinfer.so.11"), "{d:?}");

        trt_ready(&mut f);
        f.engine_state = Err("TensorRT plan models/320n.plan: not found".into());
        let d = decide(&f).stage("detect").cloned().unwrap();
        assert!(d.reason.contains("not found"), "{d:?}");

        trt_ready(&mut f);
        f.probe.devices.clear();
        let d = decide(&f).stage("detect").cloned().unwrap();
        assert_eq!(d.backend, "unavailable");
    }

    #[test]
    fn gather_on_this_machine_never_panics() {
        let report = decide(&gather(&DetectorConfig::default()));
        assert_eq!(report.stages.len(), 5);
        assert!(!report.to_string().is_empty());
    }

    #[test]
    fn sha256_of_a_known_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(sha256_file(&dir.path().join("missing")), None);
    }
}
