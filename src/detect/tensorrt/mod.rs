//! The TensorRT detector backend (feature `tensorrt`): NudeNet 320n as a
//! TensorRT plan, run in-process on N execution contexts, each bound to its
//! own optimisation profile and CUDA stream.
//!
//! - `shim.cpp` (compiled by build.rs against TensorRT's headers) is a C ABI
//!   over TensorRT's C++ API that dlopens libnvinfer at run time, so the
//!   binary builds and starts where TensorRT is absent.
//! - This file: what needs no TensorRT and is unit-tested here: plan
//!   sidecars and their checks (a truncated or foreign plan is an error
//!   before TensorRT or the GPU is touched), profile dims for `engine
//!   build`, the engine layout the detector accepts, build options, and the
//!   probe `doctor` prints.
//! - With the shim (`cfg(livecensor_trt_shim)`, set by build.rs): [`TrtEngine`],
//!   [`TrtDetector`] (a [`DetectBackend`](crate::detect::DetectBackend)),
//!   [`build_engine`]. Without it: the same names, whose constructors return
//!   [`DetectError::TrtNotBuilt`], so callers carry no `cfg`.
//!   By job: `library.rs` (libnvinfer, logger, probe), `engine.rs` (plans on
//!   a device), `detector.rs` (contexts and inference), `bindings.rs`
//!   (device buffers, shapes, addresses, enqueue), `backend.rs` (device
//!   inputs and the `DetectBackend` impl), `builder.rs` (`engine build`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::postprocess::OUTPUT_ROWS;
use crate::error::DetectError;

#[cfg(livecensor_trt_shim)]
mod backend;
#[cfg(livecensor_trt_shim)]
mod bindings;
#[cfg(livecensor_trt_shim)]
mod builder;
#[cfg(livecensor_trt_shim)]
mod detector;
#[cfg(livecensor_trt_shim)]
mod engine;
#[cfg(livecensor_trt_shim)]
mod ffi;
#[cfg(livecensor_trt_shim)]
mod library;
#[cfg(livecensor_trt_shim)]
pub use builder::build_engine;
#[cfg(livecensor_trt_shim)]
pub use detector::TrtDetector;
#[cfg(livecensor_trt_shim)]
pub use engine::TrtEngine;
#[cfg(livecensor_trt_shim)]
pub use library::{header_version, probe, TrtLibrary};

#[cfg(not(livecensor_trt_shim))]
mod stub;
#[cfg(not(livecensor_trt_shim))]
pub use stub::*;

/// The CUDA kernels' context must be on the engine's device (`[gpu]
/// device`, passed through `detect::backend::backends_on`): device
/// pointers do not cross GPUs.
pub fn check_same_device(
    engine: usize,
    kernels: Option<usize>,
) -> Result<(), crate::error::DetectError> {
    match kernels {
        Some(k) if k != engine => Err(crate::error::DetectError::TensorRt(format!(
            "the TensorRT engine is on CUDA device {engine} but the CUDA kernels on device {k}"
        ))),
        _ => Ok(()),
    }
}

/// Sidecar format written next to every plan `engine build` makes.
pub const PLAN_FORMAT: u32 = 1;

/// A TensorRT version as the library and headers encode it
/// (`major * 10000 + minor * 100 + patch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TrtVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl TrtVersion {
    pub fn from_encoded(v: i64) -> TrtVersion {
        let v = v.max(0) as u64;
        TrtVersion {
            major: (v / 10000) as u32,
            minor: ((v / 100) % 100) as u32,
            patch: (v % 100) as u32,
        }
    }

    /// Plans are tied to the TensorRT release that built them.
    pub fn same_release(&self, other: &TrtVersion) -> bool {
        self.major == other.major && self.minor == other.minor
    }
}

impl fmt::Display for TrtVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// TensorRT's `DataType` codes that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrtDataType {
    Float,
    Half,
    Other(i32),
}

impl TrtDataType {
    pub fn from_code(code: i32) -> TrtDataType {
        match code {
            0 => TrtDataType::Float,
            1 => TrtDataType::Half,
            c => TrtDataType::Other(c),
        }
    }
}

impl fmt::Display for TrtDataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrtDataType::Float => write!(f, "fp32"),
            TrtDataType::Half => write!(f, "fp16"),
            TrtDataType::Other(c) => write!(f, "DataType {c}"),
        }
    }
}

