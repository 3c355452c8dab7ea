//! `conformance bot`: the suite plays the bridge against a bot server.
//!
//! Each scenario is one call: the suite opens a WebSocket to the bot (with the
//! user's headers), sends `connected`, `start`, a `media` event every 20 ms carrying
//! real speech, DTMF, pings and odd-but-legal events as the scenario asks, and
//! finally `stop`. Meanwhile it acts on the bot's messages as the bridge would:
//! audio goes into a simulated playout queue played at 8000 samples a second,
//! marks come back when their audio has played, `audio.clear` returns marks then
//! `clear`, `session.hangup` drains the queue and ends the call, and every refused
//! message gets an `error` event.
//!
//! Every scenario checks what the bridge needs from any bot: each message parses
//! under PROTOCOL.md (the committed JSON Schema and `protocol`'s parser), audio is
//! whole samples and never overflows the queue, pings are answered, the socket stays
//! open until `stop`, nothing is sent after `stop`, and the socket closes soon
//! after. A scenario's `check` may ask for more (`audio`: the bot must speak).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use protocol::{Command, ErrorCode, Event, StartInfo, StopReason};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::audio::{self, FRAME_SAMPLES, SAMPLE_RATE};
use crate::report::{Findings, Progress, Report};
use crate::scenario::{self, Scenario, ScenarioFuture, SuiteKind};

/// How long the bridge waits for a bot to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bot messages that arrive this soon after `stop` count as in flight when it was
/// sent (an echo of the last media, a bot lagging a little); later ones were sent
/// after the bot had it.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(500);
/// How long the suite listens after `stop` before it closes the socket itself.
const LISTEN_AFTER_STOP: Duration = Duration::from_secs(1);
/// How long a bot has to complete the closing handshake.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);
/// How long a bot has to answer a ping before the suite calls it unanswered.
const PONG_LIMIT: Duration = Duration::from_secs(2);
/// The bridge's playout queue: 60 s of audio.
const QUEUE_LIMIT_SAMPLES: u64 = 60 * SAMPLE_RATE as u64;
/// The bridge's hangup drain bound.
const HANGUP_DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// A write that cannot go through for this long means the bot stopped reading.
const WRITE_LIMIT: Duration = Duration::from_secs(2);

/// Which protocol dialect the suite speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    /// This bridge's protocol (PROTOCOL.md sections 2 and 3).
    Ivr,
    /// Twilio Media Streams (PROTOCOL.md section 5); not available yet.
    Twilio,
}

/// What `conformance bot` is pointed at.
#[derive(Debug, Clone)]
pub struct BotOptions {
    /// The bot's WebSocket URL (`ws://` or `wss://`).
    pub url: String,
    /// Headers sent with the upgrade request, as `wss_header` would.
    pub headers: Vec<(String, String)>,
    /// The dialect to speak.
    pub dialect: Dialect,
    /// Scenarios to run at once.
    pub jobs: usize,
}

/// Why the suite could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The dialect is accepted on the command line but not implemented yet.
    #[error("the {0} dialect is not available yet: this bridge speaks only the ivr dialect (PROTOCOL.md sections 2 and 3); run with --dialect ivr")]
    DialectUnavailable(&'static str),
    /// The options cannot work.
    #[error("{0}")]
    Invalid(String),
}

/// One scheduled key press.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DtmfAt {
    /// Milliseconds after `start`.
    pub at_ms: u64,
    /// The key.
    pub digit: char,
}

/// What a bot scenario's call looks like: its `[params]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotPlan {
    /// Time between `connected` and `start` (the phone ringing).
    pub ring_ms: u64,
    /// `false`: the call is never answered; `stop` follows `connected`.
    pub send_start: bool,
    /// Time from `start` to `stop`, unless the bot hangs up first.
    pub call_ms: u64,
    /// The `stop` reason when the suite ends the call.
    pub stop_reason: String,
    /// Keys the caller presses.
    pub dtmf: Vec<DtmfAt>,
    /// Send a WebSocket ping this often during the call.
    pub ping_every_ms: Option<u64>,
    /// When to send an unknown event, an unknown error code and `transfer_failed`.
    pub unknown_at_ms: Option<u64>,
    /// Add unknown fields to `start` and to every `media` event.
    pub extra_fields: bool,
}

