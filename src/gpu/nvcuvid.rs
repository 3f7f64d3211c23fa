//! The subset of the NVIDIA Video Codec SDK decode API (`cuviddec.h`,
//! `nvcuvid.h`, layout of SDK 11.1 as in nv-codec-headers 11.1.5) that
//! [`super::nvdec`] needs, written from the public header layout; plus the
//! parser session (the three parser callbacks), which is plain Rust over a
//! [`DecodeBackend`] so a fake can drive it in tests without a GPU.
//!
//! Always compiled: nothing here links to CUDA; `libnvcuvid.so.1` is opened
//! at run time by [`CuvidLib::load`].

#![allow(non_camel_case_types, non_snake_case)]

use std::collections::VecDeque;
use std::ffi::{c_int, c_uint, c_ulong, c_void};

use crate::error::{Error, Result};

pub type CUresult = c_int;
pub type CUvideoparser = *mut c_void;
pub type CUvideodecoder = *mut c_void;
pub type CUvideoctxlock = *mut c_void;
pub type CUstream = *mut c_void;

pub const CUDA_SUCCESS: CUresult = 0;
/// `cudaVideoCodec_H264`.
pub const CODEC_H264: c_int = 4;
/// `cudaVideoChromaFormat_420`.
pub const CHROMA_420: c_int = 1;
/// `cudaVideoSurfaceFormat_NV12`.
pub const SURFACE_NV12: c_int = 0;
/// `cudaVideoDeinterlaceMode_Weave` (progressive input: no deinterlacing).
pub const DEINTERLACE_WEAVE: c_int = 0;
/// `cudaVideoDeinterlaceMode_Adaptive`.
pub const DEINTERLACE_ADAPTIVE: c_int = 2;
/// `cudaVideoCreate_PreferCUVID`.
pub const CREATE_PREFER_CUVID: c_ulong = 4;
pub const PKT_ENDOFSTREAM: c_ulong = 0x01;
pub const PKT_TIMESTAMP: c_ulong = 0x02;
pub const PKT_DISCONTINUITY: c_ulong = 0x04;
pub const PKT_ENDOFPICTURE: c_ulong = 0x08;
/// `cuvidDecodeStatus_Error`.
pub const DECODE_STATUS_ERROR: c_int = 8;
/// `cuvidDecodeStatus_Error_Concealed`.
pub const DECODE_STATUS_ERROR_CONCEALED: c_int = 9;
/// Upper bound of decode surfaces (the SDK's limit).
pub const MAX_SURFACES: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rect32 {
    pub left: c_int,
    pub top: c_int,
    pub right: c_int,
    pub bottom: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rect16 {
    pub left: i16,
    pub top: i16,
    pub right: i16,
    pub bottom: i16,
}

/// `CUVIDEOFORMAT` (what the sequence callback gets).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CUVIDEOFORMAT {
    pub codec: c_int,
    pub frame_rate_numerator: c_uint,
    pub frame_rate_denominator: c_uint,
    pub progressive_sequence: u8,
    pub bit_depth_luma_minus8: u8,
    pub bit_depth_chroma_minus8: u8,
    pub min_num_decode_surfaces: u8,
    pub coded_width: c_uint,
    pub coded_height: c_uint,
    pub display_area: Rect32,
    pub chroma_format: c_int,
    pub bitrate: c_uint,
    pub display_aspect_ratio: [c_int; 2],
    /// Bit fields and three bytes of colour description.
    pub video_signal_description: [u8; 4],
    pub seqhdr_data_length: c_uint,
}

/// `CUVIDSOURCEDATAPACKET`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CUVIDSOURCEDATAPACKET {
    pub flags: c_ulong,
    pub payload_size: c_ulong,
    pub payload: *const u8,
    pub timestamp: i64,
}

/// `CUVIDPARSERDISPINFO`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CUVIDPARSERDISPINFO {
    pub picture_index: c_int,
    pub progressive_frame: c_int,
    pub top_field_first: c_int,
    pub repeat_first_field: c_int,
    pub timestamp: i64,
}

/// The leading fields of `CUVIDPICPARAMS` (4280 bytes in SDK 11.1); the
/// parser owns the struct and we only read these and pass the pointer on.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CUVIDPICPARAMS {
    pub PicWidthInMbs: c_int,
    pub FrameHeightInMbs: c_int,
    pub CurrPicIdx: c_int,
    pub field_pic_flag: c_int,
    pub bottom_field_flag: c_int,
    pub second_field: c_int,
    pub nBitstreamDataLen: c_uint,
    pub pBitstreamData: *const u8,
    pub nNumSlices: c_uint,
    pub pSliceDataOffsets: *const c_uint,
    pub ref_pic_flag: c_int,
    pub intra_pic_flag: c_int,
}

