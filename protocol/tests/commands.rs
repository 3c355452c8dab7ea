//! Bot → bridge messages (PROTOCOL.md section 3): every documented example parses to
//! the right command, every refusal carries the right error code, and commands
//! written by `command_json` parse back unchanged.

use protocol::{
    check_binary_audio, check_binary_audio_with_sample_bytes, command_json, is_valid_dtmf,
    parse_command, parse_command_with_sample_bytes, parse_event, write_event, BotEvent, Command,
    CommandError, ErrorCode, TransferMode, TransferStrategy, COMMAND_TYPES, MAX_MESSAGE_BYTES,
};

const PROTOCOL_MD: &str = include_str!("../PROTOCOL.md");

/// What stands in for the doc's `B64` placeholder: two PCM16 samples, 0 and 32767.
const B64_EXAMPLE: &str = r#""AAD/fw==""#;
const B64_EXAMPLE_PCM: [u8; 4] = [0x00, 0x00, 0xff, 0x7f];

fn parse(text: &str) -> Result<Command, CommandError> {
    let mut audio = Vec::new();
    parse_command(text, &mut audio, MAX_MESSAGE_BYTES)
}

fn transfer(destinations: &[&str], strategy: TransferStrategy) -> Command {
    Command::Transfer {
        destinations: destinations.iter().map(|d| d.to_string()).collect(),
        strategy,
        timeout_s: None,
        caller_id: None,
        mode: TransferMode::Cold,
    }
}

/// The bot message examples of PROTOCOL.md section 3, taken from the document
/// itself so the doc and the parser cannot drift apart.
fn documented_bot_messages() -> Vec<String> {
    let section = PROTOCOL_MD
        .split("## 3.")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("PROTOCOL.md has a section 3");
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `{"))
        .filter_map(|rest| rest.split('`').next())
        .map(|json| format!("{{{json}").replace("B64", B64_EXAMPLE))
        .collect()
}

