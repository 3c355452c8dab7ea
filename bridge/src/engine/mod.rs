//! The call engine: places calls, runs each live call on its 20 ms clock, and
//! records what happened.
//!
//! The engine routes: it finds the phone side for a number (a trunk, a
//! registered extension, the simulated carrier) and the bot for a DID, then
//! hands each call to its own task, [`crate::call::driver`], which runs the
//! call's [`Call`] state machine on a 20 ms clock until it ends, and stores
//! the outcome.

pub mod registry;

pub use registry::{CallCommand, CommandError, Registry};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use protocol::{Direction, MediaFormat, StartInfo};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::botlink::session::SessionConfig;
use crate::botlink::{self, Liveness};
use crate::call::driver;
use crate::call::state::TICKS_PER_SEC;
use crate::call::{AttendedBy, Call, CallConfig, DialFailure, DialTarget, End, EndReason, Start};
use crate::carrier::{PhoneLeg, Route, SimCarrier};
use crate::config::{Config, Fallback};
use crate::flow::{ClipLibrary, DialPlan, DialPlanNode, FlowEnv, FlowRun, NodeKind, SoundClipNode};
use crate::metrics::Metrics;
use crate::sip::{InboundCall, InboundHandler, SipUa};
use crate::store::{CallState, LegRecord, NewCall, Outcome, Store, StoreError};
use tracing::Instrument;

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

/// Makes an id such as `CA3f9c…`: a prefix and 32 hex digits.
/// Why a call could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The bridge is shutting down.
    #[error("the bridge is shutting down and takes no new calls; try again shortly")]
    Draining,
    /// The bridge carries `[calls] max_calls` already.
    #[error("the bridge carries its most calls at once ({0}); try again shortly")]
    Full(usize),
    /// The bridge's clock runs late: the machine is out of CPU.
    #[error("the bridge is overloaded (its 20 ms clock ran {0} ms late); try again shortly")]
    Overloaded(u64),
    /// The call could not be stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

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
    /// Which special address ranges bots may be reached in.
    guard: Arc<crate::netguard::Guard>,
    recordings: PathBuf,
    shutdown: watch::Sender<bool>,
    sip: std::sync::OnceLock<Arc<SipUa>>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    live: AtomicUsize,
    idle: Notify,
    /// The calls that are up, each with its command inbox.
    calls: Registry,
    /// Shutting down: no new calls are taken.
    draining: AtomicBool,
    /// Calls carried now, against `[calls] max_calls` (admission).
    carried: AtomicUsize,
    /// What a caller on hold hears (`[calls] hold_audio`), 8 kHz.
    hold: Option<Arc<[i16]>>,
    /// The flows calls can be handed to, and what they refer to.
    flows: Arc<FlowEnv>,
}

/// Why a target cannot be dialled; the call goes on.
#[derive(Debug)]
pub(crate) struct DialError {
    /// What the call makes of it.
    pub failure: DialFailure,
    /// What went wrong, for the log.
    pub why: String,
}

impl DialError {
    fn new(code: u16, reason: EndReason, why: String) -> DialError {
        DialError {
            failure: DialFailure { code, reason },
            why,
        }
    }
}

/// What a finished call leaves besides how it ended.
#[derive(Debug, Default)]
pub(crate) struct Concluded {
    pub recording: Option<String>,
    pub dtmf_input: String,
    pub phone_report: Option<serde_json::Value>,
    pub legs: Vec<LegRecord>,
    pub attended: Option<AttendedBy>,
}

