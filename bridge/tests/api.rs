//! The REST API over real HTTP: auth, validation errors with the spec's bodies,
//! call logs, scheduling, and a restart that keeps the log.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required_by_header_or_query() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let a = bridge.addr;
    for token in [None, Some("wrong-token")] {
        let (status, v) = http_json(a, "POST", "/api/call_logs", token, Some("{}")).await;
        assert_eq!(status, 401);
        assert_eq!(
            v,
            json!({"status": false, "message": "Invalid or missing API token"})
        );
    }
    let (status, _) = http_json(a, "GET", "/api/get_call_status", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let (status, _) = http_json(
        a,
        "GET",
        &format!("/api/get_call_status?token={TOKEN}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "token as a query parameter");
    let (status, _) = http(a, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "health check needs no token");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_validation_errors_are_400_with_readable_messages() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let a = bridge.addr;
    let cases = [
        (
            json!({"wss_url": "ws://127.0.0.1:9/"}),
            "customer_no is required",
        ),
        (json!({"customer_no": "+99910001"}), "wss_url is required"),
        (
            json!({"customer_no": "call me maybe", "wss_url": "ws://127.0.0.1:9/"}),
            "is not a phone number",
        ),
        (
            json!({"customer_no": "+99910001", "wss_url": "http://127.0.0.1:9/"}),
            "use ws:// or wss://",
        ),
        (
            json!({"customer_no": "+99910001", "wss_url": "ws://bot.example.com/"}),
            "not loopback",
        ),
        (
            json!({"customer_no": "+99910001", "wss_url": "ws://127.0.0.1:9/", "wss_header": "Authorization Bearer x"}),
            "wss_header line 1 has no ':'",
        ),
        (
            json!({"customer_no": "+99910001", "wss_url": "ws://127.0.0.1:9/", "connect_ws_after_answer": "yes"}),
            "connect_ws_after_answer must be",
        ),
        (
            json!({"customer_no": "+99910001", "wss_url": "ws://127.0.0.1:9/", "schedule_datetime": "tomorrow"}),
            "schedule_datetime",
        ),
        (
            json!({"customer_no": "+99910001", "wss_url": "ws://127.0.0.1:9/", "schedule_datetime": "2099-01-01 10:00:00", "timezone": "Mars/Olympus"}),
            "Mars/Olympus",
        ),
        (
            json!({"customer_no": "+99910001", "wss_url": "ws://127.0.0.1:9/", "schedule_datetime": "2001-01-01 10:00:00"}),
            "in the past",
        ),
        (
            json!({"customer_no": ["+99910001"], "wss_url": "ws://127.0.0.1:9/"}),
            "customer_no must be a string",
        ),
        // Found from outside: a sign that was dropped, a year chrono reads
        // but text comparison cannot.
        (
            json!({"customer_no": -99910001, "wss_url": "ws://127.0.0.1:9/"}),
            "customer_no -99910001 is not a phone number",
        ),
        (
            json!({"customer_no": 99910001.5, "wss_url": "ws://127.0.0.1:9/"}),
            "is not a phone number",
        ),
        (
            json!({"customer_no": "+99910001", "wss_url": "ws://127.0.0.1:9/", "schedule_datetime": "+99999-12-31 23:59:59"}),
            "years 1000 to 9999",
        ),
    ];
    for (body, expect) in cases {
        let (status, v) = try_dial(a, &body).await;
        assert_eq!(status, 400, "{body} -> {v}");
        assert_eq!(v["status"], false);
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains(expect),
            "{body}: message {msg:?} should say {expect:?}"
        );
    }
    let (status, v) = http_json(
        a,
        "POST",
        "/api/dial_by_aivoicebot",
        Some(TOKEN),
        Some("{\"customer_no\": "),
    )
    .await;
    assert_eq!(status, 400);
    assert!(v["message"].as_str().unwrap().contains("not valid JSON"));
    // Nothing was placed by any of these.
    let (status, v) = http_json(a, "POST", "/api/call_logs", Some(TOKEN), Some("{}")).await;
    assert_eq!(status, 405);
    assert_eq!(v, json!({"status": 405, "message": "No records found"}));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_logs_by_date_and_number_and_restart_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let a = bridge.addr;
    let logid = dial(
        a,
        json!({"customer_no": "+99920042", "wss_url": "ws://127.0.0.1:9/"}),
    )
    .await;
    let rec = wait_final(a, logid, 10 * SEC).await;
    assert_eq!(rec["call_state"], "busy");
    let (status, body) = http(a, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "metrics need no token");
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("bridge_calls_ended_total{state=\"busy\"} 1\n"),
        "{text}"
    );
    // A scheduled call, an hour from now in Kolkata time.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1))
        .with_timezone(&chrono_tz::Asia::Kolkata)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let (status, v) = http_json(
        a,
        "POST",
        "/api/dial_by_aivoicebot",
        Some(TOKEN),
        Some(
            &json!({"customer_no": "+99910077", "wss_url": "ws://127.0.0.1:9/",
                    "schedule_datetime": later, "timezone": "Asia/Kolkata"})
            .to_string(),
        ),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let scheduled_id = v["data"]["logid"].as_i64().unwrap();
    assert!(v["message"].as_str().unwrap().contains("scheduled"));

    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let body = json!({"from_date": today, "to_date": today}).to_string();
    let (status, v) = http_json(a, "POST", "/api/call_logs", Some(TOKEN), Some(&body)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], 200);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for key in [
        "recordid",
        "did_no",
        "client_no",
        "agent_no",
        "attended_by",
        "ext_no",
        "call_time",
        "call_duration",
        "call_status",
        "call_type",
        "recording_url",
        "dtmf_input",
    ] {
        assert!(
            data[0].get(key).is_some(),
            "call log has the spec's field {key}"
        );
    }
    assert_eq!(data[0]["call_status"], "busy");
    assert_eq!(data[0]["sip_code"], 486);
    assert_eq!(data[0]["call_type"], "outbound");
    assert_eq!(data[1]["call_state"], "initiated");

    let body = json!({"from_date": "2000-01-01", "to_date": "2000-01-31"}).to_string();
    let (status, _) = http_json(a, "POST", "/api/call_logs", Some(TOKEN), Some(&body)).await;
    assert_eq!(status, 405, "no records in that range");
    let body = json!({"from_date": "2000-13-01"}).to_string();
    let (status, v) = http_json(a, "POST", "/api/call_logs", Some(TOKEN), Some(&body)).await;
    assert_eq!(status, 400);
    assert!(v["message"].as_str().unwrap().contains("from_date"));
    // The last day there is still finds today's calls; a year past 9999 is
    // refused rather than compared as text.
    let body = json!({"from_date": "2000-01-01", "to_date": "9999-12-31"}).to_string();
    let (status, v) = http_json(a, "POST", "/api/call_logs", Some(TOKEN), Some(&body)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), data.len());
    let body = json!({"from_date": "+262142-01-01"}).to_string();
    let (status, v) = http_json(a, "POST", "/api/call_logs", Some(TOKEN), Some(&body)).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("years 1000 to 9999"));

    let (status, v) = http_json(
        a,
        "GET",
        "/api/calllog_by_number?phone=%2B9992%200042",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"][0]["recordid"], logid);
    let (status, v) = http_json(
        a,
        "GET",
        "/api/calllog_by_number?phone=0123456789",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(v, json!({"status": 404, "message": "caller Not Found"}));
    let (status, _) = http_json(a, "GET", "/api/calllog_by_number", Some(TOKEN), None).await;
    assert_eq!(status, 400);

    // Restart on the same data directory: the log and the token survive, and the
    // scheduled call is still waiting.
    bridge.stop().await;
    let bridge = start_bridge_with(dir.path(), test_config()).await;
    let rec = call_log(bridge.addr, logid).await;
    assert_eq!(rec["call_state"], "busy");
    let rec = call_log(bridge.addr, scheduled_id).await;
    assert_eq!(rec["call_state"], "initiated", "{rec}");
    assert!(rec["scheduled_at"].is_string());
    let (status, v) = http_json(
        bridge.addr,
        "GET",
        "/api/get_call_status?logid=999999",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404, "{v}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_token_is_stored_hashed_and_works_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = bridge::server::Options {
        http: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        api_token: None,
        sip: None,
        config: test_config(),
    };
    let first = bridge::server::start(opts.clone()).await.unwrap();
    let token = first.generated_token.clone().expect("a token is generated");
    first.stop().await;
    let db = std::fs::read(dir.path().join("bridge.db")).unwrap();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token itself is not in the database"
    );
    let second = bridge::server::start(opts).await.unwrap();
    assert!(second.generated_token.is_none(), "printed only once");
    let (status, _) = http_json(
        second.addr,
        "GET",
        "/api/get_call_status",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_call_is_placed_at_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let when = (chrono::Utc::now() + chrono::Duration::seconds(3))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99920001", "wss_url": "ws://127.0.0.1:9/",
               "schedule_datetime": when, "timezone": "UTC"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        call_log(bridge.addr, logid).await["call_state"],
        "initiated"
    );
    let rec = wait_final(bridge.addr, logid, 10 * SEC).await;
    assert_eq!(rec["call_state"], "busy");
    bridge.stop().await;
}

