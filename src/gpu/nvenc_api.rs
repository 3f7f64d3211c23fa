//! The subset of NVENC (`nvEncodeAPI.h`, API 11.1, layout as in
//! nv-codec-headers 11.1.5) that [`super::nvenc`] needs, written from the
//! public header layout, plus the pure parts of the encoder set-up (the
//! low-latency configuration, which GPUs have no NVENC) so they are tested
//! on any machine. Nothing here links to CUDA; `libnvidia-encode.so.1` is
//! opened at run time by [`NvencLib::load`].
//!
//! API 11.1 is targeted on purpose: drivers accept any older API version
//! (R470 and newer run 11.1), and these are the headers the layouts were
//! checked against.

#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::{c_char, c_int, c_void};

use crate::error::{Error, Result};

pub type NVENCSTATUS = c_int;

pub const NVENCAPI_MAJOR_VERSION: u32 = 11;
pub const NVENCAPI_MINOR_VERSION: u32 = 1;
pub const NVENCAPI_VERSION: u32 = NVENCAPI_MAJOR_VERSION | (NVENCAPI_MINOR_VERSION << 24);

/// `NVENCAPI_STRUCT_VERSION(ver)`.
pub const fn struct_version(ver: u32) -> u32 {
    NVENCAPI_VERSION | (ver << 16) | (0x7 << 28)
}

pub const NV_ENCODE_API_FUNCTION_LIST_VER: u32 = struct_version(2);
pub const NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER: u32 = struct_version(1);
pub const NV_ENC_CAPS_PARAM_VER: u32 = struct_version(1);
pub const NV_ENC_RC_PARAMS_VER: u32 = struct_version(1);
pub const NV_ENC_CONFIG_VER: u32 = struct_version(7) | (1 << 31);
pub const NV_ENC_PRESET_CONFIG_VER: u32 = struct_version(4) | (1 << 31);
pub const NV_ENC_INITIALIZE_PARAMS_VER: u32 = struct_version(5) | (1 << 31);
pub const NV_ENC_REGISTER_RESOURCE_VER: u32 = struct_version(3);
pub const NV_ENC_MAP_INPUT_RESOURCE_VER: u32 = struct_version(4);
pub const NV_ENC_CREATE_BITSTREAM_BUFFER_VER: u32 = struct_version(1);
pub const NV_ENC_PIC_PARAMS_VER: u32 = struct_version(4) | (1 << 31);
pub const NV_ENC_LOCK_BITSTREAM_VER: u32 = struct_version(1);

pub const NV_ENC_SUCCESS: NVENCSTATUS = 0;
pub const NV_ENC_ERR_NO_ENCODE_DEVICE: NVENCSTATUS = 1;
pub const NV_ENC_ERR_UNSUPPORTED_DEVICE: NVENCSTATUS = 2;
pub const NV_ENC_ERR_INVALID_VERSION: NVENCSTATUS = 15;
pub const NV_ENC_ERR_OUT_OF_MEMORY: NVENCSTATUS = 10;
pub const NV_ENC_ERR_LOCK_BUSY: NVENCSTATUS = 13;
pub const NV_ENC_ERR_NEED_MORE_INPUT: NVENCSTATUS = 17;
pub const NV_ENC_ERR_ENCODER_BUSY: NVENCSTATUS = 18;
pub const NV_ENC_ERR_RESOURCE_REGISTER_FAILED: NVENCSTATUS = 23;

pub const NVENC_INFINITE_GOPLENGTH: u32 = 0xffff_ffff;
pub const NV_ENC_DEVICE_TYPE_CUDA: u32 = 1;
pub const NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR: u32 = 1;
pub const NV_ENC_BUFFER_FORMAT_NV12: u32 = 1;
pub const NV_ENC_BUFFER_USAGE_INPUT_IMAGE: u32 = 0;
pub const NV_ENC_PIC_STRUCT_FRAME: u32 = 1;
pub const NV_ENC_PIC_FLAG_FORCEIDR: u32 = 0x2;
pub const NV_ENC_PIC_FLAG_OUTPUT_SPSPPS: u32 = 0x4;
pub const NV_ENC_PARAMS_RC_CBR: u32 = 0x2;
pub const NV_ENC_TUNING_INFO_ULTRA_LOW_LATENCY: u32 = 3;
pub const NV_ENC_PIC_TYPE_IDR: u32 = 3;
/// `NV_ENC_CAPS_NUM_MAX_BFRAMES` (first of the caps enum).
pub const NV_ENC_CAPS_NUM_MAX_BFRAMES: u32 = 0;
pub const NV_ENC_CAPS_WIDTH_MAX: u32 = 16;

/// `NV_ENC_CONFIG_H264` bit-field word: `outputAUD` (bit 6),
/// `disableSPSPPS` (bit 7), `repeatSPSPPS` (bit 12).
pub const H264_BIT_OUTPUT_AUD: u32 = 1 << 6;
pub const H264_BIT_DISABLE_SPSPPS: u32 = 1 << 7;
pub const H264_BIT_REPEAT_SPSPPS: u32 = 1 << 12;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GUID {
    pub Data1: u32,
    pub Data2: u16,
    pub Data3: u16,
    pub Data4: [u8; 8],
}

