//! The playout queue: bot audio waiting to be played to the phone, with marks.
//!
//! Sans-I/O: the caller feeds deltas, marks and clears, and pulls one 20 ms frame
//! per clock tick. Positions are counted in samples since the call began, so a
//! mark is "reached" exactly when the sample before it has been handed out.

use std::collections::VecDeque;

use codecs::pcm::{Frame, FRAME_SAMPLES};

/// Why a delta was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    /// Samples the queue could still take.
    pub room: usize,
}

/// Bot audio waiting to be played, and the marks placed between it.
#[derive(Debug)]
pub struct Playout {
    samples: VecDeque<i16>,
    /// (position in samples, name): echoed once `played >= position`.
    marks: VecDeque<(u64, String)>,
    enqueued: u64,
    played: u64,
    max_samples: usize,
}

impl Playout {
    /// A queue that holds at most `max_samples` samples (60 s at 8 kHz is 480,000).
    pub fn new(max_samples: usize) -> Self {
        Playout {
            samples: VecDeque::new(),
            marks: VecDeque::new(),
            enqueued: 0,
            played: 0,
            max_samples,
        }
    }

    /// Appends little-endian PCM16 bytes. All or nothing: a delta that does not fit
    /// is refused whole and the queue is left as it was.
    pub fn push_le_bytes(&mut self, bytes: &[u8]) -> Result<(), QueueFull> {
        let n = bytes.len() / 2;
        let room = self.max_samples.saturating_sub(self.samples.len());
        if n > room {
            return Err(QueueFull { room });
        }
        self.samples.extend(
            bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
        self.enqueued += n as u64;
        Ok(())
    }

    /// Places a mark after everything queued so far.
    pub fn push_mark(&mut self, name: String) {
        self.marks.push_back((self.enqueued, name));
    }

    /// Fills `out` with the next 20 ms of bot audio (silence where the queue runs
    /// dry) and returns how many samples came from the queue.
    pub fn next_frame(&mut self, out: &mut Frame) -> usize {
        let n = self.samples.len().min(FRAME_SAMPLES);
        let (front, back) = self.samples.as_slices();
        let split = front.len().min(n);
        out[..split].copy_from_slice(&front[..split]);
        out[split..n].copy_from_slice(&back[..n - split]);
        out[n..].fill(0);
        self.samples.drain(..n);
        self.played += n as u64;
        n
    }

    /// The next mark whose audio has all been played, if any.
    pub fn pop_reached_mark(&mut self) -> Option<String> {
        match self.marks.front() {
            Some((pos, _)) if *pos <= self.played => self.marks.pop_front().map(|(_, n)| n),
            _ => None,
        }
    }

    /// Empties the queue; the pending marks are returned in order, to be echoed
    /// before the `clear` event.
    pub fn clear(&mut self) -> impl Iterator<Item = String> + '_ {
        let dropped = self.samples.len() as u64;
        self.samples.clear();
        self.enqueued -= dropped;
        self.marks.drain(..).map(|(_, name)| name)
    }

    /// Samples queued since the call began (played, waiting, not cleared).
    pub fn enqueued_total(&self) -> u64 {
        self.enqueued
    }

    /// Samples played since the call began.
    pub fn played_total(&self) -> u64 {
        self.played
    }

    /// Samples waiting to be played.
    pub fn queued_samples(&self) -> usize {
        self.samples.len()
    }

    /// True when no audio and no mark is waiting.
    pub fn is_idle(&self) -> bool {
        self.samples.is_empty() && self.marks.is_empty()
    }

