//! One call's bot session and media, as a sans-I/O state machine.
//!
//! [`CallSession`] owns no socket, task or clock. The call driver feeds it what
//! happened (the bot connected, the phone answered, a bot message arrived, a 20 ms
//! tick with the phone's audio) and drains what it produced: events for the bot
//! (`poll_event`) and actions for the phone side (`poll_action`). Tests drive it
//! tick by tick, so mark timing, clear latency and the hangup drain are checked
//! exactly.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use codecs::dtmf::ToneSequencer;
use codecs::pcm::{Frame, FRAME_BYTES, FRAME_SAMPLES};
use protocol::{Command, ErrorCode, Event, StartInfo, StopReason, TransferAttempt};

use crate::media::Playout;

/// Tunables of one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Largest playout queue, in samples.
    pub max_playout_samples: usize,
    /// Longest a `session.hangup` waits for queued audio, in 20 ms ticks.
    pub hangup_drain_ticks: u32,
    /// Largest accepted bot message, in bytes.
    pub max_message_bytes: usize,
    /// DTMF the bot sends is played as tones in the phone's audio (the phone side
    /// has no out-of-band telephone-event); otherwise it becomes [`Action::Dtmf`].
    pub inband_dtmf: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_playout_samples: 60 * 8000,
            hangup_drain_ticks: 5 * 50,
            max_message_bytes: protocol::MAX_MESSAGE_BYTES,
            inband_dtmf: true,
        }
    }
}

/// What the session asks of the phone side.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The bot ended the call (after the drain, unless it asked for `immediate`).
    Hangup,
    /// Send one digit out of band (RFC 4733).
    Dtmf(char),
    /// The bot asked for a transfer (one of the `session.transfer*`
    /// commands); the call decides whether and how it happens.
    Transfer(Command),
}

/// What [`CallSession::play`] did with a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Played {
    /// Bot audio or key tones.
    Sound,
    /// Silence: the bot is not talking.
    Silence,
    /// Nothing yet: the bot is mid-talkspurt and its next frame is late. The
    /// tick's slot is held for it ([`CallSession::held_frame_ready`]) rather
    /// than filled with silence, which would put a gap into continuous speech
    /// and push the rest of it a frame later.
    Held,
}

/// One event for the bot, serialized.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The JSON text.
    pub text: Bytes,
    /// A `media` event: the only kind a backlogged link may hold back.
    pub is_media: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BotState {
    Absent,
    Connected,
    Started,
    Stopped,
}

/// Counters a driver reports (metrics, the call log, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionStats {
    /// Media events produced for the bot.
    pub media_sent: u64,
    /// Media frames not produced because the bot was not reading.
    pub media_skipped: u64,
    /// Bot messages refused (with an `error` event, or without one once the
    /// error budget is spent).
    pub refused: u64,
    /// Refusals whose `error` event was not sent: the bot was refused faster
    /// than [`ERROR_BURST`] at once or one a tick after that.
    pub errors_dropped: u64,
    /// 20 ms frames that carried bot audio to the phone.
    pub frames_played: u64,
    /// Keys the phone pressed that were sent to the bot.
    pub dtmf_to_bot: u64,
    /// Keys the bot sent for the phone.
    pub dtmf_from_bot: u64,
}

/// `error` events a bot may be sent at once; the budget refills by one a
/// tick (50 a second). A bot that floods bad messages (and may not read at
/// all) so costs the bridge a bounded queue, and the rest are counted.
pub const ERROR_BURST: u32 = 50;

/// The sans-I/O heart of a call: bot protocol state plus the playout queue.
pub struct CallSession {
    cfg: SessionConfig,
    start: StartInfo,
    bot: BotState,
    answered: bool,
    seq: u64,
    chunk: u64,
    playout: Playout,
    tones: Option<ToneSequencer>,
    pending_digits: String,
    /// A pending `session.hangup`: ticks left, and the queue position of its
    /// last sample (audio sent after the hangup is never played).
    hangup_drain: Option<(u32, u64)>,
    /// The last frame played carried neither bot audio nor tones.
    silent: bool,
    /// A tick's slot waits for the bot's late frame ([`Played::Held`]).
    slot_held: bool,
    held: Vec<(ErrorCode, String)>,
    scratch: Vec<u8>,
    pcm: [u8; FRAME_BYTES],
    text: String,
    arena: BytesMut,
    events: VecDeque<Outgoing>,
    actions: VecDeque<Action>,
    stats: SessionStats,
    /// `error` events that may still be sent now ([`ERROR_BURST`]).
    error_budget: u32,
}

