//! WAV files: the call recorder (stereo, 8 kHz, 16-bit), and reading fixtures
//! and recordings (the parser is `codecs::wav`).

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use std::collections::VecDeque;

use codecs::pcm::{Frame, SILENCE};

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

/// Frames one side may run ahead of the other before the other is written as
/// silence (200 ms).
const MAX_UNPAIRED: usize = 10;

/// Writes a call's audio as it happens: the caller in the left channel, the
/// other party (the bot) in the right. The header's sizes are fixed on `finish`.
///
/// The two sides may come at their own times ([`said`](Self::said) as the
/// phone's packets arrive, [`heard`](Self::heard) on the call's clock): frames
/// are paired in order, and a side that runs more than 200 ms ahead is paired
/// with silence.
pub struct Recorder {
    out: BufWriter<File>,
    path: PathBuf,
    frames: u64,
    /// Frames of one side waiting for the other; `unpaired_said` says which.
    unpaired: VecDeque<Frame>,
    unpaired_said: bool,
}

impl Recorder {
    /// Creates the file, writing a header with provisional sizes.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = File::create(path)?;
        // 8 KiB: about 130 ms of stereo audio per write, and little memory
        // per call.
        let mut out = BufWriter::with_capacity(8 * 1024, file);
        out.write_all(&header(0))?;
        Ok(Recorder {
            out,
            path: path.to_owned(),
            frames: 0,
            unpaired: VecDeque::new(),
            unpaired_said: false,
        })
    }

    /// 20 ms the caller said.
    pub fn said(&mut self, frame: &Frame) -> io::Result<()> {
        self.side(frame, true)
    }

    /// 20 ms the caller heard.
    pub fn heard(&mut self, frame: &Frame) -> io::Result<()> {
        self.side(frame, false)
    }

    fn side(&mut self, frame: &Frame, said: bool) -> io::Result<()> {
        if self.unpaired.is_empty() || self.unpaired_said == said {
            self.unpaired_said = said;
            self.unpaired.push_back(*frame);
            if self.unpaired.len() > MAX_UNPAIRED {
                return self.write_unpaired();
            }
            return Ok(());
        }
        let other = self.unpaired.pop_front().expect("not empty");
        if said {
            self.write(frame, &other)
        } else {
            self.write(&other, frame)
        }
    }

    /// Writes the oldest unpaired frame against silence.
    fn write_unpaired(&mut self) -> io::Result<()> {
        let Some(frame) = self.unpaired.pop_front() else {
            return Ok(());
        };
        if self.unpaired_said {
            self.write(&frame, &SILENCE)
        } else {
            self.write(&SILENCE, &frame)
        }
    }

    /// Appends 20 ms: what the caller said and what the caller heard.
    pub fn write(&mut self, caller: &Frame, other: &Frame) -> io::Result<()> {
        let mut bytes = [0u8; 4 * codecs::pcm::FRAME_SAMPLES];
        for ((out, a), b) in bytes.chunks_exact_mut(4).zip(caller).zip(other) {
            out[..2].copy_from_slice(&a.to_le_bytes());
            out[2..].copy_from_slice(&b.to_le_bytes());
        }
        self.frames += 1;
        self.out.write_all(&bytes)
    }

    /// Fixes the header and closes the file; returns its path.
    pub fn finish(mut self) -> io::Result<PathBuf> {
        while !self.unpaired.is_empty() {
            self.write_unpaired()?;
        }
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

/// A recording left by a bridge that did not stop cleanly (`kill -9`, power
/// loss): its header still says zero length though the audio is there.
/// Sets the sizes from the file's length (whole stereo frames only, a torn
/// last sample cut off) and returns how many bytes of audio it holds. Files
/// that are not a recording of ours are left alone (an error).
pub fn repair(path: &Path) -> io::Result<u64> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut head = [0u8; 44];
    file.read_exact(&mut head)?;
    let ours = header(0);
    // Ours: RIFF/WAVE, PCM16 stereo 8 kHz; the two size fields may be anything.
    if head[..4] != ours[..4] || head[8..40] != ours[8..40] {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a recording of the bridge's",
        ));
    }
    let len = file.metadata()?.len();
    let data = (len.saturating_sub(44) / 4 * 4).min(u64::from(u32::MAX - 44));
    file.set_len(44 + data)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header(data as u32))?;
    file.sync_all()?;
    Ok(data)
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
    fn a_recording_cut_off_by_a_crash_is_repaired_from_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("CA1.wav");
        // As a killed bridge leaves it: the provisional header, 3 frames of
        // audio, and half a sample of a fourth.
        let mut bytes = header(0).to_vec();
        for i in 0..3 * 160 {
            bytes.extend_from_slice(&(i as i16).to_le_bytes());
            bytes.extend_from_slice(&(-(i as i16)).to_le_bytes());
        }
        bytes.push(7);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(repair(&path).unwrap(), 3 * 160 * 4);
        let pcm = read(&path).unwrap();
        assert_eq!((pcm.channels, pcm.samples.len()), (2, 3 * 160 * 2));
        assert_eq!(pcm.samples[2 * 479], 479);
        // Repairing again changes nothing; a file not ours is refused.
        assert_eq!(repair(&path).unwrap(), 3 * 160 * 4);
        let other = dir.path().join("other.wav");
        std::fs::write(&other, [0u8; 100]).unwrap();
        assert!(repair(&other).is_err());
    }

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
    fn sides_coming_at_their_own_times_are_paired_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.wav");
        let mut rec = Recorder::create(&path).unwrap();
        let frame = |v: i16| -> Frame { [v; 160] };
        // Said 1, 2 before heard 10, 20; then heard 30 before said 3.
        rec.said(&frame(1)).unwrap();
        rec.said(&frame(2)).unwrap();
        rec.heard(&frame(10)).unwrap();
        rec.heard(&frame(20)).unwrap();
        rec.heard(&frame(30)).unwrap();
        rec.said(&frame(3)).unwrap();
        // The phone says nothing for a while: what it heard is kept, paired
        // with silence beyond 200 ms.
        for v in 40..52 {
            rec.heard(&frame(v)).unwrap();
        }
        rec.finish().unwrap();
        let pcm = read(&path).unwrap();
        let per_frame = |ch: Vec<i16>| ch.chunks(160).map(|c| c[0]).collect::<Vec<_>>();
        let left = per_frame(pcm.channel(0));
        let right = per_frame(pcm.channel(1));
        assert_eq!(left, [vec![1, 2, 3], vec![0; 12]].concat());
        assert_eq!(right, [vec![10, 20, 30], (40..52).collect()].concat());
    }

    #[test]
    fn the_builtin_speech_sample_parses() {
        let pcm = parse(include_bytes!("../../assets/speech.wav")).unwrap();
        assert_eq!((pcm.sample_rate, pcm.channels), (8000, 1));
        assert!(pcm.samples.len() > 8000);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"not a wav").is_err());
    }
}
