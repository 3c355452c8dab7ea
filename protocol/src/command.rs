//! Commands: what a bot sends to the bridge (PROTOCOL.md section 3).
//!
//! [`parse_command`] reads one text frame and [`check_binary_audio`] vets one binary
//! frame. Both are on the audio hot path: a bot streams `response.audio.delta`
//! messages faster than real time, so a delta is base64-decoded straight from the
//! received text into a buffer the caller reuses, with no other allocation.
//!
//! Every refusal is a [`CommandError`] whose [`ErrorCode`] and message go back to the
//! bot in an `error` event; a bad bot message never drops a call.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::event::{ErrorCode, Event};
use crate::json;

/// Bytes per sample of the default session format, 16-bit PCM.
const PCM16_SAMPLE_BYTES: usize = 2;

/// Every message `type` a bot may send, in PROTOCOL.md order.
pub const COMMAND_TYPES: &[&str] = &[
    "response.audio.delta",
    "audio.clear",
    "session.dtmf",
    "session.hangup",
    "session.transfer",
    "session.transfer_ws",
    "session.flow_transfer",
    "session.transfer_extension",
    "session.transfer_complete",
    "session.transfer_cancel",
    "mark",
];

wire_strings! {
    /// How `session.transfer` rings several destinations (`strategy`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub enum TransferStrategy {
        /// Ring all at once; the first to answer wins (the default).
        #[default]
        Simultaneous => "simultaneous",
        /// Try one by one, in order.
        Sequential => "sequential",
    }
}

wire_strings! {
    /// How `session.transfer` hands the caller on (`mode`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub enum TransferMode {
        /// The caller is bridged to the target the moment it answers (the default).
        #[default]
        Cold => "cold",
        /// On answer the bot briefs the target while the caller holds; the bot
        /// then sends `session.transfer_complete` or `session.transfer_cancel`.
        Warm => "warm",
    }
}

/// One message from a bot, parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `response.audio.delta`. Audio was decoded into the caller's scratch buffer
    /// (whole samples, LE PCM16 bytes); it may be empty.
    AudioDelta,
    /// `audio.clear`: barge-in, flush the playout queue.
    Clear,
    /// `session.dtmf`: send these digits to the phone side.
    Dtmf {
        /// Non-empty, each of `0-9 * # A-D`; lowercase `a-d` from the bot are
        /// uppercased.
        digits: String,
    },
    /// `session.hangup`.
    Hangup {
        /// `true`: hang up now; `false` (default): play queued audio out first.
        immediate: bool,
    },
    /// `mark`: place a mark at the end of the playout queue.
    Mark {
        /// Non-empty; echoed back in the `mark` event.
        name: String,
    },
    /// `session.transfer`: transfer to one or more numbers.
    Transfer {
        /// Non-empty, each non-empty; from a string or an array of strings.
        destinations: Vec<String>,
        /// How several destinations are rung.
        strategy: TransferStrategy,
        /// `timeout`: ring seconds per attempt (>= 1); `None` means the default.
        timeout_s: Option<u32>,
        /// `caller_id` to present; `None` (absent, null or "") means the default.
        caller_id: Option<String>,
        /// `mode`: cold (the default) or warm.
        mode: TransferMode,
    },
    /// `session.transfer_ws`: hand the call to another bot.
    TransferWs {
        /// The new bot's URL, non-empty; the bridge applies its URL policy.
        url: String,
    },
    /// `session.flow_transfer`: hand the call to an IVR flow or queue.
    FlowTransfer {
        /// Non-empty.
        flow_id: String,
    },
    /// `session.transfer_extension`: ring a SIP extension or agent.
    TransferExtension {
        /// Non-empty.
        extension: String,
    },
    /// `session.transfer_complete`: end a warm transfer by bridging the caller
    /// to the target the bot briefed.
    TransferComplete,
    /// `session.transfer_cancel`: end a warm transfer by hanging up the target;
    /// the bot is back with the caller.
    TransferCancel,
}

