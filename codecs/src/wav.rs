//! Reading 16-bit PCM WAV files held in memory (fixtures, call recordings).
//! No I/O: the caller reads the bytes.

/// Decoded 16-bit PCM: interleaved samples plus their layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcm {
    /// Samples per second.
    pub sample_rate: u32,
    /// Interleaved channels (at least 1).
    pub channels: u16,
    /// Interleaved samples.
    pub samples: Vec<i16>,
}

impl Pcm {
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

/// Why bytes are not a usable 16-bit PCM WAV file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a 16-bit PCM WAV file: {0}")]
pub struct WavError(pub String);

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

/// Parses a 16-bit PCM WAV file. A `data` chunk whose length field is 0 or
/// runs past the end (a recording cut off while being written) is read to the
/// end of the bytes.
pub fn parse(bytes: &[u8]) -> Result<Pcm, WavError> {
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
                return Err(WavError(format!(
                    "format {format} with {bits} bits (16-bit PCM only)"
                )));
            }
            let end = if len == 0 {
                bytes.len()
            } else {
                body.saturating_add(len).min(bytes.len())
            };
            let samples = bytes[body.min(end)..end]
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            return Ok(Pcm {
                sample_rate: rate,
                channels: channels.max(1),
                samples,
            });
        }
        at = body.saturating_add(len).saturating_add(len & 1);
    }
    Err(WavError("no data chunk".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(channels: u16, data: &[i16], data_len_field: Option<u32>) -> Vec<u8> {
        let bytes: Vec<u8> = data.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&8000u32.to_le_bytes());
        out.extend_from_slice(&(16000 * u32::from(channels)).to_le_bytes());
        out.extend_from_slice(&(2 * channels).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len_field.unwrap_or(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
        out
    }

    #[test]
    fn reads_interleaved_channels() {
        let p = parse(&wav(2, &[1, -1, 2, -2, 3, -3], None)).unwrap();
        assert_eq!((p.sample_rate, p.channels), (8000, 2));
        assert_eq!(p.channel(0), vec![1, 2, 3]);
        assert_eq!(p.channel(1), vec![-1, -2, -3]);
    }

    #[test]
    fn a_recording_cut_off_is_read_to_the_end() {
        let p = parse(&wav(1, &[5, 6, 7], Some(0))).unwrap();
        assert_eq!(p.samples, vec![5, 6, 7]);
        let p = parse(&wav(1, &[5, 6, 7], Some(1000))).unwrap();
        assert_eq!(p.samples, vec![5, 6, 7]);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert!(parse(b"not a wav").is_err());
        let mut w = wav(1, &[1], None);
        w[20] = 3; // IEEE float
        assert!(parse(&w).unwrap_err().0.contains("format 3"));
        assert!(parse(&w[..30]).is_err());
    }
}
