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
use crate::error::Result;
use crate::gpu::{DeviceFrame, GpuStream};

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
    use std::ffi::{c_void, CStr};

    use super::super::nvenc_api::*;
    use super::Preset;
    use crate::codec::EncoderConfig;
    use crate::error::{Error, Result};
    use crate::gpu::{DeviceFrame, GpuStream};

    /// Registered input surfaces kept at most (frames come from a pool).
    const MAX_REGISTERED: usize = 16;

    struct Registered {
        key: (u64, usize, usize, usize),
        handle: *mut c_void,
    }

    /// An NVENC H.264 session on one CUDA context.
    pub struct NvEncoder {
        lib: NvencLib,
        encoder: *mut c_void,
        bitstream: *mut c_void,
        registered: Vec<Registered>,
        stream: GpuStream,
        config: EncoderConfig,
        frame_idx: u64,
    }

    fn ok(what: &str, r: NVENCSTATUS) -> Result<()> {
        if r == NV_ENC_SUCCESS {
            Ok(())
        } else {
            Err(Error::Gpu(format!("NVENC {what}: {}", status_name(r))))
        }
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
            let api = &lib.api;
            let open = api
                .nvEncOpenEncodeSessionEx
                .ok_or_else(|| missing("nvEncOpenEncodeSessionEx"))?;
            let mut p = NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS::zeroed();
            p.version = NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER;
            p.deviceType = NV_ENC_DEVICE_TYPE_CUDA;
            p.device = ctx_stream.raw_context();
            p.apiVersion = NVENCAPI_VERSION;
            let mut encoder: *mut c_void = std::ptr::null_mut();
            // SAFETY: a versioned params struct of the header layout and a
            // valid out-pointer; the CUDA context is current.
            let r = unsafe { open(&mut *p, &mut encoder) };
            if r != NV_ENC_SUCCESS || encoder.is_null() {
                return Err(Error::Gpu(format!(
                    "NVENC session could not be opened ({}): this GPU may have no video encoder",
                    status_name(r)
                )));
            }
            let mut enc = NvEncoder {
                lib,
                encoder,
                bitstream: std::ptr::null_mut(),
                registered: Vec::new(),
                stream: ctx_stream,
                config,
                frame_idx: 0,
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

        fn register(&mut self, frame: &DeviceFrame) -> Result<*mut c_void> {
            let ptr = frame.device_address(&self.stream);
            let key = (ptr, frame.pitch(), frame.width(), frame.height());
            if let Some(r) = self.registered.iter().find(|r| r.key == key) {
                return Ok(r.handle);
            }
            if self.registered.len() >= MAX_REGISTERED {
                let old = self.registered.remove(0);
                self.unregister(old.handle);
            }
            let reg = self
                .lib
                .api
                .nvEncRegisterResource
                .ok_or_else(|| missing("nvEncRegisterResource"))?;
            let mut rr = NV_ENC_REGISTER_RESOURCE::zeroed();
            rr.version = NV_ENC_REGISTER_RESOURCE_VER;
            rr.resourceType = NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR;
            rr.width = frame.width() as u32;
            rr.height = frame.height() as u32;
            rr.pitch = frame.pitch() as u32;
            rr.resourceToRegister = ptr as *mut c_void;
            rr.bufferFormat = NV_ENC_BUFFER_FORMAT_NV12;
            rr.bufferUsage = NV_ENC_BUFFER_USAGE_INPUT_IMAGE;
            // SAFETY: a live session; the pointer is a pitched NV12 device
            // allocation (UV at pitch * height) of this context.
            let r = unsafe { reg(self.encoder, &mut *rr) };
            if r != NV_ENC_SUCCESS {
                return Err(self.fail("registering a device frame", r));
            }
            self.registered.push(Registered {
                key,
                handle: rr.registeredResource,
            });
            Ok(rr.registeredResource)
        }

        fn unregister(&self, handle: *mut c_void) {
            if let Some(f) = self.lib.api.nvEncUnregisterResource {
                // SAFETY: a handle from nvEncRegisterResource, released once.
                unsafe { f(self.encoder, handle) };
            }
        }

        /// Encodes one frame (its pixels must be complete: synchronise the
        /// stream that wrote them) and returns the Annex-B access unit.
        pub fn encode(&mut self, frame: &DeviceFrame, force_keyframe: bool) -> Result<Vec<u8>> {
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
            ok("mapping the input", unsafe { map(self.encoder, &mut *m) })?;
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
                ok("unlocking the bitstream", r)?;
                Ok(data)
            })();
            // SAFETY: unmapping the resource mapped above, once.
            let r = unsafe { unmap(self.encoder, mapped) };
            let data = result?;
            ok("unmapping the input", r)?;
            self.frame_idx += 1;
            Ok(data)
        }
    }

    impl Drop for NvEncoder {
        fn drop(&mut self) {
            let _ = self.stream.bind_context();
            for r in std::mem::take(&mut self.registered) {
                self.unregister(r.handle);
            }
            if !self.bitstream.is_null() {
                if let Some(f) = self.lib.api.nvEncDestroyBitstreamBuffer {
                    // SAFETY: our bitstream buffer, destroyed once.
                    unsafe { f(self.encoder, self.bitstream) };
                }
            }
            if let Some(f) = self.lib.api.nvEncDestroyEncoder {
                // SAFETY: our session, destroyed once, last.
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