/// One input or output of an engine, as TensorRT reports it (-1: dynamic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoTensor {
    pub name: String,
    pub input: bool,
    pub dtype: TrtDataType,
    pub dims: Vec<i64>,
}

/// Min / opt / max dims of the input in one optimisation profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileShape {
    pub min: Vec<i64>,
    pub opt: Vec<i64>,
    pub max: Vec<i64>,
}

/// The `[batch, 3, size, size]` input dims.
pub fn input_dims(batch: usize, size: usize) -> [i64; 4] {
    [batch as i64, 3, size as i64, size as i64]
}

/// The profile `engine build` gives each execution context: batch 1 to
/// `max_batch` (tuned for `max_batch`, the batcher's busy case), spatial
/// axes fixed at `size`. `network` is the ONNX input's dims (-1: dynamic);
/// a fixed axis must already have the value the profile needs.
pub fn profile_dims(
    network: &[i64],
    max_batch: usize,
    size: usize,
) -> Result<ProfileShape, String> {
    let [b, c, h, w] = network else {
        return Err(format!(
            "the model input has dims {network:?}; the detector needs [batch, 3, height, width]"
        ));
    };
    if max_batch == 0 {
        return Err("max batch must be at least 1".into());
    }
    if *b != -1 && !(*b == 1 && max_batch == 1) {
        return Err(format!(
            "the model input has a fixed batch of {b}: export the ONNX model with a dynamic \
             batch axis to build for up to {max_batch}"
        ));
    }
    if *c != 3 && *c != -1 {
        return Err(format!("the model input has {c} channels, expected 3"));
    }
    for (axis, v) in [("height", h), ("width", w)] {
        if *v != -1 && *v != size as i64 {
            return Err(format!(
                "the model input {axis} is fixed at {v}, the detector input size is {size}"
            ));
        }
    }
    Ok(ProfileShape {
        min: input_dims(1, size).to_vec(),
        opt: input_dims(max_batch, size).to_vec(),
        max: input_dims(max_batch, size).to_vec(),
    })
}

/// What the detector needs from an engine, checked once at load: one
/// `[batch, 3, S, S]` input of fp32 or fp16, one `[batch, 22, anchors]`
/// output of fp32 or fp16, and per profile the batch range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineLayout {
    pub input: String,
    pub output: String,
    pub input_dtype: TrtDataType,
    pub output_dtype: TrtDataType,
    pub input_size: usize,
    pub profiles: Vec<ProfileShape>,
}

impl EngineLayout {
    pub fn new(io: &[IoTensor], profiles: Vec<ProfileShape>) -> Result<EngineLayout, String> {
        let inputs: Vec<&IoTensor> = io.iter().filter(|t| t.input).collect();
        let outputs: Vec<&IoTensor> = io.iter().filter(|t| !t.input).collect();
        let ([input], [output]) = (inputs.as_slice(), outputs.as_slice()) else {
            return Err(format!(
                "the engine has {} inputs and {} outputs; the detector needs one of each",
                inputs.len(),
                outputs.len()
            ));
        };
        for t in [input, output] {
            if !matches!(t.dtype, TrtDataType::Float | TrtDataType::Half) {
                return Err(format!(
                    "tensor {} is {}, expected fp32 or fp16",
                    t.name, t.dtype
                ));
            }
        }
        if profiles.is_empty() {
            return Err("the engine has no optimisation profile".into());
        }
        let size = match input.dims.as_slice() {
            [_, 3, h, w] if h == w && *h > 0 => *h as usize,
            [_, 3, -1, -1] => match profiles[0].max.as_slice() {
                [_, _, h, w] if h == w && *h > 0 => *h as usize,
                d => return Err(format!("profile 0 of {} has dims {d:?}", input.name)),
            },
            d => {
                return Err(format!(
                    "input {} has dims {d:?}, expected [batch, 3, S, S]",
                    input.name
                ))
            }
        };
        for (i, p) in profiles.iter().enumerate() {
            for d in [&p.min, &p.opt, &p.max] {
                let s = size as i64;
                if !matches!(d.as_slice(), [b, 3, h, w] if *b >= 1 && *h == s && *w == s) {
                    return Err(format!(
                        "profile {i} of {} has dims {d:?}, expected [batch, 3, {size}, {size}]",
                        input.name
                    ));
                }
            }
        }
        match output.dims.as_slice() {
            [_, rows, _] if *rows == OUTPUT_ROWS as i64 => {}
            d => {
                return Err(format!(
                    "output {} has dims {d:?}, expected [batch, {OUTPUT_ROWS}, anchors]",
                    output.name
                ))
            }
        }
        Ok(EngineLayout {
            input: input.name.clone(),
            output: output.name.clone(),
            input_dtype: input.dtype,
            output_dtype: output.dtype,
            input_size: size,
            profiles,
        })
    }

