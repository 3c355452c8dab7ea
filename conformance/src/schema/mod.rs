//! The protocol as JSON Schema (draft 2020-12): one schema for bridge → bot events,
//! one for bot → bridge messages.
//!
//! The schemas are built here from the `protocol` crate's types (event and message
//! names, stop reasons, error codes, field shapes) and committed under
//! `conformance/schema/`, where bot developers can use them in their own tests. A
//! test checks that the committed files are exactly what [`events_schema`] and
//! [`commands_schema`] build, so the files cannot drift from the types; regenerate
//! them with `conformance schema --out conformance/schema`.
//!
//! The suite validates every message it sees against the committed schemas with
//! the small validator in [`validator`], as well as with `protocol`'s own parsers.

pub mod validator;

use protocol::{
    Command, Direction, ErrorCode, Event, MediaFormat, StartInfo, StopReason, TransferMode,
    TransferStrategy,
};
use serde_json::{json, Map, Value};

pub use validator::{Schema, SchemaError, SchemaViolation};

/// The committed events schema (bridge → bot), as shipped in the binary.
pub const EVENTS_SCHEMA_JSON: &str = include_str!("../../schema/events.schema.json");
/// The committed messages schema (bot → bridge), as shipped in the binary.
pub const COMMANDS_SCHEMA_JSON: &str = include_str!("../../schema/commands.schema.json");

/// File names of the committed schemas, under `conformance/schema/`.
pub const EVENTS_FILE: &str = "events.schema.json";
/// See [`EVENTS_FILE`].
pub const COMMANDS_FILE: &str = "commands.schema.json";

/// The committed events schema, compiled.
pub fn events() -> &'static Schema {
    static S: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    S.get_or_init(|| compile_committed(EVENTS_SCHEMA_JSON, EVENTS_FILE))
}

/// The committed messages schema, compiled.
pub fn commands() -> &'static Schema {
    static S: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    S.get_or_init(|| compile_committed(COMMANDS_SCHEMA_JSON, COMMANDS_FILE))
}

fn compile_committed(text: &str, file: &str) -> Schema {
    let value: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("committed schema {file} is not JSON: {e}"));
    // The crate's tests compile both committed files, so this cannot fail in a
    // released binary.
    Schema::compile(value).unwrap_or_else(|e| panic!("committed schema {file}: {e}"))
}

/// Pretty JSON of a schema, as committed (two-space indent, trailing newline).
pub fn to_file_text(schema: &Value) -> String {
    let mut s = serde_json::to_string_pretty(schema).expect("a Value always serializes");
    s.push('\n');
    s
}

const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Strict base64 with padding, as the bridge writes `media.payload`.
const PADDED_BASE64: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";
/// Base64 with optional padding, as the bridge reads a bot's `delta`.
const LOOSE_BASE64: &str = "^[A-Za-z0-9+/]*={0,2}$";
const DECIMAL: &str = "^[0-9]+$";

fn strings<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|s| Value::String(s.as_ref().to_owned()))
            .collect(),
    )
}

fn object(description: &str, required: &[&str], properties: Value) -> Value {
    json!({
        "type": "object",
        "description": description,
        "required": required,
        "properties": properties,
    })
}

/// Every event, with sample values; [`event_def`] matches on all variants, so a new
/// event cannot be added to `protocol` without this module knowing about it.
fn sample_events(info: &StartInfo) -> Vec<Event<'_>> {
    vec![
        Event::Connected,
        Event::Start(info),
        Event::Media {
            chunk: 1,
            timestamp_ms: 0,
            payload: &[],
        },
        Event::Dtmf {
            digit: '1',
            duration_ms: 100,
        },
        Event::Mark { name: "m" },
        Event::Clear,
        Event::Stop {
            call_sid: "CA",
            reason: StopReason::CallEnded,
        },
        Event::Error {
            code: ErrorCode::BadJson,
            message: "m",
        },
        Event::TransferFailed {
            kind: "session.transfer",
            destination: "d",
            reason: "busy",
            attempts: &[protocol::TransferAttempt {
                destination: "d",
                outcome: "busy",
                sip_code: Some(486),
            }],
        },
        Event::TransferAnswered {
            kind: "session.transfer",
            destination: "d",
        },
    ]
}

