//! AFL++ target `signal`: see livecensor::fuzzing::signal.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = livecensor::fuzzing::signal(data);
    });
}