/// Size of the whole `CUVIDPICPARAMS` in SDK 11.1 (for reference).
pub const CUVIDPICPARAMS_SIZE: usize = 4280;

pub type SequenceCallback = unsafe extern "C" fn(*mut c_void, *mut CUVIDEOFORMAT) -> c_int;
pub type DecodeCallback = unsafe extern "C" fn(*mut c_void, *mut CUVIDPICPARAMS) -> c_int;
pub type DisplayCallback = unsafe extern "C" fn(*mut c_void, *mut CUVIDPARSERDISPINFO) -> c_int;

/// `CUVIDPARSERPARAMS`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CUVIDPARSERPARAMS {
    pub CodecType: c_int,
    pub ulMaxNumDecodeSurfaces: c_uint,
    pub ulClockRate: c_uint,
    pub ulErrorThreshold: c_uint,
    pub ulMaxDisplayDelay: c_uint,
    /// `bAnnexb : 1`, `uReserved : 31`.
    pub bits: c_uint,
    pub uReserved1: [c_uint; 4],
    pub pUserData: *mut c_void,
    pub pfnSequenceCallback: Option<SequenceCallback>,
    pub pfnDecodePicture: Option<DecodeCallback>,
    pub pfnDisplayPicture: Option<DisplayCallback>,
    pub pfnGetOperatingPoint: *mut c_void,
    pub pvReserved2: [*mut c_void; 6],
    pub pExtVideoInfo: *mut c_void,
}

/// `CUVIDDECODECAPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CUVIDDECODECAPS {
    pub eCodecType: c_int,
    pub eChromaFormat: c_int,
    pub nBitDepthMinus8: c_uint,
    pub reserved1: [c_uint; 3],
    pub bIsSupported: u8,
    pub nNumNVDECs: u8,
    pub nOutputFormatMask: u16,
    pub nMaxWidth: c_uint,
    pub nMaxHeight: c_uint,
    pub nMaxMBCount: c_uint,
    pub nMinWidth: u16,
    pub nMinHeight: u16,
    pub bIsHistogramSupported: u8,
    pub nCounterBitDepth: u8,
    pub nMaxHistogramBins: u16,
    pub reserved3: [c_uint; 10],
}

/// `CUVIDDECODECREATEINFO`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CUVIDDECODECREATEINFO {
    pub ulWidth: c_ulong,
    pub ulHeight: c_ulong,
    pub ulNumDecodeSurfaces: c_ulong,
    pub CodecType: c_int,
    pub ChromaFormat: c_int,
    pub ulCreationFlags: c_ulong,
    pub bitDepthMinus8: c_ulong,
    pub ulIntraDecodeOnly: c_ulong,
    pub ulMaxWidth: c_ulong,
    pub ulMaxHeight: c_ulong,
    pub Reserved1: c_ulong,
    pub display_area: Rect16,
    pub OutputFormat: c_int,
    pub DeinterlaceMode: c_int,
    pub ulTargetWidth: c_ulong,
    pub ulTargetHeight: c_ulong,
    pub ulNumOutputSurfaces: c_ulong,
    pub vidLock: CUvideoctxlock,
    pub target_rect: Rect16,
    pub enableHistogram: c_ulong,
    pub Reserved2: [c_ulong; 4],
}

/// `CUVIDPROCPARAMS`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CUVIDPROCPARAMS {
    pub progressive_frame: c_int,
    pub second_field: c_int,
    pub top_field_first: c_int,
    pub unpaired_field: c_int,
    pub reserved_flags: c_uint,
    pub reserved_zero: c_uint,
    pub raw_input_dptr: u64,
    pub raw_input_pitch: c_uint,
    pub raw_input_format: c_uint,
    pub raw_output_dptr: u64,
    pub raw_output_pitch: c_uint,
    pub Reserved1: c_uint,
    pub output_stream: CUstream,
    pub Reserved: [c_uint; 46],
    pub histogram_dptr: *mut u64,
    pub Reserved2: [*mut c_void; 1],
}

/// `CUVIDGETDECODESTATUS`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CUVIDGETDECODESTATUS {
    pub decodeStatus: c_int,
    pub reserved: [c_uint; 31],
    pub pReserved: [*mut c_void; 8],
}

