//! Transfers over SIP: a caller on a SIP phone (`common::phone`) reaches a
//! DID's bot, which transfers it to two SIPp trunk targets at once. The one
//! that only rings must see a CANCEL; the one that answers echoes RTP, so the
//! caller hearing its own frames back proves both directions of the bridge.
//!
//! Needs `sipp` on the PATH (`.ci/run` installs it).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::phone::SipPhone;
use common::sipp::*;
use common::*;
use protocol::{BotEvent, StopReason};

const DID: &str = "+15550004000";

/// The caller (a SIP phone) talks for 3 s and hangs up. It must hear its own
/// frames back, unchanged, through the echoing target it was transferred to,
/// on one RTP stream with no gap where the peer changed.
async fn talk_and_hear_the_echo(bridge: &bridge::server::Running) {
    let mut phone = SipPhone::call(bridge.sip_addr.unwrap(), DID, "+15557650009").await;
    let codes = stable_ulaw_codes();
    let frames = 150; // 3 s
    let sent: Vec<Vec<u8>> = (0..frames).map(|n| ulaw_frame(&codes, n)).collect();
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    let ts0: u32 = rand::random();
    for (n, payload) in sent.iter().enumerate() {
        clock.tick().await;
        phone
            .send_rtp(n == 0, 0, ts0.wrapping_add(160 * n as u32), payload)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    phone.hang_up().await;

    // The caller heard its own frames back, unchanged, through the agent's echo.
    let sent_set: HashSet<&[u8]> = sent.iter().map(|p| p.as_slice()).collect();
    let received = phone.received();
    let echoed = received
        .iter()
        .filter(|r| sent_set.contains(r.payload.as_slice()))
        .count();
    assert!(
        echoed >= 50,
        "the caller heard {echoed} of its frames back through the agent ({} packets received)",
        received.len()
    );
    assert_one_stream(&received);
}

/// The peer changed (bot, flow, agent) without a gap: one RTP stream, every
/// packet 20 ms after the one before, none missing.
fn assert_one_stream(received: &[common::phone::Received]) {
    for w in received.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "a packet missing");
        assert_eq!(
            w[1].ts.wrapping_sub(w[0].ts),
            160,
            "a gap in the caller's audio at seq {}",
            w[1].seq
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_transfers_a_sip_caller_to_the_trunk_target_that_answers() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ringing_port = free_port();
    let mut answering_port = free_port();
    while answering_port.abs_diff(ringing_port) < 4 {
        answering_port = free_port();
    }
    let ringing = Sipp::start("uas_noanswer.xml", None, ringing_port, &[]);
    let answering = Sipp::start("uas_answer.xml", None, answering_port, &["-rtp_echo"]);
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 10 * SEC).await;
        c.send(
            r#"{"type":"session.transfer","destination":["+15551110000","+15552220000"],"timeout":10}"#,
        )
        .await;
        c.drain(15 * SEC).await;
        c
    })
    .await;
    let toml = format!(
        "[calls]\nring_timeout_secs = 5\n\n\
         [[dids]]\nnumber = \"{DID}\"\nbot_url = \"{}\"\n\n\
         [[sip.trunks]]\nname = \"ringing\"\nhost = \"127.0.0.1\"\nport = {ringing_port}\n\n\
         [[sip.trunks]]\nname = \"answering\"\nhost = \"127.0.0.1\"\nport = {answering_port}\n\n\
         [[routes]]\nprefix = \"+1555111\"\ntrunk = \"ringing\"\n\n\
         [[routes]]\nprefix = \"+1555222\"\ntrunk = \"answering\"\n",
        bot.url()
    );
    let bridge = start_sip_bridge(dir.path(), &toml).await;

    talk_and_hear_the_echo(&bridge).await;

    let conns = bot.finished(1, 10 * SEC).await;
    assert_stream_contiguous(&conns[0].events);
    assert!(matches!(
        conns[0].events.last(),
        Some(BotEvent::Stop {
            reason: StopReason::Transferred,
            ..
        })
    ));
    let (exit, errors) = ringing.finish(15 * SEC).await;
    assert_eq!(exit, 0, "the target that rang got a CANCEL: {errors}");
    let (exit, errors) = answering.finish(15 * SEC).await;
    assert_eq!(exit, 0, "the agent got the BYE: {errors}");

    let (_, log) = http_json(
        bridge.addr,
        "POST",
        "/api/call_logs",
        Some(TOKEN),
        Some("{}"),
    )
    .await;
    let rec = &log["data"][0];
    assert_eq!(rec["end_reason"], "callended", "{rec}");
    assert_eq!(rec["attended_by"], "agent");
    assert_eq!(rec["agent_no"], "+15552220000");
    let outcomes: Vec<&str> = rec["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["cancelled", "answered"]);
    bridge.stop().await;
}

