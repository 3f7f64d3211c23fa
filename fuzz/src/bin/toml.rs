//! AFL++ target `toml`: see livecensor::fuzzing::toml.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = livecensor::fuzzing::toml(data);
    });
}
