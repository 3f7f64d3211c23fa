//! A minimal NVRTC binding loaded at run time with `libloading`.
//!
//! Why not cudarc's: its `cuda-12080` build only looks for `libnvrtc.so`,
//! `.12`, `.11`..., while the PyPI wheel and CUDA 13 ship `libnvrtc.so.13`,
//! and a missing library there is a panic. This file depends on nothing but
//! `std` and `libloading` so that `tests/kernels_nvrtc.rs` can include it by
//! path and compile every kernel on a machine with no GPU and no toolkit.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};

/// Overrides the library search with one file.
pub const NVRTC_ENV: &str = "LIVECENSOR_NVRTC_LIB";

/// Shared-library names tried after the explicit paths, newest first.
pub const SONAMES: [&str; 3] = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"];

type Program = *mut c_void;
type CreateFn = unsafe extern "C" fn(
    *mut Program,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type CompileFn = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> c_int;
type SizeFn = unsafe extern "C" fn(Program, *mut usize) -> c_int;
type GetFn = unsafe extern "C" fn(Program, *mut c_char) -> c_int;
type DestroyFn = unsafe extern "C" fn(*mut Program) -> c_int;
type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;
type ErrorStringFn = unsafe extern "C" fn(c_int) -> *const c_char;

/// A loaded libnvrtc.
pub struct Nvrtc {
    path: PathBuf,
    create: CreateFn,
    compile: CompileFn,
    log_size: SizeFn,
    log: GetFn,
    ptx_size: SizeFn,
    ptx: GetFn,
    cubin_size: Option<SizeFn>,
    cubin: Option<GetFn>,
    destroy: DestroyFn,
    version: VersionFn,
    error_string: ErrorStringFn,
    // Keeps the function pointers above valid; dropped last.
    _lib: libloading::Library,
}

/// The result of one successful compilation.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// PTX text with its terminating NUL (what `cuModuleLoadData` wants).
    pub ptx: Vec<u8>,
    /// CUBIN when compiled for a real `sm_XX` architecture.
    pub cubin: Option<Vec<u8>>,
    /// Warnings, if any.
    pub log: String,
}

/// `libnvrtc.so.*` files in `dir`, sorted (the builtins library excluded).
pub fn libs_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libnvrtc.so"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

impl Nvrtc {
    /// Loads the first library that opens: `$LIVECENSOR_NVRTC_LIB` (only
    /// that, when set), else `libnvrtc.so*` in `dirs`, else [`SONAMES`]
    /// through the dynamic loader's search path.
    pub fn load(dirs: &[PathBuf]) -> Result<Nvrtc, String> {
        if let Some(p) = std::env::var_os(NVRTC_ENV) {
            return Nvrtc::load_from(Path::new(&p));
        }
        let mut tried = Vec::new();
        let candidates = dirs
            .iter()
            .flat_map(|d| libs_in(d))
            .chain(SONAMES.iter().map(PathBuf::from));
        for c in candidates {
            match Nvrtc::load_from(&c) {
                Ok(n) => return Ok(n),
                Err(e) => tried.push(e),
            }
        }
        Err(format!(
            "libnvrtc not found (set {NVRTC_ENV}, or run `bash scripts/nvrtc-setup.sh`); tried: {}",
            tried.join("; ")
        ))
    }

    /// Loads one library file (or soname).
    pub fn load_from(path: &Path) -> Result<Nvrtc, String> {
        let shown = path.display();
        // SAFETY: loading libnvrtc runs only its own initialisers.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| format!("{shown}: {e}"))?;
        // Each symbol is looked up with the signature nvrtc.h declares for
        // it; the pointers live as long as `lib`, which `Nvrtc` owns.
        fn sym<T: Copy>(lib: &libloading::Library, name: &str, shown: &str) -> Result<T, String> {
            // SAFETY: see above.
            unsafe { lib.get::<T>(name.as_bytes()) }
                .map(|s| *s)
                .map_err(|e| format!("{shown}: missing {name}: {e}"))
        }
        let s = shown.to_string();
        Ok(Nvrtc {
            create: sym(&lib, "nvrtcCreateProgram", &s)?,
            compile: sym(&lib, "nvrtcCompileProgram", &s)?,
            log_size: sym(&lib, "nvrtcGetProgramLogSize", &s)?,
            log: sym(&lib, "nvrtcGetProgramLog", &s)?,
            ptx_size: sym(&lib, "nvrtcGetPTXSize", &s)?,
            ptx: sym(&lib, "nvrtcGetPTX", &s)?,
            cubin_size: sym(&lib, "nvrtcGetCUBINSize", &s).ok(),
            cubin: sym(&lib, "nvrtcGetCUBIN", &s).ok(),
            destroy: sym(&lib, "nvrtcDestroyProgram", &s)?,
            version: sym(&lib, "nvrtcVersion", &s)?,
            error_string: sym(&lib, "nvrtcGetErrorString", &s)?,
            path: path.to_path_buf(),
            _lib: lib,
        })
    }

