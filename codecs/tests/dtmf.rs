//! DTMF end to end: tones made by `ToneSequencer` must be heard by `Detector`
//! exactly once per key, and nothing else may be heard.

use codecs::dtmf::{generate, Detector, ToneSequencer};
use codecs::g711::{ulaw_decode, ulaw_encode};

const ALL_KEYS: &str = "0123456789*#ABCD";

/// The whole output of a sequencer, plus some trailing silence.
fn play(digits: &str, tone_ms: u32, gap_ms: u32) -> Vec<i16> {
    let mut seq = ToneSequencer::new(digits, tone_ms, gap_ms);
    let mut pcm = Vec::new();
    let mut frame = [0i16; 160];
    while !seq.is_done() {
        seq.next_frame(&mut frame);
        pcm.extend_from_slice(&frame);
    }
    pcm.extend_from_slice(&[0; 800]);
    pcm
}

fn detect_in_chunks(pcm: &[i16], chunk: usize) -> Vec<char> {
    let mut detector = Detector::new();
    let mut digits = Vec::new();
    for part in pcm.chunks(chunk) {
        detector.push(part, &mut digits);
    }
    digits
}

/// A linear congruential generator, so the noise is repeatable and needs no `rand`.
fn noise(len: usize, amplitude: i32, mut seed: u32) -> Vec<i16> {
    (0..len)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let unit = i32::from((seed >> 16) as u16) - 32768; // -32768..32767
            (unit * amplitude / 32768) as i16
        })
        .collect()
}

#[test]
fn every_key_is_detected_once_in_order() {
    let pcm = play(ALL_KEYS, 100, 100);
    let expected: Vec<char> = ALL_KEYS.chars().collect();
    assert_eq!(detect_in_chunks(&pcm, 160), expected);
}

#[test]
fn short_sequence() {
    assert_eq!(
        detect_in_chunks(&play("123#", 100, 100), 160),
        ['1', '2', '3', '#']
    );
}

#[test]
fn lowercase_and_punctuation_in_dial_string() {
    assert_eq!(
        detect_in_chunks(&play("a-b d", 60, 60), 160),
        ['A', 'B', 'D']
    );
}

#[test]
fn odd_chunk_sizes_give_the_same_result() {
    let pcm = play(ALL_KEYS, 100, 100);
    let expected: Vec<char> = ALL_KEYS.chars().collect();
    for chunk in [1, 37, 79, 80, 81, 333, pcm.len()] {
        assert_eq!(
            detect_in_chunks(&pcm, chunk),
            expected,
            "chunk size {chunk}"
        );
    }
}

#[test]
fn minimum_timing_40ms_tones_20ms_gaps_repeated_key() {
    // Repeated keys are the hard case: only the gap separates the presses.
    // Shift the start so the tones fall at every alignment to the 10 ms hop.
    for offset in (0..80).step_by(7) {
        let mut pcm = vec![0i16; offset];
        pcm.extend(play("1155##", 40, 20));
        assert_eq!(
            detect_in_chunks(&pcm, 160),
            ['1', '1', '5', '5', '#', '#'],
            "offset {offset}"
        );
    }
}

#[test]
fn long_press_is_one_key() {
    assert_eq!(detect_in_chunks(&play("7", 3000, 100), 160), ['7']);
}

#[test]
fn tones_too_short_are_ignored() {
    for offset in (0..80).step_by(7) {
        let mut pcm = vec![0i16; offset];
        pcm.extend(play("123", 20, 100));
        assert_eq!(detect_in_chunks(&pcm, 160), [], "offset {offset}");
    }
}

#[test]
fn keys_back_to_back_without_gap() {
    assert_eq!(detect_in_chunks(&play("159", 100, 0), 160), ['1', '5', '9']);
}

#[test]
fn survives_ulaw_round_trip() {
    let pcm: Vec<i16> = play(ALL_KEYS, 60, 60)
        .into_iter()
        .map(|s| ulaw_decode(ulaw_encode(s)))
        .collect();
    let expected: Vec<char> = ALL_KEYS.chars().collect();
    assert_eq!(detect_in_chunks(&pcm, 37), expected);
}

#[test]
fn quieter_tones_with_background_noise() {
    // -26 dBFS per tone (16 dB under the generator) plus noise at about -36 dBFS RMS.
    let background = noise(8000 * 4, 1000, 7);
    let pcm: Vec<i16> = play("369", 80, 80)
        .iter()
        .zip(background.iter().cycle())
        .map(|(&s, &n)| (s / 6).saturating_add(n))
        .collect();
    assert_eq!(detect_in_chunks(&pcm, 37), ['3', '6', '9']);
}

#[test]
fn no_detections_in_silence() {
    assert_eq!(detect_in_chunks(&[0; 8000 * 5], 160), []);
}

#[test]
fn no_detections_in_noise() {
    for amplitude in [100, 3000, 30_000] {
        let pcm = noise(8000 * 10, amplitude, amplitude as u32);
        assert_eq!(detect_in_chunks(&pcm, 37), [], "amplitude {amplitude}");
    }
}

#[test]
fn no_detection_of_single_tones() {
    for freq in [440.0, 697.0, 1209.0, 1633.0] {
        let pcm: Vec<i16> = (0..8000 * 2)
            .map(|n| (16_000.0 * (std::f64::consts::TAU * freq * n as f64 / 8000.0).sin()) as i16)
            .collect();
        assert_eq!(detect_in_chunks(&pcm, 160), [], "{freq} Hz");
    }
}

#[test]
fn no_detection_when_a_third_tone_dominates() {
    // A key's tone pair under a louder 440 Hz tone: not the two strongest components.
    let mut key = vec![0i16; 8000];
    generate('5', 0, &mut key);
    let pcm: Vec<i16> = key
        .iter()
        .enumerate()
        .map(|(n, &s)| {
            s / 2 + (12_000.0 * (std::f64::consts::TAU * 440.0 * n as f64 / 8000.0).sin()) as i16
        })
        .collect();
    assert_eq!(detect_in_chunks(&pcm, 160), []);
}

#[test]
fn no_detection_with_excessive_twist() {
    let mut row = vec![0i16; 8000];
    let mut col = vec![0i16; 8000];
    // '1' is 697 + 1209 Hz; build it from single tones with 12 dB twist.
    for (n, (r, c)) in row.iter_mut().zip(col.iter_mut()).enumerate() {
        let t = std::f64::consts::TAU * n as f64 / 8000.0;
        *r = (10_000.0 * (697.0 * t).sin()) as i16;
        *c = (2_500.0 * (1209.0 * t).sin()) as i16;
    }
    let pcm: Vec<i16> = row.iter().zip(&col).map(|(a, b)| a + b).collect();
    assert_eq!(detect_in_chunks(&pcm, 160), []);
}

#[test]
fn keys_off_nominal_frequency_by_1_5_percent_are_detected() {
    // ITU-T Q.24 receivers must accept tones up to 1.5% off nominal.
    for factor in [0.985, 1.015] {
        for key in ALL_KEYS.chars() {
            let (row, col) = codecs::dtmf::tone_frequencies(key).unwrap();
            let (row, col) = (f64::from(row) * factor, f64::from(col) * factor);
            let mut pcm: Vec<i16> = (0..800)
                .map(|n| {
                    let t = std::f64::consts::TAU * n as f64 / 8000.0;
                    (8000.0 * ((row * t).sin() + (col * t).sin())) as i16
                })
                .collect();
            pcm.extend_from_slice(&[0; 800]);
            assert_eq!(detect_in_chunks(&pcm, 160), [key], "{key} at {factor}");
        }
    }
}