/// Zero-initialised C structs (every field is an integer, a raw pointer or
/// an `Option` of a function pointer, for which all-zero bits are valid).
pub trait Zeroed: Sized {
    fn zeroed() -> Self {
        // SAFETY: implemented only for #[repr(C)] structs of integers, raw
        // pointers and Option<fn>, for all of which all-zero bits are a
        // valid value (null / None / 0).
        unsafe { std::mem::zeroed() }
    }
}

impl Zeroed for CUVIDSOURCEDATAPACKET {}
impl Zeroed for CUVIDPARSERPARAMS {}
impl Zeroed for CUVIDDECODECREATEINFO {}
impl Zeroed for CUVIDPROCPARAMS {}
impl Zeroed for CUVIDGETDECODESTATUS {}
impl Zeroed for CUVIDPICPARAMS {}

pub type GetDecoderCapsFn = unsafe extern "C" fn(*mut CUVIDDECODECAPS) -> CUresult;
pub type CreateDecoderFn =
    unsafe extern "C" fn(*mut CUvideodecoder, *mut CUVIDDECODECREATEINFO) -> CUresult;
pub type DestroyDecoderFn = unsafe extern "C" fn(CUvideodecoder) -> CUresult;
pub type DecodePictureFn = unsafe extern "C" fn(CUvideodecoder, *mut CUVIDPICPARAMS) -> CUresult;
pub type GetDecodeStatusFn =
    unsafe extern "C" fn(CUvideodecoder, c_int, *mut CUVIDGETDECODESTATUS) -> CUresult;
pub type MapVideoFrame64Fn = unsafe extern "C" fn(
    CUvideodecoder,
    c_int,
    *mut u64,
    *mut c_uint,
    *mut CUVIDPROCPARAMS,
) -> CUresult;
pub type UnmapVideoFrame64Fn = unsafe extern "C" fn(CUvideodecoder, u64) -> CUresult;
pub type CreateVideoParserFn =
    unsafe extern "C" fn(*mut CUvideoparser, *mut CUVIDPARSERPARAMS) -> CUresult;
pub type ParseVideoDataFn =
    unsafe extern "C" fn(CUvideoparser, *mut CUVIDSOURCEDATAPACKET) -> CUresult;
pub type DestroyVideoParserFn = unsafe extern "C" fn(CUvideoparser) -> CUresult;

