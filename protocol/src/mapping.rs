//! Custom protocol mapping (PROTOCOL.md section 5): a call's stream mapped
//! onto another service's message shapes, so the call can talk straight to,
//! for example, a speech-to-speech API.
//!
//! A [`Mapping`] is given as JSON (in the API request, the CONFIG_API answer
//! or the config), with these fields:
//!
//! | field | meaning |
//! |---|---|
//! | `messageType` | `json` (default) or `binary`: how the caller's audio goes to the bot |
//! | `inputTemplate` | JSON sent for each 20 ms of the caller's audio; the text `{{audio}}` in a string becomes the base64 audio. Also `{{chunk}}`, `{{timestamp}}` (per frame), `{{stream_sid}}`, `{{call_sid}}` |
//! | `outputMessageType` | `json` (default) or `binary`: how the bot's audio comes back |
//! | `outputAudioPath` | where the base64 audio sits in a bot message, dotted (`delta`, `media.payload`) |
//! | `outputAudioTypes` **[ours]** | the message types that carry audio (by `typeField`); absent: any message with the path |
//! | `clearTypes` **[ours]** | message types that mean barge-in: queued audio is dropped |
//! | `typeField` **[ours]** | the field naming a message's type, `type` by default |
//! | `sessionStartMessage` | JSON sent once, right after the socket opens (same placeholders but the per-frame ones) |
//!
//! Other bot messages are ignored. Binary frames from the bot are always
//! audio.
//!
//! ```
//! use protocol::mapping::{Mapping, Parsed};
//! use serde_json::json;
//!
//! let m = Mapping::from_json(&json!({
//!     "inputTemplate": {"type": "input_audio_buffer.append", "audio": "{{audio}}"},
//!     "outputAudioPath": "delta",
//!     "outputAudioTypes": ["response.audio.delta"],
//!     "clearTypes": ["input_audio_buffer.speech_started"],
//! }))?;
//! let mut out = String::new();
//! m.write_media(&mut out, &[0, 0], 1, 0);
//! assert_eq!(out, r#"{"audio":"AAA=","type":"input_audio_buffer.append"}"#);
//!
//! let mut audio = Vec::new();
//! let p = m.parse(r#"{"type":"response.audio.delta","delta":"AAA="}"#, &mut audio, 1 << 20);
//! assert_eq!((p, audio), (Ok(Parsed::Audio), vec![0, 0]));
//! let p = m.parse(r#"{"type":"input_audio_buffer.speech_started"}"#, &mut Vec::new(), 1 << 20);
//! assert_eq!(p, Ok(Parsed::Clear));
//! # Ok::<(), String>(())
//! ```

use serde_json::Value;

use crate::{CommandError, ErrorCode};

/// How messages of one direction travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// JSON text frames.
    Json,
    /// Raw audio in binary frames.
    Binary,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Audio,
    Chunk,
    Timestamp,
}

/// A JSON template compiled into literal text and placeholders.
#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Piece>);

impl Template {
    fn compile(v: &Value, per_frame: bool) -> Template {
        let text = v.to_string();
        let mut pieces = Vec::new();
        let mut rest = text.as_str();
        let names: &[(&str, Piece)] = if per_frame {
            &[
                ("{{audio}}", Piece::Audio),
                ("{{chunk}}", Piece::Chunk),
                ("{{timestamp}}", Piece::Timestamp),
            ]
        } else {
            &[]
        };
        'outer: while !rest.is_empty() {
            let next = names
                .iter()
                .filter_map(|(n, p)| rest.find(n).map(|at| (at, n.len(), p)))
                .min_by_key(|(at, _, _)| *at);
            match next {
                Some((at, len, piece)) => {
                    if at > 0 {
                        pieces.push(Piece::Text(rest[..at].to_owned()));
                    }
                    pieces.push(piece.clone());
                    rest = &rest[at + len..];
                }
                None => {
                    pieces.push(Piece::Text(rest.to_owned()));
                    break 'outer;
                }
            }
        }
        Template(pieces)
    }

    fn has_audio(&self) -> bool {
        self.0.contains(&Piece::Audio)
    }

    /// Puts the per-call values in place (`{{stream_sid}}`, `{{call_sid}}`),
    /// JSON-escaped.
    fn bind(&self, stream_sid: &str, call_sid: &str) -> Template {
        let esc = |s: &str| {
            let mut q = String::new();
            crate::json::push_str(&mut q, s);
            q[1..q.len() - 1].to_owned()
        };
        let (sid, call) = (esc(stream_sid), esc(call_sid));
        Template(
            self.0
                .iter()
                .map(|p| match p {
                    Piece::Text(t) => Piece::Text(
                        t.replace("{{stream_sid}}", &sid)
                            .replace("{{call_sid}}", &call),
                    ),
                    other => other.clone(),
                })
                .collect(),
        )
    }

    fn write(&self, out: &mut String, audio: &[u8], chunk: u64, timestamp_ms: u64) {
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Audio => crate::b64::encode_append(audio, out),
                Piece::Chunk => crate::json::push_u64(out, chunk),
                Piece::Timestamp => crate::json::push_u64(out, timestamp_ms),
            }
        }
    }
}