const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> GUID {
    GUID {
        Data1: d1,
        Data2: d2,
        Data3: d3,
        Data4: d4,
    }
}

/// {6BC82762-4E63-4CA4-AA85-1E50F321F6BF}
pub const NV_ENC_CODEC_H264_GUID: GUID = guid(
    0x6bc82762,
    0x4e63,
    0x4ca4,
    [0xaa, 0x85, 0x1e, 0x50, 0xf3, 0x21, 0xf6, 0xbf],
);
/// {FC0A8D3E-45F8-4CF8-80C7-298871590EBF}
pub const NV_ENC_PRESET_P1_GUID: GUID = guid(
    0xfc0a8d3e,
    0x45f8,
    0x4cf8,
    [0x80, 0xc7, 0x29, 0x88, 0x71, 0x59, 0x0e, 0xbf],
);
/// {F581CFB8-88D6-4381-93F0-DF13F9C27DAB}
pub const NV_ENC_PRESET_P2_GUID: GUID = guid(
    0xf581cfb8,
    0x88d6,
    0x4381,
    [0x93, 0xf0, 0xdf, 0x13, 0xf9, 0xc2, 0x7d, 0xab],
);
/// {36850110-3A07-441F-94D5-3670631F91F6}
pub const NV_ENC_PRESET_P3_GUID: GUID = guid(
    0x36850110,
    0x3a07,
    0x441f,
    [0x94, 0xd5, 0x36, 0x70, 0x63, 0x1f, 0x91, 0xf6],
);

/// Low-latency presets (P1 fastest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Preset {
    P1,
    #[default]
    P2,
    P3,
}

impl Preset {
    pub fn guid(self) -> GUID {
        match self {
            Preset::P1 => NV_ENC_PRESET_P1_GUID,
            Preset::P2 => NV_ENC_PRESET_P2_GUID,
            Preset::P3 => NV_ENC_PRESET_P3_GUID,
        }
    }
}

type Fp = *mut c_void;

pub type OpenEncodeSessionExFn = unsafe extern "C" fn(
    *mut NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS,
    *mut *mut c_void,
) -> NVENCSTATUS;
pub type GetEncodeCapsFn =
    unsafe extern "C" fn(*mut c_void, GUID, *mut NV_ENC_CAPS_PARAM, *mut c_int) -> NVENCSTATUS;
pub type GetEncodePresetConfigExFn =
    unsafe extern "C" fn(*mut c_void, GUID, GUID, u32, *mut NV_ENC_PRESET_CONFIG) -> NVENCSTATUS;
pub type InitializeEncoderFn =
    unsafe extern "C" fn(*mut c_void, *mut NV_ENC_INITIALIZE_PARAMS) -> NVENCSTATUS;
pub type CreateBitstreamBufferFn =
    unsafe extern "C" fn(*mut c_void, *mut NV_ENC_CREATE_BITSTREAM_BUFFER) -> NVENCSTATUS;
pub type HandleFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> NVENCSTATUS;
pub type EncodePictureFn = unsafe extern "C" fn(*mut c_void, *mut NV_ENC_PIC_PARAMS) -> NVENCSTATUS;
pub type LockBitstreamFn =
    unsafe extern "C" fn(*mut c_void, *mut NV_ENC_LOCK_BITSTREAM) -> NVENCSTATUS;
pub type MapInputResourceFn =
    unsafe extern "C" fn(*mut c_void, *mut NV_ENC_MAP_INPUT_RESOURCE) -> NVENCSTATUS;
pub type DestroyEncoderFn = unsafe extern "C" fn(*mut c_void) -> NVENCSTATUS;
pub type RegisterResourceFn =
    unsafe extern "C" fn(*mut c_void, *mut NV_ENC_REGISTER_RESOURCE) -> NVENCSTATUS;
pub type GetLastErrorStringFn = unsafe extern "C" fn(*mut c_void) -> *const c_char;

