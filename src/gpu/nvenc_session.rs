//! NVENC lifetime rules that hold whatever the GPU, kept over the function
//! list and a small trait so the CPU tests can check them with fakes:
//! a failed session open is still destroyed (the header requires
//! `nvEncDestroyEncoder` on any non-null handle), and a registered input
//! is unregistered before its memory goes, not evicted long after.

use std::ffi::c_void;

use super::nvenc_api::{
    status_name, Zeroed, NVENCAPI_VERSION, NVENCSTATUS, NV_ENCODE_API_FUNCTION_LIST,
    NV_ENC_DEVICE_TYPE_CUDA, NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS,
    NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER, NV_ENC_SUCCESS,
};
use crate::error::{Error, Result};

/// Opens an NVENC session on a CUDA context. On failure the handle the
/// driver may still have returned is destroyed before the error.
pub fn open_session(
    api: &NV_ENCODE_API_FUNCTION_LIST,
    cu_context: *mut c_void,
) -> Result<*mut c_void> {
    let open = api
        .nvEncOpenEncodeSessionEx
        .ok_or_else(|| Error::Gpu("NVENC function list lacks nvEncOpenEncodeSessionEx".into()))?;
    let mut p = NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS::zeroed();
    p.version = NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER;
    p.deviceType = NV_ENC_DEVICE_TYPE_CUDA;
    p.device = cu_context;
    p.apiVersion = NVENCAPI_VERSION;
    let mut encoder: *mut c_void = std::ptr::null_mut();
    // SAFETY: a versioned params struct of the header layout and a valid
    // out-pointer; the caller made the CUDA context current.
    let r = unsafe { open(&mut *p, &mut encoder) };
    if r == NV_ENC_SUCCESS && !encoder.is_null() {
        return Ok(encoder);
    }
    if !encoder.is_null() {
        if let Some(destroy) = api.nvEncDestroyEncoder {
            // SAFETY: the handle the failed open returned, destroyed once.
            unsafe { destroy(encoder) };
        }
    }
    Err(Error::Gpu(format!(
        "NVENC session could not be opened ({}): this GPU may have no video encoder",
        status_name(r)
    )))
}

/// One registrable input: a pitched NV12 device allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegKey {
    pub ptr: u64,
    pub pitch: usize,
    pub width: usize,
    pub height: usize,
}

/// What registers and unregisters inputs (NVENC, or a fake in tests).
pub trait Registrar {
    type Handle: Copy;
    fn register(&mut self, key: RegKey) -> std::result::Result<Self::Handle, NVENCSTATUS>;
    fn unregister(&mut self, handle: Self::Handle);
}

/// Registered inputs by address. Entries leave when their memory is freed
/// ([`Self::forget_ptr`], called from the frame's drop), when the frame
/// size changes ([`Self::retain_size`]), past `limit` (oldest first) and
/// on [`Self::clear`]; each leaves through `unregister`.
#[derive(Debug)]
pub struct RegistrationCache<H> {
    entries: Vec<(RegKey, H)>,
    limit: usize,
}