/// A sample `start` body (also used by tests and the bot suite).
pub fn sample_start_info() -> StartInfo {
    StartInfo {
        stream_sid: "MZ0".into(),
        call_sid: "CA0".into(),
        from: "+15550100000".into(),
        to: "+99910001".into(),
        direction: Direction::Outbound,
        media_format: MediaFormat::default(),
        tracks: vec!["inbound".into()],
        custom_parameters: Map::new(),
    }
}

/// The `(description, required fields, properties)` of one event's body, beside
/// `event`, `sequence_number` and `stream_sid`.
fn event_def(ev: &Event<'_>) -> (&'static str, Vec<&'static str>, Map<String, Value>) {
    let mut props = Map::new();
    let mut required = vec![];
    let description = match ev {
        Event::Connected => "The socket is open; the first event, and the only one without `sequence_number` and `stream_sid`.",
        Event::Start(_) => {
            required.push("start");
            props.insert("start".into(), json!({"$ref": "#/$defs/start_info"}));
            "Media begins; sent once, with `sequence_number` 1."
        }
        Event::Media { .. } => {
            required.push("media");
            props.insert(
                "media".into(),
                object(
                    "One 20 ms chunk of the caller's audio.",
                    &["chunk", "timestamp", "payload"],
                    json!({
                        "chunk": {"type": "integer", "minimum": 1, "description": "Counts media events from 1."},
                        "timestamp": {"$ref": "#/$defs/decimal_string", "description": "Milliseconds since the stream started, of the chunk's first sample, as a string."},
                        "payload": {"type": "string", "pattern": PADDED_BASE64, "description": "Base64 (standard alphabet, padded) of the audio in the session's format: little-endian 16-bit PCM at 8000 Hz by default, 320 bytes per chunk."},
                    }),
                ),
            );
            "One chunk of the caller's audio, every 20 ms while the call is up."
        }
        Event::Dtmf { .. } => {
            required.push("dtmf");
            props.insert(
                "dtmf".into(),
                object(
                    "One key press, reported once.",
                    &["digit", "duration"],
                    json!({
                        "digit": {"enum": strings(DTMF_DIGITS.chars().map(String::from))},
                        "duration": {"$ref": "#/$defs/decimal_string", "description": "How long the key was held, in milliseconds, as a string."},
                    }),
                ),
            );
            "The caller pressed a key."
        }
        Event::Mark { .. } => {
            required.push("mark");
            props.insert(
                "mark".into(),
                object(
                    "The mark the bot placed.",
                    &["name"],
                    json!({"name": {"type": "string"}}),
                ),
            );
            "Playback reached a mark the bot placed (or the mark was returned by a clear)."
        }
        Event::Clear => "Queued audio was flushed (after every pending mark was returned).",
        Event::Stop { .. } => {
            required.push("stop");
            let reasons: Vec<&str> = StopReason::ALL.iter().map(|r| r.as_str()).collect();
            props.insert(
                "stop".into(),
                object(
                    "Why the stream ended.",
                    &["call_sid", "reason"],
                    json!({
                        "call_sid": {"type": "string"},
                        "reason": {"enum": reasons},
                    }),
                ),
            );
            "The last event; the bridge then closes the socket."
        }
        Event::Error { .. } => {
            required.push("error");
            let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
            props.insert(
                "error".into(),
                object(
                    "Which bot message was refused, and why; the call goes on.",
                    &["code", "message"],
                    json!({
                        "code": {"type": "string", "description": "One of the listed codes; bots should accept codes not listed.", "examples": codes},
                        "message": {"type": "string"},
                    }),
                ),
            );
            "One of the bot's messages was refused; the call goes on."
        }
        Event::TransferAnswered { .. } => {
            required.push("transfer");
            props.insert(
                "transfer".into(),
                object(
                    "The warm transfer whose target answered.",
                    &["type", "destination"],
                    json!({
                        "type": {"type": "string", "description": "The bot message that asked for it (`session.transfer`)."},
                        "destination": {"type": "string", "description": "The destination that answered."},
                    }),
                ),
            );
            "[ours] A warm transfer's target answered: the bot now talks to it alone while the caller holds, until `session.transfer_complete` or `session.transfer_cancel`."
        }
        Event::TransferFailed { .. } => {
            required.push("transfer");
            props.insert(
                "transfer".into(),
                object(
                    "The transfer that failed.",
                    &["type", "destination", "reason"],
                    json!({
                        "type": {"type": "string", "description": "The bot message that asked for it, e.g. `session.transfer`."},
                        "destination": {"type": "string", "description": "Where the call was to go (with several destinations, the first)."},
                        "reason": {"type": "string", "description": "Why it failed overall: `busy`, `no-answer`, `failed`, `no_route`, `too_many_hops`, `unreachable`, `unknown_flow`, `target_hung_up`, ..."},
                        "attempts": {
                            "type": "array",
                            "description": "Each destination tried, in order, and how it went.",
                            "items": object(
                                "One destination tried.",
                                &["destination", "outcome", "sip_code"],
                                json!({
                                    "destination": {"type": "string"},
                                    "outcome": {"type": "string", "description": "`busy`, `no-answer`, `failed` or `cancelled`."},
                                    "sip_code": {"type": ["integer", "null"], "description": "The SIP code of the outcome, or null."},
                                }),
                            ),
                        },
                    }),
                ),
            );
            "A transfer the bot asked for could not be completed; the bot keeps the call."
        }
    };
    (description, required, props)
}

