//! The process-wide TensorRT library (libnvinfer through the shim, loaded
//! once), its logger, what `doctor` probes, and the error helpers every
//! part of the backend shares.

use std::ffi::{c_char, c_void, CString};
use std::sync::{Arc, Mutex};

use cudarc::driver::DriverError;

use super::ffi::{self, ErrBuf};
use super::{TrtProbe, TrtVersion};
use crate::error::DetectError;

pub(super) fn trt(msg: impl Into<String>) -> DetectError {
    DetectError::TensorRt(msg.into())
}

pub(super) fn cuda_err(what: &'static str) -> impl Fn(DriverError) -> DetectError {
    move |e| trt(format!("CUDA {what}: {e}"))
}

pub(super) fn c_string(what: &str, bytes: &[u8]) -> Result<CString, DetectError> {
    CString::new(bytes).map_err(|_| trt(format!("{what} contains a NUL byte")))
}

/// TensorRT messages go to `tracing` (target `tensorrt`); errors also come
/// back in the failing call's own message.
unsafe extern "C" fn log_message(_user: *mut c_void, severity: i32, msg: *const c_char) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: TensorRT passes a NUL-terminated message.
        let m = unsafe { ffi::string(msg) };
        match severity {
            0 | 1 => tracing::error!(target: "tensorrt", "{m}"),
            2 => tracing::warn!(target: "tensorrt", "{m}"),
            3 => tracing::debug!(target: "tensorrt", "{m}"),
            _ => tracing::trace!(target: "tensorrt", "{m}"),
        }
    });
}

/// The shim's library handle. It is never closed: TensorRT objects and the
/// logger live inside it and the process may hold engines until exit.
struct LibHandle(*mut ffi::Lib);

// SAFETY: after `lc_trt_open` the handle is only read (factory pointers,
// version); its logger locks internally.
unsafe impl Send for LibHandle {}
// SAFETY: as above.
unsafe impl Sync for LibHandle {}

/// libnvinfer, loaded once per process (a failed load is retried next time).
#[derive(Clone)]
pub struct TrtLibrary {
    handle: Arc<LibHandle>,
    version: TrtVersion,
    path: String,
}

static LIBRARY: Mutex<Option<TrtLibrary>> = Mutex::new(None);

impl TrtLibrary {
    pub fn load() -> Result<TrtLibrary, DetectError> {
        let mut slot = LIBRARY.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = slot.as_ref() {
            return Ok(l.clone());
        }
        let mut err = ErrBuf::default();
        // SAFETY: null path = the shim's soname list; the callback is a
        // plain function that never unwinds.
        let p = unsafe {
            ffi::lc_trt_open(
                std::ptr::null(),
                Some(log_message),
                std::ptr::null_mut(),
                err.ptr(),
                err.capacity(),
            )
        };
        if p.is_null() {
            return Err(trt(err.message("loading libnvinfer failed")));
        }
        // SAFETY: `p` is a live handle.
        let (version, path) = unsafe {
            (
                TrtVersion::from_encoded(i64::from(ffi::lc_trt_lib_version(p))),
                ffi::string(ffi::lc_trt_lib_path(p)),
            )
        };
        let lib = TrtLibrary {
            handle: Arc::new(LibHandle(p)),
            version,
            path,
        };
        *slot = Some(lib.clone());
        Ok(lib)
    }

    pub fn version(&self) -> TrtVersion {
        self.version
    }

    /// The name it was loaded by, e.g. "libnvinfer.so.11".
    pub fn path(&self) -> &str {
        &self.path
    }

    pub(super) fn ptr(&self) -> *mut ffi::Lib {
        self.handle.0
    }
}

/// The TensorRT version of the headers the shim was compiled against.
pub fn header_version() -> Option<TrtVersion> {
    // SAFETY: returns a constant.
    Some(TrtVersion::from_encoded(i64::from(unsafe {
        ffi::lc_trt_header_version()
    })))
}

/// What this build and machine offer (for `doctor`).
pub fn probe() -> TrtProbe {
    TrtProbe {
        feature: true,
        shim: Some(env!("LIVECENSOR_TRT_HEADERS").to_string()),
        stub_reason: None,
        library: TrtLibrary::load()
            .map(|l| format!("{} (TensorRT {})", l.path, l.version))
            .map_err(|e| e.to_string()),
    }
}
