//! SIP and RTP against real peers on loopback: SIPp (`sip-tester`) as a caller,
//! as a trunk and as a registering extension.
//!
//! These tests need `sipp` on the PATH (`.ci/run` installs it). Without it they
//! print SKIPPED locally, and fail when `CI` is set.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::sipp::*;
use common::*;
use protocol::{BotEvent, StopReason};
use serde_json::json;

/// The call log's records, newest last.
async fn logs(addr: SocketAddr) -> Vec<serde_json::Value> {
    let (status, v) = http_json(addr, "POST", "/api/call_logs", Some(TOKEN), Some("{}")).await;
    if status == 405 {
        return vec![];
    }
    v["data"].as_array().cloned().unwrap_or_default()
}

async fn wait_log(addr: SocketAddr, n: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + 20 * SEC;
    loop {
        let l = logs(addr).await;
        if l.len() >= n
            && l.iter().all(|r| {
                !["initiated", "ringing", "in-progress"]
                    .contains(&r["call_state"].as_str().unwrap_or(""))
            })
        {
            return l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls did not end: {l:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIPp calls a DID routed to a bot, plays speech and RFC 2833 digits: the bot
/// gets continuous media and each digit once; the call log has the inbound call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_caller_reaches_the_did_bot_with_media_and_digits() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bot = TestBot::listener(20 * SEC).await;
    let toml = format!(
        "[[dids]]\nnumber = \"+15550001000\"\nbot_url = \"{}\"\nheaders = {{ X-Did = \"main\" }}\n",
        bot.url()
    );
    let bridge = start_sip_bridge(dir.path(), &toml).await;
    let sip = bridge.sip_addr.unwrap();
    let sipp = Sipp::start(
        "uac_pcap_dtmf.xml",
        Some(sip),
        free_port(),
        &["-s", "+15550001000"],
    );
    let (code, errors) = sipp.finish(40 * SEC).await;
    assert_eq!(code, 0, "SIPp call succeeded; its errors: {errors}");

    let conns = bot.finished(1, 10 * SEC).await;
    let c = &conns[0];
    assert!(c
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("x-did") && v == "main"));
    assert_stream_contiguous(&c.events);
    match &c.events[1] {
        BotEvent::Start { start, .. } => {
            assert_eq!(start.to, "+15550001000");
            assert_eq!(start.from, "+15557654321");
            assert_eq!(start.direction, protocol::Direction::Inbound);
        }
        e => panic!("expected start, got {e:?}"),
    }
    let digits: String = c
        .events
        .iter()
        .filter_map(|e| match e {
            BotEvent::Dtmf { digit, .. } => Some(*digit),
            _ => None,
        })
        .collect();
    assert_eq!(digits, "123", "each RFC 2833 digit reached the bot once");
    let media = c.count("media");
    assert!(
        media > 200,
        "continuous media for the whole call: {media} chunks"
    );
    let loud = c
        .events
        .iter()
        .filter(|e| match e {
            BotEvent::Media { payload, .. } => {
                let s: Vec<i16> = payload
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                codecs::pcm::rms(&s) > 300.0
            }
            _ => false,
        })
        .count();
    assert!(
        loud > 50,
        "the caller's speech reached the bot ({loud} loud chunks)"
    );
    match c.events.last().unwrap() {
        BotEvent::Stop { reason, .. } => assert_eq!(*reason, StopReason::CallEnded),
        e => panic!("last event {e:?}"),
    }
    let log = wait_log(bridge.addr, 1).await;
    assert_eq!(log[0]["call_type"], "inbound");
    assert_eq!(log[0]["did_no"], "+15550001000", "our DID");
    assert_eq!(log[0]["client_no"], "+15557654321", "the caller");
    assert_eq!(log[0]["call_state"], "completed");
    assert_eq!(log[0]["end_reason"], "callended");
    assert_eq!(log[0]["dtmf_input"], "123");
    bridge.stop().await;
}

/// The same DID through a CONFIG_API served by the test: the bot named in the
/// answer takes the call, with the given headers; a failing CONFIG_API gets
/// the caller a SIP error and a call log entry saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_api_names_the_bot() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bot = TestBot::listener(20 * SEC).await;
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let seen = asked.clone();
    let bot_url = bot.url();
    let api = axum::Router::new()
        .route(
            "/config",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let seen = seen.clone();
                let bot_url = bot_url.clone();
                async move {
                    seen.lock().unwrap().push(body);
                    axum::Json(json!({"url": bot_url, "wsHeaders": {"X-Tenant": "acme"},
                                      "audioFormat": {"encoding": "raw/slin", "sample_rate": 8000}}))
                }
            }),
        )
        .route(
            "/broken",
            axum::routing::post(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "oops") }),
        )
        .route(
            "/moved",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [("location", "http://169.254.169.254/latest/meta-data")],
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, api).await });
    let toml = format!(
        "[[dids]]\nnumber = \"+15550002000\"\nconfig_api = \"http://{api_addr}/config\"\n\n\
         [[dids]]\nnumber = \"+15550003000\"\nconfig_api = \"http://{api_addr}/broken\"\n\n\
         [[dids]]\nnumber = \"+15550004000\"\nconfig_api = \"http://{api_addr}/moved\"\n"
    );
    let bridge = start_sip_bridge(dir.path(), &toml).await;
    let sip = bridge.sip_addr.unwrap();
    let sipp = Sipp::start(
        "uac_pcap_dtmf.xml",
        Some(sip),
        free_port(),
        &["-s", "+15550002000"],
    );
    let (code, errors) = sipp.finish(40 * SEC).await;
    assert_eq!(code, 0, "SIPp call succeeded; its errors: {errors}");
    let conns = bot.finished(1, 10 * SEC).await;
    assert!(conns[0]
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("x-tenant") && v == "acme"));
    assert!(conns[0].count("media") > 100);
    let body = asked.lock().unwrap()[0].clone();
    assert_eq!(body["To"], "+15550002000");
    assert_eq!(body["From"], "+15557654321");
    assert_eq!(body["Direction"], "inbound");
    for key in ["FlowId", "SessionId", "ServerId"] {
        assert!(
            body[key].is_string(),
            "CONFIG_API request has {key}: {body}"
        );
    }

    let sipp = Sipp::start(
        "uac_expect_480.xml",
        Some(sip),
        free_port(),
        &["-s", "+15550003000"],
    );
    let (code, errors) = sipp.finish(20 * SEC).await;
    assert_eq!(code, 0, "the caller got 480; SIPp errors: {errors}");
    let log = wait_log(bridge.addr, 2).await;
    let failed = log.iter().find(|r| r["did_no"] == "+15550003000").unwrap();
    assert_eq!(failed["call_state"], "failed");
    assert_eq!(failed["end_reason"], "config_api_failed");

    // A CONFIG_API that redirects into the cloud metadata service: the
    // redirect is not followed, and the caller gets 480.
    let sipp = Sipp::start(
        "uac_expect_480.xml",
        Some(sip),
        free_port(),
        &["-s", "+15550004000"],
    );
    let (code, errors) = sipp.finish(20 * SEC).await;
    assert_eq!(code, 0, "the caller got 480; SIPp errors: {errors}");
    let log = wait_log(bridge.addr, 3).await;
    let refused = log.iter().find(|r| r["did_no"] == "+15550004000").unwrap();
    assert_eq!(refused["call_state"], "failed", "{refused}");
    assert_eq!(refused["end_reason"], "config_api_failed", "{refused}");
    bridge.stop().await;
}

