//! A 32-bit frame id carried inside the audio itself, so that latency and loss
//! are measured on the frames that really went through the bridge.
//!
//! Layout of one 20 ms frame (160 samples at 8 kHz):
//! - samples 0..64: the id, 32 bits, most significant first, each bit as two
//!   samples of opposite sign (Manchester): `1` is `+L, -L`, `0` is `-L, +L`;
//! - samples 64..96: a CRC-16 of the id, coded the same way;
//! - samples 96..160: a quiet 1 kHz tone.
//!
//! Decoding looks only at the sign of each pair and at the size of their
//! difference, so the id survives G.711 (µ-law or A-law keep the sign and
//! roughly the level), a gain change, and the bridge's concealment of a lost
//! frame (which repeats the previous frame more quietly: that decodes as the
//! same id again, a duplicate). Anything else (silence, the tone, a mix of two
//! frames) fails the level test or the CRC and is not an id.
//!
//! The id is `call << 18 | counter`: up to [`MAX_CALLS`] calls and
//! [`MAX_FRAMES`] frames (87 minutes) per call.

use codecs::g711;
use codecs::pcm::FRAME_SAMPLES;

/// Samples that carry the id and its check word.
pub const ID_SAMPLES: usize = 96;
/// Bits of the frame counter in an id.
pub const COUNTER_BITS: u32 = 18;
/// Most calls one run can tell apart.
pub const MAX_CALLS: u32 = 1 << (32 - COUNTER_BITS);
/// Most frames one call can number.
pub const MAX_FRAMES: u32 = 1 << COUNTER_BITS;

/// Level of the id samples.
const LEVEL: i16 = 8000;
/// Smallest difference within a pair that still counts as a bit.
const MIN_SWING: i32 = 2400;
/// Peak level of the filler tone.
const TONE_LEVEL: f64 = 300.0;

/// The id of frame `counter` of call `call`.
pub fn make_id(call: u32, counter: u32) -> u32 {
    debug_assert!(call < MAX_CALLS);
    (call << COUNTER_BITS) | (counter & (MAX_FRAMES - 1))
}

/// `(call, counter)` of an id.
pub fn split_id(id: u32) -> (u32, u32) {
    (id >> COUNTER_BITS, id & (MAX_FRAMES - 1))
}