/// Errors the HTTP layer makes itself are JSON in the spec's shape too: a
/// body past the 2 MiB limit (413) and a method a path does not take (405,
/// with `Allow`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_layer_errors_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let big = format!(r#"{{"customer_no":"{}"}}"#, "1".repeat(3 * 1024 * 1024));
    let (status, v) = http_json(
        bridge.addr,
        "POST",
        "/api/dial_by_aivoicebot",
        Some(TOKEN),
        Some(&big),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(v["status"], false);
    assert!(v["message"].as_str().unwrap().contains("2 MiB"), "{v}");
    let (status, v) = http_json(
        bridge.addr,
        "DELETE",
        "/api/dial_by_aivoicebot",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(v["status"], false, "{v}");
    // What hyper refuses before any handler runs: a 70 KB URI, 500 KB of
    // headers, a request line that is not HTTP.
    let raw = [
        (
            format!(
                "GET /api/call_logs?x={} HTTP/1.1\r\nHost: x\r\n\r\n",
                "a".repeat(70_000)
            ),
            414,
            "URI is too long",
        ),
        (
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(500_000)
            ),
            431,
            "headers are too large",
        ),
        ("GARBAGE\r\n\r\n".to_string(), 400, "could not be read"),
    ];
    for (request, want, says) in raw {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
        let _ = s.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(SEC * 5, s.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").expect("an answer");
        assert!(head.starts_with(&format!("HTTP/1.1 {want} ")), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        assert_eq!(v["status"], false, "{v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{v}");
    }
    bridge.stop().await;
}