fn trunk_config(trunk_port: u16, extra: &str) -> String {
    format!(
        "[calls]\nring_timeout_secs = 2\n\n[[sip.trunks]]\nname = \"t1\"\nhost = \"127.0.0.1\"\nport = {trunk_port}\n\n\
         [[routes]]\nprefix = \"+1555\"\ntrunk = \"t1\"\n{extra}"
    )
}

/// Outcomes from a SIPp trunk: 486, no answer (CANCEL at the ring timeout),
/// 603: the call log says busy, no-answer, failed, with the codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_outcomes_reach_the_call_log() {
    if !sipp_available() {
        return;
    }
    let cases = [
        ("uas_busy.xml", "busy", 486),
        ("uas_noanswer.xml", "no-answer", 408),
        ("uas_decline.xml", "failed", 603),
    ];
    for (file, state, code) in cases {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let uas = Sipp::start(file, None, port, &[]);
        let bridge = start_sip_bridge(dir.path(), &trunk_config(port, "")).await;
        let logid = dial(
            bridge.addr,
            json!({"customer_no": "+15551230000", "wss_url": "ws://127.0.0.1:9/"}),
        )
        .await;
        let rec = wait_final(bridge.addr, logid, 15 * SEC).await;
        assert_eq!(rec["call_state"], state, "{file}: {rec}");
        assert_eq!(rec["sip_code"], code, "{file}: {rec}");
        let (exit, errors) = uas.finish(15 * SEC).await;
        assert_eq!(
            exit, 0,
            "{file}: SIPp saw the call go as scripted: {errors}"
        );
        bridge.stop().await;
    }
}