impl Command {
    /// The message's `type` on the wire, e.g. `"session.transfer"`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::AudioDelta => "response.audio.delta",
            Command::Clear => "audio.clear",
            Command::Dtmf { .. } => "session.dtmf",
            Command::Hangup { .. } => "session.hangup",
            Command::Mark { .. } => "mark",
            Command::Transfer { .. } => "session.transfer",
            Command::TransferWs { .. } => "session.transfer_ws",
            Command::FlowTransfer { .. } => "session.flow_transfer",
            Command::TransferExtension { .. } => "session.transfer_extension",
            Command::TransferComplete => "session.transfer_complete",
            Command::TransferCancel => "session.transfer_cancel",
        }
    }
}

/// A refused bot message: the `code` and `message` of the `error` event to send.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    /// What kind of problem it was.
    pub code: ErrorCode,
    /// What exactly was wrong, naming the message type and field, e.g.
    /// "response.audio.delta: `delta` is not valid base64 (invalid byte '!' at offset 12)".
    pub message: String,
}

impl CommandError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CommandError {
            code,
            message: message.into(),
        }
    }

    /// The `error` event that tells the bot about this refusal.
    pub fn to_event(&self) -> Event<'_> {
        Event::Error {
            code: self.code,
            message: &self.message,
        }
    }
}

/// Parses one text frame from a bot.
///
/// Clears `audio` and, for `response.audio.delta`, base64-decodes the delta into it,
/// reusing its capacity; the delta is read in place from `text`. `max_bytes` is the
/// session's message size limit (normally [`MAX_MESSAGE_BYTES`](crate::MAX_MESSAGE_BYTES)).
/// Audio is checked to be whole 16-bit samples; for 8-bit session formats use
/// [`parse_command_with_sample_bytes`].
///
/// Errors, by [`ErrorCode`]: `text` longer than `max_bytes`: `MessageTooLarge`; not
/// JSON, or not an object: `BadJson`; no `type`: `MissingField`; a `type` not in
/// [`COMMAND_TYPES`]: `UnknownType`; a required field absent or `null`:
/// `MissingField`; a field of the wrong JSON type, or empty where a value is needed:
/// `BadField`; bad base64: `BadBase64`; a part sample: `OddByteCount`; a character
/// that is not a DTMF digit: `BadDtmf`. Unknown extra fields are ignored.
///
/// ```
/// use protocol::{parse_command, Command, TransferStrategy};
///
/// let mut audio = Vec::new();
/// let cmd = parse_command(
///     r#"{"type":"session.transfer","destination":["a","b"],"strategy":"sequential"}"#,
///     &mut audio,
///     protocol::MAX_MESSAGE_BYTES,
/// )?;
/// assert_eq!(
///     cmd,
///     Command::Transfer {
///         destinations: vec!["a".into(), "b".into()],
///         strategy: TransferStrategy::Sequential,
///         timeout_s: None,
///         caller_id: None,
///         mode: protocol::TransferMode::Cold,
///     }
/// );
/// # Ok::<(), protocol::CommandError>(())
/// ```
pub fn parse_command(
    text: &str,
    audio: &mut Vec<u8>,
    max_bytes: usize,
) -> Result<Command, CommandError> {
    parse_command_with_sample_bytes(text, audio, max_bytes, PCM16_SAMPLE_BYTES)
}

