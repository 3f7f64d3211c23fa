//! Build script: only does work with `--features cuda`.
//!
//! It prepends `kernels/common.cuh` to every `kernels/*.cu` (kernels stay
//! include-free, so NVRTC needs no include path) and writes the results to
//! `OUT_DIR`. When `nvcc` is found (`$NVCC`, `$CUDA_HOME/bin`,
//! `$CUDA_PATH/bin` or `PATH`; `LIVECENSOR_NO_NVCC=1` skips it) each one is
//! also compiled into a fatbin (SASS for sm_80/86/89/90 plus compute_80
//! PTX). `OUT_DIR/kernels.rs` lists (name, file, source, fatbin) for
//! `src/gpu` to `include!`; without a fatbin the kernels are compiled by
//! NVRTC at run time for the device found. No CUDA is needed to build.
//!
//! With `--features tensorrt` it also compiles the TensorRT shim
//! (`src/detect/tensorrt/shim.cpp`, C++17, links only `-ldl`: libnvinfer is
//! loaded at run time) when TensorRT headers are found, and then sets
//! `cfg(livecensor_trt_shim)`. Without headers the build still succeeds:
//! the backend is a stub whose constructors say why
//! (`LIVECENSOR_TRT_STUB_REASON`), and a cargo warning says it too.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Real architectures the fatbin carries; PTX for compute_80 covers newer ones.
const SASS_ARCHS: [&str; 4] = ["80", "86", "89", "90"];
const PTX_ARCH: &str = "80";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Declared always, so `#[cfg(livecensor_trt_shim)]` is a known cfg.
    println!("cargo::rustc-check-cfg=cfg(livecensor_trt_shim)");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    if let Err(e) = run() {
        panic!("livecensor build.rs: {e}");
    }
    #[cfg(feature = "tensorrt")]
    if let Err(reason) = trt::shim() {
        // One line: compiler output would end the cargo directive.
        let reason: String = reason
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(600)
            .collect();
        println!("cargo:warning=livecensor: the TensorRT backend is built as a stub: {reason}");
        println!("cargo:rustc-env=LIVECENSOR_TRT_STUB_REASON={reason}");
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let dir = manifest.join("kernels");
    println!("cargo:rerun-if-changed={}", dir.display());
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "LIVECENSOR_NO_NVCC",
        "PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let common_path = dir.join("common.cuh");
    println!("cargo:rerun-if-changed={}", common_path.display());
    let common = read(&common_path)?;

    let mut sources: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();

    let nvcc = if env::var_os("LIVECENSOR_NO_NVCC").is_some_and(|v| v != "0") {
        None
    } else {
        find_nvcc()
    };
    match &nvcc {
        Some(p) => println!("cargo:warning=livecensor: compiling kernels with {}", p.display()),
        None => println!(
            "cargo:warning=livecensor: nvcc not found; kernels will be compiled by NVRTC at run time"
        ),
    }

    let mut listing = String::from("pub const KERNEL_MODULES: &[KernelModule] = &[\n");
    for src in &sources {
        println!("cargo:rerun-if-changed={}", src.display());
        let file = src
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: bad file name", src.display()))?;
        let stem = file.trim_end_matches(".cu");
        let text = format!("{common}\n#line 1 \"{file}\"\n{body}", body = read(src)?);
        let joined = out.join(file);
        fs::write(&joined, &text).map_err(|e| format!("{}: {e}", joined.display()))?;
        let fatbin = match &nvcc {
            Some(nvcc) => {
                let fb = out.join(format!("{stem}.fatbin"));
                compile_fatbin(nvcc, &joined, &fb)?;
                format!("Some(include_bytes!({:?}))", fb.display().to_string())
            }
            None => "None".to_string(),
        };
        let _ = writeln!(
            listing,
            "    KernelModule {{ name: {stem:?}, file: {file:?}, source: include_str!({:?}), fatbin: {fatbin} }},",
            joined.display().to_string()
        );
    }
    listing.push_str("];\n");
    let gen = out.join("kernels.rs");
    fs::write(&gen, listing).map_err(|e| format!("{}: {e}", gen.display()))?;
    Ok(())
}

