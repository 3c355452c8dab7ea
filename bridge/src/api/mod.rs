//! The REST API (IVR Solutions surface): placing bot calls and reading call logs,
//! with the seed spec's request fields, response shapes and error bodies.

pub mod listener;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::engine::{Engine, OutboundCall, PlaceError};
use crate::store::CallRecord;

/// What the handlers share.
pub struct AppState {
    /// The call engine.
    pub engine: Arc<Engine>,
    /// SHA-256 of the API token.
    pub token_hash: [u8; 32],
    /// Base of the URLs handed out (recordings).
    pub public_url: String,
}

/// The router: every API route behind token auth, plus an open `/healthz`.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/dial_by_aivoicebot", post(dial_by_aivoicebot))
        .route("/get_call_status", get(get_call_status))
        .route("/call_logs", post(call_logs))
        .route("/calllog_by_number", get(calllog_by_number));
    Router::new()
        .nest("/api", api.clone())
        .nest("/v1", api)
        .route("/recordings/{file}", get(recording))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// The largest request body the API reads (axum's default, 2 MiB).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Every error the API gives is JSON in the spec's shape, also those the
/// HTTP layer makes itself (413 for a body past [`MAX_BODY_BYTES`], 405 for a
/// method a path does not take, with its `Allow`).
async fn json_errors(req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is larger than {} MiB",
            MAX_BODY_BYTES / (1024 * 1024)
        ),
        StatusCode::METHOD_NOT_ALLOWED => "this path does not take that method".to_string(),
        s => s.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut out = error(status, message);
    if let Some(allow) = r.headers().get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

/// SHA-256 of a token, as stored.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"status": false, "message": message.into()})),
    )
        .into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!("internal error: {e}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; the bridge log has the details",
    )
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let mut text = app.engine.metrics().render();
        if let Some(sip) = app.engine.sip() {
            sip.guard_stats.render(&mut text);
        }
        text
    })
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

fn presented_token(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

async fn auth(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let ok = presented_token(&req).is_some_and(|t| {
        let h = hash_token(&t);
        // Compare every byte so the time taken says nothing about the token.
        h.iter()
            .zip(app.token_hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    });
    if !ok {
        return error(StatusCode::UNAUTHORIZED, "Invalid or missing API token");
    }
    next.run(req).await
}

/// A request body as a JSON object: JSON, or an HTML form. Non-string scalars
/// are accepted where a string is expected (`"connect_ws_after_answer": 1`).
fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn body_object(ctype: &str, body: &[u8]) -> Result<Map<String, Value>, String> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Map::new());
    }
    // `curl -d '{...}'` labels JSON as a form: a body that starts like JSON is JSON.
    let looks_json = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[');
    if ctype.starts_with("application/x-www-form-urlencoded") && !looks_json {
        return Ok(url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("the request body must be a JSON object".into()),
        Err(e) => Err(format!("the request body is not valid JSON: {e}")),
    }
}

fn field(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(if *b { "1" } else { "0" }.to_string())),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

/// Normalises a phone number by the spec's rules: spaces, dashes, dots and
/// brackets are stripped; `+` and a country code, or a leading `0` for domestic
/// numbers; `00` is read as `+`.
pub fn normalize_phone(raw: &str) -> Result<String, String> {
    let mut s: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '[' | ']' | '\t'))
        .collect();
    if let Some(rest) = s.strip_prefix("00") {
        s = format!("+{rest}");
    }
    let digits = s.strip_prefix('+').unwrap_or(&s);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{raw:?} is not a phone number (digits, with a leading + and country code or a leading 0)"
        ));
    }
    if !(3..=15).contains(&digits.len()) {
        return Err(format!(
            "{raw:?} has {} digits; a phone number has 3 to 15",
            digits.len()
        ));
    }
    Ok(s)
}

fn parse_schedule(when: &str, tz: Option<&str>) -> Result<DateTime<Utc>, String> {
    let naive = NaiveDateTime::parse_from_str(when, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(when, "%Y-%m-%d %H:%M"))
        .ok()
        .filter(|t| four_digit_year(t.year()))
        .ok_or_else(|| {
            format!(
                "schedule_datetime {when:?} is not a time of the form \"YYYY-mm-dd H:i:s\" \
                 (years 1000 to 9999)"
            )
        })?;
    let tz_name = tz.unwrap_or("UTC");
    let zone: chrono_tz::Tz = tz_name.parse().map_err(|_| {
        format!("timezone {tz_name:?} is not an IANA time zone (e.g. \"Asia/Kolkata\")")
    })?;
    let local = zone.from_local_datetime(&naive).earliest().ok_or_else(|| {
        format!("schedule_datetime {when:?} does not exist in {tz_name} (a clock change skips it)")
    })?;
    Ok(local.with_timezone(&Utc))
}