/// The delta of `{"type":"response.audio.delta","delta":"…"}`, exactly that
/// shape. The caller still checks the delta is base64, which also makes the
/// whole a valid JSON object (base64 has no `"`, `\` or control characters).
fn bare_audio_delta(text: &str) -> Option<&str> {
    text.strip_prefix(r#"{"type":"response.audio.delta","delta":""#)?
        .strip_suffix(r#""}"#)
}

/// [`parse_command`] for a session whose audio has `sample_bytes` bytes per sample:
/// 2 for PCM16, 1 for μ-law and A-law (where any byte count is whole samples).
pub fn parse_command_with_sample_bytes(
    text: &str,
    audio: &mut Vec<u8>,
    max_bytes: usize,
    sample_bytes: usize,
) -> Result<Command, CommandError> {
    audio.clear();
    check_size(text.len(), max_bytes)?;
    if let Some(delta) = bare_audio_delta(text) {
        // The commonest message, in the shape `command_json` writes: read
        // without the JSON parser. Anything wrong with it goes the long way,
        // which says what.
        if crate::b64::decode_append(delta, audio).is_ok()
            && audio.len().is_multiple_of(sample_bytes)
        {
            return Ok(Command::AudioDelta);
        }
        audio.clear();
    }
    // A struct also deserializes from a JSON array (fields by position), so an
    // array must be turned away before serde sees it.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        let problem = match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => "a message must be a JSON object".to_owned(),
            Err(e) => format!("not valid JSON: {e}"),
        };
        return Err(CommandError::new(ErrorCode::BadJson, problem));
    }
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| {
        let problem = match e.classify() {
            // Every field accepts any JSON value, so a data error here is a
            // duplicate key.
            serde_json::error::Category::Data => format!("malformed message: {e}"),
            _ => format!("not valid JSON: {e}"),
        };
        CommandError::new(ErrorCode::BadJson, problem)
    })?;

    let kind = match &wire.kind {
        None => {
            return Err(CommandError::new(
                ErrorCode::MissingField,
                "message has no `type` field",
            ))
        }
        Some(Loose::Str(kind)) => kind.as_ref(),
        Some(other) => {
            return Err(CommandError::new(
                ErrorCode::BadField,
                format!("`type` must be a string, got {}", other.kind()),
            ))
        }
    };
    let msg = Msg { kind };

    match kind {
        "response.audio.delta" => {
            let delta = msg.required_str("delta", &wire.delta)?;
            if let Err(e) = crate::b64::decode_append(delta, audio) {
                audio.clear();
                return Err(msg.error(
                    ErrorCode::BadBase64,
                    format!(
                        "`delta` is not valid base64 ({})",
                        crate::describe_base64_error(&e)
                    ),
                ));
            }
            if let Err(e) = check_whole_samples(audio.len(), sample_bytes) {
                audio.clear();
                return Err(msg.error(e.code, format!("decoded `delta` {}", e.message)));
            }
            Ok(Command::AudioDelta)
        }
        "audio.clear" => Ok(Command::Clear),
        "session.dtmf" => {
            let text = msg.required_nonempty_str("dtmf", &wire.dtmf)?;
            let mut digits = String::with_capacity(text.len());
            for (i, c) in text.chars().enumerate() {
                let digit = match c {
                    'a'..='d' => c.to_ascii_uppercase(),
                    _ => c,
                };
                if !is_valid_dtmf(digit) {
                    return Err(msg.error(
                        ErrorCode::BadDtmf,
                        format!(
                            "`dtmf` character {} ({c:?}) is not a DTMF digit (0-9 * # A-D)",
                            i + 1
                        ),
                    ));
                }
                digits.push(digit);
            }
            Ok(Command::Dtmf { digits })
        }
        "session.hangup" => {
            let immediate = match &wire.immediate {
                None => false,
                Some(Loose::Bool(b)) => *b,
                Some(other) => return Err(msg.wrong_type("immediate", "true or false", other)),
            };
            Ok(Command::Hangup { immediate })
        }
        "mark" => Ok(Command::Mark {
            name: msg.required_nonempty_str("name", &wire.name)?.to_owned(),
        }),
        "session.transfer" => {
            let destinations = msg.destinations(&wire.destination)?;
            let strategy = match &wire.strategy {
                None => TransferStrategy::default(),
                Some(Loose::Str(s)) => TransferStrategy::parse(s).ok_or_else(|| {
                    msg.error(
                        ErrorCode::BadField,
                        format!(
                            "`strategy` must be \"simultaneous\" or \"sequential\", got {:?}",
                            excerpt(s)
                        ),
                    )
                })?,
                Some(other) => return Err(msg.wrong_type("strategy", "a string", other)),
            };
            let timeout_s = match &wire.timeout {
                None => None,
                Some(Loose::UInt(n)) if *n >= 1 => Some(u32::try_from(*n).map_err(|_| {
                    msg.error(
                        ErrorCode::BadField,
                        format!("`timeout` is too large: {n} seconds"),
                    )
                })?),
                Some(Loose::UInt(_)) => {
                    return Err(msg.error(
                        ErrorCode::BadField,
                        "`timeout` must be at least 1 second, got 0".to_owned(),
                    ))
                }
                Some(other) => {
                    return Err(msg.wrong_type("timeout", "a whole number of seconds", other))
                }
            };
            let caller_id = match &wire.caller_id {
                None => None,
                Some(Loose::Str(s)) if s.is_empty() => None,
                Some(Loose::Str(s)) => Some(s.clone().into_owned()),
                Some(other) => return Err(msg.wrong_type("caller_id", "a string", other)),
            };
            let mode = match &wire.mode {
                None => TransferMode::default(),
                Some(Loose::Str(s)) => TransferMode::parse(s).ok_or_else(|| {
                    msg.error(
                        ErrorCode::BadField,
                        format!("`mode` must be \"cold\" or \"warm\", got {:?}", excerpt(s)),
                    )
                })?,
                Some(other) => return Err(msg.wrong_type("mode", "a string", other)),
            };
            Ok(Command::Transfer {
                destinations,
                strategy,
                timeout_s,
                caller_id,
                mode,
            })
        }
        "session.transfer_ws" => Ok(Command::TransferWs {
            url: msg.required_nonempty_str("url", &wire.url)?.to_owned(),
        }),
        "session.flow_transfer" => Ok(Command::FlowTransfer {
            flow_id: msg
                .required_nonempty_str("flow_id", &wire.flow_id)?
                .to_owned(),
        }),
        "session.transfer_extension" => Ok(Command::TransferExtension {
            extension: msg
                .required_nonempty_str("extension", &wire.extension)?
                .to_owned(),
        }),
        "session.transfer_complete" => Ok(Command::TransferComplete),
        "session.transfer_cancel" => Ok(Command::TransferCancel),
        other => Err(CommandError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown message type {:?}; known types: {}",
                excerpt(other),
                COMMAND_TYPES.join(", ")
            ),
        )),
    }
}