/// A trunk that answers and echoes RTP: the bot hears its own audio back
/// through the phone network, and its hangup ends the call with a BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_call_carries_audio_both_ways() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let uas = Sipp::start("uas_answer.xml", None, port, &["-rtp_echo"]);
    let bridge = start_sip_bridge(dir.path(), &trunk_config(port, "")).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 10 * SEC).await;
        // 1 s of a 500 Hz tone; the trunk echoes it back.
        let tone: Vec<i16> = (0..8000)
            .map(|i| {
                ((i as f64 * 2.0 * std::f64::consts::PI * 500.0 / 8000.0).sin() * 8000.0) as i16
            })
            .collect();
        c.send_audio(&tone).await;
        let mut loud = 0;
        for _ in 0..150 {
            if let BotEvent::Media { payload, .. } = c.until("media", 5 * SEC).await {
                let s: Vec<i16> = payload
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                if codecs::pcm::rms(&s) > 1000.0 {
                    loud += 1;
                }
            }
        }
        assert!(
            loud > 30,
            "the bot heard its tone echoed by the trunk ({loud} loud chunks)"
        );
        // Keys, then hang up at once: the keys still go out before the BYE
        // (the trunk echoes them back, so they come back as the phone's keys).
        c.send(r#"{"type":"session.dtmf","dtmf":"5#"}"#).await;
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(10 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+15551239999", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["call_state"], "completed", "{rec}");
    assert_eq!(rec["end_reason"], "bot_hangup");
    assert_eq!(
        rec["dtmf_input"], "5#",
        "the bot's keys went out as RFC 4733 before the hangup: {rec}"
    );
    let conns = bot.finished(1, 10 * SEC).await;
    assert_stream_contiguous(&conns[0].events);
    let (exit, errors) = uas.finish(15 * SEC).await;
    assert_eq!(exit, 0, "SIPp got the BYE: {errors}");
    bridge.stop().await;
}

/// Extensions: REGISTER with digest auth binds the contact, a wrong password
/// gets 403 and no binding; a call to the extension rings the registered UAS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_registers_with_digest_and_is_rung() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = "[calls]\nring_timeout_secs = 5\n\n[[sip.extensions]]\nnumber = \"101\"\npassword = \"s3cret\"\n";
    let bridge = start_sip_bridge(dir.path(), toml).await;
    let sip = bridge.sip_addr.unwrap();

    let bad = Sipp::start(
        "register_fail.xml",
        Some(sip),
        free_port(),
        &["-s", "101", "-au", "101", "-ap", "wrong"],
    );
    let (code, errors) = bad.finish(15 * SEC).await;
    assert_eq!(code, 0, "wrong password answered 403: {errors}");
    assert!(!bridge.engine.sip().unwrap().is_registered("101"));

    // The extension's phone: a SIPp UAS on its own port.
    let phone_port = free_port();
    let phone = Sipp::start("uas_answer.xml", None, phone_port, &["-rtp_echo"]);
    let reg = register(sip, "101", "s3cret", phone_port);
    let (code, errors) = reg.finish(15 * SEC).await;
    assert_eq!(
        code, 0,
        "REGISTER with the right password succeeded: {errors}"
    );
    assert!(bridge.engine.sip().unwrap().is_registered("101"));

    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 10 * SEC).await;
        for _ in 0..25 {
            c.until("media", 5 * SEC).await;
        }
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(10 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "101", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(
        rec["call_state"], "completed",
        "the extension answered: {rec}"
    );
    let (code, errors) = phone.finish(15 * SEC).await;
    assert_eq!(
        code, 0,
        "the extension's phone rang, answered and got the BYE: {errors}"
    );
    bridge.stop().await;
}

