//! `conformance bridge` through its library entry point: our bridge passes every
//! scenario, and a deliberately broken fake bridge fails the scenario that names
//! each fault, saying what was wrong (while the same fake, unbroken, passes).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_bridge_passes_every_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let report = run_bridge_suite(bridge.addr, &[], true).await;
    assert!(report.all_passed(), "{}", report.summary());
    assert_eq!(report.scenarios.len(), 31, "every bridge scenario ran");
    let cadence = result(&report, "media-cadence");
    assert!(
        cadence
            .findings
            .measurements
            .iter()
            .any(|(k, _)| k == "media rate"),
        "the media rate is reported"
    );
    bridge.stop().await;
}

const FAULT_SCENARIOS: [&str; 3] = ["numbering", "marks", "clear"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_bridge_without_faults_passes_its_scenarios() {
    let fake = start_fake_bridge(BridgeFault::None).await;
    let report = run_bridge_suite(fake, &FAULT_SCENARIOS, false).await;
    assert!(report.all_passed(), "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_sequence_number_fails_numbering() {
    let fake = start_fake_bridge(BridgeFault::SkipsSequenceNumber).await;
    let report = run_bridge_suite(fake, &["numbering"], false).await;
    println!("{}", report.summary());
    assert_fails_with(
        &report,
        "numbering",
        &["stream:", "sequence_number 21, expected 20"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_echoed_before_its_audio_played_fails_marks() {
    let fake = start_fake_bridge(BridgeFault::EarlyMark).await;
    let report = run_bridge_suite(fake, &["marks"], false).await;
    println!("{}", report.summary());
    assert_fails_with(
        &report,
        "marks",
        &[
            "mark \"conformance-after-audio\" came back",
            "must come back only after its audio has played",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_dropped_on_clear_fail_clear() {
    let fake = start_fake_bridge(BridgeFault::DropsMarksOnClear).await;
    let report = run_bridge_suite(fake, &["clear"], false).await;
    println!("{}", report.summary());
    assert_fails_with(
        &report,
        "clear",
        &[
            "sent [] before `clear`",
            "every pending mark must come back",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_stops_the_suite_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(dir.path()).await;
    let opts = conformance::bridgesuite::BridgeOptions {
        api: format!("http://{}", bridge.addr),
        token: "wrong".into(),
        bot_listen: "127.0.0.1:0".parse().unwrap(),
        bot_url: None,
        hangup_number: None,
        flow_id: None,
        extension: None,
        jobs: 1,
    };
    let e = conformance::bridgesuite::run(
        opts,
        vec![],
        std::sync::Arc::new(conformance::report::QuietProgress),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("refused the token (401)"), "{e}");
    bridge.stop().await;
}
