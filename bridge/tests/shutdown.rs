//! Stopping the bridge the way operators do, with the real binary: SIGTERM
//! mid-call refuses new calls (503 with Retry-After), lets the live call
//! drain, then ends it with reason `shutdown`, finishes its recording and
//! exits 0; and a second bridge on the same data directory refuses to start
//! while the first runs.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use protocol::{BotEvent, StopReason};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The raw answer (head and body) to a dial request.
async fn raw_dial(addr: SocketAddr, body: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /api/dial_by_aivoicebot HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(10 * SEC, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The bridge binary on `data` with config `cfg`, listening (bounded wait).
async fn spawn_bridge(
    data: &std::path::Path,
    cfg: &std::path::Path,
) -> (tokio::process::Child, SocketAddr) {
    let port = free_tcp_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args([
            "serve",
            "--no-sip",
            "--http",
            &addr.to_string(),
            "--api-token",
            TOKEN,
        ])
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the bridge binary starts");
    let deadline = tokio::time::Instant::now() + 10 * SEC;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the bridge listens");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, addr)
}

/// Places a bot call to the speaking phone and waits until it is up.
async fn live_call(addr: SocketAddr, bot: &TestBot) -> i64 {
    let logid = dial(
        addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + 5 * SEC;
    while call_log(addr, logid).await["call_state"] != "in-progress" {
        assert!(tokio::time::Instant::now() < deadline, "the call is up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    logid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_ends_live_calls_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("bridge.toml");
    std::fs::write(&cfg, "[server]\ndrain_secs = 2\n").unwrap();
    let (mut child, addr) = spawn_bridge(&data, &cfg).await;

    // A second bridge on the same data directory refuses to start.
    let second = bridge::server::start(bridge::server::Options {
        http: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.clone(),
        api_token: Some(TOKEN.into()),
        sip: None,
        config: bridge::config::Config::default(),
    })
    .await;
    let e = format!("{:#}", second.err().expect("the second bridge is refused"));
    assert!(e.contains("another bridge is running"), "{e}");

    let bot = TestBot::spawn(|mut c| async move {
        c.drain(20 * SEC).await;
        c
    })
    .await;
    let logid = live_call(addr, &bot).await;
    tokio::time::sleep(SEC).await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Draining: new calls are refused in the spec's error shape, with a
    // Retry-After; the live call goes on.
    let answer = raw_dial(
        addr,
        r#"{"customer_no":"+99910002","wss_url":"ws://127.0.0.1:9/"}"#,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 2\r\n"),
        "{answer}"
    );
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["status"], false, "{v}");
    assert!(v["message"].as_str().unwrap().contains("shutting down"));
    assert_eq!(call_log(addr, logid).await["call_state"], "in-progress");

    let status = tokio::time::timeout(20 * SEC, child.wait())
        .await
        .expect("the bridge exits after the drain")
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status");

    let conns = bot.finished(1, 10 * SEC).await;
    assert!(matches!(
        conns[0].events.last(),
        Some(BotEvent::Stop {
            reason: StopReason::Shutdown,
            ..
        })
    ));
    // The same data directory starts again (the lock went with the process):
    // the call ended `shutdown`, and its recording is whole.
    let bridge = start_bridge(&data).await;
    let rec = call_log(bridge.addr, logid).await;
    assert_eq!(rec["call_state"], "completed", "{rec}");
    assert_eq!(rec["end_reason"], "shutdown");
    let pcm = recording(bridge.addr, &rec).await;
    let secs = pcm.samples.len() as f64 / 2.0 / 8000.0;
    assert!(
        (2.5..=6.0).contains(&secs),
        "the recording holds the call's {secs:.2} s (1 s + drain 2 s)"
    );
    bridge.stop().await;
}

/// `kill -9` mid-call, then a restart on the same data directory: the call is
/// closed as `bridge_restart`, ended when it stopped (not at the restart),
/// and its recording, whose header the killed bridge never finished, is
/// repaired and downloadable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_next_start_closes_the_call_and_repairs_its_recording() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("bridge.toml");
    std::fs::write(&cfg, "").unwrap();
    let (mut child, addr) = spawn_bridge(&data, &cfg).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.drain(20 * SEC).await;
        c
    })
    .await;
    let logid = live_call(addr, &bot).await;
    tokio::time::sleep(3 * SEC).await;
    child.kill().await.unwrap(); // SIGKILL
    let killed_at = chrono::Utc::now();
    tokio::time::sleep(3 * SEC).await;

    let bridge = start_bridge(&data).await;
    let rec = call_log(bridge.addr, logid).await;
    assert_eq!(rec["call_state"], "completed", "{rec}");
    assert_eq!(rec["end_reason"], "bridge_restart");
    let ended = chrono::NaiveDateTime::parse_from_str(
        rec["ended_at"].as_str().unwrap(),
        "%Y-%m-%d %H:%M:%S",
    )
    .unwrap()
    .and_utc();
    let off = (ended - killed_at).num_milliseconds().abs();
    assert!(
        off <= 1500,
        "ended_at {ended} is the kill ({killed_at}), not the restart: {rec}"
    );
    let duration = rec["call_duration"].as_i64().unwrap();
    assert!((2..=4).contains(&duration), "duration {duration} s: {rec}");
    let pcm = recording(bridge.addr, &rec).await;
    let secs = pcm.samples.len() as f64 / 2.0 / 8000.0;
    assert!(
        (2.0..=3.5).contains(&secs),
        "the recording holds the call's audio up to the kill: {secs:.2} s"
    );
    bridge.stop().await;
}
