//! The call engine: places calls, runs each live call on its 20 ms clock, and
//! records what happened.
//!
//! One task per call drives a [`PhoneLeg`] (the phone side), a [`CallSession`]
//! (the bot side) and the bot's socket ([`botlink::Link`]). It wakes for three
//! things: the phone's packets, which go to the bot as they arrive; the bot's
//! messages, whose first frame of audio after silence goes to the phone at once;
//! and a 20 ms clock, which paces the rest of the bot's audio to the phone. A
//! slow bot never blocks the phone side: its media is skipped, not queued
//! without bound.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use codecs::pcm::{Frame, FRAME_SAMPLES};
use protocol::{Direction, MediaFormat, StartInfo, StopReason};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::time::MissedTickBehavior;

use crate::botlink::{self, BotInput, Liveness};
use crate::carrier::{LegEvent, PhoneLeg, Route, SimCarrier};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::session::{Action, CallSession, Played, SessionConfig, SessionStats};
use crate::sip::{InboundCall, InboundHandler, SipUa};
use crate::store::{CallState, NewCall, Outcome, Store, StoreError};
use crate::wav::Recorder;
use tracing::Instrument;

/// Media frames a bot may fall behind before its media is skipped (5 s).
const MAX_BOT_BACKLOG: usize = 250;

/// An outbound bot call as accepted by the API; stored with the call so a
/// scheduled call can be placed after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboundCall {
    /// The number to call (normalised).
    pub to: String,
    /// Our caller ID.
    pub from: String,
    /// The bot's WebSocket URL.
    pub wss_url: String,
    /// Headers sent with the WebSocket upgrade.
    pub wss_headers: Vec<(String, String)>,
    /// Open the socket only once the phone answers.
    pub connect_ws_after_answer: bool,
    /// Per-call fields handed to the bot in `start.custom_parameters`.
    pub custom_parameters: serde_json::Map<String, serde_json::Value>,
    /// When to dial, if later than now.
    pub schedule_at: Option<DateTime<Utc>>,
}

/// The bot that takes a call.
#[derive(Debug, Clone)]
pub struct BotTarget {
    /// WebSocket URL.
    pub url: String,
    /// Headers for the upgrade request.
    pub headers: Vec<(String, String)>,
    /// Handed to the bot in `start.custom_parameters`.
    pub custom_parameters: serde_json::Map<String, serde_json::Value>,
}

/// A running bot call, between wake-ups of its task.
struct Live {
    id: i64,
    call_sid: String,
    target: BotTarget,
    session: CallSession,
    connecting: Option<tokio::task::JoinHandle<Result<botlink::BotSocket, botlink::ConnectError>>>,
    link: Option<botlink::Link>,
    ticks: u32,
    answered_at: Option<u32>,
    /// What the phone hears this tick.
    heard: Frame,
    recorder: Option<Recorder>,
    dtmf_input: String,
}

/// Everything a call's task needs besides its phone leg.
struct CallSetup {
    id: i64,
    call_sid: String,
    direction: Direction,
    from: String,
    to: String,
    target: BotTarget,
    connect_ws_after_answer: bool,
}

