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
