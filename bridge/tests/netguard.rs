//! The outbound request guard: bot URLs that point into special address
//! ranges (cloud metadata, private networks, `0.0.0.0`) are refused with a
//! clear error, before anything is connected, and a name is checked on the
//! address it resolves to when connecting.

mod common;

use common::*;
use serde_json::json;

/// URLs written with an address in a refused range: the API answers 400 with
/// the reason, a bot's `session.transfer_ws` gets an `error` and the bot keeps
/// the call; an allowed loopback bot still takes calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_urls_into_special_ranges_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;

    for (url, range) in [
        ("wss://169.254.169.254/latest/meta-data", "link-local"),
        ("wss://10.1.2.3/bot", "private"),
        ("wss://192.168.0.10:8443/bot", "private"),
        ("wss://[fd00::1]/bot", "unique local"),
        ("wss://[::ffff:169.254.169.254]/bot", "link-local"),
        ("wss://0.0.0.0:8080/bot", "0.0.0.0/8"),
        ("wss://100.64.0.1/bot", "shared address space"),
    ] {
        let (status, v) = try_dial(
            bridge.addr,
            &json!({"customer_no": "+99910001", "wss_url": url}),
        )
        .await;
        assert_eq!(status, 400, "{url}: {v}");
        assert_eq!(v["status"], false, "{v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(range) && msg.contains("allow_networks"),
            "{url}: {msg}"
        );
    }

    // A bot on loopback (allowed by default) asks to move the call into the
    // metadata service: refused, and the call stays with it.
    let bot = TestBot::spawn(|mut c| async move {
        c.until("media", 5 * SEC).await;
        c.send(r#"{"type":"session.transfer_ws","url":"wss://169.254.169.254/x"}"#)
            .await;
        c.until("error", 5 * SEC).await;
        // Still its call: media keeps coming.
        let before = c.count("media");
        for _ in 0..10 {
            c.until("media", SEC).await;
        }
        assert!(c.count("media") >= before + 10);
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
    let conns = bot.finished(1, 15 * SEC).await;
    let refusal = conns[0].events.iter().find_map(|e| match e {
        protocol::BotEvent::Error { code, message, .. } => Some((code.clone(), message.clone())),
        _ => None,
    });
    let (code, message) = refusal.expect("an error event");
    assert_eq!(code, "bad_field", "{message}");
    assert!(message.contains("link-local"), "{message}");
    let rec = wait_final(bridge.addr, logid, 10 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    bridge.stop().await;
}

/// With loopback not allowed, a name that resolves to it (`localhost`) passes
/// the URL check but is refused when connecting: nothing reaches the bot, and
/// the call log says `bot_address_refused`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_checked_on_the_address_it_resolves_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config();
    cfg.outbound.allow_networks = Vec::new();
    let bridge = start_bridge_with(dir.path(), cfg).await;
    let bot = TestBot::listener(5 * SEC).await;

    // The address written out is refused at once.
    let (status, v) = try_dial(
        bridge.addr,
        &json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("loopback"), "{v}");

    // The name is refused on what it resolves to.
    let url = format!("ws://localhost:{}/bot", bot.addr.port());
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": url}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 10 * SEC).await;
    assert_eq!(rec["call_state"], "failed", "{rec}");
    assert_eq!(rec["end_reason"], "bot_address_refused", "{rec}");
    assert!(
        bot.done.lock().unwrap().is_empty(),
        "the bot was connected to"
    );
    bridge.stop().await;
}
