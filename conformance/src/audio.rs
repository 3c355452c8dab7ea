//! Audio helpers: the speech fixture, 16-bit PCM conversions, and a small WAV
//! reader for call recordings.

/// Samples per second of the protocol's default format.
pub const SAMPLE_RATE: usize = 8000;
/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// Decoded 16-bit PCM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    /// Samples per second.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Interleaved samples.
    pub samples: Vec<i16>,
}

impl Wav {
    /// One channel's samples.
    pub fn channel(&self, index: usize) -> Vec<i16> {
        let n = usize::from(self.channels.max(1));
        self.samples
            .iter()
            .skip(index)
            .step_by(n)
            .copied()
            .collect()
    }

    /// Length in seconds.
    pub fn seconds(&self) -> f64 {
        let frames = self.samples.len() / usize::from(self.channels.max(1));
        frames as f64 / f64::from(self.sample_rate.max(1))
    }
}

/// Why a WAV file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a 16-bit PCM WAV file: {0}")]
pub struct WavError(String);

fn le16(b: &[u8], at: usize) -> Result<u16, WavError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| WavError("header cut short".into()))
}

fn le32(b: &[u8], at: usize) -> Result<u32, WavError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| WavError("header cut short".into()))
}

/// Parses a 16-bit PCM WAV file held in memory. A `data` chunk whose length
/// field is 0 or too long (a recording still being written) is read to the end.
pub fn parse_wav(bytes: &[u8]) -> Result<Wav, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError("no RIFF/WAVE header".into()));
    }
    let mut at = 12;
    let mut fmt = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = le32(bytes, at + 4)? as usize;
        let body = at + 8;
        if id == b"fmt " {
            fmt = Some((
                le16(bytes, body)?,
                le16(bytes, body + 2)?,
                le32(bytes, body + 4)?,
                le16(bytes, body + 14)?,
            ));
        } else if id == b"data" {
            let (format, channels, rate, bits) =
                fmt.ok_or_else(|| WavError("data chunk before fmt chunk".into()))?;
            if format != 1 || bits != 16 {
                return Err(WavError(format!("format {format} with {bits} bits")));
            }
            let end = if len == 0 {
                bytes.len()
            } else {
                body.saturating_add(len).min(bytes.len())
            };
            return Ok(Wav {
                sample_rate: rate,
                channels,
                samples: le_bytes_to_samples(&bytes[body..end]),
            });
        }
        at = body.saturating_add(len + (len & 1));
    }
    Err(WavError("no data chunk".into()))
}

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
