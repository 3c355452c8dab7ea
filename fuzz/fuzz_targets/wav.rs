//! WAV files as uploaded or configured: parsed, and turned into 8 kHz mono
//! clip audio (any rate and channel count the header claims).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codecs::wav::parse(data);
    let _ = bridge::flow::clips::decode_8k(data);
});
