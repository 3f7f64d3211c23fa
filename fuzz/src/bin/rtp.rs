//! AFL++ target `rtp`: see livecensor_fuzz::rtp.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        livecensor_fuzz::rtp(data);
    });
}
