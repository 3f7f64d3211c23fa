//! AFL++ target `mp4`: see livecensor::fuzzing::mp4. The MP4 demuxer
//! contains the mp4 crate's panics (`catch_unwind`) by design, so only a
//! panic that escapes it is a crash (`fuzz_nohook!`).
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| {
        let _ = livecensor::fuzzing::mp4(data);
    });
}