#[test]
fn every_documented_bot_message_parses_to_its_command() {
    let expected: Vec<(&str, Command)> = vec![
        (
            r#"{"type":"response.audio.delta","delta":"AAD/fw=="}"#,
            Command::AudioDelta,
        ),
        (r#"{"type":"audio.clear"}"#, Command::Clear),
        (
            r#"{"type":"session.dtmf","dtmf":"123#"}"#,
            Command::Dtmf {
                digits: "123#".to_owned(),
            },
        ),
        (
            r#"{"type":"session.hangup"}"#,
            Command::Hangup { immediate: false },
        ),
        (
            r#"{"type":"session.transfer","destination":"0987…"}"#,
            transfer(&["0987…"], TransferStrategy::Simultaneous),
        ),
        (
            r#"{"type":"session.transfer","destination":["a","b","c"]}"#,
            transfer(&["a", "b", "c"], TransferStrategy::Simultaneous),
        ),
        (
            r#"{"type":"session.transfer","destination":["a","b"],"strategy":"sequential"}"#,
            transfer(&["a", "b"], TransferStrategy::Sequential),
        ),
        (
            r#"{"type":"session.transfer_ws","url":"wss://…"}"#,
            Command::TransferWs {
                url: "wss://…".to_owned(),
            },
        ),
        (
            r#"{"type":"session.flow_transfer","flow_id":"sales_flow"}"#,
            Command::FlowTransfer {
                flow_id: "sales_flow".to_owned(),
            },
        ),
        (
            r#"{"type":"session.transfer_extension","extension":"101"}"#,
            Command::TransferExtension {
                extension: "101".to_owned(),
            },
        ),
        (
            r#"{"type":"session.transfer","destination":"…","mode":"warm"}"#,
            Command::Transfer {
                destinations: vec!["…".to_owned()],
                strategy: TransferStrategy::Simultaneous,
                timeout_s: None,
                caller_id: None,
                mode: TransferMode::Warm,
            },
        ),
        (
            r#"{"type":"session.transfer_complete"}"#,
            Command::TransferComplete,
        ),
        (
            r#"{"type":"session.transfer_cancel"}"#,
            Command::TransferCancel,
        ),
        (
            r#"{"type":"mark","name":"intro_complete"}"#,
            Command::Mark {
                name: "intro_complete".to_owned(),
            },
        ),
        // From the semantics list under the table.
        (
            r#"{"type":"session.hangup","immediate":true}"#,
            Command::Hangup { immediate: true },
        ),
    ];

    let documented = documented_bot_messages();
    assert!(documented.len() >= 11, "found {documented:?}");
    for text in &documented {
        assert!(
            expected.iter().any(|(t, _)| t == text),
            "PROTOCOL.md example {text} has no row in this test"
        );
    }

    for (text, command) in &expected {
        let mut audio = vec![9; 3]; // stale content must not survive
        let got = parse_command(text, &mut audio, MAX_MESSAGE_BYTES);
        assert_eq!(got.as_ref(), Ok(command), "{text}");
        let expected_audio: &[u8] = if *command == Command::AudioDelta {
            &B64_EXAMPLE_PCM
        } else {
            &[]
        };
        assert_eq!(audio, expected_audio, "{text}");
    }
    let types: Vec<&str> = expected.iter().map(|(_, c)| c.name()).collect();
    for kind in COMMAND_TYPES {
        assert!(types.contains(kind), "no example of {kind}");
    }
}

#[test]
fn optional_and_lenient_forms() {
    let ok: Vec<(&str, Command)> = vec![
        (
            r#"{"type":"session.transfer","destination":["a"],"timeout":20,"caller_id":"+15550003"}"#,
            Command::Transfer {
                destinations: vec!["a".to_owned()],
                strategy: TransferStrategy::Simultaneous,
                timeout_s: Some(20),
                caller_id: Some("+15550003".to_owned()),
                mode: TransferMode::Cold,
            },
        ),
        (
            r#"{"type":"session.transfer","destination":"a","mode":"warm"}"#,
            Command::Transfer {
                destinations: vec!["a".to_owned()],
                strategy: TransferStrategy::Simultaneous,
                timeout_s: None,
                caller_id: None,
                mode: TransferMode::Warm,
            },
        ),
        (
            r#"{"type":"session.transfer","destination":"a","mode":null}"#,
            transfer(&["a"], TransferStrategy::Simultaneous),
        ),
        (
            r#"{"type":"session.transfer_complete"}"#,
            Command::TransferComplete,
        ),
        (
            r#"{"type":"session.transfer_cancel","extra":1}"#,
            Command::TransferCancel,
        ),
        // null and "" mean "use the default" for optional fields.
        (
            r#"{"type":"session.transfer","destination":"a","strategy":null,"timeout":null,"caller_id":""}"#,
            transfer(&["a"], TransferStrategy::Simultaneous),
        ),
        (
            r#"{"type":"session.transfer","destination":"a","strategy":"simultaneous"}"#,
            transfer(&["a"], TransferStrategy::Simultaneous),
        ),
        (
            r#"{"type":"session.hangup","immediate":false}"#,
            Command::Hangup { immediate: false },
        ),
        (
            r#"{"type":"session.hangup","immediate":null}"#,
            Command::Hangup { immediate: false },
        ),
        (
            r#"{"type":"session.dtmf","dtmf":"0123456789*#abcdABCD"}"#,
            Command::Dtmf {
                digits: "0123456789*#ABCDABCD".to_owned(),
            },
        ),
        // Unknown extra fields are ignored, whatever their type.
        (
            r#"{"type":"audio.clear","event_id":"e1","extra":{"nested":[1,{"x":null}]},"n":-1.5}"#,
            Command::Clear,
        ),
        // JSON whitespace around and inside.
        (" \r\n\t{ \"type\" : \"audio.clear\" }\n", Command::Clear),
        // Escapes in strings are honoured.
        (
            r#"{"type":"mark","name":"a\"b\\c\u00e9\n"}"#,
            Command::Mark {
                name: "a\"b\\c\u{e9}\n".to_owned(),
            },
        ),
        (
            r#"{"type":"session.transfer_ws","url":"wss:\/\/bot.example\/x"}"#,
            Command::TransferWs {
                url: "wss://bot.example/x".to_owned(),
            },
        ),
    ];
    for (text, command) in ok {
        assert_eq!(parse(text), Ok(command), "{text}");
    }
}

#[test]
fn audio_deltas_decode_into_the_reused_buffer() {
    let mut audio = Vec::with_capacity(4096);
    let capacity = audio.capacity();

    assert_eq!(
        parse_command(
            r#"{"type":"response.audio.delta","delta":"AAD/fw=="}"#,
            &mut audio,
            MAX_MESSAGE_BYTES
        ),
        Ok(Command::AudioDelta)
    );
    assert_eq!(audio, B64_EXAMPLE_PCM);
    assert_eq!(audio.capacity(), capacity, "capacity is reused");

    // Without padding, and with JSON-escaped slashes (as PHP writes them).
    for text in [
        r#"{"type":"response.audio.delta","delta":"AAD/fw"}"#,
        r#"{"delta":"AAD\/fw==","type":"response.audio.delta"}"#,
    ] {
        assert_eq!(
            parse_command(text, &mut audio, MAX_MESSAGE_BYTES),
            Ok(Command::AudioDelta)
        );
        assert_eq!(audio, B64_EXAMPLE_PCM, "{text}");
    }

    // An empty delta is allowed and yields no audio.
    assert_eq!(
        parse_command(
            r#"{"type":"response.audio.delta","delta":""}"#,
            &mut audio,
            MAX_MESSAGE_BYTES
        ),
        Ok(Command::AudioDelta)
    );
    assert!(audio.is_empty());
}

#[test]
fn odd_byte_counts_are_whole_samples_in_8_bit_formats() {
    let mut audio = Vec::new();
    let text = r#"{"type":"response.audio.delta","delta":"/w=="}"#; // one byte
    assert_eq!(
        parse_command(text, &mut audio, MAX_MESSAGE_BYTES).map_err(|e| e.code),
        Err(ErrorCode::OddByteCount)
    );
    assert!(audio.is_empty(), "a refused delta leaves no audio");
    assert_eq!(
        parse_command_with_sample_bytes(text, &mut audio, MAX_MESSAGE_BYTES, 1),
        Ok(Command::AudioDelta)
    );
    assert_eq!(audio, [0xff]);
    assert_eq!(
        check_binary_audio_with_sample_bytes(&[1, 2, 3], 10, 1),
        Ok(())
    );
}

/// Every refusal `parse_command` can give: the code, and the exact message where it
/// is ours (serde's own wording is only checked for its prefix).
#[test]
fn every_parse_error_has_its_code_and_a_specific_message() {
    use ErrorCode::*;
    let cases: Vec<(&str, ErrorCode, &str)> = vec![
        ("", BadJson, "not valid JSON: EOF while parsing a value at line 1 column 0"),
        ("nope", BadJson, "not valid JSON: expected ident at line 1 column 2"),
        (r#"{"type":"audio.clear""#, BadJson, "not valid JSON: EOF while parsing an object"),
        (r#"{"type":"audio.clear"} x"#, BadJson, "not valid JSON: trailing characters"),
        (r#"["audio.clear"]"#, BadJson, "a message must be a JSON object"),
        (r#""audio.clear""#, BadJson, "a message must be a JSON object"),
        ("42", BadJson, "a message must be a JSON object"),
        ("null", BadJson, "a message must be a JSON object"),
        (
            r#"{"type":"audio.clear","type":"mark"}"#,
            BadJson,
            "malformed message: duplicate field `type`",
        ),
        (r#"{}"#, MissingField, "message has no `type` field"),
        (r#"{"type":null}"#, MissingField, "message has no `type` field"),
        (
            r#"{"event":"media","media":{"payload":""}}"#,
            MissingField,
            "message has no `type` field",
        ),
        (r#"{"type":5}"#, BadField, "`type` must be a string, got a whole number"),
        (r#"{"type":["mark"]}"#, BadField, "`type` must be a string, got an array"),
        (
            r#"{"type":"input_audio_buffer.append"}"#,
            UnknownType,
            "unknown message type \"input_audio_buffer.append\"; known types: response.audio.delta, audio.clear, session.dtmf, session.hangup, session.transfer, session.transfer_ws, session.flow_transfer, session.transfer_extension, session.transfer_complete, session.transfer_cancel, mark",
        ),
        (r#"{"type":""}"#, UnknownType, "unknown message type \"\""),
        (r#"{"type":"Audio.Clear"}"#, UnknownType, "unknown message type \"Audio.Clear\""),
        (
            r#"{"type":"response.audio.delta"}"#,
            MissingField,
            "response.audio.delta: missing required field `delta`",
        ),
        (
            r#"{"type":"response.audio.delta","delta":null}"#,
            MissingField,
            "response.audio.delta: missing required field `delta`",
        ),
        (
            r#"{"type":"response.audio.delta","delta":[0,0]}"#,
            BadField,
            "response.audio.delta: `delta` must be a string, got an array",
        ),
        (
            r#"{"type":"response.audio.delta","delta":"AAD/fw=!AAAA"}"#,
            BadBase64,
            "response.audio.delta: `delta` is not valid base64 (invalid byte '=' at offset 6)",
        ),
        (
            r#"{"type":"response.audio.delta","delta":"AAAAAAAAAAAA AAA"}"#,
            BadBase64,
            "response.audio.delta: `delta` is not valid base64 (invalid byte ' ' at offset 12)",
        ),
        (
            r#"{"type":"response.audio.delta","delta":"AAAAA"}"#,
            BadBase64,
            "response.audio.delta: `delta` is not valid base64 (5 base64 symbols cannot encode whole bytes; the text looks cut short)",
        ),
        (
            r#"{"type":"response.audio.delta","delta":"AB=="}"#,
            BadBase64,
            "response.audio.delta: `delta` is not valid base64 (last symbol 'B' at offset 1 has stray bits; the text looks cut short or altered)",
        ),
        (
            r#"{"type":"response.audio.delta","delta":"AAAA="}"#,
            BadBase64,
            "response.audio.delta: `delta` is not valid base64 (invalid byte '=' at offset 4)",
        ),
        (
            r#"{"type":"response.audio.delta","delta":"AAD_fw=="}"#,
            BadBase64,
            "response.audio.delta: `delta` is not valid base64 (invalid byte '_' at offset 3)",
        ),
        (
            r#"{"type":"response.audio.delta","delta":"AAAA"}"#,
            OddByteCount,
            "response.audio.delta: decoded `delta` is 3 bytes, not a whole number of 2-byte samples",
        ),
        (
            r#"{"type":"session.dtmf"}"#,
            MissingField,
            "session.dtmf: missing required field `dtmf`",
        ),
        (
            r#"{"type":"session.dtmf","dtmf":""}"#,
            BadField,
            "session.dtmf: `dtmf` must not be empty",
        ),
        (
            r#"{"type":"session.dtmf","dtmf":123}"#,
            BadField,
            "session.dtmf: `dtmf` must be a string, got a whole number",
        ),
        (
            r#"{"type":"session.dtmf","dtmf":"12x#"}"#,
            BadDtmf,
            "session.dtmf: `dtmf` character 3 ('x') is not a DTMF digit (0-9 * # A-D)",
        ),
        (
            r#"{"type":"session.dtmf","dtmf":"1 2"}"#,
            BadDtmf,
            "session.dtmf: `dtmf` character 2 (' ') is not a DTMF digit (0-9 * # A-D)",
        ),
        (
            r#"{"type":"session.dtmf","dtmf":"E"}"#,
            BadDtmf,
            "session.dtmf: `dtmf` character 1 ('E') is not a DTMF digit (0-9 * # A-D)",
        ),
        (
            r#"{"type":"session.dtmf","dtmf":"1,2"}"#,
            BadDtmf,
            "session.dtmf: `dtmf` character 2 (',') is not a DTMF digit (0-9 * # A-D)",
        ),
        (
            r#"{"type":"session.hangup","immediate":"yes"}"#,
            BadField,
            "session.hangup: `immediate` must be true or false, got a string",
        ),
        (r#"{"type":"mark"}"#, MissingField, "mark: missing required field `name`"),
        (r#"{"type":"mark","name":""}"#, BadField, "mark: `name` must not be empty"),
        (
            r#"{"type":"mark","name":{"id":1}}"#,
            BadField,
            "mark: `name` must be a string, got an object",
        ),
        (
            r#"{"type":"session.transfer"}"#,
            MissingField,
            "session.transfer: missing required field `destination`",
        ),
        (
            r#"{"type":"session.transfer","destination":""}"#,
            BadField,
            "session.transfer: `destination` must not be empty",
        ),
        (
            r#"{"type":"session.transfer","destination":[]}"#,
            BadField,
            "session.transfer: `destination` must not be an empty array",
        ),
        (
            r#"{"type":"session.transfer","destination":["a",5]}"#,
            BadField,
            "session.transfer: `destination[1]` must be a string, got a whole number",
        ),
        (
            r#"{"type":"session.transfer","destination":["a",""]}"#,
            BadField,
            "session.transfer: `destination[1]` must not be empty",
        ),
        (
            r#"{"type":"session.transfer","destination":["a",null]}"#,
            BadField,
            "session.transfer: `destination[1]` must be a string, got null",
        ),
        (
            r#"{"type":"session.transfer","destination":{"number":"a"}}"#,
            BadField,
            "session.transfer: `destination` must be a string or an array of strings, got an object",
        ),
        (
            r#"{"type":"session.transfer","destination":"a","strategy":"parallel"}"#,
            BadField,
            "session.transfer: `strategy` must be \"simultaneous\" or \"sequential\", got \"parallel\"",
        ),
        (
            r#"{"type":"session.transfer","destination":"a","strategy":2}"#,
            BadField,
            "session.transfer: `strategy` must be a string, got a whole number",
        ),
        (
            r#"{"type":"session.transfer","destination":"a","timeout":"30"}"#,
            BadField,
            "session.transfer: `timeout` must be a whole number of seconds, got a string",
        ),
        (
            r#"{"type":"session.transfer","destination":"a","timeout":0}"#,
            BadField,
            "session.transfer: `timeout` must be at least 1 second, got 0",
        ),
        (
            r#"{"type":"session.transfer","destination":"a","timeout":-5}"#,
            BadField,
            "session.transfer: `timeout` must be a whole number of seconds, got a number",
        ),
        (
            r#"{"type":"session.transfer","destination":"a","timeout":2.5}"#,
            BadField,
            "session.transfer: `timeout` must be a whole number of seconds, got a number",
        ),
        (
            r#"{"type":"session.transfer","destination":"a","timeout":4294967296}"#,
            BadField,
            "session.transfer: `timeout` is too large: 4294967296 seconds",
        ),
        (
            r#"{"type":"session.transfer","destination":"a","mode":"tepid"}"#,
            BadField,
            "session.transfer: `mode` must be \"cold\" or \"warm\", got \"tepid\"",
        ),
        (
            r#"{"type":"session.transfer","destination":"a","mode":1}"#,
            BadField,
            "session.transfer: `mode` must be a string, got a whole number",
        ),
        (
            r#"{"type":"session.transfer","destination":"a","caller_id":15550003}"#,
            BadField,
            "session.transfer: `caller_id` must be a string, got a whole number",
        ),
        (
            r#"{"type":"session.transfer_ws"}"#,
            MissingField,
            "session.transfer_ws: missing required field `url`",
        ),
        (
            r#"{"type":"session.transfer_ws","url":""}"#,
            BadField,
            "session.transfer_ws: `url` must not be empty",
        ),
        (
            r#"{"type":"session.flow_transfer","flow":"sales"}"#,
            MissingField,
            "session.flow_transfer: missing required field `flow_id`",
        ),
        (
            r#"{"type":"session.flow_transfer","flow_id":7}"#,
            BadField,
            "session.flow_transfer: `flow_id` must be a string, got a whole number",
        ),
        (
            r#"{"type":"session.transfer_extension"}"#,
            MissingField,
            "session.transfer_extension: missing required field `extension`",
        ),
        (
            r#"{"type":"session.transfer_extension","extension":101}"#,
            BadField,
            "session.transfer_extension: `extension` must be a string, got a whole number",
        ),
    ];
    for (text, code, message) in cases {
        let mut audio = vec![1, 2];
        let err = match parse_command(text, &mut audio, MAX_MESSAGE_BYTES) {
            Err(err) => err,
            Ok(cmd) => panic!("{text}: accepted as {cmd:?}"),
        };
        assert_eq!(err.code, code, "{text}: {}", err.message);
        assert!(
            err.message.starts_with(message),
            "{text}:\n  got      {}\n  expected {message}",
            err.message
        );
        assert_eq!(err.to_string(), err.message);
        assert!(
            audio.is_empty(),
            "{text}: refused message left audio behind"
        );
    }
}

#[test]
fn oversized_messages_are_refused_before_parsing() {
    let text = r#"{"type":"audio.clear"}"#; // 22 bytes
    assert_eq!(parse_command(text, &mut Vec::new(), 22), Ok(Command::Clear));
    let err = parse_command(text, &mut Vec::new(), 21).expect_err("too large");
    assert_eq!(err.code, ErrorCode::MessageTooLarge);
    assert_eq!(err.message, "message is 22 bytes; the limit is 21");

    // The size check comes first, even for text that is not JSON.
    let junk = "x".repeat(MAX_MESSAGE_BYTES + 1);
    assert_eq!(
        parse(&junk).map_err(|e| e.code),
        Err(ErrorCode::MessageTooLarge)
    );

    // A delta just under the default limit is fine.
    let pcm = vec![0x55u8; (MAX_MESSAGE_BYTES - 64) / 4 * 3];
    let text = command_json(&Command::AudioDelta, &pcm);
    assert!(text.len() <= MAX_MESSAGE_BYTES);
    let mut audio = Vec::new();
    assert_eq!(
        parse_command(&text, &mut audio, MAX_MESSAGE_BYTES),
        Ok(Command::AudioDelta)
    );
    assert_eq!(audio, pcm);
}

#[test]
fn binary_frames_are_whole_samples_within_the_limit() {
    assert_eq!(check_binary_audio(&[], 4), Ok(()));
    assert_eq!(check_binary_audio(&[0; 4], 4), Ok(()));
    let err = check_binary_audio(&[0; 6], 4).expect_err("too large");
    assert_eq!(err.code, ErrorCode::MessageTooLarge);
    assert_eq!(err.message, "message is 6 bytes; the limit is 4");
    let err = check_binary_audio(&[0; 3], 4).expect_err("odd");
    assert_eq!(err.code, ErrorCode::OddByteCount);
    assert_eq!(
        err.message,
        "binary audio frame is 3 bytes, not a whole number of 2-byte samples"
    );
}

#[test]
fn dtmf_digits() {
    let valid: String = "0123456789*#ABCD".to_owned();
    for c in valid.chars() {
        assert!(is_valid_dtmf(c), "{c}");
    }
    for c in "abcdEe, +wW\0{}".chars().filter(|c| !valid.contains(*c)) {
        assert!(!is_valid_dtmf(c), "{c}");
    }
}

#[test]
fn commands_written_by_command_json_parse_back() {
    let pcm: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    let cases: Vec<(Command, &[u8], &str)> = vec![
        (
            Command::AudioDelta,
            &[0, 0, 0xff, 0x7f],
            r#"{"type":"response.audio.delta","delta":"AAD/fw=="}"#,
        ),
        (
            Command::AudioDelta,
            &[],
            r#"{"type":"response.audio.delta","delta":""}"#,
        ),
        (Command::AudioDelta, &pcm, ""),
        (Command::Clear, &[], r#"{"type":"audio.clear"}"#),
        (
            Command::Dtmf {
                digits: "123#".to_owned(),
            },
            &[],
            r#"{"type":"session.dtmf","dtmf":"123#"}"#,
        ),
        (
            Command::Hangup { immediate: false },
            &[],
            r#"{"type":"session.hangup"}"#,
        ),
        (
            Command::Hangup { immediate: true },
            &[],
            r#"{"type":"session.hangup","immediate":true}"#,
        ),
        (
            Command::Mark {
                name: "say \"hi\"\n".to_owned(),
            },
            &[],
            r#"{"type":"mark","name":"say \"hi\"\n"}"#,
        ),
        (
            transfer(&["0987654321"], TransferStrategy::Simultaneous),
            &[],
            r#"{"type":"session.transfer","destination":"0987654321"}"#,
        ),
        (
            transfer(&["a", "b", "c"], TransferStrategy::Simultaneous),
            &[],
            r#"{"type":"session.transfer","destination":["a","b","c"]}"#,
        ),
        (
            Command::Transfer {
                destinations: vec!["a".to_owned(), "b".to_owned()],
                strategy: TransferStrategy::Sequential,
                timeout_s: Some(15),
                caller_id: Some("+15550003".to_owned()),
                mode: TransferMode::Cold,
            },
            &[],
            r#"{"type":"session.transfer","destination":["a","b"],"strategy":"sequential","timeout":15,"caller_id":"+15550003"}"#,
        ),
        (
            Command::Transfer {
                destinations: vec!["a".to_owned()],
                strategy: TransferStrategy::Simultaneous,
                timeout_s: None,
                caller_id: None,
                mode: TransferMode::Warm,
            },
            &[],
            r#"{"type":"session.transfer","destination":"a","mode":"warm"}"#,
        ),
        (
            Command::TransferComplete,
            &[],
            r#"{"type":"session.transfer_complete"}"#,
        ),
        (
            Command::TransferWs {
                url: "wss://bot.example/ws?a=1&b=2".to_owned(),
            },
            &[],
            r#"{"type":"session.transfer_ws","url":"wss://bot.example/ws?a=1&b=2"}"#,
        ),
        (
            Command::FlowTransfer {
                flow_id: "sales_flow".to_owned(),
            },
            &[],
            r#"{"type":"session.flow_transfer","flow_id":"sales_flow"}"#,
        ),
        (
            Command::TransferExtension {
                extension: "101".to_owned(),
            },
            &[],
            r#"{"type":"session.transfer_extension","extension":"101"}"#,
        ),
    ];
    for (command, audio_in, expected_text) in cases {
        let text = command_json(&command, audio_in);
        if !expected_text.is_empty() {
            assert_eq!(text, expected_text);
        }
        let mut audio = Vec::new();
        assert_eq!(
            parse_command(&text, &mut audio, MAX_MESSAGE_BYTES),
            Ok(command.clone()),
            "{text}"
        );
        let expected_audio: &[u8] = if command == Command::AudioDelta {
            audio_in
        } else {
            &[]
        };
        assert_eq!(audio, expected_audio);
    }
}

#[test]
fn a_refusal_becomes_an_error_event_the_bot_can_read() {
    let err = parse(r#"{"type":"session.dtmf","dtmf":"9\"x"}"#).expect_err("bad digit");
    let mut out = String::new();
    write_event(&mut out, "MZ1", 12, &err.to_event());
    assert_eq!(
        parse_event(&out),
        Ok(BotEvent::Error {
            sequence_number: 12,
            stream_sid: "MZ1".to_owned(),
            code: "bad_dtmf".to_owned(),
            message: "session.dtmf: `dtmf` character 2 ('\"') is not a DTMF digit (0-9 * # A-D)"
                .to_owned(),
        })
    );
}

#[test]
fn unknown_type_echo_is_bounded() {
    let long_type = "x".repeat(10_000);
    let err = parse(&format!(r#"{{"type":"{long_type}"}}"#)).expect_err("unknown");
    assert_eq!(err.code, ErrorCode::UnknownType);
    assert!(err.message.len() < 400, "{}", err.message);
}

/// A poor man's fuzz run: every prefix of every valid message, and every valid
/// message with one byte swapped for a troublesome one, must give a command or an
/// error, never a panic, and never leave audio behind on error.
#[test]
fn truncated_and_mutated_messages_never_panic() {
    let mut seeds = documented_bot_messages();
    seeds.push(r#"{"type":"session.transfer","destination":["a","b"],"strategy":"sequential","timeout":15,"caller_id":"+1"}"#.to_owned());
    seeds.push(command_json(&Command::AudioDelta, &[1, 2, 3, 4, 5, 6]));
    let swaps = [
        b'"', b'\\', b'{', b'}', b'[', b',', b':', b'0', b'=', b'a', b' ', 0x00,
    ];
    let mut audio = Vec::new();
    let mut check = |text: &str| {
        audio.push(7);
        if parse_command(text, &mut audio, MAX_MESSAGE_BYTES).is_err() {
            assert!(audio.is_empty(), "{text}");
        }
    };
    for seed in &seeds {
        for cut in (0..seed.len()).filter(|&i| seed.is_char_boundary(i)) {
            check(&seed[..cut]);
        }
        for i in (0..seed.len()).filter(|&i| seed.as_bytes()[i].is_ascii()) {
            for &b in &swaps {
                let mut bytes = seed.clone().into_bytes();
                bytes[i] = b;
                if let Ok(text) = String::from_utf8(bytes) {
                    check(&text);
                }
            }
        }
    }
}

/// A delta in exactly the shape `command_json` writes is read without the JSON
/// parser; whatever the delta holds, the answer (audio or error) is the one the
/// same message gets in any other shape.
#[test]
fn the_bare_delta_shortcut_answers_as_the_parser_does() {
    let deltas = [
        "AAD/fw==",
        "AAD/fw",
        "",
        "AAD/",
        "AAD",
        "AAD!fw==",
        "AAD/fw=",
        "AAD/fx==",
        r"AAD\/fw==",
        r#"AA\"D"#,
        "AAD/fw==AAD/fw==",
        "AAEC",
    ];
    for delta in deltas {
        let bare = format!(r#"{{"type":"response.audio.delta","delta":"{delta}"}}"#);
        let spaced = format!(r#"{{ "type":"response.audio.delta","delta":"{delta}"}}"#);
        let (mut a, mut b) = (vec![1], vec![2]);
        let got = parse_command(&bare, &mut a, MAX_MESSAGE_BYTES);
        let want = parse_command(&spaced, &mut b, MAX_MESSAGE_BYTES);
        assert_eq!(got, want, "delta {delta:?}");
        assert_eq!(a, b, "delta {delta:?}");
        let (mut a, mut b) = (vec![1], vec![2]);
        assert_eq!(
            parse_command_with_sample_bytes(&bare, &mut a, MAX_MESSAGE_BYTES, 1),
            parse_command_with_sample_bytes(&spaced, &mut b, MAX_MESSAGE_BYTES, 1),
            "delta {delta:?}, 8-bit samples"
        );
        assert_eq!(a, b, "delta {delta:?}, 8-bit samples");
    }
    let mut audio = Vec::new();
    let big = format!(
        r#"{{"type":"response.audio.delta","delta":"{}"}}"#,
        "A".repeat(400)
    );
    assert_eq!(
        parse_command(&big, &mut audio, 100).unwrap_err().code,
        ErrorCode::MessageTooLarge
    );
}