fn read(p: &Path) -> Result<String, String> {
    fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn find_nvcc() -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    let homes = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(env::var_os)
        .map(|h| PathBuf::from(h).join("bin").join("nvcc"));
    let path = env::var_os("PATH")
        .map(|p| {
            env::split_paths(&p)
                .map(|d| d.join("nvcc"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    homes.chain(path).find(|p| p.is_file())
}

fn compile_fatbin(nvcc: &Path, src: &Path, dst: &Path) -> Result<(), String> {
    let mut cmd = Command::new(nvcc);
    // --fmad=false: the kernels must round exactly like the Rust references.
    cmd.args(["-fatbin", "-O3", "--fmad=false", "-x", "cu"]);
    for a in SASS_ARCHS {
        cmd.arg(format!("-gencode=arch=compute_{a},code=sm_{a}"));
    }
    cmd.arg(format!(
        "-gencode=arch=compute_{PTX_ARCH},code=compute_{PTX_ARCH}"
    ));
    cmd.arg("-o").arg(dst).arg(src);
    let output = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", nvcc.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed on {}:\n{}{}",
            nvcc.display(),
            src.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// The TensorRT shim (feature `tensorrt`; `cc` is an optional
/// build-dependency of that feature).
#[cfg(feature = "tensorrt")]
mod trt {
    use super::read;
    use std::env;
    use std::path::{Path, PathBuf};

    /// Where `scripts/tensorrt-headers.sh` puts the headers, under the crate.
    const TRT_CACHE: &str = ".cache/tensorrt";
    /// Folders an installed TensorRT puts its headers in.
    const TRT_SYSTEM_DIRS: [&str; 3] = [
        "/usr/include/x86_64-linux-gnu",
        "/usr/local/tensorrt/include",
        "/opt/tensorrt/include",
    ];

    /// Compiles the shim; `Err` says why the backend is a stub instead.
    pub fn shim() -> Result<(), String> {
        let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
        let dir = manifest.join("src/detect/tensorrt");
        let shim = dir.join("shim.cpp");
        let standin = dir.join("cuda");
        println!("cargo:rerun-if-changed={}", shim.display());
        println!("cargo:rerun-if-changed={}", standin.display());
        for var in [
            "TENSORRT_INCLUDE_DIR",
            "TENSORRT_HEADERS_DIR",
            "CUDA_INCLUDE_DIR",
            "CUDA_HOME",
            "CUDA_PATH",
        ] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        let cache = env::var_os("TENSORRT_HEADERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join(TRT_CACHE))
            .join("include");
        // Re-fetched headers rebuild the shim. (A folder that does not exist
        // yet cannot be watched without rerunning on every build: after a stub
        // build, fetching the headers needs `TENSORRT_INCLUDE_DIR` or a touch of
        // build.rs to be noticed.)
        if cache.join(".sha256").is_file() {
            println!("cargo:rerun-if-changed={}", cache.join(".sha256").display());
        }
        let trt = find_trt_headers(&cache)?;
        let (major, minor, patch) = trt_version(&trt)?;
        if major < 10 {
            return Err(format!(
                "{} holds TensorRT {major}.{minor}.{patch} headers; the shim needs TensorRT 10 or newer",
                trt.display()
            ));
        }
        let cuda = find_cuda_headers().unwrap_or(standin);
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .std("c++17")
            .file(&shim)
            .warnings(true)
            .extra_warnings(true)
            // -isystem: the vendor headers' own warnings are not ours.
            .flag("-isystem")
            .flag(trt.display().to_string())
            .flag("-isystem")
            .flag(cuda.display().to_string());
        build
            .try_compile("livecensor_trt_shim")
            .map_err(|e| format!("compiling {} failed: {e}", shim.display()))?;
        println!("cargo:rustc-link-lib=dylib=dl");
        println!("cargo:rustc-cfg=livecensor_trt_shim");
        println!(
            "cargo:rustc-env=LIVECENSOR_TRT_HEADERS=TensorRT {major}.{minor}.{patch} headers in {}",
            trt.display()
        );
        Ok(())
    }

    /// TensorRT headers: `TENSORRT_INCLUDE_DIR`, the fetched cache, then the
    /// folders an installed TensorRT uses.
    fn find_trt_headers(cache: &Path) -> Result<PathBuf, String> {
        let has = |d: &Path| d.join("NvInfer.h").is_file() && d.join("NvOnnxParser.h").is_file();
        if let Some(d) = env::var_os("TENSORRT_INCLUDE_DIR").map(PathBuf::from) {
            return if has(&d) {
                Ok(d)
            } else {
                Err(format!(
                    "TENSORRT_INCLUDE_DIR={} has no NvInfer.h and NvOnnxParser.h",
                    d.display()
                ))
            };
        }
        std::iter::once(cache.to_path_buf())
            .chain(TRT_SYSTEM_DIRS.iter().map(PathBuf::from))
            .find(|d| has(d))
            .ok_or_else(|| {
                format!(
                    "no TensorRT headers (NvInfer.h, NvOnnxParser.h) in {} or {}: run \
                     `bash scripts/tensorrt-headers.sh` or set TENSORRT_INCLUDE_DIR, then rebuild",
                    cache.display(),
                    TRT_SYSTEM_DIRS.join(", ")
                )
            })
    }

    /// (major, minor, patch) from `NvInferVersion.h`, whose `NV_TENSORRT_*`
    /// macros are numbers (TensorRT 8) or name `TRT_*_ENTERPRISE` (10, 11).
    fn trt_version(dir: &Path) -> Result<(u32, u32, u32), String> {
        let text = read(&dir.join("NvInferVersion.h"))?;
        let define = |name: &str| -> Option<String> {
            text.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("#define") && w.next() == Some(name))
                    .then(|| w.next().map(str::to_string))
                    .flatten()
            })
        };
        let number = |name: &str| -> Result<u32, String> {
            let v = define(name).ok_or_else(|| format!("NvInferVersion.h: no {name}"))?;
            let v = match v.parse::<u32>() {
                Ok(n) => return Ok(n),
                Err(_) => define(&v).ok_or_else(|| format!("NvInferVersion.h: no {v}"))?,
            };
            v.parse::<u32>()
                .map_err(|_| format!("NvInferVersion.h: {name} is {v:?}"))
        };
        Ok((
            number("NV_TENSORRT_MAJOR")?,
            number("NV_TENSORRT_MINOR")?,
            number("NV_TENSORRT_PATCH")?,
        ))
    }

    /// A CUDA toolkit's headers, if one is installed (else the shim uses its
    /// stand-in for the two handle types TensorRT's headers need).
    fn find_cuda_headers() -> Option<PathBuf> {
        let explicit = env::var_os("CUDA_INCLUDE_DIR").map(PathBuf::from);
        let homes = ["CUDA_HOME", "CUDA_PATH"]
            .iter()
            .filter_map(env::var_os)
            .map(|h| PathBuf::from(h).join("include"));
        explicit
            .into_iter()
            .chain(homes)
            .chain(std::iter::once(PathBuf::from("/usr/local/cuda/include")))
            .find(|d| {
                d.join("cuda_runtime_api.h").is_file() && d.join("crt/host_defines.h").is_file()
            })
    }
}
