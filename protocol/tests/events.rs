//! Bridge → bot events (PROTOCOL.md section 2): exact text written, strict parsing,
//! and round trips.

use base64::Engine as _;
use protocol::{
    parse_event, write_event, BotEvent, Direction, ErrorCode, Event, EventParseError, MediaFormat,
    StartInfo, StopReason, TransferAttempt, TransferAttemptInfo,
};
use serde_json::json;

fn written(stream_sid: &str, sequence_number: u64, ev: &Event<'_>) -> String {
    let mut out = String::new();
    write_event(&mut out, stream_sid, sequence_number, ev);
    out
}

fn start_info() -> StartInfo {
    let custom = json!({
        // Sorted, so the expected text holds whether or not serde_json keeps
        // insertion order.
        "Voicechat_id": 42,
        "metadata": {"campaign": "spring", "tags": ["a", "b"]},
        "system_msg": "You are \"Ava\".\nBe brief.",
    });
    let serde_json::Value::Object(custom_parameters) = custom else {
        panic!("json! object is an object");
    };
    StartInfo {
        stream_sid: "MZ1".to_owned(),
        call_sid: "CA1".to_owned(),
        from: "+15550001".to_owned(),
        to: "+15550002".to_owned(),
        direction: Direction::Outbound,
        media_format: MediaFormat::default(),
        tracks: vec!["inbound".to_owned()],
        custom_parameters,
    }
}

const START_TEXT: &str = concat!(
    r#"{"event":"start","sequence_number":1,"stream_sid":"MZ1","start":{"stream_sid":"MZ1","call_sid":"CA1","#,
    r#""from":"+15550001","to":"+15550002","direction":"outbound","#,
    r#""media_format":{"encoding":"raw/slin","sample_rate":8000},"tracks":["inbound"],"#,
    r#""custom_parameters":{"Voicechat_id":42,"metadata":{"campaign":"spring","tags":["a","b"]},"#,
    r#""system_msg":"You are \"Ava\".\nBe brief."}}}"#
);

