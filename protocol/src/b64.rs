//! Base64 for audio: every `media` event and every audio delta carries 20 ms or
//! more of it, so this is on the media path of every call.
//!
//! Encoding and the common case of decoding use SIMD (`base64-simd`, which picks
//! the CPU's instructions at run time). Text the fast decoder refuses is decoded
//! again by the `base64` crate, which accepts exactly what the bridge always
//! accepted (padding optional) and says what is wrong when it is wrong.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// Reads bot base64 with or without `=` padding: some encoders drop it and the
/// bytes are unambiguous either way. The alphabet stays the standard one.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Appends `bytes` to `out` as standard base64 with `=` padding.
///
/// ```
/// let mut out = String::from("x:");
/// protocol::b64::encode_append(b"hi!?", &mut out);
/// assert_eq!(out, "x:aGkhPw==");
/// ```
pub fn encode_append(bytes: &[u8], out: &mut String) {
    base64_simd::STANDARD.encode_append(bytes, out);
}

/// Appends what standard base64 `text` encodes to `out`; the `=` padding may be
/// there or not. On error `out` is as it was.
///
/// ```
/// let mut out = Vec::new();
/// protocol::b64::decode_append("aGkhPw", &mut out).unwrap();
/// protocol::b64::decode_append("aGkhPw==", &mut out).unwrap();
/// assert_eq!(out, b"hi!?hi!?");
/// assert!(protocol::b64::decode_append("aGk!", &mut out).is_err());
/// ```
pub fn decode_append(text: &str, out: &mut Vec<u8>) -> Result<(), base64::DecodeError> {
    let fast = if text.len().is_multiple_of(4) {
        &base64_simd::STANDARD
    } else {
        &base64_simd::STANDARD_NO_PAD
    };
    let before = out.len();
    if fast.decode_append(text, out).is_ok() {
        return Ok(());
    }
    out.truncate(before);
    let decoded = LENIENT.decode_vec(text, out);
    if decoded.is_err() {
        out.truncate(before);
    }
    decoded
}

/// Decodes standard base64 that must carry its `=` padding, as the bridge
/// writes it.
///
/// ```
/// assert_eq!(protocol::b64::decode_padded("aGkhPw==").unwrap(), b"hi!?");
/// assert!(protocol::b64::decode_padded("aGkhPw").is_err());
/// ```
pub fn decode_padded(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64_simd::STANDARD
        .decode_to_vec(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so a failure can be replayed.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn encoding_matches_the_base64_crate_for_every_length() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for len in 0..700 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mut ours = String::from("prefix");
            encode_append(&bytes, &mut ours);
            let theirs = format!(
                "prefix{}",
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            );
            assert_eq!(ours, theirs, "length {len}");
        }
    }

    /// Whatever the text, the answer is the `base64` crate's (lenient or
    /// padded): the same bytes when it decodes, its own error when it does not.
    #[test]
    fn decoding_agrees_with_the_base64_crate_on_good_and_damaged_text() {
        const CHARS: &[u8] = b"AZaz09+/=-_ .\n\t\"\\QwErTy";
        let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
        let mut accepted = 0;
        for round in 0..40_000 {
            let len = rng.below(400);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mut text = base64::engine::general_purpose::STANDARD
                .encode(&bytes)
                .into_bytes();
            match rng.below(6) {
                0 => {}
                1 => text.retain(|&c| c != b'='),
                2 if !text.is_empty() => {
                    let at = rng.below(text.len());
                    text[at] = CHARS[rng.below(CHARS.len())];
                }
                3 if !text.is_empty() => {
                    let cut = rng.below(4).min(text.len());
                    text.truncate(text.len() - cut);
                }
                4 => text.push(CHARS[rng.below(CHARS.len())]),
                _ if !text.is_empty() => {
                    // Stray bits in the last symbol before the padding.
                    let last = text.iter().rposition(|&c| c != b'=').unwrap();
                    text[last] = b"BCDEFGHIJKLMNOPQ"[rng.below(16)];
                }
                _ => {}
            }
            let text = String::from_utf8(text).unwrap();
            let strict = decode_padded(&text);
            let crate_strict = base64::engine::general_purpose::STANDARD.decode(&text);
            assert_eq!(strict, crate_strict, "round {round}: {text:?}");
            let mut ours = vec![7u8];
            let got = decode_append(&text, &mut ours);
            let mut theirs = vec![7u8];
            let want = LENIENT.decode_vec(&text, &mut theirs);
            match (&got, &want) {
                (Ok(()), Ok(())) => {
                    accepted += 1;
                    assert_eq!(ours, theirs, "round {round}: {text:?}");
                }
                (Err(a), Err(b)) => {
                    assert_eq!(a, b, "round {round}: {text:?}");
                    assert_eq!(ours, [7], "round {round}: output left as it was");
                }
                _ => panic!("round {round}: {text:?}: ours {got:?}, the crate's {want:?}"),
            }
        }
        // Both kinds were exercised.
        assert!((10_000..35_000).contains(&accepted), "{accepted} accepted");
    }
}
