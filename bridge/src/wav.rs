//! WAV files: the call recorder (stereo, 8 kHz, 16-bit), and reading fixtures
//! and recordings (the parser is `codecs::wav`).

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use codecs::pcm::Frame;

pub use codecs::wav::{parse, Pcm};

/// Errors reading a WAV file.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// The bytes are not a usable 16-bit PCM WAV file.
    #[error(transparent)]
    Format(#[from] codecs::wav::WavError),
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads a 16-bit PCM WAV file.
pub fn read(path: &Path) -> Result<Pcm, WavError> {
    Ok(parse(&std::fs::read(path)?)?)
}

/// Writes a call's audio as it happens: the caller in the left channel, the
/// other party (the bot) in the right. The header's sizes are fixed on `finish`.
pub struct Recorder {
    out: BufWriter<File>,
    path: PathBuf,
    frames: u64,
    scratch: Vec<u8>,
}

impl Recorder {
    /// Creates the file, writing a header with provisional sizes.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = File::create(path)?;
        let mut out = BufWriter::with_capacity(32 * 1024, file);
        out.write_all(&header(0))?;
        Ok(Recorder {
            out,
            path: path.to_owned(),
            frames: 0,
            scratch: Vec::with_capacity(4 * codecs::pcm::FRAME_SAMPLES),
        })
    }

    /// Appends 20 ms: what the caller said and what the caller heard.
    pub fn write(&mut self, caller: &Frame, other: &Frame) -> io::Result<()> {
        self.scratch.clear();
        for (a, b) in caller.iter().zip(other.iter()) {
            self.scratch.extend_from_slice(&a.to_le_bytes());
            self.scratch.extend_from_slice(&b.to_le_bytes());
        }
        self.frames += 1;
        self.out.write_all(&self.scratch)
    }

    /// Fixes the header and closes the file; returns its path.
    pub fn finish(mut self) -> io::Result<PathBuf> {
        let data = self.frames * codecs::pcm::FRAME_SAMPLES as u64 * 4;
        let data = u32::try_from(data).unwrap_or(u32::MAX - 44);
        self.out.flush()?;
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header(data))?;
        file.sync_data()?;
        Ok(self.path)
    }
}

fn header(data_len: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    let channels: u16 = 2;
    let rate: u32 = codecs::pcm::SAMPLE_RATE;
    let block = channels * 2;
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * block as u32).to_le_bytes());
    h[32..34].copy_from_slice(&block.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_round_trips_both_channels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.wav");
        let mut rec = Recorder::create(&path).unwrap();
        let a: Frame = std::array::from_fn(|i| i as i16);
        let b: Frame = std::array::from_fn(|i| -(i as i16));
        rec.write(&a, &b).unwrap();
        rec.write(&b, &a).unwrap();
        rec.finish().unwrap();
        let pcm = read(&path).unwrap();
        assert_eq!((pcm.sample_rate, pcm.channels), (8000, 2));
        let left = pcm.channel(0);
        let right = pcm.channel(1);
        assert_eq!(&left[..160], &a[..]);
        assert_eq!(&left[160..], &b[..]);
        assert_eq!(&right[..160], &b[..]);
    }

    #[test]
    fn the_builtin_speech_sample_parses() {
        let pcm = parse(include_bytes!("../assets/speech.wav")).unwrap();
        assert_eq!((pcm.sample_rate, pcm.channels), (8000, 1));
        assert!(pcm.samples.len() > 8000);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"not a wav").is_err());
    }
}