    /// Largest batch profile `profile` accepts.
    pub fn max_batch(&self, profile: usize) -> usize {
        self.profiles
            .get(profile)
            .and_then(|p| p.max.first())
            .map_or(0, |&b| b.max(0) as usize)
    }

    /// Whether `contexts` contexts, each on its own profile, can all run
    /// batches of up to `max_batch` images of `input_size`.
    pub fn check_contexts(
        &self,
        contexts: usize,
        max_batch: usize,
        input_size: usize,
    ) -> Result<(), String> {
        if input_size != self.input_size {
            return Err(format!(
                "the engine takes {s}x{s} inputs, detector.input_size is {input_size}",
                s = self.input_size
            ));
        }
        if contexts > self.profiles.len() {
            return Err(format!(
                "{contexts} execution contexts need {contexts} optimisation profiles, the plan has {}: \
                 rebuild it with `livecensor engine build --contexts {contexts}`",
                self.profiles.len()
            ));
        }
        for i in 0..contexts {
            let (lo, hi) = (self.profiles[i].min[0].max(1) as usize, self.max_batch(i));
            if lo > 1 || hi < max_batch {
                return Err(format!(
                    "profile {i} takes batches {lo}..={hi}, the batcher sends 1..={max_batch}: rebuild \
                     with `livecensor engine build --max-batch {max_batch}` or lower BATCH_SIZE"
                ));
            }
        }
        Ok(())
    }
}

/// Written by `engine build` as `PLAN.json`: lets a plan be checked
/// (truncated, replaced, built by another TensorRT) without loading it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanMeta {
    pub format: u32,
    pub tensorrt: TrtVersion,
    pub plan_bytes: u64,
    pub plan_sha256: String,
    /// The ONNX file's name and sum.
    pub onnx: String,
    pub onnx_sha256: String,
    pub input: String,
    pub input_size: usize,
    pub max_batch: usize,
    /// One per execution context.
    pub profiles: usize,
    /// fp32, fp16 or int8.
    pub precision: String,
    /// The GPU it was built on (plans are specific to a GPU model).
    pub gpu: String,
}

