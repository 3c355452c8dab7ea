//! Events: what the bridge sends to a bot (PROTOCOL.md section 2).
//!
//! The bridge writes events with [`write_event`], from borrowed [`Event`] values, into
//! a `String` it reuses for the life of the call. Bots, tests and the conformance
//! suite read them back with [`parse_event`] into owned [`BotEvent`] values.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::json;

/// Who placed the call, seen from the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A caller dialled one of our numbers.
    Inbound,
    /// We dialled out (for example `dial_by_aivoicebot`).
    Outbound,
}

impl Direction {
    /// `"inbound"` or `"outbound"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

wire_strings! {
    /// Why a stream ended: the `reason` of the `stop` event.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum StopReason {
        /// The phone side hung up.
        CallEnded => "callended",
        /// The bot sent `session.hangup`.
        BotHangup => "bot_hangup",
        /// A `session.transfer` or `session.transfer_extension` target answered.
        Transferred => "transferred",
        /// The call was handed to another bot (`session.transfer_ws`).
        TransferWs => "transfer_ws",
        /// The call was handed to an IVR flow or queue.
        FlowTransfer => "flow_transfer",
        /// The dialled number was busy.
        Busy => "busy",
        /// Nobody answered.
        NoAnswer => "no-answer",
        /// The call could not be set up.
        Failed => "failed",
        /// The call reached its longest allowed duration.
        MaxDuration => "max_duration",
        /// The bridge is shutting down.
        Shutdown => "shutdown",
        /// An internal error ended the call.
        Error => "error",
    }
}

wire_strings! {
    /// Why the bridge refused a bot message: the `code` of the `error` event.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum ErrorCode {
        /// The text frame is not a JSON object.
        BadJson => "bad_json",
        /// The `type` names no message the bridge knows.
        UnknownType => "unknown_type",
        /// A required field (or `type` itself) is absent or null.
        MissingField => "missing_field",
        /// A field has the wrong JSON type or an unusable value.
        BadField => "bad_field",
        /// `delta` is not base64.
        BadBase64 => "bad_base64",
        /// The audio is not a whole number of samples.
        OddByteCount => "odd_byte_count",
        /// `session.dtmf` holds a character that is not a DTMF digit.
        BadDtmf => "bad_dtmf",
        /// The frame is larger than the session's limit (1 MiB by default).
        MessageTooLarge => "message_too_large",
        /// The audio would overflow the playout queue; nothing queued was lost.
        QueueFull => "queue_full",
        /// The message is valid but this call or session cannot carry it out.
        NotSupported => "not_supported",
        /// A transfer was refused before any attempt (policy, bad destination).
        TransferRefused => "transfer_refused",
        /// A transfer message came while another transfer is still ringing.
        TransferInProgress => "transfer_in_progress",
        /// `session.transfer_complete` or `session.transfer_cancel` came with no
        /// warm transfer waiting for it.
        NoWarmTransfer => "no_warm_transfer",
        /// The message arrived after the stream's `stop`.
        AfterStop => "after_stop",
    }
}

/// The audio format of `media` payloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaFormat {
    /// `raw/slin` (LE PCM16), `audio/x-mulaw` or `audio/x-alaw`.
    pub encoding: String,
    /// Samples per second: 8000, 16000 or 24000.
    pub sample_rate: u32,
}

impl Default for MediaFormat {
    /// 16-bit little-endian PCM at 8000 Hz, the protocol's default.
    fn default() -> Self {
        MediaFormat {
            encoding: "raw/slin".to_owned(),
            sample_rate: 8000,
        }
    }
}