impl Default for BotPlan {
    fn default() -> Self {
        BotPlan {
            ring_ms: 0,
            send_start: true,
            call_ms: 3000,
            stop_reason: "callended".into(),
            dtmf: vec![],
            ping_every_ms: None,
            unknown_at_ms: None,
            extra_fields: false,
        }
    }
}

/// What a bot scenario checks beyond what every scenario checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotCheck {
    /// Only the checks every session gets.
    Session,
    /// Also: the bot must speak, so its audio can be judged.
    Audio,
}

/// A bot scenario's check and plan, from its file.
pub fn plan(s: &Scenario) -> Result<(BotCheck, BotPlan), String> {
    let check = match s.check.as_str() {
        "session" => BotCheck::Session,
        "audio" => BotCheck::Audio,
        other => {
            return Err(format!(
                "scenario {}: unknown bot check {other:?} (known: session, audio)",
                s.name
            ))
        }
    };
    let p: BotPlan = s.params()?;
    if StopReason::parse(&p.stop_reason).is_none() {
        return Err(format!(
            "scenario {}: stop_reason {:?} is not a stop reason",
            s.name, p.stop_reason
        ));
    }
    if let Some(d) = p.dtmf.iter().find(|d| !protocol::is_valid_dtmf(d.digit)) {
        return Err(format!(
            "scenario {}: {:?} is not a DTMF digit",
            s.name, d.digit
        ));
    }
    if p.ping_every_ms == Some(0) {
        return Err(format!("scenario {}: ping_every_ms must be > 0", s.name));
    }
    Ok((check, p))
}

/// Runs `scenarios` (bot scenarios from [`scenario::select`]) against a bot.
pub async fn run(
    opts: BotOptions,
    scenarios: Vec<Scenario>,
    progress: Arc<dyn Progress>,
) -> Result<Report, SetupError> {
    if opts.dialect == Dialect::Twilio {
        return Err(SetupError::DialectUnavailable("twilio"));
    }
    let url = url::Url::parse(&opts.url)
        .map_err(|e| SetupError::Invalid(format!("--url {:?} is not a URL: {e}", opts.url)))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(SetupError::Invalid(format!(
            "--url {:?} must be ws:// or wss://",
            opts.url
        )));
    }
    let mut plans = BTreeMap::new();
    for s in &scenarios {
        if s.suite != SuiteKind::Bot {
            return Err(SetupError::Invalid(format!(
                "scenario {} is for the {} suite",
                s.name,
                s.suite.as_str()
            )));
        }
        plans.insert(s.name.clone(), plan(s).map_err(SetupError::Invalid)?);
    }
    let plans = Arc::new(plans);
    let opts = Arc::new(opts);
    let results = scenario::run_all(scenarios, opts.jobs, progress, move |s| {
        let plans = plans.clone();
        let opts = opts.clone();
        let fut: ScenarioFuture = Box::pin(async move {
            let (check, plan) = plans[&s.name].clone();
            let mut f = Findings::default();
            run_session(&opts, check, &plan, &mut f).await;
            f
        });
        fut
    })
    .await;
    Ok(Report {
        suite: "bot".into(),
        target: url.to_string(),
        scenarios: results,
    })
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the reader task saw, and when.
enum Incoming {
    Frame(Message),
    Failed(String),
    Ended,
}

/// TLS for `wss://` bots: the web PKI roots, ring as the crypto provider.
pub fn tls_connector() -> Connector {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    match cfg {
        Ok(cfg) => Connector::Rustls(Arc::new(cfg)),
        Err(_) => Connector::Plain,
    }
}

async fn connect(opts: &BotOptions) -> Result<Ws, String> {
    let mut req = opts
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad URL {}: {e}", opts.url))?;
    for (name, value) in &opts.headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name {name:?} is not valid"))?;
        let v = HeaderValue::from_str(value).map_err(|_| {
            format!("the value of header {name} has characters a header cannot carry")
        })?;
        req.headers_mut().append(n, v);
    }
    let fut =
        tokio_tungstenite::connect_async_tls_with_config(req, None, true, Some(tls_connector()));
    match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Err(_) => Err(format!(
            "the bot at {} did not accept a WebSocket connection within {} s (the bridge gives up then and the call fails with bot_unreachable)",
            opts.url,
            CONNECT_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("cannot connect to the bot at {}: {e}", opts.url)),
        Ok(Ok((ws, _))) => Ok(ws),
    }
}

