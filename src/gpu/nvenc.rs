//! NVENC: device NV12 frames in, H.264 Annex-B access units out, through
//! `libnvidia-encode.so.1` loaded at run time (bindings in
//! [`super::nvenc_api`]). Low latency: preset P1-P3 with tuning
//! ULTRA_LOW_LATENCY, no B-frames, CBR, infinite GOP with IDR on request,
//! SPS/PPS repeated before each IDR.
//!
//! Data-centre GPUs without an encoder (H100, H200, A100, A30) and
//! machines without the library get a clear error from [`NvEncoder::new`];
//! [`GpuEncoder`] then falls back to the CPU encoder (`codec::Encoder`)
//! after one device-to-host copy per frame, and says why.
//!
//! Without feature `cuda`: the same names; [`NvEncoder::new`] returns
//! `Error::NotCompiled("NVENC", "cuda")`, so [`GpuEncoder`] is always CPU.

#[cfg(feature = "cuda")]
pub use imp::*;
#[cfg(not(feature = "cuda"))]
pub use stub::*;

pub use super::nvenc_api::Preset;

use crate::codec::{Encoder, EncoderConfig};
use crate::error::{Error, Result};
use crate::gpu::{DeviceFrame, GpuStream};

/// How an NVENC error that is not per frame begins.
pub const FATAL_PREFIX: &str = "NVENC unusable for this stream: ";

/// Whether `err` says NVENC cannot encode this stream at all (memory it
/// cannot register, a broken session): switch to the CPU encoder instead
/// of retrying. A per-frame failure (busy encoder) is not.
pub fn is_nvenc_broken(err: &Error) -> bool {
    matches!(err, Error::Gpu(m) if m.starts_with(FATAL_PREFIX))
}

/// The encoder the pipeline uses for device frames: NVENC when the GPU has
/// one, else the CPU encoder after a device-to-host copy.
pub enum GpuEncoder {
    Nvenc(Box<NvEncoder>),
    Cpu(Box<Encoder>),
}

impl GpuEncoder {
    /// NVENC if it opens on `stream`'s device, else openh264; the string
    /// says which and why (for logs and `doctor`).
    pub fn new(
        stream: Option<&GpuStream>,
        config: EncoderConfig,
        preset: Preset,
    ) -> Result<(GpuEncoder, String)> {
        let why = match stream {
            Some(s) => match NvEncoder::new(s, config, preset) {
                Ok(e) => {
                    return Ok((
                        GpuEncoder::Nvenc(Box::new(e)),
                        format!("NVENC H.264 ({preset:?}, ultra-low-latency, CBR)"),
                    ))
                }
                Err(e) => e.to_string(),
            },
            None => "no GPU stream".to_string(),
        };
        let cpu = Encoder::new(config)?;
        Ok((
            GpuEncoder::Cpu(Box::new(cpu)),
            format!("CPU openh264 (NVENC unavailable: {why})"),
        ))
    }

    pub fn is_nvenc(&self) -> bool {
        matches!(self, GpuEncoder::Nvenc(_))
    }

    pub fn config(&self) -> &EncoderConfig {
        match self {
            GpuEncoder::Nvenc(e) => e.config(),
            GpuEncoder::Cpu(e) => e.config(),
        }
    }