/// One call's custom mapping, checked and compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// How the caller's audio goes to the bot.
    pub message_type: Framing,
    /// How the bot's audio comes back.
    pub output_message_type: Framing,
    input: Option<Template>,
    start: Option<Template>,
    audio_path: Vec<String>,
    audio_types: Vec<String>,
    clear_types: Vec<String>,
    type_field: String,
}

/// What a bot message means under a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Audio, decoded into the caller's buffer.
    Audio,
    /// Barge-in: drop queued audio.
    Clear,
    /// A message the mapping does not use.
    Ignored,
}

impl Mapping {
    /// Reads and checks a mapping; the error says which field is wrong.
    pub fn from_json(v: &Value) -> Result<Mapping, String> {
        let obj = v
            .as_object()
            .ok_or("the protocol mapping must be a JSON object")?;
        const KNOWN: [&str; 8] = [
            "messageType",
            "inputTemplate",
            "outputMessageType",
            "outputAudioPath",
            "outputAudioTypes",
            "clearTypes",
            "typeField",
            "sessionStartMessage",
        ];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!(
                "unknown protocol mapping field {k:?} (known: {})",
                KNOWN.join(", ")
            ));
        }
        let framing = |key: &str| -> Result<Framing, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(Framing::Json),
                Some(Value::String(s)) if s == "json" => Ok(Framing::Json),
                Some(Value::String(s)) if s == "binary" => Ok(Framing::Binary),
                Some(other) => Err(format!(
                    "`{key}` must be \"json\" or \"binary\", got {other}"
                )),
            }
        };
        let strings = |key: &str| -> Result<Vec<String>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::String(s)) => Ok(vec![s.clone()]),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("`{key}` must hold strings"))
                    })
                    .collect(),
                Some(_) => Err(format!("`{key}` must be a string or an array of strings")),
            }
        };
        let message_type = framing("messageType")?;
        let output_message_type = framing("outputMessageType")?;
        let input = match obj.get("inputTemplate") {
            None | Some(Value::Null) if message_type == Framing::Json => {
                return Err("`inputTemplate` is required when `messageType` is json".into())
            }
            None | Some(Value::Null) => None,
            Some(t @ Value::Object(_)) => {
                let t = Template::compile(t, true);
                if !t.has_audio() {
                    return Err("`inputTemplate` has no \"{{audio}}\" placeholder".into());
                }
                Some(t)
            }
            Some(_) => return Err("`inputTemplate` must be a JSON object".into()),
        };
        let audio_path: Vec<String> = match obj.get("outputAudioPath") {
            Some(Value::String(p)) if !p.is_empty() => p.split('.').map(str::to_owned).collect(),
            None | Some(Value::Null) if output_message_type == Framing::Binary => Vec::new(),
            _ => {
                return Err(
                    "`outputAudioPath` is required (a dotted path such as \"delta\") when `outputMessageType` is json"
                        .into(),
                )
            }
        };
        let start = match obj.get("sessionStartMessage") {
            None | Some(Value::Null) => None,
            Some(t @ Value::Object(_)) => Some(Template::compile(t, false)),
            Some(_) => return Err("`sessionStartMessage` must be a JSON object".into()),
        };
        let type_field = match obj.get("typeField") {
            None | Some(Value::Null) => "type".to_owned(),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err("`typeField` must be a non-empty string".into()),
        };
        Ok(Mapping {
            message_type,
            output_message_type,
            input,
            start,
            audio_path,
            audio_types: strings("outputAudioTypes")?,
            clear_types: strings("clearTypes")?,
            type_field,
        })
    }

    /// The mapping with this stream's ids put into its templates.
    pub fn bind(&self, stream_sid: &str, call_sid: &str) -> Mapping {
        Mapping {
            input: self.input.as_ref().map(|t| t.bind(stream_sid, call_sid)),
            start: self.start.as_ref().map(|t| t.bind(stream_sid, call_sid)),
            ..self.clone()
        }
    }

    /// Appends the session start message, if the mapping has one. Returns
    /// whether it wrote anything.
    pub fn write_start(&self, out: &mut String) -> bool {
        match &self.start {
            Some(t) => {
                t.write(out, &[], 0, 0);
                true
            }
            None => false,
        }
    }

    /// Appends the JSON message for one frame of the caller's audio.
    pub fn write_media(&self, out: &mut String, audio: &[u8], chunk: u64, timestamp_ms: u64) {
        if let Some(t) = &self.input {
            t.write(out, audio, chunk, timestamp_ms);
        }
    }

    /// Reads one text frame from the bot. Audio is base64-decoded into
    /// `audio`. A message of an audio type without audio at the path is
    /// refused; the error's message starts with the message's type, so a
    /// caller can report each kind once.
    pub fn parse(
        &self,
        text: &str,
        audio: &mut Vec<u8>,
        max_bytes: usize,
    ) -> Result<Parsed, CommandError> {
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
        let v: Value = serde_json::from_str(text)
            .map_err(|e| CommandError::new(ErrorCode::BadJson, format!("not valid JSON: {e}")))?;
        let kind = v
            .get(&self.type_field)
            .and_then(Value::as_str)
            .unwrap_or("");
        if self.clear_types.iter().any(|t| t == kind) {
            return Ok(Parsed::Clear);
        }
        if self.output_message_type == Framing::Binary {
            return Ok(Parsed::Ignored);
        }
        let typed = !self.audio_types.is_empty();
        if typed && !self.audio_types.iter().any(|t| t == kind) {
            return Ok(Parsed::Ignored);
        }
        let mut at = Some(&v);
        for key in &self.audio_path {
            at = at.and_then(|x| x.get(key));
        }
        let path = self.audio_path.join(".");
        match at {
            Some(Value::String(b64)) => {
                crate::b64::decode_append(b64, audio).map_err(|e| {
                    audio.clear();
                    CommandError::new(
                        ErrorCode::BadBase64,
                        format!(
                            "{kind}: `{path}` is not valid base64 ({})",
                            crate::describe_base64_error(&e)
                        ),
                    )
                })?;
                Ok(Parsed::Audio)
            }
            Some(_) => Err(CommandError::new(
                ErrorCode::BadField,
                format!("{kind}: `{path}` must be a base64 string"),
            )),
            // Untyped: a message without the path is just not audio.
            None if !typed => Ok(Parsed::Ignored),
            None => Err(CommandError::new(
                ErrorCode::MissingField,
                format!("{kind}: no audio at `{path}` (the mapping's outputAudioPath)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn realtime() -> Mapping {
        Mapping::from_json(&json!({
            "messageType": "json",
            "inputTemplate": {"type": "input_audio_buffer.append", "audio": "{{audio}}", "n": "{{chunk}}/{{timestamp}}"},
            "outputMessageType": "json",
            "outputAudioPath": "delta",
            "outputAudioTypes": ["response.audio.delta", "response.output_audio.delta"],
            "clearTypes": "input_audio_buffer.speech_started",
            "sessionStartMessage": {"type": "session.update", "session": {"instructions": "call {{call_sid}}"}},
        }))
        .unwrap()
    }

    #[test]
    fn templates_fill_in_audio_frame_numbers_and_ids() {
        let m = realtime().bind("MZ\"1", "CA1");
        let mut out = String::new();
        m.write_media(&mut out, &[1, 2, 3], 4, 60);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["audio"], "AQID");
        assert_eq!(v["n"], "4/60");
        out.clear();
        assert!(m.write_start(&mut out));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["session"]["instructions"], "call CA1");
    }

    #[test]
    fn bot_messages_are_audio_clear_or_ignored() {
        let m = realtime();
        let mut audio = Vec::new();
        let max = 1 << 20;
        assert_eq!(
            m.parse(
                r#"{"type":"response.output_audio.delta","delta":"AQID"}"#,
                &mut audio,
                max
            ),
            Ok(Parsed::Audio)
        );
        assert_eq!(audio, [1, 2, 3]);
        assert_eq!(
            m.parse(
                r#"{"type":"response.audio_transcript.delta","delta":"hello"}"#,
                &mut audio,
                max
            ),
            Ok(Parsed::Ignored)
        );
        assert_eq!(
            m.parse(r#"{"type":"session.created"}"#, &mut audio, max),
            Ok(Parsed::Ignored)
        );
        let e = m
            .parse(
                r#"{"type":"response.audio.delta","data":"AQID"}"#,
                &mut audio,
                max,
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::MissingField);
        assert!(
            e.message.starts_with("response.audio.delta:"),
            "{}",
            e.message
        );
        assert_eq!(
            m.parse("nope", &mut audio, max).unwrap_err().code,
            ErrorCode::BadJson
        );
    }

    #[test]
    fn bad_mappings_are_refused_with_the_field_named() {
        for (m, needle) in [
            (json!([]), "JSON object"),
            (json!({"outputAudioPath": "delta"}), "inputTemplate"),
            (
                json!({"inputTemplate": {"a": "b"}, "outputAudioPath": "d"}),
                "{{audio}}",
            ),
            (
                json!({"inputTemplate": {"a": "{{audio}}"}}),
                "outputAudioPath",
            ),
            (json!({"messageType": "xml"}), "messageType"),
            (
                json!({"inputTemplate": {"a": "{{audio}}"}, "outputAudioPath": "d", "extra": 1}),
                "extra",
            ),
        ] {
            let e = Mapping::from_json(&m).unwrap_err();
            assert!(e.contains(needle), "{m}: {e}");
        }
        let binary =
            Mapping::from_json(&json!({"messageType": "binary", "outputMessageType": "binary"}))
                .unwrap();
        assert_eq!(binary.message_type, Framing::Binary);
    }
}
