//! AFL++ target `sps`: see livecensor::fuzzing::sps.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = livecensor::fuzzing::sps(data);
    });
}