impl CallSession {
    /// A session for the call and stream described by `start`.
    pub fn new(start: StartInfo, cfg: SessionConfig) -> Self {
        CallSession {
            playout: Playout::new(cfg.max_playout_samples),
            cfg,
            start,
            bot: BotState::Absent,
            answered: false,
            seq: 0,
            chunk: 0,
            tones: None,
            pending_digits: String::new(),
            hangup_drain: None,
            silent: true,
            slot_held: false,
            held: Vec::new(),
            scratch: Vec::new(),
            pcm: [0; FRAME_BYTES],
            text: String::with_capacity(1024),
            arena: BytesMut::with_capacity(16 * 1024),
            events: VecDeque::new(),
            actions: VecDeque::new(),
            stats: SessionStats::default(),
            error_budget: ERROR_BURST,
        }
    }

    /// The stream this session speaks for.
    pub fn stream_sid(&self) -> &str {
        &self.start.stream_sid
    }

    /// Counters so far.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Bot audio waiting to be played, in samples.
    pub fn queued_samples(&self) -> usize {
        self.playout.queued_samples()
    }

    /// True once the bot has been sent `stop`.
    pub fn is_stopped(&self) -> bool {
        self.bot == BotState::Stopped
    }

    /// True when the phone hears silence and a whole frame of bot audio now
    /// waits: the driver may [`play`](Self::play) it at once instead of on the
    /// next tick, so what the bot starts to say is not held back.
    pub fn starts_talkspurt(&self) -> bool {
        self.answered
            && self.silent
            && self.tones.is_none()
            && self.hangup_drain.is_none()
            && self.playout.queued_samples() >= FRAME_SAMPLES
    }

    /// True when a `session.hangup` is waiting for its audio to play out.
    pub fn is_draining(&self) -> bool {
        self.hangup_drain.is_some()
    }

    /// The bot's socket is open: send `connected`, and `start` if media already runs.
    pub fn on_bot_connected(&mut self) {
        if self.bot != BotState::Absent {
            return;
        }
        self.bot = BotState::Connected;
        self.emit(&Event::Connected, false);
        if self.answered {
            self.begin_stream();
        }
    }

    /// The phone answered: media starts on the next tick.
    pub fn on_answer(&mut self) {
        self.answered = true;
        if self.bot == BotState::Connected {
            self.begin_stream();
        }
    }

    fn begin_stream(&mut self) {
        self.bot = BotState::Started;
        let start = self.start.clone();
        self.emit(&Event::Start(&start), false);
        for (code, message) in std::mem::take(&mut self.held) {
            self.emit(
                &Event::Error {
                    code,
                    message: &message,
                },
                false,
            );
        }
        self.emit_reached_marks();
    }

    /// One 20 ms tick of an answered call: [`hear`](Self::hear) what the phone
    /// said, then [`play`](Self::play) what it is to hear. A driver that can
    /// deliver the played frame in the same tick calls the two halves itself,
    /// `play` first, so bot audio does not wait a tick.
    pub fn tick(&mut self, phone_said: &Frame, phone_hears: &mut Frame, bot_backlogged: bool) {
        self.hear(phone_said, bot_backlogged);
        self.play(phone_hears, false);
    }

    /// The phone's 20 ms frame goes to the bot as `media`. `bot_backlogged` says
    /// the link to the bot is not keeping up, so this frame is skipped rather
    /// than queued without bound (numbering stays contiguous).
    pub fn hear(&mut self, phone_said: &Frame, bot_backlogged: bool) {
        if self.bot != BotState::Started {
            return;
        }
        if bot_backlogged {
            self.stats.media_skipped += 1;
            return;
        }
        codecs::pcm::samples_to_le_bytes(phone_said, &mut self.pcm);
        self.chunk += 1;
        let pcm = self.pcm;
        self.emit(
            &Event::Media {
                chunk: self.chunk,
                timestamp_ms: (self.chunk - 1) * 20,
                payload: &pcm,
            },
            true,
        );
        self.stats.media_sent += 1;
        if self.chunk.is_multiple_of(250) {
            self.playout.shrink();
        }
    }

