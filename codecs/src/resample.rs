//! Streaming sample-rate conversion between the session rates (8, 16 and
//! 24 kHz), one direction of one call per [`Resampler`].
//!
//! The filter is `rubato`'s synchronous FFT resampler with both chunk sizes
//! fixed at 20 ms, so a 20 ms frame in gives exactly one 20 ms frame out and
//! the filter's state runs on from frame to frame: no clicks at frame edges.
//! Buffers are made once, when the resampler is; pushing audio allocates
//! nothing.
//!
//! Audio that arrives in pieces of any length (a bot's deltas) waits in the
//! resampler until a whole 20 ms chunk is there. [`Resampler::flush`] gives
//! out what waits when no more is coming (the bot stopped talking, a mark
//! must be placed after exactly its audio): the missing part of the chunk is
//! taken as silence, and the filter starts afresh after it.
//!
//! ```
//! use codecs::resample::{Resampler, Delay};
//!
//! let mut up = Resampler::new(8000, 16000, Delay::Keep);
//! let mut out = Vec::new();
//! up.push(&[0i16; 160], &mut |s| out.extend_from_slice(s));
//! assert_eq!(out.len(), 320); // 20 ms in, 20 ms out
//! ```

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler as _};

/// What to do with the filter's delay (a few milliseconds of silence before
/// the first sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// Every chunk out is a whole 20 ms: the delay stays in the stream (the
    /// output runs that much behind). For a steady stream of frames, such as
    /// a phone's audio to a bot, whose cadence must not change.
    Keep,
    /// The delay is cut from the start, so the output lines up with the
    /// input sample for sample and a flush gives out exactly the audio
    /// pushed. For audio in pieces, such as a bot's deltas.
    Trim,
}

