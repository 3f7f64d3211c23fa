//! AFL++ target `webhook`: see livecensor::fuzzing::webhook.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = livecensor::fuzzing::webhook(data);
    });
}