/// The bridge's playout queue, simulated: only counts, no samples.
#[derive(Default)]
struct Playout {
    queued: u64,
    enqueued: u64,
    played: u64,
    marks: VecDeque<(u64, String)>,
}

impl Playout {
    fn push(&mut self, samples: u64) {
        self.queued += samples;
        self.enqueued += samples;
    }

    fn tick(&mut self) {
        let n = self.queued.min(FRAME_SAMPLES as u64);
        self.queued -= n;
        self.played += n;
    }

    fn reached_mark(&mut self) -> Option<String> {
        match self.marks.front() {
            Some((pos, _)) if *pos <= self.played => self.marks.pop_front().map(|(_, n)| n),
            _ => None,
        }
    }

    fn clear(&mut self) -> Vec<String> {
        self.enqueued -= self.queued;
        self.queued = 0;
        self.marks.drain(..).map(|(_, n)| n).collect()
    }
}

/// One session's state: the fake bridge's side of the call.
struct Session<'a> {
    f: &'a mut Findings,
    sink: SplitSink<Ws, Message>,
    start: StartInfo,
    seq: u64,
    started: bool,
    stopped: bool,
    /// When `start` was sent (or `connected`, before it).
    t0: Instant,
    playout: Playout,
    held_errors: Vec<(ErrorCode, String)>,
    hangup_deadline: Option<Instant>,
    hangup_immediate: bool,
    audio: Vec<u8>,
    // What the bot did.
    refused: Vec<String>,
    by_type: BTreeMap<String, usize>,
    first_audio: Option<Duration>,
    audio_before_start: bool,
    audio_samples: u64,
    deltas: u64,
    largest_delta: u64,
    dead: Option<String>,
    extra_fields: bool,
}

