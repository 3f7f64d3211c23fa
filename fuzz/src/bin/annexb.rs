//! AFL++ target `annexb`: see livecensor::fuzzing::annexb.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = livecensor::fuzzing::annexb(data);
    });
}