/// One row per event shape in PROTOCOL.md section 2, with the doc's example values:
/// what is written, the exact text, and what a bot parses back.
#[test]
fn every_event_shape_is_written_exactly_and_parses_back() {
    let info = start_info();
    let pcm: Vec<u8> = (0..320u16).map(|i| (i * 7) as u8).collect();
    let pcm_b64 = base64::engine::general_purpose::STANDARD.encode(&pcm);
    let media_text = format!(
        r#"{{"event":"media","sequence_number":2,"stream_sid":"MZ1","media":{{"chunk":1,"timestamp":"0","payload":"{pcm_b64}"}}}}"#
    );
    let sid = || "MZ1".to_owned();

    let rows: Vec<(Event<'_>, u64, String, BotEvent)> = vec![
        (
            Event::Connected,
            0,
            r#"{"event":"connected"}"#.to_owned(),
            BotEvent::Connected,
        ),
        (
            Event::Start(&info),
            1,
            START_TEXT.to_owned(),
            BotEvent::Start {
                sequence_number: 1,
                stream_sid: sid(),
                start: info.clone(),
            },
        ),
        (
            Event::Media {
                chunk: 1,
                timestamp_ms: 0,
                payload: &pcm,
            },
            2,
            media_text,
            BotEvent::Media {
                sequence_number: 2,
                stream_sid: sid(),
                chunk: 1,
                timestamp_ms: 0,
                payload: pcm.clone(),
            },
        ),
        (
            Event::Dtmf {
                digit: '1',
                duration_ms: 120,
            },
            3,
            r#"{"event":"dtmf","sequence_number":3,"stream_sid":"MZ1","dtmf":{"digit":"1","duration":"120"}}"#.to_owned(),
            BotEvent::Dtmf {
                sequence_number: 3,
                stream_sid: sid(),
                digit: '1',
                duration_ms: 120,
            },
        ),
        (
            Event::Mark {
                name: "intro_complete",
            },
            4,
            r#"{"event":"mark","sequence_number":4,"stream_sid":"MZ1","mark":{"name":"intro_complete"}}"#.to_owned(),
            BotEvent::Mark {
                sequence_number: 4,
                stream_sid: sid(),
                name: "intro_complete".to_owned(),
            },
        ),
        (
            Event::Clear,
            5,
            r#"{"event":"clear","sequence_number":5,"stream_sid":"MZ1"}"#.to_owned(),
            BotEvent::Clear {
                sequence_number: 5,
                stream_sid: sid(),
            },
        ),
        (
            Event::Error {
                code: ErrorCode::BadJson,
                message: "not valid JSON: EOF while parsing an object at line 1 column 1",
            },
            6,
            r#"{"event":"error","sequence_number":6,"stream_sid":"MZ1","error":{"code":"bad_json","message":"not valid JSON: EOF while parsing an object at line 1 column 1"}}"#.to_owned(),
            BotEvent::Error {
                sequence_number: 6,
                stream_sid: sid(),
                code: "bad_json".to_owned(),
                message: "not valid JSON: EOF while parsing an object at line 1 column 1".to_owned(),
            },
        ),
        (
            Event::TransferFailed {
                kind: "session.transfer",
                destination: "0987654321",
                reason: "busy",
                attempts: &[
                    TransferAttempt {
                        destination: "0987654321",
                        outcome: "busy",
                        sip_code: Some(486),
                    },
                    TransferAttempt {
                        destination: "0123",
                        outcome: "failed",
                        sip_code: None,
                    },
                ],
            },
            7,
            r#"{"event":"transfer_failed","sequence_number":7,"stream_sid":"MZ1","transfer":{"type":"session.transfer","destination":"0987654321","reason":"busy","attempts":[{"destination":"0987654321","outcome":"busy","sip_code":486},{"destination":"0123","outcome":"failed","sip_code":null}]}}"#.to_owned(),
            BotEvent::TransferFailed {
                sequence_number: 7,
                stream_sid: sid(),
                kind: "session.transfer".to_owned(),
                destination: "0987654321".to_owned(),
                reason: "busy".to_owned(),
                attempts: vec![
                    TransferAttemptInfo {
                        destination: "0987654321".into(),
                        outcome: "busy".into(),
                        sip_code: Some(486),
                    },
                    TransferAttemptInfo {
                        destination: "0123".into(),
                        outcome: "failed".into(),
                        sip_code: None,
                    },
                ],
            },
        ),
        (
            Event::TransferAnswered {
                kind: "session.transfer",
                destination: "+15558880001",
            },
            7,
            r#"{"event":"transfer_answered","sequence_number":7,"stream_sid":"MZ1","transfer":{"type":"session.transfer","destination":"+15558880001"}}"#.to_owned(),
            BotEvent::TransferAnswered {
                sequence_number: 7,
                stream_sid: sid(),
                kind: "session.transfer".to_owned(),
                destination: "+15558880001".to_owned(),
            },
        ),
        (
            Event::Stop {
                call_sid: "CA1",
                reason: StopReason::CallEnded,
            },
            8,
            r#"{"event":"stop","sequence_number":8,"stream_sid":"MZ1","stop":{"call_sid":"CA1","reason":"callended"}}"#.to_owned(),
            BotEvent::Stop {
                sequence_number: 8,
                stream_sid: sid(),
                call_sid: "CA1".to_owned(),
                reason: StopReason::CallEnded,
            },
        ),
    ];

    let mut seen = Vec::new();
    for (ev, seq, text, parsed) in &rows {
        assert_eq!(written("MZ1", *seq, ev), *text, "{} event", ev.name());
        let back = parse_event(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(back, *parsed);
        assert_eq!(back.name(), ev.name());
        let expected_seq = (!matches!(ev, Event::Connected)).then_some(*seq);
        assert_eq!(back.sequence_number(), expected_seq);
        seen.push(ev.name());
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            "clear",
            "connected",
            "dtmf",
            "error",
            "mark",
            "media",
            "start",
            "stop",
            "transfer_answered",
            "transfer_failed"
        ],
        "one row per event kind"
    );
}