/// Bad input: garbage on the SIP port, an SDP with no common codec (488),
/// garbage on RTP ports, and a full RTP port range (503): no crash, and
/// other calls go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_without_harm() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bot = TestBot::listener(30 * SEC).await;
    // One RTP port only, so a second concurrent call finds none.
    let toml = format!(
        "[sip]\nrtp_port_min = 31400\nrtp_port_max = 31401\n\n[[dids]]\nnumber = \"+15550001000\"\nbot_url = \"{}\"\n",
        bot.url()
    );
    let bridge = start_sip_bridge(dir.path(), &toml).await;
    let sip = bridge.sip_addr.unwrap();

    // Garbage on the SIP port.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for msg in [
        &b"\x00\x01garbage\xff"[..],
        b"INVITE nonsense\r\n\r\n",
        b"SIP/2.0 999\r\n",
    ] {
        junk.send_to(msg, sip).unwrap();
    }
    // No common codec: 488.
    let sipp = Sipp::start(
        "uac_g722_only.xml",
        Some(sip),
        free_port(),
        &["-s", "+15550001000"],
    );
    let (code, errors) = sipp.finish(15 * SEC).await;
    assert_eq!(code, 0, "an offer with no common codec got 488: {errors}");

    // A good call, with garbage sprayed at the RTP port while it runs.
    let good = Sipp::start(
        "uac_pcap_dtmf.xml",
        Some(sip),
        free_port(),
        &["-s", "+15550001000"],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..50 {
        let _ = junk.send_to(b"\x80\x00 not really rtp", "127.0.0.1:31400");
        let _ = junk.send_to(
            &[0x80, 0x08, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4, 0xd5, 0xd5],
            "127.0.0.1:31400",
        );
    }
    // A second call while the only RTP port is taken: 503.
    let full = Sipp::start(
        "uac_expect_503.xml",
        Some(sip),
        free_port(),
        &["-s", "+15550001000"],
    );
    let (code, errors) = full.finish(15 * SEC).await;
    assert_eq!(code, 0, "a full RTP port range answered 503: {errors}");
    let (code, errors) = good.finish(40 * SEC).await;
    assert_eq!(code, 0, "the good call went on to the end: {errors}");
    let conns = bot.finished(1, 10 * SEC).await;
    assert_stream_contiguous(&conns[0].events);
    let digits = conns[0].count("dtmf");
    assert_eq!(digits, 3, "the good call's digits all arrived");
    bridge.stop().await;
}

/// A DID routed to an extension: the caller (SIPp) rings the registered
/// extension (another SIPp, echoing media), they talk, the caller's BYE ends
/// both legs, and the keys pressed are in the call log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn did_rings_a_registered_extension() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = "[[sip.extensions]]\nnumber = \"202\"\npassword = \"pw202\"\n\n\
                [[dids]]\nnumber = \"+15550004000\"\nextension = \"202\"\n";
    let bridge = start_sip_bridge(dir.path(), toml).await;
    let sip = bridge.sip_addr.unwrap();
    let phone_port = free_port();
    let phone = Sipp::start("uas_answer.xml", None, phone_port, &["-rtp_echo"]);
    let reg = register(sip, "202", "pw202", phone_port);
    let (code, errors) = reg.finish(15 * SEC).await;
    assert_eq!(code, 0, "the extension registered: {errors}");

    let caller = Sipp::start(
        "uac_pcap_dtmf.xml",
        Some(sip),
        free_port(),
        &["-s", "+15550004000"],
    );
    let (code, errors) = caller.finish(40 * SEC).await;
    assert_eq!(
        code, 0,
        "the caller was answered by the extension and hung up: {errors}"
    );
    let (code, errors) = phone.finish(15 * SEC).await;
    assert_eq!(
        code, 0,
        "the extension rang, answered and got the BYE: {errors}"
    );
    let log = wait_log(bridge.addr, 1).await;
    assert_eq!(log[0]["call_type"], "inbound");
    assert_eq!(log[0]["call_state"], "completed", "{:?}", log[0]);
    assert_eq!(log[0]["end_reason"], "callended");
    assert_eq!(log[0]["dtmf_input"], "123");
    assert_eq!(log[0]["attended_by"], "extension");
    // The recording has the caller's speech and, from the extension's echo, the
    // same speech coming back.
    let pcm = recording(bridge.addr, &log[0]).await;
    let loud = |ch: Vec<i16>| {
        ch.chunks(160)
            .filter(|f| codecs::pcm::rms(f) > 300.0)
            .count()
    };
    assert!(loud(pcm.channel(0)) > 50, "the caller spoke");
    assert!(
        loud(pcm.channel(1)) > 50,
        "the caller heard the extension (its echo)"
    );
    bridge.stop().await;
}
