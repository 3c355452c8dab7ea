//! Admission control: a bridge that carries `[calls] max_calls` refuses the
//! next call cleanly (API 503 with Retry-After in the spec's shape, SIP 503)
//! instead of degrading the live ones, counts the refusals on `/metrics`, and
//! takes calls again once one ends.

mod common;

use std::time::Duration;

use common::phone::SipPhone;
use common::sipp::*;
use common::*;
use serde_json::json;

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} on /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bridge_refuses_the_next_call_over_the_api_and_sip() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The bot keeps each call until it has had 2 s of media, then hangs up.
    let bot = TestBot::spawn(|mut c| async move {
        for _ in 0..100 {
            c.until("media", 5 * SEC).await;
        }
        c.send(r#"{"type":"session.hangup","immediate":true}"#)
            .await;
        c.drain(5 * SEC).await;
        c
    })
    .await;
    let toml = format!(
        "[calls]\nmax_calls = 2\n\n[[dids]]\nnumber = \"+15550001000\"\nbot_url = \"{}\"\n",
        bot.url()
    );
    let bridge = start_sip_bridge(dir.path(), &toml).await;
    let a = bridge.addr;
    let body = json!({"customer_no": "+99910001", "wss_url": bot.url()});
    let first = dial(a, body.clone()).await;
    // The second place goes to a SIP caller.
    let phone = SipPhone::call(bridge.sip_addr.unwrap(), "+15550001000", "+15557650001").await;

    // Full: the API says 503 with Retry-After, in the spec's shape...
    let (status, v) = try_dial(a, &body).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["status"], false);
    assert!(v["message"].as_str().unwrap().contains("most calls"), "{v}");
    // ...and an INVITE gets 503.
    let refused = Sipp::start(
        "uac_expect_503.xml",
        bridge.sip_addr,
        free_port(),
        &["-s", "+15550001000"],
    );
    let (code, errors) = refused.finish(15 * SEC).await;
    assert_eq!(code, 0, "a full bridge answered the INVITE 503: {errors}");
    // A scheduled call is accepted: it takes its place at its time.
    let (status, _) = http_json(
        a,
        "POST",
        "/api/dial_by_aivoicebot",
        Some(TOKEN),
        Some(
            &json!({"customer_no": "+99910001", "wss_url": bot.url(),
                    "schedule_datetime": "2099-01-01 10:00:00"})
            .to_string(),
        ),
    )
    .await;
    assert_eq!(status, 200);

    // The live calls were not touched; once one ends, a call is taken again.
    let rec = wait_final(a, first, 15 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    phone.hang_up().await;
    // A call's place is free once its task has finished (its bot's socket
    // closed), a moment after its log is final.
    let freed_from = tokio::time::Instant::now();
    let deadline = freed_from + 20 * SEC;
    let again = loop {
        let (status, v) = try_dial(a, &body).await;
        if status == 200 {
            println!(
                "a place was free {:?} after the hangup",
                freed_from.elapsed()
            );
            break v["data"]["logid"].as_i64().unwrap();
        }
        assert_eq!(status, 503, "{v}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "no place freed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rec = wait_final(a, again, 15 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");

    let (_, text) = http(a, "GET", "/metrics", None, None).await;
    let text = String::from_utf8(text).unwrap();
    assert!(metric(&text, "bridge_calls_refused_total{reason=\"full\"} ") >= 2);
    assert_eq!(
        metric(&text, "bridge_calls_refused_total{reason=\"shutdown\"} "),
        0
    );
    bridge.stop().await;
}

/// An overloaded bridge (its runtime's workers held busy for 1.5 s, as a
/// machine out of CPU would) refuses new calls with 503 and reason
/// `overload` while its clock runs late, shows the lateness on `/metrics`,
/// and takes calls again once it has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_bridge_refuses_new_calls_until_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let body = json!({"customer_no": "+99910001", "wss_url": "ws://127.0.0.1:9/"});
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Both workers blocked at once.
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async {
                std::thread::sleep(Duration::from_millis(1500));
            })
        })
        .collect();
    for h in hogs {
        h.await.unwrap();
    }
    // The probe wakes for every tick it missed, each late.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, v) = try_dial(bridge.addr, &body).await;
    assert_eq!(status, 503, "{v}");
    assert!(v["message"].as_str().unwrap().contains("overloaded"), "{v}");
    let (_, m) = http(bridge.addr, "GET", "/metrics", None, None).await;
    let text = String::from_utf8(m).unwrap();
    assert_eq!(
        metric(&text, "bridge_calls_refused_total{reason=\"overload\"}"),
        1
    );

    // Caught up: calls are taken again.
    let deadline = tokio::time::Instant::now() + 10 * SEC;
    loop {
        let (status, v) = try_dial(bridge.addr, &body).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{v}");
        assert!(tokio::time::Instant::now() < deadline, "still refused: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bridge.stop().await;
}