impl Engine {
    /// An engine over `store`, recording into `recordings`.
    pub fn new(cfg: Config, store: Arc<Store>, recordings: PathBuf) -> anyhow::Result<Arc<Engine>> {
        let carrier = SimCarrier::new(&cfg.carrier)?;
        let tls = botlink::tls_config(&cfg.bot)?;
        let guard = Arc::new(
            crate::netguard::Guard::new(&cfg.outbound.allow_networks)
                .map_err(|e| anyhow::anyhow!("outbound.allow_networks: {e}"))?,
        );
        let http = guard.http_client(Duration::from_secs(10), cfg.outbound.max_redirects)?;
        std::fs::create_dir_all(&recordings)?;
        let hold = match &cfg.calls.hold_audio {
            Some(path) => Some(
                crate::flow::clips::read_8k(path)
                    .map_err(|e| anyhow::anyhow!("[calls] hold_audio {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let flows = Arc::new(flow_env(&cfg, &store)?);
        Ok(Arc::new(Engine {
            hold,
            flows,
            cfg,
            store,
            carrier,
            tls,
            guard,
            recordings,
            shutdown: watch::channel(false).0,
            sip: std::sync::OnceLock::new(),
            metrics: Arc::new(Metrics::default()),
            http,
            live: AtomicUsize::new(0),
            idle: Notify::new(),
            calls: Registry::default(),
            draining: AtomicBool::new(false),
            carried: AtomicUsize::new(0),
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

    /// Whether a flow of this id exists.
    pub(crate) fn has_flow(&self, id: &str) -> bool {
        self.flows.flows.contains_key(id)
    }

    /// A run of the flow (or the prompt) `target` names, starting now; `None`
    /// when there is no such flow or clip.
    pub(crate) fn flow_run(&self, target: &DialTarget) -> Option<FlowRun> {
        let plan = match target {
            DialTarget::Flow(id) => self.flows.flows.get(id)?.clone(),
            DialTarget::Prompt(clip) if self.flows.clips.contains(clip) => {
                Arc::new(prompt_plan(clip))
            }
            _ => return None,
        };
        Some(FlowRun::new(plan, self.flows.clone(), Utc::now()))
    }

    /// What a caller on hold hears, if the config names it (else silence).
    pub fn hold_audio(&self) -> Option<&[i16]> {
        self.hold.as_deref()
    }

    /// Where recordings are written.
    pub fn recordings_dir(&self) -> &std::path::Path {
        &self.recordings
    }

    /// The live calls, to act on one by its call sid.
    pub fn calls(&self) -> &Registry {
        &self.calls
    }

    /// Calls waiting for their scheduled time, ringing, or up.
    pub fn live_calls(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// True once the bridge is shutting down: new calls are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Records a new outbound call and starts it (now, or at its scheduled time).
    /// Returns the log id and call id.
    pub fn place(self: &Arc<Self>, call: OutboundCall) -> Result<(i64, String), PlaceError> {
        if self.is_draining() {
            self.metrics
                .calls_refused_shutdown
                .fetch_add(1, Ordering::Relaxed);
            return Err(PlaceError::Draining);
        }
        // A call for now takes its place at once; a scheduled one at its time.
        if call.schedule_at.is_none() {
            if let Some(late) = self.overloaded() {
                return Err(PlaceError::Overloaded(late));
            }
            if !self.admit() {
                return Err(PlaceError::Full(self.cfg.calls.max_calls));
            }
        }
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
    ///
    /// First the calls the last run left live (it was killed, or the machine
    /// lost power) are closed: reason `bridge_restart`, `completed` if they
    /// were answered (else `failed`), ended when the last sign of them was
    /// (their recording's last write, or their last stored state), and their
    /// recordings repaired (the header's sizes set from the audio on disk)
    /// and kept. One log line says what was recovered.
    pub fn resume_scheduled(self: &Arc<Self>) -> Result<usize, StoreError> {
        let interrupted = self.store.interrupted()?;
        let mut repaired = 0;
        for (c, last) in &interrupted {
            let state = if c.state == CallState::InProgress {
                CallState::Completed
            } else {
                CallState::Failed
            };
            let mut o = Outcome::new(state, EndReason::BridgeRestart.as_str());
            let mut ended = *last;
            let path = self.recordings.join(format!("{}.wav", c.call_sid));
            if path.exists() {
                // The last write, read before the repair writes again.
                let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                match crate::wav::repair(&path) {
                    Ok(bytes) => {
                        if let Some(t) = written {
                            ended = ended.max(DateTime::<Utc>::from(t));
                        }
                        o.recording = Some(format!("{}.wav", c.call_sid));
                        repaired += 1;
                        tracing::info!(call_sid = %c.call_sid, bytes, "recording repaired");
                    }
                    Err(e) => {
                        tracing::warn!(call_sid = %c.call_sid, "recording {} not repaired: {e}", path.display())
                    }
                }
            }
            o.ended_at = Some(ended);
            self.store.finish(c.id, &o)?;
        }
        let waiting = self.store.recover()?;
        let n = waiting.len();
        if !interrupted.is_empty() || n > 0 {
            tracing::info!(
                "recovered from the last run: {} live call(s) closed as bridge_restart, \
                 {repaired} recording(s) repaired, {n} scheduled call(s) scheduled again",
                interrupted.len()
            );
        }
        for rec in waiting {
            match serde_json::from_value::<OutboundCall>(rec.request.clone()) {
                Ok(call) => self.spawn(rec.id, rec.call_sid, call),
                Err(e) => {
                    tracing::error!(call_sid = %rec.call_sid, "cannot resume scheduled call: {e}");
                    self.store.finish(
                        rec.id,
                        &Outcome::new(CallState::Failed, EndReason::BadStoredRequest.as_str()),
                    )?;
                }
            }
        }
        Ok(n)
    }

    /// The probe's lateness in ms, if it is past `[calls]
    /// max_tick_lateness_ms` (the refusal is counted).
    pub fn overloaded(&self) -> Option<u64> {
        let max = self.cfg.calls.max_tick_lateness_ms;
        let late_ms = self.metrics.tick_lateness_us.load(Ordering::Relaxed) / 1000;
        if max == 0 || late_ms <= max {
            return None;
        }
        self.metrics
            .calls_refused_overload
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            late_ms,
            "a new call refused: the bridge's clock runs late (overload)"
        );
        Some(late_ms)
    }

    /// Starts the load probe: a task on the calls' runtime that wakes every
    /// 20 ms, as every call's clock does, and keeps the median lateness of
    /// its last 50 wake-ups (one second) for admission and `/metrics`. It
    /// costs the calls nothing: no call reports anything to it.
    pub fn start_load_probe(self: &Arc<Self>) {
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut clock = tokio::time::interval(Duration::from_millis(20));
            clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut window = [0u64; 50];
            let mut at = 0;
            loop {
                let due = clock.tick().await;
                let late = tokio::time::Instant::now().saturating_duration_since(due);
                window[at] = late.as_micros() as u64;
                at = (at + 1) % window.len();
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                // The median: a single stall (a disk flush, another
                // process) is not overload; half the wake-ups late is.
                let mut sorted = window;
                let (_, median, _) = sorted.select_nth_unstable(window.len() / 2);
                engine
                    .metrics
                    .tick_lateness_us
                    .store(*median, Ordering::Relaxed);
            }
        });
    }

    /// Takes one more call if the bridge carries fewer than `[calls]
    /// max_calls`; counts the refusal if not.
    fn admit(&self) -> bool {
        let max = self.cfg.calls.max_calls;
        let ok = self
            .carried
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !ok {
            self.metrics
                .calls_refused_full
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(max_calls = max, "a new call refused: the bridge is full");
        }
        ok
    }

    /// Calls carried now (placed for now, ringing or up), against `[calls] max_calls`.
    pub fn carried_calls(&self) -> usize {
        self.carried.load(Ordering::Acquire)
    }

    fn spawn(self: &Arc<Self>, id: i64, call_sid: String, call: OutboundCall) {
        let engine = self.clone();
        self.live.fetch_add(1, Ordering::Relaxed);
        let scheduled = call.schedule_at.is_some();
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
                if scheduled {
                    // Accepted when it was placed: carried from its time on.
                    engine.carried.fetch_add(1, Ordering::AcqRel);
                }
                engine.clone().drive(id, call_sid, call, shutdown).await;
            }
            if go || !scheduled {
                engine.carried.fetch_sub(1, Ordering::AcqRel);
            }
            if engine.live.fetch_sub(1, Ordering::Relaxed) == 1 {
                engine.idle.notify_waiters();
            }
        });
    }

    /// Stops taking calls (the API and SIP answer 503), lets the calls that
    /// are up go on for at most `drain`, then ends the rest (reason
    /// `shutdown`) and waits for them, at most `limit`.
    pub async fn shutdown(&self, drain: Duration, limit: Duration) {
        self.draining.store(true, Ordering::Release);
        let until = tokio::time::Instant::now() + drain;
        let up = || self.metrics.calls_active.load(Ordering::Relaxed);
        if up() > 0 && !drain.is_zero() {
            tracing::info!(
                calls = up(),
                "draining: no new calls; live calls may go on for {} s",
                drain.as_secs()
            );
        }
        while up() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let idle = self.idle.notified();
        let _ = self.shutdown.send(true);
        if self.live_calls() > 0 {
            let _ = tokio::time::timeout(limit, idle).await;
        }
    }

    pub(crate) fn set_state(&self, id: i64, state: CallState) {
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
            Err(e) => {
                let _enter = span.enter();
                tracing::warn!("{}", e.why);
                self.fail_early(id, e.failure.reason, Some(e.failure.code));
                return;
            }
        };
        let start = self.start_info(
            &call_sid,
            Direction::Outbound,
            &call.from,
            &call.to,
            &call.custom_parameters,
        );
        let state = Call::new(
            self.call_config(&call.from, &call.to, &call.to, None),
            Start::Outbound {
                connect_at_answer: call.connect_ws_after_answer,
            },
        );
        let setup = driver::Setup {
            id,
            call_sid,
            start,
            bot: Some(BotTarget {
                url: call.wss_url.clone(),
                headers: call.wss_headers.clone(),
                custom_parameters: call.custom_parameters.clone(),
            }),
            call: state,
        };
        driver::run(self, setup, leg, shutdown)
            .instrument(span)
            .await;
    }

    /// The `start` event of a call's first bot.
    fn start_info(
        &self,
        call_sid: &str,
        direction: Direction,
        from: &str,
        to: &str,
        custom: &serde_json::Map<String, serde_json::Value>,
    ) -> StartInfo {
        StartInfo {
            stream_sid: new_sid("MZ"),
            call_sid: call_sid.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            direction,
            media_format: MediaFormat::default(),
            tracks: vec!["inbound".into()],
            custom_parameters: custom.clone(),
        }
    }

    /// A call's limits, and the numbers its transfers may present.
    /// `presented` is what a transfer shows by default: the number of the
    /// phone the call is about.
    fn call_config(
        &self,
        from: &str,
        to: &str,
        presented: &str,
        fallback: Option<&Fallback>,
    ) -> CallConfig {
        let mut own: Vec<String> = vec![from.to_string(), to.to_string()];
        own.extend(self.cfg.dids.iter().map(|d| d.number.clone()));
        own.extend(
            self.cfg
                .sip
                .trunks
                .iter()
                .filter_map(|t| t.caller_id.clone()),
        );
        own.push(self.cfg.calls.caller_id.clone());
        CallConfig {
            ring_limit_ticks: self.cfg.calls.ring_timeout_secs * TICKS_PER_SEC,
            max_ticks: self.cfg.calls.max_duration_secs * TICKS_PER_SEC,
            transfer_timeout_s: self.cfg.calls.transfer_timeout_secs,
            default_caller_id: presented.to_string(),
            own_numbers: own,
            fallback: fallback
                .or(self.cfg.calls.fallback.as_ref())
                .map(|f| match f {
                    Fallback::Number(n) => DialTarget::Number(n.clone()),
                    Fallback::Extension(e) => DialTarget::Extension(e.clone()),
                    Fallback::Flow(id) => DialTarget::Flow(id.clone()),
                    Fallback::Prompt(clip) => DialTarget::Prompt(clip.clone()),
                }),
        }
    }

    /// A bot session's tunables.
    pub(crate) fn session_config(&self, inband_dtmf: bool) -> SessionConfig {
        let bot = &self.cfg.bot;
        SessionConfig {
            max_playout_samples: bot.max_playout_secs as usize * 8000,
            hangup_drain_ticks: bot.hangup_drain_secs * TICKS_PER_SEC,
            max_message_bytes: bot.max_message_bytes,
            inband_dtmf,
        }
    }

    /// Picks the phone side for a number: a configured route (a trunk or the
    /// simulated carrier), else a registered extension, else the simulated
    /// carrier's numbering.
    fn route(&self, to: &str, from: &str) -> Result<Box<dyn PhoneLeg>, DialError> {
        let sip = self.sip.get();
        let route = self
            .cfg
            .routes
            .iter()
            .filter(|r| to.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len());
        if let Some(r) = route.filter(|r| r.trunk != "sim") {
            let (Some(ua), Some(trunk)) = (sip, sip.and_then(|u| u.trunk(&r.trunk))) else {
                return Err(DialError::new(
                    503,
                    EndReason::NoRoute,
                    format!(
                        "route {} names trunk {} but SIP is not running",
                        r.prefix, r.trunk
                    ),
                ));
            };
            let caller = trunk.caller_id.clone().unwrap_or_else(|| from.to_string());
            return ua
                .dial_trunk(trunk, to, &caller)
                .map_err(|e| DialError::new(503, EndReason::SipError, e.to_string()));
        }
        if route.is_none() {
            if let Some(ua) = sip.filter(|u| u.extension(to).is_some()) {
                return ua.dial_extension(to, from).map_err(|e| {
                    DialError::new(480, EndReason::ExtensionUnavailable, e.to_string())
                });
            }
        }
        match self.carrier.dial(to) {
            Route::Virtual(leg) => Ok(leg),
            Route::NoRoute(why) => Err(DialError::new(404, EndReason::NoRoute, why)),
        }
    }

    /// What ringing extension `ext` means: each of its registered phones and
    /// the numbers the config adds (`also_ring`); the extension itself when
    /// that is nothing (so the failure says why: not configured, not
    /// registered).
    pub(crate) fn extension_targets(&self, ext: &str) -> Vec<DialTarget> {
        let mut targets: Vec<DialTarget> = self
            .sip
            .get()
            .filter(|ua| ua.extension(ext).is_some())
            .map(|ua| ua.contacts(ext))
            .unwrap_or_default()
            .into_iter()
            .map(|uri| DialTarget::Contact {
                extension: ext.to_string(),
                uri,
            })
            .collect();
        if let Some(cfg) = self.cfg.sip.extensions.iter().find(|e| e.number == ext) {
            targets.extend(cfg.also_ring.iter().cloned().map(DialTarget::Number));
        }
        if targets.is_empty() {
            targets.push(DialTarget::Extension(ext.to_string()));
        }
        targets
    }

    /// Rings a transfer's target (or a DID's extension), presenting `caller_id`.
    pub(crate) fn dial_target(
        &self,
        target: &DialTarget,
        caller_id: &str,
    ) -> Result<Box<dyn PhoneLeg>, DialError> {
        match target {
            DialTarget::Number(n) => self.route(n, caller_id),
            DialTarget::Extension(ext) => match self.sip.get() {
                Some(ua) if ua.extension(ext).is_some() => {
                    ua.dial_extension(ext, caller_id).map_err(|e| {
                        DialError::new(480, EndReason::ExtensionUnavailable, e.to_string())
                    })
                }
                Some(_) => Err(DialError::new(
                    404,
                    EndReason::NoRoute,
                    format!("extension {ext} is not configured ([[sip.extensions]])"),
                )),
                None => Err(DialError::new(
                    404,
                    EndReason::NoRoute,
                    format!("extension {ext}: SIP is not running"),
                )),
            },
            DialTarget::Contact { uri, .. } => match self.sip.get() {
                Some(ua) => ua.dial_contact(uri, caller_id).map_err(|e| {
                    DialError::new(480, EndReason::ExtensionUnavailable, e.to_string())
                }),
                None => Err(DialError::new(
                    404,
                    EndReason::NoRoute,
                    "SIP is not running".into(),
                )),
            },
            DialTarget::Bot(url) => Err(DialError::new(
                400,
                EndReason::Failed,
                format!("{url} is a bot, not a phone"),
            )),
            DialTarget::Flow(id) | DialTarget::Prompt(id) => Err(DialError::new(
                400,
                EndReason::Failed,
                format!("{id} is a flow, not a phone"),
            )),
        }
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
        let shutdown = self.shutdown.subscribe();
        // The agent rung for this caller sees the caller's number.
        let cfg = self.call_config(&call.from, &call.to, &call.from, did.fallback.as_ref());
        let start = self.start_info(
            &call_sid,
            Direction::Inbound,
            &call.from,
            &call.to,
            &Default::default(),
        );
        if let Some(ext) = &did.extension {
            let setup = driver::Setup {
                id,
                call_sid,
                start,
                bot: None,
                call: Call::new(cfg, Start::InboundToPhone(self.extension_targets(ext))),
            };
            driver::run(self, setup, leg, shutdown)
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
                EndReason::NoTarget,
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
        let setup = driver::Setup {
            id,
            call_sid,
            start,
            bot: Some(target),
            call: Call::new(cfg, Start::InboundToBot),
        };
        driver::run(self, setup, leg, shutdown)
            .instrument(span)
            .await;
    }

    /// Asks a DID's CONFIG_API which bot takes the call.
    async fn ask_config_api(
        &self,
        api: &str,
        did: &crate::config::DidConfig,
        from: &str,
        to: &str,
        call_sid: &str,
    ) -> Result<BotTarget, (EndReason, String)> {
        let body = serde_json::json!({
            "From": from, "To": to, "Direction": "inbound",
            "FlowId": did.number, "SessionId": call_sid, "ServerId": "bridge",
        });
        let timeout = Duration::from_millis(did.config_api_timeout_ms);
        // As logs show it: a key in the query string stays out.
        let shown = botlink::redact_url(api);
        if let Ok(u) = url::Url::parse(api) {
            self.guard.check_url_host(&u).map_err(|e| {
                (
                    EndReason::ConfigApiFailed,
                    format!("CONFIG_API {shown}: {e}"),
                )
            })?;
        }
        let resp = match tokio::time::timeout(timeout, self.http.post(api).json(&body).send()).await
        {
            Err(_) => {
                return Err((
                    EndReason::ConfigApiTimeout,
                    format!(
                        "CONFIG_API {shown} did not answer within {} ms",
                        timeout.as_millis()
                    ),
                ))
            }
            Ok(Err(e)) => {
                // reqwest's own text is generic ("error sending request");
                // the cause (a refused address, too many redirects) is below.
                let e = e.without_url();
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why = format!("{why}: {s}");
                    source = s.source();
                }
                return Err((
                    EndReason::ConfigApiFailed,
                    format!("CONFIG_API {shown}: {why}"),
                ));
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if !status.is_success() {
            return Err((
                EndReason::ConfigApiFailed,
                format!("CONFIG_API {shown} answered HTTP {status}"),
            ));
        }
        let answer: serde_json::Value = match tokio::time::timeout(timeout, resp.json()).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                return Err((
                    EndReason::ConfigApiFailed,
                    format!("CONFIG_API {shown} answer is not JSON: {e}"),
                ))
            }
            Err(_) => {
                return Err((
                    EndReason::ConfigApiTimeout,
                    format!("CONFIG_API {shown} answer body too slow"),
                ))
            }
        };
        let Some(url) = answer.get("url").and_then(|u| u.as_str()) else {
            return Err((
                EndReason::ConfigApiFailed,
                format!("CONFIG_API {shown} answer has no \"url\": {answer}"),
            ));
        };
        self.check_bot_url(url).map_err(|e| {
            (
                EndReason::ConfigApiFailed,
                format!("CONFIG_API {shown} named a bad bot url: {e}"),
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
                return Err((EndReason::ConfigApiFailed, format!("CONFIG_API {shown} asked for audioFormat {fmt}; this bridge streams 8 kHz raw/slin only")));
            }
        }
        Ok(BotTarget {
            url: url.to_string(),
            headers,
            custom_parameters: Default::default(),
        })
    }

    /// Takes over an open bot socket.
    pub(crate) fn open_link(&self, ws: botlink::BotSocket) -> botlink::Link {
        let live = Liveness {
            ping_every: Duration::from_secs(self.cfg.bot.ping_interval_secs.max(1)),
            pong_timeout: Duration::from_secs(self.cfg.bot.pong_timeout_secs.max(1)),
        };
        botlink::Link::new(ws, live)
    }

    /// Checks a bot URL (scheme, host, plain `ws://` only to loopback) and,
    /// for an address written in the URL, the network guard; names are
    /// checked on the address they resolve to, when connecting.
    pub(crate) fn check_bot_url(&self, url: &str) -> Result<url::Url, String> {
        botlink::check_bot_url(url, self.cfg.bot.allow_insecure_ws, &self.guard)
    }

    /// Which special address ranges outbound requests may reach.
    pub fn guard(&self) -> &crate::netguard::Guard {
        &self.guard
    }

    pub(crate) fn connect_bot(
        &self,
        target: &BotTarget,
    ) -> tokio::task::JoinHandle<Result<botlink::BotSocket, botlink::ConnectError>> {
        let url = target.url.clone();
        let headers = target.headers.clone();
        let tls = self.tls.clone();
        let guard = self.guard.clone();
        let timeout = Duration::from_millis(self.cfg.bot.connect_timeout_ms);
        // The socket accepts frames well past the protocol limit, so that an
        // oversized message gets an `error` event instead of a dropped socket.
        let max = (self.cfg.bot.max_message_bytes * 4).max(16 << 20);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            let r = botlink::connect(&url, &headers, tls, &guard, timeout, max).await;
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
    fn fail_early(&self, id: i64, reason: EndReason, sip_code: Option<u16>) {
        let end = End {
            state: CallState::Failed,
            reason,
            sip_code,
            stop: None,
        };
        self.conclude(id, end, Concluded::default());
    }

    pub(crate) fn conclude(&self, id: i64, end: End, c: Concluded) {
        tracing::info!(state = end.state.as_str(), reason = %end.reason, "call ended");
        self.metrics.call_ended(end.state.as_str());
        if let Some(r) = c.phone_report.as_ref() {
            self.metrics.add_rtp(r);
        }
        let (attended_by, agent_no) = match c.attended {
            None | Some(AttendedBy::Nobody) => ("", String::new()),
            Some(AttendedBy::Bot) => ("bot", String::new()),
            Some(AttendedBy::Agent(n)) => ("agent", n),
            Some(AttendedBy::Extension(n)) => ("extension", n),
            Some(AttendedBy::Flow(_)) => ("flow", String::new()),
        };
        let outcome = Outcome {
            sip_code: end.sip_code,
            recording: c.recording,
            dtmf_input: c.dtmf_input,
            phone_report: c.phone_report,
            legs: c.legs,
            attended_by: attended_by.into(),
            agent_no,
            ..Outcome::new(end.state, end.reason.as_str())
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

    fn accepting(&self) -> bool {
        if self.0.is_draining() {
            self.0
                .metrics
                .calls_refused_shutdown
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if self.0.overloaded().is_some() {
            return false;
        }
        // A check, not a reservation: the INVITE may still fail (unknown
        // DID, bad SDP) before `accept` takes the place. INVITEs checked on
        // two threads at the same instant may pass one over the limit.
        let full = self.0.carried_calls() >= self.0.cfg.calls.max_calls;
        if full {
            self.0
                .metrics
                .calls_refused_full
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                max_calls = self.0.cfg.calls.max_calls,
                "an INVITE refused: the bridge is full"
            );
        }
        !full
    }

    /// Takes a call [`accepting`](InboundHandler::accepting) admitted.
    fn accept(&self, call: InboundCall) {
        let engine = self.0.clone();
        engine.live.fetch_add(1, Ordering::Relaxed);
        engine.carried.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            engine.clone().inbound(call).await;
            engine.carried.fetch_sub(1, Ordering::AcqRel);
            if engine.live.fetch_sub(1, Ordering::Relaxed) == 1 {
                engine.idle.notify_waiters();
            }
        });
    }
}

/// The flows calls can be handed to: the config's (stored at start-up, so
/// the store holds every flow) and the store's, with the schedules, clips
/// and extensions they refer to, all checked.
fn flow_env(cfg: &Config, store: &Store) -> anyhow::Result<FlowEnv> {
    let clips = ClipLibrary::load(&cfg.clips)?;
    for s in &cfg.schedules {
        store.put_schedule(s)?;
    }
    for f in &cfg.flows {
        store.put_dial_plan(f)?;
    }
    let env = FlowEnv {
        flows: store
            .dial_plans()?
            .into_iter()
            .map(|p| (p.id.clone(), Arc::new(p)))
            .collect(),
        schedules: store
            .schedules()?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect(),
        clips,
        extensions: cfg
            .sip
            .extensions
            .iter()
            .map(|e| e.number.clone())
            .collect(),
        default_tz: crate::flow::schedule::parse_tz(&cfg.calls.time_zone)
            .map_err(|e| anyhow::anyhow!("[calls] time_zone: {e}"))?,
    };
    env.validate()?;
    for f in cfg.fallbacks() {
        if let Fallback::Flow(id) = f {
            anyhow::ensure!(
                env.flows.contains_key(id),
                "fallback flow:{id}: no flow {id:?} in [[flows]]"
            );
        }
    }
    Ok(env)
}

/// A prompt fallback as a flow: play the clip, then hang up.
fn prompt_plan(clip: &str) -> DialPlan {
    DialPlan {
        id: format!("prompt:{clip}"),
        name: format!("prompt {clip}"),
        entry_node: "play".into(),
        nodes: vec![DialPlanNode {
            id: "play".into(),
            kind: NodeKind::SoundClip(SoundClipNode {
                clip_id: clip.to_string(),
                next: None,
            }),
            position: None,
        }],
        created_at: None,
        updated_at: None,
    }
}
