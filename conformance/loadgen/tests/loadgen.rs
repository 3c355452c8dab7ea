//! The load generator against an in-process bridge: 20 calls, 2 s ramp, 10 s
//! hold. Asserts that every call is established and no frame is lost either
//! way, and that latency was measured; never what the timings are.

use std::time::Duration;

/// The bot side, and an in-process bridge whose DID points at it.
async fn bot_and_bridge(
    dir: &std::path::Path,
    rtp: (u16, u16),
) -> (loadgen::Bot, bridge::server::Running) {
    let bot = loadgen::Bot::bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("bot server binds");
    let toml = format!(
        "[sip]\nrtp_port_min = {}\nrtp_port_max = {}\n\n[[dids]]\nnumber = \"+15550009000\"\nbot_url = \"{}\"\n",
        rtp.0,
        rtp.1,
        bot.url()
    );
    let config = bridge::config::Config::parse(&toml).expect("test config");
    let running = tokio::time::timeout(
        Duration::from_secs(20),
        bridge::server::start(bridge::server::Options {
            http: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.to_owned(),
            api_token: Some("t".into()),
            sip: Some("127.0.0.1:0".parse().unwrap()),
            config,
        }),
    )
    .await
    .expect("bridge starts in time")
    .expect("bridge with SIP starts");
    (bot, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_calls_through_an_in_process_bridge_lose_no_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (bot, running) = bot_and_bridge(dir.path(), (32000, 32999)).await;

    let mut opts = loadgen::Options::new(running.sip_addr.unwrap(), "+15550009000", 20);
    opts.ramp = Duration::from_secs(2);
    opts.hold = Duration::from_secs(10);
    opts.rtp_base = 41000;
    // The bridge runs in this process.
    opts.bridge_pid = Some(std::process::id());
    opts.progress = true;
    opts.bridge_metrics = Some(format!("http://{}/metrics", running.addr));

    let report = tokio::time::timeout(Duration::from_secs(90), loadgen::run_with(opts, bot))
        .await
        .expect("the run finishes in time")
        .expect("the run could be made");
    println!("{}", report.table());

    assert_eq!(report.calls.attempted, 20);
    assert_eq!(report.calls.established, 20, "{:?}", report.calls.failures);
    assert_eq!(report.calls.failed, 0);
    assert_eq!(report.calls.dropped_by_bridge, 0);
    assert_eq!(report.calls.bye_unanswered, 0);
    for (name, way) in [
        ("phone -> bot", &report.phone_to_bot),
        ("bot -> phone", &report.bot_to_phone),
    ] {
        assert!(way.frames_sent > 0, "{name}: frames were counted");
        assert_eq!(way.frames_lost, 0, "{name}: no frame lost");
        assert_eq!(way.frames_received, way.frames_sent, "{name}");
        assert_eq!(way.misrouted, 0, "{name}: no cross-talk");
        assert!(way.latency.is_some(), "{name}: latency measured");
    }
    assert_eq!(report.totals.bot_sessions, 20);
    assert_eq!(report.totals.bot_error_events, 0);
    assert!(report.setup.time.is_some() && report.setup.rate_per_sec.is_some());
    assert!(report.bridge.cpu_percent.is_some() && report.bridge.rss_per_call_kib.is_some());
    assert!(report.bridge.metrics.is_some());
    assert!(report.passed, "{:?}", report.problems);
    // The JSON form has the same figures.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["calls"]["established"], 20);
    assert_eq!(json["phone_to_bot"]["frames_lost"], 0);

    tokio::time::timeout(Duration::from_secs(20), running.stop())
        .await
        .expect("bridge stops in time");
}

/// A short soak: 6 call slots for 12 s, each call 2-4 s long, so calls end
/// and start all the time; every call set up, no frame lost, the bridge read
/// every 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_soak_with_churn_loses_no_frames_and_reads_the_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let (bot, running) = bot_and_bridge(dir.path(), (33000, 33999)).await;
    let mut opts = loadgen::Options::new(running.sip_addr.unwrap(), "+15550009000", 6);
    opts.ramp = Duration::from_secs(1);
    opts.rtp_base = 42000;
    opts.bridge_pid = Some(std::process::id());
    opts.soak = Some(loadgen::Soak {
        duration: Duration::from_secs(12),
        call_min: Duration::from_secs(2),
        call_max: Duration::from_secs(4),
        sample_every: Duration::from_secs(2),
    });
    let report = tokio::time::timeout(Duration::from_secs(90), loadgen::run_with(opts, bot))
        .await
        .expect("the run finishes in time")
        .expect("the run could be made");
    println!("{}", report.table());

    // 6 slots over 13 s of 2-4 s calls: at least 3 calls each.
    assert!(report.calls.attempted >= 18, "{}", report.calls.attempted);
    assert_eq!(
        report.calls.established, report.calls.attempted,
        "{:?}",
        report.calls.failures
    );
    assert_eq!(report.calls.dropped_by_bridge, 0);
    for (name, way) in [
        ("phone -> bot", &report.phone_to_bot),
        ("bot -> phone", &report.bot_to_phone),
    ] {
        assert!(way.frames_sent > 0, "{name}: frames were counted");
        assert_eq!(way.frames_lost, 0, "{name}: no frame lost");
        assert_eq!(way.misrouted, 0, "{name}: no cross-talk");
    }
    assert!(report.passed, "{:?}", report.problems);
    let soak = report.soak.as_ref().expect("soak figures");
    assert!(soak.series.len() >= 6, "{}", soak.series.len());
    assert!(soak
        .series
        .iter()
        .all(|x| x.rss_kib.is_some() && x.fds.is_some()));
    assert_eq!(soak.calls_placed, report.calls.attempted as u64);
    assert!(soak.rss_growth_after_warmup_percent.is_some());
    // Per call is per call up at once (6), not per call placed, and the
    // set-up rate is the ramp's.
    let (cpu, per_call) = (
        report.bridge.cpu_percent.unwrap(),
        report.bridge.cpu_percent_per_call.unwrap(),
    );
    assert!((per_call - cpu / 6.0).abs() < 0.01, "{cpu} {per_call}");
    assert!(report.setup.rate_per_sec.unwrap() < 100.0);

    tokio::time::timeout(Duration::from_secs(20), running.stop())
        .await
        .expect("bridge stops in time");
}
