//! The RTP target: H.264 RTP packets into str0m's depacketising buffer (the
//! code that turns the subscribed track's packets into the access units
//! `Event::MediaData` carries). str0m keeps that buffer private; its
//! `_internal_test_exports::fuzz::depack` reaches it from bytes in its own
//! layout. [`rtp_to_str0m`] writes that layout from a simpler one, so the
//! corpus holds readable packet sequences and the codec is always H.264.

/// Fuzz input layout (all integers big-endian):
/// - byte 0: the buffer's hold-back (packets waited for before a gap is
///   given up, str0m's reordering window);
/// - then records: an op byte; bit 7 set pops (asks for an access unit),
///   clear pushes a packet with the RTP marker bit = bit 0, followed by
///   `seq: u16, timestamp: u32, arrival_ms_delta: u8, len: u16` and `len`
///   payload bytes (FU-A, STAP-A or a single NAL, or anything).
///
/// Loss is a sequence number never sent, reordering is sending it late.
pub fn rtp(data: &[u8]) {
    if let Some(bytes) = rtp_to_str0m(data) {
        let _ = str0m::_internal_test_exports::fuzz::depack(&bytes);
    }
}

/// The largest payload str0m's harness takes per packet.
const MAX_PAYLOAD: usize = 1200;

/// `depack` reads `u(max)` as `raw * max / MAX`: the raw value that gives `v`.
fn scaled(v: u128, max: u128, full: u128) -> u128 {
    (v * full).div_ceil(max)
}

fn put_usize(out: &mut Vec<u8>, v: usize, max: usize) {
    let raw = scaled(v as u128, max as u128, u64::MAX as u128) as u64;
    out.extend_from_slice(&raw.to_be_bytes());
}

/// Translates [`rtp`]'s layout into the bytes `depack` reads; `None` for an
/// empty input.
pub fn rtp_to_str0m(data: &[u8]) -> Option<Vec<u8>> {
    let (&hold_back, mut rest) = data.split_first()?;
    let mut out = Vec::with_capacity(data.len() * 2 + 64);
    // Codec: u8(11) == 3 is H.264.
    out.push(scaled(3, 11, 255) as u8);
    put_usize(&mut out, usize::from(hold_back), 300);
    // Ten header extension ids (unused: our headers carry none).
    out.extend_from_slice(&[0; 20]);
    let mut arrival_ms = 0u64;
    let mut ext_seq: Option<(u16, u64)> = None;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        if op & 0x80 != 0 {
            out.push(0xff);
            continue;
        }
        let Some((head, tail)) = rest.split_at_checked(9) else {
            break;
        };
        rest = tail;
        let seq = u16::from_be_bytes([head[0], head[1]]);
        let ts = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
        arrival_ms = (arrival_ms + u64::from(head[6])).min(10_000);
        let len = usize::from(u16::from_be_bytes([head[7], head[8]]))
            .min(MAX_PAYLOAD)
            .min(rest.len());
        let (payload, tail) = rest.split_at(len);
        rest = tail;
        // Extended sequence number, as a receiver counts roll-overs.
        let ext = match ext_seq {
            None => 1 << 16 | u64::from(seq),
            Some((last, last_ext)) => {
                last_ext.wrapping_add_signed(i64::from(seq.wrapping_sub(last) as i16))
            }
        };
        ext_seq = Some((seq, ext));

        out.push(0); // push
        put_usize(&mut out, 12, 76);
        out.push(0x80);
        out.push(((op & 1) << 7) | 96);
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&ts.to_be_bytes());
        out.extend_from_slice(&0x1122_3344u32.to_be_bytes());
        out.extend_from_slice(
            &(scaled(u128::from(arrival_ms), 10_000, u64::MAX as u128) as u64).to_be_bytes(),
        );
        out.extend_from_slice(&u64::from(ts).to_be_bytes());
        out.extend_from_slice(&ext.to_be_bytes());
        put_usize(&mut out, len, MAX_PAYLOAD);
        out.extend_from_slice(payload);
    }
    Some(out)
}

/// Writes one [`rtp`] push record.
pub fn rtp_record(
    out: &mut Vec<u8>,
    seq: u16,
    ts: u32,
    marker: bool,
    delta_ms: u8,
    payload: &[u8],
) {
    out.push(u8::from(marker));
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.push(delta_ms);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
}
