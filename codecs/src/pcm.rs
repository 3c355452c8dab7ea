//! 16-bit linear PCM at 8 kHz, the one format the media engine works in, and the
//! helpers around it: little-endian byte conversion (the bot wire format), level
//! measurement and delay search.

/// Samples per second of every PCM stream the engine handles.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 160;
/// Bytes in one 20 ms frame of little-endian PCM16.
pub const FRAME_BYTES: usize = FRAME_SAMPLES * 2;
/// One 20 ms frame of PCM16 samples.
pub type Frame = [i16; FRAME_SAMPLES];
/// A frame of digital silence.
pub const SILENCE: Frame = [0; FRAME_SAMPLES];

/// Writes `samples` as little-endian PCM16 into the first `2 * samples.len()` bytes
/// of `out`.
///
/// # Panics
/// If `out` is shorter than `2 * samples.len()`.
pub fn samples_to_le_bytes(samples: &[i16], out: &mut [u8]) {
    let out = &mut out[..samples.len() * 2];
    for (pair, s) in out.chunks_exact_mut(2).zip(samples) {
        pair.copy_from_slice(&s.to_le_bytes());
    }
}

/// Reads little-endian PCM16 `bytes` into the first `bytes.len() / 2` samples of
/// `out`.
///
/// `bytes` should have an even length; a trailing odd byte is ignored (callers that
/// take bytes from the network should reject odd lengths before calling this).
///
/// # Panics
/// If `out` is shorter than `bytes.len() / 2`.
pub fn le_bytes_to_samples(bytes: &[u8], out: &mut [i16]) {
    let pairs = bytes.chunks_exact(2);
    let out = &mut out[..pairs.len()];
    for (o, pair) in out.iter_mut().zip(pairs) {
        *o = i16::from_le_bytes([pair[0], pair[1]]);
    }
}

/// Root-mean-square level of `samples`, in sample units (0.0 for an empty slice).
///
/// A full-scale sine has an RMS of about 23170; divide by 32768 and take
/// `20 * log10` for dBFS.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// Finds where `needle` best matches inside `haystack`, by normalised
/// cross-correlation.
///
/// For every lag in `0..=max_lag` where the whole needle fits
/// (`lag + needle.len() <= haystack.len()`), compares `haystack[lag..]` with
/// `needle` and returns the lag with the highest correlation, and that correlation
/// (in `-1.0..=1.0`; 1.0 means the same waveform up to a positive gain). Ties go to
/// the smallest lag. A window or needle with no energy correlates as 0.0. Returns
/// `(0, 0.0)` when the needle is empty or fits at no lag.
///
/// Meant for tests that look for echoed or relayed audio in a recording; the cost is
/// `max_lag * needle.len()` multiplications.
///
/// ```
/// use codecs::pcm::find_delay;
///
/// let needle: Vec<i16> = (0..100).map(|i| ((i * 37) % 200 - 100) as i16).collect();
/// let mut haystack = vec![0i16; 300];
/// haystack[42..142].copy_from_slice(&needle);
/// let (lag, corr) = find_delay(&haystack, &needle, 200);
/// assert_eq!(lag, 42);
/// assert!(corr > 0.999);
/// ```
pub fn find_delay(haystack: &[i16], needle: &[i16], max_lag: usize) -> (usize, f64) {
    let n = needle.len();
    if n == 0 || n > haystack.len() {
        return (0, 0.0);
    }
    let last_lag = max_lag.min(haystack.len() - n);

    let needle_energy = energy(needle);
    // Running energy of haystack[lag..lag + n], updated as the window slides.
    let mut window_energy = energy(&haystack[..n]);

    let mut best = (0, f64::NEG_INFINITY);
    for lag in 0..=last_lag {
        if lag > 0 {
            let out = i64::from(haystack[lag - 1]);
            let inn = i64::from(haystack[lag + n - 1]);
            window_energy += inn * inn - out * out;
        }
        let dot: i64 = haystack[lag..lag + n]
            .iter()
            .zip(needle)
            .map(|(&h, &x)| i64::from(h) * i64::from(x))
            .sum();
        let denom = (window_energy as f64 * needle_energy as f64).sqrt();
        let corr = if denom > 0.0 { dot as f64 / denom } else { 0.0 };
        if corr > best.1 {
            best = (lag, corr);
        }
    }
    (best.0, best.1.clamp(-1.0, 1.0))
}

fn energy(samples: &[i16]) -> i64 {
    samples.iter().map(|&s| i64::from(s) * i64::from(s)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn le_bytes_round_trip() {
        let samples = [0i16, 1, -1, i16::MAX, i16::MIN, 0x1234];
        let mut bytes = [0u8; 12];
        samples_to_le_bytes(&samples, &mut bytes);
        assert_eq!(bytes[10..], [0x34, 0x12]);
        assert_eq!(bytes[4..6], [0xFF, 0xFF]);
        let mut back = [0i16; 6];
        le_bytes_to_samples(&bytes, &mut back);
        assert_eq!(back, samples);
    }

    #[test]
    fn odd_trailing_byte_is_ignored() {
        let mut out = [9i16; 2];
        le_bytes_to_samples(&[1, 0, 0xAB], &mut out);
        assert_eq!(out, [1, 9]);
    }

    #[test]
    fn frame_constants_agree() {
        assert_eq!(FRAME_SAMPLES as u32 * 1000 / SAMPLE_RATE, 20);
        assert_eq!(FRAME_BYTES, 2 * FRAME_SAMPLES);
    }

    #[test]
    fn rms_of_square_wave_and_empty() {
        assert_eq!(rms(&[]), 0.0);
        assert_eq!(rms(&[1000, -1000, 1000, -1000]), 1000.0);
    }

    /// Pseudo-random speech stand-in: an LCG, so the test needs no `rand`.
    fn noise(len: usize, mut seed: u32) -> Vec<i16> {
        (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 16) as i16 / 4
            })
            .collect()
    }

    #[test]
    fn finds_known_lag_in_attenuated_noisy_echo() {
        let needle = noise(800, 1);
        let lag = 1234;
        let mut haystack = noise(4000, 2).iter().map(|s| s / 20).collect::<Vec<_>>();
        for (h, x) in haystack[lag..].iter_mut().zip(&needle) {
            *h = h.saturating_add(x / 3);
        }
        let (found, corr) = find_delay(&haystack, &needle, 3000);
        assert_eq!(found, lag);
        assert!(corr > 0.9, "corr {corr}");
    }

    #[test]
    fn inverted_copy_correlates_negatively() {
        let needle = noise(200, 3);
        let inverted: Vec<i16> = needle.iter().map(|s| -s).collect();
        let (_, corr) = find_delay(&inverted, &needle, 0);
        assert!(corr < -0.999, "corr {corr}");
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(find_delay(&[1, 2, 3], &[], 5), (0, 0.0));
        assert_eq!(find_delay(&[1, 2], &[1, 2, 3], 5), (0, 0.0));
        assert_eq!(find_delay(&[0; 10], &[1, 2, 3], 5), (0, 0.0));
    }
}
