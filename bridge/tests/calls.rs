//! End to end, over real sockets: REST API → engine → simulated phone, and a
//! real WebSocket bot on loopback. Each test checks what a user would notice.

mod common;

use std::time::Duration;

use codecs::pcm::find_delay;
use common::*;
use protocol::{BotEvent, StopReason};
use serde_json::json;

/// The phone's speech comes back from an echo bot: found in the recording by
/// cross-correlation, less than 200 ms late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_bot_call_is_recorded_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        // Echo every media chunk; hang up after 5 s of call.
        while let Some(ev) = c.next_event(5 * SEC).await {
            if let BotEvent::Media { chunk, payload, .. } = ev {
                let samples: Vec<i16> = payload
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                c.send_audio(&samples).await;
                if chunk == 250 {
                    c.send(r#"{"type":"session.hangup"}"#).await;
                }
            }
        }
        c
    })
    .await;

    let logid = dial(
        bridge.addr,
        json!({
            "customer_no": "+9991 0001",
            "wss_url": bot.url(),
            "wss_header": "Authorization: Bearer bot-secret\nX-Tenant: acme",
            "system_msg": "You are a helpful assistant.",
            "sttlanguage_code": "en-IN",
            "text": "Hi there",
            "Voicechat_id": "4821",
        }),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["call_state"], "completed", "{rec}");
    assert_eq!(rec["call_status"], "answered");
    assert_eq!(rec["end_reason"], "bot_hangup");
    assert_eq!(rec["client_no"], "+99910001");
    let duration = rec["call_duration"].as_i64().unwrap();
    assert!((4..=7).contains(&duration), "duration {duration} s");

    let conns = bot.finished(1, 10 * SEC).await;
    let c = &conns[0];
    assert!(c
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("authorization") && v == "Bearer bot-secret"));
    assert!(c
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("x-tenant") && v == "acme"));
    assert_eq!(c.events[0], BotEvent::Connected);
    match &c.events[1] {
        BotEvent::Start { start, .. } => {
            assert_eq!(start.call_sid, rec["call_sid"].as_str().unwrap());
            assert_eq!(start.to, "+99910001");
            assert_eq!(start.from, "+15550100000");
            assert_eq!(
                start.custom_parameters["system_msg"],
                "You are a helpful assistant."
            );
            assert_eq!(start.custom_parameters["sttlanguage_code"], "en-IN");
            assert_eq!(start.custom_parameters["text"], "Hi there");
            assert_eq!(start.custom_parameters["Voicechat_id"], "4821");
            assert_eq!(start.media_format.sample_rate, 8000);
        }
        e => panic!("second event should be start, got {e:?}"),
    }
    assert_stream_contiguous(&c.events);
    match c.events.last().unwrap() {
        BotEvent::Stop { reason, .. } => assert_eq!(*reason, StopReason::BotHangup),
        e => panic!("last event {e:?}"),
    }

    let pcm = recording(bridge.addr, &rec).await;
    assert_eq!((pcm.sample_rate, pcm.channels), (8000, 2));
    // The recording is behind the API's auth.
    let url = rec["recording_url"].as_str().unwrap();
    let path = &url[url.find("/recordings/").unwrap()..];
    let (status, _) = http(bridge.addr, "GET", path, None, None).await;
    assert_eq!(status, 401, "no recording without the token");
    let caller = pcm.channel(0);
    let heard = pcm.channel(1);
    // Cut the phone's speech into 250 ms windows and look for each one in what
    // the phone heard. A loaded machine can delay a few echoed frames (the
    // playout queue then fills a gap with silence), so each window is checked
    // on its own rather than one long stretch.
    let first = caller
        .iter()
        .position(|&s| s.unsigned_abs() > 500)
        .expect("the phone spoke");
    let mut found = 0;
    let mut tried = 0;
    let mut lags = vec![];
    for start in (first..first + 20_000).step_by(2000) {
        let window = &caller[start..start + 2000];
        if codecs::pcm::rms(window) < 300.0 {
            continue; // a pause between words says nothing
        }
        tried += 1;
        let (lag, corr) = find_delay(&heard[start..], window, 1600);
        if corr > 0.9 {
            found += 1;
            lags.push(lag as f64 / 8.0);
        }
    }
    println!("echo: {found} of {tried} speech windows found, delays {lags:?} ms");
    assert!(tried >= 5, "enough speech to check ({tried} windows)");
    assert!(
        found * 10 >= tried * 8,
        "the phone's speech is in the recording, echoed back less than 200 ms later: {found} of {tried} windows"
    );
    bridge.stop().await;
}

