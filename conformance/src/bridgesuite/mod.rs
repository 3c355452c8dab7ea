//! `conformance bridge`: the suite plays the bot and the phone against a bridge.
//!
//! It runs its own WebSocket bot on loopback ([`conn::BotServer`]) and places calls
//! through the bridge's REST API (`dial_by_aivoicebot`) to the simulated carrier's
//! virtual phones, whose numbers say how the phone behaves (`+9991…` answers and
//! speaks, `+9992…` is busy, `+9993…` never answers, `+9994…` fails, `+9995D…`
//! presses the keys D…). Each scenario is one call with one scripted bot session
//! ([`checks`]); afterwards every session is checked for what any session must
//! hold ([`Ctx::finish`]): each frame parses and matches the events schema,
//! numbering is contiguous (`stream::check_stream`), `stop` is last and the bridge
//! closes the socket after it, and the call log agrees with what the bot saw.

mod checks;
pub mod conn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use protocol::{BotEvent, StopReason};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::report::{Findings, Progress, Report};
use crate::scenario::{self, Scenario, ScenarioFuture, SuiteKind};
use conn::{BotConn, BotServer};

pub use checks::{plan, BridgeCheck};

/// What `conformance bridge` is pointed at.
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    /// The bridge's base URL (`http://127.0.0.1:8080`); the API is under `/api`.
    pub api: String,
    /// The API token.
    pub token: String,
    /// Where the suite's bot listens.
    pub bot_listen: SocketAddr,
    /// The base URL the bridge is told to use for the suite's bot, when it is not
    /// `ws://` + the listen address.
    pub bot_url: Option<String>,
    /// A virtual number whose phone answers and then hangs up by itself.
    pub hangup_number: Option<String>,
    /// A flow the bridge has that ends the call by itself.
    pub flow_id: Option<String>,
    /// An extension of the bridge's whose phone answers and hangs up by itself.
    pub extension: Option<String>,
    /// Scenarios to run at once.
    pub jobs: usize,
}

/// Why the suite could not run at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// The options `needs` in scenario files may name, when given.
pub fn available_options(opts: &BridgeOptions) -> Vec<&'static str> {
    let mut v = vec![];
    if opts.hangup_number.is_some() {
        v.push("hangup-number");
    }
    if opts.flow_id.is_some() {
        v.push("flow-id");
    }
    if opts.extension.is_some() {
        v.push("extension");
    }
    v
}

/// What the scenarios share.
pub(crate) struct Env {
    pub api: url::Url,
    pub token: String,
    pub server: BotServer,
    pub hangup_number: Option<String>,
    pub flow_id: Option<String>,
    pub extension: Option<String>,
}

/// Runs `scenarios` (bridge scenarios from [`scenario::select`]) against a bridge.
pub async fn run(
    opts: BridgeOptions,
    scenarios: Vec<Scenario>,
    progress: Arc<dyn Progress>,
) -> Result<Report, SetupError> {
    let mut api = url::Url::parse(&opts.api)
        .map_err(|e| SetupError(format!("--api {:?} is not a URL: {e}", opts.api)))?;
    if !matches!(api.scheme(), "http" | "https") {
        return Err(SetupError(format!(
            "--api {:?} must be an http:// or https:// URL",
            opts.api
        )));
    }
    if !api.path().ends_with('/') {
        let p = format!("{}/", api.path());
        api.set_path(&p);
    }
    let mut plans = std::collections::BTreeMap::new();
    for s in &scenarios {
        if s.suite != SuiteKind::Bridge {
            return Err(SetupError(format!(
                "scenario {} is for the {} suite",
                s.name,
                s.suite.as_str()
            )));
        }
        plans.insert(s.name.clone(), plan(s).map_err(SetupError)?);
    }
    // The API answers and takes the token, or nothing else can work.
    let probe = api
        .join("api/get_call_status")
        .map_err(|e| SetupError(e.to_string()))?;
    let r = crate::http::request(
        "GET",
        &probe,
        Some(&opts.token),
        None,
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| SetupError(format!("cannot reach the bridge API at {api}: {e}")))?;
    match r.status {
        200 => {}
        401 => {
            return Err(SetupError(format!(
            "the bridge at {api} refused the token (401): pass the bridge's API token with --token"
        )))
        }
        s => {
            return Err(SetupError(format!(
                "GET {probe} answered HTTP {s}; is {api} the bridge's base URL?"
            )))
        }
    }
    let server = BotServer::start(opts.bot_listen, opts.bot_url.clone())
        .await
        .map_err(SetupError)?;
    let env = Arc::new(Env {
        api: api.clone(),
        token: opts.token.clone(),
        server,
        hangup_number: opts.hangup_number.clone(),
        flow_id: opts.flow_id.clone(),
        extension: opts.extension.clone(),
    });
    let plans = Arc::new(plans);
    let results = scenario::run_all(scenarios, opts.jobs, progress, move |s| {
        let env = env.clone();
        let plans = plans.clone();
        let fut: ScenarioFuture = Box::pin(async move {
            let check = plans[&s.name].clone();
            run_scenario(env, &s.name, check).await
        });
        fut
    })
    .await;
    Ok(Report {
        suite: "bridge".into(),
        target: api.to_string(),
        scenarios: results,
    })
}