/// `NV_ENCODE_API_FUNCTION_LIST`: the entries we call are typed, the rest
/// are kept as opaque pointers so the offsets stay right.
#[repr(C)]
pub struct NV_ENCODE_API_FUNCTION_LIST {
    pub version: u32,
    pub reserved: u32,
    pub nvEncOpenEncodeSession: Fp,
    pub nvEncGetEncodeGUIDCount: Fp,
    pub nvEncGetEncodeProfileGUIDCount: Fp,
    pub nvEncGetEncodeProfileGUIDs: Fp,
    pub nvEncGetEncodeGUIDs: Fp,
    pub nvEncGetInputFormatCount: Fp,
    pub nvEncGetInputFormats: Fp,
    pub nvEncGetEncodeCaps: Option<GetEncodeCapsFn>,
    pub nvEncGetEncodePresetCount: Fp,
    pub nvEncGetEncodePresetGUIDs: Fp,
    pub nvEncGetEncodePresetConfig: Fp,
    pub nvEncInitializeEncoder: Option<InitializeEncoderFn>,
    pub nvEncCreateInputBuffer: Fp,
    pub nvEncDestroyInputBuffer: Fp,
    pub nvEncCreateBitstreamBuffer: Option<CreateBitstreamBufferFn>,
    pub nvEncDestroyBitstreamBuffer: Option<HandleFn>,
    pub nvEncEncodePicture: Option<EncodePictureFn>,
    pub nvEncLockBitstream: Option<LockBitstreamFn>,
    pub nvEncUnlockBitstream: Option<HandleFn>,
    pub nvEncLockInputBuffer: Fp,
    pub nvEncUnlockInputBuffer: Fp,
    pub nvEncGetEncodeStats: Fp,
    pub nvEncGetSequenceParams: Fp,
    pub nvEncRegisterAsyncEvent: Fp,
    pub nvEncUnregisterAsyncEvent: Fp,
    pub nvEncMapInputResource: Option<MapInputResourceFn>,
    pub nvEncUnmapInputResource: Option<HandleFn>,
    pub nvEncDestroyEncoder: Option<DestroyEncoderFn>,
    pub nvEncInvalidateRefFrames: Fp,
    pub nvEncOpenEncodeSessionEx: Option<OpenEncodeSessionExFn>,
    pub nvEncRegisterResource: Option<RegisterResourceFn>,
    pub nvEncUnregisterResource: Option<HandleFn>,
    pub nvEncReconfigureEncoder: Fp,
    pub reserved1: Fp,
    pub nvEncCreateMVBuffer: Fp,
    pub nvEncDestroyMVBuffer: Fp,
    pub nvEncRunMotionEstimationOnly: Fp,
    pub nvEncGetLastErrorString: Option<GetLastErrorStringFn>,
    pub nvEncSetIOCudaStreams: Fp,
    pub nvEncGetEncodePresetConfigEx: Option<GetEncodePresetConfigExFn>,
    pub nvEncGetSequenceParamEx: Fp,
    pub reserved2: [Fp; 277],
}

#[repr(C)]
pub struct NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS {
    pub version: u32,
    pub deviceType: u32,
    pub device: *mut c_void,
    pub reserved: *mut c_void,
    pub apiVersion: u32,
    pub reserved1: [u32; 253],
    pub reserved2: [*mut c_void; 64],
}