/// Marks come back after their audio, clear stops audio and returns marks
/// first, and a goodbye queued before `session.hangup` is heard whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_clear_and_hangup_drain() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        // 0.5 s of audio then a mark: it must come back after 25 frames played.
        c.send_audio(&[1111; 4000]).await;
        c.send(r#"{"type":"mark","name":"half_second"}"#).await;
        let mut media_before_mark = 0;
        loop {
            match c.next_event(5 * SEC).await.expect("events") {
                BotEvent::Media { .. } => media_before_mark += 1,
                BotEvent::Mark { name, .. } => {
                    assert_eq!(name, "half_second");
                    break;
                }
                e => panic!("unexpected {e:?}"),
            }
        }
        assert!(
            (24..=40).contains(&media_before_mark),
            "mark came back after {media_before_mark} frames; its audio is 25 frames"
        );
        // 3 s of audio and two marks, then a clear after 10 frames.
        c.send_audio(&[2222; 12_000]).await;
        c.send(r#"{"type":"mark","name":"a"}"#).await;
        c.send_audio(&[2222; 12_000]).await;
        c.send(r#"{"type":"mark","name":"b"}"#).await;
        for _ in 0..10 {
            c.until("media", 5 * SEC).await;
        }
        c.send(r#"{"type":"audio.clear"}"#).await;
        let mut after_clear = vec![];
        loop {
            let ev = c.next_event(5 * SEC).await.expect("events");
            if ev.name() == "media" {
                continue;
            }
            after_clear.push(ev.clone());
            if ev.name() == "clear" {
                break;
            }
        }
        let names: Vec<String> = after_clear
            .iter()
            .map(|e| match e {
                BotEvent::Mark { name, .. } => format!("mark:{name}"),
                e => e.name().to_string(),
            })
            .collect();
        assert_eq!(names, ["mark:a", "mark:b", "clear"]);
        // A 0.4 s goodbye, then hang up: it must be heard whole.
        c.send_audio(&[3333; 3200]).await;
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(5 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910002", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup");
    let conns = bot.finished(1, 10 * SEC).await;
    let c = &conns[0];
    assert_stream_contiguous(&c.events);
    match c.events.last().unwrap() {
        BotEvent::Stop { reason, .. } => assert_eq!(*reason, StopReason::BotHangup),
        e => panic!("last event {e:?}"),
    }

    let heard = recording(bridge.addr, &rec).await.channel(1);
    let count = |v: i16| heard.iter().filter(|&&s| s == v).count();
    assert_eq!(count(1111), 4000, "the first audio played whole");
    let played = count(2222);
    assert!(
        (8 * 160..=14 * 160).contains(&played),
        "audio stopped at the clear: {played} samples played, about 1600 before it"
    );
    let last_2222 = heard.iter().rposition(|&s| s == 2222).unwrap();
    let first_3333 = heard.iter().position(|&s| s == 3333).unwrap();
    assert!(last_2222 < first_3333);
    assert_eq!(count(3333), 3200, "the goodbye was heard whole");
    bridge.stop().await;
}

/// DTMF both ways: the phone's keys reach the bot once each; the bot's keys
/// reach the phone as tones it detects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        c.send(r#"{"type":"session.dtmf","dtmf":"59#"}"#).await;
        let mut digits = String::new();
        while digits.len() < 4 {
            if let BotEvent::Dtmf {
                digit, duration_ms, ..
            } = c.until("dtmf", 5 * SEC).await
            {
                assert!(duration_ms > 0);
                digits.push(digit);
            }
        }
        assert_eq!(digits, "1234");
        // Give the phone a moment to hear the last key's silence, then hang up.
        for _ in 0..25 {
            c.until("media", 5 * SEC).await;
        }
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(5 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99951234", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    assert_eq!(rec["dtmf_input"], "1234");
    assert_eq!(
        rec["phone"]["heard_dtmf"], "59#",
        "the virtual phone detected the bot's keys: {rec}"
    );
    let conns = bot.finished(1, 10 * SEC).await;
    assert_eq!(conns[0].count("dtmf"), 4, "each key reported once");
    // The recording holds the tones too.
    let heard = recording(bridge.addr, &rec).await.channel(1);
    let mut det = codecs::dtmf::Detector::new();
    let mut got = vec![];
    det.push(&heard, &mut got);
    assert_eq!(got, vec!['5', '9', '#']);
    // Both ways counted on /metrics.
    let (_, body) = http(bridge.addr, "GET", "/metrics", Some(TOKEN), None).await;
    let text = String::from_utf8(body).unwrap();
    for line in [
        "bridge_dtmf_total{direction=\"to_bot\"} 4",
        "bridge_dtmf_total{direction=\"from_bot\"} 3",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }
    bridge.stop().await;
}

/// The example echo bot from `examples/` answers each key with the same key and
/// hangs up on `#`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_echo_bot_hangs_up_on_hash() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(examples::serve_echo(listener));
    // +99970… is the test config's phone that presses 1, 2, # after 0.6 s.
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+999700", "wss_url": url, "connect_ws_after_answer": "0"}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["call_state"], "completed", "{rec}");
    assert_eq!(rec["end_reason"], "bot_hangup");
    assert_eq!(rec["dtmf_input"], "12#");
    assert_eq!(rec["phone"]["heard_dtmf"], "12#", "{rec}");
    bridge.stop().await;
}

/// Busy, no answer and network failure end with those outcomes, and a bot
/// connected before the answer gets `stop` with the outcome as reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_outcomes_reach_the_log_and_the_bot() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let bot = TestBot::listener(10 * SEC).await;
    let cases = [
        ("+99920001", "busy", "busy", Some(StopReason::Busy)),
        (
            "+99930001",
            "no-answer",
            "no_answer",
            Some(StopReason::NoAnswer),
        ),
        ("+99940001", "failed", "failed", Some(StopReason::Failed)),
    ];
    let mut ids = vec![];
    for (number, ..) in &cases {
        ids.push(
            dial(
                bridge.addr,
                json!({"customer_no": number, "wss_url": bot.url(), "connect_ws_after_answer": "0"}),
            )
            .await,
        );
    }
    for ((number, state, status, _), id) in cases.iter().zip(&ids) {
        let rec = wait_final(bridge.addr, *id, 10 * SEC).await;
        assert_eq!(rec["call_state"], *state, "{number}: {rec}");
        assert_eq!(rec["call_status"], *status, "{number}");
        assert_eq!(rec["call_duration"], 0);
        assert_eq!(
            rec["recording_url"], "",
            "no recording for an unanswered call"
        );
    }
    // Every bot connected before the answer hears how its call ended, even one
    // still shaking hands when the call failed (the +9994 phone fails at 100 ms).
    let conns = bot.finished(3, 10 * SEC).await;
    let mut reasons: Vec<StopReason> = conns
        .iter()
        .filter_map(|c| match c.events.last() {
            Some(BotEvent::Stop { reason, .. }) => Some(*reason),
            _ => None,
        })
        .collect();
    reasons.sort_by_key(|r| r.as_str());
    assert_eq!(
        reasons,
        vec![StopReason::Busy, StopReason::Failed, StopReason::NoAnswer]
    );
    for c in &conns {
        assert_eq!(c.events.len(), 2, "connected, then stop: {:?}", c.events);
        assert_eq!(c.events[0], BotEvent::Connected);
        assert_eq!(c.events[1].sequence_number(), Some(1));
    }
    bridge.stop().await;
}

/// An unreachable bot: the call fails with reason `bot_unreachable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_bot_fails_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for after_answer in ["1", "0"] {
        let logid = dial(
            bridge.addr,
            json!({"customer_no": "+99910003", "wss_url": format!("ws://{closed}/"), "connect_ws_after_answer": after_answer}),
        )
        .await;
        let rec = wait_final(bridge.addr, logid, 10 * SEC).await;
        assert_eq!(rec["call_state"], "failed", "{rec}");
        assert_eq!(rec["call_status"], "failed");
        assert_eq!(rec["end_reason"], "bot_unreachable");
    }
    bridge.stop().await;
}

