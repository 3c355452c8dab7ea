//! Checks on the events one bot session received, in order (PROTOCOL.md §2).

use protocol::BotEvent;

/// One way a stream breaks the contract, with the index of the event at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {index} ({event}): {problem}")]
pub struct Violation {
    /// 0-based position of the event in the stream.
    pub index: usize,
    /// The event's name.
    pub event: &'static str,
    /// What is wrong, for a person.
    pub problem: String,
}

/// Checks a whole session's events:
/// - `connected` comes first, once;
/// - `start` comes once, before any `media`, `dtmf`, `mark` or `clear`;
/// - every event after `connected` has `sequence_number` 1, 2, 3, … with no gap;
/// - every event carries the same `stream_sid` as `start`;
/// - `media` `chunk` counts 1, 2, 3, … and `timestamp` is `(chunk - 1) * 20` ms, each
///   payload 20 ms of 8 kHz PCM16 (320 bytes);
/// - nothing follows `stop`.
///
/// Returns every violation found (empty when the stream conforms).
pub fn check_stream(events: &[BotEvent]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut bad = |index: usize, e: &BotEvent, problem: String| {
        out.push(Violation {
            index,
            event: e.name(),
            problem,
        })
    };
    let mut started = false;
    let mut stopped = false;
    let mut next_seq = 1u64;
    let mut next_chunk = 1u64;
    let mut stream: Option<String> = None;
    for (i, e) in events.iter().enumerate() {
        if stopped {
            bad(i, e, "an event after `stop`".into());
            continue;
        }
        match e {
            BotEvent::Connected => {
                if i != 0 {
                    bad(i, e, "`connected` must be the first event, once".into());
                }
                continue;
            }
            _ if i == 0 => bad(i, e, "the first event must be `connected`".into()),
            _ => {}
        }
        if let Some(seq) = e.sequence_number() {
            if seq != next_seq {
                bad(i, e, format!("sequence_number {seq}, expected {next_seq}"));
            }
            next_seq = seq + 1;
        }
        if let (Some(sid), Some(want)) = (e.stream_sid(), stream.as_deref()) {
            if sid != want {
                bad(i, e, format!("stream_sid {sid:?}, but start said {want:?}"));
            }
        }
        match e {
            BotEvent::Start { stream_sid, .. } => {
                if started {
                    bad(i, e, "a second `start`".into());
                }
                started = true;
                stream = Some(stream_sid.clone());
            }
            BotEvent::Stop { .. } => stopped = true,
            BotEvent::Error { .. } | BotEvent::TransferFailed { .. } => {}
            _ if !started => bad(i, e, "before `start`".into()),
            _ => {}
        }
        if let BotEvent::Media {
            chunk,
            timestamp_ms,
            payload,
            ..
        } = e
        {
            if *chunk != next_chunk {
                bad(i, e, format!("chunk {chunk}, expected {next_chunk}"));
            }
            let want_ts = chunk.saturating_sub(1) * 20;
            if *timestamp_ms != want_ts {
                bad(
                    i,
                    e,
                    format!("timestamp {timestamp_ms} ms for chunk {chunk}, expected {want_ts}"),
                );
            }
            if payload.len() != 320 {
                bad(
                    i,
                    e,
                    format!("payload of {} bytes, expected 320 (20 ms)", payload.len()),
                );
            }
            next_chunk = chunk + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<BotEvent> {
        text.lines()
            .map(|l| protocol::parse_event(l).unwrap())
            .collect()
    }

    /// Base64 of 320 zero bytes (20 ms of silence).
    fn payload() -> String {
        format!("{}AAA=", "A".repeat(424))
    }

    fn good() -> String {
        let start = r#"{"event":"start","sequence_number":1,"stream_sid":"MZ1","start":{"stream_sid":"MZ1","call_sid":"CA1","from":"+1555","to":"+9991","direction":"outbound","media_format":{"encoding":"raw/slin","sample_rate":8000},"tracks":["inbound"],"custom_parameters":{}}}"#;
        let payload = payload();
        let media = |seq: u64, chunk: u64| {
            format!(
                r#"{{"event":"media","sequence_number":{seq},"stream_sid":"MZ1","media":{{"chunk":{chunk},"timestamp":"{}","payload":"{payload}"}}}}"#,
                (chunk - 1) * 20
            )
        };
        [
            r#"{"event":"connected"}"#.to_string(),
            start.to_string(),
            media(2, 1),
            media(3, 2),
            r#"{"event":"mark","sequence_number":4,"stream_sid":"MZ1","mark":{"name":"m"}}"#.into(),
            media(5, 3),
            r#"{"event":"stop","sequence_number":6,"stream_sid":"MZ1","stop":{"call_sid":"CA1","reason":"callended"}}"#.into(),
        ]
        .join("\n")
    }

    #[test]
    fn a_good_stream_passes() {
        assert_eq!(check_stream(&lines(&good())), vec![]);
    }

    #[test]
    fn a_skipped_sequence_number_is_caught() {
        let text = good().replace(r#""sequence_number":3"#, r#""sequence_number":4"#);
        let v = check_stream(&lines(&text));
        assert_eq!(v[0].index, 3);
        assert!(
            v[0].problem.contains("sequence_number 4, expected 3"),
            "{v:?}"
        );
    }

    #[test]
    fn a_timestamp_gap_and_events_after_stop_are_caught() {
        let text = good().replace(
            r#""chunk":2,"timestamp":"20""#,
            r#""chunk":2,"timestamp":"40""#,
        );
        let v = check_stream(&lines(&text));
        assert!(
            v[0].problem.contains("timestamp 40 ms for chunk 2"),
            "{v:?}"
        );
        let mut text = good();
        text.push_str("\n{\"event\":\"clear\",\"sequence_number\":7,\"stream_sid\":\"MZ1\"}");
        let v = check_stream(&lines(&text));
        assert_eq!(v.len(), 1);
        assert!(v[0].problem.contains("after `stop`"));
    }

    #[test]
    fn media_before_start_is_caught() {
        let all = lines(&good());
        let reordered = vec![all[0].clone(), all[2].clone(), all[1].clone()];
        let v = check_stream(&reordered);
        assert!(v.iter().any(|v| v.problem == "before `start`"), "{v:?}");
    }
}