const CUSTOM_FIELDS: [&str; 6] = [
    "system_msg",
    "sttlanguage_code",
    "text",
    "Voicechat_id",
    "ai_agent_ext",
    "sip_url",
];

/// A `dial_by_aivoicebot` request body (JSON or a form, by `content_type`)
/// as the call it asks for, or what is wrong with it.
pub fn parse_dial_request(
    content_type: &str,
    body: &[u8],
    cfg: &crate::config::Config,
    guard: &crate::netguard::Guard,
) -> Result<OutboundCall, String> {
    dial_request(cfg, guard, &body_object(content_type, body)?)
}

fn dial_request(
    cfg: &crate::config::Config,
    guard: &crate::netguard::Guard,
    obj: &Map<String, Value>,
) -> Result<OutboundCall, String> {
    if let Some(Value::Number(n)) = obj.get("customer_no") {
        // A JSON number is taken for its digits, but not a sign or a fraction.
        if n.as_u64().is_none() {
            return Err(format!(
                "customer_no {n} is not a phone number; send the number as a string, e.g. \"+14155550100\""
            ));
        }
    }
    let customer = field(obj, "customer_no")?.ok_or("customer_no is required")?;
    let to = normalize_phone(&customer).map_err(|e| format!("customer_no {e}"))?;
    let wss_url = field(obj, "wss_url")?.ok_or(
        "wss_url is required: the WebSocket URL of the bot that takes the call (e.g. wss://bot.example.com/voice)",
    )?;
    crate::botlink::check_bot_url(&wss_url, cfg.bot.allow_insecure_ws, guard)
        .map_err(|e| format!("wss_url {e}"))?;
    let wss_headers = match field(obj, "wss_header")? {
        Some(h) => crate::botlink::parse_headers(&h)?,
        None => Vec::new(),
    };
    let connect_ws_after_answer = match field(obj, "connect_ws_after_answer")?.as_deref() {
        None | Some("1") => true,
        Some("0") => false,
        Some(other) => {
            return Err(format!(
                "connect_ws_after_answer must be \"0\" or \"1\", not {other:?}"
            ))
        }
    };
    let tz = field(obj, "timezone")?;
    let schedule_at = match field(obj, "schedule_datetime")? {
        Some(when) => {
            let at = parse_schedule(&when, tz.as_deref())?;
            if at < Utc::now() - chrono::Duration::seconds(60) {
                return Err(format!(
                    "schedule_datetime {when:?} ({}) is in the past",
                    tz.as_deref().unwrap_or("UTC")
                ));
            }
            Some(at).filter(|at| *at > Utc::now())
        }
        None => {
            if let Some(tz) = tz.as_deref() {
                tz.parse::<chrono_tz::Tz>()
                    .map_err(|_| format!("timezone {tz:?} is not an IANA time zone"))?;
            }
            None
        }
    };
    let mut custom_parameters = Map::new();
    for name in CUSTOM_FIELDS {
        if let Some(v) = field(obj, name)? {
            custom_parameters.insert(name.to_string(), Value::String(v));
        }
    }
    Ok(OutboundCall {
        to,
        from: cfg.calls.caller_id.clone(),
        wss_url,
        wss_headers,
        connect_ws_after_answer,
        custom_parameters,
        schedule_at,
    })
}