    /// Fills `phone_hears` with the next 20 ms for the phone: DTMF tones, else
    /// queued bot audio, else silence; echoes the marks that audio reached.
    ///
    /// With `may_hold` (the phone side can send a frame between ticks), a tick
    /// that finds the bot mid-talkspurt with less than a frame queued is
    /// [`Played::Held`]: nothing is played, and the frame goes out when it
    /// arrives ([`play_held`](Self::play_held)) or, if it has not by the next
    /// tick, the slot is given up ([`release_held`](Self::release_held)).
    pub fn play(&mut self, phone_hears: &mut Frame, may_hold: bool) -> Played {
        self.error_budget = (self.error_budget + 1).min(ERROR_BURST);
        // A pending hangup goes once everything queued has been handed to the
        // phone (on an earlier tick), so the goodbye's last frame is heard too.
        if let Some((left, until)) = self.hangup_drain {
            let drained = self.playout.played_total() >= until && self.tones.is_none();
            if drained || left == 0 {
                self.hangup_drain = None;
                self.actions.push_back(Action::Hangup);
                phone_hears.fill(0);
                self.silent = true;
                return Played::Silence;
            }
            self.hangup_drain = Some((left - 1, until));
        }

        if may_hold
            && !self.silent
            && self.tones.is_none()
            && self.playout.queued_samples() < FRAME_SAMPLES
        {
            self.slot_held = true;
            return Played::Held;
        }
        self.slot_held = false;
        let played = if let Some(t) = self.tones.as_mut() {
            t.next_frame(phone_hears);
            if t.is_done() {
                self.tones = None;
                self.start_next_tones();
            }
            Played::Sound
        } else if self.playout.next_frame(phone_hears) > 0 {
            self.stats.frames_played += 1;
            Played::Sound
        } else {
            Played::Silence
        };
        self.silent = played == Played::Silence;
        self.emit_reached_marks();
        played
    }

    /// True when a held slot ([`Played::Held`]) can be filled now: a whole
    /// frame of bot audio (or key tones) waits.
    pub fn held_frame_ready(&self) -> bool {
        self.slot_held && (self.tones.is_some() || self.playout.queued_samples() >= FRAME_SAMPLES)
    }

    /// Fills the held slot, now that its frame is here
    /// ([`held_frame_ready`](Self::held_frame_ready)).
    pub fn play_held(&mut self, phone_hears: &mut Frame) -> Played {
        self.play(phone_hears, false)
    }

    /// The next tick came and the held slot is still open: `Some` when a slot
    /// was held. What is queued (a last partial frame) fills it now
    /// ([`Played::Sound`], the driver sends it late); with nothing queued the
    /// bot's talkspurt is over and the slot is given up ([`Played::Silence`],
    /// the driver sends nothing for it).
    pub fn release_held(&mut self, phone_hears: &mut Frame) -> Option<Played> {
        if !self.slot_held {
            return None;
        }
        self.slot_held = false;
        if self.tones.is_some() || self.playout.queued_samples() > 0 {
            return Some(self.play(phone_hears, false));
        }
        phone_hears.fill(0);
        self.silent = true;
        Some(Played::Silence)
    }

    /// A digit the phone pressed.
    pub fn on_phone_dtmf(&mut self, digit: char, duration_ms: u32) {
        if self.bot == BotState::Started {
            tracing::debug!(stream_sid = %self.start.stream_sid, %digit, duration_ms, "dtmf to the bot");
            self.stats.dtmf_to_bot += 1;
            self.emit(&Event::Dtmf { digit, duration_ms }, false);
        }
    }

    /// A text frame from the bot.
    pub fn on_bot_text(&mut self, text: &str) {
        if self.bot == BotState::Stopped {
            return;
        }
        let mut audio = std::mem::take(&mut self.scratch);
        let parsed = protocol::parse_command(text, &mut audio, self.cfg.max_message_bytes);
        match parsed {
            Ok(Command::AudioDelta) => self.enqueue_audio(&audio),
            Ok(cmd) => self.apply(cmd),
            Err(e) => self.refuse(e.code, e.message),
        }
        self.scratch = audio;
    }

    /// A binary frame from the bot: raw audio, the same as `response.audio.delta`.
    pub fn on_bot_binary(&mut self, bytes: &[u8]) {
        if self.bot == BotState::Stopped {
            return;
        }
        match protocol::check_binary_audio(bytes, self.cfg.max_message_bytes) {
            Ok(()) => self.enqueue_audio(bytes),
            Err(e) => self.refuse(e.code, e.message),
        }
    }