impl<H: Copy> RegistrationCache<H> {
    pub fn new(limit: usize) -> Self {
        RegistrationCache {
            entries: Vec::new(),
            limit: limit.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The handle for `key`, registering it if new; `Ok((handle, true))`
    /// when it was registered now (the caller then arranges
    /// [`Self::forget_ptr`] for when the memory goes).
    pub fn get_or_register<R: Registrar<Handle = H>>(
        &mut self,
        r: &mut R,
        key: RegKey,
    ) -> std::result::Result<(H, bool), NVENCSTATUS> {
        if let Some((_, h)) = self.entries.iter().find(|(k, _)| *k == key) {
            return Ok((*h, false));
        }
        // Another layout at the same address is a different allocation.
        self.forget_ptr(r, key.ptr);
        while self.entries.len() >= self.limit {
            let (_, old) = self.entries.remove(0);
            r.unregister(old);
        }
        let h = r.register(key)?;
        self.entries.push((key, h));
        Ok((h, true))
    }

    /// The memory at `ptr` is about to be freed: unregister it.
    pub fn forget_ptr<R: Registrar<Handle = H>>(&mut self, r: &mut R, ptr: u64) {
        self.take_where(r, |k| k.ptr == ptr);
    }

    /// Frames are now `width x height`: unregister every other size.
    pub fn retain_size<R: Registrar<Handle = H>>(
        &mut self,
        r: &mut R,
        width: usize,
        height: usize,
    ) {
        self.take_where(r, |k| (k.width, k.height) != (width, height));
    }

    pub fn clear<R: Registrar<Handle = H>>(&mut self, r: &mut R) {
        self.take_where(r, |_| true);
    }

    fn take_where<R: Registrar<Handle = H>>(&mut self, r: &mut R, gone: impl Fn(&RegKey) -> bool) {
        let mut kept = Vec::with_capacity(self.entries.len());
        for (k, h) in self.entries.drain(..) {
            if gone(&k) {
                r.unregister(h);
            } else {
                kept.push((k, h));
            }
        }
        self.entries = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::nvenc_api::{NV_ENC_ERR_NO_ENCODE_DEVICE, NV_ENC_ERR_RESOURCE_REGISTER_FAILED};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static DESTROYED: AtomicUsize = AtomicUsize::new(0);
    const FAKE_HANDLE: usize = 0x1234;

    unsafe extern "C" fn open_fails_with_handle(
        _p: *mut NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS,
        out: *mut *mut c_void,
    ) -> NVENCSTATUS {
        // SAFETY: `out` is the caller's valid out-pointer.
        unsafe { *out = FAKE_HANDLE as *mut c_void };
        NV_ENC_ERR_NO_ENCODE_DEVICE
    }

    unsafe extern "C" fn open_fails_without_handle(
        _p: *mut NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS,
        _out: *mut *mut c_void,
    ) -> NVENCSTATUS {
        NV_ENC_ERR_NO_ENCODE_DEVICE
    }

    unsafe extern "C" fn destroy_counts(h: *mut c_void) -> NVENCSTATUS {
        assert_eq!(h as usize, FAKE_HANDLE);
        DESTROYED.fetch_add(1, Ordering::SeqCst);
        NV_ENC_SUCCESS
    }

    /// Both cases in one test: they share the counter.
    #[test]
    fn a_failed_open_destroys_the_handle_it_got() {
        let mut api = NV_ENCODE_API_FUNCTION_LIST::zeroed();
        api.nvEncDestroyEncoder = Some(destroy_counts);
        api.nvEncOpenEncodeSessionEx = Some(open_fails_with_handle);
        let err = open_session(&api, std::ptr::null_mut())
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("NV_ENC_ERR_NO_ENCODE_DEVICE")));
        assert_eq!(DESTROYED.load(Ordering::SeqCst), 1);
        api.nvEncOpenEncodeSessionEx = Some(open_fails_without_handle);
        assert!(open_session(&api, std::ptr::null_mut()).is_err());
        assert_eq!(
            DESTROYED.load(Ordering::SeqCst),
            1,
            "null handle: nothing to destroy"
        );
    }

    #[derive(Default)]
    struct Fake {
        next: u32,
        live: Vec<u32>,
        registered: usize,
        refuse: bool,
    }

    impl Registrar for Fake {
        type Handle = u32;
        fn register(&mut self, _key: RegKey) -> std::result::Result<u32, NVENCSTATUS> {
            if self.refuse {
                return Err(NV_ENC_ERR_RESOURCE_REGISTER_FAILED);
            }
            self.next += 1;
            self.registered += 1;
            self.live.push(self.next);
            Ok(self.next)
        }
        fn unregister(&mut self, h: u32) {
            let i = self.live.iter().position(|&x| x == h);
            assert!(i.is_some(), "unregistered twice or never registered: {h}");
            if let Some(i) = i {
                self.live.remove(i);
            }
        }
    }

    fn key(ptr: u64) -> RegKey {
        RegKey {
            ptr,
            pitch: 256,
            width: 64,
            height: 48,
        }
    }

    #[test]
    fn registrations_follow_the_memory() {
        let mut r = Fake::default();
        let mut c = RegistrationCache::new(16);
        assert_eq!(c.get_or_register(&mut r, key(1)), Ok((1, true)));
        assert_eq!(c.get_or_register(&mut r, key(1)), Ok((1, false)));
        c.get_or_register(&mut r, key(2)).unwrap();
        // Frame 1 freed: unregistered now, not when evicted.
        c.forget_ptr(&mut r, 1);
        assert_eq!(r.live, [2]);
        // A new allocation at the old address registers afresh.
        assert_eq!(c.get_or_register(&mut r, key(1)), Ok((3, true)));
        // Same address, another size: the old registration goes first.
        let bigger = RegKey {
            width: 128,
            height: 96,
            ..key(1)
        };
        c.get_or_register(&mut r, bigger).unwrap();
        assert_eq!(r.live, [2, 4]);
        // The pool changed size: only the new size stays.
        c.retain_size(&mut r, 128, 96);
        assert_eq!(r.live, [4]);
        c.clear(&mut r);
        assert!(r.live.is_empty() && c.is_empty());
    }

    #[test]
    fn the_limit_unregisters_the_oldest_and_refusals_are_reported() {
        let mut r = Fake::default();
        let mut c = RegistrationCache::new(2);
        for p in 1..=3 {
            c.get_or_register(&mut r, key(p)).unwrap();
        }
        assert_eq!(r.live, [2, 3]);
        assert_eq!(c.len(), 2);
        r.refuse = true;
        assert_eq!(
            c.get_or_register(&mut r, key(9)),
            Err(NV_ENC_ERR_RESOURCE_REGISTER_FAILED)
        );
        assert_eq!(r.registered, 3);
    }
}