/// Malformed bot messages each get an `error` event; media keeps flowing and
/// the call stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bot_messages_get_errors_and_the_call_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        let bad = [
            ("{this is not json", "bad_json"),
            (r#"{"type":"response.audio.teleport"}"#, "unknown_type"),
            (
                r#"{"type":"response.audio.delta","delta":"%%%%"}"#,
                "bad_base64",
            ),
            (
                r#"{"type":"response.audio.delta","delta":"AAAA"}"#,
                "odd_byte_count",
            ),
            (
                r#"{"type":"session.transfer","destination":"+15551230000","strategy":"random"}"#,
                "bad_field",
            ),
        ];
        for (msg, code) in bad {
            c.send(msg).await;
            match c.until("error", 5 * SEC).await {
                BotEvent::Error {
                    code: got, message, ..
                } => {
                    assert_eq!(got, code, "for {msg}");
                    assert!(!message.is_empty());
                }
                _ => unreachable!(),
            }
            // Media keeps flowing after each refusal.
            c.until("media", 5 * SEC).await;
        }
        // An odd-sized binary frame is refused too.
        c.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
            0u8;
            3
        ]))
        .await
        .unwrap();
        match c.until("error", 5 * SEC).await {
            BotEvent::Error { code, .. } => assert_eq!(code, "odd_byte_count"),
            _ => unreachable!(),
        }
        for _ in 0..10 {
            c.until("media", 5 * SEC).await;
        }
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(5 * SEC).await;
        c
    })
    .await;
    use futures::SinkExt as _;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910004", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["call_state"], "completed");
    assert_eq!(
        rec["end_reason"], "bot_hangup",
        "the call stayed up until the bot hung up"
    );
    let conns = bot.finished(1, 10 * SEC).await;
    assert_eq!(conns[0].count("error"), 6);
    assert_stream_contiguous(&conns[0].events);
    bridge.stop().await;
}

