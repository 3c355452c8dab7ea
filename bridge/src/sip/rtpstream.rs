//! One call's RTP media, sans-I/O: datagrams in, 20 ms PCM frames both ways, and
//! datagrams out.
//!
//! The driver owns the UDP socket and the clock. It hands every datagram it
//! receives to [`RtpStream::on_datagram`], and calls [`RtpStream::tick`] every
//! 20 ms with the frame to play to the phone; `tick` fills the frame the phone
//! said (from the [jitter buffer](crate::jitter)) and the packets to send.
//! A driver feeding a bot, which takes audio as it comes, works eagerly instead
//! ([`RtpStream::set_eager`]): it takes the phone's frames with
//! [`RtpStream::next_ready`] after each datagram and each tick, sends on the
//! clock with [`RtpStream::play`], and sends the first frame of a talkspurt at
//! once with [`RtpStream::play_now`].
//!
//! - Symmetric RTP: the first valid packet of ours latches its source as the
//!   address we send to (phones behind NAT send from somewhere other than their
//!   SDP says). After that, packets from anywhere else are ignored and counted.
//! - Anything that is not a valid packet of ours is counted and reported as an
//!   [`RxOutcome`] the driver can log; it never touches the audio.
//! - RFC 4733: keys received are reported once each ([`RxOutcome::Dtmf`]); keys
//!   queued with [`RtpStream::send_dtmf`] replace the audio packets while they
//!   play (100 ms each, 60 ms apart).
//!
//! ```
//! use bridge::{jitter::JitterConfig, rtpstream::{Outbox, RtpStream}, sdp::{Direction, Negotiated}};
//! use codecs::{g711::Law, pcm};
//!
//! let neg = Negotiated {
//!     law: Law::Ulaw,
//!     payload_type: 0,
//!     telephone_event: Some(101),
//!     remote: "192.0.2.10:4000".parse().unwrap(),
//!     ptime_ms: 20,
//!     direction: Direction::SendRecv,
//! };
//! let mut stream = RtpStream::new(neg, 0x1234, 100, 8000, JitterConfig::default());
//! let (mut said, mut out) = (pcm::SILENCE, Outbox::new());
//! stream.tick(0, &pcm::SILENCE, &mut said, &mut out);
//! let (to, packet) = out.iter().next().unwrap();
//! assert_eq!(to, neg.remote);
//! assert_eq!(packet.len(), 12 + 160);
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;

use codecs::g711::Law;
use codecs::pcm::{Frame, FRAME_SAMPLES};
use codecs::rfc4733::{self, EventReceiver, Rfc4733Error, TelephoneEvent};

use crate::jitter::{JitterBuffer, JitterConfig, JitterStats};
use crate::rtp::{self, RtpError, RtpHeader, HEADER_LEN};
use crate::sdp::Negotiated;

const FRAME_TS: u32 = FRAME_SAMPLES as u32;
/// Ticks a sent key lasts (100 ms); the last carries the end packets.
const KEY_TICKS: u16 = 5;
/// Ticks of audio between sent keys (60 ms).
const GAP_TICKS: u16 = 3;
/// Times the end packet of a sent key is sent (RFC 4733 §2.5.1.4).
const END_REPEATS: usize = 3;
/// Volume of sent keys, in -dBm0.
const DTMF_VOLUME: u8 = 10;
/// Keys that may wait to be sent.
const MAX_QUEUED_KEYS: usize = 64;
const FRAME_MS: i64 = 20;
/// How far ahead of real time [`RtpStream::play_now`] may move the stream.
pub const MAX_AHEAD_MS: i64 = 60;
/// A received key with no packets for this long is reported even without its
/// end packet.
const KEY_TIMEOUT_MS: u64 = 500;

/// Why a datagram was not usable.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not a valid RTP packet.
    #[error(transparent)]
    Rtp(#[from] RtpError),
    /// A telephone-event packet with a bad payload.
    #[error(transparent)]
    Event(#[from] Rfc4733Error),
}

/// What a received datagram did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// Audio, into the jitter buffer.
    Audio,
    /// A telephone-event packet that completed no key (progress or a repeat).
    Event,
    /// A key press completed: the key and how long it was held, in ms.
    Dtmf(char, u32),
    /// Not RTP, or a broken payload: ignored.
    Malformed(Malformed),
    /// RTP from somewhere other than the latched source: ignored.
    UnexpectedSource(SocketAddr),
    /// RTP with a payload type we did not negotiate (comfort noise, video...): ignored.
    UnknownPayloadType(u8),
    /// RTCP sent to the RTP port: ignored.
    Rtcp,
}

impl RxOutcome {
    /// True for datagrams that were ignored (worth a rate-limited log line).
    pub fn is_ignored(&self) -> bool {
        !matches!(
            self,
            RxOutcome::Audio | RxOutcome::Event | RxOutcome::Dtmf(..)
        )
    }
}

impl fmt::Display for RxOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RxOutcome::Audio => f.write_str("audio packet"),
            RxOutcome::Event => f.write_str("telephone-event packet"),
            RxOutcome::Dtmf(key, ms) => write!(f, "key {key} pressed for {ms} ms"),
            RxOutcome::Malformed(why) => write!(f, "ignored a malformed datagram: {why}"),
            RxOutcome::UnexpectedSource(from) => {
                write!(
                    f,
                    "ignored RTP from {from}, which is not the call's media source"
                )
            }
            RxOutcome::UnknownPayloadType(pt) => {
                write!(
                    f,
                    "ignored RTP with payload type {pt}, which was not negotiated"
                )
            }
            RxOutcome::Rtcp => f.write_str("ignored RTCP on the RTP port"),
        }
    }
}

