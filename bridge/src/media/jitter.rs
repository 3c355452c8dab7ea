//! Adaptive playout (jitter) buffer for one received RTP stream of G.711 audio.
//!
//! Packets go in as they arrive ([`JitterBuffer::push`], with the receiver's clock
//! as an argument); 20 ms PCM frames come out on the call's clock
//! ([`JitterBuffer::pull`]), one per tick, always: when there is nothing to play the
//! buffer conceals a few frames by repeating the last one more and more quietly,
//! then plays silence, so the consumer's media clock never stalls.
//!
//! How it works:
//! - Decoded samples sit in a fixed ring indexed by RTP timestamp, with a bit per
//!   sample saying whether it arrived. Reordering, duplicates and packets of any
//!   size (10, 20, 30 ms) need no special cases, and nothing allocates after
//!   [`JitterBuffer::new`].
//! - The play point advances one frame per pull. The delay is the audio buffered
//!   ahead of it. The first packet starts playing after `initial_delay_ms`.
//! - Each packet's relative transit time (arrival minus timestamp) is tracked. Its
//!   mean deviation is the interarrival jitter of RFC 3550 §6.4.1 (reported in
//!   [`JitterStats::jitter`]); its recent peak above the fastest packet of the
//!   last few seconds is how late packets come, and sets the target delay
//!   (plus 10 ms, in whole frames, between `min_delay_ms` and `max_delay_ms`).
//!   The peak decays with a half-life of about two seconds, so after a calm
//!   spell the target comes back down. (Three times the RFC 3550 figure would
//!   do for random jitter, but it overshoots on plain reordering.)
//! - The delay changes only by whole frames and only at safe moments: on an
//!   underrun the play point waits (the delay grows by what the network took);
//!   when the lowest delay over 200 ms is two frames or more above the target,
//!   one frame is dropped, preferably a quiet one; two frames or more below, one
//!   frame is inserted (the band keeps it from hunting); when the
//!   sender resumes after a silence (DTX, hold, a gap), playing restarts at the
//!   target delay.
//! - Sequence numbers (RFC 3550 Appendix A.1 style, with a 64-packet window)
//!   detect duplicates and restarts; a timestamp or sequence jump is believed only
//!   when a second packet confirms it, or at once after [`JitterBuffer::resync`]
//!   (new SSRC). A confirmed jump re-bases the new timeline to continue after what
//!   is buffered.
//! - Packets that arrive after their audio was due are dropped and counted.
//! - Eager playing ([`JitterBuffer::set_eager`], [`JitterBuffer::pull_ready`]) is
//!   for a consumer that takes audio as it comes, not on a clock (a bot): a frame
//!   comes out as soon as it is complete, and the target delay is only how long
//!   a missing frame is waited for before it is concealed. Once nothing has
//!   come for that long and two frames more, the sender has paused: the frames
//!   it owes come out at once and then each on time, so the consumer's clock
//!   does not stay behind for the rest of the pause. While the sender says it
//!   is alive without audio ([`JitterBuffer::sender_alive`]: RFC 4733 key
//!   events replace the audio packets while a key is held), nothing is waited
//!   for: silence comes out on time.

use codecs::g711::Law;
use codecs::pcm::{Frame, FRAME_SAMPLES};

/// Samples per frame, as a timestamp distance.
const FRAME: u32 = FRAME_SAMPLES as u32;
const SAMPLES_PER_MS: u32 = 8;
const FRAME_MS: i64 = 20;
/// Gains (out of 256) of the concealment frames after a loss; then silence.
const CONCEAL_GAINS: [i32; 3] = [230, 154, 77];
/// Pulls over which the lowest delay is watched before adjusting it by a frame.
const ADAPT_WINDOW: u32 = 10;
/// Pulls to wait for a quiet frame before dropping or inserting anyway.
const MAX_WAIT_FOR_QUIET: u32 = 25;
/// Mean absolute sample value below which a frame counts as quiet.
const QUIET_MEAN_ABS: u32 = 300;
/// Sequence numbers remembered behind the newest, for duplicate detection.
const SEQ_WINDOW: u32 = 64;
/// A sequence number this far behind the newest is a restart, not a late packet.
const MAX_MISORDER: i32 = 100;
/// A sequence number this far ahead of the newest is a restart, not a loss.
const MAX_DROPOUT: i32 = 3000;
/// Added to the peak lateness for the target delay.
const DELAY_MARGIN: f64 = 10.0 * SAMPLES_PER_MS as f64;
/// Per-packet decay of the peak lateness (half-life ~100 packets, 2 s).
const PEAK_DECAY: f64 = 0.993;
/// Packets per block of the windowed minimum transit (two blocks are kept).
const TRANSIT_BLOCK: u32 = 100;
/// How far a second out-of-range packet may be from the first to confirm a jump.
const JUMP_CONFIRM_RANGE: u32 = 8000;
/// Largest delay a configuration may ask for.
const MAX_CONFIG_DELAY_MS: u32 = 2000;
/// How long after [`JitterBuffer::sender_alive`] missing audio is not waited for
/// (key events come every 20 to 50 ms while a key is held).
const ALIVE_MS: u64 = 100;

/// Delays of the playout buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// The delay never adapts below this (default 40 ms).
    pub min_delay_ms: u32,
    /// The delay never adapts above this (default 200 ms; at most 2000).
    pub max_delay_ms: u32,
    /// Delay before the first packet plays (default 60 ms).
    pub initial_delay_ms: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_delay_ms: 40,
            max_delay_ms: 200,
            initial_delay_ms: 60,
        }
    }
}

/// What [`JitterBuffer::pull`] put in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pulled {
    /// Received audio (possibly with a few missing samples as zeros).
    Audio,
    /// A stand-in for a missing frame, made from the last audio.
    Concealed,
    /// Silence: nothing received yet, or concealment ran out.
    Silence,
}

/// Counters and the current state of the delay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JitterStats {
    /// Packets given to [`JitterBuffer::push`].
    pub received: u64,
    /// Frames of received audio played.
    pub played: u64,
    /// Frames concealed (losses, underruns, inserted frames).
    pub concealed: u64,
    /// Frames of silence played.
    pub silence: u64,
    /// Packets that arrived after their audio was due, dropped.
    pub late: u64,
    /// Packets received twice, dropped.
    pub duplicate: u64,
    /// Packets dropped as unbelievable: empty, or a jump not (yet) confirmed.
    pub discarded: u64,
    /// Times the stream restarted (new SSRC, confirmed sequence or timestamp jump).
    pub resyncs: u64,
    /// Frames dropped to shrink the delay.
    pub frames_dropped: u64,
    /// Frames inserted to grow the delay.
    pub frames_inserted: u64,
    /// Audio buffered ahead of the play point after the last pull, in ms.
    pub current_delay_ms: u32,
    /// The delay the buffer is steering to, in ms.
    pub target_delay_ms: u32,
    /// Interarrival jitter estimate in RTP timestamp units, as RFC 3550
    /// receiver reports carry it.
    pub jitter: u32,
}

/// A pending change of the delay by one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adjust {
    None,
    Drop { waited: u32 },
    Insert { waited: u32 },
}

/// How a packet's sequence number relates to what came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeqClass {
    /// Newer than any before.
    Newer,
    /// Older than the newest, not seen before: reordered.
    Older,
    Duplicate,
    /// Too far behind to place.
    TooOld,
    /// A confirmed jump, or the first packet after a resync.
    Restart,
    /// A jump waiting for confirmation.
    Suspect,
}

/// The presence bits of `len` samples from `ts` in a ring of `ring_mask + 1`
/// samples, a word at a time: `(word index, mask of the bits)`. The ring's
/// length is a multiple of 64, so a run of bits never crosses its end.
fn present_words(ring_mask: u32, ts: u32, len: u32) -> impl Iterator<Item = (usize, u64)> {
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= len {
            return None;
        }
        let idx = (ts.wrapping_add(i) & ring_mask) as usize;
        let bit = (idx % 64) as u32;
        let take = (64 - bit).min(len - i);
        i += take;
        let mask = if take == 64 {
            u64::MAX
        } else {
            ((1u64 << take) - 1) << bit
        };
        Some((idx / 64, mask))
    })
}