/// One direction of one call's rate conversion.
pub struct Resampler {
    inner: Fft<f32>,
    from: u32,
    to: u32,
    delay_mode: Delay,
    delay: usize,
    /// One input chunk, filled as audio arrives.
    inbuf: Vec<f32>,
    filled: usize,
    outbuf: Vec<f32>,
    out16: Vec<i16>,
    /// Output samples still to cut (the filter's delay, with [`Delay::Trim`]).
    skip: usize,
    /// Input samples taken and output samples given since the filter began.
    in_total: u64,
    out_total: u64,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("delay", &self.delay)
            .field("pending", &self.filled)
            .finish()
    }
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz, both multiples of 50 (so 20 ms
    /// is a whole number of samples at each) and at most 192 kHz.
    ///
    /// # Panics
    /// If a rate is not a positive multiple of 50 or above 192 kHz.
    pub fn new(from: u32, to: u32, delay: Delay) -> Resampler {
        assert!(
            from > 0 && to > 0 && from.is_multiple_of(50) && to.is_multiple_of(50),
            "rates must be positive multiples of 50 Hz: {from} -> {to}"
        );
        assert!(from <= 192_000 && to <= 192_000, "rates above 192 kHz");
        let chunk_in = from as usize / 50;
        // Sub-chunks of 10 ms keep the filter's delay near 5 ms with a
        // passband that reaches past 3.4 kHz at 8 kHz.
        let inner = Fft::<f32>::new_custom(
            from as usize,
            to as usize,
            chunk_in,
            2,
            1,
            rubato::WindowFunction::BlackmanHarris2,
            FixedSync::Both,
        )
        .expect("valid fixed-ratio resampler");
        let (n_in, n_out) = (inner.input_frames_next(), inner.output_frames_next());
        debug_assert_eq!(n_in, chunk_in);
        let delay_frames = inner.output_delay();
        Resampler {
            inner,
            from,
            to,
            delay_mode: delay,
            delay: delay_frames,
            inbuf: vec![0.0; n_in],
            filled: 0,
            outbuf: vec![0.0; n_out],
            out16: vec![0; n_out],
            skip: if delay == Delay::Trim {
                delay_frames
            } else {
                0
            },
            in_total: 0,
            out_total: 0,
        }
    }

    /// The input rate.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// The output rate.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// The filter's delay, in output samples.
    pub fn delay(&self) -> usize {
        self.delay
    }

    /// Input samples waiting for the rest of their chunk.
    pub fn pending(&self) -> usize {
        self.filled
    }

    /// Output samples that a flush would give now: those of the waiting
    /// input, and the end of the last chunk still inside the filter.
    pub fn pending_out(&self) -> usize {
        self.target_total().saturating_sub(self.out_total) as usize
    }

    /// Converts `input`, calling `out` with each piece of output as it is
    /// made (a whole 20 ms chunk, less the delay cut at the start).
    pub fn push(&mut self, mut input: &[i16], out: &mut impl FnMut(&[i16])) {
        while !input.is_empty() {
            let room = self.inbuf.len() - self.filled;
            let n = room.min(input.len());
            for (d, s) in self.inbuf[self.filled..self.filled + n]
                .iter_mut()
                .zip(&input[..n])
            {
                *d = f32::from(*s) / 32768.0;
            }
            self.filled += n;
            self.in_total += n as u64;
            input = &input[n..];
            if self.filled == self.inbuf.len() {
                self.run(None);
                self.filled = 0;
                let emit = self.outbuf.len() - self.skip;
                self.give(emit, out);
            }
        }
    }

    /// Gives out what waits for the rest of its chunk (the rest taken as
    /// silence), then starts the filter afresh. With [`Delay::Trim`] the
    /// output so far then matches the input so far in length exactly.
    pub fn flush(&mut self, out: &mut impl FnMut(&[i16])) {
        if self.in_total == 0 {
            return;
        }
        let target = self.target_total();
        let mut partial = self.filled;
        // The tail may need a second chunk of silence to come out of the
        // filter; a third is never needed (the delay is below a chunk).
        for _ in 0..3 {
            if self.out_total >= target {
                break;
            }
            self.run(Some(partial));
            partial = 0;
            let emit = (self.outbuf.len() - self.skip).min((target - self.out_total) as usize);
            self.give(emit, out);
        }
        self.reset();
    }

    /// Forgets the filter's state and anything waiting (a new stream).
    pub fn reset(&mut self) {
        self.inner.reset();
        self.filled = 0;
        self.in_total = 0;
        self.out_total = 0;
        self.skip = if self.delay_mode == Delay::Trim {
            self.delay
        } else {
            0
        };
    }

    /// Output samples the input so far stands for, since the filter began.
    fn target_total(&self) -> u64 {
        let aligned = (self.in_total * u64::from(self.to)).div_ceil(u64::from(self.from));
        match self.delay_mode {
            Delay::Trim => aligned,
            Delay::Keep => aligned + self.delay as u64,
        }
    }

    fn run(&mut self, partial: Option<usize>) {
        let n_in = self.inbuf.len();
        let n_out = self.outbuf.len();
        let input = SequentialSlice::new(&self.inbuf[..], 1, n_in).expect("mono input chunk");
        let mut output =
            SequentialSlice::new_mut(&mut self.outbuf[..], 1, n_out).expect("mono output chunk");
        let indexing = partial.map(|p| Indexing {
            partial_len: Some(p),
            ..Indexing::default()
        });
        self.inner
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .expect("buffers sized by the resampler");
    }

    /// Hands out `emit` samples of the last chunk, after the part still to
    /// cut.
    fn give(&mut self, emit: usize, out: &mut impl FnMut(&[i16])) {
        let start = self.skip;
        self.skip = 0;
        if emit == 0 {
            return;
        }
        for (d, s) in self.out16[..emit]
            .iter_mut()
            .zip(&self.outbuf[start..start + emit])
        {
            *d = (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        }
        self.out_total += emit as u64;
        out(&self.out16[..emit]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A speech-like test signal at `rate`: a 140 Hz voice with harmonics up
    /// to 3.2 kHz whose level rises and falls like syllables.
    fn speechlike(rate: u32, secs: f64) -> Vec<i16> {
        let n = (f64::from(rate) * secs) as usize;
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                let envelope = 0.55 + 0.45 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
                let mut v = 0.0;
                let mut h = 1.0;
                while 140.0 * h < 3200.0 {
                    v += (2.0 * std::f64::consts::PI * 140.0 * h * t + h).sin() / h;
                    h += 1.0;
                }
                (v * envelope * 6000.0) as i16
            })
            .collect()
    }

    fn snr_db(reference: &[i16], got: &[i16]) -> f64 {
        let (mut sig, mut noise) = (0.0f64, 0.0f64);
        for (a, b) in reference.iter().zip(got) {
            sig += f64::from(*a).powi(2);
            noise += (f64::from(*a) - f64::from(*b)).powi(2);
        }
        10.0 * (sig / noise.max(1e-9)).log10()
    }

    fn convert(r: &mut Resampler, input: &[i16], piece: usize) -> Vec<i16> {
        let mut out = Vec::new();
        for p in input.chunks(piece) {
            r.push(p, &mut |s| out.extend_from_slice(s));
        }
        r.flush(&mut |s| out.extend_from_slice(s));
        out
    }

    #[test]
    fn round_trips_up_and_down_keep_speech_above_60_db_snr() {
        for wide in [16000, 24000] {
            let original = speechlike(8000, 2.0);
            let mut up = Resampler::new(8000, wide, Delay::Trim);
            let mut down = Resampler::new(wide, 8000, Delay::Trim);
            let widened = convert(&mut up, &original, 160);
            assert_eq!(widened.len(), original.len() * wide as usize / 8000);
            let back = convert(&mut down, &widened, wide as usize / 50);
            assert_eq!(back.len(), original.len());
            // The edges of the whole clip ring a little; judge the body.
            let body = 400..original.len() - 400;
            let snr = snr_db(&original[body.clone()], &back[body]);
            assert!(snr > 60.0, "8 -> {wide} -> 8 kHz: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn pieces_of_any_length_give_the_same_stream_as_whole_frames() {
        let original = speechlike(24000, 0.5);
        let whole = convert(
            &mut Resampler::new(24000, 8000, Delay::Trim),
            &original,
            480,
        );
        for piece in [1, 7, 333, 481, 2000] {
            let pieces = convert(
                &mut Resampler::new(24000, 8000, Delay::Trim),
                &original,
                piece,
            );
            assert_eq!(pieces, whole, "pieces of {piece} samples");
        }
    }

    #[test]
    fn no_discontinuity_at_frame_edges() {
        // A steady 1 kHz sine, frame by frame: the largest step between
        // neighbouring samples at a frame edge is no larger than inside a
        // frame (a click would be a jump far above the sine's slope).
        for (from, to) in [(8000, 16000), (8000, 24000), (16000, 8000), (24000, 8000)] {
            let n = from as usize; // one second
            let sine: Vec<i16> = (0..n)
                .map(|i| {
                    let t = i as f64 / f64::from(from);
                    (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
                })
                .collect();
            let mut r = Resampler::new(from, to, Delay::Keep);
            let mut frames: Vec<Vec<i16>> = Vec::new();
            for f in sine.chunks(from as usize / 50) {
                r.push(f, &mut |s| frames.push(s.to_vec()));
            }
            assert!(frames.iter().all(|f| f.len() == to as usize / 50));
            let flat: Vec<i16> = frames.concat();
            let steady = &flat[to as usize / 10..];
            let max_step = steady
                .windows(2)
                .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
                .max()
                .unwrap();
            let slope = 8000.0 * 2.0 * std::f64::consts::PI * 1000.0 / f64::from(to);
            assert!(
                f64::from(max_step) < slope * 1.1,
                "{from} -> {to}: a step of {max_step} against the sine's {slope:.0}"
            );
        }
    }

    #[test]
    fn keep_gives_whole_frames_and_flush_gives_exactly_what_was_pushed() {
        let mut up = Resampler::new(8000, 16000, Delay::Keep);
        let mut sizes = Vec::new();
        for _ in 0..5 {
            up.push(&[100; 160], &mut |s| sizes.push(s.len()));
        }
        assert_eq!(sizes, vec![320; 5]);
        assert!(up.delay() > 0 && up.delay() < 320);

        let mut down = Resampler::new(16000, 8000, Delay::Trim);
        let mut got = 0;
        down.push(&[1000; 100], &mut |s| got += s.len());
        assert_eq!((got, down.pending(), down.pending_out()), (0, 100, 50));
        down.flush(&mut |s| got += s.len());
        assert_eq!((got, down.pending()), (50, 0));
        down.push(&[1000; 321], &mut |s| got += s.len());
        down.flush(&mut |s| got += s.len());
        assert_eq!(got, 50 + 161);
    }
}
