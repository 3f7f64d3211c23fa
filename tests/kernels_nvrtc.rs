//! Compiles every `kernels/*.cu` (with `kernels/common.cuh` in front, as
//! `build.rs` does) with NVIDIA's run-time compiler, on a machine with no
//! GPU and no CUDA toolkit: libnvrtc from the PyPI wheel is enough
//! (`bash scripts/nvrtc-setup.sh` puts it in `models/nvrtc/`). Fails on any
//! compile error, printing NVRTC's log. Runs without feature `cuda`: the
//! loader is `src/gpu/nvrtc.rs`, included by path (std + libloading only).
//!
//! Skips (with a message) when `LIVECENSOR_NVRTC_LIB` is unset and
//! `models/nvrtc/` holds no `libnvrtc.so*`; CI runs the set-up script first.

use std::path::{Path, PathBuf};

use livecensor::gpu::plan::Kernel;

#[allow(dead_code)]
#[path = "../src/gpu/nvrtc.rs"]
mod nvrtc;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The library to use, or `None` (skip) when none was provided.
fn library() -> Option<nvrtc::Nvrtc> {
    let cache = root().join("models").join("nvrtc");
    let explicit = std::env::var_os(nvrtc::NVRTC_ENV).map(PathBuf::from);
    let path = match explicit {
        Some(p) => p,
        None => match nvrtc::libs_in(&cache).into_iter().next() {
            Some(p) => p,
            None => {
                assert!(
                    std::env::var_os("LIVECENSOR_EXPECT_GPU").is_none_or(|v| v != "1"),
                    "LIVECENSOR_EXPECT_GPU=1 but no NVRTC library to test"
                );
                eprintln!(
                    "SKIPPED: no NVRTC library ({} unset and {} holds no libnvrtc.so*); \
                     run `bash scripts/nvrtc-setup.sh` to enable this test",
                    nvrtc::NVRTC_ENV,
                    cache.display()
                );
                return None;
            }
        },
    };
    match nvrtc::Nvrtc::load_from(&path) {
        Ok(n) => Some(n),
        Err(e) => panic!("NVRTC library was provided but does not load: {e}"),
    }
}

/// (file name, common.cuh + the file) for every kernel source, as build.rs
/// concatenates them.
fn sources() -> Vec<(String, String)> {
    let dir = root().join("kernels");
    let common = std::fs::read_to_string(dir.join("common.cuh")).expect("kernels/common.cuh");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("kernels/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("?")
                .to_string();
            let body = std::fs::read_to_string(&p).expect("kernel source");
            let text = format!("{common}\n#line 1 \"{name}\"\n{body}");
            (name, text)
        })
        .collect()
}

#[test]
fn every_kernel_compiles_with_nvrtc() {
    let Some(n) = library() else {
        return;
    };
    let (major, minor) = n.version().expect("nvrtcVersion");
    eprintln!("NVRTC {major}.{minor} from {}", n.path().display());
    let srcs = sources();
    assert!(
        srcs.len() >= 3,
        "expected preprocess, censor and postprocess sources"
    );
    let mut failures = Vec::new();
    for (name, text) in &srcs {
        // PTX for the fallback target, CUBIN for the H100 (sm_90): the
        // second also runs the SASS back end.
        for arch in ["compute_80", "sm_90"] {
            let opt = format!("--gpu-architecture={arch}");
            match n.compile(text, name, &[opt.as_str(), "--fmad=false"]) {
                Ok(c) => {
                    if !c.log.is_empty() {
                        eprintln!("{name} ({arch}) warnings:\n{}", c.log);
                    }
                    let ptx = String::from_utf8_lossy(&c.ptx);
                    assert!(ptx.len() > 100, "{name} ({arch}): empty PTX");
                    for k in Kernel::ALL.iter().filter(|k| k.source_file() == name) {
                        assert!(
                            ptx.contains(&format!(".entry {}(", k.name())),
                            "{name} ({arch}): no entry point {}",
                            k.name()
                        );
                    }
                    if arch.starts_with("sm_") {
                        assert!(
                            c.cubin.as_ref().is_some_and(|b| b.len() > 100),
                            "{name}: no CUBIN"
                        );
                    }
                }
                Err(log) => failures.push(format!("{name} ({arch}):\n{log}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "NVRTC compile errors:\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn a_broken_kernel_is_reported_with_its_log() {
    let Some(n) = library() else {
        return;
    };
    let src = "extern \"C\" __global__ void broken(int* p) { p[0] = undefined_name; }";
    let err = n
        .compile(src, "broken.cu", &["--gpu-architecture=compute_80"])
        .expect_err("a compile error");
    assert!(err.contains("undefined_name"), "{err}");
}