    /// The file (or soname) that was loaded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// NVRTC's (major, minor) version.
    pub fn version(&self) -> Result<(i32, i32), String> {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: two valid out-pointers.
        let r = unsafe { (self.version)(&mut major, &mut minor) };
        self.check(r, "nvrtcVersion")?;
        Ok((major, minor))
    }

    fn check(&self, r: c_int, what: &str) -> Result<(), String> {
        if r == 0 {
            return Ok(());
        }
        // SAFETY: nvrtcGetErrorString returns a static C string (or null).
        let msg = unsafe {
            let p = (self.error_string)(r);
            if p.is_null() {
                String::from("unknown error")
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Err(format!("{what}: {msg} ({r})"))
    }

    /// Compiles one source. On a compile error the message holds NVRTC's
    /// log. With an `sm_XX` architecture in `options`, CUBIN comes too.
    pub fn compile(&self, source: &str, name: &str, options: &[&str]) -> Result<Compiled, String> {
        let src = CString::new(source).map_err(|_| format!("{name}: NUL byte in the source"))?;
        let cname = CString::new(name).map_err(|_| format!("{name}: NUL byte in the name"))?;
        let opts: Vec<CString> = options
            .iter()
            .map(|o| CString::new(*o).map_err(|_| format!("{name}: NUL byte in option {o:?}")))
            .collect::<Result<_, _>>()?;
        let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated strings, no headers; `prog` is
        // destroyed by `Guard` on every path.
        let r = unsafe {
            (self.create)(
                &mut prog,
                src.as_ptr(),
                cname.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        self.check(r, "nvrtcCreateProgram")?;
        struct Guard<'a>(&'a Nvrtc, Program);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                // SAFETY: a program created above, destroyed once.
                unsafe { (self.0.destroy)(&mut self.1) };
            }
        }
        let guard = Guard(self, prog);
        let n = c_int::try_from(opt_ptrs.len()).map_err(|_| "too many options".to_string())?;
        // SAFETY: `n` valid option pointers that outlive the call.
        let compiled = unsafe { (self.compile)(guard.1, n, opt_ptrs.as_ptr()) };
        let log = self.fetch(guard.1, self.log_size, self.log, "log")?;
        let log = String::from_utf8_lossy(log.split(|&b| b == 0).next().unwrap_or(&[]))
            .trim()
            .to_string();
        if compiled != 0 {
            let head = self
                .check(compiled, "nvrtcCompileProgram")
                .err()
                .unwrap_or_default();
            return Err(format!("{name}: {head}\n{log}"));
        }
        let ptx = self.fetch(guard.1, self.ptx_size, self.ptx, "PTX")?;
        let cubin = match (self.cubin_size, self.cubin) {
            (Some(size), Some(get)) if options.iter().any(|o| o.contains("=sm_")) => {
                Some(self.fetch(guard.1, size, get, "CUBIN")?)
            }
            _ => None,
        };
        Ok(Compiled { ptx, cubin, log })
    }

    fn fetch(
        &self,
        prog: Program,
        size: SizeFn,
        get: GetFn,
        what: &str,
    ) -> Result<Vec<u8>, String> {
        let mut n = 0usize;
        // SAFETY: a live program and a valid out-pointer.
        self.check(unsafe { size(prog, &mut n) }, what)?;
        let mut buf = vec![0u8; n];
        if n > 0 {
            // SAFETY: `buf` holds the `n` bytes NVRTC just said it needs.
            self.check(unsafe { get(prog, buf.as_mut_ptr().cast()) }, what)?;
        }
        Ok(buf)
    }
}