async fn dial_by_aivoicebot(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let engine = &app.engine;
    let call = match parse_dial_request(
        content_type(&headers),
        &body,
        engine.config(),
        engine.guard(),
    ) {
        Ok(c) => c,
        Err(msg) => return bad_request(msg),
    };
    let scheduled = call.schedule_at;
    let to = call.to.clone();
    match app.engine.place(call) {
        Ok((logid, call_sid)) => {
            let message = match scheduled {
                Some(at) => format!(
                    "Call to {to} scheduled for {}",
                    at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                None => format!("Call to {to} initiated"),
            };
            Json(json!({
                "status": true,
                "message": message,
                "data": {
                    "logid": logid,
                    "call_sid": call_sid,
                    "call_state": "initiated",
                    "scheduled_at": scheduled.map(|t| t.to_rfc3339()),
                }
            }))
            .into_response()
        }
        Err(e @ (PlaceError::Draining | PlaceError::Full(_) | PlaceError::Overloaded(_))) => {
            let retry = match e {
                PlaceError::Draining => app.engine.config().server.drain_secs.max(1),
                _ => 1,
            }
            .to_string();
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            if let Ok(v) = header::HeaderValue::from_str(&retry) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Err(PlaceError::Store(e)) => internal(e),
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A call as the call-log endpoints show it: the spec's `CallLog` fields, then
/// the bridge's own (`call_sid`, `call_state`, `end_reason`, ...).
fn call_log(app: &AppState, c: &CallRecord) -> Value {
    let req = &c.request;
    let recording_url = c
        .recording
        .as_ref()
        .map(|f| format!("{}/recordings/{f}", app.public_url))
        .unwrap_or_default();
    // `did_no` is always our number and `client_no` the customer's, whichever
    // way the call went.
    let (did_no, client_no) = if c.direction == "inbound" {
        (&c.to, &c.from)
    } else {
        (&c.from, &c.to)
    };
    // Stored when the call ends; while it is live, whoever answered first.
    let attended_by = match (c.answered_at, req.get("extension").and_then(Value::as_str)) {
        _ if !c.attended_by.is_empty() => c.attended_by.as_str(),
        (None, _) => "",
        (Some(_), Some(_)) => "extension",
        (Some(_), None) => "bot",
    };
    json!({
        "recordid": c.id,
        "did_no": did_no,
        "client_no": client_no,
        "agent_no": c.agent_no,
        "attended_by": attended_by,
        "ext_no": req.pointer("/custom_parameters/ai_agent_ext").and_then(Value::as_str).unwrap_or(""),
        "call_time": fmt_time(c.created_at),
        "call_duration": c.duration_secs(),
        "call_status": c.state.call_status(),
        "call_type": c.direction,
        "recording_url": recording_url,
        "dtmf_input": c.dtmf_input,
        "call_sid": c.call_sid,
        "call_state": c.state.as_str(),
        "end_reason": c.end_reason,
        "sip_code": c.sip_code,
        "scheduled_at": c.scheduled_at.map(fmt_time),
        "answered_at": c.answered_at.map(fmt_time),
        "ended_at": c.ended_at.map(fmt_time),
        // Without credentials or query string: keys travel there.
        "wss_url": req
            .get("wss_url")
            .and_then(|v| v.as_str())
            .map(crate::botlink::redact_url),
        "phone": c.phone_report,
        "legs": c.legs.iter().map(|l| json!({
            "destination": l.destination,
            "kind": l.kind,
            "outcome": l.outcome,
            "sip_code": l.sip_code,
            "rang_at": l.rang_at.map(fmt_time),
            "answered_at": l.answered_at.map(fmt_time),
            "ended_at": l.ended_at.map(fmt_time),
            "bridged": l.bridged,
            "phone": l.phone,
        })).collect::<Vec<_>>(),
    })
}

async fn get_call_status(
    State(app): State<Arc<AppState>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let store = app.engine.store();
    let found = if let Some(id) = q.get("logid") {
        let Ok(id) = id.trim().parse::<i64>() else {
            return bad_request(format!("logid {id:?} is not a number"));
        };
        store.call(id)
    } else if let Some(sid) = q.get("call_sid") {
        store.call_by_sid(sid.trim())
    } else {
        // Without a call, this is the spec's list of status labels.
        let labels = [
            "Interested",
            "Not Interested",
            "Call Back Later",
            "Wrong Number",
            "DND",
            "Converted",
            "Follow Up Required",
        ];
        let data: Vec<Value> = labels
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"id": i + 1, "name": n}))
            .collect();
        return Json(json!({"status": true, "data": data})).into_response();
    };
    match found {
        Ok(Some(c)) => Json(json!({"status": true, "data": call_log(&app, &c)})).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(json!({"status": 404, "message": "Call not found"})),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

fn parse_day(obj: &Map<String, Value>, name: &str) -> Result<Option<NaiveDate>, String> {
    field(obj, name)?
        .map(|d| {
            NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                .ok()
                .filter(|day| four_digit_year(day.year()) && d.len() == 10)
                .ok_or_else(|| {
                    format!(
                        "{name} {d:?} is not a date of the form YYYY-MM-DD (years 1000 to 9999)"
                    )
                })
        })
        .transpose()
}

/// Times are stored and compared as RFC 3339 text, which sorts right only
/// for four-digit years; chrono also reads `+262142` or `-5` as a year.
fn four_digit_year(year: i32) -> bool {
    (1000..=9999).contains(&year)
}

fn no_records(message: &str) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"status": 405, "message": message})),
    )
        .into_response()
}