#[test]
fn start_text_matches_serde_serialization_of_start_info() {
    let info = start_info();
    let text = written("MZ1", 1, &Event::Start(&info));
    let by_serde = serde_json::to_string(&info).expect("serializable");
    let body = text
        .strip_prefix(r#"{"event":"start","sequence_number":1,"stream_sid":"MZ1","start":"#)
        .and_then(|rest| rest.strip_suffix('}'));
    assert_eq!(body, Some(by_serde.as_str()));
}

#[test]
fn start_with_no_custom_parameters_and_inbound_direction() {
    let mut info = start_info();
    info.custom_parameters.clear();
    info.direction = Direction::Inbound;
    let text = written("MZ9", 1, &Event::Start(&info));
    assert!(
        text.ends_with(r#""direction":"inbound","media_format":{"encoding":"raw/slin","sample_rate":8000},"tracks":["inbound"],"custom_parameters":{}}}"#),
        "{text}"
    );
    let BotEvent::Start { start, .. } = parse_event(&text).expect("parses") else {
        panic!("not a start event");
    };
    assert_eq!(start, info);
}

#[test]
fn write_event_appends_without_clearing() {
    let mut out = String::from("previous;");
    write_event(&mut out, "MZ1", 5, &Event::Clear);
    write_event(&mut out, "MZ1", 6, &Event::Clear);
    assert_eq!(
        out,
        r#"previous;{"event":"clear","sequence_number":5,"stream_sid":"MZ1"}{"event":"clear","sequence_number":6,"stream_sid":"MZ1"}"#
    );
}

#[test]
fn every_stop_reason_is_written_and_parsed() {
    let expected = [
        "callended",
        "bot_hangup",
        "transferred",
        "transfer_ws",
        "flow_transfer",
        "busy",
        "no-answer",
        "failed",
        "max_duration",
        "shutdown",
        "error",
    ];
    let names: Vec<&str> = StopReason::ALL.iter().map(StopReason::as_str).collect();
    assert_eq!(names, expected);
    for &reason in StopReason::ALL {
        let text = written(
            "MZ1",
            3,
            &Event::Stop {
                call_sid: "CA1",
                reason,
            },
        );
        assert!(text.contains(&format!(r#""reason":"{reason}""#)), "{text}");
        assert!(matches!(parse_event(&text), Ok(BotEvent::Stop { reason: r, .. }) if r == reason));
    }
}

#[test]
fn strings_are_escaped_and_read_back_unchanged() {
    let nasty = "q\"uote \\back\\slash\nnew\rline\ttab \u{0}\u{1}\u{1f} é 😀 </script>";
    let escaped = r#""q\"uote \\back\\slash\nnew\rline\ttab \u0000\u0001\u001f é 😀 </script>""#;

    let text = written(nasty, 1, &Event::Mark { name: nasty });
    assert_eq!(
        text,
        format!(
            r#"{{"event":"mark","sequence_number":1,"stream_sid":{escaped},"mark":{{"name":{escaped}}}}}"#
        )
    );
    assert_eq!(
        parse_event(&text),
        Ok(BotEvent::Mark {
            sequence_number: 1,
            stream_sid: nasty.to_owned(),
            name: nasty.to_owned(),
        })
    );

    let text = written(
        "MZ1",
        2,
        &Event::Error {
            code: ErrorCode::BadField,
            message: nasty,
        },
    );
    assert!(text.contains(&format!(r#""message":{escaped}"#)), "{text}");
    assert!(matches!(parse_event(&text), Ok(BotEvent::Error { message, .. }) if message == nasty));

    let text = written(
        "MZ1",
        3,
        &Event::TransferFailed {
            kind: nasty,
            destination: nasty,
            reason: nasty,
            attempts: &[TransferAttempt {
                destination: nasty,
                outcome: nasty,
                sip_code: None,
            }],
        },
    );
    assert_eq!(
        parse_event(&text),
        Ok(BotEvent::TransferFailed {
            sequence_number: 3,
            stream_sid: "MZ1".to_owned(),
            kind: nasty.to_owned(),
            destination: nasty.to_owned(),
            reason: nasty.to_owned(),
            attempts: vec![TransferAttemptInfo {
                destination: nasty.to_owned(),
                outcome: nasty.to_owned(),
                sip_code: None,
            }],
        })
    );

    let text = written(
        "MZ1",
        4,
        &Event::Stop {
            call_sid: nasty,
            reason: StopReason::Error,
        },
    );
    assert!(matches!(parse_event(&text), Ok(BotEvent::Stop { call_sid, .. }) if call_sid == nasty));

    let mut info = start_info();
    info.from = nasty.to_owned();
    info.custom_parameters.insert(
        nasty.to_owned(),
        serde_json::Value::String(nasty.to_owned()),
    );
    let text = written("MZ1", 1, &Event::Start(&info));
    assert!(matches!(parse_event(&text), Ok(BotEvent::Start { start, .. }) if start == info));
}

/// Deterministic bytes (a small LCG) so failures reproduce.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn media_payload_survives_base64_for_many_sizes() {
    let sizes = (0..=64).chain([159, 160, 320, 321, 640, 960, 1919, 3840, 65_536]);
    let mut out = String::new();
    for (seed, len) in sizes.enumerate() {
        let pcm = noise(len, seed as u32);
        let chunk = seed as u64 + 1;
        let timestamp_ms = chunk.saturating_sub(1) * 20;
        out.clear();
        write_event(
            &mut out,
            "MZ1",
            chunk + 1,
            &Event::Media {
                chunk,
                timestamp_ms,
                payload: &pcm,
            },
        );
        let expected_b64 = base64::engine::general_purpose::STANDARD.encode(&pcm);
        assert!(
            out.contains(&format!(r#""payload":"{expected_b64}""#)),
            "len {len}"
        );
        match parse_event(&out) {
            Ok(BotEvent::Media {
                sequence_number,
                chunk: c,
                timestamp_ms: t,
                payload,
                ..
            }) => {
                assert_eq!((sequence_number, c, t), (chunk + 1, chunk, timestamp_ms));
                assert_eq!(payload, pcm, "len {len}");
            }
            other => panic!("len {len}: {other:?}"),
        }
    }
}

#[test]
fn media_numbers_at_their_limits() {
    let text = written(
        "MZ1",
        u64::MAX,
        &Event::Media {
            chunk: u64::MAX,
            timestamp_ms: u64::MAX,
            payload: &[],
        },
    );
    assert_eq!(
        text,
        format!(
            r#"{{"event":"media","sequence_number":{m},"stream_sid":"MZ1","media":{{"chunk":{m},"timestamp":"{m}","payload":""}}}}"#,
            m = u64::MAX
        )
    );
    assert!(matches!(
        parse_event(&text),
        Ok(BotEvent::Media { timestamp_ms: u64::MAX, ref payload, .. }) if payload.is_empty()
    ));
}

#[test]
fn every_dtmf_digit_round_trips() {
    for digit in "0123456789*#ABCD".chars() {
        let text = written(
            "MZ1",
            2,
            &Event::Dtmf {
                digit,
                duration_ms: u32::MAX,
            },
        );
        assert_eq!(
            parse_event(&text),
            Ok(BotEvent::Dtmf {
                sequence_number: 2,
                stream_sid: "MZ1".to_owned(),
                digit,
                duration_ms: u32::MAX,
            })
        );
    }
}

#[test]
fn every_error_code_travels_in_an_error_event() {
    let expected = [
        "bad_json",
        "unknown_type",
        "missing_field",
        "bad_field",
        "bad_base64",
        "odd_byte_count",
        "bad_dtmf",
        "message_too_large",
        "queue_full",
        "not_supported",
        "transfer_refused",
        "transfer_in_progress",
        "no_warm_transfer",
        "after_stop",
    ];
    let names: Vec<&str> = ErrorCode::ALL.iter().map(ErrorCode::as_str).collect();
    assert_eq!(names, expected);
    for &code in ErrorCode::ALL {
        assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        let text = written("MZ1", 9, &Event::Error { code, message: "m" });
        assert!(
            matches!(parse_event(&text), Ok(BotEvent::Error { code: c, .. }) if c == code.as_str())
        );
    }
}

#[test]
fn wire_enums_serialize_as_their_strings() {
    assert_eq!(
        serde_json::to_string(&StopReason::NoAnswer).ok().as_deref(),
        Some(r#""no-answer""#)
    );
    assert_eq!(
        serde_json::from_str::<StopReason>(r#""max_duration""#).ok(),
        Some(StopReason::MaxDuration)
    );
    assert!(serde_json::from_str::<StopReason>(r#""hungup""#).is_err());
    assert_eq!(
        serde_json::to_string(&ErrorCode::QueueFull).ok().as_deref(),
        Some(r#""queue_full""#)
    );
    assert_eq!(
        serde_json::from_str::<ErrorCode>(r#""after_stop""#).ok(),
        Some(ErrorCode::AfterStop)
    );
    assert_eq!(
        serde_json::to_string(&Direction::Inbound).ok().as_deref(),
        Some(r#""inbound""#)
    );
    assert_eq!(StopReason::parse("CALLENDED"), None);
}

/// Each malformed event and the error a strict bot-side parser gives for it.
#[test]
fn parse_event_is_strict() {
    use EventParseError as E;
    let missing = |event: &'static str, field: &str| E::MissingField {
        event,
        field: field.to_owned(),
    };
    let cases: Vec<(&str, EventParseError)> = vec![
        ("", E::BadJson(String::new())),
        ("{", E::BadJson(String::new())),
        ("[]", E::NotObject),
        (r#""connected""#, E::NotObject),
        (r#"{}"#, E::NoEventName),
        (r#"{"event":7}"#, E::NoEventName),
        (
            r#"{"event":"started"}"#,
            E::UnknownEvent("started".to_owned()),
        ),
        (r#"{"event":"Media"}"#, E::UnknownEvent("Media".to_owned())),
        (
            r#"{"event":"clear","stream_sid":"MZ1"}"#,
            missing("clear", "sequence_number"),
        ),
        (
            r#"{"event":"clear","sequence_number":1}"#,
            missing("clear", "stream_sid"),
        ),
        (
            r#"{"event":"media","sequence_number":2,"stream_sid":"MZ1"}"#,
            missing("media", "media"),
        ),
        (
            r#"{"event":"media","sequence_number":2,"stream_sid":"MZ1","media":{"chunk":1,"payload":""}}"#,
            missing("media", "media.timestamp"),
        ),
        (
            r#"{"event":"media","sequence_number":2,"stream_sid":"MZ1","media":{"chunk":1,"timestamp":"0"}}"#,
            missing("media", "media.payload"),
        ),
        (
            r#"{"event":"stop","sequence_number":2,"stream_sid":"MZ1","stop":{"reason":"busy"}}"#,
            missing("stop", "stop.call_sid"),
        ),
        (
            r#"{"event":"transfer_failed","sequence_number":2,"stream_sid":"MZ1","transfer":{"destination":"1","reason":"busy"}}"#,
            missing("transfer_failed", "transfer.type"),
        ),
        (
            r#"{"event":"error","sequence_number":2,"stream_sid":"MZ1","error":{"code":"bad_json"}}"#,
            missing("error", "error.message"),
        ),
    ];
    for (text, expected) in cases {
        let got = parse_event(text);
        match (&got, &expected) {
            (Err(E::BadJson(_)), E::BadJson(_)) => {}
            _ => assert_eq!(got, Err(expected), "{text}"),
        }
    }

    // Wrong JSON types and impossible values, reported by field path.
    let bad_field = [
        (
            r#"{"event":"clear","sequence_number":"1","stream_sid":"MZ1"}"#,
            "sequence_number",
        ),
        (
            r#"{"event":"clear","sequence_number":-1,"stream_sid":"MZ1"}"#,
            "sequence_number",
        ),
        (
            r#"{"event":"clear","sequence_number":1.5,"stream_sid":"MZ1"}"#,
            "sequence_number",
        ),
        (
            r#"{"event":"clear","sequence_number":1,"stream_sid":5}"#,
            "stream_sid",
        ),
        (
            r#"{"event":"media","sequence_number":2,"stream_sid":"S","media":"x"}"#,
            "media",
        ),
        (
            r#"{"event":"media","sequence_number":2,"stream_sid":"S","media":{"chunk":1,"timestamp":0,"payload":""}}"#,
            "media.timestamp",
        ),
        (
            r#"{"event":"media","sequence_number":2,"stream_sid":"S","media":{"chunk":1,"timestamp":"","payload":""}}"#,
            "media.timestamp",
        ),
        (
            r#"{"event":"media","sequence_number":2,"stream_sid":"S","media":{"chunk":1,"timestamp":"+5","payload":""}}"#,
            "media.timestamp",
        ),
        (
            r#"{"event":"media","sequence_number":2,"stream_sid":"S","media":{"chunk":"1","timestamp":"0","payload":""}}"#,
            "media.chunk",
        ),
        (
            r#"{"event":"dtmf","sequence_number":2,"stream_sid":"S","dtmf":{"digit":"1","duration":120}}"#,
            "dtmf.duration",
        ),
        (
            r#"{"event":"dtmf","sequence_number":2,"stream_sid":"S","dtmf":{"digit":"1","duration":"99999999999"}}"#,
            "dtmf.duration",
        ),
        (
            r#"{"event":"dtmf","sequence_number":2,"stream_sid":"S","dtmf":{"digit":"12","duration":"1"}}"#,
            "dtmf.digit",
        ),
        (
            r#"{"event":"dtmf","sequence_number":2,"stream_sid":"S","dtmf":{"digit":"x","duration":"1"}}"#,
            "dtmf.digit",
        ),
        (
            r#"{"event":"dtmf","sequence_number":2,"stream_sid":"S","dtmf":{"digit":1,"duration":"1"}}"#,
            "dtmf.digit",
        ),
        (
            r#"{"event":"stop","sequence_number":2,"stream_sid":"S","stop":{"call_sid":"C","reason":"hungup"}}"#,
            "stop.reason",
        ),
        (
            r#"{"event":"start","sequence_number":1,"stream_sid":"S","start":{"stream_sid":"S"}}"#,
            "start",
        ),
        (
            r#"{"event":"start","sequence_number":1,"stream_sid":"S","start":[]}"#,
            "start",
        ),
    ];
    for (text, field) in bad_field {
        match parse_event(text) {
            Err(E::BadField { field: f, .. }) => assert_eq!(f, field, "{text}"),
            other => panic!("{text}: expected bad field `{field}`, got {other:?}"),
        }
    }

    let bad_b64 = r#"{"event":"media","sequence_number":2,"stream_sid":"S","media":{"chunk":1,"timestamp":"0","payload":"AA!="}}"#;
    let err = parse_event(bad_b64).expect_err("bad base64");
    assert_eq!(
        err.to_string(),
        "`media` event: `media.payload` is not valid base64 (invalid byte '!' at offset 2)"
    );
}

#[test]
fn parse_event_messages_are_readable() {
    let err = parse_event(r#"{"event":"media","sequence_number":2,"stream_sid":"S","media":{"chunk":1,"timestamp":0,"payload":""}}"#)
        .expect_err("timestamp must be a string");
    assert_eq!(
        err.to_string(),
        "`media` event: field `media.timestamp` must be a string, got a number"
    );
    let err = parse_event(r#"{"event":"stop","sequence_number":2,"stream_sid":"S","stop":{}}"#)
        .expect_err("missing call_sid");
    assert_eq!(
        err.to_string(),
        "`stop` event: missing field `stop.call_sid`"
    );
}

#[test]
fn parse_event_ignores_extra_fields() {
    let text = r#"{"event":"mark","sequence_number":4,"stream_sid":"MZ1","mark":{"name":"x","extra":1},"track":"inbound"}"#;
    assert_eq!(
        parse_event(text),
        Ok(BotEvent::Mark {
            sequence_number: 4,
            stream_sid: "MZ1".to_owned(),
            name: "x".to_owned(),
        })
    );
    assert_eq!(
        parse_event(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#),
        Ok(BotEvent::Connected)
    );
}

/// A poor man's fuzz run over the bot-side parser: every prefix and single-byte
/// mutation of each valid event gives an event or an error, never a panic.
#[test]
fn truncated_and_mutated_events_never_panic() {
    let info = start_info();
    let events = [
        Event::Start(&info),
        Event::Media {
            chunk: 1,
            timestamp_ms: 20,
            payload: &[1, 2, 3, 4],
        },
        Event::Dtmf {
            digit: '#',
            duration_ms: 80,
        },
        Event::Stop {
            call_sid: "CA1",
            reason: StopReason::NoAnswer,
        },
        Event::TransferFailed {
            kind: "session.transfer",
            destination: "1",
            reason: "busy",
            attempts: &[],
        },
    ];
    let swaps = [
        b'"', b'\\', b'{', b'}', b'[', b',', b':', b'0', b'-', b'=', b' ',
    ];
    for ev in &events {
        let seed = written("MZ1", 2, ev);
        for cut in (0..seed.len()).filter(|&i| seed.is_char_boundary(i)) {
            let _ = parse_event(&seed[..cut]);
        }
        for i in (0..seed.len()).filter(|&i| seed.as_bytes()[i].is_ascii()) {
            for &b in &swaps {
                let mut bytes = seed.clone().into_bytes();
                bytes[i] = b;
                if let Ok(text) = String::from_utf8(bytes) {
                    let _ = parse_event(&text);
                }
            }
        }
    }
}