impl Session<'_> {
    fn since(&self, at: Instant) -> String {
        let d = at.saturating_duration_since(self.t0).as_secs_f64();
        if self.started {
            format!("{d:.2} s after start")
        } else {
            format!("{d:.2} s after connected")
        }
    }

    async fn send_text(&mut self, text: String) {
        if self.dead.is_some() {
            return;
        }
        match tokio::time::timeout(WRITE_LIMIT, self.sink.send(Message::text(text))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.dead = Some(format!("writing to the bot failed: {e}")),
            Err(_) => {
                self.dead = Some(format!(
                    "the bot stopped reading its socket: an event could not be written for {} s",
                    WRITE_LIMIT.as_secs()
                ))
            }
        }
    }

    async fn send_event(&mut self, ev: &Event<'_>) {
        let seq = if matches!(ev, Event::Connected) {
            0
        } else {
            self.seq += 1;
            self.seq
        };
        let mut text = String::new();
        protocol::write_event(&mut text, &self.start.stream_sid, seq, ev);
        if self.extra_fields {
            text = with_extra_fields(&text, ev.name());
        }
        self.send_text(text).await;
    }

    async fn refuse(&mut self, at: Instant, kind: &str, code: ErrorCode, message: String) {
        // The parser's messages start with the message type; say it once.
        let why = message
            .strip_prefix(kind)
            .and_then(|m| m.strip_prefix(": "))
            .unwrap_or(&message);
        self.refused.push(format!(
            "{kind} {} was refused ({code}): {why}",
            self.since(at)
        ));
        if self.started {
            self.send_event(&Event::Error {
                code,
                message: &message,
            })
            .await;
        } else {
            self.held_errors.push((code, message));
        }
    }

    async fn on_audio(&mut self, at: Instant, bytes_len: usize) {
        let samples = (bytes_len / 2) as u64;
        if self.playout.queued + samples > QUEUE_LIMIT_SAMPLES {
            let room = QUEUE_LIMIT_SAMPLES - self.playout.queued;
            self.refuse(
                at,
                "response.audio.delta",
                ErrorCode::QueueFull,
                format!(
                    "playout queue full: a delta of {} ms would not fit ({} ms of room); the bot is more than 60 s ahead of real time",
                    samples / 8,
                    room / 8
                ),
            )
            .await;
            return;
        }
        self.deltas += 1;
        self.largest_delta = self.largest_delta.max(samples);
        if samples > 0 && self.first_audio.is_none() {
            self.first_audio = Some(at.saturating_duration_since(self.t0));
            self.audio_before_start = !self.started;
        }
        self.audio_samples += samples;
        self.playout.push(samples);
    }

    async fn on_text(&mut self, at: Instant, text: &str) {
        let kind = message_type(text);
        *self.by_type.entry(kind.clone()).or_default() += 1;
        if self.stopped {
            return;
        }
        let mut audio = std::mem::take(&mut self.audio);
        let parsed = protocol::parse_command(text, &mut audio, protocol::MAX_MESSAGE_BYTES);
        let n = audio.len();
        self.audio = audio;
        // The committed schema is what bot developers test against: a message the
        // parser takes must match it too.
        if parsed.is_ok() {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
                let problems = crate::schema::commands().validate(&value);
                if !problems.is_empty() {
                    let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                    self.refused.push(format!(
                        "{kind} ({}) does not match the message schema: {}",
                        self.since(at),
                        shown.join("; ")
                    ));
                }
            }
        }
        match parsed {
            Err(e) => self.refuse(at, &kind, e.code, e.message).await,
            Ok(Command::AudioDelta) => self.on_audio(at, n).await,
            Ok(Command::Clear) => {
                let marks = self.playout.clear();
                if self.started {
                    for name in &marks {
                        self.send_event(&Event::Mark { name }).await;
                    }
                    self.send_event(&Event::Clear).await;
                }
            }
            Ok(Command::Mark { name }) => {
                self.playout.marks.push_back((self.playout.enqueued, name));
                self.echo_reached_marks().await;
            }
            Ok(Command::Dtmf { .. }) => {}
            Ok(Command::Hangup { immediate }) => {
                self.hangup_immediate |= immediate;
                self.hangup_deadline
                    .get_or_insert(Instant::now() + HANGUP_DRAIN_LIMIT);
            }
            Ok(
                Command::Transfer { .. }
                | Command::TransferWs { .. }
                | Command::FlowTransfer { .. }
                | Command::TransferExtension { .. }
                | Command::TransferComplete
                | Command::TransferCancel,
            ) => {
                // As this bridge does; the call goes on.
                let message = "transfers are not supported by this bridge yet; the call goes on";
                if self.started {
                    self.send_event(&Event::Error {
                        code: ErrorCode::NotSupported,
                        message,
                    })
                    .await;
                }
            }
        }
    }

    async fn on_binary(&mut self, at: Instant, bytes: &[u8]) {
        *self.by_type.entry("binary audio".into()).or_default() += 1;
        if self.stopped {
            return;
        }
        match protocol::check_binary_audio(bytes, protocol::MAX_MESSAGE_BYTES) {
            Ok(()) => self.on_audio(at, bytes.len()).await,
            Err(e) => {
                self.refuse(at, "binary audio frame", e.code, e.message)
                    .await
            }
        }
    }

    async fn echo_reached_marks(&mut self) {
        if !self.started {
            return;
        }
        while let Some(name) = self.playout.reached_mark() {
            self.send_event(&Event::Mark { name: &name }).await;
        }
    }

    async fn begin(&mut self) {
        self.started = true;
        self.t0 = Instant::now();
        let start = self.start.clone();
        self.send_event(&Event::Start(&start)).await;
        for (code, message) in std::mem::take(&mut self.held_errors) {
            self.send_event(&Event::Error {
                code,
                message: &message,
            })
            .await;
        }
    }

    /// Unknown but legal things a later bridge may send.
    async fn send_unknowns(&mut self) {
        self.seq += 1;
        let unknown = format!(
            r#"{{"event":"x_conformance_future","sequence_number":{},"stream_sid":"{}","x_conformance_future":{{"note":"bots must ignore events they do not know"}}}}"#,
            self.seq, self.start.stream_sid
        );
        self.send_text(unknown).await;
        // An error code from the future: bots should accept codes not listed.
        self.seq += 1;
        let future_error = format!(
            r#"{{"event":"error","sequence_number":{},"stream_sid":"{}","error":{{"code":"x_conformance_future_code","message":"a code this bot cannot know yet"}}}}"#,
            self.seq, self.start.stream_sid
        );
        self.send_text(future_error).await;
        self.send_event(&Event::TransferFailed {
            kind: "session.transfer",
            destination: "+15550100999",
            reason: "busy",
            attempts: &[protocol::TransferAttempt {
                destination: "+15550100999",
                outcome: "busy",
                sip_code: Some(486),
            }],
        })
        .await;
    }
}

