//! ITU-T G.711 companding: µ-law (PCMU, RTP payload type 0) and A-law (PCMA, 8).
//!
//! Linear samples are 16-bit and left-justified, as in the ITU-T G.191 software
//! tools (the reference implementation of G.711): µ-law works on the top 14 bits,
//! A-law on the top 13, and decoded values are scaled back up to 16 bits. So the
//! largest µ-law output is `8031 << 2 = 32124` and the largest A-law output is
//! `4032 << 3 = 32256`.
//!
//! Conventions, all as in G.711:
//! - the top bit of a code is the sign, `1` for positive;
//! - µ-law codes are sent with every bit inverted (`0xFF` is +0, `0x7F` is -0);
//! - A-law codes are sent with the even bits inverted (`^ 0x55`; `0xD5` is the
//!   smallest positive step).
//! - Negative inputs are folded with one's complement before quantising, so
//!   `-1` encodes as "negative zero", exactly like G.191.
//! - No zero-code suppression: µ-law `0x00` is a valid code.

/// Encodes one 16-bit linear sample as a µ-law code.
pub fn ulaw_encode(sample: i16) -> u8 {
    // The code depends only on the top 14 bits: one look-up.
    ULAW_ENCODE[(sample >> 2) as usize & 0x3FFF]
}

/// The µ-law quantiser, for building [`ULAW_ENCODE`] (and checking it).
const fn ulaw_compress(sample: i16) -> u8 {
    // One's complement (`!x`) folds -1 onto 0, which is what G.191 does, and never
    // overflows on i16::MIN.
    let negative = sample < 0;
    let folded = if negative { !sample } else { sample };
    // 14-bit magnitude plus the µ-law bias of 33 makes every segment start at a power
    // of two, so the segment is just the position of the highest set bit.
    let biased = (folded >> 2) as u16 + 33;
    let biased = if biased > 0x1FFF { 0x1FFF } else { biased };
    let segment = (u16::BITS - biased.leading_zeros()) as u16 - 6; // 0..=7
    let mantissa = (biased >> (segment + 1)) & 0x0F;
    let code = ((segment << 4) | mantissa) as u8 | if negative { 0x80 } else { 0 };
    !code
}

/// Decodes one µ-law code to a 16-bit linear sample.
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_TABLE[usize::from(code)]
}

/// Encodes one 16-bit linear sample as an A-law code.
pub fn alaw_encode(sample: i16) -> u8 {
    // The code depends only on the top 12 bits: one look-up.
    ALAW_ENCODE[(sample >> 4) as usize & 0x0FFF]
}

/// The A-law quantiser, for building [`ALAW_ENCODE`] (and checking it).
const fn alaw_compress(sample: i16) -> u8 {
    let negative = sample < 0;
    let folded = if negative { !sample } else { sample };
    // A-law keeps 13 bits with sign; segment 0 and 1 share a step of 16 in 16-bit
    // units, so work on the magnitude in those units (0..=2047).
    let magnitude = (folded >> 4) as u16;
    let code = if magnitude < 16 {
        magnitude
    } else {
        let segment = (u16::BITS - magnitude.leading_zeros()) as u16 - 4; // 1..=7
        let mantissa = (magnitude >> (segment - 1)) & 0x0F;
        (segment << 4) | mantissa
    } as u8;
    let signed = if negative { code } else { code | 0x80 };
    signed ^ 0x55
}

/// Decodes one A-law code to a 16-bit linear sample.
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_TABLE[usize::from(code)]
}

/// Encodes `pcm` as µ-law into the first `pcm.len()` bytes of `out`.
///
/// # Panics
/// If `out` is shorter than `pcm`.
pub fn ulaw_encode_slice(pcm: &[i16], out: &mut [u8]) {
    let out = &mut out[..pcm.len()];
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = ulaw_encode(s);
    }
}

/// Decodes µ-law `codes` into the first `codes.len()` samples of `out`.
///
/// # Panics
/// If `out` is shorter than `codes`.
pub fn ulaw_decode_slice(codes: &[u8], out: &mut [i16]) {
    let out = &mut out[..codes.len()];
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = ulaw_decode(c);
    }
}