/// Checks a binary frame, which is raw audio in the session's format (LE PCM16 by
/// default): at most `max_bytes`, and whole 16-bit samples.
pub fn check_binary_audio(bytes: &[u8], max_bytes: usize) -> Result<(), CommandError> {
    check_binary_audio_with_sample_bytes(bytes, max_bytes, PCM16_SAMPLE_BYTES)
}

/// [`check_binary_audio`] for a session whose audio has `sample_bytes` bytes per
/// sample (1 for μ-law and A-law).
pub fn check_binary_audio_with_sample_bytes(
    bytes: &[u8],
    max_bytes: usize,
    sample_bytes: usize,
) -> Result<(), CommandError> {
    check_size(bytes.len(), max_bytes)?;
    check_whole_samples(bytes.len(), sample_bytes)
        .map_err(|e| CommandError::new(e.code, format!("binary audio frame {}", e.message)))
}

/// Whether `c` is a DTMF digit as the protocol writes it: `0-9`, `*`, `#` or
/// uppercase `A-D`. ([`parse_command`] uppercases `a-d` from bots before checking.)
pub fn is_valid_dtmf(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

/// Serializes a command as a bot would send it, `type` first. For
/// [`Command::AudioDelta`] the delta is `audio`, base64-encoded; other commands
/// ignore `audio`. A one-element transfer is written as a plain `destination`
/// string; optional fields at their defaults are left out.
///
/// ```
/// use protocol::{command_json, Command};
///
/// assert_eq!(
///     command_json(&Command::AudioDelta, &[0, 0, 0xff, 0x7f]),
///     r#"{"type":"response.audio.delta","delta":"AAD/fw=="}"#
/// );
/// assert_eq!(
///     command_json(&Command::Hangup { immediate: true }, &[]),
///     r#"{"type":"session.hangup","immediate":true}"#
/// );
/// ```
pub fn command_json(cmd: &Command, audio: &[u8]) -> String {
    let mut out = String::with_capacity(64 + audio.len().div_ceil(3) * 4);
    out.push_str(r#"{"type":""#);
    out.push_str(cmd.name());
    out.push('"');
    match cmd {
        Command::AudioDelta => {
            out.push_str(r#","delta":""#);
            crate::b64::encode_append(audio, &mut out);
            out.push('"');
        }
        Command::Clear => {}
        Command::Dtmf { digits } => push_field(&mut out, "dtmf", digits),
        Command::Hangup { immediate } => {
            if *immediate {
                out.push_str(r#","immediate":true"#);
            }
        }
        Command::Mark { name } => push_field(&mut out, "name", name),
        Command::Transfer {
            destinations,
            strategy,
            timeout_s,
            caller_id,
            mode,
        } => {
            if let [only] = destinations.as_slice() {
                push_field(&mut out, "destination", only);
            } else {
                out.push_str(r#","destination":["#);
                for (i, destination) in destinations.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json::push_str(&mut out, destination);
                }
                out.push(']');
            }
            if *strategy != TransferStrategy::default() {
                push_field(&mut out, "strategy", strategy.as_str());
            }
            if let Some(timeout) = timeout_s {
                out.push_str(r#","timeout":"#);
                json::push_u64(&mut out, u64::from(*timeout));
            }
            if let Some(caller_id) = caller_id {
                push_field(&mut out, "caller_id", caller_id);
            }
            if *mode != TransferMode::default() {
                push_field(&mut out, "mode", mode.as_str());
            }
        }
        Command::TransferWs { url } => push_field(&mut out, "url", url),
        Command::FlowTransfer { flow_id } => push_field(&mut out, "flow_id", flow_id),
        Command::TransferExtension { extension } => push_field(&mut out, "extension", extension),
        Command::TransferComplete | Command::TransferCancel => {}
    }
    out.push('}');
    out
}

/// Appends `,"key":"value"`.
fn push_field(out: &mut String, key: &str, value: &str) {
    out.push(',');
    json::push_key(out, key);
    json::push_str(out, value);
}

fn check_size(len: usize, max_bytes: usize) -> Result<(), CommandError> {
    if len > max_bytes {
        return Err(CommandError::new(
            ErrorCode::MessageTooLarge,
            format!("message is {len} bytes; the limit is {max_bytes}"),
        ));
    }
    Ok(())
}

/// The message is completed by the caller: "<what> is 3 bytes, ...".
fn check_whole_samples(len: usize, sample_bytes: usize) -> Result<(), CommandError> {
    let sample_bytes = sample_bytes.max(1);
    if !len.is_multiple_of(sample_bytes) {
        return Err(CommandError::new(
            ErrorCode::OddByteCount,
            format!("is {len} bytes, not a whole number of {sample_bytes}-byte samples"),
        ));
    }
    Ok(())
}

/// At most 64 characters of a bot's text, for echoing it in an error message.
fn excerpt(s: &str) -> Cow<'_, str> {
    const MAX_CHARS: usize = 64;
    match s.char_indices().nth(MAX_CHARS) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => Cow::Owned(format!("{}...", &s[..cut])),
    }
}

/// Field checks for one message, with errors that start with its type.
struct Msg<'k> {
    kind: &'k str,
}

impl Msg<'_> {
    fn error(&self, code: ErrorCode, problem: String) -> CommandError {
        CommandError::new(code, format!("{}: {problem}", self.kind))
    }

    fn wrong_type(&self, field: &str, expected: &str, got: &Loose<'_>) -> CommandError {
        self.error(
            ErrorCode::BadField,
            format!("`{field}` must be {expected}, got {}", got.kind()),
        )
    }

    fn required_str<'w>(
        &self,
        field: &str,
        value: &'w Option<Loose<'_>>,
    ) -> Result<&'w str, CommandError> {
        match value {
            None => Err(self.error(
                ErrorCode::MissingField,
                format!("missing required field `{field}`"),
            )),
            Some(Loose::Str(s)) => Ok(s),
            Some(other) => Err(self.wrong_type(field, "a string", other)),
        }
    }

    fn required_nonempty_str<'w>(
        &self,
        field: &str,
        value: &'w Option<Loose<'_>>,
    ) -> Result<&'w str, CommandError> {
        let s = self.required_str(field, value)?;
        if s.is_empty() {
            return Err(self.error(ErrorCode::BadField, format!("`{field}` must not be empty")));
        }
        Ok(s)
    }

    /// `destination`: one non-empty string, or a non-empty array of them.
    fn destinations(&self, value: &Option<Loose<'_>>) -> Result<Vec<String>, CommandError> {
        const EXPECTED: &str = "a string or an array of strings";
        match value {
            None => Err(self.error(
                ErrorCode::MissingField,
                "missing required field `destination`".to_owned(),
            )),
            Some(Loose::Str(_)) => Ok(vec![self
                .required_nonempty_str("destination", value)?
                .to_owned()]),
            Some(Loose::Array(items)) if items.is_empty() => Err(self.error(
                ErrorCode::BadField,
                "`destination` must not be an empty array".to_owned(),
            )),
            Some(Loose::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Loose::Str(s) if s.is_empty() => Err(self.error(
                        ErrorCode::BadField,
                        format!("`destination[{i}]` must not be empty"),
                    )),
                    Loose::Str(s) => Ok(s.clone().into_owned()),
                    other => Err(self.wrong_type(&format!("destination[{i}]"), "a string", other)),
                })
                .collect(),
            Some(other) => Err(self.wrong_type("destination", EXPECTED, other)),
        }
    }
}