    fn enqueue_audio(&mut self, audio: &[u8]) {
        if let Err(full) = self.playout.push_le_bytes(audio) {
            self.refuse(
                ErrorCode::QueueFull,
                format!(
                    "playout queue full: delta of {} ms refused, room for {} ms; nothing queued was lost",
                    audio.len() / 16,
                    full.room / 8
                ),
            );
        }
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::AudioDelta => {}
            Command::Clear => {
                let marks: Vec<String> = self.playout.clear().collect();
                if self.bot == BotState::Started {
                    for name in &marks {
                        self.emit(&Event::Mark { name }, false);
                    }
                    self.emit(&Event::Clear, false);
                }
            }
            Command::Mark { name } => {
                self.playout.push_mark(name);
                self.emit_reached_marks();
            }
            Command::Dtmf { digits } => {
                tracing::debug!(stream_sid = %self.start.stream_sid, %digits, "dtmf from the bot");
                self.stats.dtmf_from_bot += digits.chars().count() as u64;
                if self.cfg.inband_dtmf {
                    self.play_dtmf_tones(&digits);
                } else {
                    self.actions.extend(digits.chars().map(Action::Dtmf));
                }
            }
            Command::Hangup { immediate } => {
                if immediate {
                    self.actions.push_back(Action::Hangup);
                } else if self.hangup_drain.is_none() {
                    let until = self.playout.enqueued_total();
                    self.hangup_drain = Some((self.cfg.hangup_drain_ticks, until));
                }
            }
            Command::Transfer { .. }
            | Command::TransferWs { .. }
            | Command::FlowTransfer { .. }
            | Command::TransferExtension { .. }
            | Command::TransferComplete
            | Command::TransferCancel => {
                if self.hangup_drain.is_some() {
                    let what = cmd.name();
                    self.refuse(
                        ErrorCode::TransferRefused,
                        format!("{what}: the bot already hung up; the call is ending"),
                    );
                } else {
                    self.actions.push_back(Action::Transfer(cmd));
                }
            }
        }
    }

    /// Plays keys as in-band tones in the phone's audio (for a phone side that
    /// cannot take them out of band). Queued bot audio waits while they play.
    pub fn play_dtmf_tones(&mut self, digits: &str) {
        self.pending_digits.push_str(digits);
        if self.tones.is_none() {
            self.start_next_tones();
        }
    }

    fn start_next_tones(&mut self) {
        if !self.pending_digits.is_empty() {
            let digits = std::mem::take(&mut self.pending_digits);
            self.tones = Some(ToneSequencer::new(&digits, 100, 60));
        }
    }

    /// Refuses a bot message with an `error` event; the call goes on.
    /// At most [`ERROR_BURST`] at once and one a tick after that are sent;
    /// the rest are counted ([`SessionStats::errors_dropped`]) and logged at
    /// debug, and the call goes on.
    pub fn refuse(&mut self, code: ErrorCode, message: String) {
        self.stats.refused += 1;
        tracing::debug!(stream_sid = %self.start.stream_sid, code = code.as_str(), "refused: {message}");
        match self.bot {
            BotState::Started if self.error_budget == 0 => self.stats.errors_dropped += 1,
            BotState::Started => {
                self.error_budget -= 1;
                self.emit(
                    &Event::Error {
                        code,
                        message: &message,
                    },
                    false,
                )
            }
            BotState::Connected if self.held.len() < 16 => self.held.push((code, message)),
            _ => {}
        }
    }

    fn emit_reached_marks(&mut self) {
        if self.bot != BotState::Started {
            return;
        }
        while let Some(name) = self.playout.pop_reached_mark() {
            self.emit(&Event::Mark { name: &name }, false);
        }
    }

    /// The call is over: the bot gets `stop` with `reason` (if it is connected),
    /// and nothing after it.
    pub fn finish(&mut self, reason: StopReason) {
        if matches!(self.bot, BotState::Connected | BotState::Started) {
            let call_sid = self.start.call_sid.clone();
            self.emit(
                &Event::Stop {
                    call_sid: &call_sid,
                    reason,
                },
                false,
            );
        }
        self.bot = BotState::Stopped;
        self.hangup_drain = None;
    }

    /// Tells the bot its transfer did not hand the call on: it keeps the call.
    pub fn transfer_failed(&mut self, kind: &str, reason: &str, attempts: &[TransferAttempt<'_>]) {
        if self.bot != BotState::Started {
            return;
        }
        let destination = attempts.first().map_or("", |a| a.destination);
        self.emit(
            &Event::TransferFailed {
                kind,
                destination,
                reason,
                attempts,
            },
            false,
        );
    }

    /// Tells the bot its warm transfer's target answered: from now on it
    /// talks to the target alone, until it completes or cancels.
    pub fn transfer_answered(&mut self, kind: &str, destination: &str) {
        if self.bot != BotState::Started {
            return;
        }
        self.emit(&Event::TransferAnswered { kind, destination }, false);
    }

    /// The bot hands the call on (to a person, another bot or a flow): audio
    /// it still had queued is dropped, the marks in it are returned in order,
    /// and it gets `stop` with `reason`.
    pub fn hand_off(&mut self, reason: StopReason) {
        if self.bot == BotState::Started {
            let marks: Vec<String> = self.playout.clear().collect();
            for name in &marks {
                self.emit(&Event::Mark { name }, false);
            }
        }
        self.tones = None;
        self.pending_digits.clear();
        self.finish(reason);
    }

    /// The bot's socket is gone: nothing more is sent to it.
    pub fn on_bot_lost(&mut self) {
        self.bot = BotState::Stopped;
        self.events.clear();
    }

    /// The next event for the bot.
    pub fn poll_event(&mut self) -> Option<Outgoing> {
        self.events.pop_front()
    }

    /// The next action for the phone side.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn emit(&mut self, ev: &Event<'_>, is_media: bool) {
        let seq = if matches!(ev, Event::Connected) {
            0
        } else {
            self.seq += 1;
            self.seq
        };
        self.text.clear();
        protocol::write_event(&mut self.text, &self.start.stream_sid, seq, ev);
        // The arena hands out slices of one buffer; once the socket has sent them
        // and dropped them, `reserve` takes the space back, so the steady state
        // allocates nothing per frame.
        self.arena.reserve(self.text.len());
        self.arena.extend_from_slice(self.text.as_bytes());
        let text = self.arena.split().freeze();
        self.events.push_back(Outgoing { text, is_media });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    use protocol::{BotEvent, Direction, MediaFormat};

    fn start_info() -> StartInfo {
        StartInfo {
            stream_sid: "MZ1".into(),
            call_sid: "CA1".into(),
            from: "+15550000000".into(),
            to: "+99910001".into(),
            direction: Direction::Outbound,
            media_format: MediaFormat::default(),
            tracks: vec!["inbound".into()],
            custom_parameters: Default::default(),
        }
    }

    struct Harness {
        s: CallSession,
        heard: Vec<Frame>,
        events: Vec<BotEvent>,
        tick_of_event: Vec<usize>,
        ticks: usize,
    }

    impl Harness {
        fn new(cfg: SessionConfig) -> Self {
            let mut s = CallSession::new(start_info(), cfg);
            s.on_bot_connected();
            s.on_answer();
            let mut h = Harness {
                s,
                heard: vec![],
                events: vec![],
                tick_of_event: vec![],
                ticks: 0,
            };
            h.drain();
            h
        }
        fn drain(&mut self) {
            while let Some(o) = self.s.poll_event() {
                let text = std::str::from_utf8(&o.text).unwrap().to_owned();
                self.events.push(protocol::parse_event(&text).unwrap());
                self.tick_of_event.push(self.ticks);
            }
        }
        fn tick(&mut self) {
            let said = [100i16; FRAME_SAMPLES];
            let mut hears = [0i16; FRAME_SAMPLES];
            self.s.tick(&said, &mut hears, false);
            self.ticks += 1;
            self.heard.push(hears);
            self.drain();
        }
        fn bot(&mut self, text: &str) {
            self.s.on_bot_text(text);
            self.drain();
        }
        fn names(&self) -> Vec<&'static str> {
            self.events.iter().map(|e| e.name()).collect()
        }
        fn marks(&self) -> Vec<(String, usize)> {
            self.events
                .iter()
                .zip(&self.tick_of_event)
                .filter_map(|(e, t)| match e {
                    BotEvent::Mark { name, .. } => Some((name.clone(), *t)),
                    _ => None,
                })
                .collect()
        }
    }

    fn delta(samples: usize, value: i16) -> String {
        let pcm: Vec<u8> = (0..samples).flat_map(|_| value.to_le_bytes()).collect();
        format!(
            r#"{{"type":"response.audio.delta","delta":"{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode(pcm)
        )
    }

    #[test]
    fn a_bot_flooding_bad_messages_gets_a_bounded_number_of_errors() {
        let mut h = Harness::new(SessionConfig::default());
        // 10,000 bad messages between two ticks (a bot that never reads
        // would leave every one of them queued): 50 errors, the rest counted.
        for _ in 0..10_000 {
            h.s.on_bot_text("{not json");
        }
        assert_eq!(h.s.events.len(), ERROR_BURST as usize);
        h.drain();
        // One more a tick; the stream stays contiguous, and the call goes on.
        for _ in 0..10 {
            h.tick();
            h.bot("{not json");
            h.bot("{not json");
        }
        let errors = h.names().iter().filter(|n| **n == "error").count();
        assert_eq!(errors, ERROR_BURST as usize + 10);
        let stats = h.s.stats();
        assert_eq!(stats.refused, 10_020);
        assert_eq!(stats.errors_dropped, 10_020 - errors as u64);
        for (i, e) in h.events.iter().skip(1).enumerate() {
            assert_eq!(e.sequence_number(), Some(i as u64 + 1));
        }
        assert_eq!(h.names().iter().filter(|n| **n == "media").count(), 10);
    }

    #[test]
    fn connected_start_then_contiguous_media() {
        let mut h = Harness::new(SessionConfig::default());
        for _ in 0..5 {
            h.tick();
        }
        assert_eq!(
            h.names(),
            [
                "connected",
                "start",
                "media",
                "media",
                "media",
                "media",
                "media"
            ]
        );
        for (i, e) in h.events.iter().skip(1).enumerate() {
            assert_eq!(e.sequence_number(), Some(i as u64 + 1));
        }
        for (k, e) in h.events.iter().skip(2).enumerate() {
            match e {
                BotEvent::Media {
                    chunk,
                    timestamp_ms,
                    payload,
                    ..
                } => {
                    assert_eq!(*chunk, k as u64 + 1);
                    assert_eq!(*timestamp_ms, k as u64 * 20);
                    assert_eq!(payload.len(), 320);
                    assert_eq!(i16::from_le_bytes([payload[0], payload[1]]), 100);
                }
                other => panic!("expected media, got {other:?}"),
            }
        }
    }

    /// A bot talking in real time whose frames land just after the ticks: each
    /// tick holds its slot and the frame fills it when it comes, so the phone
    /// hears every frame once, in order, with no silence between them; a mark
    /// comes back when its frame is played. When the bot stops, the slot held
    /// for a frame that never comes is given up on the next tick.
    #[test]
    fn a_frame_a_little_late_fills_the_slot_its_tick_held() {
        let mut h = Harness::new(SessionConfig::default());
        let mut heard = Vec::new();
        let mut hears = [0i16; FRAME_SAMPLES];
        // The first frame starts a talkspurt and is played at once.
        h.bot(&delta(160, 1));
        assert!(h.s.starts_talkspurt());
        assert_eq!(h.s.play(&mut hears, true), Played::Sound);
        heard.push(hears[0]);
        for k in 2..=5i16 {
            // The tick comes first: the bot is mid-talkspurt, nothing queued.
            assert_eq!(h.s.release_held(&mut hears), None);
            assert_eq!(h.s.play(&mut hears, true), Played::Held);
            assert!(!h.s.held_frame_ready());
            // Its frame, a fraction of a millisecond later.
            h.bot(&delta(160, k));
            if k == 4 {
                h.bot(r#"{"type":"mark","name":"four"}"#);
            }
            assert!(!h.s.starts_talkspurt(), "not a new talkspurt");
            assert!(h.s.held_frame_ready());
            assert!(h.marks().is_empty() || k > 4);
            assert_eq!(h.s.play_held(&mut hears), Played::Sound);
            h.drain();
            heard.push(hears[0]);
        }
        assert_eq!(heard, [1, 2, 3, 4, 5], "every frame once, nothing between");
        assert_eq!(h.marks().len(), 1, "the mark came back with its frame");
        // The bot has stopped: the next tick holds, the one after gives it up.
        assert_eq!(h.s.play(&mut hears, true), Played::Held);
        assert_eq!(h.s.release_held(&mut hears), Some(Played::Silence));
        assert!(hears.iter().all(|&s| s == 0));
        assert_eq!(h.s.play(&mut hears, true), Played::Silence);
        // Silence is not held, and the next audio starts a talkspurt.
        assert_eq!(h.s.play(&mut hears, true), Played::Silence);
        h.bot(&delta(160, 9));
        assert!(h.s.starts_talkspurt());
        // A phone side that cannot send between ticks never holds.
        assert_eq!(h.s.play(&mut hears, false), Played::Sound);
        assert_eq!(h.s.play(&mut hears, false), Played::Silence);
    }

    /// A last partial frame still queued when the held slot runs out is played
    /// in that slot rather than dropped.
    #[test]
    fn a_held_slot_that_runs_out_plays_what_is_queued() {
        let mut h = Harness::new(SessionConfig::default());
        let mut hears = [0i16; FRAME_SAMPLES];
        h.bot(&delta(160 + 80, 7));
        assert_eq!(h.s.play(&mut hears, true), Played::Sound);
        assert_eq!(h.s.play(&mut hears, true), Played::Held);
        assert!(!h.s.held_frame_ready(), "half a frame does not fill it");
        assert_eq!(h.s.release_held(&mut hears), Some(Played::Sound));
        assert!(hears[..80].iter().all(|&s| s == 7));
        assert!(hears[80..].iter().all(|&s| s == 0));
    }

    #[test]
    fn mark_comes_back_on_the_tick_its_audio_finishes() {
        let mut h = Harness::new(SessionConfig::default());
        // 50 ms of audio, then a mark: 3 frames (20 + 20 + 10 ms).
        h.bot(&delta(400, 5000));
        h.bot(r#"{"type":"mark","name":"intro"}"#);
        assert!(h.marks().is_empty());
        h.tick();
        h.tick();
        assert!(h.marks().is_empty(), "audio still queued after 2 frames");
        h.tick();
        assert_eq!(h.marks(), vec![("intro".to_string(), 3)]);
        // The phone heard the audio, in full, in those three frames.
        assert!(h.heard[0].iter().all(|&s| s == 5000));
        assert!(h.heard[1].iter().all(|&s| s == 5000));
        assert!(h.heard[2][..80].iter().all(|&s| s == 5000));
        assert!(h.heard[2][80..].iter().all(|&s| s == 0));
        // A mark on an empty queue comes back at once.
        h.bot(r#"{"type":"mark","name":"now"}"#);
        assert_eq!(h.marks().last().unwrap(), &("now".to_string(), 3));
    }

    #[test]
    fn clear_stops_audio_within_one_frame_and_returns_marks_first() {
        let mut h = Harness::new(SessionConfig::default());
        h.bot(&delta(8000, 3000));
        h.bot(r#"{"type":"mark","name":"a"}"#);
        h.bot(&delta(800, 3000));
        h.bot(r#"{"type":"mark","name":"b"}"#);
        h.tick();
        h.tick();
        h.bot(r#"{"type":"audio.clear"}"#);
        let tail: Vec<&str> = h.names().into_iter().rev().take(3).collect();
        assert_eq!(tail, ["clear", "mark", "mark"]);
        assert_eq!(
            h.marks(),
            vec![("a".to_string(), 2), ("b".to_string(), 2)],
            "marks returned at clear, in order"
        );
        h.tick();
        assert!(
            h.heard[2].iter().all(|&s| s == 0),
            "the first frame after clear is silent"
        );
    }

    #[test]
    fn hangup_plays_goodbye_whole_then_hangs_up() {
        let mut h = Harness::new(SessionConfig::default());
        h.bot(&delta(1600, 1234)); // 200 ms goodbye
        h.bot(r#"{"type":"session.hangup"}"#);
        let mut hung_at = None;
        for t in 1..=20 {
            h.tick();
            if h.s.poll_action() == Some(Action::Hangup) {
                hung_at = Some(t);
                break;
            }
        }
        assert_eq!(
            hung_at,
            Some(11),
            "hang up on the tick after the goodbye's last frame"
        );
        let played: usize = h
            .heard
            .iter()
            .map(|f| f.iter().filter(|&&s| s == 1234).count())
            .sum();
        assert_eq!(played, 1600, "every sample of the goodbye was played");
        h.s.finish(StopReason::BotHangup);
        h.drain();
        match h.events.last().unwrap() {
            BotEvent::Stop { reason, .. } => assert_eq!(*reason, StopReason::BotHangup),
            e => panic!("last event {e:?}"),
        }
        h.bot(r#"{"type":"audio.clear"}"#);
        assert_eq!(
            h.events.last().unwrap().name(),
            "stop",
            "nothing after stop"
        );
    }

    #[test]
    fn audio_sent_after_hangup_is_not_played() {
        let mut h = Harness::new(SessionConfig::default());
        h.bot(&delta(320, 11)); // 40 ms goodbye
        h.bot(r#"{"type":"session.hangup"}"#);
        h.bot(&delta(8000, 22)); // an echo bot keeps talking
        let mut ticks = 0;
        while h.s.poll_action() != Some(Action::Hangup) {
            h.tick();
            ticks += 1;
            assert!(ticks < 100);
        }
        assert_eq!(ticks, 3, "hang up right after the goodbye");
        assert!(h.heard.iter().all(|f| f.iter().all(|&s| s != 22)));
    }

    #[test]
    fn hangup_drain_is_bounded() {
        let cfg = SessionConfig {
            hangup_drain_ticks: 5,
            ..SessionConfig::default()
        };
        let mut h = Harness::new(cfg);
        h.bot(&delta(80_000, 1)); // 10 s of audio
        h.bot(r#"{"type":"session.hangup"}"#);
        let mut ticks = 0;
        while h.s.poll_action() != Some(Action::Hangup) {
            h.tick();
            ticks += 1;
            assert!(ticks < 100);
        }
        assert_eq!(ticks, 6);
    }

    #[test]
    fn immediate_hangup_does_not_wait() {
        let mut h = Harness::new(SessionConfig::default());
        h.bot(&delta(8000, 1));
        h.bot(r#"{"type":"session.hangup","immediate":true}"#);
        assert_eq!(h.s.poll_action(), Some(Action::Hangup));
    }

    #[test]
    fn bad_messages_get_errors_and_media_keeps_flowing() {
        let mut h = Harness::new(SessionConfig::default());
        let bad = [
            ("{not json", "bad_json"),
            (r#"{"type":"no.such.thing"}"#, "unknown_type"),
            (
                r#"{"type":"response.audio.delta","delta":"@@@"}"#,
                "bad_base64",
            ),
            (
                r#"{"type":"response.audio.delta","delta":"AAAA"}"#,
                "odd_byte_count",
            ),
            (r#"{"type":"session.dtmf","dtmf":"12x"}"#, "bad_dtmf"),
            (
                r#"{"type":"session.transfer","destination":"+15551234567","timeout":0}"#,
                "bad_field",
            ),
        ];
        for (msg, code) in bad {
            h.tick();
            h.bot(msg);
            match h.events.last().unwrap() {
                BotEvent::Error { code: c, .. } => assert_eq!(c, code, "for {msg}"),
                e => panic!("{msg}: expected error, got {e:?}"),
            }
        }
        h.tick();
        assert_eq!(h.events.last().unwrap().name(), "media");
        assert!(h.s.poll_action().is_none(), "the call was not ended");
        assert_eq!(h.s.stats().refused, 6);
    }

    #[test]
    fn overflowing_delta_refused_and_queue_kept() {
        let cfg = SessionConfig {
            max_playout_samples: 1000,
            ..SessionConfig::default()
        };
        let mut h = Harness::new(cfg);
        h.bot(&delta(900, 7));
        h.bot(&delta(200, 8));
        assert_eq!(h.events.last().unwrap().name(), "error");
        for _ in 0..7 {
            h.tick();
        }
        let sevens: usize = h
            .heard
            .iter()
            .map(|f| f.iter().filter(|&&s| s == 7).count())
            .sum();
        assert_eq!(sevens, 900);
        assert!(h.heard.iter().all(|f| f.iter().all(|&s| s != 8)));
    }

    #[test]
    fn audio_before_answer_plays_from_the_first_answered_frame() {
        let mut s = CallSession::new(start_info(), SessionConfig::default());
        s.on_bot_connected();
        s.on_bot_text(&delta(160, 42));
        s.on_bot_text(r#"{"type":"mark","name":"hello"}"#);
        s.on_bot_text("garbage");
        let mut names = vec![];
        while let Some(o) = s.poll_event() {
            names.push(protocol::parse_event(std::str::from_utf8(&o.text).unwrap()).unwrap());
        }
        assert_eq!(names.len(), 1, "only `connected` before answer");
        s.on_answer();
        let mut hears = [0i16; FRAME_SAMPLES];
        s.tick(&[0; FRAME_SAMPLES], &mut hears, false);
        assert!(hears.iter().all(|&x| x == 42));
        let mut kinds = vec![];
        while let Some(o) = s.poll_event() {
            kinds.push(
                protocol::parse_event(std::str::from_utf8(&o.text).unwrap())
                    .unwrap()
                    .name(),
            );
        }
        assert_eq!(kinds, ["start", "error", "media", "mark"]);
    }

    #[test]
    fn stop_before_answer_for_a_bot_connected_early() {
        let mut s = CallSession::new(start_info(), SessionConfig::default());
        s.on_bot_connected();
        s.finish(StopReason::Busy);
        let mut evs = vec![];
        while let Some(o) = s.poll_event() {
            evs.push(protocol::parse_event(std::str::from_utf8(&o.text).unwrap()).unwrap());
        }
        assert_eq!(evs.len(), 2);
        match &evs[1] {
            BotEvent::Stop {
                reason,
                sequence_number,
                ..
            } => {
                assert_eq!(*reason, StopReason::Busy);
                assert_eq!(*sequence_number, 1);
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn bot_dtmf_is_played_as_tones_the_phone_can_detect() {
        let mut h = Harness::new(SessionConfig::default());
        h.bot(r#"{"type":"session.dtmf","dtmf":"90#"}"#);
        for _ in 0..40 {
            h.tick();
        }
        let mut det = codecs::dtmf::Detector::new();
        let mut got = vec![];
        for f in &h.heard {
            det.push(f, &mut got);
        }
        assert_eq!(got, vec!['9', '0', '#']);
    }

    #[test]
    fn backlogged_bot_skips_media_without_gaps_in_numbering() {
        let mut h = Harness::new(SessionConfig::default());
        h.tick();
        let said = [1i16; FRAME_SAMPLES];
        let mut hears = [0i16; FRAME_SAMPLES];
        h.s.tick(&said, &mut hears, true);
        h.tick();
        h.drain();
        let media: Vec<(u64, u64)> = h
            .events
            .iter()
            .filter_map(|e| match e {
                BotEvent::Media {
                    sequence_number,
                    chunk,
                    ..
                } => Some((*sequence_number, *chunk)),
                _ => None,
            })
            .collect();
        assert_eq!(media, vec![(2, 1), (3, 2)]);
        assert_eq!(h.s.stats().media_skipped, 1);
    }
}