/// `session.transfer_extension` rings an extension registered with the
/// bridge's registrar (SIPp registers a Contact, another SIPp answers there and
/// echoes RTP): the caller is bridged to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_transfers_a_sip_caller_to_a_registered_extension() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 10 * SEC).await;
        // Not configured: a failed transfer, and the bot keeps the call.
        c.send(r#"{"type":"session.transfer_extension","extension":"999"}"#)
            .await;
        match c.until("transfer_failed", 10 * SEC).await {
            BotEvent::TransferFailed { reason, .. } => assert_eq!(reason, "no_route"),
            _ => unreachable!(),
        }
        c.send(r#"{"type":"session.transfer_extension","extension":"101"}"#)
            .await;
        c.drain(15 * SEC).await;
        c
    })
    .await;
    let toml = format!(
        "[calls]\nring_timeout_secs = 5\n\n\
         [[dids]]\nnumber = \"{DID}\"\nbot_url = \"{}\"\n\n\
         [[sip.extensions]]\nnumber = \"101\"\npassword = \"s3cret\"\n",
        bot.url()
    );
    let bridge = start_sip_bridge(dir.path(), &toml).await;
    let phone_port = free_port();
    let extension = Sipp::start("uas_answer.xml", None, phone_port, &["-rtp_echo"]);
    let reg = register(bridge.sip_addr.unwrap(), "101", "s3cret", phone_port);
    let (code, errors) = reg.finish(15 * SEC).await;
    assert_eq!(code, 0, "REGISTER succeeded: {errors}");

    talk_and_hear_the_echo(&bridge).await;

    let conns = bot.finished(1, 10 * SEC).await;
    assert!(matches!(
        conns[0].events.last(),
        Some(BotEvent::Stop {
            reason: StopReason::Transferred,
            ..
        })
    ));
    let (exit, errors) = extension.finish(15 * SEC).await;
    assert_eq!(exit, 0, "the extension got the BYE: {errors}");
    let (_, log) = http_json(
        bridge.addr,
        "POST",
        "/api/call_logs",
        Some(TOKEN),
        Some("{}"),
    )
    .await;
    let rec = &log["data"][0];
    assert_eq!(rec["attended_by"], "agent", "{rec}");
    assert_eq!(rec["agent_no"], "101");
    let legs: Vec<(&str, &str)> = rec["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        legs,
        vec![("extension", "failed"), ("extension", "answered")]
    );
    bridge.stop().await;
}

/// An extension registered from two phones rings both; the one that answers
/// takes the caller and the other gets a CANCEL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_extension_rings_every_registered_phone() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 10 * SEC).await;
        c.send(r#"{"type":"session.transfer_extension","extension":"101"}"#)
            .await;
        c.drain(15 * SEC).await;
        c
    })
    .await;
    let toml = format!(
        "[calls]\nring_timeout_secs = 5\n\n\
         [[dids]]\nnumber = \"{DID}\"\nbot_url = \"{}\"\n\n\
         [[sip.extensions]]\nnumber = \"101\"\npassword = \"s3cret\"\n",
        bot.url()
    );
    let bridge = start_sip_bridge(dir.path(), &toml).await;
    let desk_port = free_port();
    let mut mobile_port = free_port();
    while mobile_port.abs_diff(desk_port) < 4 {
        mobile_port = free_port();
    }
    let desk = Sipp::start("uas_noanswer.xml", None, desk_port, &[]);
    let mobile = Sipp::start("uas_answer.xml", None, mobile_port, &["-rtp_echo"]);
    for port in [desk_port, mobile_port] {
        let (code, errors) = register(bridge.sip_addr.unwrap(), "101", "s3cret", port)
            .finish(15 * SEC)
            .await;
        assert_eq!(code, 0, "REGISTER from port {port}: {errors}");
    }

    talk_and_hear_the_echo(&bridge).await;

    let (exit, errors) = desk.finish(15 * SEC).await;
    assert_eq!(exit, 0, "the phone that only rang got a CANCEL: {errors}");
    let (exit, errors) = mobile.finish(15 * SEC).await;
    assert_eq!(exit, 0, "the phone that answered got the BYE: {errors}");
    let (_, log) = http_json(
        bridge.addr,
        "POST",
        "/api/call_logs",
        Some(TOKEN),
        Some("{}"),
    )
    .await;
    let rec = &log["data"][0];
    let mut outcomes: Vec<&str> = rec["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["outcome"].as_str().unwrap())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, vec!["answered", "cancelled"], "{rec}");
    assert_eq!(rec["agent_no"], "101");
    bridge.stop().await;
}