/// Encodes `pcm` as A-law into the first `pcm.len()` bytes of `out`.
///
/// # Panics
/// If `out` is shorter than `pcm`.
pub fn alaw_encode_slice(pcm: &[i16], out: &mut [u8]) {
    let out = &mut out[..pcm.len()];
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = alaw_encode(s);
    }
}

/// Decodes A-law `codes` into the first `codes.len()` samples of `out`.
///
/// # Panics
/// If `out` is shorter than `codes`.
pub fn alaw_decode_slice(codes: &[u8], out: &mut [i16]) {
    let out = &mut out[..codes.len()];
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = alaw_decode(c);
    }
}

/// Which G.711 companding law a stream uses.
///
/// ```
/// use codecs::g711::Law;
///
/// let law = Law::from_payload_type(8).unwrap();
/// assert_eq!(law, Law::Alaw);
/// assert_eq!(law.decode(law.encode(1000)), 1008);
/// assert_eq!(law.decode(law.silence_code()), 8);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// µ-law, `PCMU`, used in North America and Japan.
    Ulaw,
    /// A-law, `PCMA`, used in most other countries.
    Alaw,
}

impl Law {
    /// Encodes one 16-bit linear sample.
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Ulaw => ulaw_encode(sample),
            Law::Alaw => alaw_encode(sample),
        }
    }

    /// Decodes one code to a 16-bit linear sample.
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Law::Ulaw => ulaw_decode(code),
            Law::Alaw => alaw_decode(code),
        }
    }

    /// Encodes `pcm` into the first `pcm.len()` bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than `pcm`.
    pub fn encode_slice(self, pcm: &[i16], out: &mut [u8]) {
        match self {
            Law::Ulaw => ulaw_encode_slice(pcm, out),
            Law::Alaw => alaw_encode_slice(pcm, out),
        }
    }

    /// Decodes `codes` into the first `codes.len()` samples of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than `codes`.
    pub fn decode_slice(self, codes: &[u8], out: &mut [i16]) {
        match self {
            Law::Ulaw => ulaw_decode_slice(codes, out),
            Law::Alaw => alaw_decode_slice(codes, out),
        }
    }

    /// The code that a linear 0 encodes to, for filling silent frames
    /// (`0xFF` for µ-law, `0xD5` for A-law).
    pub fn silence_code(self) -> u8 {
        self.encode(0)
    }

    /// The static RTP payload type (RFC 3551): 0 for PCMU, 8 for PCMA.
    pub fn payload_type(self) -> u8 {
        match self {
            Law::Ulaw => 0,
            Law::Alaw => 8,
        }
    }

    /// The law for a static RTP payload type, if it is 0 or 8.
    pub fn from_payload_type(pt: u8) -> Option<Law> {
        match pt {
            0 => Some(Law::Ulaw),
            8 => Some(Law::Alaw),
            _ => None,
        }
    }

    /// The SDP encoding name: `"PCMU"` or `"PCMA"`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Law::Ulaw => "PCMU",
            Law::Alaw => "PCMA",
        }
    }
}

/// µ-law code by the top 14 bits of the sample (16 KiB; voice stays in a small
/// part of it).
static ULAW_ENCODE: [u8; 1 << 14] = {
    let mut table = [0u8; 1 << 14];
    let mut i = 0;
    while i < table.len() {
        // Index i is the sample's top 14 bits; put them back on top.
        table[i] = ulaw_compress(((i as u16) << 2) as i16);
        i += 1;
    }
    table
};
/// A-law code by the top 12 bits of the sample (4 KiB).
static ALAW_ENCODE: [u8; 1 << 12] = {
    let mut table = [0u8; 1 << 12];
    let mut i = 0;
    while i < table.len() {
        table[i] = alaw_compress(((i as u16) << 4) as i16);
        i += 1;
    }
    table
};

const ULAW_TABLE: [i16; 256] = build_table(Law::Ulaw);
const ALAW_TABLE: [i16; 256] = build_table(Law::Alaw);

const fn build_table(law: Law) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = match law {
            Law::Ulaw => ulaw_expand(code as u8),
            Law::Alaw => alaw_expand(code as u8),
        };
        code += 1;
    }
    table
}