const DTMF_DIGITS: &str = "0123456789*#ABCD";

/// The JSON Schema of every event the bridge sends a bot (PROTOCOL.md section 2).
pub fn events_schema() -> Value {
    let info = sample_start_info();
    let mut defs = Map::new();
    let mut one_of = vec![];
    for ev in sample_events(&info) {
        let name = ev.name();
        let (description, body_required, body_props) = event_def(&ev);
        let mut props = Map::new();
        props.insert("event".into(), json!({"const": name}));
        let mut required = vec!["event"];
        if !matches!(ev, Event::Connected) {
            props.insert(
                "sequence_number".into(),
                json!({"$ref": "#/$defs/sequence_number"}),
            );
            props.insert(
                "stream_sid".into(),
                json!({"type": "string", "minLength": 1}),
            );
            required.extend(["sequence_number", "stream_sid"]);
        }
        required.extend(body_required);
        props.extend(body_props);
        defs.insert(
            name.to_owned(),
            json!({
                "type": "object",
                "description": description,
                "required": required,
                "properties": props,
            }),
        );
        one_of.push(json!({"$ref": format!("#/$defs/{name}")}));
    }
    let direction = [Direction::Inbound, Direction::Outbound].map(|d| d.as_str());
    defs.insert("sequence_number".into(), json!({
        "type": "integer",
        "minimum": 1,
        "description": "1 on `start`, then one more on every later event of the stream, whatever its kind.",
    }));
    defs.insert(
        "decimal_string".into(),
        json!({"type": "string", "pattern": DECIMAL}),
    );
    defs.insert(
        "start_info".into(),
        object(
            "The call and stream that begin.",
            &["stream_sid", "call_sid", "from", "to", "direction", "media_format", "tracks", "custom_parameters"],
            json!({
                "stream_sid": {"type": "string", "minLength": 1},
                "call_sid": {"type": "string", "minLength": 1},
                "from": {"type": "string"},
                "to": {"type": "string"},
                "direction": {"enum": direction},
                "media_format": object(
                    "The format of `media` payloads and of the audio the bot sends.",
                    &["encoding", "sample_rate"],
                    json!({
                        "encoding": {"enum": ["raw/slin", "audio/x-mulaw", "audio/x-alaw"]},
                        "sample_rate": {"enum": [8000, 16000, 24000]},
                    }),
                ),
                "tracks": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "custom_parameters": {"type": "object", "description": "The per-call fields the API caller gave (empty when none)."},
            }),
        ),
    );
    json!({
        "$schema": DRAFT,
        "$id": "urn:telephony-bridge:protocol:events",
        "title": "Bridge to bot events",
        "description": "Every JSON text frame the bridge sends a bot (protocol/PROTOCOL.md section 2). Unknown extra fields may appear in later versions: bots must ignore them. Generated from the `protocol` crate by `conformance schema`.",
        "oneOf": one_of,
        "$defs": defs,
    })
}

