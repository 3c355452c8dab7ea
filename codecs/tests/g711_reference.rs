//! Bit-exactness of `codecs::g711` against `audio-codec-algorithms`.
//!
//! Which one is "right": ITU-T G.711 defines the laws by tables, and ITU-T G.191 (the
//! Software Tool Library) holds ITU's reference C implementation, whose
//! `ulaw_compress`/`alaw_compress`/`*_expand` work on 16-bit left-justified samples.
//! audio-codec-algorithms 0.8.1 states that its decode tables and its encoder test
//! vectors (all 65,536 inputs) were generated with the G.191 tools, and its
//! conventions are G.711's: sign bit 1 = positive, µ-law sent bit-inverted
//! (0xFF = +0), A-law sent with even bits inverted (^0x55), 14-bit (µ) / 13-bit (A)
//! magnitudes scaled to 16 bits, negative inputs folded by one's complement (so
//! -1 encodes as µ-law 0x7F, "-0"), no zero-code suppression. There is therefore no
//! convention to correct for and the comparison below is plain equality. Our
//! module's own unit tests also check anchor points read off the G.711 tables.

use audio_codec_algorithms::{decode_alaw, decode_ulaw, encode_alaw, encode_ulaw};
use codecs::g711::{self, Law};

#[test]
fn ulaw_encode_all_inputs() {
    for s in i16::MIN..=i16::MAX {
        assert_eq!(g711::ulaw_encode(s), encode_ulaw(s), "sample {s}");
    }
}

#[test]
fn alaw_encode_all_inputs() {
    for s in i16::MIN..=i16::MAX {
        assert_eq!(g711::alaw_encode(s), encode_alaw(s), "sample {s}");
    }
}

#[test]
fn ulaw_decode_all_codes() {
    for c in 0..=u8::MAX {
        assert_eq!(g711::ulaw_decode(c), decode_ulaw(c), "code {c:#04x}");
    }
}

#[test]
fn alaw_decode_all_codes() {
    for c in 0..=u8::MAX {
        assert_eq!(g711::alaw_decode(c), decode_alaw(c), "code {c:#04x}");
    }
}

#[test]
fn slice_and_law_forms_agree_with_reference() {
    let pcm: Vec<i16> = (i16::MIN..=i16::MAX).step_by(7).collect();
    let codes: Vec<u8> = (0..=u8::MAX).collect();
    let mut enc = vec![0u8; pcm.len()];
    let mut dec = vec![0i16; codes.len()];

    g711::ulaw_encode_slice(&pcm, &mut enc);
    assert!(enc.iter().zip(&pcm).all(|(&e, &s)| e == encode_ulaw(s)));
    g711::alaw_encode_slice(&pcm, &mut enc);
    assert!(enc.iter().zip(&pcm).all(|(&e, &s)| e == encode_alaw(s)));
    g711::ulaw_decode_slice(&codes, &mut dec);
    assert!(dec.iter().zip(&codes).all(|(&d, &c)| d == decode_ulaw(c)));
    g711::alaw_decode_slice(&codes, &mut dec);
    assert!(dec.iter().zip(&codes).all(|(&d, &c)| d == decode_alaw(c)));

    for s in [i16::MIN, -1000, -1, 0, 1, 1000, i16::MAX] {
        assert_eq!(Law::Ulaw.encode(s), encode_ulaw(s));
        assert_eq!(Law::Alaw.encode(s), encode_alaw(s));
    }
    for c in [0x00, 0x55, 0x7F, 0x80, 0xD5, 0xFF] {
        assert_eq!(Law::Ulaw.decode(c), decode_ulaw(c));
        assert_eq!(Law::Alaw.decode(c), decode_alaw(c));
    }
}