/// A libloading error with its cause (libloading's own text is just
/// "dlopen failed").
pub fn dl_error(e: &libloading::Error) -> String {
    match std::error::Error::source(e) {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

/// The shared-library name opened by [`CuvidLib::load`].
pub const NVCUVID_SONAME: &str = "libnvcuvid.so.1";

/// `libnvcuvid.so.1`, loaded at run time.
pub struct CuvidLib {
    pub get_decoder_caps: GetDecoderCapsFn,
    pub create_decoder: CreateDecoderFn,
    pub destroy_decoder: DestroyDecoderFn,
    pub decode_picture: DecodePictureFn,
    /// Absent from very old drivers.
    pub get_decode_status: Option<GetDecodeStatusFn>,
    pub map_video_frame64: MapVideoFrame64Fn,
    pub unmap_video_frame64: UnmapVideoFrame64Fn,
    pub create_video_parser: CreateVideoParserFn,
    pub parse_video_data: ParseVideoDataFn,
    pub destroy_video_parser: DestroyVideoParserFn,
    // Keeps the function pointers valid; dropped last.
    _lib: libloading::Library,
}

impl CuvidLib {
    /// Opens `libnvcuvid.so.1` (the NVIDIA driver's decode library).
    pub fn load() -> Result<CuvidLib> {
        CuvidLib::load_from(NVCUVID_SONAME)
    }

    /// Opens the library `name` (a soname or a path).
    pub fn load_from(name: &str) -> Result<CuvidLib> {
        // SAFETY: loading the NVIDIA decode library runs only its
        // initialisers, which have no preconditions.
        let lib = unsafe { libloading::Library::new(name) }
            .map_err(|e| Error::Gpu(format!("{name} not found: {}", dl_error(&e))))?;
        macro_rules! sym {
            ($name:literal, $ty:ty) => {{
                // SAFETY: the symbol has this C signature in the SDK headers
                // (cuviddec.h / nvcuvid.h, SDK 11.1); the pointer stays valid
                // while `_lib` lives.
                let s: libloading::Symbol<$ty> = unsafe { lib.get($name) }.map_err(|e| {
                    Error::Gpu(format!(
                        "{name} lacks {}: {e}",
                        String::from_utf8_lossy(&$name[..$name.len() - 1])
                    ))
                })?;
                *s
            }};
        }
        let get_decode_status = {
            // SAFETY: as in `sym!`; optional symbol.
            let s: std::result::Result<libloading::Symbol<GetDecodeStatusFn>, _> =
                unsafe { lib.get(b"cuvidGetDecodeStatus\0") };
            s.ok().map(|s| *s)
        };
        Ok(CuvidLib {
            get_decoder_caps: sym!(b"cuvidGetDecoderCaps\0", GetDecoderCapsFn),
            create_decoder: sym!(b"cuvidCreateDecoder\0", CreateDecoderFn),
            destroy_decoder: sym!(b"cuvidDestroyDecoder\0", DestroyDecoderFn),
            decode_picture: sym!(b"cuvidDecodePicture\0", DecodePictureFn),
            get_decode_status,
            map_video_frame64: sym!(b"cuvidMapVideoFrame64\0", MapVideoFrame64Fn),
            unmap_video_frame64: sym!(b"cuvidUnmapVideoFrame64\0", UnmapVideoFrame64Fn),
            create_video_parser: sym!(b"cuvidCreateVideoParser\0", CreateVideoParserFn),
            parse_video_data: sym!(b"cuvidParseVideoData\0", ParseVideoDataFn),
            destroy_video_parser: sym!(b"cuvidDestroyVideoParser\0", DestroyVideoParserFn),
            _lib: lib,
        })
    }
}

/// What the decoder was created for (from the sequence header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamFormat {
    pub coded_width: u32,
    pub coded_height: u32,
    /// Cropped (display) size: the size of the frames handed out.
    pub width: u32,
    pub height: u32,
    pub display_area: Rect32,
    pub surfaces: u32,
    pub progressive: bool,
}

impl StreamFormat {
    /// The format for a sequence header, or why it is not supported.
    pub fn from_video_format(f: &CUVIDEOFORMAT) -> std::result::Result<StreamFormat, String> {
        if f.codec != CODEC_H264 {
            return Err(format!("codec {} is not H.264", f.codec));
        }
        if f.chroma_format != CHROMA_420 {
            return Err(format!("chroma format {} is not 4:2:0", f.chroma_format));
        }
        if f.bit_depth_luma_minus8 != 0 || f.bit_depth_chroma_minus8 != 0 {
            return Err(format!(
                "bit depth {} is not 8",
                8 + f.bit_depth_luma_minus8 as u32
            ));
        }
        let a = f.display_area;
        let (w, h) = (a.right - a.left, a.bottom - a.top);
        if w <= 0 || h <= 0 || f.coded_width == 0 || f.coded_height == 0 {
            return Err(format!(
                "empty picture ({}x{} coded, display {w}x{h})",
                f.coded_width, f.coded_height
            ));
        }
        // Headroom over the minimum for the display delay and our mapping.
        let surfaces = (f.min_num_decode_surfaces as u32 + 4).clamp(8, MAX_SURFACES as u32);
        Ok(StreamFormat {
            coded_width: f.coded_width,
            coded_height: f.coded_height,
            width: w as u32,
            height: h as u32,
            display_area: a,
            surfaces,
            progressive: f.progressive_sequence != 0,
        })
    }

    /// The `cuvidCreateDecoder` parameters: NV12 output at display size.
    pub fn create_info(&self) -> CUVIDDECODECREATEINFO {
        let mut ci = CUVIDDECODECREATEINFO::zeroed();
        ci.ulWidth = self.coded_width as c_ulong;
        ci.ulHeight = self.coded_height as c_ulong;
        ci.ulNumDecodeSurfaces = self.surfaces as c_ulong;
        ci.CodecType = CODEC_H264;
        ci.ChromaFormat = CHROMA_420;
        ci.ulCreationFlags = CREATE_PREFER_CUVID;
        ci.ulMaxWidth = self.coded_width as c_ulong;
        ci.ulMaxHeight = self.coded_height as c_ulong;
        let a = self.display_area;
        ci.display_area = Rect16 {
            left: a.left as i16,
            top: a.top as i16,
            right: a.right as i16,
            bottom: a.bottom as i16,
        };
        ci.OutputFormat = SURFACE_NV12;
        ci.DeinterlaceMode = if self.progressive {
            DEINTERLACE_WEAVE
        } else {
            DEINTERLACE_ADAPTIVE
        };
        ci.ulTargetWidth = self.width as c_ulong;
        ci.ulTargetHeight = self.height as c_ulong;
        ci.ulNumOutputSurfaces = 2;
        ci
    }
}

/// What the parser session needs from a decoder: the real one calls
/// libnvcuvid, tests use a fake.
pub trait DecodeBackend {
    /// (Re)creates the decoder for `format`, destroying any previous one.
    fn create(&mut self, format: &StreamFormat) -> std::result::Result<(), String>;
    /// Submits one picture.
    fn decode(&mut self, pic: *mut CUVIDPICPARAMS) -> std::result::Result<(), String>;
}

/// A picture the parser wants displayed, in display order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Displayed {
    pub picture_index: i32,
    pub timestamp: i64,
    pub progressive: bool,
    /// Decoded after an error and before the next intra picture decoded
    /// cleanly: its pixels cannot be trusted (censor the whole frame).
    pub damaged: bool,
}

