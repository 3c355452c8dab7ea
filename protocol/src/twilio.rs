//! The Twilio Media Streams dialect (PROTOCOL.md section 5): the exact wire
//! shapes of Twilio's bidirectional streams, so a bot written for Twilio
//! talks to a call of ours unchanged.
//!
//! Bridge → bot: `connected`, `start`, `media`, `dtmf`, `mark`, `stop`, with
//! camelCase keys and numbers as strings, as Twilio writes them. Audio is
//! base64 µ-law at 8 kHz. Events Twilio does not have (`clear`, `error`, the
//! transfer family) are not sent: [`write_event`] writes nothing for them.
//!
//! Bot → bridge: `media` (`media.payload`), `mark` (`mark.name`) and `clear`,
//! each with the stream's `streamSid`.
//!
//! ```
//! use protocol::{twilio, Command, Event};
//!
//! let mut out = String::new();
//! assert!(twilio::write_event(&mut out, "MZ1", 3, &Event::Mark { name: "greeting" }));
//! assert_eq!(
//!     out,
//!     r#"{"event":"mark","sequenceNumber":"3","streamSid":"MZ1","mark":{"name":"greeting"}}"#
//! );
//!
//! let mut audio = Vec::new();
//! let cmd = twilio::parse_command(
//!     r#"{"event":"media","streamSid":"MZ1","media":{"payload":"//8="}}"#,
//!     "MZ1",
//!     &mut audio,
//!     protocol::MAX_MESSAGE_BYTES,
//! )?;
//! assert_eq!((cmd, audio), (Command::AudioDelta, vec![0xff, 0xff]));
//! # Ok::<(), protocol::CommandError>(())
//! ```

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::json;
use crate::{Command, CommandError, ErrorCode, Event, StartInfo};

/// The account id Twilio puts in `start` and `stop`; we have no accounts in
/// this dialect, so it is a fixed, well-formed placeholder.
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";

/// The media format every Twilio stream carries.
pub const ENCODING: &str = "audio/x-mulaw";
/// Twilio streams are 8 kHz.
pub const SAMPLE_RATE: u32 = 8000;

