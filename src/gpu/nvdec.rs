//! NVDEC: H.264 Annex-B access units in, device NV12 frames out, through
//! `libnvcuvid.so.1` loaded at run time (bindings in [`super::nvcuvid`]).
//!
//! Each decoded surface is mapped, copied device-to-device into a
//! [`DeviceFrame`] from a [`FramePool`] and unmapped at once, so the
//! decoder's few surfaces are never held by the pipeline. No host copy.
//! A decode error marks frames `damaged` until the next intra picture
//! decodes cleanly: the caller censors those frames whole.
//!
//! Without feature `cuda`: the same names; [`NvDecoder::new`] returns
//! `Error::NotCompiled("NVDEC", "cuda")`.

#[cfg(feature = "cuda")]
pub use imp::*;
#[cfg(not(feature = "cuda"))]
pub use stub::*;

#[cfg(feature = "cuda")]
mod imp {
    use std::ffi::{c_int, c_uint, c_ulong};
    use std::sync::Arc;

    use super::super::nvcuvid::{
        CUvideodecoder, CUvideoparser, CuvidLib, DecodeBackend, ParserSession, StreamFormat,
        Zeroed, CHROMA_420, CODEC_H264, CUDA_SUCCESS, CUVIDDECODECAPS, CUVIDGETDECODESTATUS,
        CUVIDPICPARAMS, CUVIDPROCPARAMS, CUVIDSOURCEDATAPACKET, DECODE_STATUS_ERROR,
        DECODE_STATUS_ERROR_CONCEALED, PKT_ENDOFPICTURE, PKT_ENDOFSTREAM, PKT_TIMESTAMP,
    };
    use crate::error::{Error, Result};
    use crate::gpu::{DeviceFrame, FramePool, GpuContext, GpuStream};

    fn check(what: &str, r: c_int) -> std::result::Result<(), String> {
        if r == CUDA_SUCCESS {
            Ok(())
        } else {
            Err(format!("{what} failed with CUresult {r}"))
        }
    }

    /// The libnvcuvid decoder behind the parser session.
    pub(crate) struct CuvidBackend {
        lib: Arc<CuvidLib>,
        decoder: CUvideodecoder,
    }

    impl CuvidBackend {
        fn destroy(&mut self) {
            if !self.decoder.is_null() {
                // SAFETY: a decoder created by cuvidCreateDecoder, destroyed once.
                unsafe { (self.lib.destroy_decoder)(self.decoder) };
                self.decoder = std::ptr::null_mut();
            }
        }
    }

    impl DecodeBackend for CuvidBackend {
        fn create(&mut self, format: &StreamFormat) -> std::result::Result<(), String> {
            let mut caps = CUVIDDECODECAPS {
                eCodecType: CODEC_H264,
                eChromaFormat: CHROMA_420,
                ..CUVIDDECODECAPS::default()
            };
            // SAFETY: a valid caps struct; the context is current (decode()
            // binds it before parsing).
            check("cuvidGetDecoderCaps", unsafe {
                (self.lib.get_decoder_caps)(&mut caps)
            })?;
            if caps.bIsSupported == 0 {
                return Err("this GPU's NVDEC does not decode 8-bit 4:2:0 H.264".into());
            }
            if format.coded_width > caps.nMaxWidth
                || format.coded_height > caps.nMaxHeight
                || format.coded_width < caps.nMinWidth as u32
                || format.coded_height < caps.nMinHeight as u32
            {
                return Err(format!(
                    "{}x{} is outside NVDEC's {}x{}..{}x{}",
                    format.coded_width,
                    format.coded_height,
                    caps.nMinWidth,
                    caps.nMinHeight,
                    caps.nMaxWidth,
                    caps.nMaxHeight
                ));
            }
            self.destroy();
            let mut ci = format.create_info();
            let mut dec: CUvideodecoder = std::ptr::null_mut();
            // SAFETY: valid out-pointer and create info of the header layout.
            check("cuvidCreateDecoder", unsafe {
                (self.lib.create_decoder)(&mut dec, &mut ci)
            })?;
            self.decoder = dec;
            Ok(())
        }

        fn decode(&mut self, pic: *mut CUVIDPICPARAMS) -> std::result::Result<(), String> {
            if self.decoder.is_null() {
                return Err("no decoder".into());
            }
            // SAFETY: `pic` comes straight from the parser's decode callback.
            check("cuvidDecodePicture", unsafe {
                (self.lib.decode_picture)(self.decoder, pic)
            })
        }
    }