/// Signed distance from `b` to `a` on the wrapping timestamp circle.
fn ts_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

fn is_quiet(frame: &[i16]) -> bool {
    let sum: u32 = frame.iter().map(|s| s.unsigned_abs() as u32).sum();
    sum < QUIET_MEAN_ABS * frame.len() as u32
}

/// An adaptive playout buffer for one RTP stream. See the [module docs](self).
///
/// ```
/// use bridge::jitter::{JitterBuffer, JitterConfig, Pulled};
/// use codecs::{g711::Law, pcm};
///
/// let mut jb = JitterBuffer::new(JitterConfig::default());
/// let mut out = pcm::SILENCE;
/// for tick in 0..10u16 {
///     let now = u64::from(tick) * 20;
///     jb.push(tick, u32::from(tick) * 160, &[0xFF; 160], Law::Ulaw, now);
///     let pulled = jb.pull(now, &mut out);
///     // 60 ms of initial delay: three frames of silence, then the audio.
///     assert_eq!(pulled == Pulled::Audio, tick >= 3);
/// }
/// ```
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    min: u32,
    max: u32,
    initial: u32,
    target: u32,

    samples: Box<[i16]>,
    present: Box<[u64]>,
    /// Ring length minus one (the length is a power of two).
    mask: u32,

    started: bool,
    /// Timestamp of the next sample to play.
    play_ts: u32,
    /// End (exclusive) of the newest audio received.
    end_ts: u32,
    /// Added to incoming timestamps; changes when a jump is re-based.
    ts_shift: u32,

    max_seq: u16,
    /// Bit `n` set: sequence `max_seq - n` was received.
    seq_window: u64,
    bad_seq: Option<u16>,
    resync_next: bool,
    /// Expected raw timestamp of the packet that would confirm a timestamp jump.
    bad_ts: Option<u32>,

    /// Previous packet's arrival (ms) and raw timestamp, for the jitter estimate.
    last_arrival: Option<(u64, u32)>,
    /// RFC 3550 interarrival jitter, in samples.
    jitter: f64,
    /// Relative transit of the latest packet (samples, from an arbitrary origin).
    transit: i64,
    /// Lowest transit in the current and the previous block of packets.
    transit_min: [i64; 2],
    transit_count: u32,
    /// Recent peak of transit above the lowest: how late packets come, in samples.
    peak_late: f64,

    underrun_since: Option<u64>,
    /// Eager playing ([`JitterBuffer::set_eager`]).
    eager: bool,
    /// `(ms, ts)`: audio at `ts` arrived (or was due) at `ms`; eager playing
    /// measures lateness from it.
    anchor: Option<(u64, u32)>,
    /// Eager: the sender paused (nothing came for the target delay and two
    /// frames more), so frames are given when due, without waiting.
    paused: bool,
    /// Eager: the sender said it is alive without audio until this time.
    alive_until: Option<u64>,
    last_frame: Frame,
    last_quiet: bool,
    conceal_left: usize,
    window_min: i32,
    window_pulls: u32,
    adjust: Adjust,

    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer with the given delays (clamped so that `min <= initial <= max`).
    pub fn new(cfg: JitterConfig) -> Self {
        let max_ms = cfg.max_delay_ms.clamp(20, MAX_CONFIG_DELAY_MS);
        let min_ms = cfg.min_delay_ms.min(max_ms);
        let initial_ms = cfg.initial_delay_ms.clamp(min_ms, max_ms);
        let (min, max, initial) = (
            min_ms * SAMPLES_PER_MS,
            max_ms * SAMPLES_PER_MS,
            initial_ms * SAMPLES_PER_MS,
        );
        // Room for the largest delay, a long packet and a burst on top.
        let len = (max + 12 * FRAME).next_power_of_two();
        let mut jb = JitterBuffer {
            min,
            max,
            initial,
            target: min,
            samples: vec![0; len as usize].into_boxed_slice(),
            present: vec![0; (len as usize).div_ceil(64)].into_boxed_slice(),
            mask: len - 1,
            started: false,
            play_ts: 0,
            end_ts: 0,
            ts_shift: 0,
            max_seq: 0,
            seq_window: 0,
            bad_seq: None,
            resync_next: false,
            bad_ts: None,
            last_arrival: None,
            jitter: 0.0,
            transit: 0,
            transit_min: [0; 2],
            transit_count: 0,
            peak_late: 0.0,
            underrun_since: None,
            eager: false,
            anchor: None,
            paused: false,
            alive_until: None,
            last_frame: [0; FRAME_SAMPLES],
            last_quiet: true,
            conceal_left: 0,
            window_min: i32::MAX,
            window_pulls: 0,
            adjust: Adjust::None,
            stats: JitterStats::default(),
        };
        jb.update_target();
        jb
    }

    fn capacity(&self) -> u32 {
        self.mask + 1
    }

    /// Longest packet accepted; longer ones are cut.
    fn max_packet(&self) -> u32 {
        self.capacity() / 4
    }

    /// Adds one received packet.
    ///
    /// `arrival_ms` is the receiver's clock when the packet arrived. The payload
    /// is decoded with `law` at once. Reordered packets are placed by timestamp;
    /// duplicates, late packets and unconfirmed jumps are dropped and counted.
    pub fn push(&mut self, seq: u16, rtp_ts: u32, payload: &[u8], law: Law, arrival_ms: u64) {
        self.stats.received += 1;
        if payload.is_empty() {
            self.stats.discarded += 1;
            return;
        }
        let len = (payload.len() as u32).min(self.max_packet());
        let payload = &payload[..len as usize];

        if !self.started {
            self.start(seq, rtp_ts, arrival_ms);
            self.store(rtp_ts, payload, law);
            return;
        }

        let class = self.classify_seq(seq);
        let restart = match class {
            SeqClass::Duplicate => {
                self.stats.duplicate += 1;
                return;
            }
            SeqClass::TooOld => {
                self.stats.late += 1;
                return;
            }
            SeqClass::Suspect => {
                self.stats.discarded += 1;
                return;
            }
            SeqClass::Restart => {
                self.last_arrival = None;
                true
            }
            SeqClass::Newer | SeqClass::Older => false,
        };
        let newest = matches!(class, SeqClass::Newer | SeqClass::Restart);

        let ts = rtp_ts.wrapping_add(self.ts_shift);
        // Widened: a hostile timestamp may sit anywhere on the circle.
        let off = i64::from(ts_diff(ts, self.play_ts));
        let cap = i64::from(self.capacity());
        let out_of_range = off < -cap || off + i64::from(len) > cap;
        let empty = ts_diff(self.end_ts, self.play_ts) <= 0;

        if newest && out_of_range {
            let confirmed = self.bad_ts.is_some_and(|expected| {
                rtp_ts
                    .wrapping_sub(expected)
                    .wrapping_add(JUMP_CONFIRM_RANGE)
                    <= 2 * JUMP_CONFIRM_RANGE
            });
            if empty {
                self.reanchor(ts);
            } else if restart || confirmed {
                self.rebase(ts);
            } else {
                self.bad_ts = Some(rtp_ts.wrapping_add(len));
                self.stats.discarded += 1;
                return;
            }
            // A new timeline: transit is measured afresh.
            self.stats.resyncs += 1;
            self.last_arrival = None;
        } else if newest
            && empty
            && (off > i64::from(self.target) || (off > 0 && self.quiet_sender(arrival_ms)))
        {
            // The sender resumes after a silence: play at the target delay
            // rather than after the whole gap (eager: at once; the gap before
            // it is part of the pause, not a loss to wait for).
            self.reanchor(ts);
        } else if newest && empty && off < 0 && self.eager {
            // Eager playing went on (with silence) past where the sender
            // resumes: its timeline did not count the pause, or this packet
            // was later than the target delay. Nothing is buffered, so
            // restarting here loses nothing.
            self.reanchor(ts);
        }
        if newest {
            self.bad_ts = None;
        }
        // A packet whose timestamp is nowhere near the stream says nothing
        // about the network's timing.
        if newest || !out_of_range {
            self.update_jitter(rtp_ts, arrival_ms);
        }
        let ts = rtp_ts.wrapping_add(self.ts_shift);
        if newest {
            self.anchor = Some((arrival_ms, ts));
            self.paused = false;
        }
        self.store(ts, payload, law);
    }

    /// Eager: the sender has paused, or is holding a key, so a gap before its
    /// next audio is not a loss.
    fn quiet_sender(&self, now_ms: u64) -> bool {
        self.eager && (self.paused || self.alive_until.is_some_and(|t| now_ms < t))
    }

    /// The sender is alive but sends no audio now, at `now_ms`: an RFC 4733 key
    /// event arrived, which replaces the audio packets while the key is held.
    /// Eager playing then gives silence when each frame is due instead of
    /// waiting the target delay for audio that is not coming, so the consumer
    /// gets a steady 20 ms cadence through a key press.
    pub fn sender_alive(&mut self, now_ms: u64) {
        self.alive_until = Some(now_ms + ALIVE_MS);
    }

    /// Switches to eager playing, for a consumer that takes audio as it comes
    /// rather than on a clock (a bot): [`pull_ready`](Self::pull_ready) instead of
    /// [`pull`](Self::pull). Call it before the first packet.
    pub fn set_eager(&mut self) {
        self.eager = true;
    }

    /// Switches from eager playing back to paced playing, for a sender that is
    /// now heard by a consumer on a clock (a caller bridged from a bot to a
    /// person). Paced playing needs a lead to smooth out the network's jitter:
    /// the play point steps back by the initial delay, so the clocked consumer
    /// gets that much silence once, then every frame in turn. Nothing
    /// buffered is lost.
    pub fn set_paced(&mut self) {
        if !self.eager {
            return;
        }
        self.eager = false;
        self.anchor = None;
        self.paused = false;
        self.alive_until = None;
        if self.started {
            self.play_ts = self.play_ts.wrapping_sub(self.initial);
        }
    }

    /// Treats the next packet as the start of a new stream (call when the SSRC
    /// changes): its sequence number and timestamp are believed at once, and it
    /// plays after what is buffered.
    pub fn resync(&mut self) {
        self.resync_next = true;
        self.last_arrival = None;
        self.bad_seq = None;
        self.bad_ts = None;
    }

    /// The delay a new timeline starts with: none when eager.
    fn lead(&self, delay: u32) -> u32 {
        if self.eager {
            0
        } else {
            delay
        }
    }

    fn start(&mut self, seq: u16, ts: u32, arrival_ms: u64) {
        self.started = true;
        self.ts_shift = 0;
        self.play_ts = ts.wrapping_sub(self.lead(self.initial));
        self.anchor = Some((arrival_ms, ts));
        self.end_ts = self.play_ts;
        self.reset_seq(seq);
        self.last_arrival = Some((arrival_ms, ts));
    }

    fn reset_seq(&mut self, seq: u16) {
        self.max_seq = seq;
        self.seq_window = 1;
        self.bad_seq = None;
    }

    /// Restarts playing so that `ts` plays after the target delay; the buffer
    /// holds nothing worth keeping.
    fn reanchor(&mut self, ts: u32) {
        self.present.fill(0);
        self.play_ts = ts.wrapping_sub(self.lead(self.target));
        self.end_ts = self.play_ts;
        self.underrun_since = None;
    }

    /// Moves a new timeline so that `ts` continues after what is buffered (or
    /// after the target delay if less is buffered).
    fn rebase(&mut self, ts: u32) {
        let after_target = self.play_ts.wrapping_add(self.target);
        let desired = if ts_diff(after_target, self.end_ts) > 0 {
            after_target
        } else {
            self.end_ts
        };
        self.ts_shift = self.ts_shift.wrapping_add(desired.wrapping_sub(ts));
    }

    fn classify_seq(&mut self, seq: u16) -> SeqClass {
        if self.resync_next {
            self.resync_next = false;
            self.reset_seq(seq);
            return SeqClass::Restart;
        }
        let delta = i32::from(seq.wrapping_sub(self.max_seq) as i16);
        if delta > 0 && delta < MAX_DROPOUT {
            let shift = delta as u32;
            self.seq_window = if shift >= SEQ_WINDOW {
                1
            } else {
                (self.seq_window << shift) | 1
            };
            self.max_seq = seq;
            self.bad_seq = None;
            SeqClass::Newer
        } else if delta == 0 {
            SeqClass::Duplicate
        } else if delta < 0 && delta > -MAX_MISORDER {
            let back = delta.unsigned_abs();
            if back >= SEQ_WINDOW {
                return SeqClass::TooOld;
            }
            let bit = 1u64 << back;
            if self.seq_window & bit != 0 {
                SeqClass::Duplicate
            } else {
                self.seq_window |= bit;
                SeqClass::Older
            }
        } else if self.bad_seq == Some(seq) {
            self.reset_seq(seq);
            SeqClass::Restart
        } else {
            self.bad_seq = Some(seq.wrapping_add(1));
            SeqClass::Suspect
        }
    }

    fn update_jitter(&mut self, rtp_ts: u32, arrival_ms: u64) {
        match self.last_arrival {
            Some((prev_ms, prev_ts)) => {
                let arrival = (arrival_ms as i64 - prev_ms as i64) * i64::from(SAMPLES_PER_MS);
                let sent = i64::from(ts_diff(rtp_ts, prev_ts));
                // D(i-1, i) of RFC 3550: the change in relative transit.
                let d = arrival - sent;
                self.jitter += (d.unsigned_abs() as f64 - self.jitter) / 16.0;
                self.transit += d;
            }
            None => {
                // A new timeline: transit is measured afresh.
                self.transit = 0;
                self.transit_min = [0; 2];
                self.transit_count = 0;
            }
        }
        self.last_arrival = Some((arrival_ms, rtp_ts));

        self.transit_min[0] = self.transit_min[0].min(self.transit);
        self.transit_count += 1;
        if self.transit_count >= TRANSIT_BLOCK {
            self.transit_min = [self.transit, self.transit_min[0]];
            self.transit_count = 0;
        }
        let fastest = self.transit_min[0].min(self.transit_min[1]);
        let late = (self.transit - fastest) as f64;
        self.peak_late = late.max(self.peak_late * PEAK_DECAY);
        self.update_target();
    }

    fn update_target(&mut self) {
        let wanted = (self.peak_late + DELAY_MARGIN) as u32;
        self.target = wanted
            .div_ceil(FRAME)
            .saturating_mul(FRAME)
            .clamp(self.min, self.max);
    }

    /// Decodes `payload` into the ring at `ts`, skipping any part already due.
    fn store(&mut self, ts: u32, payload: &[u8], law: Law) {
        let off = i64::from(ts_diff(ts, self.play_ts));
        let len = payload.len() as i64;
        if off + len <= 0 {
            self.stats.late += 1;
            return;
        }
        let skip = (-off).max(0) as usize;
        let room = (i64::from(self.capacity()) - off).clamp(0, len) as usize;
        if room < payload.len() {
            // Further ahead than the ring reaches (the ring is full, or an
            // old-numbered packet has a new timestamp). Keeping the part that
            // fits would end the audio mid-frame and put every later frame
            // across two packets: the whole packet goes.
            self.stats.discarded += 1;
            return;
        }
        // At most two runs: up to the ring's end, then from its start.
        let from = ts.wrapping_add(skip as u32);
        let codes = &payload[skip..room];
        let start = (from & self.mask) as usize;
        let first = (self.samples.len() - start).min(codes.len());
        law.decode_slice(&codes[..first], &mut self.samples[start..start + first]);
        law.decode_slice(&codes[first..], &mut self.samples[..codes.len() - first]);
        for (w, mask) in present_words(self.mask, from, (room - skip) as u32) {
            self.present[w] |= mask;
        }
        let end = ts.wrapping_add(room as u32);
        if ts_diff(end, self.end_ts) > 0 {
            self.end_ts = end;
        }
    }

    /// How many samples of the frame at `ts` have arrived.
    fn frame_found(&self, ts: u32) -> usize {
        present_words(self.mask, ts, FRAME)
            .map(|(w, mask)| (self.present[w] & mask).count_ones() as usize)
            .sum()
    }

    /// Copies the frame at `ts` into `out` (zeros where nothing arrived), clears
    /// it from the ring, and returns how many samples had arrived.
    fn take_frame(&mut self, ts: u32, out: &mut Frame) -> usize {
        if self.frame_found(ts) == FRAME_SAMPLES {
            // The usual case: copy whole runs, clear whole words.
            let start = (ts & self.mask) as usize;
            let first = (self.samples.len() - start).min(FRAME_SAMPLES);
            out[..first].copy_from_slice(&self.samples[start..start + first]);
            out[first..].copy_from_slice(&self.samples[..FRAME_SAMPLES - first]);
            for (w, mask) in present_words(self.mask, ts, FRAME) {
                self.present[w] &= !mask;
            }
            return FRAME_SAMPLES;
        }
        let mut found = 0;
        for (i, o) in out.iter_mut().enumerate() {
            let idx = (ts.wrapping_add(i as u32) & self.mask) as usize;
            let bit = 1u64 << (idx % 64);
            let word = &mut self.present[idx / 64];
            if *word & bit != 0 {
                *word &= !bit;
                *o = self.samples[idx];
                found += 1;
            } else {
                *o = 0;
            }
        }
        found
    }

    fn frame_state(&self, ts: u32) -> (usize, bool) {
        let mut found = 0;
        let mut sum = 0u32;
        for i in 0..FRAME {
            let idx = (ts.wrapping_add(i) & self.mask) as usize;
            if self.present[idx / 64] & (1 << (idx % 64)) != 0 {
                found += 1;
                sum += self.samples[idx].unsigned_abs() as u32;
            }
        }
        (found, sum < QUIET_MEAN_ABS * FRAME)
    }

    /// Distance from `from` to the first received sample at or after it, within
    /// `limit` samples.
    fn next_present(&self, from: u32, limit: u32) -> Option<u32> {
        (0..limit.min(self.capacity())).find(|&i| {
            let idx = (from.wrapping_add(i) & self.mask) as usize;
            self.present[idx / 64] & (1 << (idx % 64)) != 0
        })
    }

    /// Fills `out` with the next 20 ms to play. Call once per tick: it always
    /// fills the frame, with audio, concealment or silence.
    ///
    /// `now_ms` is the same clock as the `arrival_ms` of [`push`](Self::push); it
    /// bounds how long an underrun may hold the play point.
    pub fn pull(&mut self, now_ms: u64, out: &mut Frame) -> Pulled {
        if !self.started {
            out.fill(0);
            self.stats.silence += 1;
            return Pulled::Silence;
        }
        let level = ts_diff(self.end_ts, self.play_ts);
        if level > FRAME as i32 {
            self.observe_delay(level - FRAME as i32);
        }
        self.maybe_drop();
        let result = if let Some(inserted) = self.maybe_insert(out) {
            inserted
        } else {
            self.play(now_ms, out)
        };
        self.stats.current_delay_ms =
            ts_diff(self.end_ts, self.play_ts).max(0) as u32 / SAMPLES_PER_MS;
        self.stats.target_delay_ms = self.target / SAMPLES_PER_MS;
        result
    }

    fn play(&mut self, now_ms: u64, out: &mut Frame) -> Pulled {
        let level = ts_diff(self.end_ts, self.play_ts);
        if self.take_frame(self.play_ts, out) > 0 {
            self.play_ts = self.play_ts.wrapping_add(FRAME);
            self.last_frame = *out;
            self.last_quiet = is_quiet(out);
            self.conceal_left = CONCEAL_GAINS.len();
            self.underrun_since = None;
            self.stats.played += 1;
            return Pulled::Audio;
        }
        if level > FRAME as i32 {
            // A hole with audio after it: a lost or late packet. If the next audio
            // is further away than the target delay, the sender skipped time;
            // close the gap down to the target.
            self.underrun_since = None;
            let next = self.play_ts.wrapping_add(FRAME);
            let mut advance = FRAME;
            if let Some(gap) = self.next_present(next, level as u32) {
                if gap > self.target {
                    advance += gap - self.target;
                }
            }
            self.play_ts = self.play_ts.wrapping_add(advance);
        } else {
            // Nothing buffered: the network is late or the sender paused. Wait
            // (letting the delay grow) as long as the delay stays within bounds.
            self.window_min = i32::MAX;
            self.window_pulls = 0;
            let since = *self.underrun_since.get_or_insert(now_ms);
            let budget_ms = u64::from((self.max - self.target) / SAMPLES_PER_MS);
            if now_ms.saturating_sub(since) >= budget_ms {
                self.play_ts = self.play_ts.wrapping_add(FRAME);
            }
        }
        self.conceal(out)
    }

    /// Eager playing: the next 20 ms as soon as it can be given. A complete
    /// frame comes out at once, so an in-order stream passes with no added
    /// delay. A missing frame is waited for until it is the target delay later
    /// than its neighbours' arrival said it would be, then concealed. Before
    /// the first packet, silence comes out once per 20 ms of `now_ms`.
    /// `None`: nothing to give yet. Call it until it gives `None` after each
    /// packet and on every tick of the call's clock.
    pub fn pull_ready(&mut self, now_ms: u64, out: &mut Frame) -> Option<Pulled> {
        let (anchor_ms, anchor_ts) = *self.anchor.get_or_insert((now_ms, self.play_ts));
        let due_ms = anchor_ms as i64
            + i64::from(ts_diff(self.play_ts, anchor_ts)) / i64::from(SAMPLES_PER_MS);
        let now = now_ms as i64;
        if !self.started {
            if now < due_ms {
                return None;
            }
            self.play_ts = self.play_ts.wrapping_add(FRAME);
            out.fill(0);
            self.stats.silence += 1;
            return Some(Pulled::Silence);
        }
        let level = ts_diff(self.end_ts, self.play_ts);
        let found = self.frame_found(self.play_ts);
        let complete = found == FRAME_SAMPLES || (found > 0 && level > FRAME as i32);
        let keying = self.alive_until.is_some_and(|t| now_ms < t);
        let target_ms = i64::from(self.target / SAMPLES_PER_MS);
        let wait = if self.quiet_sender(now_ms) {
            0
        } else {
            target_ms
        };
        let overdue = now >= due_ms + wait;
        let result = if complete || (found > 0 && overdue) {
            self.take_frame(self.play_ts, out);
            self.last_frame = *out;
            self.conceal_left = CONCEAL_GAINS.len();
            self.stats.played += 1;
            Pulled::Audio
        } else if overdue && keying && level <= 0 {
            // A key replaces the audio: silence, on time.
            self.conceal_left = 0;
            self.conceal(out)
        } else if overdue {
            // Lost, later than the target delay, or the sender paused. Nothing
            // for the target delay and two frames more, with nothing buffered
            // after it: paused, so what is owed comes out now and then on time.
            if level <= 0 && now - anchor_ms as i64 >= target_ms + 2 * FRAME_MS {
                self.paused = true;
            }
            self.conceal(out)
        } else {
            return None;
        };
        self.play_ts = self.play_ts.wrapping_add(FRAME);
        self.stats.current_delay_ms =
            ts_diff(self.end_ts, self.play_ts).max(0) as u32 / SAMPLES_PER_MS;
        self.stats.target_delay_ms = self.target / SAMPLES_PER_MS;
        Some(result)
    }

    fn conceal(&mut self, out: &mut Frame) -> Pulled {
        let step = CONCEAL_GAINS.len() - self.conceal_left;
        match CONCEAL_GAINS.get(step) {
            Some(&gain) if self.conceal_left > 0 => {
                self.conceal_left -= 1;
                for (o, &s) in out.iter_mut().zip(self.last_frame.iter()) {
                    *o = (i32::from(s) * gain / 256) as i16;
                }
                self.stats.concealed += 1;
                Pulled::Concealed
            }
            _ => {
                out.fill(0);
                self.stats.silence += 1;
                Pulled::Silence
            }
        }
    }

    /// Watches the delay over a window of pulls and plans a one-frame change.
    fn observe_delay(&mut self, delay: i32) {
        self.window_min = self.window_min.min(delay);
        self.window_pulls += 1;
        let over_max = delay > self.max as i32;
        if self.window_pulls < ADAPT_WINDOW && !over_max {
            return;
        }
        let lowest = if over_max { delay } else { self.window_min };
        self.window_min = i32::MAX;
        self.window_pulls = 0;
        if over_max {
            // No waiting for a quiet frame, and no pending insert: the bound
            // matters more.
            self.adjust = Adjust::Drop {
                waited: MAX_WAIT_FOR_QUIET,
            };
            return;
        }
        if self.adjust != Adjust::None {
            return;
        }
        let (target, frame) = (self.target as i32, FRAME as i32);
        if lowest >= target + 2 * frame {
            self.adjust = Adjust::Drop { waited: 0 };
        } else if lowest + 2 * frame <= target {
            self.adjust = Adjust::Insert { waited: 0 };
        }
    }

    fn maybe_drop(&mut self) {
        let Adjust::Drop { waited } = self.adjust else {
            return;
        };
        let (found, quiet) = self.frame_state(self.play_ts);
        let next = self.play_ts.wrapping_add(FRAME);
        // Only drop a frame that has audio after it, or the drop makes a hole.
        if found == 0 || self.frame_state(next).0 == 0 {
            return;
        }
        if quiet || waited >= MAX_WAIT_FOR_QUIET {
            let mut discard = [0; FRAME_SAMPLES];
            self.take_frame(self.play_ts, &mut discard);
            self.play_ts = next;
            self.stats.frames_dropped += 1;
            self.adjust = Adjust::None;
        } else {
            self.adjust = Adjust::Drop { waited: waited + 1 };
        }
    }

    fn maybe_insert(&mut self, out: &mut Frame) -> Option<Pulled> {
        let Adjust::Insert { waited } = self.adjust else {
            return None;
        };
        if !(self.last_quiet || waited >= MAX_WAIT_FOR_QUIET) {
            self.adjust = Adjust::Insert { waited: waited + 1 };
            return None;
        }
        self.adjust = Adjust::None;
        self.stats.frames_inserted += 1;
        self.stats.concealed += 1;
        for (o, &s) in out.iter_mut().zip(self.last_frame.iter()) {
            *o = (i32::from(s) * CONCEAL_GAINS[0] / 256) as i16;
        }
        Some(Pulled::Concealed)
    }

    /// Counters and delays.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            target_delay_ms: self.target / SAMPLES_PER_MS,
            jitter: self.jitter.round() as u32,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recognisable frame for packet `n` (< 256): every sample is A-law code
    /// `n`, and A-law decodes all 256 codes to distinct values.
    fn frame_for(n: u32) -> [u8; FRAME_SAMPLES] {
        [n as u8; FRAME_SAMPLES]
    }

    fn decoded(n: u32) -> i16 {
        Law::Alaw.decode(n as u8)
    }

    /// A sender of 20 ms packets starting at `seq0`/`ts0`.
    struct Sender {
        seq0: u16,
        ts0: u32,
    }

    impl Sender {
        fn push(&self, jb: &mut JitterBuffer, n: u32, arrival_ms: u64) {
            jb.push(
                self.seq0.wrapping_add(n as u16),
                self.ts0.wrapping_add(n * FRAME),
                &frame_for(n),
                Law::Alaw,
                arrival_ms,
            );
        }
    }

    /// Pulls once and says which packet's audio came out (None for concealment
    /// or silence).
    fn pull(jb: &mut JitterBuffer, now: u64) -> (Pulled, Option<u32>) {
        let mut out = [1i16; FRAME_SAMPLES];
        let p = jb.pull(now, &mut out);
        let which = (p == Pulled::Audio).then(|| {
            (0..256)
                .find(|&n| out.iter().all(|&s| s == decoded(n)))
                .expect("frame is one packet's audio")
        });
        (p, which)
    }

    const TICK: u64 = 20;

    /// Eager: pulls until nothing is ready; returns which packets came out
    /// (`None` for concealment or silence).
    fn drain_ready(jb: &mut JitterBuffer, now: u64) -> Vec<Option<u32>> {
        let mut got = Vec::new();
        let mut out = [1i16; FRAME_SAMPLES];
        while let Some(p) = jb.pull_ready(now, &mut out) {
            got.push((p == Pulled::Audio).then(|| {
                (0..256)
                    .find(|&n| out.iter().all(|&s| s == decoded(n)))
                    .expect("frame is one packet's audio")
            }));
        }
        got
    }

    fn eager() -> JitterBuffer {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.set_eager();
        jb
    }

    #[test]
    fn eager_gives_each_packet_the_moment_it_arrives() {
        let mut jb = eager();
        let tx = Sender {
            seq0: 65530,
            ts0: u32::MAX - 500,
        };
        for n in 0..100 {
            let now = 1000 + u64::from(n) * TICK;
            tx.push(&mut jb, n, now);
            assert_eq!(drain_ready(&mut jb, now), vec![Some(n)], "packet {n}");
            // Nothing more comes out before the next packet is due.
            assert_eq!(drain_ready(&mut jb, now + TICK - 1), vec![]);
        }
        assert_eq!(jb.stats().played, 100);
        assert_eq!(jb.stats().current_delay_ms, 0);
    }

    #[test]
    fn eager_waits_for_a_reordered_packet_and_gives_up_on_a_lost_one() {
        let mut jb = eager();
        let tx = Sender { seq0: 7, ts0: 9000 };
        tx.push(&mut jb, 0, 0);
        assert_eq!(drain_ready(&mut jb, 0), vec![Some(0)]);
        // 2 before 1: 2 waits for 1, then both come out in order.
        tx.push(&mut jb, 2, 40);
        assert_eq!(drain_ready(&mut jb, 40), vec![]);
        tx.push(&mut jb, 1, 45);
        assert_eq!(drain_ready(&mut jb, 45), vec![Some(1), Some(2)]);
        // 3 is lost: 4 waits until 3 is the target delay (40 ms) overdue.
        tx.push(&mut jb, 4, 80);
        assert_eq!(drain_ready(&mut jb, 80), vec![]);
        assert_eq!(drain_ready(&mut jb, 99), vec![]);
        assert_eq!(drain_ready(&mut jb, 100), vec![None, Some(4)]);
        // 3 turning up now is too late.
        tx.push(&mut jb, 3, 101);
        assert_eq!(drain_ready(&mut jb, 101), vec![]);
        assert_eq!(jb.stats().late, 1);
        assert_eq!(jb.stats().concealed, 1);
    }

    #[test]
    fn eager_gives_silence_on_time_when_nothing_comes() {
        let mut jb = eager();
        // Before any packet: a frame of silence per 20 ms.
        assert_eq!(drain_ready(&mut jb, 0), vec![None]);
        assert_eq!(drain_ready(&mut jb, 19), vec![]);
        assert_eq!(drain_ready(&mut jb, 20), vec![None]);
        assert_eq!(drain_ready(&mut jb, 60), vec![None, None]);
        let tx = Sender { seq0: 1, ts0: 0 };
        tx.push(&mut jb, 0, 70);
        assert_eq!(drain_ready(&mut jb, 70), vec![Some(0)]);
        // The sender pauses. Frame 1 (due at 90) is waited for until the
        // target delay (40 ms) is over, frame 2 too; then the pause is
        // believed and the frames owed come out at once.
        assert_eq!(drain_ready(&mut jb, 129), vec![]);
        assert_eq!(drain_ready(&mut jb, 130), vec![None]);
        assert_eq!(drain_ready(&mut jb, 149), vec![]);
        assert_eq!(drain_ready(&mut jb, 150), vec![None, None, None]);
        // From then on, silence exactly when each frame is due, not 40 ms later.
        for k in 5..20u64 {
            let due = 70 + k * 20;
            assert_eq!(drain_ready(&mut jb, due - 1), vec![], "frame {k} early");
            assert_eq!(drain_ready(&mut jb, due), vec![None], "frame {k} on time");
        }
        // The sender comes back: its audio passes at once again.
        let tx = Sender { seq0: 1, ts0: 0 };
        tx.push(&mut jb, 20, 470);
        assert_eq!(drain_ready(&mut jb, 470), vec![Some(20)]);
    }

    #[test]
    fn eager_gives_silence_on_time_while_keys_replace_the_audio() {
        let mut jb = eager();
        let tx = Sender { seq0: 1, ts0: 0 };
        for n in 0..5 {
            let now = u64::from(n) * TICK;
            tx.push(&mut jb, n, now);
            assert_eq!(drain_ready(&mut jb, now), vec![Some(n)]);
        }
        // A key is held from 100 ms to 300 ms: only its events arrive, every
        // 20 ms. Each frame comes out when due, as silence.
        for k in 5..15u64 {
            let now = k * TICK;
            jb.sender_alive(now);
            assert_eq!(drain_ready(&mut jb, now), vec![None], "frame {k} on time");
            assert_eq!(drain_ready(&mut jb, now + 19), vec![]);
        }
        // The audio after the key continues the timeline and passes at once.
        for n in 15..20 {
            let now = u64::from(n) * TICK;
            tx.push(&mut jb, n, now);
            assert_eq!(drain_ready(&mut jb, now), vec![Some(n)], "packet {n}");
        }
        assert_eq!(jb.stats().late, 0);
        assert_eq!(jb.stats().concealed, 0);
    }

    #[test]
    fn presence_words_cover_exactly_the_samples() {
        let ring_mask = 4096 - 1;
        for ts in [0u32, 1, 63, 64, 4000, 4095, u32::MAX - 70, 12345] {
            for len in [1u32, 63, 64, 65, 160, 1024] {
                let mut bits = vec![0u64; 64];
                for (w, mask) in present_words(ring_mask, ts, len) {
                    assert_eq!(bits[w] & mask, 0, "overlap at ts {ts} len {len}");
                    bits[w] |= mask;
                }
                let set: u32 = bits.iter().map(|b| b.count_ones()).sum();
                assert_eq!(set, len);
                for i in 0..len {
                    let idx = (ts.wrapping_add(i) & ring_mask) as usize;
                    assert!(bits[idx / 64] & (1 << (idx % 64)) != 0);
                }
            }
        }
    }

    #[test]
    fn eager_under_bursts_gives_whole_packets_in_order() {
        // A starved machine: packets come in bursts up to 300 ms late, and the
        // consumer looks at odd times. Whatever comes out is whole packets,
        // in order, and every packet that is not given up on comes out.
        let mut seed = 0x1234_5678u64;
        let mut rnd = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut jb = eager();
        let tx = Sender { seq0: 500, ts0: 77 };
        let mut out = [0i16; FRAME_SAMPLES];
        let mut last = None;
        let mut next = 0u32;
        let mut now = 0u64;
        let mut given = 0;
        while next < 250 {
            now += rnd(40);
            // Everything sent up to `now - lag` has arrived.
            let lag = if rnd(10) == 0 { rnd(300) } else { rnd(5) };
            while next < 250 && u64::from(next) * TICK + lag <= now {
                tx.push(&mut jb, next, now);
                next += 1;
            }
            while let Some(p) = jb.pull_ready(now, &mut out) {
                if p == Pulled::Audio {
                    let n = (0..256)
                        .find(|&n| out.iter().all(|&s| s == decoded(n)))
                        .expect("a whole packet");
                    assert!(last.is_none_or(|l| n > l), "{n} after {last:?}");
                    last = Some(n);
                    given += 1;
                }
            }
        }
        let st = jb.stats();
        assert_eq!(given + st.late, 250, "{st:?}");
    }

    #[test]
    fn a_burst_larger_than_the_ring_never_splits_frames() {
        // A task that ran a second late reads 1.2 s of packets at once: what
        // does not fit is dropped whole, and every frame that comes out, then
        // and after, is one whole packet.
        for eager_mode in [true, false] {
            let mut jb = if eager_mode {
                eager()
            } else {
                JitterBuffer::new(JitterConfig::default())
            };
            let tx = Sender { seq0: 10, ts0: 3 };
            let mut out = [0i16; FRAME_SAMPLES];
            tx.push(&mut jb, 0, 0);
            for n in 1..60 {
                tx.push(&mut jb, n, 1200);
            }
            let mut whole = 0;
            for t in 0..200u32 {
                let now = 1200 + u64::from(t) * TICK;
                if t > 0 {
                    tx.push(&mut jb, 60 + t, now);
                }
                let mut check = |p: Pulled, out: &Frame| {
                    if p == Pulled::Audio {
                        assert!(
                            (0..256).any(|n| out.iter().all(|&s| s == decoded(n))),
                            "eager {eager_mode}: a frame across two packets at {now} ms"
                        );
                        whole += 1;
                    }
                };
                if eager_mode {
                    while let Some(p) = jb.pull_ready(now, &mut out) {
                        check(p, &out);
                    }
                } else {
                    let p = jb.pull(now, &mut out);
                    check(p, &out);
                }
            }
            assert!(
                whole > 150,
                "eager {eager_mode}: {whole} frames, {:?}",
                jb.stats()
            );
        }
    }

    #[test]
    fn eager_follows_a_sender_whose_timestamps_skip_the_pause_or_not() {
        for counts_pause in [true, false] {
            let mut jb = eager();
            let tx = Sender { seq0: 100, ts0: 0 };
            for n in 0..10 {
                tx.push(&mut jb, n, u64::from(n) * TICK);
                assert_eq!(drain_ready(&mut jb, u64::from(n) * TICK), vec![Some(n)]);
            }
            // 300 ms of nothing; silence comes out meanwhile.
            for now in 181..480 {
                drain_ready(&mut jb, now);
            }
            let resume = if counts_pause { 25 } else { 10 };
            for k in 0..10 {
                let now = 480 + u64::from(k) * TICK;
                let n = resume + k;
                jb.push(
                    100 + 10 + k as u16,
                    n * FRAME,
                    &frame_for(n),
                    Law::Alaw,
                    now,
                );
                assert_eq!(
                    drain_ready(&mut jb, now).last(),
                    Some(&Some(n)),
                    "counts_pause {counts_pause}, packet {n}"
                );
            }
            assert_eq!(jb.stats().late, 0);
        }
    }

    #[test]
    fn in_order_stream_plays_every_frame_exactly() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let tx = Sender {
            seq0: 1000,
            ts0: 123_456,
        };
        let mut played = Vec::new();
        let mut kinds = Vec::new();
        for n in 0..150u32 {
            let now = u64::from(n) * TICK;
            tx.push(&mut jb, n, now);
            let (p, which) = pull(&mut jb, now + 1);
            kinds.push(p);
            played.extend(which);
        }
        assert_eq!(kinds[..3], [Pulled::Silence; 3], "60 ms initial delay");
        assert!(kinds[3..].iter().all(|&k| k == Pulled::Audio));
        assert_eq!(played, (0..147).collect::<Vec<_>>());
        let s = jb.stats();
        assert_eq!((s.played, s.concealed, s.late, s.duplicate), (147, 0, 0, 0));
        assert_eq!(s.current_delay_ms, 60);
        assert_eq!(s.target_delay_ms, 40);
        assert_eq!((s.frames_dropped, s.frames_inserted), (0, 0));
    }

    #[test]
    fn pull_before_any_packet_is_silence() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = [7i16; FRAME_SAMPLES];
        for t in 0..5 {
            assert_eq!(jb.pull(t * TICK, &mut out), Pulled::Silence);
            assert_eq!(out, [0; FRAME_SAMPLES]);
        }
    }

    #[test]
    fn reordered_within_the_delay_plays_in_order() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let tx = Sender { seq0: 7, ts0: 0 };
        let mut played = Vec::new();
        for n in 0..60u32 {
            // Pairs arrive swapped: 1, 0, 3, 2, ...
            let sent = n ^ 1;
            let now = u64::from(n) * TICK;
            tx.push(&mut jb, sent, now);
            let (p, which) = pull(&mut jb, now + 1);
            if n >= 4 {
                assert_eq!(p, Pulled::Audio, "tick {n}");
            }
            played.extend(which);
        }
        assert_eq!(played, (0..played.len() as u32).collect::<Vec<_>>());
        assert_eq!(jb.stats().late, 0);
    }

    #[test]
    fn loss_conceals_then_silence_then_continues() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let tx = Sender { seq0: 0, ts0: 0 };
        let mut kinds = Vec::new();
        let mut played = Vec::new();
        for n in 0..60u32 {
            let now = u64::from(n) * TICK;
            if !(10..20).contains(&n) {
                tx.push(&mut jb, n, now);
            }
            let (p, which) = pull(&mut jb, now + 1);
            kinds.push(p);
            played.extend(which);
        }
        let first_gap = kinds
            .iter()
            .skip(3)
            .position(|&k| k != Pulled::Audio)
            .unwrap()
            + 3;
        assert_eq!(kinds[first_gap..first_gap + 3], [Pulled::Concealed; 3]);
        let resumed = kinds[first_gap..]
            .iter()
            .position(|&k| k == Pulled::Audio)
            .unwrap()
            + first_gap;
        assert!(resumed > first_gap + 3);
        assert!(kinds[first_gap + 3..resumed]
            .iter()
            .all(|&k| k == Pulled::Silence));
        assert!(kinds[resumed..].iter().all(|&k| k == Pulled::Audio));
        // Everything before the loss and everything after it, in order.
        let expected: Vec<u32> = (0..10).chain(20..20 + (played.len() as u32 - 10)).collect();
        assert_eq!(played, expected);
        assert_eq!(kinds.len(), 60, "one frame per pull, always");
    }

    #[test]
    fn concealment_repeats_the_last_frame_quieter() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let tx = Sender { seq0: 0, ts0: 0 };
        for n in 0..5u32 {
            tx.push(&mut jb, n, u64::from(n) * TICK);
        }
        let mut out = [0i16; FRAME_SAMPLES];
        let mut levels = Vec::new();
        let mut heard_audio = false;
        for t in 0..16 {
            let p = jb.pull(100 + t * TICK, &mut out);
            heard_audio |= p == Pulled::Audio;
            if heard_audio && p != Pulled::Audio {
                levels.push((p, out[0].unsigned_abs()));
            }
        }
        let last = decoded(4).unsigned_abs();
        assert_eq!(levels[0].0, Pulled::Concealed);
        assert!(levels[0].1 < last && levels[0].1 > last / 2);
        assert!(levels[1].1 < levels[0].1 && levels[2].1 < levels[1].1);
        assert_eq!(levels[3], (Pulled::Silence, 0));
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let tx = Sender { seq0: 500, ts0: 9 };
        let mut played = Vec::new();
        for n in 0..40u32 {
            let now = u64::from(n) * TICK;
            tx.push(&mut jb, n, now);
            tx.push(&mut jb, n, now);
            if n > 2 {
                tx.push(&mut jb, n - 2, now); // an old duplicate
            }
            played.extend(pull(&mut jb, now + 1).1);
        }
        assert_eq!(played, (0..37).collect::<Vec<_>>());
        let s = jb.stats();
        assert_eq!(s.duplicate, 40 + 37);
        assert_eq!(s.concealed, 0);
    }

    #[test]
    fn sequence_and_timestamp_wrap_around() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let tx = Sender {
            seq0: 65530,
            ts0: u32::MAX - 5 * FRAME + 1,
        };
        let mut played = Vec::new();
        for n in 0..30u32 {
            let now = u64::from(n) * TICK;
            tx.push(&mut jb, n, now);
            played.extend(pull(&mut jb, now + 1).1);
        }
        assert_eq!(played, (0..27).collect::<Vec<_>>());
        let s = jb.stats();
        assert_eq!((s.late, s.duplicate, s.discarded, s.resyncs), (0, 0, 0, 0));
    }

    #[test]
    fn late_packets_are_dropped_and_counted() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let tx = Sender { seq0: 0, ts0: 0 };
        let mut kinds = Vec::new();
        let mut played = Vec::new();
        for n in 0..40u32 {
            let now = u64::from(n) * TICK;
            match n {
                10 => {}                         // held back ...
                20 => tx.push(&mut jb, 10, now), // ... and sent long after it was due
                _ => {}
            }
            if n != 10 {
                tx.push(&mut jb, n, now);
            }
            let (p, which) = pull(&mut jb, now + 1);
            kinds.push(p);
            played.extend(which);
        }
        assert_eq!(jb.stats().late, 1);
        assert_eq!(kinds.iter().filter(|&&k| k == Pulled::Concealed).count(), 1);
        assert!(!played.contains(&10));
        assert_eq!(played.len(), 36);
    }

    /// Arrival times for packets 0..n sent every 20 ms, delayed by a
    /// pseudo-random 0..=spread ms, in arrival order.
    fn jittery_arrivals(first: u32, n: u32, spread: u64, seed: &mut u64) -> Vec<(u64, u32)> {
        let mut v: Vec<(u64, u32)> = (first..first + n)
            .map(|k| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (u64::from(k) * TICK + (*seed >> 33) % (spread + 1), k)
            })
            .collect();
        v.sort();
        v
    }

    /// Runs pulls every 20 ms (at +10 ms) up to `until`, pushing the arrivals
    /// that are due; returns the largest delay seen.
    fn run(
        jb: &mut JitterBuffer,
        tx: &Sender,
        arrivals: &[(u64, u32)],
        next: &mut usize,
        (from, until): (u64, u64),
    ) -> u32 {
        let mut worst = 0;
        let mut out = [0; FRAME_SAMPLES];
        let mut t = from;
        while t < until {
            let now = t + 10;
            while let Some(&(at, k)) = arrivals.get(*next).filter(|a| a.0 <= now) {
                tx.push(jb, k, at);
                *next += 1;
            }
            jb.pull(now, &mut out);
            let s = jb.stats();
            assert!(s.target_delay_ms <= 200);
            worst = worst.max(s.current_delay_ms);
            t += TICK;
        }
        worst
    }

    #[test]
    fn jitter_grows_the_delay_within_max_and_calm_shrinks_it() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let tx = Sender { seq0: 0, ts0: 0 };
        let mut seed = 42;
        // 2 s calm, 6 s of up to 150 ms jitter, 15 s calm.
        let mut arrivals = jittery_arrivals(0, 100, 0, &mut seed);
        arrivals.extend(jittery_arrivals(100, 300, 150, &mut seed));
        arrivals.extend(jittery_arrivals(400, 750, 0, &mut seed));

        let mut next = 0;
        run(&mut jb, &tx, &arrivals, &mut next, (0, 2000));
        let calm = jb.stats();
        assert_eq!(calm.current_delay_ms, 60);

        let worst = run(&mut jb, &tx, &arrivals, &mut next, (2000, 8000));
        let stormy = jb.stats();
        assert!(stormy.target_delay_ms >= 100, "{stormy:?}");
        assert!(worst <= 200 + 20, "delay {worst} ms stays within max");
        assert!(stormy.current_delay_ms >= 100, "{stormy:?}");
        assert!(stormy.jitter > calm.jitter);

        run(&mut jb, &tx, &arrivals, &mut next, (8000, 23_000));
        let after = jb.stats();
        assert_eq!(after.target_delay_ms, 40, "{after:?}");
        assert!(after.current_delay_ms < 80, "{after:?}");
        assert!(after.frames_dropped > 0);
        // Late packets in the storm are counted, and everything else played.
        assert_eq!(
            after.played + after.late + after.frames_dropped + jb.frames_ahead(),
            1150,
            "{after:?}"
        );
        assert_eq!((after.duplicate, after.discarded), (0, 0));
    }

    impl JitterBuffer {
        fn frames_ahead(&self) -> u64 {
            (ts_diff(self.end_ts, self.play_ts).max(0) as u32 / FRAME) as u64
        }
    }

    #[test]
    fn a_pause_in_the_network_grows_the_delay_by_waiting() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let tx = Sender { seq0: 0, ts0: 0 };
        // Packets 50..55 are held up for 100 ms, then arrive in a burst.
        let arrivals: Vec<(u64, u32)> = (0..200u32)
            .map(|k| {
                let t = u64::from(k) * TICK;
                (if (50..55).contains(&k) { 1100 } else { t }, k)
            })
            .collect::<Vec<_>>();
        let mut sorted = arrivals.clone();
        sorted.sort();
        run(&mut jb, &tx, &sorted, &mut 0, (0, 4000));
        let s = jb.stats();
        assert_eq!(s.late, 0, "nothing lost: the play point waited");
        assert!(s.concealed >= 1);
        assert!(s.played >= 190, "{s:?}");
    }

    #[test]
    fn pull_never_stalls_whatever_arrives() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = [0; FRAME_SAMPLES];
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 32) as u32
        };
        for t in 0..3000u64 {
            for _ in 0..rnd() % 3 {
                let len = (rnd() % 400) as usize;
                jb.push(rnd() as u16, rnd(), &vec![0x55; len], Law::Alaw, t * TICK);
            }
            // Each pull returns, fills the frame, and the delay stays bounded.
            out.fill(1234);
            jb.pull(t * TICK, &mut out);
            assert!(out.iter().all(|&s| s != 1234));
            assert!(jb.stats().current_delay_ms <= 600);
        }
    }

    #[test]
    fn hostile_timestamps_at_the_ends_of_the_circle() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = [0; FRAME_SAMPLES];
        jb.push(0, 0, &[0xD5; 160], Law::Alaw, 0);
        let mut seq = 1;
        for ts in [
            i32::MAX as u32,
            i32::MIN as u32,
            u32::MAX,
            (i32::MAX as u32).wrapping_sub(100),
            (i32::MIN as u32).wrapping_add(100),
            1,
        ] {
            for _ in 0..2 {
                jb.push(seq, ts, &[0xD5; 1500], Law::Alaw, u64::from(seq) * 20);
                jb.push(
                    seq.wrapping_sub(3),
                    ts,
                    &[0xD5; 160],
                    Law::Alaw,
                    u64::from(seq) * 20,
                );
                seq += 1;
                jb.pull(u64::from(seq) * 20, &mut out);
            }
        }
        assert!(jb.stats().current_delay_ms <= 600);
    }

    #[test]
    fn new_ssrc_resync_continues_after_the_buffered_audio() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let a = Sender {
            seq0: 100,
            ts0: 5000,
        };
        let b = Sender {
            seq0: 40000,
            ts0: 3_000_000_000,
        };
        let mut played = Vec::new();
        for n in 0..60u32 {
            let now = u64::from(n) * TICK;
            if n < 30 {
                a.push(&mut jb, n, now);
            } else {
                if n == 30 {
                    jb.resync();
                }
                // The new source's packets carry numbers from 100 on.
                b.push(&mut jb, n + 70, now);
            }
            played.extend(pull(&mut jb, now + 1).1);
        }
        let expected: Vec<u32> = (0..30)
            .chain(100..100 + (played.len() as u32 - 30))
            .collect();
        assert_eq!(played, expected, "no gap, no loss at the switch");
        assert_eq!(jb.stats().resyncs, 1);
    }

    #[test]
    fn an_unannounced_jump_needs_a_second_packet() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let tx = Sender { seq0: 0, ts0: 0 };
        let jumped = Sender {
            seq0: 30_000,
            ts0: 2_000_000,
        };
        let mut played = Vec::new();
        for n in 0..80u32 {
            let now = u64::from(n) * TICK;
            if n < 30 {
                tx.push(&mut jb, n, now);
            } else if n == 30 {
                // One stray packet from nowhere changes nothing.
                jumped.push(&mut jb, 150, now);
                tx.push(&mut jb, n, now);
            } else if n < 50 {
                tx.push(&mut jb, n, now);
            } else {
                jumped.push(&mut jb, n + 50, now);
            }
            played.extend(pull(&mut jb, now + 1).1);
        }
        let s = jb.stats();
        assert_eq!(s.resyncs, 1);
        assert_eq!(
            s.discarded, 2,
            "the stray packet and the first after the jump"
        );
        assert!(played.starts_with(&(0..50).collect::<Vec<_>>()));
        assert_eq!(
            played[50..],
            (101..101 + played.len() as u32 - 50).collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn a_stray_timestamp_changes_nothing() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut played = Vec::new();
        for n in 0..60u32 {
            let now = u64::from(n) * TICK;
            // Sequence numbers follow on, but packet 20's timestamp is wild.
            let ts = if n == 20 { 0x8000_0000 } else { n * FRAME };
            jb.push(n as u16, ts, &frame_for(n), Law::Alaw, now);
            played.extend(pull(&mut jb, now + 1).1);
        }
        let s = jb.stats();
        assert_eq!((s.discarded, s.resyncs, s.target_delay_ms), (1, 0, 40));
        assert_eq!(s.concealed, 1, "packet 20's frame");
        assert!(!played.contains(&20));
        assert_eq!(played.len(), 56);
    }

    #[test]
    fn silence_suppression_restarts_at_the_target_delay() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let tx = Sender { seq0: 0, ts0: 0 };
        let mut kinds = Vec::new();
        for n in 0..200u32 {
            let now = u64::from(n) * TICK;
            // The sender stops between packets 50 and 150 (DTX), keeping its clock.
            if !(50..150).contains(&n) {
                tx.push(&mut jb, n, now);
            }
            kinds.push(pull(&mut jb, now + 1).0);
        }
        // After the pause, audio resumes within the target delay (40 ms).
        let resumed = kinds[150..]
            .iter()
            .position(|&k| k == Pulled::Audio)
            .unwrap();
        assert!(resumed <= 2, "resumed after {resumed} ticks");
        assert_eq!(jb.stats().current_delay_ms, 40);
    }

    #[test]
    fn longer_packets_play_in_20ms_frames() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = [0; FRAME_SAMPLES];
        let mut kinds = Vec::new();
        // 30 ms packets (240 samples) every 30 ms; pulls every 20 ms.
        let mut next_pkt = 0u32;
        for t in 0..300u64 {
            let now = t * TICK;
            while u64::from(next_pkt) * 30 <= now {
                let payload = [Law::Alaw.encode(1000); 240];
                jb.push(
                    next_pkt as u16,
                    next_pkt * 240,
                    &payload,
                    Law::Alaw,
                    u64::from(next_pkt) * 30,
                );
                next_pkt += 1;
            }
            kinds.push(jb.pull(now + 1, &mut out));
        }
        assert!(kinds[5..].iter().all(|&k| k == Pulled::Audio), "{kinds:?}");
    }

    #[test]
    fn config_is_clamped() {
        let jb = JitterBuffer::new(JitterConfig {
            min_delay_ms: 500,
            max_delay_ms: 100,
            initial_delay_ms: 0,
        });
        assert_eq!(jb.stats().target_delay_ms, 100);
        let jb = JitterBuffer::new(JitterConfig {
            min_delay_ms: 0,
            max_delay_ms: u32::MAX,
            initial_delay_ms: u32::MAX,
        });
        assert!(jb.capacity() >= MAX_CONFIG_DELAY_MS * SAMPLES_PER_MS);
    }
}