/// The body of the `start` event. Field order is the wire order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartInfo {
    /// This stream's id; a `transfer_ws` gets a fresh one.
    pub stream_sid: String,
    /// The call's id; it survives `transfer_ws`.
    pub call_sid: String,
    /// Calling number.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Who placed the call.
    pub direction: Direction,
    /// Format of `media` payloads (and of the audio the bot sends).
    pub media_format: MediaFormat,
    /// Tracks carried in `media` events: `["inbound"]` (what the caller says).
    pub tracks: Vec<String>,
    /// Per-call fields the API caller gave (`system_msg`, `Voicechat_id`, ...).
    pub custom_parameters: Map<String, Value>,
}

/// One bridge → bot event, borrowed, to be written by [`write_event`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    /// The socket is open. The only event without `stream_sid`/`sequence_number`.
    Connected,
    /// Media begins; sent once, with `sequence_number` 1.
    Start(&'a StartInfo),
    /// One chunk of the caller's audio.
    Media {
        /// Counts media events from 1.
        chunk: u64,
        /// Milliseconds since the stream started, of the chunk's first sample.
        timestamp_ms: u64,
        /// `payload` is raw little-endian PCM16 bytes (or the session's format);
        /// the writer base64-encodes it.
        payload: &'a [u8],
    },
    /// The caller pressed a key.
    Dtmf {
        /// `0-9`, `*`, `#` or `A-D`.
        digit: char,
        /// How long the key was held.
        duration_ms: u32,
    },
    /// Playback reached a mark the bot placed.
    Mark {
        /// The name the bot gave the mark.
        name: &'a str,
    },
    /// Queued audio was flushed.
    Clear,
    /// The last event of the stream.
    Stop {
        /// The call's id.
        call_sid: &'a str,
        /// Why the stream ended.
        reason: StopReason,
    },
    /// One of the bot's messages was refused; the call goes on.
    Error {
        /// What kind of problem it was.
        code: ErrorCode,
        /// What exactly was wrong, for the bot's developer.
        message: &'a str,
    },
    /// A transfer the bot asked for could not be completed; the bot keeps the call.
    TransferFailed {
        /// The message type that asked for it, e.g. `session.transfer`.
        kind: &'a str,
        /// Where the call was to go (with several destinations, the first).
        destination: &'a str,
        /// Why it failed, e.g. `busy` or `no-answer`.
        reason: &'a str,
        /// Each destination tried and how it went, in order.
        attempts: &'a [TransferAttempt<'a>],
    },
    /// **[ours]** A warm transfer's target answered: the bot now talks to it
    /// alone while the caller holds.
    TransferAnswered {
        /// The message type that asked for it (`session.transfer`).
        kind: &'a str,
        /// The destination that answered.
        destination: &'a str,
    },
}

/// One destination a transfer tried, in a `transfer_failed` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferAttempt<'a> {
    /// The destination as the bot gave it.
    pub destination: &'a str,
    /// `busy`, `no-answer`, `failed` or `cancelled`.
    pub outcome: &'a str,
    /// The SIP code of the outcome (486 busy, 408 no answer, 404 no route...).
    pub sip_code: Option<u16>,
}

/// [`TransferAttempt`] as a bot reads it back ([`BotEvent::TransferFailed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferAttemptInfo {
    /// The destination as the bot gave it.
    pub destination: String,
    /// `busy`, `no-answer`, `failed` or `cancelled`.
    pub outcome: String,
    /// The SIP code of the outcome, if there was one.
    pub sip_code: Option<u16>,
}

impl Event<'_> {
    /// The event's `event` name on the wire, e.g. `"media"`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Connected => "connected",
            Event::Start(_) => "start",
            Event::Media { .. } => "media",
            Event::Dtmf { .. } => "dtmf",
            Event::Mark { .. } => "mark",
            Event::Clear => "clear",
            Event::Stop { .. } => "stop",
            Event::Error { .. } => "error",
            Event::TransferFailed { .. } => "transfer_failed",
            Event::TransferAnswered { .. } => "transfer_answered",
        }
    }
}