/// The state behind the parser callbacks (`pUserData` points at it).
pub struct ParserSession<B: DecodeBackend> {
    pub backend: B,
    pub format: Option<StreamFormat>,
    /// How many times the decoder was (re)created.
    pub creations: u32,
    pub displayed: VecDeque<Displayed>,
    /// Errors since the caller last took them.
    pub errors: Vec<String>,
    /// A decode error happened and no intra picture has decoded since.
    pub damaged: bool,
    /// Per surface: was the picture in it decoded while damaged.
    surface_damaged: [bool; MAX_SURFACES],
}

impl<B: DecodeBackend> ParserSession<B> {
    pub fn new(backend: B) -> Self {
        ParserSession {
            backend,
            format: None,
            creations: 0,
            displayed: VecDeque::new(),
            errors: Vec::new(),
            damaged: false,
            surface_damaged: [false; MAX_SURFACES],
        }
    }

    /// Sequence callback: returns the number of decode surfaces (> 1 tells
    /// the parser to use it), or 0 to stop on an unsupported stream.
    pub fn on_sequence(&mut self, f: &CUVIDEOFORMAT) -> c_int {
        let format = match StreamFormat::from_video_format(f) {
            Ok(format) => format,
            Err(e) => {
                self.errors.push(format!("unsupported stream: {e}"));
                self.damaged = true;
                return 0;
            }
        };
        if self.format == Some(format) {
            return format.surfaces as c_int;
        }
        match self.backend.create(&format) {
            Ok(()) => {
                self.format = Some(format);
                self.creations += 1;
                self.surface_damaged = [false; MAX_SURFACES];
                format.surfaces as c_int
            }
            Err(e) => {
                self.errors.push(format!("creating the decoder: {e}"));
                self.format = None;
                self.damaged = true;
                0
            }
        }
    }

    /// Decode callback: submits the picture, tracking damage until the
    /// next cleanly decoded intra picture. Never stops the parser.
    ///
    /// # Safety
    /// `pic` is null or a valid `CUVIDPICPARAMS` from the parser.
    pub unsafe fn on_decode(&mut self, pic: *mut CUVIDPICPARAMS) -> c_int {
        if pic.is_null() || self.format.is_none() {
            self.errors
                .push("picture before a usable sequence header".into());
            self.damaged = true;
            return 0;
        }
        // SAFETY: the parser passes a valid CUVIDPICPARAMS whose leading
        // fields are those of our struct; checked non-null above.
        let (idx, intra) = unsafe { ((*pic).CurrPicIdx, (*pic).intra_pic_flag != 0) };
        match self.backend.decode(pic) {
            Ok(()) => {
                if intra {
                    self.damaged = false;
                }
            }
            Err(e) => {
                self.errors.push(format!("decoding picture {idx}: {e}"));
                self.damaged = true;
            }
        }
        if let Some(slot) = usize::try_from(idx)
            .ok()
            .and_then(|i| self.surface_damaged.get_mut(i))
        {
            *slot = self.damaged;
        }
        1
    }

    /// Display callback: queues the picture for mapping.
    pub fn on_display(&mut self, info: Option<&CUVIDPARSERDISPINFO>) -> c_int {
        let Some(info) = info else {
            return 1; // end of stream
        };
        let damaged = usize::try_from(info.picture_index)
            .ok()
            .and_then(|i| self.surface_damaged.get(i).copied())
            .unwrap_or(true);
        self.displayed.push_back(Displayed {
            picture_index: info.picture_index,
            timestamp: info.timestamp,
            progressive: info.progressive_frame != 0,
            damaged,
        });
        1
    }