/// CRC-16/CCITT-FALSE of the id's four bytes, big-endian.
fn crc16(id: u32) -> u16 {
    let mut crc: u16 = 0xffff;
    for byte in id.to_be_bytes() {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The 48 bits sent: id then CRC, most significant first.
fn bits(id: u32) -> impl Iterator<Item = bool> {
    let word = ((id as u64) << 16) | crc16(id) as u64;
    (0..48).rev().map(move |i| (word >> i) & 1 == 1)
}

fn tone(i: usize) -> i16 {
    // 1 kHz at 8 kHz sampling: eight samples per period.
    let phase = (i % 8) as f64 * std::f64::consts::TAU / 8.0;
    (phase.sin() * TONE_LEVEL).round() as i16
}

/// Writes a whole frame of linear PCM carrying `id`.
pub fn write_pcm(id: u32, out: &mut [i16; FRAME_SAMPLES]) {
    for (i, bit) in bits(id).enumerate() {
        let (a, b) = if bit {
            (LEVEL, -LEVEL)
        } else {
            (-LEVEL, LEVEL)
        };
        out[2 * i] = a;
        out[2 * i + 1] = b;
    }
    for (i, s) in out.iter_mut().enumerate().skip(ID_SAMPLES) {
        *s = tone(i);
    }
}

/// Reads the id from the start of a frame of linear PCM; `None` when the frame
/// carries none (too short, too quiet, or the check word does not match).
pub fn read_pcm(pcm: &[i16]) -> Option<u32> {
    if pcm.len() < ID_SAMPLES {
        return None;
    }
    let mut word: u64 = 0;
    for pair in pcm[..ID_SAMPLES].chunks_exact(2) {
        let (a, b) = (pair[0] as i32, pair[1] as i32);
        let d = a - b;
        if d.abs() < MIN_SWING || (a >= 0) == (b >= 0) {
            return None;
        }
        word = (word << 1) | u64::from(d > 0);
    }
    let id = (word >> 16) as u32;
    (crc16(id) == (word & 0xffff) as u16).then_some(id)
}

/// Reads the id from little-endian 16-bit PCM bytes (a bot `media` payload).
pub fn read_le_bytes(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < ID_SAMPLES * 2 {
        return None;
    }
    let mut pcm = [0i16; ID_SAMPLES];
    for (s, b) in pcm.iter_mut().zip(bytes.chunks_exact(2)) {
        *s = i16::from_le_bytes([b[0], b[1]]);
    }
    read_pcm(&pcm)
}

/// Reads the id from a µ-law payload.
pub fn read_ulaw(codes: &[u8]) -> Option<u32> {
    if codes.len() < ID_SAMPLES {
        return None;
    }
    let mut pcm = [0i16; ID_SAMPLES];
    g711::ulaw_decode_slice(&codes[..ID_SAMPLES], &mut pcm);
    read_pcm(&pcm)
}

/// Writes µ-law frames carrying ids quickly: the codes of the two id levels and
/// of the tone are worked out once.
#[derive(Debug, Clone)]
pub struct UlawFramer {
    high: u8,
    low: u8,
    tone: [u8; FRAME_SAMPLES - ID_SAMPLES],
    quiet: [u8; FRAME_SAMPLES],
}

impl Default for UlawFramer {
    fn default() -> Self {
        let mut tone_codes = [0u8; FRAME_SAMPLES - ID_SAMPLES];
        for (i, c) in tone_codes.iter_mut().enumerate() {
            *c = g711::ulaw_encode(tone(ID_SAMPLES + i));
        }
        let mut quiet = [0u8; FRAME_SAMPLES];
        for (i, c) in quiet.iter_mut().enumerate() {
            *c = g711::ulaw_encode(tone(i));
        }
        UlawFramer {
            high: g711::ulaw_encode(LEVEL),
            low: g711::ulaw_encode(-LEVEL),
            tone: tone_codes,
            quiet,
        }
    }
}

impl UlawFramer {
    /// The µ-law payload of the frame carrying `id`.
    pub fn write(&self, id: u32, out: &mut [u8; FRAME_SAMPLES]) {
        for (i, bit) in bits(id).enumerate() {
            let (a, b) = if bit {
                (self.high, self.low)
            } else {
                (self.low, self.high)
            };
            out[2 * i] = a;
            out[2 * i + 1] = b;
        }
        out[ID_SAMPLES..].copy_from_slice(&self.tone);
    }

    /// A quiet frame without an id (the quiet tone throughout): a pause in
    /// the caller's speech. Its mean level is well under what the bridge's
    /// jitter buffer counts as quiet.
    pub fn quiet(&self) -> &[u8; FRAME_SAMPLES] {
        &self.quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some_ids() -> Vec<u32> {
        let mut ids = vec![
            0,
            1,
            make_id(0, MAX_FRAMES - 1),
            make_id(MAX_CALLS - 1, 0),
            u32::MAX,
            0x5555_5555,
            0xaaaa_aaaa,
        ];
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ids.push(x);
        }
        ids
    }

    #[test]
    fn ids_split_back() {
        assert_eq!(split_id(make_id(1234, 98765)), (1234, 98765));
        assert_eq!(
            split_id(make_id(MAX_CALLS - 1, MAX_FRAMES - 1)),
            (MAX_CALLS - 1, MAX_FRAMES - 1)
        );
    }

    #[test]
    fn frame_ids_survive_ulaw_and_alaw_round_trips() {
        let framer = UlawFramer::default();
        for id in some_ids() {
            let mut pcm = [0i16; FRAME_SAMPLES];
            write_pcm(id, &mut pcm);
            assert_eq!(read_pcm(&pcm), Some(id));

            let mut codes = [0u8; FRAME_SAMPLES];
            let mut back = [0i16; FRAME_SAMPLES];
            g711::ulaw_encode_slice(&pcm, &mut codes);
            g711::ulaw_decode_slice(&codes, &mut back);
            assert_eq!(read_pcm(&back), Some(id), "µ-law {id:#x}");

            g711::alaw_encode_slice(&pcm, &mut codes);
            g711::alaw_decode_slice(&codes, &mut back);
            assert_eq!(read_pcm(&back), Some(id), "A-law {id:#x}");

            // The precomputed µ-law writer gives the same frame.
            let mut fast = [0u8; FRAME_SAMPLES];
            framer.write(id, &mut fast);
            g711::ulaw_encode_slice(&pcm, &mut codes);
            assert_eq!(fast, codes);
            assert_eq!(read_ulaw(&fast), Some(id));

            // And through the bot's wire format: µ-law decoded to LE PCM16.
            let mut le = [0u8; FRAME_SAMPLES * 2];
            codecs::pcm::samples_to_le_bytes(&back, &mut le);
            assert_eq!(read_le_bytes(&le), Some(id));
        }
    }

    #[test]
    fn quieter_copies_still_read_and_noise_does_not() {
        let mut pcm = [0i16; FRAME_SAMPLES];
        write_pcm(0xdead_beef, &mut pcm);
        // The bridge's concealment repeats a frame at gains down to 77/256.
        let quiet: Vec<i16> = pcm.iter().map(|s| (*s as i32 * 77 / 256) as i16).collect();
        assert_eq!(read_pcm(&quiet), Some(0xdead_beef));
        assert_eq!(read_pcm(&[0; FRAME_SAMPLES]), None);
        let tone: Vec<i16> = (0..FRAME_SAMPLES).map(tone).collect();
        assert_eq!(read_pcm(&tone), None);
        let framer = UlawFramer::default();
        assert_eq!(read_ulaw(framer.quiet()), None);
        let mut quiet = [0i16; FRAME_SAMPLES];
        g711::ulaw_decode_slice(framer.quiet(), &mut quiet);
        let mean_abs = quiet.iter().map(|s| s.unsigned_abs() as u32).sum::<u32>() / 160;
        assert!(mean_abs < 300, "quiet by the bridge's measure: {mean_abs}");
        // A corrupted bit fails the check word.
        pcm.swap(10, 11);
        assert_eq!(read_pcm(&pcm), None);
        assert_eq!(read_pcm(&pcm[..50]), None);
    }
}