    /// Gives back memory after a long burst, keeping a small working set.
    pub fn shrink(&mut self) {
        if self.samples.is_empty() && self.samples.capacity() > 8 * FRAME_SAMPLES {
            self.samples.shrink_to(4 * FRAME_SAMPLES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn plays_in_order_and_fills_silence() {
        let mut q = Playout::new(1000);
        let audio: Vec<i16> = (1..=200).collect();
        q.push_le_bytes(&bytes(&audio)).unwrap();
        let mut f = [0i16; FRAME_SAMPLES];
        assert_eq!(q.next_frame(&mut f), 160);
        assert_eq!(&f[..], &audio[..160]);
        assert_eq!(q.next_frame(&mut f), 40);
        assert_eq!(&f[..40], &audio[160..]);
        assert!(f[40..].iter().all(|&s| s == 0));
        assert_eq!(q.next_frame(&mut f), 0);
    }

    /// Pushes and pulls in sizes that make the queue's ring wrap, so frames are
    /// cut across its two halves; every sample comes out once, in order.
    #[test]
    fn frames_stay_in_order_when_the_queue_wraps() {
        let mut q = Playout::new(100_000);
        let (mut pushed, mut pulled) = (0u64, 0u64);
        let mut out = [0i16; FRAME_SAMPLES];
        for round in 0..400 {
            let chunk = [97u64, 160, 333, 15, 240][round % 5];
            let bytes: Vec<u8> = (pushed..pushed + chunk)
                .flat_map(|i| (i as i16).to_le_bytes())
                .collect();
            q.push_le_bytes(&bytes).unwrap();
            pushed += chunk;
            let n = q.next_frame(&mut out);
            for &s in &out[..n] {
                assert_eq!(s, pulled as i16, "round {round}");
                pulled += 1;
            }
            assert!(out[n..].iter().all(|&s| s == 0), "round {round}");
        }
        loop {
            let n = q.next_frame(&mut out);
            if n == 0 {
                break;
            }
            for &s in &out[..n] {
                assert_eq!(s, pulled as i16);
                pulled += 1;
            }
        }
        assert_eq!((pulled, q.played_total()), (pushed, pushed));
    }

    #[test]
    fn mark_reached_only_after_its_audio() {
        let mut q = Playout::new(1000);
        q.push_le_bytes(&bytes(&[1; 300])).unwrap();
        q.push_mark("a".into());
        let mut f = [0i16; FRAME_SAMPLES];
        assert_eq!(q.pop_reached_mark(), None);
        q.next_frame(&mut f);
        assert_eq!(q.pop_reached_mark(), None, "140 samples still queued");
        q.next_frame(&mut f);
        assert_eq!(q.pop_reached_mark().as_deref(), Some("a"));
    }

    #[test]
    fn mark_on_empty_queue_is_reached_at_once() {
        let mut q = Playout::new(1000);
        q.push_mark("now".into());
        assert_eq!(q.pop_reached_mark().as_deref(), Some("now"));
    }

    #[test]
    fn overflow_refused_whole_and_nothing_lost() {
        let mut q = Playout::new(320);
        q.push_le_bytes(&bytes(&[7; 300])).unwrap();
        assert_eq!(
            q.push_le_bytes(&bytes(&[8; 21])),
            Err(QueueFull { room: 20 })
        );
        assert_eq!(q.queued_samples(), 300);
        q.push_le_bytes(&bytes(&[8; 20])).unwrap();
        assert_eq!(q.queued_samples(), 320);
    }

    #[test]
    fn clear_returns_marks_in_order_and_keeps_positions_consistent() {
        let mut q = Playout::new(10_000);
        q.push_le_bytes(&bytes(&[1; 500])).unwrap();
        q.push_mark("m1".into());
        q.push_le_bytes(&bytes(&[1; 500])).unwrap();
        q.push_mark("m2".into());
        let mut f = [0i16; FRAME_SAMPLES];
        q.next_frame(&mut f);
        let marks: Vec<String> = q.clear().collect();
        assert_eq!(marks, vec!["m1", "m2"]);
        assert_eq!(q.next_frame(&mut f), 0);
        // A mark placed after the clear is reached at once: nothing is queued.
        q.push_mark("m3".into());
        assert_eq!(q.pop_reached_mark().as_deref(), Some("m3"));
        q.push_le_bytes(&bytes(&[2; 10])).unwrap();
        q.push_mark("m4".into());
        assert_eq!(q.pop_reached_mark(), None);
        q.next_frame(&mut f);
        assert_eq!(q.pop_reached_mark().as_deref(), Some("m4"));
    }
}