/// Makes an id such as `CA3f9c…`: a prefix and 32 hex digits.
pub fn new_sid(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

/// The running engine.
pub struct Engine {
    cfg: Config,
    store: Arc<Store>,
    carrier: SimCarrier,
    tls: Arc<rustls::ClientConfig>,
    recordings: PathBuf,
    shutdown: watch::Sender<bool>,
    sip: std::sync::OnceLock<Arc<SipUa>>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    live: AtomicUsize,
    idle: Notify,
}

/// How a call ended, before it is stored.
struct End {
    state: CallState,
    reason: String,
    sip_code: Option<u16>,
    /// The `stop` the bot gets, if it is still there.
    stop: Option<StopReason>,
    /// The phone side ended on its own (no need to hang it up).
    leg_done: bool,
}

impl End {
    fn new(state: CallState, reason: &str, stop: Option<StopReason>) -> End {
        End {
            state,
            reason: reason.into(),
            sip_code: None,
            stop,
            leg_done: false,
        }
    }

    /// An end the phone side brought about itself (nothing to hang up).
    fn by_leg(
        state: CallState,
        reason: &str,
        stop: Option<StopReason>,
        sip_code: Option<u16>,
    ) -> End {
        End {
            sip_code,
            leg_done: true,
            ..End::new(state, reason, stop)
        }
    }
}

impl Engine {
    /// An engine over `store`, recording into `recordings`.
    pub fn new(cfg: Config, store: Arc<Store>, recordings: PathBuf) -> anyhow::Result<Arc<Engine>> {
        let carrier = SimCarrier::new(&cfg.carrier)?;
        let tls = botlink::tls_config(cfg.bot.extra_ca_file.as_deref())?;
        std::fs::create_dir_all(&recordings)?;
        Ok(Arc::new(Engine {
            cfg,
            store,
            carrier,
            tls,
            recordings,
            shutdown: watch::channel(false).0,
            sip: std::sync::OnceLock::new(),
            metrics: Arc::new(Metrics::default()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            live: AtomicUsize::new(0),
            idle: Notify::new(),
        }))
    }

    /// The counters served at `/metrics`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Where recordings are written.
    pub fn recordings_dir(&self) -> &std::path::Path {
        &self.recordings
    }

    /// Calls waiting for their scheduled time, ringing, or up.
    pub fn live_calls(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Records a new outbound call and starts it (now, or at its scheduled time).
    /// Returns the log id and call id.
    pub fn place(self: &Arc<Self>, call: OutboundCall) -> Result<(i64, String), StoreError> {
        let call_sid = new_sid("CA");
        let request = serde_json::to_value(&call).unwrap_or_default();
        let id = self.store.insert_call(&NewCall {
            call_sid: call_sid.clone(),
            direction: "outbound".into(),
            from: call.from.clone(),
            to: call.to.clone(),
            scheduled_at: call.schedule_at,
            request,
        })?;
        self.spawn(id, call_sid.clone(), call);
        Ok((id, call_sid))
    }

    /// After a restart: schedules again the calls that were waiting for their time.
    pub fn resume_scheduled(self: &Arc<Self>) -> Result<usize, StoreError> {
        let waiting = self.store.recover()?;
        let n = waiting.len();
        for rec in waiting {
            match serde_json::from_value::<OutboundCall>(rec.request.clone()) {
                Ok(call) => self.spawn(rec.id, rec.call_sid, call),
                Err(e) => {
                    tracing::error!(call_sid = %rec.call_sid, "cannot resume scheduled call: {e}");
                    self.store.finish(
                        rec.id,
                        &Outcome {
                            state: CallState::Failed,
                            reason: "bad_stored_request".into(),
                            sip_code: None,
                            recording: None,
                            dtmf_input: String::new(),
                            phone_report: None,
                        },
                    )?;
                }
            }
        }
        Ok(n)
    }

    fn spawn(self: &Arc<Self>, id: i64, call_sid: String, call: OutboundCall) {
        let engine = self.clone();
        self.live.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let mut shutdown = engine.shutdown.subscribe();
            let wait = call
                .schedule_at
                .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
                .unwrap_or_default();
            let go = wait.is_zero()
                || tokio::select! {
                    _ = tokio::time::sleep(wait) => true,
                    _ = shutdown.wait_for(|s| *s) => false,
                };
            // A scheduled call interrupted by shutdown stays `initiated` and is
            // scheduled again at the next start.
            if go {
                engine.clone().drive(id, call_sid, call, shutdown).await;
            }
            if engine.live.fetch_sub(1, Ordering::Relaxed) == 1 {
                engine.idle.notify_waiters();
            }
        });
    }

    /// Ends every live call (reason `shutdown`) and waits for them, at most `limit`.
    pub async fn shutdown(&self, limit: Duration) {
        let idle = self.idle.notified();
        let _ = self.shutdown.send(true);
        if self.live_calls() > 0 {
            let _ = tokio::time::timeout(limit, idle).await;
        }
    }

    fn set_state(&self, id: i64, state: CallState) {
        if let Err(e) = self.store.set_state(id, state) {
            tracing::error!(id, "cannot store call state {}: {e}", state.as_str());
        }
    }

    async fn drive(
        self: Arc<Self>,
        id: i64,
        call_sid: String,
        call: OutboundCall,
        shutdown: watch::Receiver<bool>,
    ) {
        let span = tracing::info_span!("call", %call_sid);
        let leg = match self.route(&call.to, &call.from) {
            Ok(leg) => leg,
            Err((code, reason, why)) => {
                let _enter = span.enter();
                tracing::warn!("{why}");
                self.fail_early(id, reason, Some(code));
                return;
            }
        };
        let setup = CallSetup {
            id,
            call_sid,
            direction: Direction::Outbound,
            from: call.from.clone(),
            to: call.to.clone(),
            target: BotTarget {
                url: call.wss_url.clone(),
                headers: call.wss_headers.clone(),
                custom_parameters: call.custom_parameters.clone(),
            },
            connect_ws_after_answer: call.connect_ws_after_answer,
        };
        self.run_call(setup, leg, shutdown).instrument(span).await;
    }

    /// Picks the phone side for a number: a configured route (a trunk or the
    /// simulated carrier), else a registered extension, else the simulated
    /// carrier's numbering.
    fn route(
        &self,
        to: &str,
        from: &str,
    ) -> Result<Box<dyn PhoneLeg>, (u16, &'static str, String)> {
        let sip = self.sip.get();
        let route = self
            .cfg
            .routes
            .iter()
            .filter(|r| to.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len());
        if let Some(r) = route.filter(|r| r.trunk != "sim") {
            let (Some(ua), Some(trunk)) = (sip, sip.and_then(|u| u.trunk(&r.trunk))) else {
                return Err((
                    503,
                    "no_route",
                    format!(
                        "route {} names trunk {} but SIP is not running",
                        r.prefix, r.trunk
                    ),
                ));
            };
            let caller = trunk.caller_id.clone().unwrap_or_else(|| from.to_string());
            return ua
                .dial_trunk(trunk, to, &caller)
                .map_err(|e| (503, "sip_error", e.to_string()));
        }
        if route.is_none() {
            if let Some(ua) = sip.filter(|u| u.extension(to).is_some()) {
                return ua
                    .dial_extension(to, from)
                    .map_err(|e| (480, "extension_unavailable", e.to_string()));
            }
        }
        match self.carrier.dial(to) {
            Route::Virtual(leg) => Ok(leg),
            Route::NoRoute(why) => Err((404, "no_route", why)),
        }
    }

    async fn run_call(
        self: Arc<Self>,
        setup: CallSetup,
        mut leg: Box<dyn PhoneLeg>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let CallSetup {
            id,
            call_sid,
            direction,
            from,
            to,
            target,
            connect_ws_after_answer,
        } = setup;
        let inbound = direction == Direction::Inbound;
        let start = StartInfo {
            stream_sid: new_sid("MZ"),
            call_sid: call_sid.clone(),
            from,
            to: to.clone(),
            direction,
            media_format: MediaFormat::default(),
            tracks: vec!["inbound".into()],
            custom_parameters: target.custom_parameters.clone(),
        };
        tracing::info!(%to, ?direction, "call starts");

        let bot = &self.cfg.bot;
        let session = CallSession::new(
            start,
            SessionConfig {
                max_playout_samples: bot.max_playout_secs as usize * 8000,
                hangup_drain_ticks: bot.hangup_drain_secs * 50,
                max_message_bytes: bot.max_message_bytes,
                inband_dtmf: !leg.takes_out_of_band_dtmf(),
            },
        );
        let mut c = Live {
            id,
            call_sid,
            connecting: None,
            target,
            session,
            link: None,
            ticks: 0,
            answered_at: None,
            heard: [0; FRAME_SAMPLES],
            recorder: None,
            dtmf_input: String::new(),
        };
        let mut bot_lost = false;
        if inbound || !connect_ws_after_answer {
            c.connecting = Some(self.connect_bot(&c.target));
        }

        let mut clock = tokio::time::interval(Duration::from_millis(20));
        clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let ring_limit = self.cfg.calls.ring_timeout_secs * 50;
        let max_ticks = self.cfg.calls.max_duration_secs * 50;
        let metrics = self.metrics.clone();
        metrics.calls_active.fetch_add(1, Ordering::Relaxed);
        let mut counted = SessionStats::default();
        let (mut backlog_gauge, mut queue_gauge) = (0i64, 0i64);
        let mut hangup_after_keys: Option<(End, u32)> = None;
        // One wait for shutdown for the whole call: a new one per turn of the loop
        // would join and leave the channel's waiter list (a lock) three times a tick.
        let mut stopping = std::pin::pin!(shutdown.wait_for(|s| *s));

        let end = 'call: loop {
            tokio::select! {
                biased;
                _ = &mut stopping => {
                    let state = if c.answered_at.is_some() { CallState::Completed } else { CallState::Canceled };
                    break 'call End::new(state, "shutdown", Some(StopReason::Shutdown));
                }
                res = async { c.connecting.as_mut().expect("guarded").await }, if c.connecting.is_some() => {
                    c.connecting = None;
                    match res {
                        Ok(Ok(ws)) => {
                            tracing::info!(url = %c.target.url, "bot connected");
                            c.link = Some(self.open_link(ws));
                            c.session.on_bot_connected();
                            if inbound {
                                // Inbound calls are answered once their bot is there.
                                leg.answer();
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::warn!("{e}");
                            // The phone (if it answered) hears nothing and is hung up:
                            // the call failed, whatever state it had reached.
                            break 'call End::new(CallState::Failed, "bot_unreachable", None);
                        }
                        Err(e) => {
                            tracing::error!("bot connect task failed: {e}");
                            break 'call End::new(CallState::Failed, "bot_unreachable", None);
                        }
                    }
                }
                input = std::future::poll_fn(|cx| c.link.as_mut().expect("guarded").poll_input(cx)), if c.link.is_some() => {
                    match input {
                        BotInput::Text(t) => c.session.on_bot_text(&t),
                        BotInput::Binary(b) => c.session.on_bot_binary(&b),
                        BotInput::Lost(why) => {
                            tracing::warn!("bot lost: {why}");
                            bot_lost = true;
                            c.session.on_bot_lost();
                            let state = if c.answered_at.is_some() { CallState::Completed } else { CallState::Canceled };
                            break 'call End::new(state, "bot_lost", None);
                        }
                    }
                    if c.session.held_frame_ready() {
                        // The frame a tick held its slot for is here: it goes
                        // out now, in its place in the stream.
                        c.session.play_held(&mut c.heard);
                        leg.play_held(&c.heard);
                        record(&mut c.recorder, |r| r.heard(&c.heard));
                    } else if c.session.starts_talkspurt() && leg.ready_to_play_now() {
                        // The first frame of what the bot starts to say goes
                        // out now, and the clock restarts from it.
                        c.session.play(&mut c.heard, false);
                        leg.play_now(&c.heard);
                        record(&mut c.recorder, |r| r.heard(&c.heard));
                        clock.reset();
                    }
                }
                _ = std::future::poll_fn(|cx| leg.poll_arrival(cx)) => {
                    // Signalling first: an answer is taken before the audio
                    // that follows it, so the phone's first frame reaches the bot.
                    if let Some(e) = self.on_leg_events(&mut *leg, &mut c) {
                        break 'call e;
                    }
                    // The phone's audio goes to the bot as soon as it arrives.
                    let backlogged = backlog(&c.link) > MAX_BOT_BACKLOG;
                    hear_phone(&mut *leg, &mut c, backlogged);
                }
                _ = clock.tick() => {
                    c.ticks += 1;
                    // Bot audio for this tick is made first and goes out now;
                    // the phone's frames go to the bot below.
                    play_tick(&mut *leg, &mut c);
                    if let Some(e) = self.on_leg_events(&mut *leg, &mut c) {
                        break 'call e;
                    }
                    let backlogged = backlog(&c.link) > MAX_BOT_BACKLOG;
                    hear_phone(&mut *leg, &mut c, backlogged);
                    match c.answered_at {
                        Some(at) => {
                            let now = c.session.stats();
                            metrics.add_session(&counted, &now);
                            counted = now;
                            Metrics::shift(&metrics.bot_backlog_frames, &mut backlog_gauge, backlog(&c.link) as i64);
                            Metrics::shift(&metrics.playout_queued_samples, &mut queue_gauge, c.session.queued_samples() as i64);
                            if c.ticks - at >= max_ticks {
                                break 'call End::new(CallState::Completed, "max_duration", Some(StopReason::MaxDuration));
                            }
                        }
                        None if c.ticks >= ring_limit => {
                            let mut e = End::new(CallState::NoAnswer, "no-answer", Some(StopReason::NoAnswer));
                            e.sip_code = Some(408);
                            break 'call e;
                        }
                        None => {}
                    }
                }
            }
            if let Some(end) = self.pump(&mut c.session, &mut c.link, &mut *leg) {
                hangup_after_keys = Some((end, c.ticks));
            }
            // Keys the bot sent just before hanging up go out first (bounded).
            if let Some((end, since)) = hangup_after_keys.take() {
                if !leg.is_sending_dtmf() || c.ticks.saturating_sub(since) > 100 {
                    break 'call end;
                }
                hangup_after_keys = Some((end, since));
            }
        };

        let Live {
            id,
            mut session,
            mut connecting,
            mut link,
            recorder,
            dtmf_input,
            ..
        } = c;
        metrics.add_session(&counted, &session.stats());
        Metrics::shift(&metrics.bot_backlog_frames, &mut backlog_gauge, 0);
        Metrics::shift(&metrics.playout_queued_samples, &mut queue_gauge, 0);
        metrics.calls_active.fetch_sub(1, Ordering::Relaxed);
        if let Some(mut pending) = connecting.take() {
            // A bot still shaking hands when the call ends (busy, failed, ...)
            // is let in, briefly, so it hears `stop` with the outcome.
            let limit = Duration::from_millis(self.cfg.bot.connect_timeout_ms);
            match tokio::time::timeout(limit, &mut pending).await {
                Ok(Ok(Ok(ws))) if end.stop.is_some() => {
                    link = Some(self.open_link(ws));
                    session.on_bot_connected();
                }
                Ok(_) => {}
                Err(_) => pending.abort(),
            }
        }
        if let Some(reason) = end.stop {
            session.finish(reason);
        }
        self.pump(&mut session, &mut link, &mut *leg);
        if !end.leg_done {
            leg.hangup();
        }
        let recording = recorder.and_then(|r| match r.finish() {
            Ok(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            Err(e) => {
                tracing::error!("cannot finish recording: {e}");
                None
            }
        });
        let report = leg.report();
        self.conclude(id, end, recording, dtmf_input, report);
        // Let the bot's socket deliver `stop` and close politely before the call
        // counts as over (a shutdown waits for that).
        if let Some(link) = link.filter(|_| !bot_lost) {
            link.finish(Duration::from_secs(3)).await;
        }
    }

    /// Handles what the phone side signalled; `Some` when it ended the call.
    fn on_leg_events(&self, leg: &mut dyn PhoneLeg, c: &mut Live) -> Option<End> {
        let mut ended = None;
        while let Some(ev) = leg.poll_event() {
            match ev {
                LegEvent::Ringing => {
                    tracing::info!("ringing");
                    self.set_state(c.id, CallState::Ringing);
                }
                LegEvent::Answered => {
                    tracing::info!("answered");
                    c.answered_at = Some(c.ticks);
                    self.set_state(c.id, CallState::InProgress);
                    let path = self.recordings.join(format!("{}.wav", c.call_sid));
                    c.recorder = Recorder::create(&path)
                        .map_err(|e| tracing::error!("cannot record to {}: {e}", path.display()))
                        .ok();
                    c.session.on_answer();
                    if c.link.is_none() && c.connecting.is_none() {
                        c.connecting = Some(self.connect_bot(&c.target));
                    }
                }
                LegEvent::Busy => {
                    ended = Some(End::by_leg(
                        CallState::Busy,
                        "busy",
                        Some(StopReason::Busy),
                        Some(486),
                    ));
                }
                LegEvent::NoAnswer { code } => {
                    ended = Some(End::by_leg(
                        CallState::NoAnswer,
                        "no-answer",
                        Some(StopReason::NoAnswer),
                        Some(code),
                    ));
                }
                LegEvent::HungUp if c.answered_at.is_none() => {
                    ended = Some(End::by_leg(
                        CallState::Canceled,
                        "caller_canceled",
                        Some(StopReason::CallEnded),
                        None,
                    ));
                }
                LegEvent::Failed { code, reason } => {
                    tracing::warn!(code, "call failed: {reason}");
                    ended = Some(End::by_leg(
                        CallState::Failed,
                        "failed",
                        Some(StopReason::Failed),
                        Some(code),
                    ));
                }
                LegEvent::HungUp => {
                    ended = Some(End::by_leg(
                        CallState::Completed,
                        "callended",
                        Some(StopReason::CallEnded),
                        None,
                    ));
                }
                LegEvent::Dtmf { digit, duration_ms } => {
                    c.dtmf_input.push(digit);
                    c.session.on_phone_dtmf(digit, duration_ms);
                }
            }
        }
        ended
    }

    /// Attaches the SIP user agent (outbound routes to trunks and extensions).
    pub fn set_sip(&self, ua: Arc<SipUa>) {
        let _ = self.sip.set(ua);
    }

    /// The SIP user agent, if running.
    pub fn sip(&self) -> Option<&Arc<SipUa>> {
        self.sip.get()
    }

    fn did(&self, number: &str) -> Option<&crate::config::DidConfig> {
        let digits = |n: &str| n.trim_start_matches('+').to_string();
        self.cfg
            .dids
            .iter()
            .find(|d| digits(&d.number) == digits(number))
    }

    /// An inbound call to one of our DIDs: record it, find its bot (fixed or
    /// from the DID's CONFIG_API), then run it like any call.
    async fn inbound(self: Arc<Self>, call: InboundCall) {
        let call_sid = new_sid("CA");
        let span = tracing::info_span!("call", %call_sid);
        let mut leg = call.leg;
        let Some(did) = self.did(&call.to).cloned() else {
            leg.hangup();
            return;
        };
        let request = serde_json::json!({
            "did": did.number, "sip_call_id": call.sip_call_id,
            "bot_url": did.bot_url, "config_api": did.config_api, "extension": did.extension,
        });
        let id = match self.store.insert_call(&NewCall {
            call_sid: call_sid.clone(),
            direction: "inbound".into(),
            from: call.from.clone(),
            to: call.to.clone(),
            scheduled_at: None,
            request,
        }) {
            Ok(id) => id,
            Err(e) => {
                tracing::error!("cannot record an inbound call: {e}");
                leg.hangup();
                return;
            }
        };
        self.set_state(id, CallState::Ringing);
        if let Some(ext) = &did.extension {
            let shutdown = self.shutdown.subscribe();
            self.connect_extension(id, call_sid, ext, &call.from, leg, shutdown)
                .instrument(span)
                .await;
            return;
        }
        let target = match (&did.bot_url, &did.config_api) {
            (Some(url), _) => Ok(BotTarget {
                url: url.clone(),
                headers: did.headers.clone().into_iter().collect(),
                custom_parameters: Default::default(),
            }),
            (None, Some(api)) => {
                self.ask_config_api(api, &did, &call.from, &call.to, &call_sid)
                    .instrument(span.clone())
                    .await
            }
            (None, None) => Err((
                "no_target",
                format!("DID {} names no bot, CONFIG_API or extension", did.number),
            )),
        };
        let target = match target {
            Ok(t) => t,
            Err((reason, why)) => {
                let _enter = span.enter();
                tracing::warn!("inbound call to {} refused: {why}", call.to);
                leg.hangup();
                self.fail_early(id, reason, Some(480));
                return;
            }
        };
        let setup = CallSetup {
            id,
            call_sid,
            direction: Direction::Inbound,
            from: call.from,
            to: call.to,
            target,
            connect_ws_after_answer: false,
        };
        let shutdown = self.shutdown.subscribe();
        self.run_call(setup, leg, shutdown).instrument(span).await;
    }

    /// Rings an extension for an inbound caller and, once it answers, carries
    /// audio and keys between the two legs on one clock (no bot involved).
    async fn connect_extension(
        &self,
        id: i64,
        call_sid: String,
        ext: &str,
        from: &str,
        mut caller: Box<dyn PhoneLeg>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut callee = match self.sip.get().map(|ua| ua.dial_extension(ext, from)) {
            Some(Ok(leg)) => leg,
            Some(Err(e)) => {
                tracing::warn!("{e}");
                caller.hangup();
                self.fail_early(id, "extension_unavailable", Some(480));
                return;
            }
            None => {
                caller.hangup();
                self.fail_early(id, "no_route", None);
                return;
            }
        };
        tracing::info!(extension = ext, "ringing extension");
        let mut clock = tokio::time::interval(Duration::from_millis(20));
        clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let ring_limit = self.cfg.calls.ring_timeout_secs * 50;
        let max_ticks = self.cfg.calls.max_duration_secs * 50;
        let (mut a_said, mut b_said): (Frame, Frame) = ([0; FRAME_SAMPLES], [0; FRAME_SAMPLES]);
        let (mut a_heard, mut b_heard): (Frame, Frame) = ([0; FRAME_SAMPLES], [0; FRAME_SAMPLES]);
        let mut ticks = 0u32;
        let mut answered_at: Option<u32> = None;
        let mut recorder: Option<Recorder> = None;
        let mut dtmf_input = String::new();
        let mut stopping = std::pin::pin!(shutdown.wait_for(|s| *s));
        let end = 'call: loop {
            tokio::select! {
                biased;
                _ = &mut stopping => {
                    let state = if answered_at.is_some() { CallState::Completed } else { CallState::Canceled };
                    break 'call End::new(state, "shutdown", None);
                }
                _ = clock.tick() => {}
            }
            ticks += 1;
            caller.tick(&a_heard);
            callee.tick(&b_heard);
            caller.next_said(&mut a_said, true);
            callee.next_said(&mut b_said, true);
            if answered_at.is_some() {
                a_heard = b_said;
                b_heard = a_said;
                if let Some(rec) = recorder.as_mut() {
                    if rec.write(&a_said, &b_said).is_err() {
                        recorder = None;
                    }
                }
            }
            while let Some(ev) = caller.poll_event() {
                match ev {
                    LegEvent::HungUp => {
                        callee.hangup();
                        let (state, reason) = if answered_at.is_some() {
                            (CallState::Completed, "callended")
                        } else {
                            (CallState::Canceled, "caller_canceled")
                        };
                        break 'call End::by_leg(state, reason, None, None);
                    }
                    LegEvent::Dtmf { digit, .. } => {
                        dtmf_input.push(digit);
                        callee.send_dtmf(digit);
                    }
                    _ => {}
                }
            }
            while let Some(ev) = callee.poll_event() {
                let mut fail = |state, reason: &str, code: Option<u16>| {
                    caller.hangup();
                    End::by_leg(state, reason, None, code)
                };
                match ev {
                    LegEvent::Answered => {
                        answered_at = Some(ticks);
                        caller.answer();
                        self.set_state(id, CallState::InProgress);
                        let path = self.recordings.join(format!("{call_sid}.wav"));
                        recorder = Recorder::create(&path).ok();
                    }
                    LegEvent::Busy => break 'call fail(CallState::Busy, "busy", Some(486)),
                    LegEvent::NoAnswer { code } => {
                        break 'call fail(CallState::NoAnswer, "no-answer", Some(code))
                    }
                    LegEvent::Failed { code, .. } => {
                        break 'call fail(CallState::Failed, "failed", Some(code))
                    }
                    LegEvent::HungUp => {
                        let state = if answered_at.is_some() {
                            CallState::Completed
                        } else {
                            CallState::Failed
                        };
                        break 'call fail(state, "extension_hangup", None);
                    }
                    LegEvent::Dtmf { digit, .. } => {
                        caller.send_dtmf(digit);
                    }
                    LegEvent::Ringing => {}
                }
            }
            match answered_at {
                None if ticks >= ring_limit => {
                    callee.hangup();
                    caller.hangup();
                    break 'call End::by_leg(CallState::NoAnswer, "no-answer", None, Some(408));
                }
                Some(at) if ticks - at >= max_ticks => {
                    break 'call End::new(CallState::Completed, "max_duration", None);
                }
                _ => {}
            }
        };
        if !end.leg_done {
            caller.hangup();
            callee.hangup();
        }
        let recording = recorder
            .and_then(|r| r.finish().ok())
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        self.conclude(id, end, recording, dtmf_input, callee.report());
    }

    /// Asks a DID's CONFIG_API which bot takes the call.
    async fn ask_config_api(
        &self,
        api: &str,
        did: &crate::config::DidConfig,
        from: &str,
        to: &str,
        call_sid: &str,
    ) -> Result<BotTarget, (&'static str, String)> {
        let body = serde_json::json!({
            "From": from, "To": to, "Direction": "inbound",
            "FlowId": did.number, "SessionId": call_sid, "ServerId": "bridge",
        });
        let timeout = Duration::from_millis(did.config_api_timeout_ms);
        let resp = match tokio::time::timeout(timeout, self.http.post(api).json(&body).send()).await
        {
            Err(_) => {
                return Err((
                    "config_api_timeout",
                    format!(
                        "CONFIG_API {api} did not answer within {} ms",
                        timeout.as_millis()
                    ),
                ))
            }
            Ok(Err(e)) => return Err(("config_api_failed", format!("CONFIG_API {api}: {e}"))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if !status.is_success() {
            return Err((
                "config_api_failed",
                format!("CONFIG_API {api} answered HTTP {status}"),
            ));
        }
        let answer: serde_json::Value = match tokio::time::timeout(timeout, resp.json()).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                return Err((
                    "config_api_failed",
                    format!("CONFIG_API {api} answer is not JSON: {e}"),
                ))
            }
            Err(_) => {
                return Err((
                    "config_api_timeout",
                    format!("CONFIG_API {api} answer body too slow"),
                ))
            }
        };
        let Some(url) = answer.get("url").and_then(|u| u.as_str()) else {
            return Err((
                "config_api_failed",
                format!("CONFIG_API {api} answer has no \"url\": {answer}"),
            ));
        };
        botlink::check_url(url, self.cfg.bot.allow_insecure_ws).map_err(|e| {
            (
                "config_api_failed",
                format!("CONFIG_API {api} named a bad bot url: {e}"),
            )
        })?;
        let mut headers = Vec::new();
        if let Some(h) = answer.get("wsHeaders").and_then(|h| h.as_object()) {
            for (k, v) in h {
                let v = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                headers.push((k.clone(), v));
            }
        }
        if let Some(fmt) = answer.get("audioFormat") {
            let enc = fmt
                .get("encoding")
                .and_then(|e| e.as_str())
                .unwrap_or("raw/slin");
            let rate = fmt
                .get("sample_rate")
                .or_else(|| fmt.get("sampleRate"))
                .and_then(|r| r.as_u64())
                .unwrap_or(8000);
            if !matches!(enc, "raw/slin" | "pcm") || rate != 8000 {
                return Err(("config_api_failed", format!("CONFIG_API {api} asked for audioFormat {fmt}; this bridge streams 8 kHz raw/slin only")));
            }
        }
        Ok(BotTarget {
            url: url.to_string(),
            headers,
            custom_parameters: Default::default(),
        })
    }

    /// Sends the session's events to the bot and carries out its actions.
    /// Returns how the call ends if the bot asked to hang up.
    fn pump(
        &self,
        session: &mut CallSession,
        link: &mut Option<botlink::Link>,
        leg: &mut dyn PhoneLeg,
    ) -> Option<End> {
        while let Some(ev) = session.poll_event() {
            if let Some(link) = link.as_mut() {
                link.send(ev);
            }
        }
        let mut end = None;
        while let Some(a) = session.poll_action() {
            match a {
                Action::Hangup => {
                    end = Some(End::new(
                        CallState::Completed,
                        "bot_hangup",
                        Some(StopReason::BotHangup),
                    ))
                }
                Action::Dtmf(d) => {
                    if !leg.send_dtmf(d) {
                        let mut buf = [0u8; 4];
                        session.play_dtmf_tones(d.encode_utf8(&mut buf));
                    }
                }
            }
        }
        end
    }

    /// Takes over an open bot socket.
    fn open_link(&self, ws: botlink::BotSocket) -> botlink::Link {
        let live = Liveness {
            ping_every: Duration::from_secs(self.cfg.bot.ping_interval_secs.max(1)),
            pong_timeout: Duration::from_secs(self.cfg.bot.pong_timeout_secs.max(1)),
        };
        botlink::Link::new(ws, live)
    }

    fn connect_bot(
        &self,
        target: &BotTarget,
    ) -> tokio::task::JoinHandle<Result<botlink::BotSocket, botlink::ConnectError>> {
        let url = target.url.clone();
        let headers = target.headers.clone();
        let tls = self.tls.clone();
        let timeout = Duration::from_millis(self.cfg.bot.connect_timeout_ms);
        // The socket accepts frames well past the protocol limit, so that an
        // oversized message gets an `error` event instead of a dropped socket.
        let max = (self.cfg.bot.max_message_bytes * 4).max(16 << 20);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            let r = botlink::connect(&url, &headers, tls, timeout, max).await;
            match &r {
                Ok(_) => {
                    metrics.bot_connects.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .bot_connect_ms_sum
                        .fetch_add(began.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    metrics.bot_connect_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            r
        })
    }

    /// Records a call that ended before its clock started.
    fn fail_early(&self, id: i64, reason: &str, sip_code: Option<u16>) {
        let end = End::by_leg(CallState::Failed, reason, None, sip_code);
        self.conclude(id, end, None, String::new(), None);
    }

    fn conclude(
        &self,
        id: i64,
        end: End,
        recording: Option<String>,
        dtmf_input: String,
        phone_report: Option<serde_json::Value>,
    ) {
        tracing::info!(state = end.state.as_str(), reason = %end.reason, "call ended");
        self.metrics.call_ended(end.state.as_str());
        if let Some(r) = phone_report.as_ref() {
            self.metrics.add_rtp(r);
        }
        let outcome = Outcome {
            state: end.state,
            reason: end.reason,
            sip_code: end.sip_code,
            recording,
            dtmf_input,
            phone_report,
        };
        if let Err(e) = self.store.finish(id, &outcome) {
            tracing::error!(id, "cannot store call outcome: {e}");
        }
    }
}

/// Hands inbound SIP calls to the engine.
pub struct Inbound(pub Arc<Engine>);

impl InboundHandler for Inbound {
    fn knows_did(&self, did: &str) -> bool {
        self.0.did(did).is_some()
    }

    fn accept(&self, call: InboundCall) {
        let engine = self.0.clone();
        engine.live.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            engine.clone().inbound(call).await;
            if engine.live.fetch_sub(1, Ordering::Relaxed) == 1 {
                engine.idle.notify_waiters();
            }
        });
    }
}

