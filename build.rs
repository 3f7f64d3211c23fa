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
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    if let Err(e) = run() {
        panic!("livecensor build.rs: {e}");
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
