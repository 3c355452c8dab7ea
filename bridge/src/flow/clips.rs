//! The audio library: clips loaded once from WAV files, kept as 8 kHz mono.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::sync::Arc;

use codecs::pcm::SAMPLE_RATE;

use super::model::{AudioClip, FlowError};

/// Loaded clips by id, as 8 kHz mono 16-bit samples. Cheap to clone: the
/// samples are shared.
#[derive(Clone, Default)]
pub struct ClipLibrary {
    clips: Arc<HashMap<String, Arc<[i16]>>>,
}

impl std::fmt::Debug for ClipLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.clips.keys().collect();
        ids.sort();
        f.debug_struct("ClipLibrary").field("clips", &ids).finish()
    }
}

impl ClipLibrary {
    /// Reads every clip's WAV file (16-bit PCM, any rate and channel count),
    /// mixes it down to mono and resamples it to 8 kHz. Errors name the clip
    /// and its file.
    pub fn load(clips: &[AudioClip]) -> Result<ClipLibrary, FlowError> {
        let mut map = HashMap::new();
        for c in clips {
            let err = |reason: String| FlowError::Clip {
                clip: c.id.clone(),
                path: c.file.clone(),
                reason,
            };
            if map.contains_key(&c.id) {
                return Err(err("the clip id is used more than once".into()));
            }
            map.insert(c.id.clone(), read_8k(&c.file).map_err(err)?);
        }
        Ok(ClipLibrary {
            clips: Arc::new(map),
        })
    }

    /// A library of clips given as 8 kHz mono samples (tests, generated audio).
    pub fn from_samples<I, S>(clips: I) -> ClipLibrary
    where
        I: IntoIterator<Item = (S, Vec<i16>)>,
        S: Into<String>,
    {
        ClipLibrary {
            clips: Arc::new(
                clips
                    .into_iter()
                    .map(|(id, s)| (id.into(), Arc::from(s)))
                    .collect(),
            ),
        }
    }

    /// A clip's 8 kHz mono samples.
    pub fn get(&self, id: &str) -> Option<Arc<[i16]>> {
        self.clips.get(id).cloned()
    }

    /// Whether a clip of this id is loaded.
    pub fn contains(&self, id: &str) -> bool {
        self.clips.contains_key(id)
    }

    /// The ids of the loaded clips, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<_> = self.clips.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// How many clips are loaded.
    pub fn len(&self) -> usize {
        self.clips.len()
    }

    /// True when no clip is loaded.
    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }
}

/// Reads one WAV file (16-bit PCM, any rate and channel count) as 8 kHz
/// mono samples (a clip, hold audio).
pub fn read_8k(path: &std::path::Path) -> Result<Arc<[i16]>, String> {
    decode_8k(&std::fs::read(path).map_err(|e| e.to_string())?)
}

/// [`read_8k`] for the bytes of a WAV file (an upload).
pub fn decode_8k(bytes: &[u8]) -> Result<Arc<[i16]>, String> {
    let pcm = crate::wav::parse(bytes).map_err(|e| e.to_string())?;
    // A tiny rate would make the 8 kHz copy thousands of times the file's
    // size (a 1 MB upload claiming 1 Hz becomes 16 GB).
    if !(MIN_RATE..=MAX_RATE).contains(&pcm.sample_rate) {
        return Err(format!(
            "the sample rate is {} Hz; audio clips take {MIN_RATE} to {MAX_RATE} Hz",
            pcm.sample_rate
        ));
    }
    let mono = mix_to_mono(&pcm.samples, pcm.channels);
    Ok(Arc::from(resample(&mono, pcm.sample_rate, SAMPLE_RATE)))
}

/// The lowest sample rate a clip may have.
const MIN_RATE: u32 = 4000;
/// The highest.
const MAX_RATE: u32 = 192_000;

/// The mean of each frame's channels.
fn mix_to_mono(interleaved: &[i16], channels: u16) -> Vec<i16> {
    let n = usize::from(channels.max(1));
    if n == 1 {
        return interleaved.to_vec();
    }
    interleaved
        .chunks_exact(n)
        .map(|f| (f.iter().map(|&s| i32::from(s)).sum::<i32>() / n as i32) as i16)
        .collect()
}

/// Zero crossings of the sinc kernel on each side of its centre.
const ZERO_CROSSINGS: f64 = 16.0;
/// The pass band ends this far below the lower of the two Nyquist rates.
const CUTOFF: f64 = 0.9;

