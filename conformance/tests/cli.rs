//! The built `conformance` binary, end to end: against the example echo bot and
//! against our bridge in process, with its progress lines, summary, reports and
//! exit codes.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_conformance");

async fn run(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("BRIDGE_API_TOKEN")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(90), child)
        .await
        .expect("conformance finishes within 90 s")
        .expect("conformance runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_against_the_echo_bot_passes_and_writes_reports() {
    let url = start_echo_bot().await;
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("bot.xml");
    let json = dir.path().join("bot.json");
    let out = run(&[
        "bot",
        "--url",
        &url,
        "--header",
        "Authorization: Bearer secret",
        "--jobs",
        "4",
        "--junit",
        junit.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ])
    .await;
    let text = stdout(&out);
    println!("{text}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("] PASS call-flow"),
        "a progress line per scenario"
    );
    assert!(
        text.contains("conformance: 8 passed, 0 failed, 0 skipped"),
        "{text}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite name=\"conformance bot\" tests=\"8\" failures=\"0\""),
        "{xml}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["passed"], 8);
    assert!(
        v["scenarios"][0]["measurements"]["first audio"].is_string(),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_against_a_broken_bot_exits_1_and_names_the_fault() {
    let url = start_broken_bot(BotFault::OddAudio).await;
    let out = run(&[
        "bot",
        "--url",
        &url,
        "--scenario",
        "audio-deltas",
        "--scenario",
        "stop-before-start",
    ])
    .await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("] FAIL audio-deltas"), "{text}");
    assert!(text.contains("odd_byte_count"), "{text}");
    assert!(
        text.contains("conformance: 1 passed, 1 failed, 0 skipped"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_against_our_bridge_passes() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let junit = dir.path().join("bridge.xml");
    let api = format!("http://{}", bridge.addr);
    let out = run(&[
        "bridge",
        "--api",
        &api,
        "--token",
        TOKEN,
        "--hangup-number",
        HANGUP_NUMBER,
        "--flow-id",
        FLOW_ID,
        "--extension",
        EXTENSION,
        "--jobs",
        "6",
        "--junit",
        junit.to_str().unwrap(),
    ])
    .await;
    let text = stdout(&out);
    println!("{text}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("conformance: 31 passed, 0 failed, 0 skipped"),
        "{text}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"31\" failures=\"0\""), "{xml}");
    bridge.stop().await;
}

#[tokio::test]
async fn list_usage_errors_and_the_twilio_dialect() {
    let out = run(&["bot", "--list"]).await;
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("answers-pings") && text.contains("PROTOCOL.md §4"),
        "{text}"
    );
    let out = run(&["bridge", "--list"]).await;
    let text = stdout(&out);
    assert!(
        text.contains("stop-callended") && text.contains("(needs --hangup-number)"),
        "{text}"
    );

    let out = run(&["bot", "--url", "ws://127.0.0.1:9/", "--dialect", "twilio"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("twilio dialect is not available yet"), "{err}");

    let out = run(&["bot", "--url", "ws://127.0.0.1:9/", "--scenario", "nope"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no bot scenario named \"nope\""));

    let out = run(&["bot", "--url", "ws://127.0.0.1:9/", "--header", "no colon"]).await;
    assert_eq!(out.status.code(), Some(2));

    let out = run(&[
        "bridge",
        "--api",
        "http://127.0.0.1:9",
        "--token",
        "t",
        "--scenario",
        "stop-callended",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --hangup-number"));
}

#[tokio::test]
async fn schema_check_agrees_with_the_committed_files() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schema");
    let out = run(&["schema", "--check", dir]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&["schema", "--check", tmp.path().to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "an empty folder is stale");
}
