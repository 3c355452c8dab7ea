//! In-band DTMF: generating key tones into 8 kHz PCM16, and detecting them in
//! received audio (for callers whose DTMF arrives as sound instead of RFC 4733).
//!
//! ```
//! use codecs::dtmf::{Detector, ToneSequencer};
//!
//! let mut tones = ToneSequencer::new("123#", 80, 80);
//! let mut detector = Detector::new();
//! let mut digits = Vec::new();
//! let mut frame = [0i16; 160];
//! while !tones.is_done() {
//!     tones.next_frame(&mut frame);
//!     detector.push(&frame, &mut digits);
//! }
//! assert_eq!(digits, ['1', '2', '3', '#']);
//! ```

use std::f64::consts::TAU;

const SAMPLE_RATE: u64 = crate::pcm::SAMPLE_RATE as u64;
const SAMPLES_PER_MS: usize = SAMPLE_RATE as usize / 1000;

const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Peak amplitude of each of the two tones that [`generate`] writes: -10 dBFS, so
/// the pair peaks at about -4 dBFS and never clips.
pub const TONE_AMPLITUDE: f64 = 0.316 * 32767.0;

/// The (row, column) frequencies in Hz of a DTMF key; lowercase `a`..`d` accepted.
pub fn tone_frequencies(digit: char) -> Option<(f32, f32)> {
    keypad_position(digit).map(|(r, c)| (ROWS[r] as f32, COLS[c] as f32))
}

fn keypad_position(digit: char) -> Option<(usize, usize)> {
    let digit = digit.to_ascii_uppercase();
    KEYPAD
        .iter()
        .enumerate()
        .find_map(|(r, row)| row.iter().position(|&d| d == digit).map(|c| (r, c)))
}

/// Writes `out.len()` samples of `digit`'s dual tone, the first being sample number
/// `start` of the tone, so that consecutive calls with `start` advanced by the
/// previous length join without a click. Each tone has amplitude
/// [`TONE_AMPLITUDE`]; a character that is not a DTMF key writes silence.
pub fn generate(digit: char, start: usize, out: &mut [i16]) {
    let Some((r, c)) = keypad_position(digit) else {
        out.fill(0);
        return;
    };
    // The DTMF frequencies are whole hertz, so the phase of sample n is exactly
    // (f * n mod 8000) / 8000 of a cycle: no drift however long the tone.
    let (f1, f2) = (ROWS[r] as u64, COLS[c] as u64);
    for (i, o) in out.iter_mut().enumerate() {
        let n = (start + i) as u64;
        let phase = |f: u64| TAU * ((f * n) % SAMPLE_RATE) as f64 / SAMPLE_RATE as f64;
        let v = TONE_AMPLITUDE * (phase(f1).sin() + phase(f2).sin());
        *o = v.round() as i16;
    }
}

/// Plays a string of keys as tones, one 20 ms frame at a time: each key sounds
/// for `tone_ms` and is followed by `gap_ms` of silence (the last key too), so the
/// sequence lasts `keys * (tone_ms + gap_ms)`. Timing is sample-accurate, not
/// rounded to frames. Characters that are not DTMF keys (spaces, dashes) are
/// skipped.
#[derive(Debug, Clone)]
pub struct ToneSequencer {
    digits: Vec<char>,
    tone_samples: usize,
    slot_samples: usize,
    /// Samples written so far.
    position: usize,
}

impl ToneSequencer {
    /// A sequencer for `digits`, with `tone_ms` of tone and `gap_ms` of silence per key.
    pub fn new(digits: &str, tone_ms: u32, gap_ms: u32) -> Self {
        let tone_samples = tone_ms as usize * SAMPLES_PER_MS;
        ToneSequencer {
            digits: digits
                .chars()
                .filter(|&c| keypad_position(c).is_some())
                .collect(),
            tone_samples,
            slot_samples: tone_samples + gap_ms as usize * SAMPLES_PER_MS,
            position: 0,
        }
    }

    /// Whether every key and its following gap has been played.
    pub fn is_done(&self) -> bool {
        self.position >= self.digits.len() * self.slot_samples
    }

    /// Fills one 20 ms frame and advances; frames after the end are silence.
    pub fn next_frame(&mut self, out: &mut [i16; 160]) {
        let mut filled = 0;
        while filled < out.len() {
            let rest = &mut out[filled..];
            let slot = self
                .position
                .checked_div(self.slot_samples)
                .unwrap_or(usize::MAX);
            let Some(&digit) = self.digits.get(slot) else {
                rest.fill(0);
                self.position += rest.len();
                return;
            };
            let offset = self.position - slot * self.slot_samples;
            let run = if offset < self.tone_samples {
                let run = rest.len().min(self.tone_samples - offset);
                generate(digit, offset, &mut rest[..run]);
                run
            } else {
                let run = rest.len().min(self.slot_samples - offset);
                rest[..run].fill(0);
                run
            };
            filled += run;
            self.position += run;
        }
    }
}