/// Hands audio to a call's recorder, if it has one; a recorder that fails is
/// dropped (the call goes on unrecorded).
fn record(
    recorder: &mut Option<Recorder>,
    write: impl FnOnce(&mut Recorder) -> std::io::Result<()>,
) {
    if let Some(rec) = recorder.as_mut() {
        if let Err(e) = write(rec) {
            tracing::error!("recording stopped: {e}");
            *recorder = None;
        }
    }
}

/// Hands every frame of the phone's that is ready to the bot (as `media`) and to
/// the recording; before the answer they are dropped.
fn hear_phone(leg: &mut dyn PhoneLeg, c: &mut Live, bot_backlogged: bool) {
    let mut said: Frame = [0; FRAME_SAMPLES];
    while leg.next_said(&mut said, false) {
        if c.answered_at.is_some() {
            c.session.hear(&said, bot_backlogged);
            record(&mut c.recorder, |r| r.said(&said));
        }
    }
}

/// One tick of bot audio to the phone. A slot held on the last tick for a late
/// frame is filled or given up first; then this tick's frame is played, or
/// held in its turn.
fn play_tick(leg: &mut dyn PhoneLeg, c: &mut Live) {
    if c.answered_at.is_some() {
        if let Some(played) = c.session.release_held(&mut c.heard) {
            match played {
                Played::Sound => leg.play_held(&c.heard),
                _ => leg.skip_held(),
            }
            record(&mut c.recorder, |r| r.heard(&c.heard));
        }
        if c.session.play(&mut c.heard, leg.ready_to_play_now()) == Played::Held {
            leg.tick_held();
            return;
        }
        record(&mut c.recorder, |r| r.heard(&c.heard));
    }
    leg.tick(&c.heard);
}

/// `media` events waiting for a bot's socket.
fn backlog(link: &Option<botlink::Link>) -> usize {
    link.as_ref().map_or(0, |l| l.backlog())
}