#[repr(C)]
pub struct NV_ENC_CAPS_PARAM {
    pub version: u32,
    pub capsToQuery: u32,
    pub reserved: [u32; 62],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NV_ENC_QP {
    pub qpInterP: u32,
    pub qpInterB: u32,
    pub qpIntra: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct NV_ENC_RC_PARAMS {
    pub version: u32,
    pub rateControlMode: u32,
    pub constQP: NV_ENC_QP,
    pub averageBitRate: u32,
    pub maxBitRate: u32,
    pub vbvBufferSize: u32,
    pub vbvInitialDelay: u32,
    /// enableMinQP .. aqStrength bit fields.
    pub bits: u32,
    pub minQP: NV_ENC_QP,
    pub maxQP: NV_ENC_QP,
    pub initialRCQP: NV_ENC_QP,
    pub temporallayerIdxMask: u32,
    pub temporalLayerQP: [u8; 8],
    pub targetQuality: u8,
    pub targetQualityLSB: u8,
    pub lookaheadDepth: u16,
    pub lowDelayKeyFrameScale: u8,
    pub reserved1: [u8; 3],
    pub qpMapMode: u32,
    pub multiPass: u32,
    pub alphaLayerBitrateRatio: u32,
    pub cbQPIndexOffset: i8,
    pub crQPIndexOffset: i8,
    pub reserved2: u16,
    pub reserved: [u32; 4],
}

/// `NV_ENC_CONFIG_H264` (the largest member of `NV_ENC_CODEC_CONFIG`,
/// which has its size): the fields up to `maxNumRefFrames`, then opaque.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NV_ENC_CONFIG_H264 {
    /// enableTemporalSVC .. singleSliceIntraRefresh bit fields.
    pub bits: u32,
    pub level: u32,
    pub idrPeriod: u32,
    pub separateColourPlaneFlag: u32,
    pub disableDeblockingFilterIDC: u32,
    pub numTemporalLayers: u32,
    pub spsId: u32,
    pub ppsId: u32,
    pub adaptiveTransformMode: u32,
    pub fmoMode: u32,
    pub bdirectMode: u32,
    pub entropyCodingMode: u32,
    pub stereoMode: u32,
    pub intraRefreshPeriod: u32,
    pub intraRefreshCnt: u32,
    pub maxNumRefFrames: u32,
    pub rest: [u64; 216],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct NV_ENC_CONFIG {
    pub version: u32,
    pub profileGUID: GUID,
    pub gopLength: u32,
    pub frameIntervalP: i32,
    pub monoChromeEncoding: u32,
    pub frameFieldMode: u32,
    pub mvPrecision: u32,
    pub rcParams: NV_ENC_RC_PARAMS,
    pub encodeCodecConfig: NV_ENC_CONFIG_H264,
    pub reserved: [u32; 278],
    pub reserved2: [*mut c_void; 64],
}

#[repr(C)]
pub struct NV_ENC_PRESET_CONFIG {
    pub version: u32,
    pub presetCfg: NV_ENC_CONFIG,
    pub reserved1: [u32; 255],
    pub reserved2: [*mut c_void; 64],
}

#[repr(C)]
pub struct NV_ENC_INITIALIZE_PARAMS {
    pub version: u32,
    pub encodeGUID: GUID,
    pub presetGUID: GUID,
    pub encodeWidth: u32,
    pub encodeHeight: u32,
    pub darWidth: u32,
    pub darHeight: u32,
    pub frameRateNum: u32,
    pub frameRateDen: u32,
    pub enableEncodeAsync: u32,
    pub enablePTD: u32,
    /// reportSliceOffsets .. enableOutputInVidmem bit fields.
    pub bits: u32,
    pub privDataSize: u32,
    pub privData: *mut c_void,
    pub encodeConfig: *mut NV_ENC_CONFIG,
    pub maxEncodeWidth: u32,
    pub maxEncodeHeight: u32,
    pub maxMEHintCountsPerBlock: [[u32; 4]; 2],
    pub tuningInfo: u32,
    pub bufferFormat: u32,
    pub reserved: [u32; 287],
    pub reserved2: [*mut c_void; 64],
}

#[repr(C)]
pub struct NV_ENC_REGISTER_RESOURCE {
    pub version: u32,
    pub resourceType: u32,
    pub width: u32,
    pub height: u32,
    pub pitch: u32,
    pub subResourceIndex: u32,
    pub resourceToRegister: *mut c_void,
    pub registeredResource: *mut c_void,
    pub bufferFormat: u32,
    pub bufferUsage: u32,
    pub pInputFencePoint: *mut c_void,
    pub pOutputFencePoint: *mut c_void,
    pub reserved1: [u32; 247],
    pub reserved2: [*mut c_void; 60],
}

#[repr(C)]
pub struct NV_ENC_MAP_INPUT_RESOURCE {
    pub version: u32,
    pub subResourceIndex: u32,
    pub inputResource: *mut c_void,
    pub registeredResource: *mut c_void,
    pub mappedResource: *mut c_void,
    pub mappedBufferFmt: u32,
    pub reserved1: [u32; 251],
    pub reserved2: [*mut c_void; 63],
}

#[repr(C)]
pub struct NV_ENC_CREATE_BITSTREAM_BUFFER {
    pub version: u32,
    pub size: u32,
    pub memoryHeap: u32,
    pub reserved: u32,
    pub bitstreamBuffer: *mut c_void,
    pub bitstreamBufferPtr: *mut c_void,
    pub reserved1: [u32; 58],
    pub reserved2: [*mut c_void; 64],
}

#[repr(C)]
pub struct NV_ENC_PIC_PARAMS {
    pub version: u32,
    pub inputWidth: u32,
    pub inputHeight: u32,
    pub inputPitch: u32,
    pub encodePicFlags: u32,
    pub frameIdx: u32,
    pub inputTimeStamp: u64,
    pub inputDuration: u64,
    pub inputBuffer: *mut c_void,
    pub outputBitstream: *mut c_void,
    pub completionEvent: *mut c_void,
    pub bufferFmt: u32,
    pub pictureStruct: u32,
    pub pictureType: u32,
    /// `NV_ENC_CODEC_PIC_PARAMS` (a union of 1536 bytes); zero is fine.
    pub codecPicParams: [u64; 192],
    pub meHintCountsPerBlock: [[u32; 4]; 2],
    pub meExternalHints: *mut c_void,
    pub reserved1: [u32; 6],
    pub reserved2: [*mut c_void; 2],
    pub qpDeltaMap: *mut i8,
    pub qpDeltaMapSize: u32,
    pub reservedBitFields: u32,
    pub meHintRefPicDist: [u16; 2],
    pub alphaBuffer: *mut c_void,
    pub reserved3: [u32; 286],
    pub reserved4: [*mut c_void; 59],
}

#[repr(C)]
pub struct NV_ENC_LOCK_BITSTREAM {
    pub version: u32,
    /// doNotWait, ltrFrame, getRCStats bit fields.
    pub bits: u32,
    pub outputBitstream: *mut c_void,
    pub sliceOffsets: *mut u32,
    pub frameIdx: u32,
    pub hwEncodeStatus: u32,
    pub numSlices: u32,
    pub bitstreamSizeInBytes: u32,
    pub outputTimeStamp: u64,
    pub outputDuration: u64,
    pub bitstreamBufferPtr: *mut c_void,
    pub pictureType: u32,
    pub pictureStruct: u32,
    pub frameAvgQP: u32,
    pub frameSatd: u32,
    pub ltrFrameIdx: u32,
    pub ltrFrameBitmap: u32,
    pub temporalId: u32,
    pub reserved: [u32; 12],
    pub intraMBCount: u32,
    pub interMBCount: u32,
    pub averageMVX: i32,
    pub averageMVY: i32,
    pub alphaLayerSizeInBytes: u32,
    pub reserved1: [u32; 218],
    pub reserved2: [*mut c_void; 64],
}

/// Zero-initialised C structs, as the API wants them before `version` is
/// set.
pub trait Zeroed: Sized {
    fn zeroed() -> Box<Self> {
        let layout = std::alloc::Layout::new::<Self>();
        // SAFETY: implemented only for #[repr(C)] structs of integers, raw
        // pointers and Option<fn> (all-zero bits are a valid value of
        // each), none zero-sized; a null allocation is handled.
        unsafe {
            let p = std::alloc::alloc_zeroed(layout) as *mut Self;
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::from_raw(p)
        }
    }
}

impl Zeroed for NV_ENCODE_API_FUNCTION_LIST {}
impl Zeroed for NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS {}
impl Zeroed for NV_ENC_CAPS_PARAM {}
impl Zeroed for NV_ENC_PRESET_CONFIG {}
impl Zeroed for NV_ENC_CONFIG {}
impl Zeroed for NV_ENC_INITIALIZE_PARAMS {}
impl Zeroed for NV_ENC_REGISTER_RESOURCE {}
impl Zeroed for NV_ENC_MAP_INPUT_RESOURCE {}
impl Zeroed for NV_ENC_CREATE_BITSTREAM_BUFFER {}
impl Zeroed for NV_ENC_PIC_PARAMS {}
impl Zeroed for NV_ENC_LOCK_BITSTREAM {}

/// Turns a preset configuration into ours: H.264 with no B-frames, CBR at
/// `bitrate_bps` with a one-frame VBV, an infinite GOP (IDR only on
/// request) and SPS/PPS repeated before every IDR.
pub fn apply_low_latency(cfg: &mut NV_ENC_CONFIG, bitrate_bps: u32, fps: f32) {
    let fps = if fps.is_finite() && fps > 0.0 {
        fps
    } else {
        30.0
    };
    cfg.gopLength = NVENC_INFINITE_GOPLENGTH;
    cfg.frameIntervalP = 1; // IPPP: no B-frames
    let rc = &mut cfg.rcParams;
    rc.rateControlMode = NV_ENC_PARAMS_RC_CBR;
    rc.averageBitRate = bitrate_bps;
    rc.maxBitRate = bitrate_bps;
    let per_frame = (bitrate_bps as f64 / fps as f64).round().max(1.0) as u32;
    rc.vbvBufferSize = per_frame;
    rc.vbvInitialDelay = per_frame;
    let h = &mut cfg.encodeCodecConfig;
    h.idrPeriod = NVENC_INFINITE_GOPLENGTH;
    h.bits |= H264_BIT_REPEAT_SPSPPS;
    h.bits &= !H264_BIT_DISABLE_SPSPPS;
}

/// The frame-rate fraction for `NV_ENC_INITIALIZE_PARAMS` (e.g. 29.97 ->
/// 30000/1001).
pub fn frame_rate_fraction(fps: f32) -> (u32, u32) {
    if !fps.is_finite() || fps <= 0.0 {
        return (30, 1);
    }
    let ntsc = fps * 1001.0 / 1000.0;
    if (ntsc - ntsc.round()).abs() < 0.01 && (fps - fps.round()).abs() > 0.01 {
        return ((ntsc.round() as u32) * 1000, 1001);
    }
    ((fps * 1000.0).round() as u32, 1000)
}

/// GPU models that have NVDEC but no NVENC (data-centre parts): H100,
/// H200 (and GH200), A100 and A30. Matched on whole words of the CUDA
/// device name, e.g. "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB".
/// Other data-centre parts (L4, L40, L40S, A10, A16, T4) do have NVENC.
pub fn gpu_lacks_nvenc(device_name: &str) -> bool {
    device_name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| matches!(w, "H100" | "H200" | "GH200" | "A100" | "A30"))
}

/// The NVENC status name for messages.
pub fn status_name(s: NVENCSTATUS) -> &'static str {
    const NAMES: [&str; 26] = [
        "NV_ENC_SUCCESS",
        "NV_ENC_ERR_NO_ENCODE_DEVICE",
        "NV_ENC_ERR_UNSUPPORTED_DEVICE",
        "NV_ENC_ERR_INVALID_ENCODERDEVICE",
        "NV_ENC_ERR_INVALID_DEVICE",
        "NV_ENC_ERR_DEVICE_NOT_EXIST",
        "NV_ENC_ERR_INVALID_PTR",
        "NV_ENC_ERR_INVALID_EVENT",
        "NV_ENC_ERR_INVALID_PARAM",
        "NV_ENC_ERR_INVALID_CALL",
        "NV_ENC_ERR_OUT_OF_MEMORY",
        "NV_ENC_ERR_ENCODER_NOT_INITIALIZED",
        "NV_ENC_ERR_UNSUPPORTED_PARAM",
        "NV_ENC_ERR_LOCK_BUSY",
        "NV_ENC_ERR_NOT_ENOUGH_BUFFER",
        "NV_ENC_ERR_INVALID_VERSION",
        "NV_ENC_ERR_MAP_FAILED",
        "NV_ENC_ERR_NEED_MORE_INPUT",
        "NV_ENC_ERR_ENCODER_BUSY",
        "NV_ENC_ERR_EVENT_NOT_REGISTERD",
        "NV_ENC_ERR_GENERIC",
        "NV_ENC_ERR_INCOMPATIBLE_CLIENT_KEY",
        "NV_ENC_ERR_UNIMPLEMENTED",
        "NV_ENC_ERR_RESOURCE_REGISTER_FAILED",
        "NV_ENC_ERR_RESOURCE_NOT_REGISTERED",
        "NV_ENC_ERR_RESOURCE_NOT_MAPPED",
    ];
    usize::try_from(s)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("NV_ENC_ERR_(unknown)")
}