/// Goertzel window: 20 ms, which separates the closest DTMF frequencies (73 Hz
/// apart) by more than 10 dB.
const WINDOW: usize = 160;
/// A new window is analysed every 10 ms.
const HOP: usize = 80;
/// Consecutive windows with the same key before it counts: with 10 ms hops any
/// tone of 40 ms or more gives three, and one shorter than about 26 ms never does.
const PRESENT_WINDOWS: u32 = 3;
/// Consecutive windows without a key before the same key may be reported again:
/// a 20 ms gap always gives two.
const ABSENT_WINDOWS: u32 = 2;
/// Each tone must be at least this loud (power of a sine with amplitude ~ -36 dBFS).
const MIN_TONE_POWER: f64 = 520.0 * 520.0 / 2.0;
/// Allowed level difference between the row and column tones (twist): 8 dB.
const MAX_TWIST: f64 = 6.31;
/// The strongest row (and column) must beat every other row (column) by 6 dB.
const MIN_GROUP_DOMINANCE: f64 = 4.0;
/// The two tones must carry this share of the window's energy. Speech and noise
/// spread their energy; a window only partly covered by a tone scores about the
/// covered fraction, so this also marks where tones start and stop.
const MIN_TONE_SHARE: f64 = 0.6;

/// Relative frequency deviation a key's tones may have and still be measured at
/// full strength.
const FREQ_TOLERANCE: f64 = 0.015;

/// Detects DTMF keys in 8 kHz PCM16, fed in chunks of any size.
///
/// Each key press is reported once: a key counts when its tone has been present for
/// about 40 ms, and the same key is reported again only after the tone has been
/// absent for about 20 ms (a different key is reported as soon as it counts). A
/// window counts as a key only if both tones are loud enough, within 8 dB of each
/// other, each clearly the strongest of its group, and together most of the
/// signal's energy, which rejects silence, noise, speech and single tones.
#[derive(Debug, Clone)]
pub struct Detector {
    window: [f64; WINDOW],
    /// How much of `window` holds samples; it starts with `WINDOW - HOP` zeros so
    /// the first analysis comes after one hop.
    pending: usize,
    candidate: Option<char>,
    candidate_windows: u32,
    absent_windows: u32,
    /// The key reported and not yet released by a gap.
    held: Option<char>,
}

impl Default for Detector {
    fn default() -> Self {
        Self::new()
    }
}

impl Detector {
    /// A detector that has heard nothing yet.
    pub fn new() -> Self {
        Detector {
            window: [0.0; WINDOW],
            pending: WINDOW - HOP,
            candidate: None,
            candidate_windows: 0,
            absent_windows: ABSENT_WINDOWS,
            held: None,
        }
    }

    /// Feeds `samples` and appends to `out` the keys whose press was recognised
    /// within them.
    pub fn push(&mut self, samples: &[i16], out: &mut Vec<char>) {
        let mut samples = samples;
        while !samples.is_empty() {
            let take = samples.len().min(WINDOW - self.pending);
            for (slot, &s) in self.window[self.pending..].iter_mut().zip(&samples[..take]) {
                *slot = f64::from(s);
            }
            self.pending += take;
            samples = &samples[take..];
            if self.pending == WINDOW {
                let key = classify(&self.window);
                if let Some(digit) = self.update(key) {
                    out.push(digit);
                }
                self.window.copy_within(HOP.., 0);
                self.pending = WINDOW - HOP;
            }
        }
    }

    fn update(&mut self, key: Option<char>) -> Option<char> {
        let Some(digit) = key else {
            self.candidate = None;
            self.candidate_windows = 0;
            self.absent_windows = self.absent_windows.saturating_add(1);
            if self.absent_windows >= ABSENT_WINDOWS {
                self.held = None;
            }
            return None;
        };
        self.absent_windows = 0;
        if self.candidate == Some(digit) {
            self.candidate_windows = self.candidate_windows.saturating_add(1);
        } else {
            self.candidate = Some(digit);
            self.candidate_windows = 1;
        }
        if self.candidate_windows >= PRESENT_WINDOWS && self.held != Some(digit) {
            self.held = Some(digit);
            return Some(digit);
        }
        None
    }
}

