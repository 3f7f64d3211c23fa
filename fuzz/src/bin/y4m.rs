//! AFL++ target `y4m`: see livecensor::fuzzing::y4m.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = livecensor::fuzzing::y4m(data);
    });
}