    /// Encodes one device frame; `stream` is the one that wrote it. NVENC
    /// reads outside any stream, so the host waits first for the stream and
    /// for the frame's last use (which may be on another stream).
    pub fn encode(
        &mut self,
        stream: &GpuStream,
        frame: &DeviceFrame,
        force_keyframe: bool,
    ) -> Result<Vec<u8>> {
        match self {
            GpuEncoder::Nvenc(e) => {
                stream.synchronize()?;
                frame.wait_idle()?;
                e.encode(frame, force_keyframe)
            }
            GpuEncoder::Cpu(e) => {
                let host = stream.download(frame)?;
                Ok(e.encode(&host, force_keyframe)?)
            }
        }
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use std::cell::Cell;
    use std::ffi::{c_void, CStr};
    use std::sync::{Arc, Mutex, MutexGuard};

    use super::super::nvenc_api::*;
    use super::{Preset, FATAL_PREFIX};
    use crate::codec::EncoderConfig;
    use crate::error::{Error, Result};
    use crate::gpu::decide::{nvenc_failure, NvencFailure};
    use crate::gpu::nvenc_session::{open_session, RegKey, Registrar, RegistrationCache};
    use crate::gpu::{DeviceFrame, GpuStream};

    /// Registered input surfaces kept at most (frames come from a pool).
    const MAX_REGISTERED: usize = 16;

    /// NVENC's register/unregister calls on one session.
    #[derive(Clone, Copy)]
    struct NvencRegistrar {
        encoder: *mut c_void,
        register: Option<RegisterResourceFn>,
        unregister: Option<HandleFn>,
    }

    impl Registrar for NvencRegistrar {
        type Handle = usize;

        fn register(&mut self, key: RegKey) -> std::result::Result<usize, NVENCSTATUS> {
            let Some(reg) = self.register else {
                return Err(NV_ENC_ERR_RESOURCE_REGISTER_FAILED);
            };
            let mut rr = NV_ENC_REGISTER_RESOURCE::zeroed();
            rr.version = NV_ENC_REGISTER_RESOURCE_VER;
            rr.resourceType = NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR;
            rr.width = key.width as u32;
            rr.height = key.height as u32;
            rr.pitch = key.pitch as u32;
            rr.resourceToRegister = key.ptr as *mut c_void;
            rr.bufferFormat = NV_ENC_BUFFER_FORMAT_NV12;
            rr.bufferUsage = NV_ENC_BUFFER_USAGE_INPUT_IMAGE;
            // SAFETY: a live session; the pointer is a pitched NV12
            // `cuMemAlloc` allocation (UV at pitch * height) of its context.
            let r = unsafe { reg(self.encoder, &mut *rr) };
            if r == NV_ENC_SUCCESS {
                Ok(rr.registeredResource as usize)
            } else {
                Err(r)
            }
        }

        fn unregister(&mut self, handle: usize) {
            if let Some(f) = self.unregister {
                // SAFETY: a handle from nvEncRegisterResource, released once
                // (the cache forgets it here).
                unsafe { f(self.encoder, handle as *mut c_void) };
            }
        }
    }

    /// The registrations of one session, shared with the frames' free hooks
    /// so a frame unregisters itself before its memory goes.
    struct Registrations {
        registrar: NvencRegistrar,
        cache: RegistrationCache<usize>,
        /// False once the session is destroyed: late hooks do nothing.
        alive: bool,
    }

    // SAFETY: the raw session handle is only used under the mutex, with the
    // session's CUDA context bound by the caller.
    unsafe impl Send for Registrations {}

    fn lock(r: &Mutex<Registrations>) -> MutexGuard<'_, Registrations> {
        r.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An NVENC H.264 session on one CUDA context.
    pub struct NvEncoder {
        lib: NvencLib,
        encoder: *mut c_void,
        bitstream: *mut c_void,
        registrations: Arc<Mutex<Registrations>>,
        stream: GpuStream,
        config: EncoderConfig,
        frame_idx: u64,
        /// The status of the last failed call (to classify the failure).
        last_status: Cell<NVENCSTATUS>,
        /// Set on a failure that means NVENC cannot encode this stream.
        broken: Option<String>,
    }

    fn missing(what: &str) -> Error {
        Error::Gpu(format!("NVENC function list lacks {what}"))
    }

    impl NvEncoder {
        /// Opens a session on `stream`'s context and initialises it; an
        /// error (no library, no encoder on this GPU) means: use the CPU.
        pub fn new(stream: &GpuStream, config: EncoderConfig, preset: Preset) -> Result<NvEncoder> {
            let lib = NvencLib::load()?;
            let ctx_stream = stream.sibling()?;
            ctx_stream.bind_context()?;
            let encoder = open_session(&lib.api, ctx_stream.raw_context())?;
            let registrar = NvencRegistrar {
                encoder,
                register: lib.api.nvEncRegisterResource,
                unregister: lib.api.nvEncUnregisterResource,
            };
            // From here `Drop` destroys the session on any error.
            let mut enc = NvEncoder {
                lib,
                encoder,
                bitstream: std::ptr::null_mut(),
                registrations: Arc::new(Mutex::new(Registrations {
                    registrar,
                    cache: RegistrationCache::new(MAX_REGISTERED),
                    alive: true,
                })),
                stream: ctx_stream,
                config,
                frame_idx: 0,
                last_status: Cell::new(NV_ENC_SUCCESS),
                broken: None,
            };
            enc.initialise(preset)?;
            Ok(enc)
        }

        fn last_error(&self) -> String {
            match self.lib.api.nvEncGetLastErrorString {
                Some(f) => {
                    // SAFETY: a live session; the driver returns a C string
                    // (or null) valid until the next call.
                    let p = unsafe { f(self.encoder) };
                    if p.is_null() {
                        String::new()
                    } else {
                        // SAFETY: non-null NUL-terminated string from the driver.
                        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
                    }
                }
                None => String::new(),
            }
        }

        fn fail(&self, what: &str, r: NVENCSTATUS) -> Error {
            self.last_status.set(r);
            Error::Gpu(format!(
                "NVENC {what}: {} {}",
                status_name(r),
                self.last_error()
            ))
        }

        fn initialise(&mut self, preset: Preset) -> Result<()> {
            let api = &self.lib.api;
            let c = &self.config;
            // Does this GPU encode H.264 at this size?
            if let Some(caps) = api.nvEncGetEncodeCaps {
                let mut q = NV_ENC_CAPS_PARAM::zeroed();
                q.version = NV_ENC_CAPS_PARAM_VER;
                q.capsToQuery = NV_ENC_CAPS_WIDTH_MAX;
                let mut v = 0;
                // SAFETY: a live session, versioned struct, valid out-pointer.
                let r = unsafe { caps(self.encoder, NV_ENC_CODEC_H264_GUID, &mut *q, &mut v) };
                if r != NV_ENC_SUCCESS {
                    return Err(self.fail("H.264 capabilities", r));
                }
                if (v as usize) < c.width.max(c.height) {
                    return Err(Error::Gpu(format!(
                        "NVENC encodes at most {v} pixels wide, the stream is {}x{}",
                        c.width, c.height
                    )));
                }
            }
            let get_preset = api
                .nvEncGetEncodePresetConfigEx
                .ok_or_else(|| missing("nvEncGetEncodePresetConfigEx"))?;
            let mut pc = NV_ENC_PRESET_CONFIG::zeroed();
            pc.version = NV_ENC_PRESET_CONFIG_VER;
            pc.presetCfg.version = NV_ENC_CONFIG_VER;
            // SAFETY: a live session and a versioned preset struct.
            let r = unsafe {
                get_preset(
                    self.encoder,
                    NV_ENC_CODEC_H264_GUID,
                    preset.guid(),
                    NV_ENC_TUNING_INFO_ULTRA_LOW_LATENCY,
                    &mut *pc,
                )
            };
            if r != NV_ENC_SUCCESS {
                return Err(self.fail("preset configuration", r));
            }
            let mut cfg = NV_ENC_CONFIG::zeroed();
            *cfg = pc.presetCfg;
            cfg.version = NV_ENC_CONFIG_VER;
            apply_low_latency(&mut cfg, c.bitrate_bps, c.fps);
            let (num, den) = frame_rate_fraction(c.fps);
            let mut ip = NV_ENC_INITIALIZE_PARAMS::zeroed();
            ip.version = NV_ENC_INITIALIZE_PARAMS_VER;
            ip.encodeGUID = NV_ENC_CODEC_H264_GUID;
            ip.presetGUID = preset.guid();
            ip.encodeWidth = c.width as u32;
            ip.encodeHeight = c.height as u32;
            ip.darWidth = c.width as u32;
            ip.darHeight = c.height as u32;
            ip.frameRateNum = num;
            ip.frameRateDen = den;
            ip.enableEncodeAsync = 0;
            ip.enablePTD = 1;
            ip.encodeConfig = &mut *cfg;
            ip.maxEncodeWidth = c.width as u32;
            ip.maxEncodeHeight = c.height as u32;
            ip.tuningInfo = NV_ENC_TUNING_INFO_ULTRA_LOW_LATENCY;
            ip.bufferFormat = NV_ENC_BUFFER_FORMAT_NV12;
            let init = api
                .nvEncInitializeEncoder
                .ok_or_else(|| missing("nvEncInitializeEncoder"))?;
            // SAFETY: a live session; `ip` and the config it points to live
            // for the call.
            let r = unsafe { init(self.encoder, &mut *ip) };
            if r != NV_ENC_SUCCESS {
                return Err(self.fail("initialisation", r));
            }
            let create = api
                .nvEncCreateBitstreamBuffer
                .ok_or_else(|| missing("nvEncCreateBitstreamBuffer"))?;
            let mut b = NV_ENC_CREATE_BITSTREAM_BUFFER::zeroed();
            b.version = NV_ENC_CREATE_BITSTREAM_BUFFER_VER;
            // SAFETY: a live, initialised session; versioned struct.
            let r = unsafe { create(self.encoder, &mut *b) };
            if r != NV_ENC_SUCCESS {
                return Err(self.fail("bitstream buffer", r));
            }
            self.bitstream = b.bitstreamBuffer;
            Ok(())
        }

        pub fn config(&self) -> &EncoderConfig {
            &self.config
        }

        /// The frame's registration, made on first sight; the frame then
        /// unregisters itself before its memory is freed.
        fn register(&mut self, frame: &DeviceFrame) -> Result<*mut c_void> {
            let key = RegKey {
                ptr: frame.device_address(&self.stream),
                pitch: frame.pitch(),
                width: frame.width(),
                height: frame.height(),
            };
            let got = {
                let mut g = lock(&self.registrations);
                let Registrations {
                    registrar, cache, ..
                } = &mut *g;
                cache.get_or_register(registrar, key)
            };
            match got {
                Ok((handle, fresh)) => {
                    if fresh {
                        let regs = Arc::downgrade(&self.registrations);
                        frame.on_free(Box::new(move |ptr| {
                            if let Some(regs) = regs.upgrade() {
                                let mut g = lock(&regs);
                                if g.alive {
                                    let Registrations {
                                        registrar, cache, ..
                                    } = &mut *g;
                                    cache.forget_ptr(registrar, ptr);
                                }
                            }
                        }));
                    }
                    Ok(handle as *mut c_void)
                }
                Err(r) => Err(self.fail("registering a device frame", r)),
            }
        }

        /// Why NVENC cannot encode this stream any more, after a failure
        /// that is not per frame (e.g. memory it cannot register); use the
        /// CPU encoder from then on.
        pub fn broken(&self) -> Option<&str> {
            self.broken.as_deref()
        }

        /// Encodes one frame (its pixels must be complete: synchronise the
        /// stream that wrote them) and returns the Annex-B access unit. A
        /// failure that is not per frame marks the session broken
        /// ([`Self::broken`], [`super::is_nvenc_broken`]).
        pub fn encode(&mut self, frame: &DeviceFrame, force_keyframe: bool) -> Result<Vec<u8>> {
            if let Some(why) = &self.broken {
                return Err(Error::Gpu(format!("{FATAL_PREFIX}{why}")));
            }
            self.last_status.set(NV_ENC_SUCCESS);
            match self.encode_frame(frame, force_keyframe) {
                Ok(au) => Ok(au),
                Err(e) => {
                    let r = self.last_status.get();
                    if r != NV_ENC_SUCCESS && nvenc_failure(r) == NvencFailure::Fatal {
                        let why = e.to_string();
                        self.broken = Some(why.clone());
                        return Err(Error::Gpu(format!("{FATAL_PREFIX}{why}")));
                    }
                    Err(e)
                }
            }
        }

        fn check(&self, what: &str, r: NVENCSTATUS) -> Result<()> {
            if r == NV_ENC_SUCCESS {
                Ok(())
            } else {
                Err(self.fail(what, r))
            }
        }

        fn encode_frame(&mut self, frame: &DeviceFrame, force_keyframe: bool) -> Result<Vec<u8>> {
            if frame.width() != self.config.width || frame.height() != self.config.height {
                return Err(Error::Gpu(format!(
                    "frame is {}x{}, the encoder {}x{}",
                    frame.width(),
                    frame.height(),
                    self.config.width,
                    self.config.height
                )));
            }
            if frame.uv_offset() != frame.pitch() * frame.height() {
                return Err(Error::Gpu(
                    "NVENC needs the UV plane right after the Y plane".into(),
                ));
            }
            self.stream.bind_context()?;
            let registered = self.register(frame)?;
            let api = &self.lib.api;
            let map = api
                .nvEncMapInputResource
                .ok_or_else(|| missing("nvEncMapInputResource"))?;
            let unmap = api
                .nvEncUnmapInputResource
                .ok_or_else(|| missing("nvEncUnmapInputResource"))?;
            let encode = api
                .nvEncEncodePicture
                .ok_or_else(|| missing("nvEncEncodePicture"))?;
            let lock = api
                .nvEncLockBitstream
                .ok_or_else(|| missing("nvEncLockBitstream"))?;
            let unlock = api
                .nvEncUnlockBitstream
                .ok_or_else(|| missing("nvEncUnlockBitstream"))?;
            let mut m = NV_ENC_MAP_INPUT_RESOURCE::zeroed();
            m.version = NV_ENC_MAP_INPUT_RESOURCE_VER;
            m.registeredResource = registered;
            // SAFETY: a live session and a registered resource.
            self.check("mapping the input", unsafe { map(self.encoder, &mut *m) })?;
            let mapped = m.mappedResource;
            let result = (|| {
                let mut pp = NV_ENC_PIC_PARAMS::zeroed();
                pp.version = NV_ENC_PIC_PARAMS_VER;
                pp.inputWidth = frame.width() as u32;
                pp.inputHeight = frame.height() as u32;
                pp.inputPitch = frame.pitch() as u32;
                pp.inputBuffer = mapped;
                pp.outputBitstream = self.bitstream;
                pp.bufferFmt = NV_ENC_BUFFER_FORMAT_NV12;
                pp.pictureStruct = NV_ENC_PIC_STRUCT_FRAME;
                pp.frameIdx = self.frame_idx as u32;
                pp.inputTimeStamp = self.frame_idx;
                if force_keyframe || self.frame_idx == 0 {
                    pp.encodePicFlags = NV_ENC_PIC_FLAG_FORCEIDR | NV_ENC_PIC_FLAG_OUTPUT_SPSPPS;
                }
                // SAFETY: a live session; the mapped input and bitstream
                // buffer belong to it.
                let r = unsafe { encode(self.encoder, &mut *pp) };
                if r == NV_ENC_ERR_NEED_MORE_INPUT {
                    return Ok(Vec::new()); // cannot happen without B-frames
                }
                if r != NV_ENC_SUCCESS {
                    return Err(self.fail("encoding", r));
                }
                let mut lb = NV_ENC_LOCK_BITSTREAM::zeroed();
                lb.version = NV_ENC_LOCK_BITSTREAM_VER;
                lb.outputBitstream = self.bitstream;
                // SAFETY: locking our bitstream buffer (waits for the
                // encode); the data pointer is valid until unlock.
                let r = unsafe { lock(self.encoder, &mut *lb) };
                if r != NV_ENC_SUCCESS {
                    return Err(self.fail("locking the bitstream", r));
                }
                let data = if lb.bitstreamBufferPtr.is_null() {
                    Vec::new()
                } else {
                    // SAFETY: the driver reports `bitstreamSizeInBytes`
                    // valid bytes at `bitstreamBufferPtr` while locked.
                    unsafe {
                        std::slice::from_raw_parts(
                            lb.bitstreamBufferPtr as *const u8,
                            lb.bitstreamSizeInBytes as usize,
                        )
                    }
                    .to_vec()
                };
                // SAFETY: unlocking what was locked above.
                let r = unsafe { unlock(self.encoder, self.bitstream) };
                self.check("unlocking the bitstream", r)?;
                Ok(data)
            })();
            // SAFETY: unmapping the resource mapped above, once.
            let r = unsafe { unmap(self.encoder, mapped) };
            let data = result?;
            self.check("unmapping the input", r)?;
            self.frame_idx += 1;
            Ok(data)
        }
    }

    impl Drop for NvEncoder {
        fn drop(&mut self) {
            let _ = self.stream.bind_context();
            {
                let mut g = lock(&self.registrations);
                let Registrations {
                    registrar,
                    cache,
                    alive,
                } = &mut *g;
                cache.clear(registrar);
                *alive = false;
            }
            if !self.bitstream.is_null() {
                if let Some(f) = self.lib.api.nvEncDestroyBitstreamBuffer {
                    // SAFETY: our bitstream buffer, destroyed once.
                    unsafe { f(self.encoder, self.bitstream) };
                }
            }
            if let Some(f) = self.lib.api.nvEncDestroyEncoder {
                // SAFETY: our session (non-null: `open_session` returned
                // it), destroyed once, last.
                unsafe { f(self.encoder) };
            }
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod stub {
    use std::convert::Infallible;

    use super::Preset;
    use crate::codec::EncoderConfig;
    use crate::error::{Error, Result};
    use crate::gpu::{DeviceFrame, GpuStream};

    pub struct NvEncoder {
        never: Infallible,
    }

    impl NvEncoder {
        pub fn new(
            _stream: &GpuStream,
            _config: EncoderConfig,
            _preset: Preset,
        ) -> Result<NvEncoder> {
            Err(Error::NotCompiled("NVENC", "cuda"))
        }

        pub fn config(&self) -> &EncoderConfig {
            match self.never {}
        }

        pub fn encode(&mut self, _frame: &DeviceFrame, _force_keyframe: bool) -> Result<Vec<u8>> {
            match self.never {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_fatal_prefix_means_broken_for_good() {
        let fatal = Error::Gpu(format!(
            "{FATAL_PREFIX}NVENC registering a device frame: NV_ENC_ERR_RESOURCE_REGISTER_FAILED"
        ));
        assert!(is_nvenc_broken(&fatal));
        assert!(!is_nvenc_broken(&Error::Gpu(
            "NVENC encoding: NV_ENC_ERR_ENCODER_BUSY".into()
        )));
        assert!(!is_nvenc_broken(&Error::NotCompiled("NVENC", "cuda")));
    }

    #[test]
    fn without_a_stream_the_cpu_encoder_is_chosen_and_says_why() {
        let (enc, why) = GpuEncoder::new(None, EncoderConfig::new(64, 48, 30.0), Preset::P2)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!enc.is_nvenc());
        assert!(
            why.contains("CPU openh264") && why.contains("no GPU stream"),
            "{why}"
        );
    }
}