    impl Drop for CuvidBackend {
        fn drop(&mut self) {
            self.destroy();
        }
    }

    /// One decoded picture, in display order.
    pub struct DecodedFrame {
        pub frame: DeviceFrame,
        /// The timestamp given with the access unit (90 kHz or any unit).
        pub timestamp: i64,
        /// Decoded after an error, before the next clean intra picture:
        /// censor it whole.
        pub damaged: bool,
    }

    /// An NVDEC H.264 decoder producing device NV12 frames.
    pub struct NvDecoder {
        lib: Arc<CuvidLib>,
        parser: CUvideoparser,
        // Boxed: the parser holds its address as pUserData.
        session: Box<ParserSession<CuvidBackend>>,
        stream: GpuStream,
        pool: Option<((usize, usize), FramePool)>,
    }

    impl NvDecoder {
        /// Loads libnvcuvid and creates the parser; the decoder itself is
        /// created on the first sequence header.
        pub fn new(ctx: &GpuContext) -> Result<NvDecoder> {
            let lib = Arc::new(CuvidLib::load()?);
            let stream = ctx.stream()?;
            stream.bind_context()?;
            let mut session = Box::new(ParserSession::new(CuvidBackend {
                lib: lib.clone(),
                decoder: std::ptr::null_mut(),
            }));
            let mut params = session.parser_params();
            let mut parser: CUvideoparser = std::ptr::null_mut();
            // SAFETY: valid out-pointer; params point at the boxed session,
            // which outlives the parser (destroyed first in Drop).
            let r = unsafe { (lib.create_video_parser)(&mut parser, &mut params) };
            check("cuvidCreateVideoParser", r).map_err(Error::Gpu)?;
            Ok(NvDecoder {
                lib,
                parser,
                session,
                stream,
                pool: None,
            })
        }

        /// The stream the frames were written on (already synchronised).
        pub fn stream(&self) -> &GpuStream {
            &self.stream
        }

        /// The current stream format, once a sequence header was seen.
        pub fn format(&self) -> Option<StreamFormat> {
            self.session.format
        }

        /// Errors (decode, unsupported stream) since the last call.
        pub fn take_errors(&mut self) -> Vec<String> {
            std::mem::take(&mut self.session.errors)
        }

        /// Gives a frame back for reuse.
        pub fn recycle(&mut self, frame: DeviceFrame) {
            if let Some((_, p)) = self.pool.as_mut() {
                p.put(frame);
            }
        }

        /// Decodes one Annex-B access unit; returns the frames it
        /// completed (with no B-frames and display delay 0: this one).
        pub fn decode(&mut self, access_unit: &[u8], timestamp: i64) -> Result<Vec<DecodedFrame>> {
            let mut pkt = CUVIDSOURCEDATAPACKET::zeroed();
            pkt.flags = PKT_TIMESTAMP | PKT_ENDOFPICTURE;
            pkt.payload_size = access_unit.len() as c_ulong;
            pkt.payload = access_unit.as_ptr();
            pkt.timestamp = timestamp;
            self.parse(pkt)
        }

        /// Signals the end of the stream and returns the remaining frames.
        pub fn flush(&mut self) -> Result<Vec<DecodedFrame>> {
            let mut pkt = CUVIDSOURCEDATAPACKET::zeroed();
            pkt.flags = PKT_ENDOFSTREAM;
            self.parse(pkt)
        }

        fn parse(&mut self, mut pkt: CUVIDSOURCEDATAPACKET) -> Result<Vec<DecodedFrame>> {
            self.stream.bind_context()?;
            // SAFETY: a live parser; the payload outlives the call; the
            // callbacks run synchronously inside it.
            let r = unsafe { (self.lib.parse_video_data)(self.parser, &mut pkt) };
            if r != CUDA_SUCCESS {
                self.session
                    .mark_damaged(format!("cuvidParseVideoData failed with CUresult {r}"));
            }
            let mut out = Vec::new();
            while let Some(d) = self.session.displayed.pop_front() {
                out.push(self.map_and_copy(
                    d.picture_index,
                    d.timestamp,
                    d.progressive,
                    d.damaged,
                )?);
            }
            Ok(out)
        }