/// `models/320n.plan` -> `models/320n.plan.json`.
pub fn sidecar_path(plan: &Path) -> PathBuf {
    let mut s = plan.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

fn bad_plan(path: &Path, reason: impl Into<String>) -> DetectError {
    DetectError::BadPlan {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks plan bytes against their sidecar (when there is one).
pub fn check_plan(path: &Path, bytes: &[u8], meta: Option<&PlanMeta>) -> Result<(), DetectError> {
    if bytes.is_empty() {
        return Err(bad_plan(path, "the file is empty"));
    }
    let Some(m) = meta else {
        return Ok(());
    };
    if m.format != PLAN_FORMAT {
        return Err(bad_plan(
            path,
            format!(
                "sidecar format {} (this livecensor reads {PLAN_FORMAT})",
                m.format
            ),
        ));
    }
    if bytes.len() as u64 != m.plan_bytes {
        return Err(bad_plan(
            path,
            format!(
                "{} bytes, its sidecar says {}: truncated or replaced; rebuild it with `livecensor engine build`",
                bytes.len(),
                m.plan_bytes
            ),
        ));
    }
    if sha256_hex(bytes) != m.plan_sha256 {
        return Err(bad_plan(
            path,
            "sha256 differs from its sidecar's: corrupt or replaced; rebuild it with `livecensor engine build`",
        ));
    }
    Ok(())
}

/// A plan only loads into the TensorRT release that built it.
pub fn check_plan_version(
    path: &Path,
    meta: Option<&PlanMeta>,
    library: TrtVersion,
) -> Result<(), DetectError> {
    match meta {
        Some(m) if !m.tensorrt.same_release(&library) => Err(bad_plan(
            path,
            format!(
                "built by TensorRT {}, this machine has {library}: rebuild it here with `livecensor engine build`",
                m.tensorrt
            ),
        )),
        _ => Ok(()),
    }
}

/// Reads a plan and its sidecar and checks them; no TensorRT needed. A plan
/// without a sidecar (e.g. from trtexec) is accepted unchecked.
pub fn read_plan(path: &Path) -> Result<(Vec<u8>, Option<PlanMeta>), DetectError> {
    let bytes = std::fs::read(path).map_err(|e| {
        bad_plan(
            path,
            if e.kind() == std::io::ErrorKind::NotFound {
                "not found: build one on the GPU machine with `livecensor engine build --onnx models/320n.onnx -o PLAN`"
                    .to_string()
            } else {
                e.to_string()
            },
        )
    })?;
    let side = sidecar_path(path);
    let meta = match std::fs::read_to_string(&side) {
        Ok(text) => Some(
            serde_json::from_str::<PlanMeta>(&text)
                .map_err(|e| bad_plan(path, format!("sidecar {}: {e}", side.display())))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(bad_plan(path, format!("sidecar {}: {e}", side.display()))),
    };
    check_plan(path, &bytes, meta.as_ref())?;
    Ok((bytes, meta))
}

/// `livecensor engine build` options.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildOptions {
    pub onnx: PathBuf,
    pub output: PathBuf,
    /// Largest batch every profile takes.
    pub max_batch: usize,
    /// Optimisation profiles, one per execution context.
    pub contexts: usize,
    pub fp16: bool,
    pub int8: bool,
    /// Images for INT8 calibration.
    pub calib: Option<PathBuf>,
    /// Images per calibration batch.
    pub calib_batch: usize,
    pub input_size: usize,
    /// Builder workspace limit; 0 leaves TensorRT's default.
    pub workspace_mib: usize,
    pub device: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            onnx: PathBuf::from("models/320n.onnx"),
            output: PathBuf::from("models/320n.plan"),
            max_batch: 8,
            contexts: 1,
            fp16: false,
            int8: false,
            calib: None,
            calib_batch: 8,
            input_size: 320,
            workspace_mib: 0,
            device: 0,
        }
    }
}

/// Image files (png, jpg, jpeg) in a calibration folder, sorted.
pub fn calibration_images(dir: &Path) -> Result<Vec<PathBuf>, DetectError> {
    let bad = |r: String| DetectError::BadBuildOptions(format!("--calib {}: {r}", dir.display()));
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| bad(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| ["png", "jpg", "jpeg"].contains(&x.to_ascii_lowercase().as_str()))
        })
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(bad("no .png/.jpg images".into()));
    }
    Ok(v)
}

impl BuildOptions {
    /// Everything that can be checked without TensorRT.
    pub fn validate(&self) -> Result<(), DetectError> {
        let bad = |m: String| Err(DetectError::BadBuildOptions(m));
        if !(1..=64).contains(&self.max_batch) {
            return bad(format!("--max-batch {} must be 1..=64", self.max_batch));
        }
        if !(1..=16).contains(&self.contexts) {
            return bad(format!("--contexts {} must be 1..=16", self.contexts));
        }
        if self.input_size == 0 || self.input_size % 32 != 0 {
            return bad(format!(
                "input size {} must be a positive multiple of 32",
                self.input_size
            ));
        }
        if self.int8 != self.calib.is_some() {
            return bad("--int8 and --calib DIR go together".into());
        }
        if self.int8 && self.calib_batch == 0 {
            return bad("--calib-batch must be at least 1".into());
        }
        if !self.onnx.is_file() {
            return bad(format!("ONNX model {} not found", self.onnx.display()));
        }
        if self.output.as_os_str().is_empty() || self.output == self.onnx {
            return bad(format!("bad output path {:?}", self.output));
        }
        if let Some(dir) = &self.calib {
            calibration_images(dir)?;
        }
        Ok(())
    }

    pub fn precision(&self) -> &'static str {
        if self.int8 {
            "int8"
        } else if self.fp16 {
            "fp16"
        } else {
            "fp32"
        }
    }
}

/// What `engine build` wrote.
#[derive(Clone, Debug)]
pub struct BuildReport {
    pub plan: PathBuf,
    pub sidecar: PathBuf,
    pub meta: PlanMeta,
    pub seconds: f64,
}

