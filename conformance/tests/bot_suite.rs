//! `conformance bot` through its library entry point: the example echo bot
//! passes every scenario, and each deliberately broken bot fails the scenario
//! that names its fault, saying what was wrong.

mod common;

use common::*;
use conformance::botsuite::{self, BotOptions, Dialect, SetupError};
use conformance::report::QuietProgress;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_echo_bot_passes_every_scenario() {
    let url = start_echo_bot().await;
    let report = run_bot_suite(&url, &[]).await;
    assert!(report.all_passed(), "{}", report.summary());
    assert_eq!(report.scenarios.len(), 8, "every bot scenario ran");
    let flow = result(&report, "call-flow");
    let measured: Vec<&str> = flow
        .findings
        .measurements
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert!(
        measured.contains(&"first audio") && measured.contains(&"audio sent"),
        "{measured:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_length_audio_fails_audio_deltas() {
    let url = start_broken_bot(BotFault::OddAudio).await;
    let report = run_bot_suite(&url, &["audio-deltas"]).await;
    println!("{}", report.summary());
    assert_fails_with(
        &report,
        "audio-deltas",
        &[
            "response.audio.delta",
            "odd_byte_count",
            "319 bytes, not a whole number of 2-byte samples",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talking_after_stop_fails_silent_after_stop() {
    let url = start_broken_bot(BotFault::TalksAfterStop).await;
    let report = run_bot_suite(&url, &["silent-after-stop"]).await;
    println!("{}", report.summary());
    assert_fails_with(
        &report,
        "silent-after-stop",
        &[
            "after `stop`",
            "response.audio.delta",
            "must send nothing once it gets `stop`",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_never_answers_pings_fails_answers_pings() {
    let url = start_ping_deaf_bot().await;
    let report = run_bot_suite(&url, &["answers-pings"]).await;
    println!("{}", report.summary());
    assert_fails_with(
        &report,
        "answers-pings",
        &["WebSocket pings got no pong within 2 s", "3 of 3"],
    );
    // Its other manners are fine: a call without pings passes.
    let report = run_bot_suite(&url, &["call-flow"]).await;
    assert!(report.all_passed(), "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bot_fails_with_the_reason() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let report = run_bot_suite(&format!("ws://{closed}/"), &["call-flow"]).await;
    assert_fails_with(&report, "call-flow", &["cannot connect to the bot"]);
}

#[tokio::test]
async fn the_twilio_dialect_is_refused_until_the_bridge_has_it() {
    let opts = BotOptions {
        url: "ws://127.0.0.1:9/".into(),
        headers: vec![],
        dialect: Dialect::Twilio,
        jobs: 1,
    };
    let e = botsuite::run(opts, vec![], Arc::new(QuietProgress))
        .await
        .unwrap_err();
    assert!(matches!(e, SetupError::DialectUnavailable("twilio")));
    assert!(e.to_string().contains("not available yet"), "{e}");
}