    /// Marks a surface's picture damaged after the fact (decode status
    /// said error) and keeps the session damaged until the next intra.
    pub fn mark_damaged(&mut self, reason: String) {
        self.errors.push(reason);
        self.damaged = true;
    }

    /// The parser parameters with these callbacks; `self` must stay at
    /// its address while the parser lives (keep it boxed).
    pub fn parser_params(&mut self) -> CUVIDPARSERPARAMS {
        let mut p = CUVIDPARSERPARAMS::zeroed();
        p.CodecType = CODEC_H264;
        p.ulMaxNumDecodeSurfaces = 1; // the sequence callback sets the real value
        p.ulClockRate = 90_000;
        p.ulErrorThreshold = 100; // hand every picture over; we track damage
        p.ulMaxDisplayDelay = 0; // low latency: display as soon as decoded
        p.pUserData = self as *mut Self as *mut c_void;
        p.pfnSequenceCallback = Some(sequence_callback::<B>);
        p.pfnDecodePicture = Some(decode_callback::<B>);
        p.pfnDisplayPicture = Some(display_callback::<B>);
        p
    }
}

fn callback_guard(f: impl FnOnce() -> c_int) -> c_int {
    // A panic must not unwind into the driver.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(0)
}

/// # Safety
/// `user` is the `ParserSession<B>` given in [`ParserSession::parser_params`]
/// and `format` a valid pointer from the parser, both live for the call.
pub unsafe extern "C" fn sequence_callback<B: DecodeBackend>(
    user: *mut c_void,
    format: *mut CUVIDEOFORMAT,
) -> c_int {
    callback_guard(|| {
        // SAFETY: per this function's contract.
        match unsafe { ((user as *mut ParserSession<B>).as_mut(), format.as_ref()) } {
            (Some(s), Some(f)) => s.on_sequence(f),
            _ => 0,
        }
    })
}

/// # Safety
/// As [`sequence_callback`].
pub unsafe extern "C" fn decode_callback<B: DecodeBackend>(
    user: *mut c_void,
    pic: *mut CUVIDPICPARAMS,
) -> c_int {
    callback_guard(|| {
        // SAFETY: per this function's contract.
        match unsafe { (user as *mut ParserSession<B>).as_mut() } {
            // SAFETY: `pic` comes from the parser (contract above).
            Some(s) => unsafe { s.on_decode(pic) },
            None => 0,
        }
    })
}