async fn call_logs(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let range = body_object(content_type(&headers), &body).and_then(|obj| {
        let from = parse_day(&obj, "from_date")?;
        let to = parse_day(&obj, "to_date")?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(format!("from_date {f} is after to_date {t}"));
            }
        }
        Ok((from, to))
    });
    let (from, to) = match range {
        Ok(r) => r,
        Err(msg) => return bad_request(msg),
    };
    let start = from
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    // Stored times are RFC 3339 text, compared as text: the end stays within
    // four-digit years (the day after 9999-12-31 would be year 10000, which
    // sorts first), so it sorts after every stored time of the range.
    let last = NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_milli_opt(23, 59, 59, 999))
        .map(|d| d.and_utc())
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let end = to
        .and_then(|d| d.succ_opt())
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .filter(|e| e.year() <= 9999)
        .unwrap_or(last);
    match app.engine.store().calls_between(start, end) {
        Ok(calls) if calls.is_empty() => no_records("No records found"),
        Ok(calls) => {
            let data: Vec<Value> = calls.iter().map(|c| call_log(&app, c)).collect();
            Json(json!({"status": 200, "data": data})).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn calllog_by_number(
    State(app): State<Arc<AppState>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Some(phone) = q.get("phone").filter(|p| !p.trim().is_empty()) else {
        return bad_request("phone is required");
    };
    let number = match normalize_phone(phone) {
        Ok(n) => n,
        Err(e) => return bad_request(format!("phone {e}")),
    };
    match app.engine.store().calls_with_number(&number) {
        Ok(calls) if calls.is_empty() => (
            StatusCode::NOT_FOUND,
            Json(json!({"status": 404, "message": "caller Not Found"})),
        )
            .into_response(),
        Ok(calls) => {
            let data: Vec<Value> = calls.iter().map(|c| call_log(&app, c)).collect();
            Json(json!({"status": 200, "data": data})).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn recording(State(app): State<Arc<AppState>>, Path(file): Path<String>) -> Response {
    let Some(sid) = file.strip_suffix(".wav") else {
        return error(StatusCode::NOT_FOUND, "no such recording");
    };
    let call = match app.engine.store().call_by_sid(sid) {
        Ok(Some(c)) => c,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such recording"),
        Err(e) => return internal(e),
    };
    let Some(name) = call.recording else {
        let msg = if call.state.is_final() {
            "this call has no recording (it was never answered)"
        } else {
            "the recording is available once the call has ended"
        };
        return error(StatusCode::NOT_FOUND, msg);
    };
    match tokio::fs::read(app.engine.recordings_dir().join(&name)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response(),
        Err(e) => {
            tracing::error!("recording {name}: {e}");
            error(StatusCode::NOT_FOUND, "the recording file is missing")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_follow_the_spec_rules() {
        assert_eq!(normalize_phone("09876543210").unwrap(), "09876543210");
        assert_eq!(normalize_phone("+91 98765-43210").unwrap(), "+919876543210");
        assert_eq!(normalize_phone("(0987) 654.3210").unwrap(), "09876543210");
        assert_eq!(normalize_phone("0091 9876543210").unwrap(), "+919876543210");
        assert_eq!(normalize_phone("+9991 0001").unwrap(), "+99910001");
        assert!(normalize_phone("call me").is_err());
        assert!(normalize_phone("+12").is_err());
        assert!(normalize_phone("+1234567890123456").is_err());
    }

    #[test]
    fn schedule_in_a_time_zone() {
        let t = parse_schedule("2030-12-31 13:00:00", Some("Asia/Kolkata")).unwrap();
        assert_eq!(t.to_rfc3339(), "2030-12-31T07:30:00+00:00");
        assert!(parse_schedule("2030-12-31", None).is_err());
        assert!(parse_schedule("2030-12-31 13:00:00", Some("Mars/Base"))
            .unwrap_err()
            .contains("Mars/Base"));
    }
}