/// The `type` of a bot message, for reports (`(not JSON)` and so on).
fn message_type(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => match v.get("type") {
            Some(serde_json::Value::String(t)) => t.chars().take(48).collect(),
            Some(_) => "(message with a non-string type)".into(),
            None => "(message without a type)".into(),
        },
        Err(_) => "(not JSON)".into(),
    }
}

/// Adds unknown fields to an event, at the top and inside its body.
fn with_extra_fields(text: &str, name: &str) -> String {
    let Some(rest) = text.strip_prefix('{') else {
        return text.to_owned();
    };
    let mut out = format!(r#"{{"x_conformance_extra":{{"a":[1,2.5,null]}},{rest}"#);
    let body_key = format!(r#""{name}":{{"#);
    if let Some(at) = out.find(&body_key) {
        out.insert_str(at + body_key.len(), r#""x_conformance_extra":true,"#);
    }
    out
}

fn session_ids() -> (String, String) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    (
        format!("MZconf{nanos:x}{n:04x}"),
        format!("CAconf{nanos:x}{n:04x}"),
    )
}

/// Runs one call against the bot and records what it found in `f`.
pub async fn run_session(opts: &BotOptions, check: BotCheck, plan: &BotPlan, f: &mut Findings) {
    let ws = match connect(opts).await {
        Ok(ws) => ws,
        Err(e) => {
            f.fail(e);
            return;
        }
    };
    let (sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Incoming)>();
    let reader = tokio::spawn(async move {
        loop {
            let item = match stream.next().await {
                Some(Ok(m)) => Incoming::Frame(m),
                Some(Err(e)) => Incoming::Failed(e.to_string()),
                None => Incoming::Ended,
            };
            let end = !matches!(item, Incoming::Frame(_));
            if tx.send((Instant::now(), item)).is_err() || end {
                break;
            }
        }
    });

    let (stream_sid, call_sid) = session_ids();
    let mut start = crate::schema::sample_start_info();
    start.stream_sid = stream_sid;
    start.call_sid = call_sid;
    start.custom_parameters.insert(
        "system_msg".into(),
        serde_json::Value::String("conformance test call".into()),
    );
    let mut s = Session {
        f,
        sink,
        start,
        seq: 0,
        started: false,
        stopped: false,
        t0: Instant::now(),
        playout: Playout::default(),
        held_errors: vec![],
        hangup_deadline: None,
        hangup_immediate: false,
        audio: Vec::new(),
        refused: vec![],
        by_type: BTreeMap::new(),
        first_audio: None,
        audio_before_start: false,
        audio_samples: 0,
        deltas: 0,
        largest_delta: 0,
        dead: None,
        extra_fields: false,
    };
    s.send_event(&Event::Connected).await;
    s.extra_fields = plan.extra_fields;

    let mut closed_early: Option<String> = None;
    let mut pings: Vec<(Instant, Vec<u8>, Option<Instant>)> = vec![];

    // Ringing: the bot is connected, nothing else yet.
    let answer_at = Instant::now() + Duration::from_millis(plan.ring_ms);
    while closed_early.is_none() && s.dead.is_none() && Instant::now() < answer_at {
        tokio::select! {
            item = rx.recv() => closed_early = handle(&mut s, item, &mut pings).await,
            _ = tokio::time::sleep_until(answer_at) => {}
        }
    }

    let mut reason = StopReason::parse(&plan.stop_reason).unwrap_or(StopReason::CallEnded);
    if plan.send_start && closed_early.is_none() && s.dead.is_none() {
        s.begin().await;
        let speech = audio::speech();
        let mut clock = tokio::time::interval(Duration::from_millis(20));
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let end_at = s.t0 + Duration::from_millis(plan.call_ms);
        let mut chunk: u64 = 0;
        let mut dtmf = plan.dtmf.clone();
        dtmf.sort_by_key(|d| d.at_ms);
        let mut dtmf = VecDeque::from(dtmf);
        let mut next_ping = plan
            .ping_every_ms
            .map(|ms| s.t0 + Duration::from_millis(ms));
        let mut unknown_at = plan
            .unknown_at_ms
            .map(|ms| s.t0 + Duration::from_millis(ms));
        let mut pcm = [0u8; FRAME_SAMPLES * 2];
        loop {
            tokio::select! {
                biased;
                item = rx.recv() => {
                    closed_early = handle(&mut s, item, &mut pings).await;
                    if closed_early.is_some() { break; }
                }
                _ = clock.tick() => {
                    let now = Instant::now();
                    // The caller's audio for this 20 ms.
                    let from = chunk as usize * FRAME_SAMPLES;
                    pcm.fill(0);
                    if let Some(frame) = speech.get(from..(from + FRAME_SAMPLES).min(speech.len())) {
                        for (i, v) in frame.iter().enumerate() {
                            pcm[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
                        }
                    }
                    chunk += 1;
                    s.send_event(&Event::Media { chunk, timestamp_ms: (chunk - 1) * 20, payload: &pcm }).await;
                    s.playout.tick();
                    s.echo_reached_marks().await;
                    while dtmf.front().is_some_and(|d| now >= s.t0 + Duration::from_millis(d.at_ms)) {
                        if let Some(d) = dtmf.pop_front() {
                            s.send_event(&Event::Dtmf { digit: d.digit, duration_ms: 120 }).await;
                        }
                    }
                    if unknown_at.is_some_and(|t| now >= t) {
                        unknown_at = None;
                        s.send_unknowns().await;
                    }
                    if let (Some(t), Some(every)) = (next_ping, plan.ping_every_ms) {
                        // Only pings whose pong is due before the call ends can be judged.
                        if now >= t && now + PONG_LIMIT < end_at {
                            next_ping = Some(t + Duration::from_millis(every));
                            let payload = format!("conformance-ping-{}", pings.len() + 1).into_bytes();
                            if s.dead.is_none() {
                                let sent = tokio::time::timeout(WRITE_LIMIT, s.sink.send(Message::Ping(payload.clone().into()))).await;
                                if matches!(sent, Ok(Ok(()))) {
                                    pings.push((Instant::now(), payload, None));
                                }
                            }
                        }
                    }
                    if let Some(deadline) = s.hangup_deadline {
                        if s.hangup_immediate || s.playout.queued == 0 || now >= deadline {
                            reason = StopReason::BotHangup;
                            break;
                        }
                    }
                    if now >= end_at || s.dead.is_some() {
                        break;
                    }
                }
            }
        }
    }
    let call_secs = s.t0.elapsed().as_secs_f64();

    // Stop, then listen: the bot must fall silent and let the socket close.
    let mut after_stop: Vec<(Duration, String)> = vec![];
    let mut in_flight = 0usize;
    let mut ended = closed_early.is_some();
    if !ended && s.dead.is_none() {
        let call_sid = s.start.call_sid.clone();
        s.send_event(&Event::Stop {
            call_sid: &call_sid,
            reason,
        })
        .await;
        s.stopped = true;
        let stop_at = Instant::now();
        let mut bot_closed = false;
        let listen_until = stop_at + LISTEN_AFTER_STOP;
        while !ended && !bot_closed {
            tokio::select! {
                item = rx.recv() => match item {
                    Some((at, Incoming::Frame(Message::Text(t)))) => {
                        let kind = message_type(&t);
                        after(&mut after_stop, &mut in_flight, at - stop_at, kind);
                    }
                    Some((at, Incoming::Frame(Message::Binary(_)))) => {
                        after(&mut after_stop, &mut in_flight, at - stop_at, "binary audio".into());
                    }
                    Some((at, Incoming::Frame(Message::Pong(p)))) => pong(&mut pings, at, &p),
                    Some((_, Incoming::Frame(Message::Close(_)))) => bot_closed = true,
                    Some((_, Incoming::Frame(_))) => {}
                    Some((_, Incoming::Failed(_) | Incoming::Ended)) | None => ended = true,
                },
                _ = tokio::time::sleep_until(listen_until) => break,
            }
        }
        // The bridge closes the socket after `stop`; the bot must answer.
        if !ended {
            let _ = tokio::time::timeout(Duration::from_millis(500), s.sink.close()).await;
            let close_by = Instant::now() + CLOSE_LIMIT;
            while !ended {
                tokio::select! {
                    item = rx.recv() => match item {
                        Some((at, Incoming::Frame(Message::Text(t)))) => {
                            let kind = message_type(&t);
                            after(&mut after_stop, &mut in_flight, at - stop_at, kind);
                        }
                        Some((at, Incoming::Frame(Message::Binary(_)))) => {
                            after(&mut after_stop, &mut in_flight, at - stop_at, "binary audio".into());
                        }
                        Some((_, Incoming::Frame(_))) => {}
                        Some((_, Incoming::Failed(_) | Incoming::Ended)) | None => ended = true,
                    },
                    _ = tokio::time::sleep_until(close_by) => break,
                }
            }
            if !ended {
                s.f.fail(format!(
                    "the socket was still open {} s after the bridge closed it following `stop`: the bot must answer the close (or close itself) once it gets `stop`",
                    CLOSE_LIMIT.as_secs()
                ));
            }
        }
    }
    reader.abort();

    // What every session checks.
    let f = &mut *s.f;
    if let Some(why) = &closed_early {
        f.fail(why.clone());
    }
    if let Some(why) = &s.dead {
        f.fail(why.clone());
    }
    for r in s.refused.iter().take(5) {
        f.fail(r.clone());
    }
    if s.refused.len() > 5 {
        f.fail(format!(
            "... and {} more refused messages",
            s.refused.len() - 5
        ));
    }
    if !after_stop.is_empty() {
        let (first_at, first_kind) = &after_stop[0];
        f.fail(format!(
            "sent {} message(s) after `stop`, the first ({first_kind}) {} ms after it: a bot must send nothing once it gets `stop` (the bridge ignores it)",
            after_stop.len(),
            first_at.as_millis()
        ));
    }
    let unanswered: Vec<usize> = pings
        .iter()
        .enumerate()
        .filter(|(_, (sent, _, got))| match got {
            Some(at) => *at - *sent > PONG_LIMIT,
            None => sent.elapsed() > PONG_LIMIT,
        })
        .map(|(i, _)| i + 1)
        .collect();
    if !unanswered.is_empty() {
        f.fail(format!(
            "{} of {} WebSocket pings got no pong within {} s (the first unanswered sent {:.1} s after start); the bridge drops a bot that answers no ping for 30 s",
            unanswered.len(),
            pings.len(),
            PONG_LIMIT.as_secs(),
            pings[unanswered[0] - 1].0.saturating_duration_since(s.t0).as_secs_f64()
        ));
    }

    // What was measured.
    match s.first_audio {
        Some(_) if s.audio_before_start => f.measure("first audio", "before start"),
        Some(d) => f.measure("first audio", format!("{} ms after start", d.as_millis())),
        None => f.measure("first audio", "none"),
    }
    if call_secs > 0.0 && plan.send_start {
        f.measure(
            "audio sent",
            format!(
                "{:.2} s per s of call",
                s.audio_samples as f64 / SAMPLE_RATE as f64 / call_secs
            ),
        );
    }
    f.measure("refused", s.refused.len().to_string());
    let answered: Vec<Duration> = pings
        .iter()
        .filter_map(|(sent, _, got)| got.map(|g| g - *sent))
        .collect();
    if let Some(max) = answered.iter().max() {
        f.measure("slowest pong", format!("{} ms", max.as_millis()));
    }
    if !s.by_type.is_empty() {
        let sent: Vec<String> = s.by_type.iter().map(|(k, n)| format!("{n} {k}")).collect();
        f.note(format!("the bot sent {}", sent.join(", ")));
    }
    if in_flight > 0 {
        f.note(format!(
            "{in_flight} message(s) arrived within {} ms of `stop`, sent before the bot could have read it",
            IN_FLIGHT_GRACE.as_millis()
        ));
    }
    if reason == StopReason::BotHangup {
        f.note("the bot hung up (session.hangup); the suite drained its audio and sent stop with reason bot_hangup");
    }
    if check == BotCheck::Audio {
        if s.deltas == 0 || s.audio_samples == 0 {
            f.skip("the bot sent no audio during the call, so its audio could not be judged");
        } else {
            f.measure(
                "deltas",
                format!(
                    "{} averaging {} ms, the largest {} ms",
                    s.deltas,
                    s.audio_samples / s.deltas / 8,
                    s.largest_delta / 8
                ),
            );
        }
    }
}

fn after(
    list: &mut Vec<(Duration, String)>,
    in_flight: &mut usize,
    since_stop: Duration,
    kind: String,
) {
    if since_stop <= IN_FLIGHT_GRACE {
        *in_flight += 1;
    } else {
        list.push((since_stop, kind));
    }
}

fn pong(pings: &mut [(Instant, Vec<u8>, Option<Instant>)], at: Instant, payload: &[u8]) {
    if let Some(p) = pings
        .iter_mut()
        .find(|(_, sent, got)| got.is_none() && sent.as_slice() == payload)
    {
        p.2 = Some(at);
    }
}

/// Handles one item from the reader during the call; returns why the socket is
/// gone, if it is.
async fn handle(
    s: &mut Session<'_>,
    item: Option<(Instant, Incoming)>,
    pings: &mut [(Instant, Vec<u8>, Option<Instant>)],
) -> Option<String> {
    let Some((at, item)) = item else {
        return Some("the connection ended before `stop`".into());
    };
    match item {
        Incoming::Frame(Message::Text(t)) => s.on_text(at, &t).await,
        Incoming::Frame(Message::Binary(b)) => s.on_binary(at, &b).await,
        Incoming::Frame(Message::Pong(p)) => pong(pings, at, &p),
        Incoming::Frame(Message::Close(c)) => {
            let how = c
                .map(|c| {
                    format!(
                        " (close code {}, {:?})",
                        u16::from(c.code),
                        c.reason.as_str()
                    )
                })
                .unwrap_or_default();
            return Some(format!(
                "the bot closed the socket {}{how}, before `stop`: the bridge counts that as a lost bot and ends the call",
                s.since(at)
            ));
        }
        Incoming::Frame(_) => {}
        Incoming::Failed(e) => {
            return Some(format!(
                "the connection failed {}, before `stop`: {e}",
                s.since(at)
            ))
        }
        Incoming::Ended => {
            return Some(format!(
                "the connection ended {} without a close, before `stop`",
                s.since(at)
            ))
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_own_event(text: &str) -> Option<protocol::BotEvent> {
        protocol::parse_event(text).ok()
    }

    #[test]
    fn every_bot_scenario_has_a_valid_plan() {
        for s in scenario::builtin()
            .iter()
            .filter(|s| s.suite == SuiteKind::Bot)
        {
            plan(s).unwrap();
        }
    }

    #[test]
    fn extra_fields_keep_the_event_parseable() {
        let mut text = String::new();
        protocol::write_event(
            &mut text,
            "MZ1",
            2,
            &Event::Media {
                chunk: 1,
                timestamp_ms: 0,
                payload: &[0, 0],
            },
        );
        let extra = with_extra_fields(&text, "media");
        assert!(
            extra.contains(r#""media":{"x_conformance_extra":true,"chunk":1"#),
            "{extra}"
        );
        assert!(parse_own_event(&extra).is_some());
        let v: serde_json::Value = serde_json::from_str(&extra).unwrap();
        assert!(crate::schema::events().validate(&v).is_empty());
    }

    #[test]
    fn simulated_playout_echoes_marks_after_their_audio_and_on_clear() {
        let mut p = Playout::default();
        p.push(400);
        p.marks.push_back((p.enqueued, "a".into()));
        p.tick();
        p.tick();
        assert_eq!(p.reached_mark(), None);
        p.tick();
        assert_eq!(p.reached_mark().as_deref(), Some("a"));
        p.push(1000);
        p.marks.push_back((p.enqueued, "b".into()));
        p.tick();
        assert_eq!(p.clear(), vec!["b".to_string()]);
        p.marks.push_back((p.enqueued, "c".into()));
        assert_eq!(p.reached_mark().as_deref(), Some("c"));
    }
}