/// Counters for one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RtpStats {
    /// Valid packets of ours received (audio and telephone-event).
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Datagrams that were not valid RTP or had a broken event payload.
    pub malformed: u64,
    /// Packets from a source other than the latched one.
    pub unexpected_source: u64,
    /// Packets with a payload type we did not negotiate.
    pub unknown_payload_type: u64,
    /// RTCP packets seen on the RTP port.
    pub rtcp: u64,
    /// Times the far end's audio SSRC changed.
    pub ssrc_changes: u64,
    /// Keys received.
    pub dtmf_in: u64,
    /// Keys sent.
    pub dtmf_out: u64,
    /// Ticks of silence not sent, to pay back frames sent ahead of the clock.
    pub silence_skipped: u64,
    /// The receive jitter buffer.
    pub jitter: JitterStats,
}

/// Datagrams to send: `(destination, bytes)`, with the byte buffers kept across
/// [`clear`](Self::clear) so that a steady stream does not allocate.
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    packets: Vec<(SocketAddr, Vec<u8>)>,
    len: usize,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the packets, keeping their buffers.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packets, in sending order.
    pub fn packets(&self) -> &[(SocketAddr, Vec<u8>)] {
        &self.packets[..self.len]
    }

    /// The packets as `(destination, bytes)`.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.packets().iter().map(|(to, p)| (*to, p.as_slice()))
    }

    /// Adds an RTP packet to `to`, reusing a buffer if one is free.
    pub fn push_rtp(&mut self, to: SocketAddr, header: &RtpHeader, payload: &[u8]) {
        if self.len == self.packets.len() {
            self.packets
                .push((to, Vec::with_capacity(HEADER_LEN + FRAME_SAMPLES)));
        }
        if let Some((dest, buf)) = self.packets.get_mut(self.len) {
            *dest = to;
            rtp::write(header, payload, buf);
            self.len += 1;
        }
    }
}

/// Where the sending of queued keys is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DtmfTx {
    Idle,
    /// Sending `event`; `ticks` already sent, all stamped `start_ts`.
    Key {
        event: u8,
        start_ts: u32,
        ticks: u16,
    },
    /// Audio between keys.
    Gap {
        ticks_left: u16,
    },
}

/// One call's RTP media. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct RtpStream {
    neg: Negotiated,
    /// Where we send: the SDP address until a packet latches another.
    remote: SocketAddr,
    latched: Option<SocketAddr>,

    ssrc: u32,
    seq: u16,
    ts: u32,
    sent_audio: bool,

    audio_ssrc: Option<u32>,
    event_ssrc: Option<u32>,
    jitter: JitterBuffer,
    events: EventReceiver,
    last_event_ms: Option<u64>,
    pending_key: Option<(char, u32)>,
    last_rx_ms: Option<u64>,

    keys: VecDeque<u8>,
    dtmf_tx: DtmfTx,
    /// The next audio packet starts a talkspurt (marker bit).
    talkspurt: bool,
    /// When the first tick was played, and the ticks played since: how far
    /// the timestamps run ahead of real time.
    clock_start_ms: Option<u64>,
    frames_timed: u64,

    stats: RtpStats,
}

impl RtpStream {
    /// A stream as negotiated, sending with our `ssrc` from `initial_seq` and
    /// `initial_ts` (pick all three at random), receiving through a jitter buffer
    /// configured by `jitter`.
    pub fn new(
        neg: Negotiated,
        ssrc: u32,
        initial_seq: u16,
        initial_ts: u32,
        jitter: JitterConfig,
    ) -> Self {
        RtpStream {
            neg,
            remote: neg.remote,
            latched: None,
            ssrc,
            seq: initial_seq,
            ts: initial_ts,
            sent_audio: false,
            audio_ssrc: None,
            event_ssrc: None,
            jitter: JitterBuffer::new(jitter),
            events: EventReceiver::new(),
            last_event_ms: None,
            pending_key: None,
            last_rx_ms: None,
            keys: VecDeque::with_capacity(8),
            dtmf_tx: DtmfTx::Idle,
            talkspurt: false,
            clock_start_ms: None,
            frames_timed: 0,
            stats: RtpStats::default(),
        }
    }

    /// Applies a new offer/answer (re-INVITE): codec, payload types, direction and
    /// address. Our SSRC, sequence and timestamp carry on. A changed address
    /// drops the latch, so the next packet latches again.
    pub fn renegotiate(&mut self, neg: Negotiated) {
        if neg.remote != self.neg.remote {
            self.remote = neg.remote;
            self.latched = None;
        }
        self.neg = neg;
    }

