//! Lock-free bookkeeping shared between the sending clock, the RTP receivers and
//! the bot: when each frame left, which frames arrived; and percentiles.

use std::sync::atomic::{AtomicU64, Ordering};

/// Slots in a [`SendRing`]: 20 s of frames; a frame later than that has no
/// latency figure (it still counts as received).
const RING_SLOTS: usize = 1024;
const MICROS_BITS: u32 = 40;
const MICROS_MASK: u64 = (1 << MICROS_BITS) - 1;

/// When each recent frame of one call was sent, in microseconds since the run's
/// epoch, indexed by frame counter. Each slot holds the counter too, so a stale
/// slot is never mistaken for the frame asked about.
pub struct SendRing {
    slots: Box<[AtomicU64]>,
}

impl Default for SendRing {
    fn default() -> Self {
        SendRing {
            slots: (0..RING_SLOTS).map(|_| AtomicU64::new(u64::MAX)).collect(),
        }
    }
}

impl SendRing {
    /// Notes that frame `counter` was sent at `micros`.
    pub fn put(&self, counter: u32, micros: u64) {
        let v = ((counter as u64) << MICROS_BITS) | (micros & MICROS_MASK);
        self.slots[counter as usize % RING_SLOTS].store(v, Ordering::Release);
    }

    /// When frame `counter` was sent, if it still is in the ring.
    pub fn get(&self, counter: u32) -> Option<u64> {
        let v = self.slots[counter as usize % RING_SLOTS].load(Ordering::Acquire);
        (v != u64::MAX && (v >> MICROS_BITS) == counter as u64).then_some(v & MICROS_MASK)
    }
}

/// A fixed-size set of frame counters.
pub struct Bitmap {
    words: Box<[AtomicU64]>,
}

impl Bitmap {
    /// Room for counters `0..bits`; larger ones are ignored.
    pub fn new(bits: u32) -> Bitmap {
        Bitmap {
            words: (0..(bits as usize).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Adds `i`; true if it was not there yet.
    pub fn insert(&self, i: u32) -> bool {
        let (w, b) = (i as usize / 64, i % 64);
        match self.words.get(w) {
            Some(word) => word.fetch_or(1 << b, Ordering::Relaxed) & (1 << b) == 0,
            None => false,
        }
    }

    /// Whether `i` is in the set.
    pub fn contains(&self, i: u32) -> bool {
        let (w, b) = (i as usize / 64, i % 64);
        self.words
            .get(w)
            .is_some_and(|word| word.load(Ordering::Relaxed) & (1 << b) != 0)
    }

    /// How many counters of `range` are in the set.
    pub fn count(&self, range: std::ops::RangeInclusive<u32>) -> u64 {
        range.filter(|i| self.contains(*i)).count() as u64
    }

    /// How many counters of `range` are in both sets.
    pub fn count_both(&self, other: &Bitmap, range: std::ops::RangeInclusive<u32>) -> u64 {
        range
            .filter(|i| self.contains(*i) && other.contains(*i))
            .count() as u64
    }
}

/// Rounds to 0.01.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Nearest-rank percentile `q` (0..=1) of sorted values.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// p50, p99 and max of microsecond samples, in milliseconds rounded to 0.01.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    /// How many samples.
    pub samples: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl Spread {
    /// The spread of `micros` (sorted in place); `None` when empty.
    pub fn of(micros: &mut [u64]) -> Option<Spread> {
        micros.sort_unstable();
        let ms = |v: u64| round2(v as f64 / 1000.0);
        Some(Spread {
            samples: micros.len() as u64,
            p50_ms: ms(percentile(micros, 0.50)?),
            p99_ms: ms(percentile(micros, 0.99)?),
            max_ms: ms(*micros.last()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_recent_frames_only() {
        let r = SendRing::default();
        r.put(5, 1234);
        assert_eq!(r.get(5), Some(1234));
        assert_eq!(r.get(6), None);
        r.put(5 + RING_SLOTS as u32, 99);
        assert_eq!(r.get(5), None);
        assert_eq!(r.get(5 + RING_SLOTS as u32), Some(99));
    }

    #[test]
    fn bitmap_counts() {
        let b = Bitmap::new(100);
        assert!(b.insert(3));
        assert!(!b.insert(3));
        assert!(b.insert(64));
        assert!(!b.insert(500));
        assert_eq!(b.count(0..=99), 2);
        assert_eq!(b.count(4..=99), 1);
        let c = Bitmap::new(100);
        c.insert(64);
        assert_eq!(b.count_both(&c, 0..=99), 1);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        let s = Spread::of(&mut v).unwrap();
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (50.0, 99.0, 100.0));
        assert!(Spread::of(&mut []).is_none());
    }
}