/// Appends the JSON text of `ev` to `out` (does NOT clear it).
///
/// `stream_sid` and `sequence_number` are written for every event except
/// `Connected`. Apart from growing `out` (once, by a reserve sized for the event),
/// nothing is allocated except for `Start`, so `out` can be reused for every frame.
///
/// ```
/// use protocol::{write_event, Event};
///
/// let mut out = String::new();
/// let pcm = [0u8, 0, 0xff, 0x7f];
/// write_event(&mut out, "MZ1", 2, &Event::Media { chunk: 1, timestamp_ms: 0, payload: &pcm });
/// assert_eq!(
///     out,
///     r#"{"event":"media","sequence_number":2,"stream_sid":"MZ1","media":{"chunk":1,"timestamp":"0","payload":"AAD/fw=="}}"#
/// );
/// ```
pub fn write_event(out: &mut String, stream_sid: &str, sequence_number: u64, ev: &Event<'_>) {
    if let Event::Connected = ev {
        out.push_str(r#"{"event":"connected"}"#);
        return;
    }

    // Fixed keys plus numbers take under 160 bytes; strings are reserved at their
    // unescaped length, which is exact in the common case.
    let body_len = match *ev {
        Event::Media { payload, .. } => payload.len().div_ceil(3) * 4,
        Event::Mark { name } => name.len(),
        Event::Stop { call_sid, .. } => call_sid.len(),
        Event::Error { message, .. } => message.len(),
        Event::TransferFailed {
            kind,
            destination,
            reason,
            attempts,
        } => {
            kind.len()
                + destination.len()
                + reason.len()
                + attempts
                    .iter()
                    .map(|a| 64 + a.destination.len())
                    .sum::<usize>()
        }
        Event::TransferAnswered { kind, destination } => kind.len() + destination.len(),
        _ => 0,
    };
    out.reserve(160 + stream_sid.len() + body_len);

    out.push_str(r#"{"event":""#);
    out.push_str(ev.name());
    out.push_str(r#"","sequence_number":"#);
    json::push_u64(out, sequence_number);
    out.push_str(r#","stream_sid":"#);
    json::push_str(out, stream_sid);

    match *ev {
        Event::Connected | Event::Clear => {}
        Event::Start(info) => {
            out.push_str(r#","start":"#);
            write_start(out, info);
        }
        Event::Media {
            chunk,
            timestamp_ms,
            payload,
        } => {
            out.push_str(r#","media":{"chunk":"#);
            json::push_u64(out, chunk);
            out.push_str(r#","timestamp":"#);
            json::push_u64_string(out, timestamp_ms);
            out.push_str(r#","payload":""#);
            crate::b64::encode_append(payload, out);
            out.push_str("\"}");
        }
        Event::Dtmf { digit, duration_ms } => {
            out.push_str(r#","dtmf":{"digit":"#);
            json::push_str(out, digit.encode_utf8(&mut [0; 4]));
            out.push_str(r#","duration":"#);
            json::push_u64_string(out, u64::from(duration_ms));
            out.push('}');
        }
        Event::Mark { name } => {
            out.push_str(r#","mark":{"name":"#);
            json::push_str(out, name);
            out.push('}');
        }
        Event::Stop { call_sid, reason } => {
            out.push_str(r#","stop":{"call_sid":"#);
            json::push_str(out, call_sid);
            out.push_str(r#","reason":""#);
            out.push_str(reason.as_str());
            out.push_str("\"}");
        }
        Event::Error { code, message } => {
            out.push_str(r#","error":{"code":""#);
            out.push_str(code.as_str());
            out.push_str(r#"","message":"#);
            json::push_str(out, message);
            out.push('}');
        }
        Event::TransferFailed {
            kind,
            destination,
            reason,
            attempts,
        } => {
            out.push_str(r#","transfer":{"type":"#);
            json::push_str(out, kind);
            out.push_str(r#","destination":"#);
            json::push_str(out, destination);
            out.push_str(r#","reason":"#);
            json::push_str(out, reason);
            out.push_str(r#","attempts":["#);
            for (i, a) in attempts.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"destination":"#);
                json::push_str(out, a.destination);
                out.push_str(r#","outcome":"#);
                json::push_str(out, a.outcome);
                out.push_str(r#","sip_code":"#);
                match a.sip_code {
                    Some(code) => json::push_u64(out, u64::from(code)),
                    None => out.push_str("null"),
                }
                out.push('}');
            }
            out.push_str("]}");
        }
        Event::TransferAnswered { kind, destination } => {
            out.push_str(r#","transfer":{"type":"#);
            json::push_str(out, kind);
            out.push_str(r#","destination":"#);
            json::push_str(out, destination);
            out.push('}');
        }
    }
    out.push('}');
}

/// Writes `info` in the same shape and order as its `Serialize` impl, straight into
/// `out` (serde_json only writes to `io::Write`, and a `String` is not one).
fn write_start(out: &mut String, info: &StartInfo) {
    out.push_str(r#"{"stream_sid":"#);
    json::push_str(out, &info.stream_sid);
    out.push_str(r#","call_sid":"#);
    json::push_str(out, &info.call_sid);
    out.push_str(r#","from":"#);
    json::push_str(out, &info.from);
    out.push_str(r#","to":"#);
    json::push_str(out, &info.to);
    out.push_str(r#","direction":""#);
    out.push_str(info.direction.as_str());
    out.push_str(r#"","media_format":{"encoding":"#);
    json::push_str(out, &info.media_format.encoding);
    out.push_str(r#","sample_rate":"#);
    json::push_u64(out, u64::from(info.media_format.sample_rate));
    out.push_str(r#"},"tracks":["#);
    for (i, track) in info.tracks.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::push_str(out, track);
    }
    out.push_str(r#"],"custom_parameters":{"#);
    for (i, (key, value)) in info.custom_parameters.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::push_str(out, key);
        out.push(':');
        // `Value`'s Display is compact JSON; writing to a `String` cannot fail.
        let _ = write!(out, "{value}");
    }
    out.push_str("}}");
}

/// An event as a bot receives it: the owned, parsed form of what [`write_event`]
/// writes.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // Fields are the wire fields of the same names.
pub enum BotEvent {
    /// `{"event":"connected"}`.
    Connected,
    /// Media begins.
    Start {
        sequence_number: u64,
        stream_sid: String,
        start: StartInfo,
    },
    /// One chunk of the caller's audio; `payload` is decoded from base64.
    Media {
        sequence_number: u64,
        stream_sid: String,
        chunk: u64,
        timestamp_ms: u64,
        payload: Vec<u8>,
    },
    /// The caller pressed a key.
    Dtmf {
        sequence_number: u64,
        stream_sid: String,
        digit: char,
        duration_ms: u32,
    },
    /// Playback reached a mark.
    Mark {
        sequence_number: u64,
        stream_sid: String,
        name: String,
    },
    /// Queued audio was flushed.
    Clear {
        sequence_number: u64,
        stream_sid: String,
    },
    /// The stream ended.
    Stop {
        sequence_number: u64,
        stream_sid: String,
        call_sid: String,
        reason: StopReason,
    },
    /// A bot message was refused. `code` is kept as text so a bot built against
    /// this crate still reads codes added later.
    Error {
        sequence_number: u64,
        stream_sid: String,
        code: String,
        message: String,
    },
    /// A transfer failed; `kind` is the wire's `transfer.type`.
    TransferFailed {
        sequence_number: u64,
        stream_sid: String,
        kind: String,
        destination: String,
        reason: String,
        /// Each destination tried (empty when the bridge sent none).
        attempts: Vec<TransferAttemptInfo>,
    },
    /// A warm transfer's target answered; `kind` is the wire's `transfer.type`.
    TransferAnswered {
        sequence_number: u64,
        stream_sid: String,
        kind: String,
        destination: String,
    },
}

impl BotEvent {
    /// The event's `sequence_number`; `None` for `Connected`, which has none.
    pub fn sequence_number(&self) -> Option<u64> {
        match self {
            BotEvent::Connected => None,
            BotEvent::Start {
                sequence_number, ..
            }
            | BotEvent::Media {
                sequence_number, ..
            }
            | BotEvent::Dtmf {
                sequence_number, ..
            }
            | BotEvent::Mark {
                sequence_number, ..
            }
            | BotEvent::Clear {
                sequence_number, ..
            }
            | BotEvent::Stop {
                sequence_number, ..
            }
            | BotEvent::Error {
                sequence_number, ..
            }
            | BotEvent::TransferFailed {
                sequence_number, ..
            }
            | BotEvent::TransferAnswered {
                sequence_number, ..
            } => Some(*sequence_number),
        }
    }

    /// The event's `stream_sid`; `None` for `Connected`, which has none.
    pub fn stream_sid(&self) -> Option<&str> {
        match self {
            BotEvent::Connected => None,
            BotEvent::Start { stream_sid, .. }
            | BotEvent::Media { stream_sid, .. }
            | BotEvent::Dtmf { stream_sid, .. }
            | BotEvent::Mark { stream_sid, .. }
            | BotEvent::Clear { stream_sid, .. }
            | BotEvent::Stop { stream_sid, .. }
            | BotEvent::Error { stream_sid, .. }
            | BotEvent::TransferFailed { stream_sid, .. }
            | BotEvent::TransferAnswered { stream_sid, .. } => Some(stream_sid),
        }
    }

    /// The event's `event` name on the wire, e.g. `"media"`.
    pub fn name(&self) -> &'static str {
        match self {
            BotEvent::Connected => "connected",
            BotEvent::Start { .. } => "start",
            BotEvent::Media { .. } => "media",
            BotEvent::Dtmf { .. } => "dtmf",
            BotEvent::Mark { .. } => "mark",
            BotEvent::Clear { .. } => "clear",
            BotEvent::Stop { .. } => "stop",
            BotEvent::Error { .. } => "error",
            BotEvent::TransferFailed { .. } => "transfer_failed",
            BotEvent::TransferAnswered { .. } => "transfer_answered",
        }
    }
}

/// Why [`parse_event`] refused a text. Field paths are dotted from the top of the
/// event, e.g. `media.timestamp`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventParseError {
    /// The text is not JSON.
    #[error("event is not valid JSON: {0}")]
    BadJson(String),
    /// The JSON is not an object.
    #[error("event is not a JSON object")]
    NotObject,
    /// There is no `event` field, or it is not a string.
    #[error("message has no string `event` field")]
    NoEventName,
    /// The `event` names no event this protocol has.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    /// A required field is absent.
    #[error("`{event}` event: missing field `{field}`")]
    MissingField {
        /// The event's name.
        event: &'static str,
        /// The missing field's path.
        field: String,
    },
    /// A field has the wrong JSON type or an impossible value.
    #[error("`{event}` event: field `{field}` {problem}")]
    BadField {
        /// The event's name.
        event: &'static str,
        /// The field's path.
        field: String,
        /// What is wrong with it, e.g. "must be a string, got a number".
        problem: String,
    },
    /// `media.payload` is not standard, padded base64.
    #[error("`media` event: `media.payload` is not valid base64 ({0})")]
    BadBase64(String),
}

/// Parses one event as a bot receives it.
///
/// Strict, so tests and the conformance suite catch a bridge that drifts from the
/// contract: rejects unknown event names, missing fields, wrong JSON types,
/// `timestamp`/`duration` that are not strings of decimal digits, a `dtmf.digit`
/// that is not one DTMF digit, an unknown stop reason and bad base64. Extra fields
/// are ignored, so events may grow fields without breaking bots.
///
/// ```
/// use protocol::{parse_event, BotEvent, StopReason};
///
/// let ev = parse_event(
///     r#"{"event":"stop","sequence_number":9,"stream_sid":"MZ1","stop":{"call_sid":"CA1","reason":"callended"}}"#,
/// )?;
/// assert_eq!(ev.sequence_number(), Some(9));
/// assert!(matches!(ev, BotEvent::Stop { reason: StopReason::CallEnded, .. }));
/// # Ok::<(), protocol::EventParseError>(())
/// ```
pub fn parse_event(text: &str) -> Result<BotEvent, EventParseError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| EventParseError::BadJson(e.to_string()))?;
    let Value::Object(top) = value else {
        return Err(EventParseError::NotObject);
    };
    let event: &'static str = match top.get("event") {
        Some(Value::String(name)) => match name.as_str() {
            "connected" => return Ok(BotEvent::Connected),
            "start" => "start",
            "media" => "media",
            "dtmf" => "dtmf",
            "mark" => "mark",
            "clear" => "clear",
            "stop" => "stop",
            "error" => "error",
            "transfer_failed" => "transfer_failed",
            "transfer_answered" => "transfer_answered",
            other => return Err(EventParseError::UnknownEvent(other.to_owned())),
        },
        _ => return Err(EventParseError::NoEventName),
    };

    let fields = Fields {
        obj: &top,
        event,
        parent: "",
    };
    let sequence_number = fields.u64("sequence_number")?;
    let stream_sid = fields.string("stream_sid")?.to_owned();

    Ok(match event {
        "start" => {
            fields.object("start")?;
            let start = StartInfo::deserialize(fields.get("start")?).map_err(|e| {
                EventParseError::BadField {
                    event,
                    field: "start".to_owned(),
                    problem: format!("is malformed: {e}"),
                }
            })?;
            BotEvent::Start {
                sequence_number,
                stream_sid,
                start,
            }
        }
        "media" => {
            let media = fields.object("media")?;
            let chunk = media.u64("chunk")?;
            let timestamp_ms = media.decimal_string("timestamp")?;
            let payload = crate::b64::decode_padded(media.string("payload")?)
                .map_err(|e| EventParseError::BadBase64(crate::describe_base64_error(&e)))?;
            BotEvent::Media {
                sequence_number,
                stream_sid,
                chunk,
                timestamp_ms,
                payload,
            }
        }
        "dtmf" => {
            let dtmf = dtmf_body(&fields.object("dtmf")?)?;
            BotEvent::Dtmf {
                sequence_number,
                stream_sid,
                digit: dtmf.0,
                duration_ms: dtmf.1,
            }
        }
        "mark" => BotEvent::Mark {
            sequence_number,
            stream_sid,
            name: fields.object("mark")?.string("name")?.to_owned(),
        },
        "clear" => BotEvent::Clear {
            sequence_number,
            stream_sid,
        },
        "stop" => {
            let stop = fields.object("stop")?;
            let call_sid = stop.string("call_sid")?.to_owned();
            let reason_text = stop.string("reason")?;
            let reason = StopReason::parse(reason_text).ok_or_else(|| {
                stop.bad("reason", format!("is not a stop reason: {reason_text:?}"))
            })?;
            BotEvent::Stop {
                sequence_number,
                stream_sid,
                call_sid,
                reason,
            }
        }
        "error" => {
            let error = fields.object("error")?;
            BotEvent::Error {
                sequence_number,
                stream_sid,
                code: error.string("code")?.to_owned(),
                message: error.string("message")?.to_owned(),
            }
        }
        "transfer_answered" => {
            let transfer = fields.object("transfer")?;
            BotEvent::TransferAnswered {
                sequence_number,
                stream_sid,
                kind: transfer.string("type")?.to_owned(),
                destination: transfer.string("destination")?.to_owned(),
            }
        }
        _ => {
            let transfer = fields.object("transfer")?;
            BotEvent::TransferFailed {
                sequence_number,
                stream_sid,
                kind: transfer.string("type")?.to_owned(),
                destination: transfer.string("destination")?.to_owned(),
                reason: transfer.string("reason")?.to_owned(),
                attempts: transfer.attempts()?,
            }
        }
    })
}

fn dtmf_body(dtmf: &Fields<'_>) -> Result<(char, u32), EventParseError> {
    let text = dtmf.string("digit")?;
    let mut chars = text.chars();
    let digit = match (chars.next(), chars.next()) {
        (Some(c), None) if crate::is_valid_dtmf(c) => c,
        _ => return Err(dtmf.bad("digit", format!("must be one of 0-9 * # A-D, got {text:?}"))),
    };
    let duration = dtmf.decimal_string("duration")?;
    let duration_ms = u32::try_from(duration)
        .map_err(|_| dtmf.bad("duration", format!("is out of range: {duration}")))?;
    Ok((digit, duration_ms))
}

/// Typed access to one JSON object of an event, with errors that name the field.
struct Fields<'v> {
    obj: &'v Map<String, Value>,
    event: &'static str,
    /// The key this object sits under, or empty at the top.
    parent: &'static str,
}

impl<'v> Fields<'v> {
    fn path(&self, key: &str) -> String {
        if self.parent.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.parent)
        }
    }

    fn bad(&self, key: &str, problem: String) -> EventParseError {
        EventParseError::BadField {
            event: self.event,
            field: self.path(key),
            problem,
        }
    }

    fn get(&self, key: &str) -> Result<&'v Value, EventParseError> {
        self.obj
            .get(key)
            .ok_or_else(|| EventParseError::MissingField {
                event: self.event,
                field: self.path(key),
            })
    }

    fn string(&self, key: &str) -> Result<&'v str, EventParseError> {
        match self.get(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.bad(key, format!("must be a string, got {}", kind(other)))),
        }
    }

    fn u64(&self, key: &str) -> Result<u64, EventParseError> {
        let value = self.get(key)?;
        value.as_u64().ok_or_else(|| {
            self.bad(
                key,
                format!("must be a whole number >= 0, got {}", kind(value)),
            )
        })
    }

    /// A number carried as a string of decimal digits, like `"timestamp":"120"`.
    fn decimal_string(&self, key: &str) -> Result<u64, EventParseError> {
        let text = self.string(key)?;
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.bad(
                key,
                format!("must be a string of decimal digits, got {text:?}"),
            ));
        }
        text.parse()
            .map_err(|_| self.bad(key, format!("is out of range: {text}")))
    }

    /// `attempts` of a `transfer_failed` (absent: none).
    fn attempts(&self) -> Result<Vec<TransferAttemptInfo>, EventParseError> {
        let items = match self.obj.get("attempts") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(self.bad("attempts", format!("must be an array, got {}", kind(other))))
            }
        };
        items
            .iter()
            .map(|item| {
                let Value::Object(obj) = item else {
                    return Err(
                        self.bad("attempts", format!("must hold objects, got {}", kind(item)))
                    );
                };
                let a = Fields {
                    obj,
                    event: self.event,
                    parent: "transfer.attempts[]",
                };
                let sip_code = match obj.get("sip_code") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(
                        u16::try_from(a.u64("sip_code")?)
                            .map_err(|_| a.bad("sip_code", "is out of range".into()))?,
                    ),
                };
                Ok(TransferAttemptInfo {
                    destination: a.string("destination")?.to_owned(),
                    outcome: a.string("outcome")?.to_owned(),
                    sip_code,
                })
            })
            .collect()
    }

    /// The object under `key`; its own fields are reported as `key.field`.
    fn object(&self, key: &'static str) -> Result<Fields<'v>, EventParseError> {
        match self.get(key)? {
            Value::Object(obj) => Ok(Fields {
                obj,
                event: self.event,
                parent: key,
            }),
            other => Err(self.bad(key, format!("must be an object, got {}", kind(other)))),
        }
    }
}

/// "a string", "a number", ...: the JSON type of `value`, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