/// Band-limited resampling by windowed-sinc interpolation: each output sample
/// is the input filtered by a Blackman-windowed sinc centred on its time. The
/// filter's cut-off is 90% of the lower Nyquist rate of the two, so
/// decimation low-passes first (no aliasing) and interpolation does not image.
/// The same rate is copied as is.
fn resample(input: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let out_len = (input.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let step = f64::from(from) / f64::from(to); // input samples per output sample
                                                // Cut-off in cycles per input sample.
    let fc = 0.5 * CUTOFF * (f64::from(to) / f64::from(from)).min(1.0);
    let half = ZERO_CROSSINGS / (2.0 * fc); // half-width in input samples
    let last = input.len() as isize - 1;
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len {
        let t = n as f64 * step;
        let lo = ((t - half).ceil() as isize).max(0);
        let hi = ((t + half).floor() as isize).min(last);
        let (mut acc, mut wsum) = (0.0f64, 0.0f64);
        for k in lo..=hi {
            let d = k as f64 - t;
            let x = 2.0 * fc * d;
            let sinc = if x.abs() < 1e-12 {
                1.0
            } else {
                (PI * x).sin() / (PI * x)
            };
            // Blackman window over [-half, half].
            let w = 0.42 + 0.5 * (PI * d / half).cos() + 0.08 * (2.0 * PI * d / half).cos();
            let h = sinc * w;
            acc += h * f64::from(input[k as usize]);
            wsum += h;
        }
        let y = if wsum.abs() > 1e-9 { acc / wsum } else { 0.0 };
        out.push(y.round().clamp(-32768.0, 32767.0) as i16);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tone(rate: u32, hz: f64, secs: f64, amp: f64) -> Vec<i16> {
        (0..(f64::from(rate) * secs) as usize)
            .map(|i| (amp * (2.0 * PI * hz * i as f64 / f64::from(rate)).sin()) as i16)
            .collect()
    }

    fn rms(s: &[i16]) -> f64 {
        (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
    }

    fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
        let data_len = (samples.len() * 2) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data_len).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&rate.wrapping_mul(u32::from(channels) * 2).to_le_bytes());
        b.extend_from_slice(&(channels * 2).to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_len.to_le_bytes());
        for s in samples {
            b.extend_from_slice(&s.to_le_bytes());
        }
        std::fs::write(path, b).unwrap();
    }

    #[test]
    fn a_16k_second_becomes_8000_samples_at_the_same_level() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tone.wav");
        write_wav(&file, 16000, 1, &tone(16000, 440.0, 1.0, 10000.0));
        let lib = ClipLibrary::load(&[AudioClip {
            id: "tone".into(),
            file,
        }])
        .unwrap();
        let s = lib.get("tone").unwrap();
        assert_eq!(s.len(), 8000);
        let level = rms(&s[400..7600]);
        assert!((level - 10000.0 / 2f64.sqrt()).abs() < 100.0, "{level}");
        // Same waveform as a tone made at 8 kHz.
        let want = tone(8000, 440.0, 1.0, 10000.0);
        let worst = (400..7600)
            .map(|i| (i32::from(s[i]) - i32::from(want[i])).abs())
            .max()
            .unwrap();
        assert!(worst < 200, "{worst}");
    }

    #[test]
    fn absurd_sample_rates_are_refused() {
        // 1 Hz would blow a small file up 8000 times.
        let dir = tempfile::tempdir().unwrap();
        for rate in [0, 1, 3999, 192_001, u32::MAX] {
            let path = dir.path().join(format!("{rate}.wav"));
            write_wav(&path, rate, 1, &[100; 1000]);
            let e = read_8k(&path).unwrap_err();
            assert!(e.contains("4000 to 192000 Hz"), "{rate}: {e}");
        }
        let path = dir.path().join("ok.wav");
        write_wav(&path, 4000, 1, &[100; 1000]);
        assert_eq!(read_8k(&path).unwrap().len(), 2000);
    }

    #[test]
    fn common_rates_resample_to_8k() {
        for rate in [8000, 16000, 24000, 44100, 48000] {
            let out = resample(&tone(rate, 1000.0, 1.0, 8000.0), rate, 8000);
            assert_eq!(out.len(), 8000, "{rate}");
            let level = rms(&out[400..7600]);
            assert!(
                (level - 8000.0 / 2f64.sqrt()).abs() < 120.0,
                "{rate}: {level}"
            );
        }
        // 8 kHz is copied as is.
        let t = tone(8000, 1000.0, 0.1, 8000.0);
        assert_eq!(resample(&t, 8000, 8000), t);
    }

    #[test]
    fn decimation_filters_out_what_8k_cannot_carry() {
        // A 6 kHz tone at 48 kHz would alias to 2 kHz: it must be filtered out.
        let out = resample(&tone(48000, 6000.0, 1.0, 10000.0), 48000, 8000);
        let level = rms(&out[400..7600]);
        assert!(level < 100.0, "{level}");
    }

    #[test]
    fn stereo_is_mixed_to_mono() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("st.wav");
        // Left 1000, right 3000, for 160 frames at 8 kHz.
        let inter: Vec<i16> = (0..160).flat_map(|_| [1000i16, 3000]).collect();
        write_wav(&file, 8000, 2, &inter);
        let lib = ClipLibrary::load(&[AudioClip {
            id: "st".into(),
            file,
        }])
        .unwrap();
        let s = lib.get("st").unwrap();
        assert_eq!(s.len(), 160);
        assert!(s.iter().all(|&x| x == 2000));
    }

    #[test]
    fn a_missing_file_names_the_clip_and_path() {
        let e = ClipLibrary::load(&[AudioClip {
            id: "welcome".into(),
            file: "/nonexistent/welcome.wav".into(),
        }])
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("\"welcome\"") && msg.contains("/nonexistent/welcome.wav"),
            "{msg}"
        );
    }

    #[test]
    fn from_samples_and_get() {
        let lib = ClipLibrary::from_samples([("a", vec![1, 2, 3]), ("b", vec![])]);
        assert_eq!(&*lib.get("a").unwrap(), &[1, 2, 3]);
        assert!(lib.contains("b") && !lib.contains("c"));
        assert_eq!(lib.ids(), ["a", "b"]);
        assert_eq!(lib.clone().len(), 2);
    }
}