/// The phone hangs up: the bot gets `stop` with reason `callended` and the
/// socket is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_hangup_stops_the_bot() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = bridge::config::Config::parse(
        "[[carrier.phones]]\nprefix = \"+99980\"\nring_ms = 100\nhangup_after_ms = 1000\n",
    )
    .unwrap();
    let bridge = start_bridge_with(dir.path(), cfg).await;
    let bot = TestBot::listener(10 * SEC).await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+999800", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 10 * SEC).await;
    assert_eq!(rec["call_state"], "completed");
    assert_eq!(rec["end_reason"], "callended");
    let conns = bot.finished(1, 10 * SEC).await;
    let evs = &conns[0].events;
    match evs.last().unwrap() {
        BotEvent::Stop {
            reason, call_sid, ..
        } => {
            assert_eq!(*reason, StopReason::CallEnded);
            assert_eq!(call_sid, rec["call_sid"].as_str().unwrap());
        }
        e => panic!("last event {e:?}"),
    }
    let media = conns[0].count("media");
    assert!(
        (40..=55).contains(&media),
        "about 1 s of media: {media} chunks"
    );
    // The operator's counters saw the same frames.
    let (_, body) = http(bridge.addr, "GET", "/metrics", None, None).await;
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains(&format!("bridge_media_frames_to_bot_total {media}\n")),
        "{text}"
    );
    assert!(text.contains("bridge_calls_active 0\n"), "{text}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_live_calls_with_reason_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let bot = TestBot::listener(10 * SEC).await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910005", "wss_url": bot.url()}),
    )
    .await;
    // Wait until media flows.
    let deadline = tokio::time::Instant::now() + 5 * SEC;
    while call_log(bridge.addr, logid).await["call_state"] != "in-progress" {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let engine = bridge.engine.clone();
    bridge.stop().await;
    let rec = engine.store().call(logid).unwrap().unwrap();
    assert_eq!(rec.state.as_str(), "completed");
    assert_eq!(rec.end_reason.as_deref(), Some("shutdown"));
    let conns = bot.finished(1, 10 * SEC).await;
    match conns[0].events.last().unwrap() {
        BotEvent::Stop { reason, .. } => assert_eq!(*reason, StopReason::Shutdown),
        e => panic!("last event {e:?}"),
    }
}
