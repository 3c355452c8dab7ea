//! Audio helpers: the speech fixture, 16-bit PCM conversions, and the WAV reader
//! (`codecs::wav`) for call recordings.

/// Samples per second of the protocol's default format.
pub const SAMPLE_RATE: usize = 8000;
/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

pub use codecs::wav::{parse as parse_wav, Pcm as Wav, WavError};

/// Little-endian 16-bit PCM bytes to samples (a trailing odd byte is ignored).
pub fn le_bytes_to_samples(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Samples to little-endian 16-bit PCM bytes.
pub fn samples_to_le_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// The caller's speech the bot suite streams (see `conformance/fixtures/README.md`).
pub fn speech() -> &'static [i16] {
    static SPEECH: std::sync::OnceLock<Vec<i16>> = std::sync::OnceLock::new();
    SPEECH.get_or_init(|| {
        parse_wav(include_bytes!("../fixtures/speech.wav"))
            .map(|w| w.samples)
            .expect("the committed speech fixture is a 16-bit PCM WAV file")
    })
}

/// Root-mean-square level of some samples.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_speech_fixture_is_a_few_seconds_of_loud_enough_audio() {
        let s = speech();
        let secs = s.len() as f64 / SAMPLE_RATE as f64;
        assert!((3.0..4.0).contains(&secs), "{secs} s");
        assert!(rms(s) > 500.0);
    }

    #[test]
    fn wav_round_trip_and_refusals() {
        let mut f = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x02\0\x40\x1f\0\0\0\0\0\0\x04\0\x10\0data\x08\0\0\0".to_vec();
        f.extend(samples_to_le_bytes(&[1, -1, 2, -2]));
        let w = parse_wav(&f).unwrap();
        assert_eq!((w.sample_rate, w.channels), (8000, 2));
        assert_eq!(w.channel(0), vec![1, 2]);
        assert_eq!(w.channel(1), vec![-1, -2]);
        assert!(parse_wav(b"RIFX").is_err());
        f[20] = 3;
        assert!(parse_wav(&f).unwrap_err().to_string().contains("format 3"));
    }
}
