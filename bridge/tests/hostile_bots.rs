//! Bots that misbehave must not cost the bridge without bound. Regression
//! test for a bot that floods malformed messages (measured from outside
//! before the fix: RSS 13 MB → 505 MB in 4 s, an `error` event queued per
//! message): errors are budgeted, the rest counted on `/metrics`, and the
//! call goes on.

mod common;

use std::time::Duration;

use common::*;
use futures::SinkExt;
use protocol::BotEvent;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Bad messages the bot sends.
const N: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_flooding_bad_messages_gets_budgeted_errors_and_keeps_its_call() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        // 20,000 bad messages as fast as the socket takes them, without
        // reading anything meanwhile.
        for _ in 0..N {
            c.ws.feed(Message::text("{not json")).await.unwrap();
        }
        c.ws.flush().await.unwrap();
        // Then it reads for a second, and hangs up.
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        while tokio::time::Instant::now() < until {
            c.next_event(5 * SEC).await;
        }
        c.send(r#"{"type":"session.hangup","immediate":true}"#)
            .await;
        c.drain(5 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 30 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "the call went on: {rec}");
    let conns = bot.finished(1, 10 * SEC).await;
    let c = &conns[0];
    assert_stream_contiguous(&c.events);
    let errors = c.count("error");
    let media = c.count("media");
    assert!(
        errors >= 50 && errors <= 50 + media + 5,
        "{errors} error events for 20,000 bad messages over {media} media chunks"
    );
    assert!(matches!(c.events.last(), Some(BotEvent::Stop { .. })));
    let (_, body) = http(bridge.addr, "GET", "/metrics", None, None).await;
    let text = String::from_utf8(body).unwrap();
    let dropped: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("bridge_bot_errors_dropped_total "))
        .expect("the counter is on /metrics")
        .trim()
        .parse()
        .unwrap();
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("bridge_bot_messages_refused_total "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(refused, N as u64, "every bad message was refused");
    assert_eq!(dropped, refused - errors as u64, "the rest were counted");
    bridge.stop().await;
}

/// A bot that floods audio (150 s of it at once, far past the playout cap of
/// 5 s): the queue stays at its cap, the rest is refused with budgeted
/// `queue_full` errors, and the call goes on until the bot hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_flooding_audio_is_held_to_the_playout_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config();
    cfg.bot.max_playout_secs = 5;
    let bridge = start_bridge_with(dir.path(), cfg).await;
    let addr = bridge.addr;
    let bot = TestBot::spawn(move |mut c| async move {
        c.until("start", 5 * SEC).await;
        let second = vec![1000i16; 8000];
        for _ in 0..150 {
            c.send_audio(&second).await;
        }
        // Queued: at most the cap (5 s of samples).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let queued = metric(addr, "bridge_playout_queued_samples").await;
        assert!(queued <= 5 * 8000, "{queued} samples queued");
        assert!(queued >= 4 * 8000, "{queued} samples queued");
        for _ in 0..50 {
            c.next_event(5 * SEC).await;
        }
        c.send(r#"{"type":"session.hangup","immediate":true}"#)
            .await;
        c.drain(5 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 30 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "the call went on: {rec}");
    let conns = bot.finished(1, 10 * SEC).await;
    let full: Vec<_> = conns[0]
        .events
        .iter()
        .filter(|e| matches!(e, BotEvent::Error { code, .. } if code == "queue_full"))
        .collect();
    assert!(
        !full.is_empty() && full.len() <= 145,
        "{} queue_full errors",
        full.len()
    );
    assert_eq!(
        metric(bridge.addr, "bridge_playout_queued_samples").await,
        0
    );
    bridge.stop().await;
}

/// A 16 MiB message: refused with `message_too_large` (the protocol's limit
/// is 1 MiB), and the call goes on; a frame past what the socket accepts at
/// all loses the bot (the socket is closed), it never grows a buffer without
/// bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_bot_messages_are_refused_or_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        let big = format!(
            r#"{{"type":"mark","mark":{{"name":"{}"}}}}"#,
            "x".repeat(16 << 20)
        );
        c.ws.send(Message::text(big)).await.unwrap();
        let refused = loop {
            match c.next_event(10 * SEC).await.expect("the socket stays open") {
                BotEvent::Error { code, .. } => break code,
                _ => continue,
            }
        };
        assert_eq!(refused, "message_too_large");
        // Still its call: media keeps coming.
        for _ in 0..10 {
            c.until("media", SEC).await;
        }
        // 40 MiB: past the socket's own limit.
        let _ = c.ws.send(Message::binary(vec![0u8; 40 << 20])).await;
        c.drain(10 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 30 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_lost", "{rec}");
    bot.finished(1, 10 * SEC).await;
    bridge.stop().await;
}