/// Appends one event in Twilio's shape to `out`. Returns `false`, writing
/// nothing, for events Twilio's streams do not have.
pub fn write_event(
    out: &mut String,
    stream_sid: &str,
    sequence_number: u64,
    ev: &Event<'_>,
) -> bool {
    match *ev {
        Event::Connected => {
            out.push_str(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#);
            return true;
        }
        Event::Clear
        | Event::Error { .. }
        | Event::TransferFailed { .. }
        | Event::TransferAnswered { .. } => return false,
        _ => {}
    }
    out.push_str(r#"{"event":""#);
    out.push_str(ev.name());
    out.push_str(r#"","sequenceNumber":"#);
    json::push_u64_string(out, sequence_number);
    out.push_str(r#","streamSid":"#);
    json::push_str(out, stream_sid);
    match *ev {
        Event::Start(info) => {
            out.push_str(r#","start":"#);
            write_start(out, info);
        }
        Event::Media {
            chunk,
            timestamp_ms,
            payload,
        } => {
            out.push_str(r#","media":{"track":"inbound","chunk":"#);
            json::push_u64_string(out, chunk);
            out.push_str(r#","timestamp":"#);
            json::push_u64_string(out, timestamp_ms);
            out.push_str(r#","payload":""#);
            crate::b64::encode_append(payload, out);
            out.push_str("\"}");
        }
        Event::Dtmf { digit, .. } => {
            out.push_str(r#","dtmf":{"track":"inbound_track","digit":"#);
            json::push_str(out, digit.encode_utf8(&mut [0; 4]));
            out.push('}');
        }
        Event::Mark { name } => {
            out.push_str(r#","mark":{"name":"#);
            json::push_str(out, name);
            out.push('}');
        }
        Event::Stop { call_sid, .. } => {
            out.push_str(r#","stop":{"accountSid":""#);
            out.push_str(ACCOUNT_SID);
            out.push_str(r#"","callSid":"#);
            json::push_str(out, call_sid);
            out.push('}');
        }
        _ => unreachable!("filtered above"),
    }
    out.push('}');
    true
}

fn write_start(out: &mut String, info: &StartInfo) {
    out.push_str(r#"{"accountSid":""#);
    out.push_str(ACCOUNT_SID);
    out.push_str(r#"","streamSid":"#);
    json::push_str(out, &info.stream_sid);
    out.push_str(r#","callSid":"#);
    json::push_str(out, &info.call_sid);
    out.push_str(r#","tracks":["inbound"],"customParameters":{"#);
    // Twilio's custom parameters are strings; ours may be any JSON, and
    // the call's numbers ride along as Twilio's `From`/`To` parameters do.
    let mut first = true;
    let mut param = |out: &mut String, key: &str, value: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        json::push_str(out, key);
        out.push(':');
        json::push_str(out, value);
    };
    param(out, "from", &info.from);
    param(out, "to", &info.to);
    param(out, "direction", info.direction.as_str());
    for (key, value) in &info.custom_parameters {
        if matches!(key.as_str(), "from" | "to" | "direction") {
            continue;
        }
        match value {
            Value::String(s) => param(out, key, s),
            other => param(out, key, &other.to_string()),
        }
    }
    out.push_str(r#"},"mediaFormat":{"encoding":""#);
    out.push_str(ENCODING);
    out.push_str(r#"","sampleRate":"#);
    let _ = write!(out, "{SAMPLE_RATE}");
    out.push_str(r#","channels":1}}"#);
}

#[derive(Deserialize)]
struct Wire {
    event: Option<Value>,
    #[serde(rename = "streamSid")]
    stream_sid: Option<Value>,
    media: Option<Map<String, Value>>,
    mark: Option<Map<String, Value>>,
}

/// Parses one text frame from a Twilio-dialect bot: `media`, `mark` or
/// `clear`. `media` payloads are decoded into `audio` (µ-law bytes).
/// A `streamSid` other than the stream's is refused, as Twilio does.
pub fn parse_command(
    text: &str,
    stream_sid: &str,
    audio: &mut Vec<u8>,
    max_bytes: usize,
) -> Result<Command, CommandError> {
    audio.clear();
    if text.len() > max_bytes {
        return Err(CommandError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "message of {} bytes exceeds the limit of {max_bytes}",
                text.len()
            ),
        ));
    }
    let wire: Wire = match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => serde_json::from_value(v).map_err(|e| {
            CommandError::new(ErrorCode::BadField, format!("malformed message: {e}"))
        })?,
        Ok(_) => {
            return Err(CommandError::new(
                ErrorCode::BadJson,
                "a message must be a JSON object",
            ))
        }
        Err(e) => {
            return Err(CommandError::new(
                ErrorCode::BadJson,
                format!("not valid JSON: {e}"),
            ))
        }
    };
    let event = match wire.event {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(CommandError::new(
                ErrorCode::BadField,
                "`event` must be a string",
            ))
        }
        None => {
            return Err(CommandError::new(
                ErrorCode::MissingField,
                "message has no `event` field",
            ))
        }
    };
    match wire.stream_sid {
        Some(Value::String(s)) if s == stream_sid => {}
        Some(Value::String(s)) => {
            return Err(CommandError::new(
                ErrorCode::BadField,
                format!("{event}: `streamSid` {s:?} is not this stream's ({stream_sid})"),
            ))
        }
        _ => {
            return Err(CommandError::new(
                ErrorCode::MissingField,
                format!("{event}: `streamSid` is required"),
            ))
        }
    }
    match event.as_str() {
        "media" => {
            let payload = wire
                .media
                .as_ref()
                .and_then(|m| m.get("payload"))
                .ok_or_else(|| {
                    CommandError::new(
                        ErrorCode::MissingField,
                        "media: `media.payload` is required",
                    )
                })?;
            let Value::String(payload) = payload else {
                return Err(CommandError::new(
                    ErrorCode::BadField,
                    "media: `media.payload` must be a string",
                ));
            };
            crate::b64::decode_append(payload, audio).map_err(|e| {
                audio.clear();
                CommandError::new(
                    ErrorCode::BadBase64,
                    format!(
                        "media: `media.payload` is not valid base64 ({})",
                        crate::describe_base64_error(&e)
                    ),
                )
            })?;
            Ok(Command::AudioDelta)
        }
        "mark" => match wire.mark.as_ref().and_then(|m| m.get("name")) {
            Some(Value::String(name)) if !name.is_empty() => {
                Ok(Command::Mark { name: name.clone() })
            }
            Some(_) => Err(CommandError::new(
                ErrorCode::BadField,
                "mark: `mark.name` must be a non-empty string",
            )),
            None => Err(CommandError::new(
                ErrorCode::MissingField,
                "mark: `mark.name` is required",
            )),
        },
        "clear" => Ok(Command::Clear),
        other => Err(CommandError::new(
            ErrorCode::UnknownType,
            format!("unknown event {other:?}: a Twilio stream takes media, mark and clear"),
        )),
    }
}

/// A Twilio-dialect event as a bot receives it (for tests and the
/// conformance suite): the event name and its whole JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct TwilioEvent {
    /// `connected`, `start`, `media`, `dtmf`, `mark` or `stop`.
    pub event: String,
    /// The whole message.
    pub body: Value,
}

impl TwilioEvent {
    /// `sequenceNumber` as a number (it travels as a string).
    pub fn sequence_number(&self) -> Option<u64> {
        self.body.get("sequenceNumber")?.as_str()?.parse().ok()
    }

    /// The decoded `media.payload` of a `media` event.
    pub fn payload(&self) -> Option<Vec<u8>> {
        let p = self.body.pointer("/media/payload")?.as_str()?;
        crate::b64::decode_padded(p).ok()
    }
}

/// Parses and checks one bridge → bot event in Twilio's shape: every field
/// Twilio documents for that event is there with the type Twilio gives it.
pub fn parse_event(text: &str) -> Result<TwilioEvent, String> {
    let body: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let event = body
        .get("event")
        .and_then(Value::as_str)
        .ok_or("no string `event`")?
        .to_owned();
    let need_str = |path: &str| -> Result<(), String> {
        match body.pointer(path) {
            Some(Value::String(_)) => Ok(()),
            Some(other) => Err(format!("{event}: {path} must be a string, got {other}")),
            None => Err(format!("{event}: {path} is missing")),
        }
    };
    match event.as_str() {
        "connected" => {
            need_str("/protocol")?;
            need_str("/version")?;
        }
        "start" => {
            for p in [
                "/sequenceNumber",
                "/streamSid",
                "/start/accountSid",
                "/start/streamSid",
                "/start/callSid",
                "/start/mediaFormat/encoding",
            ] {
                need_str(p)?;
            }
            if !body.pointer("/start/tracks").is_some_and(Value::is_array) {
                return Err("start: /start/tracks must be an array".into());
            }
            if !body
                .pointer("/start/customParameters")
                .is_some_and(Value::is_object)
            {
                return Err("start: /start/customParameters must be an object".into());
            }
            if !body
                .pointer("/start/mediaFormat/sampleRate")
                .is_some_and(Value::is_u64)
            {
                return Err("start: /start/mediaFormat/sampleRate must be a number".into());
            }
        }
        "media" => {
            for p in [
                "/sequenceNumber",
                "/streamSid",
                "/media/track",
                "/media/chunk",
                "/media/timestamp",
                "/media/payload",
            ] {
                need_str(p)?;
            }
        }
        "dtmf" => {
            for p in [
                "/sequenceNumber",
                "/streamSid",
                "/dtmf/track",
                "/dtmf/digit",
            ] {
                need_str(p)?;
            }
        }
        "mark" => {
            for p in ["/sequenceNumber", "/streamSid", "/mark/name"] {
                need_str(p)?;
            }
        }
        "stop" => {
            for p in [
                "/sequenceNumber",
                "/streamSid",
                "/stop/accountSid",
                "/stop/callSid",
            ] {
                need_str(p)?;
            }
        }
        other => return Err(format!("{other:?} is not a Twilio stream event")),
    }
    Ok(TwilioEvent { event, body })
}

/// A bot's `media` message: `payload` is µ-law bytes.
pub fn media_json(stream_sid: &str, payload: &[u8]) -> String {
    let mut out = String::from(r#"{"event":"media","streamSid":"#);
    json::push_str(&mut out, stream_sid);
    out.push_str(r#","media":{"payload":""#);
    crate::b64::encode_append(payload, &mut out);
    out.push_str("\"}}");
    out
}

/// A bot's `mark` message.
pub fn mark_json(stream_sid: &str, name: &str) -> String {
    let mut out = String::from(r#"{"event":"mark","streamSid":"#);
    json::push_str(&mut out, stream_sid);
    out.push_str(r#","mark":{"name":"#);
    json::push_str(&mut out, name);
    out.push_str("}}");
    out
}

/// A bot's `clear` message.
pub fn clear_json(stream_sid: &str) -> String {
    let mut out = String::from(r#"{"event":"clear","streamSid":"#);
    json::push_str(&mut out, stream_sid);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Direction, MediaFormat};

    fn start() -> StartInfo {
        let mut custom = Map::new();
        custom.insert("system_msg".into(), Value::String("be kind".into()));
        custom.insert("n".into(), Value::from(3));
        StartInfo {
            stream_sid: "MZ1".into(),
            call_sid: "CA1".into(),
            from: "+1555".into(),
            to: "+1666".into(),
            direction: Direction::Inbound,
            media_format: MediaFormat::default(),
            tracks: vec!["inbound".into()],
            custom_parameters: custom,
        }
    }

    #[test]
    fn every_event_twilio_has_is_written_in_its_shape_and_reads_back() {
        let info = start();
        let payload = [0xffu8, 0x7f, 0x00];
        let events = [
            Event::Connected,
            Event::Start(&info),
            Event::Media {
                chunk: 2,
                timestamp_ms: 20,
                payload: &payload,
            },
            Event::Dtmf {
                digit: '5',
                duration_ms: 100,
            },
            Event::Mark { name: "m\"1" },
            Event::Stop {
                call_sid: "CA1",
                reason: crate::StopReason::CallEnded,
            },
        ];
        let mut seen = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            let mut out = String::new();
            assert!(write_event(&mut out, "MZ1", i as u64, ev));
            let parsed = parse_event(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
            seen.push(parsed);
        }
        let start = &seen[1].body;
        assert_eq!(start["start"]["customParameters"]["system_msg"], "be kind");
        assert_eq!(start["start"]["customParameters"]["n"], "3");
        assert_eq!(start["start"]["mediaFormat"]["encoding"], "audio/x-mulaw");
        assert_eq!(start["start"]["mediaFormat"]["sampleRate"], 8000);
        assert_eq!(seen[2].payload().unwrap(), payload);
        assert_eq!(seen[2].body["media"]["chunk"], "2");
        assert_eq!(seen[2].body["media"]["timestamp"], "20");
        assert_eq!(seen[2].sequence_number(), Some(2));
        assert_eq!(seen[3].body["dtmf"]["digit"], "5");
        assert_eq!(seen[4].body["mark"]["name"], "m\"1");
        assert_eq!(seen[5].body["stop"]["callSid"], "CA1");
    }

    #[test]
    fn events_twilio_lacks_are_not_written() {
        let mut out = String::new();
        assert!(!write_event(&mut out, "MZ1", 1, &Event::Clear));
        assert!(!write_event(
            &mut out,
            "MZ1",
            1,
            &Event::Error {
                code: ErrorCode::BadJson,
                message: "x"
            }
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn bot_messages_parse_and_bad_ones_say_why() {
        let mut audio = Vec::new();
        let max = crate::MAX_MESSAGE_BYTES;
        assert_eq!(
            parse_command(&media_json("MZ1", &[1, 2, 3]), "MZ1", &mut audio, max),
            Ok(Command::AudioDelta)
        );
        assert_eq!(audio, [1, 2, 3]);
        assert_eq!(
            parse_command(&mark_json("MZ1", "done"), "MZ1", &mut audio, max),
            Ok(Command::Mark {
                name: "done".into()
            })
        );
        assert_eq!(
            parse_command(&clear_json("MZ1"), "MZ1", &mut audio, max),
            Ok(Command::Clear)
        );
        let code = |text: &str| {
            parse_command(text, "MZ1", &mut Vec::new(), max)
                .unwrap_err()
                .code
        };
        assert_eq!(code(&clear_json("MZ2")), ErrorCode::BadField);
        assert_eq!(code(r#"{"event":"clear"}"#), ErrorCode::MissingField);
        assert_eq!(
            code(r#"{"event":"media","streamSid":"MZ1"}"#),
            ErrorCode::MissingField
        );
        assert_eq!(
            code(r#"{"event":"media","streamSid":"MZ1","media":{"payload":"!!"}}"#),
            ErrorCode::BadBase64
        );
        assert_eq!(
            code(r#"{"event":"hangup","streamSid":"MZ1"}"#),
            ErrorCode::UnknownType
        );
        assert_eq!(code("[1]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"streamSid":"MZ1"}"#), ErrorCode::MissingField);
    }
}
