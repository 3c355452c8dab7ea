//! What the phone side, the sending clock and the bot share about each call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use crate::stats::{Bitmap, SendRing};

/// The caller number of call `index`; the bot reads the index back from
/// `start.from`.
pub fn caller_number(index: u32) -> String {
    format!("+1999{index:07}")
}

/// The call index in a caller number written by [`caller_number`].
pub fn caller_index(from: &str) -> Option<u32> {
    let digits = from.trim_start_matches('+').strip_prefix("1999")?;
    (digits.len() == 7).then(|| digits.parse().ok()).flatten()
}

/// One call's shared state.
pub struct Call {
    /// Its index (part of every frame id).
    pub index: u32,
    /// The call's RTP socket.
    pub socket: Arc<tokio::net::UdpSocket>,
    /// Where the bridge wants our RTP (from its SDP answer); a soak places
    /// call after call on the same slot, each with its own.
    pub remote: RwLock<Option<SocketAddr>>,
    /// The clock sends this call's frames while set.
    pub sending: AtomicBool,
    /// Counter of the next frame to send.
    pub next_frame: AtomicU32,
    /// Counter of the current call's first frame (it carries the marker bit).
    pub first_frame: AtomicU32,
    /// When the phone sent each frame.
    pub phone_sent: SendRing,
    /// When the bot echoed each frame.
    pub bot_sent: SendRing,
    /// Frames the phone sent without a socket error.
    pub phone_sent_ok: Bitmap,
    /// Frames whose id reached the bot.
    pub bot_got: Bitmap,
    /// Frames the bot echoed.
    pub bot_echoed: Bitmap,
    /// Echoed frames whose id reached the phone.
    pub phone_got: Bitmap,
    /// What the bot saw of this call.
    pub bot: Mutex<BotTally>,
    /// The caller talks for this many frames of each cycle...
    pub talk_frames: u32,
    /// ...then pauses for this many (quiet frames without an id).
    pub pause_frames: u32,
    /// Latency is kept for one frame in this many (1: every frame; a soak
    /// keeps fewer so an hour's samples stay small).
    pub latency_every: u32,
}

impl Call {
    /// A call with room for `frames` frames.
    pub fn new(
        index: u32,
        socket: Arc<tokio::net::UdpSocket>,
        frames: u32,
        (talk_frames, pause_frames): (u32, u32),
    ) -> Call {
        Call {
            index,
            socket,
            remote: RwLock::new(None),
            sending: AtomicBool::new(false),
            next_frame: AtomicU32::new(0),
            first_frame: AtomicU32::new(0),
            phone_sent: SendRing::default(),
            bot_sent: SendRing::default(),
            phone_sent_ok: Bitmap::new(frames),
            bot_got: Bitmap::new(frames),
            bot_echoed: Bitmap::new(frames),
            phone_got: Bitmap::new(frames),
            bot: Mutex::new(BotTally::default()),
            talk_frames,
            pause_frames,
            latency_every: 1,
        }
    }

    /// Whether frame `counter`'s latency is kept.
    pub fn keeps_latency(&self, counter: u32) -> bool {
        counter.is_multiple_of(self.latency_every.max(1))
    }

    /// Where the bridge wants this slot's RTP now.
    pub fn remote(&self) -> Option<SocketAddr> {
        *self.remote.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether frame `counter` is speech (carries an id) rather than a pause.
    pub fn speaks(&self, counter: u32) -> bool {
        self.pause_frames == 0
            || counter % (self.talk_frames + self.pause_frames) < self.talk_frames
    }

    /// The bot's tally, even if a session task panicked holding it.
    pub fn bot(&self) -> std::sync::MutexGuard<'_, BotTally> {
        self.bot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the bot saw of one call, summed over its sessions.
#[derive(Debug, Default, Clone)]
pub struct BotTally {
    /// WebSocket sessions for the call.
    pub sessions: u32,
    /// `start` events.
    pub starts: u32,
    /// `stop` events.
    pub stops: u32,
    /// `media` events.
    pub media: u64,
    /// `media` events without a frame id (silence before the first frame, or
    /// concealment the id did not survive).
    pub no_id: u64,
    /// Frame ids seen again (the bridge concealed a loss by repeating a frame).
    pub duplicates: u64,
    /// Frame ids of another call.
    pub misrouted: u64,
    /// `response.audio.delta` messages sent.
    pub deltas: u64,
    /// `error` events (the bridge refused one of our messages).
    pub error_events: u64,
    /// The first few of them.
    pub errors: Vec<String>,
    /// Events that did not parse.
    pub bad_events: Vec<String>,
    /// Phone → bot latency: (frame counter, microseconds).
    pub latency: Vec<(u32, u64)>,
}

impl BotTally {
    /// Adds another session's tally.
    pub fn merge(&mut self, o: BotTally) {
        self.sessions += o.sessions;
        self.starts += o.starts;
        self.stops += o.stops;
        self.media += o.media;
        self.no_id += o.no_id;
        self.duplicates += o.duplicates;
        self.misrouted += o.misrouted;
        self.deltas += o.deltas;
        self.error_events += o.error_events;
        if self.errors.len() < 5 {
            self.errors.extend(o.errors);
        }
        self.bad_events.extend(o.bad_events);
        self.latency.extend(o.latency);
    }
}

/// State shared by the bot server and the run: the time origin of every
/// timestamp, and the calls once the run has made them.
pub struct Shared {
    /// Time origin of every microsecond timestamp.
    pub epoch: Instant,
    /// The run's calls, by index.
    pub calls: OnceLock<Vec<Arc<Call>>>,
    /// Bot sessions open now.
    pub active_sessions: AtomicUsize,
    /// Connections whose WebSocket handshake failed.
    pub handshake_failures: AtomicU64,
    /// Sessions that could not be tied to a call.
    pub unmatched: Mutex<BotTally>,
}

impl Shared {
    /// A fresh state whose epoch is now.
    pub fn new() -> Shared {
        Shared {
            epoch: Instant::now(),
            calls: OnceLock::new(),
            active_sessions: AtomicUsize::new(0),
            handshake_failures: AtomicU64::new(0),
            unmatched: Mutex::new(BotTally::default()),
        }
    }

    /// Microseconds since the epoch.
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Call `index`, if the run has it.
    pub fn call(&self, index: u32) -> Option<Arc<Call>> {
        self.calls.get()?.get(index as usize).cloned()
    }

    /// Bot sessions open now.
    pub fn active(&self) -> usize {
        self.active_sessions.load(Ordering::Relaxed)
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_numbers_carry_the_index() {
        assert_eq!(caller_number(42), "+19990000042");
        assert_eq!(caller_index(&caller_number(16383)), Some(16383));
        assert_eq!(caller_index("19990000042"), Some(42));
        assert_eq!(caller_index("+15550001000"), None);
    }
}
