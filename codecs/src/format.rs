//! The audio format of a bot session: an encoding and a sample rate
//! (PROTOCOL.md section 5), and the conversion of samples to and from it.
//!
//! ```
//! use codecs::format::{AudioFormat, Encoding};
//!
//! let f = AudioFormat::parse("mulaw", 16000)?;
//! assert_eq!(f.encoding, Encoding::Mulaw);
//! assert_eq!(f.frame_samples(), 320);
//! assert_eq!(f.frame_bytes(), 320);
//! assert_eq!(f.encoding.wire_name(), "audio/x-mulaw");
//! # Ok::<(), codecs::format::FormatError>(())
//! ```

use crate::g711::Law;

/// How samples travel on the bot's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// 16-bit little-endian linear PCM (`raw/slin`).
    Pcm16,
    /// G.711 µ-law, one byte a sample (`audio/x-mulaw`).
    Mulaw,
    /// G.711 A-law, one byte a sample (`audio/x-alaw`).
    Alaw,
}

impl Encoding {
    /// Every encoding, in declaration order.
    pub const ALL: [Encoding; 3] = [Encoding::Pcm16, Encoding::Mulaw, Encoding::Alaw];

    /// The encoding a name stands for: the wire names of `start.media_format`
    /// and the short names an API caller writes (`pcm`, `slin`, `mulaw`,
    /// `ulaw`, `alaw`), case-insensitive.
    pub fn parse(name: &str) -> Option<Encoding> {
        match name.to_ascii_lowercase().as_str() {
            "pcm" | "pcm16" | "slin" | "raw/slin" | "linear16" | "audio/l16" => {
                Some(Encoding::Pcm16)
            }
            "mulaw" | "ulaw" | "pcmu" | "audio/x-mulaw" => Some(Encoding::Mulaw),
            "alaw" | "pcma" | "audio/x-alaw" => Some(Encoding::Alaw),
            _ => None,
        }
    }

    /// The name `start.media_format.encoding` carries.
    pub fn wire_name(self) -> &'static str {
        match self {
            Encoding::Pcm16 => "raw/slin",
            Encoding::Mulaw => "audio/x-mulaw",
            Encoding::Alaw => "audio/x-alaw",
        }
    }

    /// Bytes one sample takes.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            Encoding::Pcm16 => 2,
            Encoding::Mulaw | Encoding::Alaw => 1,
        }
    }

    fn law(self) -> Option<Law> {
        match self {
            Encoding::Pcm16 => None,
            Encoding::Mulaw => Some(Law::Ulaw),
            Encoding::Alaw => Some(Law::Alaw),
        }
    }

    /// Writes `pcm` in this encoding into the first
    /// `pcm.len() * bytes_per_sample()` bytes of `out`.
    ///
    /// # Panics
    /// If `out` is too short.
    pub fn encode(self, pcm: &[i16], out: &mut [u8]) {
        match self.law() {
            None => crate::pcm::samples_to_le_bytes(pcm, out),
            Some(law) => law.encode_slice(pcm, &mut out[..pcm.len()]),
        }
    }

    /// Appends the samples `bytes` hold to `out`. A trailing partial sample
    /// is ignored: callers check [`whole_samples`](Self::whole_samples) first.
    pub fn decode_into(self, bytes: &[u8], out: &mut Vec<i16>) {
        let n = bytes.len() / self.bytes_per_sample();
        let at = out.len();
        out.resize(at + n, 0);
        match self.law() {
            None => crate::pcm::le_bytes_to_samples(bytes, &mut out[at..]),
            Some(law) => law.decode_slice(bytes, &mut out[at..]),
        }
    }

    /// True when `len` bytes are a whole number of samples.
    pub fn whole_samples(self, len: usize) -> bool {
        len.is_multiple_of(self.bytes_per_sample())
    }
}

/// Why a format was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The encoding name is not one we speak.
    #[error("unknown audio encoding {0:?}: use pcm (raw/slin), mulaw (audio/x-mulaw) or alaw (audio/x-alaw)")]
    Encoding(String),
    /// The sample rate is not one we speak.
    #[error("unsupported sample_rate {0}: use 8000, 16000 or 24000")]
    Rate(u64),
}

