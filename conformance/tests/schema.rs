//! The committed JSON Schema files are exactly what the protocol types generate,
//! everything the protocol's writers produce validates, and what its parsers
//! refuse the schemas refuse too.

use std::path::Path;

use conformance::schema::{self, Schema};
use serde_json::Value;

fn committed(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn committed_schemas_match_the_protocol_types() {
    for (name, generated) in [
        (schema::EVENTS_FILE, schema::events_schema()),
        (schema::COMMANDS_FILE, schema::commands_schema()),
    ] {
        assert_eq!(
            committed(name),
            schema::to_file_text(&generated),
            "conformance/schema/{name} is stale: run `cargo run -p conformance -- schema --out conformance/schema`"
        );
    }
}

#[test]
fn committed_schemas_use_only_what_the_validator_checks() {
    for name in [schema::EVENTS_FILE, schema::COMMANDS_FILE] {
        let v: Value = serde_json::from_str(&committed(name)).unwrap();
        Schema::compile(v).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn check(schema: &Schema, text: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(text).expect("test text is JSON");
    schema.validate(&v).iter().map(|p| p.to_string()).collect()
}

#[test]
fn every_event_the_bridge_writes_validates() {
    let texts = schema::sample_event_texts();
    assert_eq!(texts.len(), 10, "one sample of every event");
    for text in texts {
        protocol::parse_event(&text).expect("the sample parses");
        assert_eq!(
            check(schema::events(), &text),
            Vec::<String>::new(),
            "{text}"
        );
    }
}

#[test]
fn every_message_a_bot_writes_validates() {
    for text in schema::sample_command_texts() {
        let mut audio = vec![];
        protocol::parse_command(&text, &mut audio, protocol::MAX_MESSAGE_BYTES).expect("parses");
        assert_eq!(
            check(schema::commands(), &text),
            Vec::<String>::new(),
            "{text}"
        );
    }
}

#[test]
fn events_the_parser_refuses_the_schema_refuses() {
    let media = |ts: &str, payload: &str| {
        format!(
            r#"{{"event":"media","sequence_number":2,"stream_sid":"MZ","media":{{"chunk":1,"timestamp":{ts},"payload":{payload}}}}}"#
        )
    };
    let cases = [
        (media("0", r#""AAAA""#), "/media/timestamp: must be string, got an integer"),
        (media(r#""x1""#, r#""AAAA""#), "/media/timestamp: does not match the pattern"),
        (media(r#""0""#, r#""AAA""#), "/media/payload: does not match the pattern"),
        (
            r#"{"event":"stop","sequence_number":3,"stream_sid":"MZ","stop":{"call_sid":"CA","reason":"gone"}}"#.into(),
            "/stop/reason: must be one of",
        ),
        (
            r#"{"event":"dtmf","sequence_number":3,"stream_sid":"MZ","dtmf":{"digit":"12","duration":"100"}}"#.into(),
            "/dtmf/digit: must be one of",
        ),
        (r#"{"event":"mark","sequence_number":3,"stream_sid":"MZ"}"#.into(), "(message): missing required field `mark`"),
        (r#"{"event":"teleport"}"#.into(), "/event: \"teleport\" is not one of"),
        (r#"{"sequence_number":1}"#.into(), "missing required field `event`"),
    ];
    for (text, want) in cases {
        assert!(
            protocol::parse_event(&text).is_err(),
            "the parser refuses {text}"
        );
        let got = check(schema::events(), &text);
        assert!(
            got.iter().any(|p| p.contains(want)),
            "{text}: want {want:?}, got {got:?}"
        );
    }
}

#[test]
fn messages_the_parser_refuses_the_schema_refuses() {
    let cases = [
        (
            r#"{"type":"response.audio.delta"}"#,
            "missing required field `delta`",
        ),
        (
            r#"{"type":"response.audio.delta","delta":null}"#,
            "/delta: must be string, got null",
        ),
        (
            r#"{"type":"response.audio.delta","delta":"%%"}"#,
            "/delta: does not match",
        ),
        (r#"{"type":"mark","name":""}"#, "/name: is shorter than 1"),
        (
            r#"{"type":"session.dtmf","dtmf":"12x"}"#,
            "/dtmf: does not match",
        ),
        (
            r#"{"type":"session.hangup","immediate":"yes"}"#,
            "/immediate: must be boolean or null",
        ),
        (
            r#"{"type":"session.transfer","destination":[]}"#,
            "/destination",
        ),
        (
            r#"{"type":"session.transfer","destination":"a","timeout":0}"#,
            "/timeout: 0 is out of range",
        ),
        (
            r#"{"type":"session.transfer","destination":"a","strategy":"random"}"#,
            "/strategy: must be one of",
        ),
        (r#"{"type":"no.such"}"#, "/type: \"no.such\" is not one of"),
        (r#"{"delta":"AAAA"}"#, "missing required field `type`"),
    ];
    for (text, want) in cases {
        let mut audio = vec![];
        assert!(
            protocol::parse_command(text, &mut audio, protocol::MAX_MESSAGE_BYTES).is_err(),
            "the parser refuses {text}"
        );
        let got = check(schema::commands(), text);
        assert!(
            got.iter().any(|p| p.contains(want)),
            "{text}: want {want:?}, got {got:?}"
        );
    }
}

#[test]
fn lenient_messages_pass_both() {
    for text in [
        r#"{"type":"mark","name":"n","x_future":{"a":1}}"#,
        r#"{"type":"response.audio.delta","delta":"AAAAAA"}"#,
        r#"{"type":"response.audio.delta","delta":""}"#,
        r#"{"type":"session.hangup","immediate":null}"#,
        r#"{"type":"session.dtmf","dtmf":"1a#"}"#,
        r#"{"type":"session.transfer","destination":["a","b"],"strategy":null,"timeout":null,"caller_id":""}"#,
    ] {
        let mut audio = vec![];
        protocol::parse_command(text, &mut audio, protocol::MAX_MESSAGE_BYTES).expect(text);
        assert_eq!(
            check(schema::commands(), text),
            Vec::<String>::new(),
            "{text}"
        );
    }
}
