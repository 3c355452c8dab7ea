//! Liveness and limits (PROTOCOL.md section 4), end to end: a bot that stops
//! answering pings or drops its socket is lost, a call never outlasts
//! `max_duration_secs`, a bot that never finishes the WebSocket handshake is
//! given up after `connect_timeout_ms`, and `session.hangup` with `immediate`
//! does not wait for queued audio.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use protocol::{BotEvent, StopReason};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// The test config's `[calls]`, with `extra` appended (more sections).
fn config_with(calls: &str, extra: &str) -> bridge::config::Config {
    let text = format!("[calls]\nring_timeout_secs = 2\n{calls}\n\n{extra}\n");
    bridge::config::Config::parse(&text).expect("test config parses")
}

/// A bot that takes the call and then never reads again never answers a ping:
/// it is lost after the pong timeout and the call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_that_stops_answering_pings_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(
        "max_duration_secs = 60",
        "[bot]\nping_interval_secs = 1\npong_timeout_secs = 2",
    );
    let bridge = start_bridge_with(dir.path(), cfg).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        // Hold the socket open without reading: pings go unanswered.
        tokio::time::sleep(20 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 10 * SEC).await;
    assert_eq!(rec["call_state"], "completed", "{rec}");
    assert_eq!(rec["end_reason"], "bot_lost", "{rec}");
    bridge.stop().await;
}

/// A bot that goes away after `start` without `session.hangup` (a polite close,
/// or the TCP connection just ending) is lost, and the call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_that_closes_its_socket_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let polite = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        c.ws.close(None).await.expect("close the socket");
        c.drain(5 * SEC).await;
        c
    })
    .await;
    let abrupt = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        // End the TCP stream without a WebSocket close frame.
        c.ws.get_mut().shutdown().await.expect("shut the socket");
        c.drain(5 * SEC).await;
        c
    })
    .await;
    for (how, bot) in [("close frame", &polite), ("TCP end", &abrupt)] {
        let logid = dial(
            bridge.addr,
            json!({"customer_no": "+99910001", "wss_url": bot.url()}),
        )
        .await;
        let rec = wait_final(bridge.addr, logid, 10 * SEC).await;
        assert_eq!(rec["call_state"], "completed", "{how}: {rec}");
        assert_eq!(rec["end_reason"], "bot_lost", "{how}: {rec}");
        let conns = bot.finished(1, 10 * SEC).await;
        assert_eq!(
            conns[0].count("stop"),
            0,
            "{how}: nothing is sent to a bot that left"
        );
    }
    bridge.stop().await;
}

/// `max_duration_secs` ends a call: the bot gets `stop` with reason
/// `max_duration` and the call log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_ends_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge_with(dir.path(), config_with("max_duration_secs = 1", "")).await;
    let bot = TestBot::listener(10 * SEC).await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 10 * SEC).await;
    assert_eq!(rec["call_state"], "completed", "{rec}");
    assert_eq!(rec["end_reason"], "max_duration", "{rec}");
    let conns = bot.finished(1, 10 * SEC).await;
    let c = &conns[0];
    match c.events.last() {
        Some(BotEvent::Stop { reason, .. }) => assert_eq!(*reason, StopReason::MaxDuration),
        e => panic!("last event {e:?}"),
    }
    // One second of call is 50 chunks; the bot heard no more than that.
    let media = c.count("media");
    assert!(
        (1..=51).contains(&media),
        "about 1 s of media before stop: {media} chunks"
    );
    assert_stream_contiguous(&c.events);
    bridge.stop().await;
}

/// A server that accepts TCP connections but never answers the WebSocket
/// handshake, or for `wss://` the TLS handshake: the bridge gives up after
/// `connect_timeout_ms` and the call fails as `bot_unreachable`, whether the
/// socket was opened at dial or at answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_that_never_finishes_the_handshake_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with("max_duration_secs = 60", "[bot]\nconnect_timeout_ms = 500");
    let bridge = start_bridge_with(dir.path(), cfg).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let mute = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(tcp);
        }
    });

    for (n, scheme, after_answer) in [(1, "ws", "1"), (2, "ws", "0"), (3, "wss", "1")] {
        let url = format!("{scheme}://{at}/bot");
        let logid = dial(
            bridge.addr,
            json!({"customer_no": "+99910001", "wss_url": url, "connect_ws_after_answer": after_answer}),
        )
        .await;
        let rec = wait_final(bridge.addr, logid, 5 * SEC).await;
        assert_eq!(
            rec["call_state"], "failed",
            "after_answer={after_answer}: {rec}"
        );
        assert_eq!(
            rec["end_reason"], "bot_unreachable",
            "after_answer={after_answer}: {rec}"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            n,
            "the bridge reached the server (it timed out, it was not refused)"
        );
    }
    mute.abort();
    bridge.stop().await;
}

/// `session.hangup` with `"immediate": true` does not play out the queue: of
/// 10 s of queued audio the phone hears almost nothing, and the call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_hangup_does_not_play_queued_audio() {
    const QUEUED: i16 = 4321;
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        // Let the call run a little first, so the recording has a start.
        for _ in 0..10 {
            c.until("media", 5 * SEC).await;
        }
        c.send_audio(&[QUEUED; 10 * 8000]).await;
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
    // Well under the 10 s the queued audio would take to play.
    let rec = wait_final(bridge.addr, logid, Duration::from_secs(8)).await;
    assert_eq!(rec["call_state"], "completed", "{rec}");
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    let conns = bot.finished(1, 10 * SEC).await;
    match conns[0].events.last() {
        Some(BotEvent::Stop { reason, .. }) => assert_eq!(*reason, StopReason::BotHangup),
        e => panic!("last event {e:?}"),
    }

    let heard = recording(bridge.addr, &rec).await.channel(1);
    let played = heard.iter().filter(|&&s| s == QUEUED).count();
    println!(
        "{played} of {} queued samples were played; the recording holds {} samples",
        10 * 8000,
        heard.len()
    );
    assert!(
        played < 2 * 8000,
        "the phone heard {played} samples of the queued audio; an immediate hangup plays almost none"
    );
    assert!(
        heard.len() < 10 * 8000,
        "the call did not wait for the queue: {} samples recorded",
        heard.len()
    );
    bridge.stop().await;
}