/// The fields of every bot message, each holding whatever JSON value it had, so
/// type errors are reported by field name rather than by serde's position.
/// Strings borrow from the frame's text unless they contain escapes.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Loose<'a>>,
    #[serde(borrow)]
    delta: Option<Loose<'a>>,
    #[serde(borrow)]
    dtmf: Option<Loose<'a>>,
    #[serde(borrow)]
    immediate: Option<Loose<'a>>,
    #[serde(borrow)]
    name: Option<Loose<'a>>,
    #[serde(borrow)]
    destination: Option<Loose<'a>>,
    #[serde(borrow)]
    strategy: Option<Loose<'a>>,
    #[serde(borrow)]
    timeout: Option<Loose<'a>>,
    #[serde(borrow)]
    caller_id: Option<Loose<'a>>,
    #[serde(borrow)]
    url: Option<Loose<'a>>,
    #[serde(borrow)]
    flow_id: Option<Loose<'a>>,
    #[serde(borrow)]
    extension: Option<Loose<'a>>,
    #[serde(borrow)]
    mode: Option<Loose<'a>>,
}

/// Any JSON value, keeping only what message fields need: strings (borrowed when
/// possible), whole numbers, booleans and arrays of these. JSON `null` never gets
/// here: an `Option<Loose>` field reads it as `None`, that is, absent.
enum Loose<'a> {
    Null,
    Bool(bool),
    UInt(u64),
    OtherNumber,
    Str(Cow<'a, str>),
    Array(Vec<Loose<'a>>),
    Object,
}

impl Loose<'_> {
    /// The JSON type, for "must be X, got Y" messages.
    fn kind(&self) -> &'static str {
        match self {
            Loose::Null => "null",
            Loose::Bool(_) => "a boolean",
            Loose::UInt(_) => "a whole number",
            Loose::OtherNumber => "a number",
            Loose::Str(_) => "a string",
            Loose::Array(_) => "an array",
            Loose::Object => "an object",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor(PhantomData))
    }
}

struct LooseVisitor<'a>(PhantomData<Loose<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for LooseVisitor<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Loose<'a>, E> {
        Ok(Loose::Null)
    }

    fn visit_none<E>(self) -> Result<Loose<'a>, E> {
        Ok(Loose::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loose<'a>, D::Error> {
        Loose::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Loose<'a>, E> {
        Ok(Loose::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Loose<'a>, E> {
        Ok(Loose::UInt(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Loose<'a>, E> {
        Ok(u64::try_from(v).map_or(Loose::OtherNumber, Loose::UInt))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Loose<'a>, E> {
        Ok(Loose::OtherNumber)
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Loose<'a>, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Loose<'a>, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Loose<'a>, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose<'a>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Loose::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose<'a>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Object)
    }
}
