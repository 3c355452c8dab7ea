//! The call engine: places calls, runs each live call on its 20 ms clock, and
//! records what happened.
//!
//! One task per call drives a [`PhoneLeg`] (the phone side) and a
//! [`CallSession`] (the bot side) from one clock tick, so both directions share
//! a timer. The bot socket has its own small I/O task ([`crate::botlink::run`]);
//! a slow bot never blocks the phone side: its media is skipped, not queued
//! without bound.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use codecs::pcm::{Frame, FRAME_SAMPLES};
use protocol::{Direction, MediaFormat, StartInfo, StopReason};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::MissedTickBehavior;

use crate::botlink::{self, Backlog, BotInput, Liveness};
use crate::carrier::{LegEvent, PhoneLeg, Route, SimCarrier};
use crate::config::Config;
use crate::session::{Action, CallSession, SessionConfig};
use crate::store::{CallState, NewCall, Outcome, Store, StoreError};
use crate::wav::Recorder;

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
            live: AtomicUsize::new(0),
            idle: Notify::new(),
        }))
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
        mut shutdown: watch::Receiver<bool>,
    ) {
        let span = tracing::info_span!("call", %call_sid);
        let _enter = span.enter();

        let start = StartInfo {
            stream_sid: new_sid("MZ"),
            call_sid: call_sid.clone(),
            from: call.from.clone(),
            to: call.to.clone(),
            direction: Direction::Outbound,
            media_format: MediaFormat::default(),
            tracks: vec!["inbound".into()],
            custom_parameters: call.custom_parameters.clone(),
        };
        let mut leg: Box<dyn PhoneLeg> = match self.carrier.dial(&call.to) {
            Route::Virtual(leg) => leg,
            Route::NoRoute(why) => {
                tracing::warn!("{why}");
                let mut end = End::new(CallState::Failed, "no_route", None);
                end.sip_code = Some(404);
                end.leg_done = true;
                self.conclude(id, end, None, String::new(), None);
                return;
            }
        };
        tracing::info!(to = %call.to, "dialing");

        let bot = &self.cfg.bot;
        let mut session = CallSession::new(
            start,
            SessionConfig {
                max_playout_samples: bot.max_playout_secs as usize * 8000,
                hangup_drain_ticks: bot.hangup_drain_secs * 50,
                max_message_bytes: bot.max_message_bytes,
                inband_dtmf: !leg.takes_out_of_band_dtmf(),
            },
        );
        let (in_tx, mut in_rx) = mpsc::channel::<BotInput>(64);
        let mut out_tx: Option<mpsc::UnboundedSender<crate::session::Outgoing>> = None;
        let backlog = Arc::new(Backlog::default());
        let mut connecting = None;
        if !call.connect_ws_after_answer {
            connecting = Some(self.connect_bot(&call));
        }

        let mut clock = tokio::time::interval(Duration::from_millis(20));
        clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let ring_limit = self.cfg.calls.ring_timeout_secs * 50;
        let max_ticks = self.cfg.calls.max_duration_secs * 50;
        let mut ticks: u32 = 0;
        let mut answered_at: Option<u32> = None;
        let mut said: Frame = [0; FRAME_SAMPLES];
        let mut heard: Frame = [0; FRAME_SAMPLES];
        let mut recorder: Option<Recorder> = None;
        let mut dtmf_input = String::new();

        let end = 'call: loop {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => {
                    let state = if answered_at.is_some() { CallState::Completed } else { CallState::Canceled };
                    break 'call End::new(state, "shutdown", Some(StopReason::Shutdown));
                }
                res = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                    connecting = None;
                    match res {
                        Ok(Ok(ws)) => {
                            tracing::info!(url = %call.wss_url, "bot connected");
                            let (tx, rx) = mpsc::unbounded_channel();
                            let live = Liveness {
                                ping_every: Duration::from_secs(bot.ping_interval_secs.max(1)),
                                pong_timeout: Duration::from_secs(bot.pong_timeout_secs.max(1)),
                            };
                            tokio::spawn(botlink::run(ws, rx, in_tx.clone(), backlog.clone(), live));
                            out_tx = Some(tx);
                            session.on_bot_connected();
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
                Some(input) = in_rx.recv() => match input {
                    BotInput::Text(t) => session.on_bot_text(&t),
                    BotInput::Binary(b) => session.on_bot_binary(&b),
                    BotInput::Lost(why) => {
                        tracing::warn!("bot lost: {why}");
                        session.on_bot_lost();
                        let state = if answered_at.is_some() { CallState::Completed } else { CallState::Canceled };
                        break 'call End::new(state, "bot_lost", None);
                    }
                },
                _ = clock.tick() => {
                    ticks += 1;
                    leg.tick(&heard, &mut said);
                    if let Some(rec) = recorder.as_mut() {
                        if let Err(e) = rec.write(&said, &heard) {
                            tracing::error!("recording stopped: {e}");
                            recorder = None;
                        }
                    }
                    let mut ended = None;
                    while let Some(ev) = leg.poll_event() {
                        match ev {
                            LegEvent::Ringing => {
                                tracing::info!("ringing");
                                self.set_state(id, CallState::Ringing);
                            }
                            LegEvent::Answered => {
                                tracing::info!("answered");
                                answered_at = Some(ticks);
                                self.set_state(id, CallState::InProgress);
                                let path = self.recordings.join(format!("{call_sid}.wav"));
                                recorder = Recorder::create(&path)
                                    .map_err(|e| tracing::error!("cannot record to {}: {e}", path.display()))
                                    .ok();
                                session.on_answer();
                                if call.connect_ws_after_answer && out_tx.is_none() && connecting.is_none() {
                                    connecting = Some(self.connect_bot(&call));
                                }
                            }
                            LegEvent::Busy => {
                                let mut e = End::new(CallState::Busy, "busy", Some(StopReason::Busy));
                                e.sip_code = Some(486);
                                e.leg_done = true;
                                ended = Some(e);
                            }
                            LegEvent::Failed { code, reason } => {
                                tracing::warn!(code, "call failed: {reason}");
                                let mut e = End::new(CallState::Failed, "failed", Some(StopReason::Failed));
                                e.sip_code = Some(code);
                                e.leg_done = true;
                                ended = Some(e);
                            }
                            LegEvent::HungUp => {
                                let mut e = End::new(CallState::Completed, "callended", Some(StopReason::CallEnded));
                                e.leg_done = true;
                                ended = Some(e);
                            }
                            LegEvent::Dtmf { digit, duration_ms } => {
                                dtmf_input.push(digit);
                                session.on_phone_dtmf(digit, duration_ms);
                            }
                        }
                    }
                    if let Some(e) = ended {
                        break 'call e;
                    }
                    match answered_at {
                        Some(at) => {
                            session.tick(&said, &mut heard, backlog.get() > MAX_BOT_BACKLOG);
                            if ticks - at >= max_ticks {
                                break 'call End::new(CallState::Completed, "max_duration", Some(StopReason::MaxDuration));
                            }
                        }
                        None if ticks >= ring_limit => {
                            let mut e = End::new(CallState::NoAnswer, "no-answer", Some(StopReason::NoAnswer));
                            e.sip_code = Some(408);
                            break 'call e;
                        }
                        None => {}
                    }
                }
            }
            if let Some(end) = self.pump(&mut session, &out_tx, &backlog, &mut *leg) {
                break 'call end;
            }
        };

        if let Some(pending) = connecting.take() {
            pending.abort();
        }
        if let Some(reason) = end.stop {
            session.finish(reason);
        }
        self.pump(&mut session, &out_tx, &backlog, &mut *leg);
        drop(out_tx);
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
    }

    /// Sends the session's events to the bot and carries out its actions.
    /// Returns how the call ends if the bot asked to hang up.
    fn pump(
        &self,
        session: &mut CallSession,
        out: &Option<mpsc::UnboundedSender<crate::session::Outgoing>>,
        backlog: &Backlog,
        leg: &mut dyn PhoneLeg,
    ) -> Option<End> {
        while let Some(ev) = session.poll_event() {
            if let Some(tx) = out {
                if ev.is_media {
                    backlog.add();
                }
                let _ = tx.send(ev);
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
                Action::Dtmf(d) => leg.send_dtmf(d),
            }
        }
        end
    }

    fn connect_bot(
        &self,
        call: &OutboundCall,
    ) -> tokio::task::JoinHandle<Result<botlink::BotSocket, botlink::ConnectError>> {
        let url = call.wss_url.clone();
        let headers = call.wss_headers.clone();
        let tls = self.tls.clone();
        let timeout = Duration::from_millis(self.cfg.bot.connect_timeout_ms);
        // The socket accepts frames well past the protocol limit, so that an
        // oversized message gets an `error` event instead of a dropped socket.
        let max = (self.cfg.bot.max_message_bytes * 4).max(16 << 20);
        tokio::spawn(async move { botlink::connect(&url, &headers, tls, timeout, max).await })
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