pub type CreateInstanceFn = unsafe extern "C" fn(*mut NV_ENCODE_API_FUNCTION_LIST) -> NVENCSTATUS;
pub type GetMaxSupportedVersionFn = unsafe extern "C" fn(*mut u32) -> NVENCSTATUS;

/// The shared-library name opened by [`NvencLib::load`].
pub const NVENC_SONAME: &str = "libnvidia-encode.so.1";

/// `libnvidia-encode.so.1`, loaded at run time, with its function list.
pub struct NvencLib {
    pub api: Box<NV_ENCODE_API_FUNCTION_LIST>,
    /// The newest API the driver supports, (major, minor).
    pub driver_api: (u32, u32),
    // Keeps the function pointers valid; dropped last.
    _lib: libloading::Library,
}

impl NvencLib {
    pub fn load() -> Result<NvencLib> {
        NvencLib::load_from(NVENC_SONAME)
    }

    /// Opens `name`, checks the driver's API version and fills the
    /// function list.
    pub fn load_from(name: &str) -> Result<NvencLib> {
        // SAFETY: loading the NVIDIA encode library runs only its
        // initialisers, which have no preconditions.
        let lib = unsafe { libloading::Library::new(name) }.map_err(|e| {
            Error::Gpu(format!(
                "{name} not found: {}",
                super::nvcuvid::dl_error(&e)
            ))
        })?;
        // SAFETY: these symbols have these C signatures in nvEncodeAPI.h.
        let (create, max_version) = unsafe {
            let c: libloading::Symbol<CreateInstanceFn> =
                lib.get(b"NvEncodeAPICreateInstance\0")
                    .map_err(|e| Error::Gpu(format!("{name}: NvEncodeAPICreateInstance: {e}")))?;
            let m: libloading::Symbol<GetMaxSupportedVersionFn> = lib
                .get(b"NvEncodeAPIGetMaxSupportedVersion\0")
                .map_err(|e| {
                    Error::Gpu(format!("{name}: NvEncodeAPIGetMaxSupportedVersion: {e}"))
                })?;
            (*c, *m)
        };
        let mut v = 0u32;
        // SAFETY: a valid out-pointer.
        let r = unsafe { max_version(&mut v) };
        if r != NV_ENC_SUCCESS {
            return Err(Error::Gpu(format!(
                "NvEncodeAPIGetMaxSupportedVersion: {}",
                status_name(r)
            )));
        }
        let driver_api = (v >> 4, v & 0xf);
        if driver_api < (NVENCAPI_MAJOR_VERSION, NVENCAPI_MINOR_VERSION) {
            return Err(Error::Gpu(format!(
                "the driver's NVENC API is {}.{}, {}.{} is needed (update the NVIDIA driver)",
                driver_api.0, driver_api.1, NVENCAPI_MAJOR_VERSION, NVENCAPI_MINOR_VERSION
            )));
        }
        let mut api = NV_ENCODE_API_FUNCTION_LIST::zeroed();
        api.version = NV_ENCODE_API_FUNCTION_LIST_VER;
        // SAFETY: a zeroed, versioned function list of the header's layout.
        let r = unsafe { create(&mut *api) };
        if r != NV_ENC_SUCCESS {
            return Err(Error::Gpu(format!(
                "NvEncodeAPICreateInstance: {}",
                status_name(r)
            )));
        }
        Ok(NvencLib {
            api,
            driver_api,
            _lib: lib,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    // Values printed by a C program compiled against nv-codec-headers
    // 11.1.5.2 (Debian libffmpeg-nvenc-dev) on x86_64 Linux.
    #[test]
    fn version_macros_match_the_header() {
        assert_eq!(NVENCAPI_VERSION, 16777227);
        assert_eq!(NV_ENCODE_API_FUNCTION_LIST_VER, 1895956491);
        assert_eq!(NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER, 1895890955);
        assert_eq!(NV_ENC_PRESET_CONFIG_VER, 4043571211);
        assert_eq!(NV_ENC_CONFIG_VER, 4043767819);
        assert_eq!(NV_ENC_INITIALIZE_PARAMS_VER, 4043636747);
        assert_eq!(NV_ENC_REGISTER_RESOURCE_VER, 1896022027);
        assert_eq!(NV_ENC_MAP_INPUT_RESOURCE_VER, 1896087563);
        assert_eq!(NV_ENC_CREATE_BITSTREAM_BUFFER_VER, 1895890955);
        assert_eq!(NV_ENC_PIC_PARAMS_VER, 4043571211);
        assert_eq!(NV_ENC_LOCK_BITSTREAM_VER, 1895890955);
        assert_eq!(NV_ENC_CAPS_PARAM_VER, 1895890955);
        assert_eq!(NV_ENC_RC_PARAMS_VER, 1895890955);
    }

    #[test]
    fn struct_layouts_match_the_header() {
        type L = NV_ENCODE_API_FUNCTION_LIST;
        assert_eq!(size_of::<GUID>(), 16);
        assert_eq!(size_of::<L>(), 2552);
        assert_eq!(offset_of!(L, nvEncGetEncodeCaps), 64);
        assert_eq!(offset_of!(L, nvEncInitializeEncoder), 96);
        assert_eq!(offset_of!(L, nvEncCreateBitstreamBuffer), 120);
        assert_eq!(offset_of!(L, nvEncEncodePicture), 136);
        assert_eq!(offset_of!(L, nvEncLockBitstream), 144);
        assert_eq!(offset_of!(L, nvEncMapInputResource), 208);
        assert_eq!(offset_of!(L, nvEncDestroyEncoder), 224);
        assert_eq!(offset_of!(L, nvEncOpenEncodeSessionEx), 240);
        assert_eq!(offset_of!(L, nvEncRegisterResource), 248);
        assert_eq!(offset_of!(L, nvEncUnregisterResource), 256);
        assert_eq!(offset_of!(L, nvEncGetLastErrorString), 304);
        assert_eq!(offset_of!(L, nvEncGetEncodePresetConfigEx), 320);
        assert_eq!(offset_of!(L, reserved2), 336);

        type O = NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS;
        assert_eq!(size_of::<O>(), 1552);
        assert_eq!(offset_of!(O, device), 8);
        assert_eq!(offset_of!(O, apiVersion), 24);
        assert_eq!(size_of::<NV_ENC_CAPS_PARAM>(), 256);

        type R = NV_ENC_RC_PARAMS;
        assert_eq!(size_of::<NV_ENC_QP>(), 12);
        assert_eq!(size_of::<R>(), 128);
        assert_eq!(offset_of!(R, averageBitRate), 20);
        assert_eq!(offset_of!(R, vbvBufferSize), 28);
        assert_eq!(offset_of!(R, minQP), 40);
        assert_eq!(offset_of!(R, temporallayerIdxMask), 76);
        assert_eq!(offset_of!(R, targetQuality), 88);
        assert_eq!(offset_of!(R, lowDelayKeyFrameScale), 92);
        assert_eq!(offset_of!(R, qpMapMode), 96);
        assert_eq!(offset_of!(R, multiPass), 100);
        assert_eq!(offset_of!(R, cbQPIndexOffset), 108);
        assert_eq!(offset_of!(R, reserved), 112);

        type H = NV_ENC_CONFIG_H264;
        assert_eq!(size_of::<H>(), 1792);
        assert_eq!(offset_of!(H, level), 4);
        assert_eq!(offset_of!(H, idrPeriod), 8);
        assert_eq!(offset_of!(H, maxNumRefFrames), 60);

        type C = NV_ENC_CONFIG;
        assert_eq!(size_of::<C>(), 3584);
        assert_eq!(offset_of!(C, profileGUID), 4);
        assert_eq!(offset_of!(C, gopLength), 20);
        assert_eq!(offset_of!(C, frameIntervalP), 24);
        assert_eq!(offset_of!(C, mvPrecision), 36);
        assert_eq!(offset_of!(C, rcParams), 40);
        assert_eq!(offset_of!(C, encodeCodecConfig), 168);
        assert_eq!(offset_of!(C, reserved), 1960);
        assert_eq!(offset_of!(C, reserved2), 3072);

        type P = NV_ENC_PRESET_CONFIG;
        assert_eq!(size_of::<P>(), 5128);
        assert_eq!(offset_of!(P, presetCfg), 8);
        assert_eq!(offset_of!(P, reserved1), 3592);

        type I = NV_ENC_INITIALIZE_PARAMS;
        assert_eq!(size_of::<I>(), 1808);
        assert_eq!(offset_of!(I, encodeGUID), 4);
        assert_eq!(offset_of!(I, presetGUID), 20);
        assert_eq!(offset_of!(I, encodeWidth), 36);
        assert_eq!(offset_of!(I, frameRateNum), 52);
        assert_eq!(offset_of!(I, enablePTD), 64);
        assert_eq!(offset_of!(I, privDataSize), 72);
        assert_eq!(offset_of!(I, privData), 80);
        assert_eq!(offset_of!(I, encodeConfig), 88);
        assert_eq!(offset_of!(I, maxEncodeWidth), 96);
        assert_eq!(offset_of!(I, maxMEHintCountsPerBlock), 104);
        assert_eq!(offset_of!(I, tuningInfo), 136);
        assert_eq!(offset_of!(I, bufferFormat), 140);
        assert_eq!(offset_of!(I, reserved), 144);
        assert_eq!(offset_of!(I, reserved2), 1296);

        type RR = NV_ENC_REGISTER_RESOURCE;
        assert_eq!(size_of::<RR>(), 1536);
        assert_eq!(offset_of!(RR, resourceToRegister), 24);
        assert_eq!(offset_of!(RR, registeredResource), 32);
        assert_eq!(offset_of!(RR, bufferFormat), 40);
        assert_eq!(offset_of!(RR, pInputFencePoint), 48);
        assert_eq!(offset_of!(RR, reserved1), 64);

        type M = NV_ENC_MAP_INPUT_RESOURCE;
        assert_eq!(size_of::<M>(), 1544);
        assert_eq!(offset_of!(M, inputResource), 8);
        assert_eq!(offset_of!(M, registeredResource), 16);
        assert_eq!(offset_of!(M, mappedResource), 24);
        assert_eq!(offset_of!(M, mappedBufferFmt), 32);
        assert_eq!(offset_of!(M, reserved1), 36);

        type B = NV_ENC_CREATE_BITSTREAM_BUFFER;
        assert_eq!(size_of::<B>(), 776);
        assert_eq!(offset_of!(B, bitstreamBuffer), 16);
        assert_eq!(offset_of!(B, reserved1), 32);

        type PP = NV_ENC_PIC_PARAMS;
        assert_eq!(size_of::<PP>(), 3344);
        assert_eq!(offset_of!(PP, encodePicFlags), 16);
        assert_eq!(offset_of!(PP, inputTimeStamp), 24);
        assert_eq!(offset_of!(PP, inputBuffer), 40);
        assert_eq!(offset_of!(PP, outputBitstream), 48);
        assert_eq!(offset_of!(PP, bufferFmt), 64);
        assert_eq!(offset_of!(PP, pictureType), 72);
        assert_eq!(offset_of!(PP, codecPicParams), 80);
        assert_eq!(offset_of!(PP, meHintCountsPerBlock), 1616);
        assert_eq!(offset_of!(PP, meExternalHints), 1648);
        assert_eq!(offset_of!(PP, alphaBuffer), 1720);
        assert_eq!(offset_of!(PP, reserved3), 1728);
        assert_eq!(offset_of!(PP, reserved4), 2872);

        type LB = NV_ENC_LOCK_BITSTREAM;
        assert_eq!(size_of::<LB>(), 1544);
        assert_eq!(offset_of!(LB, outputBitstream), 8);
        assert_eq!(offset_of!(LB, frameIdx), 24);
        assert_eq!(offset_of!(LB, bitstreamSizeInBytes), 36);
        assert_eq!(offset_of!(LB, outputTimeStamp), 40);
        assert_eq!(offset_of!(LB, bitstreamBufferPtr), 56);
        assert_eq!(offset_of!(LB, pictureType), 64);
        assert_eq!(offset_of!(LB, reserved), 92);
        assert_eq!(offset_of!(LB, reserved1), 160);
        assert_eq!(offset_of!(LB, reserved2), 1032);
    }

    #[test]
    fn low_latency_config() {
        let mut cfg = NV_ENC_CONFIG::zeroed();
        cfg.encodeCodecConfig.bits = H264_BIT_DISABLE_SPSPPS | H264_BIT_OUTPUT_AUD;
        apply_low_latency(&mut cfg, 4_000_000, 30.0);
        assert_eq!(cfg.gopLength, NVENC_INFINITE_GOPLENGTH);
        assert_eq!(cfg.frameIntervalP, 1);
        assert_eq!(cfg.rcParams.rateControlMode, NV_ENC_PARAMS_RC_CBR);
        assert_eq!(cfg.rcParams.averageBitRate, 4_000_000);
        assert_eq!(cfg.rcParams.maxBitRate, 4_000_000);
        assert_eq!(cfg.rcParams.vbvBufferSize, 133_333);
        let h = cfg.encodeCodecConfig;
        assert_eq!(h.idrPeriod, NVENC_INFINITE_GOPLENGTH);
        assert_eq!(
            h.bits,
            H264_BIT_REPEAT_SPSPPS | H264_BIT_OUTPUT_AUD,
            "{:#x}",
            h.bits
        );
    }

    #[test]
    fn frame_rates() {
        assert_eq!(frame_rate_fraction(30.0), (30000, 1000));
        assert_eq!(frame_rate_fraction(29.97), (30000, 1001));
        assert_eq!(frame_rate_fraction(59.94), (60000, 1001));
        assert_eq!(frame_rate_fraction(25.0), (25000, 1000));
        assert_eq!(frame_rate_fraction(f32::NAN), (30, 1));
    }

    #[test]
    fn which_gpus_lack_nvenc() {
        for n in [
            "NVIDIA H100 80GB HBM3",
            "NVIDIA H100 PCIe",
            "NVIDIA H200",
            "NVIDIA GH200 480GB",
            "NVIDIA A100-SXM4-80GB",
            "NVIDIA A100 80GB PCIe",
            "NVIDIA A30",
        ] {
            assert!(gpu_lacks_nvenc(n), "{n}");
        }
        for n in [
            "NVIDIA L40S",
            "NVIDIA L40",
            "NVIDIA L4",
            "NVIDIA A10",
            "NVIDIA RTX A3000 Laptop GPU",
            "NVIDIA GeForce RTX 4090",
            "Tesla T4",
        ] {
            assert!(!gpu_lacks_nvenc(n), "{n}");
        }
    }

    #[test]
    fn status_names_and_missing_library() {
        assert_eq!(status_name(0), "NV_ENC_SUCCESS");
        assert_eq!(
            status_name(NV_ENC_ERR_NO_ENCODE_DEVICE),
            "NV_ENC_ERR_NO_ENCODE_DEVICE"
        );
        assert_eq!(
            status_name(NV_ENC_ERR_NEED_MORE_INPUT),
            "NV_ENC_ERR_NEED_MORE_INPUT"
        );
        assert_eq!(status_name(-3), "NV_ENC_ERR_(unknown)");
        let err = NvencLib::load_from("libnvidia-encode-missing.so.1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("libnvidia-encode-missing.so.1 not found"),
            "{err}"
        );
    }
}