        fn map_and_copy(
            &mut self,
            index: i32,
            timestamp: i64,
            progressive: bool,
            mut damaged: bool,
        ) -> Result<DecodedFrame> {
            let format = self
                .session
                .format
                .ok_or_else(|| Error::Gpu("NVDEC displayed a picture before a sequence".into()))?;
            let decoder = self.session.backend.decoder;
            if let Some(status) = self.lib.get_decode_status {
                let mut st = CUVIDGETDECODESTATUS::zeroed();
                // SAFETY: a live decoder and a valid out-struct.
                let r = unsafe { status(decoder, index, &mut st) };
                if r == CUDA_SUCCESS
                    && matches!(
                        st.decodeStatus,
                        DECODE_STATUS_ERROR | DECODE_STATUS_ERROR_CONCEALED
                    )
                {
                    damaged = true;
                    self.session
                        .mark_damaged(format!("NVDEC reported a decode error in picture {index}"));
                }
            }
            let (w, h) = (format.width as usize, format.height as usize);
            // A new pool when the size changed (resolution change).
            let pool = match &mut self.pool {
                Some((size, pool)) if *size == (w, h) => pool,
                slot => &mut slot.insert(((w, h), FramePool::new(w, h))).1,
            };
            let mut frame = pool.get(&self.stream)?;
            let mut proc = CUVIDPROCPARAMS::zeroed();
            proc.progressive_frame = progressive as c_int;
            proc.output_stream = self.stream.raw_stream();
            let (mut ptr, mut pitch) = (0u64, 0 as c_uint);
            // SAFETY: a live decoder, a surface index from the display
            // callback, valid out-pointers.
            let r = unsafe {
                (self.lib.map_video_frame64)(decoder, index, &mut ptr, &mut pitch, &mut proc)
            };
            if r != CUDA_SUCCESS {
                return Err(Error::Gpu(format!(
                    "cuvidMapVideoFrame64 failed with CUresult {r}"
                )));
            }
            let pitch = pitch as usize;
            // NV12 surface: the UV rows follow `height` (rounded up to even)
            // luma rows.
            let uv_offset = pitch * h.next_multiple_of(2);
            // SAFETY: the mapped surface holds `uv_offset + pitch * h/2`
            // bytes and stays mapped until after the synchronize below.
            let copied = unsafe {
                self.stream
                    .copy_nv12_from_device(ptr, pitch, uv_offset, &mut frame)
            }
            .and_then(|()| self.stream.synchronize());
            // SAFETY: unmapping the pointer mapped above, once.
            let r = unsafe { (self.lib.unmap_video_frame64)(decoder, ptr) };
            copied?;
            if r != CUDA_SUCCESS {
                return Err(Error::Gpu(format!(
                    "cuvidUnmapVideoFrame64 failed with CUresult {r}"
                )));
            }
            Ok(DecodedFrame {
                frame,
                timestamp,
                damaged,
            })
        }
    }

    impl Drop for NvDecoder {
        fn drop(&mut self) {
            let _ = self.stream.bind_context();
            if !self.parser.is_null() {
                // SAFETY: the parser created in new(), destroyed once,
                // before the session it points at.
                unsafe { (self.lib.destroy_video_parser)(self.parser) };
            }
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod stub {
    use std::convert::Infallible;

    use super::super::nvcuvid::StreamFormat;
    use crate::error::{Error, Result};
    use crate::gpu::{DeviceFrame, GpuContext, GpuStream};

    /// One decoded picture (never produced without feature `cuda`).
    pub struct DecodedFrame {
        pub frame: DeviceFrame,
        pub timestamp: i64,
        pub damaged: bool,
    }

    pub struct NvDecoder {
        never: Infallible,
    }

    impl NvDecoder {
        pub fn new(_ctx: &GpuContext) -> Result<NvDecoder> {
            Err(Error::NotCompiled("NVDEC", "cuda"))
        }

        pub fn stream(&self) -> &GpuStream {
            match self.never {}
        }

        pub fn format(&self) -> Option<StreamFormat> {
            match self.never {}
        }

        pub fn take_errors(&mut self) -> Vec<String> {
            match self.never {}
        }

        pub fn recycle(&mut self, _frame: DeviceFrame) {
            match self.never {}
        }

        pub fn decode(
            &mut self,
            _access_unit: &[u8],
            _timestamp: i64,
        ) -> Result<Vec<DecodedFrame>> {
            match self.never {}
        }

        pub fn flush(&mut self) -> Result<Vec<DecodedFrame>> {
            match self.never {}
        }
    }
}