/// The key whose tone pair fills `window`, if any.
fn classify(window: &[f64; WINDOW]) -> Option<char> {
    let total_power = window.iter().map(|x| x * x).sum::<f64>() / WINDOW as f64;
    if total_power < 2.0 * MIN_TONE_POWER {
        return None;
    }
    let rows = ROWS.map(|f| tone_power(window, f));
    let cols = COLS.map(|f| tone_power(window, f));
    let (r, row_power) = dominant(&rows)?;
    let (c, col_power) = dominant(&cols)?;

    let loud_enough = row_power >= MIN_TONE_POWER && col_power >= MIN_TONE_POWER;
    let twist_ok = col_power <= row_power * MAX_TWIST && row_power <= col_power * MAX_TWIST;
    let fills_signal = row_power + col_power >= MIN_TONE_SHARE * total_power;
    (loud_enough && twist_ok && fills_signal).then_some(KEYPAD[r][c])
}

/// Index and power of the entry that beats all others in its group by
/// [`MIN_GROUP_DOMINANCE`].
fn dominant(powers: &[f64; 4]) -> Option<(usize, f64)> {
    let (best, &power) = powers
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    let clear = powers
        .iter()
        .enumerate()
        .all(|(i, &p)| i == best || p * MIN_GROUP_DOMINANCE <= power);
    clear.then_some((best, power))
}

/// Power of a tone near `freq`: the strongest of Goertzel probes at `freq` and
/// 1.5% either side. A 20 ms window's bins are narrow enough that a key 1.5% off
/// nominal (which Q.24 receivers must accept) would otherwise lose up to 4 dB at
/// 1633 Hz and fail the energy-share test.
fn tone_power(window: &[f64; WINDOW], freq: f64) -> f64 {
    [1.0, 1.0 - FREQ_TOLERANCE, 1.0 + FREQ_TOLERANCE]
        .map(|k| goertzel_power(window, freq * k))
        .into_iter()
        .fold(0.0, f64::max)
}

/// Power of the `freq` component of `window`, scaled so that a sine of amplitude A
/// that fills the window gives A²/2 (comparable with the mean-square power).
fn goertzel_power(window: &[f64; WINDOW], freq: f64) -> f64 {
    let coeff = 2.0 * (TAU * freq / SAMPLE_RATE as f64).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in window {
        let s = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let magnitude_sq = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * magnitude_sq / (WINDOW * WINDOW) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_of_keys() {
        assert_eq!(tone_frequencies('1'), Some((697.0, 1209.0)));
        assert_eq!(tone_frequencies('0'), Some((941.0, 1336.0)));
        assert_eq!(tone_frequencies('#'), Some((941.0, 1477.0)));
        assert_eq!(tone_frequencies('d'), Some((941.0, 1633.0)));
        assert_eq!(tone_frequencies('x'), None);
    }

    #[test]
    fn generate_is_continuous_across_calls_and_stays_in_range() {
        let mut whole = [0i16; 400];
        generate('5', 0, &mut whole);
        let mut parts = [0i16; 400];
        let (a, b) = parts.split_at_mut(123);
        generate('5', 0, a);
        generate('5', 123, b);
        assert_eq!(whole, parts);
        let peak = whole.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak > 15_000 && peak < 21_000, "peak {peak}");
        assert_eq!(whole[0], 0);
    }

    #[test]
    fn goertzel_power_matches_sine_power() {
        let amp = 10_000.0;
        let mut w = [0.0; WINDOW];
        for (n, x) in w.iter_mut().enumerate() {
            *x = amp * (TAU * 770.0 * n as f64 / 8000.0).sin();
        }
        let p = goertzel_power(&w, 770.0);
        let expected = amp * amp / 2.0;
        assert!((p / expected - 1.0).abs() < 0.02, "{p} vs {expected}");
        assert!(goertzel_power(&w, 697.0) < expected / 10.0);
    }

    #[test]
    fn sequencer_timing_is_sample_accurate() {
        // 25 ms tone + 5 ms gap: slots do not line up with 20 ms frames.
        let mut seq = ToneSequencer::new("1 2", 25, 5);
        let mut samples = Vec::new();
        let mut frame = [0i16; 160];
        while !seq.is_done() {
            seq.next_frame(&mut frame);
            samples.extend_from_slice(&frame);
        }
        assert_eq!(samples.len(), 480, "60 ms rounded up to whole frames");
        let mut expected = vec![0i16; 480];
        generate('1', 0, &mut expected[..200]);
        generate('2', 0, &mut expected[240..440]);
        assert_eq!(samples, expected);
        seq.next_frame(&mut frame);
        assert_eq!(frame, [0; 160]);
    }

    #[test]
    fn empty_sequencer_is_done() {
        assert!(ToneSequencer::new("", 100, 100).is_done());
        assert!(ToneSequencer::new("12", 0, 0).is_done());
    }
}