/// A flow over SIP: the bot hands a SIP caller to a menu; the caller hears
/// the prompt, presses a wrong key (RFC 4733 events only, no audio while the
/// key is held) and hears the prompt again, then presses 1 and is bridged to
/// extension 101, registered by a SIPp phone that answers and echoes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_menu_routes_a_sip_callers_key_to_a_registered_extension() {
    if !sipp_available() {
        return;
    }
    const PROMPT_VALUE: i16 = 2468;
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("menu.wav");
    write_wav(&prompt, &[PROMPT_VALUE; 8000]);
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 10 * SEC).await;
        c.send(r#"{"type":"session.flow_transfer","flow_id":"sales"}"#)
            .await;
        c.drain(15 * SEC).await;
        c
    })
    .await;
    let toml = format!(
        "[calls]\nring_timeout_secs = 5\n\n\
         [[dids]]\nnumber = \"{DID}\"\nbot_url = \"{}\"\n\n\
         [[sip.extensions]]\nnumber = \"101\"\npassword = \"s3cret\"\n\n\
         [[clips]]\nid = \"main_menu\"\nfile = \"{}\"\n\n\
         [[flows]]\nid = \"sales\"\nname = \"Sales\"\nentry_node = \"menu\"\n\
         [[flows.nodes]]\nid = \"menu\"\ntype = \"menu\"\n\
         config = {{ prompt_clip_id = \"main_menu\", timeout = 5, \
         options = [{{ digit = \"1\", next_node = \"desk\" }}] }}\n\
         [[flows.nodes]]\nid = \"desk\"\ntype = \"internal_dial\"\n\
         config = {{ target_id = \"101\", timeout = 10 }}\n",
        bot.url(),
        prompt.display()
    );
    let bridge = start_sip_bridge(dir.path(), &toml).await;
    let phone_port = free_port();
    let extension = Sipp::start("uas_answer.xml", None, phone_port, &["-rtp_echo"]);
    let (code, errors) = register(bridge.sip_addr.unwrap(), "101", "s3cret", phone_port)
        .finish(15 * SEC)
        .await;
    assert_eq!(code, 0, "REGISTER succeeded: {errors}");

    let mut phone = SipPhone::call(bridge.sip_addr.unwrap(), DID, "+15557650009").await;
    let codes = stable_ulaw_codes();
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    let ts0: u32 = rand::random();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    // 6 s: a wrong key (5) at 1.5 s, the choice (1) at 3 s, each held 100 ms.
    let mut n = 0u32;
    while n < 300 {
        let key = match n {
            75 => Some(5u8),
            150 => Some(1u8),
            _ => None,
        };
        let start = ts0.wrapping_add(160 * n);
        match key {
            Some(key) => {
                for held in 1..=5u16 {
                    clock.tick().await;
                    let end = held == 5;
                    let mut payload = vec![key, if end { 0x80 | 10 } else { 10 }];
                    payload.extend_from_slice(&(held * 160).to_be_bytes());
                    for _ in 0..if end { 3 } else { 1 } {
                        phone.send_rtp(held == 1, 101, start, &payload).await;
                    }
                    n += 1;
                }
            }
            None => {
                clock.tick().await;
                let payload = ulaw_frame(&codes, n as usize);
                phone.send_rtp(n == 0, 0, start, &payload).await;
                sent.push(payload);
                n += 1;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    phone.hang_up().await;

    let received = phone.received();
    assert_one_stream(&received);
    // The prompt twice (1 s each), then the caller's own frames through the
    // extension's echo, and never the prompt after the echo began.
    let prompt_code = codecs::g711::ulaw_encode(PROMPT_VALUE);
    let is_prompt = |r: &common::phone::Received| r.payload.iter().all(|&b| b == prompt_code);
    let prompts = received.iter().filter(|r| is_prompt(r)).count();
    assert!(
        (95..=105).contains(&prompts),
        "the caller heard {prompts} frames of the prompt, not two plays of 50"
    );
    let sent_set: HashSet<&[u8]> = sent.iter().map(|p| p.as_slice()).collect();
    let first_echo = received
        .iter()
        .position(|r| sent_set.contains(r.payload.as_slice()))
        .expect("the caller heard its frames through the extension");
    let echoed = received[first_echo..]
        .iter()
        .filter(|r| sent_set.contains(r.payload.as_slice()))
        .count();
    assert!(echoed >= 50, "{echoed} frames echoed by the extension");
    assert!(
        !received[first_echo..].iter().any(is_prompt),
        "the prompt went on after the caller was bridged"
    );

    let conns = bot.finished(1, 10 * SEC).await;
    assert!(matches!(
        conns[0].events.last(),
        Some(BotEvent::Stop {
            reason: StopReason::FlowTransfer,
            ..
        })
    ));
    let (exit, errors) = extension.finish(15 * SEC).await;
    assert_eq!(exit, 0, "the extension got the BYE: {errors}");
    let (_, log) = http_json(
        bridge.addr,
        "POST",
        "/api/call_logs",
        Some(TOKEN),
        Some("{}"),
    )
    .await;
    let rec = &log["data"][0];
    assert_eq!(rec["attended_by"], "agent", "{rec}");
    assert_eq!(rec["agent_no"], "101");
    assert_eq!(rec["dtmf_input"], "51", "{rec}");
    let legs: Vec<(&str, &str)> = rec["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(legs, vec![("flow", "answered"), ("extension", "answered")]);
    bridge.stop().await;
}