    /// A datagram arrived from `from` at `now_ms`.
    pub fn on_datagram(&mut self, from: SocketAddr, data: &[u8], now_ms: u64) -> RxOutcome {
        if rtp::looks_like_rtcp(data) {
            self.stats.rtcp += 1;
            return RxOutcome::Rtcp;
        }
        let (h, payload) = match rtp::parse(data) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.stats.malformed += 1;
                return RxOutcome::Malformed(e.into());
            }
        };
        if self.latched.is_some_and(|addr| addr != from) {
            self.stats.unexpected_source += 1;
            return RxOutcome::UnexpectedSource(from);
        }
        let is_event = Some(h.payload_type) == self.neg.telephone_event;
        let law = if h.payload_type == self.neg.payload_type {
            Some(self.neg.law)
        } else {
            // The other G.711 law under its static number: cheap to accept.
            Law::from_payload_type(h.payload_type).filter(|_| !is_event)
        };
        if law.is_none() && !is_event {
            self.stats.unknown_payload_type += 1;
            return RxOutcome::UnknownPayloadType(h.payload_type);
        }
        let event = if is_event {
            match TelephoneEvent::parse(payload) {
                Ok(ev) => Some(ev),
                Err(e) => {
                    self.stats.malformed += 1;
                    return RxOutcome::Malformed(e.into());
                }
            }
        } else {
            None
        };

        if self.latched.is_none() {
            self.latched = Some(from);
            self.remote = from;
        }
        self.stats.packets_in += 1;
        self.last_rx_ms = Some(now_ms);

        match (law, event) {
            (_, Some(ev)) => self.on_event(&h, &ev, now_ms),
            (Some(law), None) => {
                if self.audio_ssrc.is_some_and(|s| s != h.ssrc) {
                    self.stats.ssrc_changes += 1;
                    self.jitter.resync();
                }
                self.audio_ssrc = Some(h.ssrc);
                self.jitter
                    .push(h.sequence, h.timestamp, payload, law, now_ms);
                RxOutcome::Audio
            }
            (None, None) => RxOutcome::UnknownPayloadType(h.payload_type),
        }
    }

    fn on_event(&mut self, h: &RtpHeader, ev: &TelephoneEvent, now_ms: u64) -> RxOutcome {
        if self.event_ssrc.is_some_and(|s| s != h.ssrc) {
            // A new source numbers its events afresh; finish the old one's key.
            if let Some(key) = self.events.flush() {
                self.pending_key.get_or_insert(key);
            }
            self.events = EventReceiver::new();
        }
        self.event_ssrc = Some(h.ssrc);
        self.last_event_ms = Some(now_ms);
        // While a key is held its events replace the audio packets: the phone
        // is not late, so its audio is not waited for.
        self.jitter.sender_alive(now_ms);
        match self.events.push(h.timestamp, ev) {
            Some((key, ms)) => {
                self.stats.dtmf_in += 1;
                RxOutcome::Dtmf(key, ms)
            }
            None => RxOutcome::Event,
        }
    }

    /// A key that completed without a packet to report it on: the far end's end
    /// packets were lost (no telephone-event packet for 500 ms), or its SSRC
    /// changed mid-key. Call once per tick.
    pub fn poll_dtmf(&mut self, now_ms: u64) -> Option<(char, u32)> {
        if let Some(key) = self.pending_key.take() {
            self.stats.dtmf_in += 1;
            return Some(key);
        }
        let last = self.last_event_ms?;
        if now_ms.saturating_sub(last) < KEY_TIMEOUT_MS {
            return None;
        }
        self.last_event_ms = None;
        let key = self.events.flush()?;
        self.stats.dtmf_in += 1;
        Some(key)
    }

    /// One 20 ms tick: fills `said` with what the phone said (from the jitter
    /// buffer; never stalls), and puts in `out` (cleared first) the packets that
    /// carry `heard`, what the bridge plays to the phone. While a queued key is
    /// being sent, event packets replace the audio packets. Nothing is sent when
    /// the negotiated direction does not let us send, or the far end gave no
    /// address yet.
    pub fn tick(&mut self, now_ms: u64, heard: &Frame, said: &mut Frame, out: &mut Outbox) {
        self.pull(now_ms, said);
        self.play(now_ms, heard, out);
    }

    /// The phone's next 20 ms on the clock, from the jitter buffer: the
    /// receiving half of [`tick`](Self::tick).
    pub fn pull(&mut self, now_ms: u64, said: &mut Frame) {
        self.jitter.pull(now_ms, said);
    }

    /// Eager receiving, for a consumer that takes the phone's audio as it comes
    /// (a bot) rather than on a clock: call before the first packet, then take
    /// frames with [`next_ready`](Self::next_ready) and send with
    /// [`play`](Self::play) instead of [`tick`](Self::tick).
    pub fn set_eager(&mut self) {
        self.jitter.set_eager();
    }

    /// Back to paced receiving ([`tick`](Self::tick) or [`pull`](Self::pull)
    /// on a clock) after eager receiving; see [`JitterBuffer::set_paced`].
    pub fn set_paced(&mut self) {
        self.jitter.set_paced();
    }

    /// Eager receiving: the phone's next 20 ms as soon as it can be given (see
    /// [`JitterBuffer::pull_ready`]); `None` until then.
    pub fn next_ready(&mut self, now_ms: u64, said: &mut Frame) -> Option<()> {
        self.jitter.pull_ready(now_ms, said).map(|_| ())
    }

    /// True when [`play_now`](Self::play_now) may send: no key is being sent,
    /// and the stream runs less than [`MAX_AHEAD_MS`] minus a frame ahead of
    /// real time.
    pub fn can_play_now(&self, now_ms: u64) -> bool {
        self.dtmf_tx == DtmfTx::Idle
            && self.keys.is_empty()
            && self.ahead_ms(now_ms) + FRAME_MS < MAX_AHEAD_MS
    }

    /// Sends `heard` now, ahead of the clock: the first frame of a talkspurt,
    /// which then goes out with no wait for the next tick (ask
    /// [`can_play_now`](Self::can_play_now) first). The packet carries the
    /// marker bit, so the far end may re-time its playout.
    pub fn play_now(&mut self, now_ms: u64, heard: &Frame, out: &mut Outbox) {
        self.talkspurt = true;
        self.play(now_ms, heard, out);
    }

    /// A tick whose frame was held for late audio that did not come: the
    /// timeline moves on by the frame with no packet sent (the far end hears
    /// the end of a talkspurt), and the next audio starts a talkspurt.
    pub fn skip_frame(&mut self, now_ms: u64) {
        self.clock_start_ms.get_or_insert(now_ms);
        self.frames_timed += 1;
        self.ts = self.ts.wrapping_add(FRAME_TS);
        self.talkspurt = true;
    }

    /// How far the timestamps sent run ahead of real time, in ms: each
    /// [`play_now`](Self::play_now) may move them up to a frame ahead.
    fn ahead_ms(&self, now_ms: u64) -> i64 {
        match self.clock_start_ms {
            Some(start) => {
                self.frames_timed as i64 * FRAME_MS - (now_ms - start.min(now_ms)) as i64
            }
            None => 0,
        }
    }

    /// Sends `heard` (or the key being sent) for one tick of the call's clock.
    /// A tick of silence is skipped while the stream runs a frame or more
    /// ahead of real time, which pays back what [`play_now`](Self::play_now)
    /// took.
    pub fn play(&mut self, now_ms: u64, heard: &Frame, out: &mut Outbox) {
        out.clear();
        let idle = self.dtmf_tx == DtmfTx::Idle && self.keys.is_empty();
        if idle && self.ahead_ms(now_ms) >= FRAME_MS && heard.iter().all(|&s| s == 0) {
            self.stats.silence_skipped += 1;
            return;
        }
        self.clock_start_ms.get_or_insert(now_ms);
        self.frames_timed += 1;
        let can_send = self.neg.direction.sends()
            && !self.remote.ip().is_unspecified()
            && self.remote.port() != 0;

        if self.dtmf_tx == DtmfTx::Idle {
            if let Some(event) = self.keys.pop_front() {
                self.dtmf_tx = DtmfTx::Key {
                    event,
                    start_ts: self.ts,
                    ticks: 0,
                };
            }
        }
        match self.dtmf_tx {
            DtmfTx::Key {
                event,
                start_ts,
                ticks,
            } => {
                let ticks = ticks + 1;
                let end = ticks >= KEY_TICKS;
                let ev = TelephoneEvent {
                    event,
                    end,
                    volume: DTMF_VOLUME,
                    duration: ticks * FRAME_TS as u16,
                };
                let repeats = if end { END_REPEATS } else { 1 };
                for _ in 0..repeats {
                    if can_send {
                        self.send_event(&ev, start_ts, ticks == 1, out);
                    }
                }
                self.dtmf_tx = if end {
                    self.stats.dtmf_out += 1;
                    DtmfTx::Gap {
                        ticks_left: GAP_TICKS,
                    }
                } else {
                    DtmfTx::Key {
                        event,
                        start_ts,
                        ticks,
                    }
                };
            }
            DtmfTx::Gap { ticks_left } => {
                if can_send {
                    self.send_audio(heard, out);
                }
                self.dtmf_tx = match ticks_left {
                    0 | 1 => DtmfTx::Idle,
                    n => DtmfTx::Gap { ticks_left: n - 1 },
                };
            }
            DtmfTx::Idle => {
                if can_send {
                    self.send_audio(heard, out);
                }
            }
        }
        self.ts = self.ts.wrapping_add(FRAME_TS);
    }

    fn send_audio(&mut self, heard: &Frame, out: &mut Outbox) {
        let mut payload = [0u8; FRAME_SAMPLES];
        self.neg.law.encode_slice(heard, &mut payload);
        let header = RtpHeader {
            marker: !self.sent_audio || self.talkspurt,
            payload_type: self.neg.payload_type,
            sequence: self.seq,
            timestamp: self.ts,
            ssrc: self.ssrc,
        };
        self.sent_audio = true;
        self.talkspurt = false;
        self.send(&header, &payload, out);
    }

    fn send_event(&mut self, ev: &TelephoneEvent, start_ts: u32, first: bool, out: &mut Outbox) {
        let Some(pt) = self.neg.telephone_event else {
            return;
        };
        let header = RtpHeader {
            marker: first,
            payload_type: pt,
            sequence: self.seq,
            timestamp: start_ts,
            ssrc: self.ssrc,
        };
        self.send(&header, &ev.to_bytes(), out);
    }

    fn send(&mut self, header: &RtpHeader, payload: &[u8], out: &mut Outbox) {
        out.push_rtp(self.remote, header, payload);
        self.seq = self.seq.wrapping_add(1);
        self.stats.packets_out += 1;
    }

    /// True while queued keys are still being sent (RFC 4733 events).
    pub fn is_sending_dtmf(&self) -> bool {
        !self.keys.is_empty() || !matches!(self.dtmf_tx, DtmfTx::Idle)
    }

    /// Queues a key to send as RFC 4733 events. False (nothing queued) if the far
    /// end did not negotiate `telephone-event` (play it in-band instead), if
    /// `digit` is not a DTMF key, or if 64 keys are already waiting.
    pub fn send_dtmf(&mut self, digit: char) -> bool {
        let Some(event) = rfc4733::digit_to_event(digit) else {
            return false;
        };
        if !self.has_telephone_event() || self.keys.len() >= MAX_QUEUED_KEYS {
            return false;
        }
        self.keys.push_back(event);
        true
    }

    /// Whether the far end takes RFC 4733 keys.
    pub fn has_telephone_event(&self) -> bool {
        self.neg.telephone_event.is_some()
    }

    /// Counters, with the jitter buffer's.
    pub fn stats(&self) -> RtpStats {
        RtpStats {
            jitter: self.jitter.stats(),
            ..self.stats
        }
    }

    /// Where we send: the latched source, else the SDP address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The source latched by symmetric RTP, once a packet has arrived.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// When the last valid packet arrived (for an RTP inactivity timeout).
    pub fn last_rx_ms(&self) -> Option<u64> {
        self.last_rx_ms
    }

    /// What was negotiated.
    pub fn negotiated(&self) -> &Negotiated {
        &self.neg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Direction;
    use codecs::pcm::{self, SILENCE};

    fn neg(law: Law, remote: &str) -> Negotiated {
        Negotiated {
            law,
            payload_type: law.payload_type(),
            telephone_event: Some(101),
            remote: remote.parse().unwrap(),
            ptime_ms: 20,
            direction: Direction::SendRecv,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn stream(law: Law, remote: &str) -> RtpStream {
        RtpStream::new(
            neg(law, remote),
            0xAABB_CCDD,
            1000,
            50_000,
            JitterConfig::default(),
        )
    }

    fn audio_packet(seq: u16, ts: u32, ssrc: u32, level: i16) -> Vec<u8> {
        let mut pkt = Vec::new();
        let header = RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: seq,
            timestamp: ts,
            ssrc,
        };
        rtp::write(&header, &[Law::Ulaw.encode(level); 160], &mut pkt);
        pkt
    }

    fn event_packet(seq: u16, ts: u32, event: u8, end: bool, duration: u16) -> Vec<u8> {
        let mut pkt = Vec::new();
        let header = RtpHeader {
            marker: duration == 160,
            payload_type: 101,
            sequence: seq,
            timestamp: ts,
            ssrc: 77,
        };
        let ev = TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        };
        rtp::write(&header, &ev.to_bytes(), &mut pkt);
        pkt
    }

    /// The headers of what `out` holds.
    fn sent(out: &Outbox) -> Vec<RtpHeader> {
        out.iter().map(|(_, p)| rtp::parse(p).unwrap().0).collect()
    }

    #[test]
    fn a_talkspurt_starts_at_once_and_the_clock_catches_up_in_silence() {
        let mut s = stream(Law::Ulaw, "10.0.0.1:4000");
        let mut out = Outbox::new();
        let voice = [3000i16; FRAME_SAMPLES];
        // Ticks at 0, 20, 40 ms; silence.
        for t in [0, 20, 40] {
            s.play(t, &SILENCE, &mut out);
        }
        let last = sent(&out)[0];
        // The bot starts talking at 45 ms: the frame goes out now, marked,
        // and the timestamps go on one frame later.
        assert!(s.can_play_now(45));
        s.play_now(45, &voice, &mut out);
        let h = sent(&out)[0];
        assert!(h.marker);
        assert_eq!(h.sequence, last.sequence.wrapping_add(1));
        assert_eq!(h.timestamp, last.timestamp.wrapping_add(160));
        // The clock restarts from 45: ticks at 65 and 85 carry audio unmarked.
        for t in [65, 85] {
            s.play(t, &voice, &mut out);
            assert!(!sent(&out)[0].marker);
        }
        // 15 ms ahead now. A second early start at 110 (15 ms after the tick
        // at 105) puts it 30 ms ahead: the silent tick at 130 is skipped, the
        // one at 150 goes.
        s.play(105, &SILENCE, &mut out);
        assert_eq!(out.len(), 1, "15 ms ahead is not a whole frame yet");
        s.play_now(110, &voice, &mut out);
        s.play(130, &SILENCE, &mut out);
        assert_eq!(out.len(), 0);
        s.play(150, &SILENCE, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(s.stats().silence_skipped, 1);
        // Early starts never take the stream 60 ms or more ahead.
        assert!(s.can_play_now(152));
        s.play_now(152, &voice, &mut out);
        assert!(!s.can_play_now(153), "47 ms ahead");
        s.play(172, &SILENCE, &mut out);
        assert_eq!(out.len(), 0);
        s.play(192, &SILENCE, &mut out);
        assert_eq!(out.len(), 1);
        assert!(s.can_play_now(200));
        // Audio is never skipped, however far ahead.
        s.play_now(200, &voice, &mut out);
        s.play_now(201, &voice, &mut out);
        s.play(202, &voice, &mut out);
        assert_eq!(out.len(), 1);
    }

    /// A held tick sends nothing; the late frame then goes out in its place
    /// (next sequence number and timestamp, no marker); a slot given up moves
    /// the timestamp on by a frame and the next audio carries the marker.
    #[test]
    fn a_held_frame_keeps_its_place_and_a_skipped_one_ends_the_talkspurt() {
        let mut st = stream(Law::Ulaw, "192.0.2.10:4000");
        let mut out = Outbox::new();
        let loud = [3000i16; FRAME_SAMPLES];
        st.play(0, &loud, &mut out);
        let first = sent(&out)[0];
        // Tick at 20 ms held; the frame comes at 20.4 ms (same clock in ms).
        st.play(20, &loud, &mut out);
        let second = sent(&out)[0];
        assert_eq!(second.sequence, first.sequence.wrapping_add(1));
        assert_eq!(second.timestamp, first.timestamp.wrapping_add(160));
        assert!(!second.marker, "a late frame is not a new talkspurt");
        // Tick at 40 ms held, nothing came by 60 ms: the slot is skipped.
        st.skip_frame(60);
        st.play(60, &loud, &mut out);
        let third = sent(&out)[0];
        assert_eq!(third.sequence, second.sequence.wrapping_add(1));
        assert_eq!(third.timestamp, second.timestamp.wrapping_add(320));
        assert!(third.marker, "audio after a gap starts a talkspurt");
        // The timeline kept pace with the clock: nothing runs ahead.
        assert!(st.can_play_now(60));
    }

    /// A phone that sends only RFC 4733 events while a key is held (no audio
    /// packets): the bot side still gets one frame every 20 ms, on time, and
    /// the key once; the audio after the key passes at once.
    #[test]
    fn eager_frames_keep_their_cadence_through_a_key_sent_as_events_only() {
        let mut s = stream(Law::Ulaw, "10.0.0.1:4000");
        s.set_eager();
        let from = addr("10.0.0.1:4000");
        let mut said = SILENCE;
        // (ms, frames given) for each 20 ms step: one each, never a stall.
        let mut given = Vec::new();
        let mut keys = Vec::new();
        let mut seq = 10u16;
        for step in 0..40u32 {
            let now = u64::from(step) * 20;
            let ts = step * 160;
            let pkt = if (10..25).contains(&step) {
                // The key: events stamped at its start, 20 ms more each time.
                let duration = ((step - 9) * 160) as u16;
                event_packet(seq, 10 * 160, 5, step == 24, duration)
            } else {
                audio_packet(seq, ts, 77, 1000)
            };
            seq = seq.wrapping_add(1);
            if let RxOutcome::Dtmf(k, _) = s.on_datagram(from, &pkt, now) {
                keys.push(k);
            }
            // The driver takes frames after the packet and on its tick, 10 ms later.
            let mut n = 0;
            for at in [now, now + 10] {
                while s.next_ready(at, &mut said).is_some() {
                    n += 1;
                }
            }
            given.push(n);
        }
        assert_eq!(keys, ['5']);
        assert!(
            given.iter().all(|&n| n == 1),
            "one frame per 20 ms: {given:?}"
        );
        assert_eq!(s.stats().jitter.late, 0);
    }

    #[test]
    fn eager_receiving_gives_each_packet_as_it_arrives() {
        let mut s = stream(Law::Ulaw, "10.0.0.1:4000");
        s.set_eager();
        let mut said = SILENCE;
        for n in 0..20u16 {
            let now = 100 + u64::from(n) * 20;
            let pkt = audio_packet(n, u32::from(n) * 160, 9, 1000 + n as i16);
            s.on_datagram(addr("10.0.0.1:4000"), &pkt, now);
            assert_eq!(s.next_ready(now, &mut said), Some(()));
            assert!((i32::from(said[0]) - (1000 + i32::from(n))).abs() < 40);
            assert_eq!(s.next_ready(now, &mut said), None);
        }
    }

    #[test]
    fn symmetric_rtp_latches_and_ignores_other_sources() {
        let mut s = stream(Law::Ulaw, "10.0.0.1:4000");
        let (mut said, mut out) = (SILENCE, Outbox::new());
        s.tick(0, &SILENCE, &mut said, &mut out);
        assert_eq!(
            out.packets()[0].0,
            addr("10.0.0.1:4000"),
            "SDP address first"
        );

        // A packet with a payload type we do not know latches nothing.
        let mut cn = audio_packet(0, 0, 1, 0);
        cn[1] = 13;
        assert_eq!(
            s.on_datagram(addr("203.0.113.9:1"), &cn, 0),
            RxOutcome::UnknownPayloadType(13)
        );
        assert_eq!(s.latched(), None);

        let nat = addr("198.51.100.7:31000");
        assert_eq!(
            s.on_datagram(nat, &audio_packet(1, 160, 5, 100), 1),
            RxOutcome::Audio
        );
        assert_eq!((s.latched(), s.remote()), (Some(nat), nat));
        s.tick(20, &SILENCE, &mut said, &mut out);
        assert_eq!(
            out.packets()[0].0,
            nat,
            "we now send where packets come from"
        );

        let intruder = addr("192.0.2.66:5000");
        let outcome = s.on_datagram(intruder, &audio_packet(2, 320, 5, 30000), 21);
        assert_eq!(outcome, RxOutcome::UnexpectedSource(intruder));
        assert!(outcome.is_ignored());
        assert_eq!(
            outcome.to_string(),
            "ignored RTP from 192.0.2.66:5000, which is not the call's media source"
        );
        let st = s.stats();
        assert_eq!(
            (st.unexpected_source, st.packets_in, st.jitter.received),
            (1, 1, 1)
        );
        assert_eq!(s.remote(), nat);
    }

    #[test]
    fn latching_to_the_sdp_address_itself() {
        let mut s = stream(Law::Ulaw, "10.0.0.1:4000");
        let from = addr("10.0.0.1:4000");
        s.on_datagram(from, &audio_packet(1, 160, 5, 0), 0);
        assert_eq!((s.latched(), s.remote()), (Some(from), from));
        assert_eq!(
            s.on_datagram(addr("10.0.0.1:4002"), &audio_packet(2, 320, 5, 0), 0),
            RxOutcome::UnexpectedSource(addr("10.0.0.1:4002"))
        );
    }

    /// Runs a stream over `ticks` ticks with a well-behaved far end and, if asked,
    /// garbage in between; returns what the phone said, frame by frame.
    fn run_with_garbage(garbage: bool) -> (Vec<Frame>, RtpStats) {
        let mut s = stream(Law::Ulaw, "10.0.0.1:4000");
        let phone = addr("10.0.0.1:4000");
        let junk: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x80, 0, 1],
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            vec![
                0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ], // STUN
            vec![0x8F; 40],                                   // 15 CSRCs in 40 bytes
            [&[0xA0u8][..], &[0; 10], &[200]].concat(),       // padding past the end
            vec![0x81, 200, 0, 1, 0, 0, 0, 1],                // RTCP
            event_packet(9, 1, 3, false, 160)[..14].to_vec(), // short event
        ];
        let (mut said, mut out) = (SILENCE, Outbox::new());
        let mut frames = Vec::new();
        for n in 0..100u16 {
            let now = u64::from(n) * 20;
            let level = ((n as i32 * 97) % 4000 - 2000) as i16;
            s.on_datagram(phone, &audio_packet(n, u32::from(n) * 160, 9, level), now);
            if garbage {
                for j in &junk {
                    let outcome = s.on_datagram(phone, j, now);
                    assert!(outcome.is_ignored(), "{outcome}");
                }
                // A packet from another source, later in the stream.
                s.on_datagram(addr("10.9.9.9:4000"), &audio_packet(n + 1, 0, 9, 9999), now);
            }
            s.tick(now + 1, &SILENCE, &mut said, &mut out);
            frames.push(said);
        }
        (frames, s.stats())
    }

    #[test]
    fn garbage_is_counted_and_does_not_touch_the_audio() {
        let (clean, clean_stats) = run_with_garbage(false);
        let (dirty, stats) = run_with_garbage(true);
        assert_eq!(clean, dirty);
        assert_eq!(stats.jitter, clean_stats.jitter);
        assert_eq!(stats.malformed, 100 * 7);
        assert_eq!(stats.rtcp, 100);
        assert_eq!(stats.unexpected_source, 100);
        assert_eq!(stats.packets_in, 100);
        let why = RxOutcome::Malformed(Malformed::Rtp(RtpError::TooShort(3)));
        assert_eq!(
            why.to_string(),
            "ignored a malformed datagram: RTP packet is 3 bytes long, shorter than the 12-byte fixed header"
        );
    }

    #[test]
    fn random_and_mutated_datagrams_never_panic() {
        let mut s = stream(Law::Ulaw, "10.0.0.1:4000");
        let phone = addr("10.0.0.1:4000");
        let (mut said, mut out) = (SILENCE, Outbox::new());
        let mut seed = 99u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        let valid = [
            audio_packet(1, 160, 5, 1000),
            event_packet(2, 160, 4, false, 160),
        ];
        for t in 0..5000u64 {
            let mut pkt = valid[(t % 2) as usize].clone();
            match rnd() % 3 {
                0 => {
                    let len = (rnd() % 64) as usize;
                    pkt = (0..len).map(|_| rnd() as u8).collect();
                }
                1 => {
                    for _ in 0..1 + rnd() % 4 {
                        let i = rnd() as usize % pkt.len();
                        pkt[i] = rnd() as u8;
                    }
                }
                _ => pkt.truncate(rnd() as usize % (pkt.len() + 1)),
            }
            s.on_datagram(phone, &pkt, t * 20);
            if t % 3 == 0 {
                s.tick(t * 20, &SILENCE, &mut said, &mut out);
            }
        }
        assert!(s.stats().malformed > 0);
    }

    #[test]
    fn a_key_with_repeated_packets_is_reported_once() {
        let mut s = stream(Law::Ulaw, "10.0.0.1:4000");
        let phone = addr("10.0.0.1:4000");
        let mut outcomes = Vec::new();
        let mut seq = 10;
        for i in 1..=5u16 {
            outcomes.push(s.on_datagram(phone, &event_packet(seq, 8000, 5, false, i * 160), 0));
            seq += 1;
        }
        for _ in 0..3 {
            outcomes.push(s.on_datagram(phone, &event_packet(seq, 8000, 5, true, 960), 0));
            seq += 1;
        }
        let keys: Vec<_> = outcomes
            .iter()
            .filter(|o| matches!(o, RxOutcome::Dtmf(..)))
            .collect();
        assert_eq!(keys, [&RxOutcome::Dtmf('5', 120)]);
        assert_eq!(
            outcomes.iter().filter(|&&o| o == RxOutcome::Event).count(),
            7
        );
        assert_eq!(s.poll_dtmf(10_000), None, "nothing left to report");
        assert_eq!(s.stats().dtmf_in, 1);
        assert_eq!(s.stats().jitter.received, 0, "events are not audio");
    }

    #[test]
    fn a_key_whose_end_packets_are_lost_is_reported_by_poll() {
        let mut s = stream(Law::Ulaw, "10.0.0.1:4000");
        let phone = addr("10.0.0.1:4000");
        s.on_datagram(phone, &event_packet(1, 800, 11, false, 160), 1000);
        s.on_datagram(phone, &event_packet(2, 800, 11, false, 320), 1020);
        assert_eq!(s.poll_dtmf(1100), None);
        assert_eq!(s.poll_dtmf(1600), Some(('#', 40)));
        assert_eq!(s.poll_dtmf(2000), None);
    }

    #[test]
    fn bad_event_payload_is_malformed() {
        let mut s = stream(Law::Ulaw, "10.0.0.1:4000");
        let pkt = &event_packet(1, 800, 1, false, 160)[..14];
        assert_eq!(
            s.on_datagram(addr("10.0.0.1:4000"), pkt, 0),
            RxOutcome::Malformed(Malformed::Event(Rfc4733Error::TooShort(2)))
        );
        assert_eq!(s.latched(), None);
    }

    #[test]
    fn sends_keys_as_rfc4733_events() {
        let mut s = stream(Law::Alaw, "10.0.0.1:4000");
        assert!(s.send_dtmf('1'));
        assert!(s.send_dtmf('2'));
        assert!(!s.send_dtmf('x'));
        let (mut said, mut out) = (SILENCE, Outbox::new());
        // (tick, header, payload) of every packet sent.
        let mut sent = Vec::new();
        for tick in 0..20u32 {
            s.tick(u64::from(tick) * 20, &SILENCE, &mut said, &mut out);
            for (to, pkt) in out.iter() {
                assert_eq!(to, addr("10.0.0.1:4000"));
                let (h, payload) = rtp::parse(pkt).unwrap();
                sent.push((tick, h, payload.to_vec()));
            }
        }
        // Sequence numbers +1 per packet, whatever the packet.
        for (i, (_, h, _)) in sent.iter().enumerate() {
            assert_eq!(h.sequence, 1000 + i as u16);
            assert_eq!(h.ssrc, 0xAABB_CCDD);
        }
        let events: Vec<(u32, bool, u32, TelephoneEvent)> = sent
            .iter()
            .filter(|(_, h, _)| h.payload_type == 101)
            .map(|(t, h, p)| (*t, h.marker, h.timestamp, TelephoneEvent::parse(p).unwrap()))
            .collect();
        let ev = |event, end, duration| TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        };
        let key_1_ts = 50_000;
        let key_2_ts = 50_000 + 8 * 160; // 5 ticks of key, 3 of gap
        assert_eq!(
            events,
            [
                (0, true, key_1_ts, ev(1, false, 160)),
                (1, false, key_1_ts, ev(1, false, 320)),
                (2, false, key_1_ts, ev(1, false, 480)),
                (3, false, key_1_ts, ev(1, false, 640)),
                (4, false, key_1_ts, ev(1, true, 800)),
                (4, false, key_1_ts, ev(1, true, 800)),
                (4, false, key_1_ts, ev(1, true, 800)),
                (8, true, key_2_ts, ev(2, false, 160)),
                (9, false, key_2_ts, ev(2, false, 320)),
                (10, false, key_2_ts, ev(2, false, 480)),
                (11, false, key_2_ts, ev(2, false, 640)),
                (12, false, key_2_ts, ev(2, true, 800)),
                (12, false, key_2_ts, ev(2, true, 800)),
                (12, false, key_2_ts, ev(2, true, 800)),
            ]
        );
        // Audio in the gaps and after, with the timestamp of its tick.
        let audio: Vec<(u32, u32, bool)> = sent
            .iter()
            .filter(|(_, h, _)| h.payload_type == 8)
            .map(|(t, h, _)| (*t, h.timestamp, h.marker))
            .collect();
        let ticks: Vec<u32> = audio.iter().map(|a| a.0).collect();
        assert_eq!(ticks, [5, 6, 7, 13, 14, 15, 16, 17, 18, 19]);
        for &(tick, ts, _) in &audio {
            assert_eq!(ts, 50_000 + tick * 160);
        }
        assert!(audio[0].2, "first audio packet starts a talkspurt");
        assert!(audio[1..].iter().all(|a| !a.2));
        assert_eq!(s.stats().dtmf_out, 2);

        // Our own receiver hears exactly "12".
        let mut rx = stream(Law::Alaw, "10.0.0.2:4000");
        let keys: Vec<_> = sent
            .iter()
            .map(|(t, h, p)| {
                let mut pkt = Vec::new();
                rtp::write(h, p, &mut pkt);
                rx.on_datagram(addr("10.0.0.1:4000"), &pkt, u64::from(*t) * 20)
            })
            .filter_map(|o| match o {
                RxOutcome::Dtmf(k, ms) => Some((k, ms)),
                _ => None,
            })
            .collect();
        assert_eq!(keys, [('1', 100), ('2', 100)]);
    }

    #[test]
    fn no_telephone_event_means_in_band() {
        let mut n = neg(Law::Ulaw, "10.0.0.1:4000");
        n.telephone_event = None;
        let mut s = RtpStream::new(n, 1, 1, 1, JitterConfig::default());
        assert!(!s.has_telephone_event());
        assert!(!s.send_dtmf('5'));
        // 101 is then just an unknown payload type.
        assert_eq!(
            s.on_datagram(addr("10.0.0.1:4000"), &event_packet(1, 1, 5, true, 800), 0),
            RxOutcome::UnknownPayloadType(101)
        );
    }

    #[test]
    fn nothing_is_sent_on_hold_or_without_an_address() {
        let mut n = neg(Law::Ulaw, "10.0.0.1:4000");
        n.direction = Direction::RecvOnly;
        let mut s = RtpStream::new(n, 1, 1, 1, JitterConfig::default());
        let (mut said, mut out) = (SILENCE, Outbox::new());
        s.tick(0, &SILENCE, &mut said, &mut out);
        assert!(out.is_empty());
        let mut s = stream(Law::Ulaw, "0.0.0.0:4000");
        s.tick(0, &SILENCE, &mut said, &mut out);
        assert!(out.is_empty());
        // Until the far end's packets show where it is.
        let phone = addr("10.0.0.5:7000");
        s.on_datagram(phone, &audio_packet(1, 1, 1, 0), 0);
        s.tick(20, &SILENCE, &mut said, &mut out);
        assert_eq!(out.packets()[0].0, phone);
    }

    #[test]
    fn the_outbox_reuses_its_buffers() {
        let mut s = stream(Law::Ulaw, "10.0.0.1:4000");
        let (mut said, mut out) = (SILENCE, Outbox::new());
        s.tick(0, &SILENCE, &mut said, &mut out);
        let ptr = out.packets()[0].1.as_ptr();
        for t in 1..50 {
            s.tick(t * 20, &SILENCE, &mut said, &mut out);
            assert_eq!(out.len(), 1);
            assert_eq!(out.packets()[0].1.as_ptr(), ptr);
        }
    }

    /// A 440 Hz tone with a slow amplitude change, so any misplaced frame shows.
    fn tone(n: usize) -> i16 {
        let t = n as f64 / 8000.0;
        let amp = 6000.0 + 3000.0 * (t * 1.3).sin();
        (amp * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
    }

    fn end_to_end(law: Law) {
        let a_addr = addr("10.0.0.1:4000");
        let b_addr = addr("10.0.0.2:5000");
        let mut a = RtpStream::new(
            neg(law, "10.0.0.2:5000"),
            11,
            65500,
            u32::MAX - 1000,
            JitterConfig::default(),
        );
        let mut b = RtpStream::new(neg(law, "10.0.0.1:4000"), 22, 3, 4, JitterConfig::default());
        let (mut out, mut said, mut ignore) = (Outbox::new(), SILENCE, SILENCE);
        let mut sent = Vec::new();
        let mut heard = Vec::new();
        for tick in 0..150usize {
            let now = tick as u64 * 20;
            let mut frame = SILENCE;
            for (i, s) in frame.iter_mut().enumerate() {
                *s = tone(tick * FRAME_SAMPLES + i);
            }
            sent.extend_from_slice(&frame);
            a.tick(now, &frame, &mut ignore, &mut out);
            for (to, pkt) in out.iter() {
                assert_eq!(to, b_addr);
                assert_eq!(b.on_datagram(a_addr, pkt, now + 5), RxOutcome::Audio);
            }
            b.tick(now + 10, &SILENCE, &mut said, &mut out);
            heard.extend_from_slice(&said);
        }
        // The audio comes out after the 60 ms initial delay, as sent but for
        // G.711's quantisation (about 38 dB SNR).
        let delay = 3 * FRAME_SAMPLES;
        let (lag, corr) = pcm::find_delay(&heard, &sent[..8000], 2000);
        assert_eq!(lag, delay);
        assert!(corr > 0.999, "{corr}");
        let n = sent.len() - delay;
        let err: Vec<i16> = (0..n)
            .map(|i| heard[i + delay].saturating_sub(sent[i]))
            .collect();
        let snr_db = 20.0 * (pcm::rms(&sent[..n]) / pcm::rms(&err)).log10();
        assert!(snr_db > 30.0, "{law:?}: SNR {snr_db:.1} dB");
        let st = b.stats();
        assert_eq!((st.jitter.played, st.jitter.concealed), (147, 0));
        assert_eq!(a.stats().packets_out, 150);
    }

    #[test]
    fn g711_ulaw_end_to_end() {
        end_to_end(Law::Ulaw);
    }

    #[test]
    fn g711_alaw_end_to_end() {
        end_to_end(Law::Alaw);
    }

    #[test]
    fn renegotiation_moves_the_stream() {
        let mut s = stream(Law::Ulaw, "10.0.0.1:4000");
        s.on_datagram(addr("10.0.0.1:4000"), &audio_packet(1, 1, 1, 0), 0);
        let mut n = neg(Law::Alaw, "10.0.0.3:6000");
        n.telephone_event = None;
        s.renegotiate(n);
        assert_eq!((s.remote(), s.latched()), (addr("10.0.0.3:6000"), None));
        let (mut said, mut out) = (SILENCE, Outbox::new());
        s.tick(0, &SILENCE, &mut said, &mut out);
        let (h, _) = rtp::parse(&out.packets()[0].1).unwrap();
        assert_eq!((h.payload_type, h.sequence), (8, 1000));
        assert!(!s.send_dtmf('1'));
    }
}
