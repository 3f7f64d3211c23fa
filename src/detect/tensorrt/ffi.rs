//! The C ABI of `shim.cpp` (linked statically by build.rs). Every function
//! catches all C++ exceptions; fallible ones return 0 / a handle on success
//! and -1 / null on failure with the reason in `err`.

use std::ffi::{c_char, c_void};

/// Opaque handles owned by the shim.
#[repr(C)]
pub struct Lib {
    _private: [u8; 0],
}
#[repr(C)]
pub struct Builder {
    _private: [u8; 0],
}
#[repr(C)]
pub struct Blob {
    _private: [u8; 0],
}
#[repr(C)]
pub struct Engine {
    _private: [u8; 0],
}
#[repr(C)]
pub struct Context {
    _private: [u8; 0],
}

/// TensorRT's `Dims::MAX_DIMS`.
pub const MAX_DIMS: usize = 8;

pub type LogFn = unsafe extern "C" fn(user: *mut c_void, severity: i32, msg: *const c_char);
/// 1: a batch is in `*device_ptr`; 0: no more; < 0: failed.
pub type CalibFn = unsafe extern "C" fn(user: *mut c_void, device_ptr: *mut *mut c_void) -> i32;

extern "C" {
    pub fn lc_trt_header_version() -> i32;
    pub fn lc_trt_calibration_supported() -> i32;

    pub fn lc_trt_open(
        nvinfer: *const c_char,
        log: Option<LogFn>,
        user: *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> *mut Lib;
    pub fn lc_trt_lib_version(lib: *const Lib) -> i32;
    pub fn lc_trt_lib_path(lib: *const Lib) -> *const c_char;

    pub fn lc_trt_builder_new(
        lib: *mut Lib,
        onnx: *const c_char,
        err: *mut c_char,
        len: usize,
    ) -> *mut Builder;
    pub fn lc_trt_builder_nb_inputs(b: *const Builder) -> i32;
    pub fn lc_trt_builder_nb_outputs(b: *const Builder) -> i32;
    pub fn lc_trt_builder_tensor(
        b: *const Builder,
        output: i32,
        i: i32,
        name: *mut *const c_char,
        dims: *mut i64,
        nb: *mut i32,
        dtype: *mut i32,
    ) -> i32;
    pub fn lc_trt_builder_add_profile(
        b: *mut Builder,
        input: *const c_char,
        nb: i32,
        min: *const i64,
        opt: *const i64,
        max: *const i64,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    pub fn lc_trt_builder_configure(
        b: *mut Builder,
        fp16: i32,
        workspace: u64,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    pub fn lc_trt_builder_set_calibrator(
        b: *mut Builder,
        input: *const c_char,
        nb: i32,
        dims: *const i64,
        next: CalibFn,
        user: *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    pub fn lc_trt_builder_build(b: *mut Builder, err: *mut c_char, len: usize) -> *mut Blob;
    pub fn lc_trt_builder_free(b: *mut Builder);
    pub fn lc_trt_blob_data(blob: *const Blob) -> *const c_void;
    pub fn lc_trt_blob_size(blob: *const Blob) -> usize;
    pub fn lc_trt_blob_free(blob: *mut Blob);

    pub fn lc_trt_engine_new(
        lib: *mut Lib,
        plan: *const c_void,
        size: usize,
        err: *mut c_char,
        len: usize,
    ) -> *mut Engine;
    pub fn lc_trt_engine_nb_io(e: *const Engine) -> i32;
    pub fn lc_trt_engine_io(
        e: *const Engine,
        i: i32,
        name: *mut *const c_char,
        is_input: *mut i32,
        dtype: *mut i32,
        dims: *mut i64,
        nb: *mut i32,
    ) -> i32;
    pub fn lc_trt_engine_nb_profiles(e: *const Engine) -> i32;
    pub fn lc_trt_engine_profile_shape(
        e: *const Engine,
        input: *const c_char,
        profile: i32,
        min: *mut i64,
        opt: *mut i64,
        max: *mut i64,
        nb: *mut i32,
    ) -> i32;
    pub fn lc_trt_engine_free(e: *mut Engine);

    pub fn lc_trt_context_new(
        e: *mut Engine,
        profile: i32,
        stream: *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> *mut Context;
    pub fn lc_trt_context_set_input_shape(
        c: *mut Context,
        name: *const c_char,
        nb: i32,
        dims: *const i64,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    pub fn lc_trt_context_tensor_shape(
        c: *const Context,
        name: *const c_char,
        dims: *mut i64,
        nb: *mut i32,
    ) -> i32;
    pub fn lc_trt_context_set_address(
        c: *mut Context,
        name: *const c_char,
        ptr: *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    pub fn lc_trt_context_enqueue(
        c: *mut Context,
        stream: *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    pub fn lc_trt_context_free(c: *mut Context);
}

/// The caller's error buffer for one call.
pub struct ErrBuf([u8; 2048]);

impl Default for ErrBuf {
    fn default() -> Self {
        ErrBuf([0; 2048])
    }
}

impl ErrBuf {
    pub fn ptr(&mut self) -> *mut c_char {
        self.0.as_mut_ptr().cast()
    }

    pub fn capacity(&self) -> usize {
        self.0.len()
    }

    /// The message the shim wrote, or `fallback` if it wrote none.
    pub fn message(&self, fallback: &str) -> String {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        let m = String::from_utf8_lossy(&self.0[..end]).into_owned();
        if m.is_empty() {
            fallback.to_string()
        } else {
            m
        }
    }
}

/// A C string the shim returned (owned by a handle that outlives this call).
///
/// # Safety
/// `p` is null or a valid NUL-terminated string.
pub unsafe fn string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}