/// Writes the plan and its sidecar (the sidecar last: a plan with a
/// sidecar is complete).
pub fn write_plan(
    path: &Path,
    bytes: &[u8],
    mut meta: PlanMeta,
) -> Result<(PathBuf, PlanMeta), DetectError> {
    meta.plan_bytes = bytes.len() as u64;
    meta.plan_sha256 = sha256_hex(bytes);
    let side = sidecar_path(path);
    let io = |p: &Path, e: std::io::Error| bad_plan(p, format!("writing: {e}"));
    // A stale sidecar must not vouch for the new plan while it is written.
    match std::fs::remove_file(&side) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&side, e)),
        _ => {}
    }
    std::fs::write(path, bytes).map_err(|e| io(path, e))?;
    let json = serde_json::to_string_pretty(&meta)
        .map_err(|e| bad_plan(&side, format!("encoding the sidecar: {e}")))?;
    std::fs::write(&side, json + "\n").map_err(|e| io(&side, e))?;
    Ok((side, meta))
}

/// `engine info`: the plan's sidecar, checked against the plan's bytes.
pub fn plan_info(path: &Path) -> Result<String, DetectError> {
    let (bytes, meta) = read_plan(path)?;
    let Some(m) = meta else {
        return Ok(format!(
            "{}: {} bytes, no sidecar ({} missing): built outside livecensor, not checked",
            path.display(),
            bytes.len(),
            sidecar_path(path).display()
        ));
    };
    Ok(format!(
        "{}: {} bytes, sha256 ok\n  TensorRT {} on {}\n  from {} (sha256 {})\n  input {} [1..={}, 3, {s}, {s}], {} profile(s) (one per execution context), {}",
        path.display(),
        m.plan_bytes,
        m.tensorrt,
        m.gpu,
        m.onnx,
        &m.onnx_sha256[..m.onnx_sha256.len().min(12)],
        m.input,
        m.max_batch,
        m.profiles,
        m.precision,
        s = m.input_size,
    ))
}

/// What this binary and machine offer the TensorRT backend (for `doctor`);
/// never fails, never panics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrtProbe {
    /// Built with feature `tensorrt`.
    pub feature: bool,
    /// The shim and the headers it was compiled against, e.g. "TensorRT
    /// 11.4.0 headers in ..."; None: a stub.
    pub shim: Option<String>,
    /// Why the backend is a stub, when it is.
    pub stub_reason: Option<String>,
    /// libnvinfer: Ok("libnvinfer.so.11 (TensorRT 11.4.0)") or Err(why).
    pub library: Result<String, String>,
}

impl TrtProbe {
    /// Whether [`TrtEngine::load`] can get past loading TensorRT here.
    pub fn usable(&self) -> bool {
        self.shim.is_some() && self.library.is_ok()
    }
}

/// libnvinfer sonames tried, newest first.
pub const NVINFER_NAMES: [&str; 3] = ["libnvinfer.so.11", "libnvinfer.so.10", "libnvinfer.so"];

/// Finds libnvinfer without the shim (dlopen + `getInferLibVersion`), so a
/// stub build can still say what the machine has.
pub fn find_nvinfer() -> Result<String, String> {
    let mut first = None;
    for name in NVINFER_NAMES {
        // SAFETY: loading NVIDIA's library runs its initialisers, which have
        // no preconditions; the handle is closed when `lib` drops.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => {
                type F = unsafe extern "C" fn() -> i32;
                // SAFETY: getInferLibVersion has this signature in
                // NvInferRuntimeBase.h.
                let version = unsafe { lib.get::<F>(b"getInferLibVersion\0") }
                    .ok()
                    // SAFETY: no arguments, returns a number.
                    .map(|f| TrtVersion::from_encoded(i64::from(unsafe { f() })));
                return Ok(match version {
                    Some(v) => format!("{name} (TensorRT {v})"),
                    None => format!("{name} (version unknown)"),
                });
            }
            Err(e) => {
                first.get_or_insert_with(|| crate::gpu::nvcuvid::dl_error(&e));
            }
        }
    }
    Err(format!(
        "TensorRT library not found: {} (tried {})",
        first.unwrap_or_default(),
        NVINFER_NAMES.join(", ")
    ))
}