async fn run_scenario(env: Arc<Env>, name: &str, check: BridgeCheck) -> Findings {
    let mut ctx = Ctx::new(env, name);
    let limit = check.time_limit();
    match tokio::time::timeout(limit, check.run(&mut ctx)).await {
        Ok(Ok(())) => {}
        Ok(Err(problem)) => ctx.f.fail(problem),
        Err(_) => ctx.f.fail(format!(
            "the scenario did not finish within {} s",
            limit.as_secs()
        )),
    }
    ctx.finish().await;
    ctx.f
}

/// One scenario's call: the API, the bot sessions it got, and what was found.
pub(crate) struct Ctx {
    env: Arc<Env>,
    url: String,
    incoming: mpsc::UnboundedReceiver<BotConn>,
    /// The session being scripted.
    pub conn: Option<BotConn>,
    /// The call's log id and call id, once dialled.
    pub call: Option<(i64, String)>,
    /// The number dialled.
    pub number: String,
    /// The call's final log record, once fetched.
    pub log: Option<Value>,
    /// What was found.
    pub f: Findings,
}

/// Call states that are not final.
const LIVE_STATES: [&str; 3] = ["initiated", "ringing", "in-progress"];

impl Ctx {
    fn new(env: Arc<Env>, name: &str) -> Ctx {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let key = format!("{name}-{}", N.fetch_add(1, Ordering::Relaxed));
        let (url, incoming) = env.server.route(&key);
        Ctx {
            env,
            url,
            incoming,
            conn: None,
            call: None,
            number: String::new(),
            log: None,
            f: Findings::default(),
        }
    }

    /// The scenario's session; an error if there is none.
    pub fn conn(&mut self) -> Result<&mut BotConn, String> {
        self.conn
            .as_mut()
            .ok_or_else(|| "no bot session".to_owned())
    }