/// A bot session's audio: an encoding at a sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    /// How samples travel.
    pub encoding: Encoding,
    /// Samples per second: one of [`AudioFormat::RATES`].
    pub sample_rate: u32,
}

impl Default for AudioFormat {
    /// 16-bit PCM at 8 kHz, the protocol's default.
    fn default() -> Self {
        AudioFormat {
            encoding: Encoding::Pcm16,
            sample_rate: 8000,
        }
    }
}

impl AudioFormat {
    /// The sample rates a session may use.
    pub const RATES: [u32; 3] = [8000, 16000, 24000];

    /// A format from an encoding name ([`Encoding::parse`]) and a rate.
    pub fn parse(encoding: &str, sample_rate: u64) -> Result<AudioFormat, FormatError> {
        let encoding =
            Encoding::parse(encoding).ok_or_else(|| FormatError::Encoding(encoding.to_owned()))?;
        Self::new(encoding, sample_rate)
    }

    /// A format, if the rate is one of [`AudioFormat::RATES`].
    pub fn new(encoding: Encoding, sample_rate: u64) -> Result<AudioFormat, FormatError> {
        match u32::try_from(sample_rate) {
            Ok(r) if Self::RATES.contains(&r) => Ok(AudioFormat {
                encoding,
                sample_rate: r,
            }),
            _ => Err(FormatError::Rate(sample_rate)),
        }
    }

    /// The protocol's own format: 16-bit PCM at 8 kHz, what the engine
    /// works in, so no conversion is needed.
    pub fn is_native(&self) -> bool {
        *self == AudioFormat::default()
    }

    /// Samples in 20 ms.
    pub fn frame_samples(&self) -> usize {
        self.sample_rate as usize / 50
    }

    /// Bytes in 20 ms.
    pub fn frame_bytes(&self) -> usize {
        self.frame_samples() * self.encoding.bytes_per_sample()
    }

    /// Milliseconds that `bytes` of audio last (rounded down).
    pub fn millis(&self, bytes: usize) -> usize {
        bytes / self.encoding.bytes_per_sample() * 1000 / self.sample_rate as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_round_trips_and_companding_stays_within_its_step() {
        let pcm: Vec<i16> = (-32768..=32767).step_by(7).map(|s| s as i16).collect();
        for enc in Encoding::ALL {
            let mut bytes = vec![0u8; pcm.len() * enc.bytes_per_sample()];
            enc.encode(&pcm, &mut bytes);
            let mut back = Vec::new();
            enc.decode_into(&bytes, &mut back);
            assert_eq!(back.len(), pcm.len());
            for (a, b) in pcm.iter().zip(&back) {
                let err = (i32::from(*a) - i32::from(*b)).abs();
                // G.711's largest step is 1024 (µ-law) / 1024 (A-law) at full
                // scale: the error is at most half a step plus rounding.
                let bound = match enc {
                    Encoding::Pcm16 => 0,
                    _ => (i32::from(*a).abs() / 16).max(16) + 8,
                };
                assert!(err <= bound, "{enc:?}: {a} came back as {b}");
            }
            // What came back goes through again unchanged.
            let mut again = vec![0u8; back.len() * enc.bytes_per_sample()];
            enc.encode(&back, &mut again);
            let mut twice = Vec::new();
            enc.decode_into(&again, &mut twice);
            assert!(twice == back, "{enc:?} is not idempotent");
        }
    }

    #[test]
    fn names_and_rates() {
        for enc in Encoding::ALL {
            assert_eq!(Encoding::parse(enc.wire_name()), Some(enc));
        }
        assert_eq!(Encoding::parse("PCM"), Some(Encoding::Pcm16));
        assert_eq!(Encoding::parse("ulaw"), Some(Encoding::Mulaw));
        assert_eq!(
            AudioFormat::parse("opus", 8000),
            Err(FormatError::Encoding("opus".into()))
        );
        assert_eq!(
            AudioFormat::parse("pcm", 44100),
            Err(FormatError::Rate(44100))
        );
        let f = AudioFormat::parse("pcm", 24000).unwrap();
        assert_eq!((f.frame_samples(), f.frame_bytes()), (480, 960));
        assert_eq!(f.millis(960), 20);
        assert!(AudioFormat::default().is_native());
        assert!(!Encoding::Pcm16.whole_samples(3));
        assert!(Encoding::Mulaw.whole_samples(3));
    }
}