/// µ-law decoding, G.711 Table 2: the reconstruction point is the middle of the
/// quantisation interval, `((2m + 33) << segment) - 33` in 14-bit units.
const fn ulaw_expand(code: u8) -> i16 {
    let bits = !code;
    let segment = (bits >> 4) & 0x07;
    let mantissa = (bits & 0x0F) as i16;
    let magnitude = (((mantissa << 1) + 33) << segment) - 33;
    let linear = magnitude << 2;
    if code & 0x80 != 0 {
        linear
    } else {
        -linear
    }
}

/// A-law decoding, G.711 Table 1: middle of the interval, in 16-bit units
/// (interval width 16 in segments 0 and 1, doubling per segment after that).
const fn alaw_expand(code: u8) -> i16 {
    let bits = (code ^ 0x55) & 0x7F;
    let segment = bits >> 4;
    let mantissa = (bits & 0x0F) as i16;
    let magnitude = if segment == 0 {
        (mantissa << 4) + 8
    } else {
        (((mantissa + 16) << 4) + 8) << (segment - 1)
    };
    if code & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encode_tables_agree_with_the_quantisers_for_every_sample() {
        for sample in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode(sample), ulaw_compress(sample), "µ-law {sample}");
            assert_eq!(alaw_encode(sample), alaw_compress(sample), "A-law {sample}");
        }
    }

    // Anchor points read off G.711 Tables 1 and 2 (and scaled to 16 bits as in
    // G.191), independent of any other implementation.
    #[test]
    fn ulaw_spec_anchor_points() {
        assert_eq!(ulaw_encode(0), 0xFF, "+0");
        assert_eq!(ulaw_encode(-1), 0x7F, "-1 folds to -0");
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0xFE), 2 << 2, "interval 1..3 decodes to 2");
        assert_eq!(ulaw_decode(0x80), 8031 << 2, "largest positive");
        assert_eq!(ulaw_decode(0x00), -(8031 << 2), "largest negative");
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
    }

    #[test]
    fn alaw_spec_anchor_points() {
        assert_eq!(
            alaw_encode(0),
            0xD5,
            "+0 is code 0x80 with even bits inverted"
        );
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_decode(0xD5), 1 << 3, "first interval decodes to 1");
        assert_eq!(alaw_decode(0x55), -(1 << 3));
        assert_eq!(alaw_decode(0xAA), 4032 << 3, "largest positive");
        assert_eq!(alaw_decode(0x2A), -(4032 << 3), "largest negative");
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn decode_then_encode_is_identity_except_negative_zero() {
        for code in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(code)), code, "A-law {code:#04x}");
            // µ-law 0x7F (-0) decodes to 0, which encodes as +0.
            if code != 0x7F {
                assert_eq!(ulaw_encode(ulaw_decode(code)), code, "µ-law {code:#04x}");
            }
        }
    }

    #[test]
    fn law_helpers() {
        assert_eq!(Law::Ulaw.silence_code(), 0xFF);
        assert_eq!(Law::Alaw.silence_code(), 0xD5);
        for law in [Law::Ulaw, Law::Alaw] {
            assert_eq!(Law::from_payload_type(law.payload_type()), Some(law));
        }
        assert_eq!(Law::from_payload_type(9), None);
        assert_eq!(Law::Ulaw.encoding_name(), "PCMU");
    }

    #[test]
    fn slices_write_a_prefix_of_longer_output() {
        let pcm = [0i16, 1000, -1000];
        let mut codes = [0u8; 5];
        Law::Ulaw.encode_slice(&pcm, &mut codes);
        assert_eq!(codes[3..], [0, 0]);
        let mut back = [7i16; 4];
        Law::Ulaw.decode_slice(&codes[..3], &mut back);
        assert_eq!(
            back,
            [
                0,
                ulaw_decode(ulaw_encode(1000)),
                ulaw_decode(ulaw_encode(-1000)),
                7
            ]
        );
    }

    #[test]
    #[should_panic]
    fn short_output_panics() {
        ulaw_encode_slice(&[0, 0], &mut [0u8; 1]);
    }
}
