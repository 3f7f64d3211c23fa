//! Synthetic pictures and quality measures shared by the media tests.

use crate::frame::{Frame, PixelFormat};

/// A smooth gradient with a bright square that moves with `i`: compressible,
/// yet every frame differs.
pub fn pattern(width: usize, height: usize, i: usize) -> Frame {
    let mut f = Frame::new(PixelFormat::I420, width, height);
    let cw = f.chroma_width();
    let (y, u, v) = f.planes_mut();
    let (bx, by) = ((i * 3) % width.max(1), (i * 2) % height.max(1));
    let side = (width.min(height) / 4).max(2);
    for r in 0..height {
        for c in 0..width {
            let inside = c >= bx && c < bx + side && r >= by && r < by + side;
            y[r * width + c] = if inside {
                235
            } else {
                (16 + (c * 150 / width.max(1)) + (r * 50 / height.max(1))) as u8
            };
        }
    }
    for (k, (a, b)) in u.iter_mut().zip(v.iter_mut()).enumerate() {
        let (r, c) = (k / cw, k % cw);
        *a = (90 + (c + i) % 80) as u8;
        *b = (100 + r % 60) as u8;
    }
    f
}

/// PSNR (dB) over all three planes of two same-sized frames.
pub fn psnr(a: &Frame, b: &Frame) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let se: f64 = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let mse = se / a.data.len() as f64;
    if mse == 0.0 {
        99.0
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// The top-left `width x height` part of a frame (to compare padded output).
pub fn crop(f: &Frame, width: usize, height: usize) -> Frame {
    let mut out = Frame::new(PixelFormat::I420, width, height);
    let (sy, su, sv) = f.planes();
    let (scw, cw, ch) = (f.chroma_width(), out.chroma_width(), out.chroma_height());
    let (dy, du, dv) = out.planes_mut();
    for r in 0..height {
        dy[r * width..(r + 1) * width].copy_from_slice(&sy[r * f.width..r * f.width + width]);
    }
    for r in 0..ch {
        du[r * cw..(r + 1) * cw].copy_from_slice(&su[r * scw..r * scw + cw]);
        dv[r * cw..(r + 1) * cw].copy_from_slice(&sv[r * scw..r * scw + cw]);
    }
    out
}

/// Writes RBSP bits MSB first, with Exp-Golomb codes.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    nbits: usize,
}

impl Bits {
    fn bit(&mut self, b: bool) {
        if self.nbits.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if b {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 0x80 >> (self.nbits % 8);
        }
        self.nbits += 1;
    }
    fn u(&mut self, n: u32, v: u32) {
        for i in (0..n).rev() {
            self.bit((v >> i) & 1 == 1);
        }
    }
    fn ue(&mut self, v: u32) {
        let x = v + 1;
        let len = 32 - x.leading_zeros();
        self.u(len - 1, 0);
        self.u(len, x);
    }
    fn align_zero(&mut self) {
        while !self.nbits.is_multiple_of(8) {
            self.bit(false);
        }
    }
    fn trailing(mut self) -> Vec<u8> {
        self.bit(true);
        self.align_zero();
        self.bytes
    }
}

/// NAL with start code and emulation prevention.
fn nal(ref_idc: u8, nal_type: u8, rbsp: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 1, (ref_idc << 5) | nal_type];
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// A hand-made 16x16 Main-profile stream with B-frames, which openh264
/// cannot produce: reference pictures are uniform I_PCM pictures with luma
/// `30 + 50k`, and between each pair a B picture of one B_Skip macroblock,
/// i.e. the rounded average of its neighbours. Decode order I0 I1 B I2 B I3 B;
/// returns the access units in decode order with each one's display index,
/// and the expected luma per display index: 30, 55, 80, 105, 130, 155, 180.
pub fn bframe_stream() -> (Vec<(Vec<u8>, u32)>, Vec<u8>) {
    let mut sps = Bits::default();
    sps.u(8, 77); // Main
    sps.u(8, 0);
    sps.u(8, 30);
    sps.ue(0); // sps id
    sps.ue(0); // log2_max_frame_num - 4
    sps.ue(0); // poc type 0
    sps.ue(2); // log2_max_poc_lsb - 4 (6 bits)
    sps.ue(2); // max_num_ref_frames
    sps.bit(false); // gaps
    sps.ue(0); // width in MBs - 1
    sps.ue(0); // height in map units - 1
    sps.bit(true); // frame_mbs_only
    sps.bit(true); // direct_8x8_inference
    sps.bit(false); // cropping
    sps.bit(false); // vui
    let mut pps = Bits::default();
    pps.ue(0);
    pps.ue(0);
    pps.bit(false); // CAVLC
    pps.bit(false); // bottom_field_pic_order_in_frame_present
    pps.ue(0); // slice groups - 1
    pps.ue(0); // num_ref_idx_l0_default - 1
    pps.ue(0); // num_ref_idx_l1_default - 1
    pps.bit(false); // weighted_pred
    pps.u(2, 0); // weighted_bipred_idc
    pps.ue(0); // pic_init_qp - 26 (se 0 == ue 0)
    pps.ue(0); // pic_init_qs - 26
    pps.ue(0); // chroma_qp_index_offset
    pps.bit(true); // deblocking_filter_control_present
    pps.bit(false); // constrained_intra_pred
    pps.bit(false); // redundant_pic_cnt_present
    let params = [nal(3, 7, &sps.trailing()), nal(3, 8, &pps.trailing())].concat();

    // (slice_type, idr, nal_ref_idc, frame_num, poc, luma of an I_PCM picture)
    let slice = |ty: u32, idr: bool, ref_idc: u8, frame_num: u32, poc: u32, luma: u8| {
        let mut b = Bits::default();
        b.ue(0); // first_mb_in_slice
        b.ue(ty);
        b.ue(0); // pps id
        b.u(4, frame_num);
        if idr {
            b.ue(0); // idr_pic_id
        }
        b.u(6, poc);
        if ty == 1 {
            b.bit(true); // direct_spatial_mv_pred
            b.bit(false); // num_ref_idx_active_override
            b.bit(false); // ref_pic_list_modification l0
            b.bit(false); // ... l1
        }
        if ref_idc != 0 {
            b.bit(false); // idr: no_output_of_prior_pics / non-idr: adaptive marking
            if idr {
                b.bit(false); // long_term_reference
            }
        }
        b.ue(0); // slice_qp_delta
        b.ue(1); // disable_deblocking_filter_idc
        if ty == 2 {
            b.ue(25); // I_PCM
            b.align_zero();
            for i in 0..384 {
                b.u(8, if i < 256 { luma as u32 } else { 128 });
            }
        } else {
            b.ue(1); // mb_skip_run covers the picture
        }
        nal(ref_idc, if idr { 5 } else { 1 }, &b.trailing())
    };
    let mut aus = vec![([params, slice(2, true, 3, 0, 0, 30)].concat(), 0)];
    for k in 1..4u32 {
        let luma = 30 + 50 * k as u8;
        aus.push((slice(2, false, 2, k, 4 * k, luma), 2 * k));
        aus.push((slice(1, false, 0, k + 1, 4 * k - 2, 0), 2 * k - 1));
    }
    (aus, (0..7).map(|i| 30 + 25 * i as u8).collect())
}