impl fmt::Display for TrtProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.shim, &self.stub_reason) {
            (Some(s), _) => write!(f, "shim built ({s})")?,
            (None, Some(r)) => write!(f, "stub ({r})")?,
            (None, None) => write!(f, "stub")?,
        }
        match &self.library {
            Ok(l) => write!(f, "; {l}"),
            Err(e) => write!(f, "; {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_and_kernels_share_a_device() {
        assert!(check_same_device(1, Some(1)).is_ok());
        assert!(check_same_device(1, None).is_ok());
        let e = check_same_device(1, Some(0)).unwrap_err().to_string();
        assert!(e.contains("device 1") && e.contains("device 0"), "{e}");
    }

    fn io(name: &str, input: bool, dims: &[i64]) -> IoTensor {
        IoTensor {
            name: name.into(),
            input,
            dtype: TrtDataType::Float,
            dims: dims.to_vec(),
        }
    }

    fn profile(max: i64) -> ProfileShape {
        ProfileShape {
            min: vec![1, 3, 320, 320],
            opt: vec![max, 3, 320, 320],
            max: vec![max, 3, 320, 320],
        }
    }

    #[test]
    fn versions_decode_and_compare_by_release() {
        let v = TrtVersion::from_encoded(110400);
        assert_eq!((v.major, v.minor, v.patch), (11, 4, 0));
        assert_eq!(v.to_string(), "11.4.0");
        assert_eq!(TrtVersion::from_encoded(101601).to_string(), "10.16.1");
        assert!(v.same_release(&TrtVersion::from_encoded(110403)));
        assert!(!v.same_release(&TrtVersion::from_encoded(110500)));
        assert_eq!(TrtDataType::from_code(1), TrtDataType::Half);
        assert_eq!(TrtDataType::from_code(7).to_string(), "DataType 7");
    }

    #[test]
    fn profile_dims_for_the_nudenet_input() {
        let p = profile_dims(&[-1, 3, -1, -1], 8, 320).unwrap();
        assert_eq!(p, profile(8));
        let fixed_hw = profile_dims(&[-1, 3, 320, 320], 4, 320).unwrap();
        assert_eq!(fixed_hw.max, vec![4, 3, 320, 320]);
        assert_eq!(profile_dims(&[1, 3, 320, 320], 1, 320).unwrap().max[0], 1);
        let e = profile_dims(&[1, 3, 320, 320], 8, 320).unwrap_err();
        assert!(e.contains("fixed batch of 1"), "{e}");
        let e = profile_dims(&[-1, 3, 640, 640], 8, 320).unwrap_err();
        assert!(e.contains("height is fixed at 640"), "{e}");
        assert!(profile_dims(&[-1, 1, -1, -1], 8, 320)
            .unwrap_err()
            .contains("1 channels"));
        assert!(profile_dims(&[-1, 3, 320], 8, 320)
            .unwrap_err()
            .contains("[batch, 3, height, width]"));
        assert!(profile_dims(&[-1, 3, -1, -1], 0, 320).is_err());
    }

    #[test]
    fn layout_of_a_two_context_plan() {
        let ios = [
            io("images", true, &[-1, 3, -1, -1]),
            io("output0", false, &[-1, 22, -1]),
        ];
        let l = EngineLayout::new(&ios, vec![profile(8), profile(4)]).unwrap();
        assert_eq!((l.input.as_str(), l.output.as_str()), ("images", "output0"));
        assert_eq!(l.input_size, 320);
        assert_eq!((l.max_batch(0), l.max_batch(1), l.max_batch(2)), (8, 4, 0));
        l.check_contexts(2, 4, 320).unwrap();
        let e = l.check_contexts(2, 8, 320).unwrap_err();
        assert!(
            e.contains("profile 1 takes batches 1..=4") && e.contains("--max-batch 8"),
            "{e}"
        );
        let e = l.check_contexts(3, 4, 320).unwrap_err();
        assert!(
            e.contains("the plan has 2") && e.contains("--contexts 3"),
            "{e}"
        );
        let e = l.check_contexts(1, 4, 640).unwrap_err();
        assert!(e.contains("320x320"), "{e}");
    }

    #[test]
    fn layouts_the_detector_cannot_run() {
        let out = io("output0", false, &[-1, 22, 2100]);
        let e = EngineLayout::new(std::slice::from_ref(&out), vec![profile(8)]).unwrap_err();
        assert!(e.contains("0 inputs and 1 outputs"), "{e}");
        let e = EngineLayout::new(
            &[
                io("images", true, &[-1, 3, 320, 320]),
                io("o", false, &[-1, 84, 2100]),
            ],
            vec![profile(8)],
        )
        .unwrap_err();
        assert!(e.contains("expected [batch, 22, anchors]"), "{e}");
        let mut int8_in = io("images", true, &[-1, 3, 320, 320]);
        int8_in.dtype = TrtDataType::Other(2);
        let e = EngineLayout::new(&[int8_in, out.clone()], vec![profile(8)]).unwrap_err();
        assert!(e.contains("expected fp32 or fp16"), "{e}");
        let e = EngineLayout::new(
            &[io("images", true, &[-1, 3, 320, 320]), out.clone()],
            vec![],
        )
        .unwrap_err();
        assert!(e.contains("no optimisation profile"), "{e}");
        let mut odd = profile(8);
        odd.max = vec![8, 3, 640, 640];
        let e = EngineLayout::new(&[io("images", true, &[-1, 3, 320, 320]), out], vec![odd])
            .unwrap_err();
        assert!(e.contains("profile 0"), "{e}");
    }

    fn meta_for(bytes: &[u8]) -> PlanMeta {
        PlanMeta {
            format: PLAN_FORMAT,
            tensorrt: TrtVersion::from_encoded(110400),
            plan_bytes: bytes.len() as u64,
            plan_sha256: sha256_hex(bytes),
            onnx: "320n.onnx".into(),
            onnx_sha256: "c15d8273adad2d0a".into(),
            input: "images".into(),
            input_size: 320,
            max_batch: 8,
            profiles: 2,
            precision: "fp32".into(),
            gpu: "NVIDIA H100 80GB HBM3".into(),
        }
    }

    #[test]
    fn a_truncated_or_corrupt_plan_is_refused_before_tensorrt() {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("x.plan");
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let (side, meta) = write_plan(&plan, &bytes, meta_for(&[])).unwrap();
        assert_eq!(side, dir.path().join("x.plan.json"));
        assert_eq!(meta.plan_bytes, 5000);
        let (back, m) = read_plan(&plan).unwrap();
        assert_eq!((back, m), (bytes.clone(), Some(meta.clone())));
        let info = plan_info(&plan).unwrap();
        assert!(
            info.contains("TensorRT 11.4.0") && info.contains("2 profile(s)"),
            "{info}"
        );

        std::fs::write(&plan, &bytes[..1234]).unwrap();
        let e = read_plan(&plan).unwrap_err().to_string();
        assert!(
            e.contains("x.plan") && e.contains("1234 bytes, its sidecar says 5000"),
            "{e}"
        );
        let mut flipped = bytes.clone();
        flipped[100] ^= 1;
        std::fs::write(&plan, &flipped).unwrap();
        let e = read_plan(&plan).unwrap_err().to_string();
        assert!(e.contains("sha256 differs"), "{e}");
        std::fs::write(&plan, b"").unwrap();
        assert!(read_plan(&plan).unwrap_err().to_string().contains("empty"));

        std::fs::write(sidecar_path(&plan), "{not json").unwrap();
        std::fs::write(&plan, &bytes).unwrap();
        let e = read_plan(&plan).unwrap_err().to_string();
        assert!(e.contains("sidecar") && e.contains("x.plan.json"), "{e}");

        std::fs::remove_file(sidecar_path(&plan)).unwrap();
        assert_eq!(read_plan(&plan).unwrap().1, None);
        assert!(plan_info(&plan).unwrap().contains("no sidecar"));

        let e = read_plan(&dir.path().join("missing.plan"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.plan") && e.contains("engine build"),
            "{e}"
        );
    }

    #[test]
    fn a_plan_from_another_tensorrt_release_is_refused() {
        let p = Path::new("m.plan");
        let m = meta_for(b"x");
        check_plan_version(p, Some(&m), TrtVersion::from_encoded(110402)).unwrap();
        check_plan_version(p, None, TrtVersion::from_encoded(100000)).unwrap();
        let e = check_plan_version(p, Some(&m), TrtVersion::from_encoded(101601))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("built by TensorRT 11.4.0, this machine has 10.16.1"),
            "{e}"
        );
        let mut old = m;
        old.format = 9;
        assert!(check_plan(p, b"x", Some(&old))
            .unwrap_err()
            .to_string()
            .contains("format 9"));
    }

    #[test]
    fn build_options_are_checked_before_tensorrt() {
        let dir = tempfile::tempdir().unwrap();
        let onnx = dir.path().join("m.onnx");
        std::fs::write(&onnx, b"onnx").unwrap();
        let ok = BuildOptions {
            onnx: onnx.clone(),
            output: dir.path().join("m.plan"),
            ..BuildOptions::default()
        };
        ok.validate().unwrap();
        assert_eq!(ok.precision(), "fp32");
        let msg = |o: BuildOptions| o.validate().unwrap_err().to_string();
        assert!(msg(BuildOptions {
            max_batch: 0,
            ..ok.clone()
        })
        .contains("--max-batch 0"));
        assert!(msg(BuildOptions {
            contexts: 17,
            ..ok.clone()
        })
        .contains("--contexts 17"));
        assert!(msg(BuildOptions {
            input_size: 300,
            ..ok.clone()
        })
        .contains("multiple of 32"));
        assert!(msg(BuildOptions {
            int8: true,
            ..ok.clone()
        })
        .contains("go together"));
        assert!(msg(BuildOptions {
            output: onnx.clone(),
            ..ok.clone()
        })
        .contains("output path"));
        let e = msg(BuildOptions {
            onnx: dir.path().join("none.onnx"),
            ..ok.clone()
        });
        assert!(
            e.starts_with("engine build: ONNX model") && e.contains("none.onnx"),
            "{e}"
        );
        let calib = dir.path().join("calib");
        std::fs::create_dir(&calib).unwrap();
        let with_calib = BuildOptions {
            int8: true,
            calib: Some(calib.clone()),
            ..ok.clone()
        };
        assert!(msg(with_calib.clone()).contains("no .png/.jpg images"));
        std::fs::write(calib.join("b.PNG"), b"x").unwrap();
        std::fs::write(calib.join("a.jpg"), b"x").unwrap();
        std::fs::write(calib.join("notes.txt"), b"x").unwrap();
        with_calib.validate().unwrap();
        assert_eq!(with_calib.precision(), "int8");
        assert_eq!(
            calibration_images(&calib).unwrap(),
            vec![calib.join("a.jpg"), calib.join("b.PNG")]
        );
    }

    #[test]
    fn probe_explains_itself() {
        let p = probe();
        assert_eq!(p.feature, cfg!(feature = "tensorrt"));
        assert_eq!(p.shim.is_some(), cfg!(livecensor_trt_shim));
        assert_eq!(p.stub_reason.is_some(), !cfg!(livecensor_trt_shim));
        let text = p.to_string();
        match &p.library {
            Ok(l) => assert!(text.contains(l.as_str())),
            Err(e) => {
                assert!(e.contains("libnvinfer"), "{e}");
                assert!(!p.usable());
            }
        }
        if !cfg!(feature = "tensorrt") {
            assert!(
                text.contains("--features tensorrt") || text.contains("feature `tensorrt`"),
                "{text}"
            );
        }
    }

    /// CI fetches the headers first (scripts/tensorrt-headers.sh) and sets
    /// LIVECENSOR_EXPECT_TRT_SHIM=1: the real shim must then be compiled and
    /// linked, not the stub.
    #[test]
    fn shim_is_compiled_when_expected() {
        if std::env::var("LIVECENSOR_EXPECT_TRT_SHIM").as_deref() != Ok("1") {
            eprintln!("skipped: LIVECENSOR_EXPECT_TRT_SHIM is not 1");
            return;
        }
        let p = probe();
        assert!(
            p.shim.is_some(),
            "the TensorRT shim was not built: {:?}",
            p.stub_reason
        );
        let headers = header_version().expect("the shim reports its header version");
        assert!(headers.major >= 10, "{headers}");
    }

    #[test]
    fn loading_tensorrt_where_there_is_none_is_a_clear_error() {
        if find_nvinfer().is_ok() {
            eprintln!("skipped: this machine has libnvinfer");
            return;
        }
        let e = TrtLibrary::load()
            .err()
            .expect("no TensorRT here")
            .to_string();
        if cfg!(livecensor_trt_shim) {
            assert!(
                e.starts_with("TensorRT: library not found") && e.contains("libnvinfer.so"),
                "{e}"
            );
        } else {
            assert!(e.starts_with("TensorRT backend not built"), "{e}");
        }
    }
}