/// Every message, with sample values; see [`sample_events`].
fn sample_commands() -> Vec<Command> {
    vec![
        Command::AudioDelta,
        Command::Clear,
        Command::Dtmf { digits: "1".into() },
        Command::Hangup { immediate: false },
        Command::Mark { name: "m".into() },
        Command::Transfer {
            destinations: vec!["d".into()],
            strategy: TransferStrategy::default(),
            timeout_s: None,
            caller_id: None,
            mode: TransferMode::default(),
        },
        Command::TransferWs { url: "u".into() },
        Command::FlowTransfer {
            flow_id: "f".into(),
        },
        Command::TransferExtension {
            extension: "e".into(),
        },
        Command::TransferComplete,
        Command::TransferCancel,
    ]
}

fn nonempty(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "description": description})
}

fn command_def(cmd: &Command) -> (&'static str, Vec<&'static str>, Value) {
    match cmd {
        Command::AudioDelta => (
            "Append audio to the playout queue. A binary frame with raw audio means the same.",
            vec!["delta"],
            json!({"delta": {"type": "string", "pattern": LOOSE_BASE64, "description": "Base64 (standard alphabet, padding optional) of audio in the session's format: a whole number of samples (an even byte count for 16-bit PCM). May be empty."}}),
        ),
        Command::Clear => ("Barge-in: flush the playout queue; pending marks are returned, then a `clear` event.", vec![], json!({})),
        Command::Dtmf { .. } => (
            "Send DTMF to the phone side.",
            vec!["dtmf"],
            json!({"dtmf": {"type": "string", "pattern": "^[0-9*#A-Da-d]+$", "description": "One or more keys: 0-9 * # A-D (a-d accepted)."}}),
        ),
        Command::Hangup { .. } => (
            "End the call: queued audio is played out first unless `immediate`.",
            vec![],
            json!({"immediate": {"type": ["boolean", "null"]}}),
        ),
        Command::Mark { .. } => (
            "Place a mark at the end of the playout queue; it is echoed when the audio before it has played.",
            vec!["name"],
            json!({"name": nonempty("Echoed back in the `mark` event.")}),
        ),
        Command::Transfer { .. } => {
            let mut strategies: Vec<Value> = TransferStrategy::ALL
                .iter()
                .map(|s| Value::String(s.as_str().to_owned()))
                .collect();
            strategies.push(Value::Null);
            let mut modes: Vec<Value> = TransferMode::ALL
                .iter()
                .map(|s| Value::String(s.as_str().to_owned()))
                .collect();
            modes.push(Value::Null);
            (
                "Transfer the call to one number, or ring several.",
                vec!["destination"],
                json!({
                    "destination": {"anyOf": [
                        nonempty("One number."),
                        {"type": "array", "minItems": 1, "items": nonempty("A number.")},
                    ]},
                    "strategy": {"enum": strategies},
                    "timeout": {"type": ["integer", "null"], "minimum": 1, "maximum": u32::MAX, "description": "Ring seconds per attempt."},
                    "caller_id": {"type": ["string", "null"], "description": "\"\" means the default."},
                    "mode": {"enum": modes, "description": "[ours] `warm`: on answer the bot briefs the target while the caller holds."},
                }),
            )
        }
        Command::TransferWs { .. } => (
            "Hand the call to another bot.",
            vec!["url"],
            json!({"url": nonempty("The new bot's WebSocket URL.")}),
        ),
        Command::FlowTransfer { .. } => (
            "Hand the call to an IVR flow or queue.",
            vec!["flow_id"],
            json!({"flow_id": nonempty("The flow's id.")}),
        ),
        Command::TransferExtension { .. } => (
            "Ring a SIP extension or agent.",
            vec!["extension"],
            json!({"extension": nonempty("The extension.")}),
        ),
        Command::TransferComplete => (
            "[ours] End a warm transfer: the caller is bridged to the target the bot briefed; the bot gets `stop` `transferred`.",
            vec![],
            json!({}),
        ),
        Command::TransferCancel => (
            "[ours] End a warm transfer: the target is hung up and the bot is back with the caller.",
            vec![],
            json!({}),
        ),
    }
}