    /// A second bot URL of the suite's, and where its sessions arrive (for
    /// `session.transfer_ws`).
    pub fn second_route(&mut self) -> (String, tokio::sync::mpsc::UnboundedReceiver<BotConn>) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let key = format!("second-{}", N.fetch_add(1, Ordering::Relaxed));
        self.env.server.route(&key)
    }

    /// The number the options give for a phone that hangs up.
    pub fn hangup_number(&self) -> Option<String> {
        self.env.hangup_number.clone()
    }

    /// The flow the options name, one that ends the call by itself.
    pub fn flow_id(&self) -> Option<String> {
        self.env.flow_id.clone()
    }

    /// The extension the options name, whose phone answers and hangs up.
    pub fn extension(&self) -> Option<String> {
        self.env.extension.clone()
    }

    fn endpoint(&self, path: &str) -> Result<url::Url, String> {
        self.env.api.join(path).map_err(|e| e.to_string())
    }

    /// Places a call to `number` through `dial_by_aivoicebot`, with `extra`
    /// request fields.
    pub async fn dial(
        &mut self,
        number: &str,
        after_answer: bool,
        extra: Value,
    ) -> Result<(), String> {
        let mut body = json!({
            "customer_no": number,
            "wss_url": self.url,
            "connect_ws_after_answer": if after_answer { "1" } else { "0" },
        });
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
            b.extend(extra);
        }
        let url = self.endpoint("api/dial_by_aivoicebot")?;
        let r = crate::http::request(
            "POST",
            &url,
            Some(&self.env.token),
            Some(&body.to_string()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| format!("dial_by_aivoicebot: {e}"))?;
        let v = r.json()?;
        if r.status != 200 || v["status"] != true {
            return Err(format!(
                "dial_by_aivoicebot to {number} answered HTTP {}: {v}",
                r.status
            ));
        }
        let logid = v["data"]["logid"]
            .as_i64()
            .ok_or_else(|| format!("dial_by_aivoicebot answered without data.logid: {v}"))?;
        let call_sid = v["data"]["call_sid"].as_str().unwrap_or("").to_owned();
        self.call = Some((logid, call_sid));
        self.number = number.to_owned();
        Ok(())
    }

    /// Waits for the bridge to connect to the suite's bot.
    pub async fn accept(&mut self, limit: Duration) -> Result<(), String> {
        match tokio::time::timeout(limit, self.incoming.recv()).await {
            Ok(Some(c)) => {
                self.conn = Some(c);
                Ok(())
            }
            _ => Err(format!(
                "the bridge did not connect to the bot within {} s of the call being placed",
                limit.as_secs()
            )),
        }
    }

    /// A session that arrived without waiting, if any.
    pub fn try_accept(&mut self) -> bool {
        match self.incoming.try_recv() {
            Ok(c) => {
                self.conn = Some(c);
                true
            }
            Err(_) => false,
        }
    }

    /// The call's log record now.
    pub async fn call_log(&self) -> Result<Value, String> {
        let (logid, _) = self.call.as_ref().ok_or("no call was placed")?;
        let mut url = self.endpoint("api/get_call_status")?;
        url.set_query(Some(&format!("logid={logid}")));
        let r = crate::http::request(
            "GET",
            &url,
            Some(&self.env.token),
            None,
            Duration::from_secs(10),
        )
        .await?;
        let v = r.json()?;
        if r.status != 200 || v["status"] != true {
            return Err(format!(
                "get_call_status?logid={logid} answered HTTP {}: {v}",
                r.status
            ));
        }
        Ok(v["data"].clone())
    }

    /// Waits until the call has a final state; keeps and returns its log record.
    pub async fn final_log(&mut self, limit: Duration) -> Result<Value, String> {
        if let Some(l) = &self.log {
            return Ok(l.clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            let rec = self.call_log().await?;
            let state = rec["call_state"].as_str().unwrap_or("").to_owned();
            if !LIVE_STATES.contains(&state.as_str()) {
                self.log = Some(rec.clone());
                return Ok(rec);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the call log still says {state:?} {} s after the call should have ended",
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Downloads the call's recording (stereo: the caller, then what the caller heard).
    pub async fn recording(&mut self) -> Result<crate::audio::Wav, String> {
        let log = self.final_log(Duration::from_secs(10)).await?;
        let url = log["recording_url"].as_str().unwrap_or("");
        if url.is_empty() {
            return Err(format!("the call log has no recording_url: {log}"));
        }
        let url = url::Url::parse(url).map_err(|e| format!("recording_url {url:?}: {e}"))?;
        let r = crate::http::request(
            "GET",
            &url,
            Some(&self.env.token),
            None,
            Duration::from_secs(20),
        )
        .await
        .map_err(|e| format!("downloading the recording: {e}"))?;
        if r.status != 200 {
            return Err(format!("the recording at {url} answered HTTP {}", r.status));
        }
        let wav =
            crate::audio::parse_wav(&r.body).map_err(|e| format!("the recording at {url}: {e}"))?;
        if (wav.sample_rate, wav.channels) != (8000, 2) {
            return Err(format!(
                "the recording is {} Hz with {} channel(s); expected 8000 Hz stereo (the caller, then what the caller heard)",
                wav.sample_rate, wav.channels
            ));
        }
        Ok(wav)
    }

    /// After the check: end a call left up, let the session close, and check what
    /// every session must hold.
    async fn finish(&mut self) {
        let mut conns = vec![];
        if let Some(mut c) = self.conn.take() {
            if c.closed_at.is_none() {
                if c.stop().is_none() {
                    // The check gave up mid-call: end it rather than leave it up.
                    let _ = c
                        .send(r#"{"type":"session.hangup","immediate":true}"#)
                        .await;
                }
                c.drain(Duration::from_secs(5)).await;
            }
            conns.push(c);
        }
        // A session that arrived unasked (the bridge connected twice?).
        while let Ok(c) = self.incoming.try_recv() {
            self.f.fail(format!(
                "the bridge opened a second bot session for one call (path {})",
                c.path
            ));
        }
        for c in &conns {
            self.check_session(c);
        }
        if self.call.is_some() && self.log.is_none() {
            if let Err(e) = self.final_log(Duration::from_secs(10)).await {
                self.f.fail(e);
            }
        }
        if let (Some(log), Some(c)) = (self.log.clone(), conns.first()) {
            self.check_log_agrees(&log, c);
        }
    }

    fn check_session(&mut self, c: &BotConn) {
        for p in c.problems.iter().take(5) {
            self.f.fail(format!("contract: {p}"));
        }
        let events: Vec<BotEvent> = c.events.iter().map(|(_, e)| e.clone()).collect();
        let violations = crate::stream::check_stream(&events);
        for v in violations.iter().take(5) {
            self.f.fail(format!("stream: {v}"));
        }
        if violations.len() > 5 {
            self.f.fail(format!(
                "stream: ... and {} more problems",
                violations.len() - 5
            ));
        }
        if let Some((_, BotEvent::Error { code, .. })) = c
            .events
            .iter()
            .find(|(_, e)| matches!(e, BotEvent::Error { code, .. } if protocol::ErrorCode::parse(code).is_none()))
        {
            self.f.note(format!(
                "an error event has code {code:?}, which PROTOCOL.md does not list"
            ));
        }
        let start_sid = c.start().and_then(|s| match s {
            BotEvent::Start { start, .. } => Some(start.call_sid.clone()),
            _ => None,
        });
        match c.stop() {
            Some((at, BotEvent::Stop { call_sid, .. })) => {
                if let Some(sid) = start_sid {
                    if &sid != call_sid {
                        self.f.fail(format!(
                            "stop.call_sid {call_sid:?} is not start's call_sid {sid:?}"
                        ));
                    }
                }
                match c.closed_at {
                    Some(closed) => self.f.measure(
                        "socket closed",
                        format!("{} ms after stop", closed.saturating_duration_since(at).as_millis()),
                    ),
                    None => self.f.fail(
                        "the bridge did not close the socket within 5 s of `stop` (stop is the last event; the bridge then closes the socket)",
                    ),
                }
            }
            _ => {
                if c.closed_at.is_some() {
                    self.f.fail(
                        "the socket closed without a `stop` event: every session ends with `stop`",
                    );
                }
            }
        }
    }

    fn check_log_agrees(&mut self, log: &Value, c: &BotConn) {
        let (_, dialled_sid) = self.call.clone().unwrap_or_default();
        let state = log["call_state"].as_str().unwrap_or("");
        let end_reason = log["end_reason"].as_str().unwrap_or("");
        if log["call_sid"].as_str() != Some(dialled_sid.as_str()) {
            self.f.fail(format!(
                "call log: call_sid {} is not the one dial_by_aivoicebot returned ({dialled_sid:?})",
                log["call_sid"]
            ));
        }
        if let Some(BotEvent::Start { start, .. }) = c.start() {
            if start.call_sid != dialled_sid {
                self.f.fail(format!(
                    "start.call_sid {:?} is not the call's call_sid {dialled_sid:?} from dial_by_aivoicebot",
                    start.call_sid
                ));
            }
        }
        // A bot that handed the call on is not why it ended: whoever had
        // the caller last is.
        if let Some((_, BotEvent::Stop { reason, .. })) = c.stop().filter(|(_, e)| {
            !matches!(
                e,
                BotEvent::Stop {
                    reason: StopReason::Transferred
                        | StopReason::TransferWs
                        | StopReason::FlowTransfer,
                    ..
                }
            )
        }) {
            if end_reason != reason.as_str() {
                self.f.fail(format!(
                    "call log: end_reason {end_reason:?}, but the bot got stop with reason {:?}",
                    reason.as_str()
                ));
            }
            let want_state = match reason {
                StopReason::Busy => "busy",
                StopReason::NoAnswer => "no-answer",
                StopReason::Failed => "failed",
                _ => "completed",
            };
            if state != want_state && *reason != StopReason::Shutdown {
                self.f.fail(format!(
                    "call log: call_state {state:?} after stop with reason {:?}; expected {want_state:?}",
                    reason.as_str()
                ));
            }
        }
        if c.start().is_some() {
            let digits: String = c
                .events
                .iter()
                .filter_map(|(_, e)| match e {
                    BotEvent::Dtmf { digit, .. } => Some(*digit),
                    _ => None,
                })
                .collect();
            let logged = log["dtmf_input"].as_str().unwrap_or("");
            if logged != digits {
                self.f.fail(format!(
                    "call log: dtmf_input {logged:?}, but the bot got the keys {digits:?}"
                ));
            }
        }
    }
}

/// Samples of one constant value, `ms` long: audio the recording can be searched for
/// exactly (the recording is raw PCM of what the phone heard).
pub(crate) fn constant_audio(value: i16, ms: u64) -> Vec<i16> {
    vec![value; (ms * 8) as usize]
}

/// How many samples of the recording's "heard" channel equal `value`.
pub(crate) fn heard_count(wav: &crate::audio::Wav, value: i16) -> usize {
    wav.samples
        .iter()
        .skip(1)
        .step_by(usize::from(wav.channels.max(1)))
        .filter(|&&s| s == value)
        .count()
}

/// An event's short description for messages: `mark:a`, `media`, ...
pub(crate) fn describe(e: &BotEvent) -> String {
    match e {
        BotEvent::Mark { name, .. } => format!("mark {name:?}"),
        BotEvent::Error { code, .. } => format!("error {code}"),
        BotEvent::Stop { reason, .. } => format!("stop ({reason})"),
        e => e.name().to_owned(),
    }
}