/// # Safety
/// As [`sequence_callback`]; `info` may be null (end of stream).
pub unsafe extern "C" fn display_callback<B: DecodeBackend>(
    user: *mut c_void,
    info: *mut CUVIDPARSERDISPINFO,
) -> c_int {
    callback_guard(|| {
        // SAFETY: per this function's contract.
        match unsafe { ((user as *mut ParserSession<B>).as_mut(), info.as_ref()) } {
            (Some(s), i) => s.on_display(i),
            _ => 0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    // Values printed by a C program compiled against nv-codec-headers
    // 11.1.5.2 (Debian libffmpeg-nvenc-dev) on x86_64 Linux.
    #[test]
    fn struct_layouts_match_the_sdk_headers() {
        assert_eq!(size_of::<CUVIDEOFORMAT>(), 64);
        assert_eq!(offset_of!(CUVIDEOFORMAT, min_num_decode_surfaces), 15);
        assert_eq!(offset_of!(CUVIDEOFORMAT, coded_width), 16);
        assert_eq!(offset_of!(CUVIDEOFORMAT, display_area), 24);
        assert_eq!(offset_of!(CUVIDEOFORMAT, chroma_format), 40);
        assert_eq!(offset_of!(CUVIDEOFORMAT, seqhdr_data_length), 60);
        assert_eq!(size_of::<CUVIDSOURCEDATAPACKET>(), 32);
        assert_eq!(offset_of!(CUVIDSOURCEDATAPACKET, payload), 16);
        assert_eq!(offset_of!(CUVIDSOURCEDATAPACKET, timestamp), 24);
        assert_eq!(size_of::<CUVIDPARSERDISPINFO>(), 24);
        assert_eq!(offset_of!(CUVIDPARSERDISPINFO, timestamp), 16);
        assert_eq!(size_of::<CUVIDPARSERPARAMS>(), 136);
        assert_eq!(offset_of!(CUVIDPARSERPARAMS, pUserData), 40);
        assert_eq!(offset_of!(CUVIDPARSERPARAMS, pfnSequenceCallback), 48);
        assert_eq!(offset_of!(CUVIDPARSERPARAMS, pfnDisplayPicture), 64);
        assert_eq!(offset_of!(CUVIDPARSERPARAMS, pExtVideoInfo), 128);
        assert_eq!(size_of::<CUVIDDECODECAPS>(), 88);
        assert_eq!(offset_of!(CUVIDDECODECAPS, bIsSupported), 24);
        assert_eq!(offset_of!(CUVIDDECODECAPS, nMaxWidth), 28);
        assert_eq!(offset_of!(CUVIDDECODECAPS, nMinWidth), 40);
        assert_eq!(offset_of!(CUVIDDECODECAPS, reserved3), 48);
        assert_eq!(size_of::<CUVIDDECODECREATEINFO>(), 176);
        assert_eq!(offset_of!(CUVIDDECODECREATEINFO, CodecType), 24);
        assert_eq!(offset_of!(CUVIDDECODECREATEINFO, ulCreationFlags), 32);
        assert_eq!(offset_of!(CUVIDDECODECREATEINFO, display_area), 80);
        assert_eq!(offset_of!(CUVIDDECODECREATEINFO, OutputFormat), 88);
        assert_eq!(offset_of!(CUVIDDECODECREATEINFO, ulTargetWidth), 96);
        assert_eq!(offset_of!(CUVIDDECODECREATEINFO, vidLock), 120);
        assert_eq!(offset_of!(CUVIDDECODECREATEINFO, target_rect), 128);
        assert_eq!(offset_of!(CUVIDDECODECREATEINFO, enableHistogram), 136);
        assert_eq!(size_of::<CUVIDPROCPARAMS>(), 264);
        assert_eq!(offset_of!(CUVIDPROCPARAMS, raw_input_dptr), 24);
        assert_eq!(offset_of!(CUVIDPROCPARAMS, output_stream), 56);
        assert_eq!(offset_of!(CUVIDPROCPARAMS, histogram_dptr), 248);
        assert_eq!(size_of::<CUVIDGETDECODESTATUS>(), 192);
        assert_eq!(offset_of!(CUVIDPICPARAMS, CurrPicIdx), 8);
        assert_eq!(offset_of!(CUVIDPICPARAMS, ref_pic_flag), 56);
        assert_eq!(offset_of!(CUVIDPICPARAMS, intra_pic_flag), 60);
        assert!(size_of::<CUVIDPICPARAMS>() <= CUVIDPICPARAMS_SIZE);
    }

    #[test]
    fn missing_library_is_an_ordinary_error() {
        let err = CuvidLib::load_from("libnvcuvid-does-not-exist.so.1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("libnvcuvid-does-not-exist.so.1 not found"),
            "{err}"
        );
        // On this machine (no driver) the real name fails the same way.
        if let Err(e) = CuvidLib::load() {
            assert!(e.to_string().contains("libnvcuvid.so.1 not found"), "{e}");
        }
    }

    #[derive(Default)]
    struct Fake {
        created: Vec<StreamFormat>,
        fail_create: bool,
        /// Picture indices whose decode fails.
        fail_pics: Vec<i32>,
        decoded: Vec<i32>,
    }

    impl DecodeBackend for Fake {
        fn create(&mut self, format: &StreamFormat) -> std::result::Result<(), String> {
            if self.fail_create {
                return Err("CUDA_ERROR_OUT_OF_MEMORY".into());
            }
            self.created.push(*format);
            Ok(())
        }

        fn decode(&mut self, pic: *mut CUVIDPICPARAMS) -> std::result::Result<(), String> {
            // SAFETY: the tests pass a valid pointer.
            let idx = unsafe { (*pic).CurrPicIdx };
            self.decoded.push(idx);
            if self.fail_pics.contains(&idx) {
                Err("CUDA_ERROR_INVALID_VALUE".into())
            } else {
                Ok(())
            }
        }
    }

    fn video_format(w: i32, h: i32) -> CUVIDEOFORMAT {
        CUVIDEOFORMAT {
            codec: CODEC_H264,
            progressive_sequence: 1,
            min_num_decode_surfaces: 5,
            coded_width: (w as u32).next_multiple_of(16),
            coded_height: (h as u32).next_multiple_of(16),
            display_area: Rect32 {
                left: 0,
                top: 0,
                right: w,
                bottom: h,
            },
            chroma_format: CHROMA_420,
            ..CUVIDEOFORMAT::default()
        }
    }

    /// Drives the session through the same C function pointers the parser
    /// would call.
    struct Driver {
        session: Box<ParserSession<Fake>>,
        params: CUVIDPARSERPARAMS,
    }

    impl Driver {
        fn new(fake: Fake) -> Driver {
            let mut session = Box::new(ParserSession::new(fake));
            let params = session.parser_params();
            Driver { session, params }
        }
        fn sequence(&mut self, mut f: CUVIDEOFORMAT) -> c_int {
            let cb = self.params.pfnSequenceCallback.unwrap();
            // SAFETY: pUserData is the boxed session; `f` lives for the call.
            unsafe { cb(self.params.pUserData, &mut f) }
        }
        fn picture(&mut self, idx: i32, intra: bool) -> c_int {
            let mut p = CUVIDPICPARAMS::zeroed();
            p.CurrPicIdx = idx;
            p.intra_pic_flag = intra as c_int;
            let cb = self.params.pfnDecodePicture.unwrap();
            // SAFETY: as above.
            let r = unsafe { cb(self.params.pUserData, &mut p) };
            let mut d = CUVIDPARSERDISPINFO {
                picture_index: idx,
                progressive_frame: 1,
                timestamp: idx as i64 * 3000,
                ..Default::default()
            };
            let cb = self.params.pfnDisplayPicture.unwrap();
            // SAFETY: as above.
            unsafe { cb(self.params.pUserData, &mut d) };
            r
        }
    }

    #[test]
    fn sequence_callback_creates_and_reconfigures_on_resolution_change() {
        let mut d = Driver::new(Fake::default());
        assert_eq!(d.sequence(video_format(1920, 1080)), 9);
        // The same header again (repeated SPS): no new decoder.
        assert_eq!(d.sequence(video_format(1920, 1080)), 9);
        assert_eq!(d.session.creations, 1);
        let f = d.session.backend.created[0];
        assert_eq!((f.coded_width, f.coded_height), (1920, 1088));
        assert_eq!((f.width, f.height), (1920, 1080));
        let ci = f.create_info();
        assert_eq!((ci.ulTargetWidth, ci.ulTargetHeight), (1920, 1080));
        assert_eq!(ci.display_area.bottom, 1080);
        assert_eq!(ci.OutputFormat, SURFACE_NV12);
        // Resolution change: a new decoder of the new size.
        assert_eq!(d.sequence(video_format(1280, 720)), 9);
        assert_eq!(d.session.creations, 2);
        assert_eq!(d.session.format.map(|f| f.width), Some(1280));
        assert!(d.session.errors.is_empty());
    }

    #[test]
    fn unsupported_streams_stop_the_parser_with_a_reason() {
        let mut d = Driver::new(Fake::default());
        let mut f = video_format(640, 480);
        f.bit_depth_luma_minus8 = 2;
        assert_eq!(d.sequence(f), 0);
        assert!(
            d.session.errors[0].contains("bit depth 10"),
            "{:?}",
            d.session.errors
        );
        let mut d = Driver::new(Fake {
            fail_create: true,
            ..Fake::default()
        });
        assert_eq!(d.sequence(video_format(640, 480)), 0);
        assert!(d.session.errors[0].contains("OUT_OF_MEMORY"));
        // Pictures without a decoder are refused, not decoded.
        assert_eq!(d.picture(0, true), 0);
        assert!(d.session.backend.decoded.is_empty());
    }

    #[test]
    fn a_decode_error_damages_frames_until_the_next_intra_picture() {
        let mut d = Driver::new(Fake {
            fail_pics: vec![2],
            ..Fake::default()
        });
        d.sequence(video_format(320, 240));
        d.picture(0, true);
        d.picture(1, false);
        d.picture(2, false); // fails
        d.picture(3, false); // references damaged data
        d.picture(4, true); // clean key frame: recovered
        d.picture(5, false);
        let damaged: Vec<bool> = d.session.displayed.iter().map(|x| x.damaged).collect();
        assert_eq!(damaged, [false, false, true, true, false, false]);
        assert_eq!(d.session.errors.len(), 1);
        assert!(d.session.errors[0].contains("picture 2"));
        let ts: Vec<i64> = d.session.displayed.iter().map(|x| x.timestamp).collect();
        assert_eq!(ts, [0, 3000, 6000, 9000, 12000, 15000]);
        // A null display (end of stream) is accepted and queues nothing.
        let cb = d.params.pfnDisplayPicture.unwrap();
        // SAFETY: a null info is the documented end-of-stream signal.
        assert_eq!(unsafe { cb(d.params.pUserData, std::ptr::null_mut()) }, 1);
        assert_eq!(d.session.displayed.len(), 6);
    }
}