/// The JSON Schema of every JSON message a bot may send the bridge (PROTOCOL.md
/// section 3).
pub fn commands_schema() -> Value {
    let mut defs = Map::new();
    let mut one_of = vec![];
    for cmd in sample_commands() {
        let name = cmd.name();
        let (description, body_required, body_props) = command_def(&cmd);
        let mut props = Map::new();
        props.insert("type".into(), json!({"const": name}));
        if let Value::Object(body) = body_props {
            props.extend(body);
        }
        let mut required = vec!["type"];
        required.extend(body_required);
        defs.insert(
            name.to_owned(),
            json!({
                "type": "object",
                "description": description,
                "required": required,
                "properties": props,
            }),
        );
        one_of.push(json!({"$ref": format!("#/$defs/{name}")}));
    }
    json!({
        "$schema": DRAFT,
        "$id": "urn:telephony-bridge:protocol:commands",
        "title": "Bot to bridge messages",
        "description": "Every JSON text frame a bot may send the bridge (protocol/PROTOCOL.md section 3). Unknown extra fields are ignored; `null` in an optional field means not given. Generated from the `protocol` crate by `conformance schema`.",
        "oneOf": one_of,
        "$defs": defs,
    })
}

/// Sample texts of every event, as [`protocol::write_event`] writes them, for tests.
pub fn sample_event_texts() -> Vec<String> {
    let mut info = sample_start_info();
    info.custom_parameters
        .insert("system_msg".into(), Value::String("hi".into()));
    let pcm = [0u8, 0, 0xff, 0x7f, 1, 2];
    let mut out = vec![];
    for (i, ev) in sample_events(&info).into_iter().enumerate() {
        let ev = match ev {
            Event::Media { .. } => Event::Media {
                chunk: 3,
                timestamp_ms: 40,
                payload: &pcm,
            },
            other => other,
        };
        let mut text = String::new();
        protocol::write_event(&mut text, "MZ0", i as u64 + 1, &ev);
        out.push(text);
    }
    out
}

/// Sample texts of every message, as [`protocol::command_json`] writes them, for tests.
pub fn sample_command_texts() -> Vec<String> {
    let mut cmds = sample_commands();
    cmds.push(Command::Hangup { immediate: true });
    cmds.push(Command::Transfer {
        destinations: vec!["a".into(), "b".into()],
        strategy: TransferStrategy::Sequential,
        timeout_s: Some(20),
        caller_id: Some("+1555".into()),
        mode: TransferMode::Warm,
    });
    cmds.iter()
        .map(|c| protocol::command_json(c, &[1, 2, 3, 4]))
        .collect()
}
