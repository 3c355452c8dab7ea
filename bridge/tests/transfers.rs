//! Transfers end to end: REST API → engine → virtual phones, with a real
//! WebSocket bot on loopback asking for them. Each test checks what a caller,
//! an agent or a bot developer would notice: who the caller hears, what the
//! bot is told, and what the call log keeps.

mod common;

use std::path::Path;

use common::*;
use protocol::{BotEvent, StopReason};
use serde_json::{json, Value};

/// What the agent's phone says: a constant sample value, easy to find in
/// the recording's "heard" channel.
const AGENT_VALUE: i16 = 1234;
/// What the bot says after a failed transfer.
const BOT_VALUE: i16 = 777;

/// `secs` seconds of `value` as a WAV file.
fn write_wav_of(path: &Path, value: i16, secs: u32) {
    write_wav(path, &vec![value; 8000 * secs as usize]);
}

/// The bridge with an agent at `+1555777…` who answers after 500 ms, talks
/// (a constant value) at once and hangs up after 3 s.
async fn bridge_with_agent(dir: &Path) -> bridge::server::Running {
    bridge_with_agent_and(dir, "").await
}

/// [`bridge_with_agent`] with more `[calls]` keys.
async fn bridge_with_agent_and(dir: &Path, calls: &str) -> bridge::server::Running {
    let wav = dir.join("agent.wav");
    write_wav_of(&wav, AGENT_VALUE, 10);
    let cfg = bridge::config::Config::parse(&format!(
        r#"
[calls]
ring_timeout_secs = 5
max_duration_secs = 60
caller_id = "+15550100000"
{calls}

[[carrier.phones]]
prefix = "+1555777"
ring_ms = 500
play = "{}"
speak_after_ms = 0
hangup_after_ms = 3000
"#,
        wav.display()
    ))
    .unwrap();
    start_bridge_with(dir, cfg).await
}

fn count(samples: &[i16], value: i16) -> usize {
    samples.iter().filter(|&&s| s == value).count()
}

fn leg_outcomes(rec: &Value) -> Vec<(String, String, Value)> {
    rec["legs"]
        .as_array()
        .unwrap_or_else(|| panic!("legs in {rec}"))
        .iter()
        .map(|l| {
            (
                l["destination"].as_str().unwrap().to_string(),
                l["outcome"].as_str().unwrap().to_string(),
                l["sip_code"].clone(),
            )
        })
        .collect()
}

/// A bot that asks for `transfer` once the call starts, then listens until
/// the bridge closes its socket.
async fn transferring_bot(transfer: &'static str) -> TestBot {
    TestBot::spawn(move |mut c| async move {
        c.until("start", 5 * SEC).await;
        c.send(transfer).await;
        c.drain(10 * SEC).await;
        c
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_answered_bridges_the_caller_to_the_agent_and_stops_the_bot() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_with_agent(dir.path()).await;
    let bot = transferring_bot(r#"{"type":"session.transfer","destination":"+15557770001"}"#).await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["call_state"], "completed", "{rec}");
    assert_eq!(rec["end_reason"], "agent_hangup");
    assert_eq!(rec["attended_by"], "agent");
    assert_eq!(rec["agent_no"], "+15557770001");
    assert_eq!(
        leg_outcomes(&rec),
        vec![("+15557770001".into(), "answered".into(), Value::Null)]
    );
    assert_eq!(rec["legs"][0]["bridged"], true);

    let conns = bot.finished(1, 10 * SEC).await;
    let c = &conns[0];
    assert_stream_contiguous(&c.events);
    match c.events.last().unwrap() {
        BotEvent::Stop { reason, .. } => assert_eq!(*reason, StopReason::Transferred),
        e => panic!("last event {e:?}"),
    }
    // While the agent's phone rang (500 ms) the bot still heard the caller.
    assert!(c.count("media") >= 20, "{} media events", c.count("media"));

    // The caller heard the agent: about 3 s of the agent's audio.
    let pcm = recording(bridge.addr, &rec).await;
    let heard = count(&pcm.channel(1), AGENT_VALUE);
    assert!(
        (2 * 8000..=4 * 8000).contains(&heard),
        "the caller heard {heard} samples of the agent"
    );
    // The agent heard the caller (the virtual phone's speech) too.
    assert!(rec["phone"]["heard_ms"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_the_first_answer_wins_and_the_others_are_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_with_agent(dir.path()).await;
    // Busy after 200 ms, never answers, answers after 500 ms.
    let bot = transferring_bot(
        r#"{"type":"session.transfer","destination":["+99920001","+99930001","+15557770001"],"timeout":5}"#,
    )
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "agent_hangup", "{rec}");
    assert_eq!(
        leg_outcomes(&rec),
        vec![
            ("+99920001".into(), "busy".into(), json!(486)),
            ("+99930001".into(), "cancelled".into(), Value::Null),
            ("+15557770001".into(), "answered".into(), Value::Null),
        ]
    );
    // The one still ringing was cancelled the moment the agent answered.
    assert_eq!(rec["legs"][1]["ended_at"], rec["legs"][2]["answered_at"]);
    let conns = bot.finished(1, 10 * SEC).await;
    assert!(matches!(
        conns[0].events.last(),
        Some(BotEvent::Stop {
            reason: StopReason::Transferred,
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_skips_a_busy_target() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_with_agent(dir.path()).await;
    let bot = transferring_bot(
        r#"{"type":"session.transfer","destination":["+99920001","+15557770001"],"strategy":"sequential","timeout":5}"#,
    )
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["attended_by"], "agent", "{rec}");
    assert_eq!(
        leg_outcomes(&rec),
        vec![
            ("+99920001".into(), "busy".into(), json!(486)),
            ("+15557770001".into(), "answered".into(), Value::Null),
        ]
    );
    // The second was rung as soon as the first was busy, not after its timeout.
    let busy_end = rec["legs"][0]["ended_at"].as_str().unwrap().to_string();
    let second_rang = rec["legs"][1]["rang_at"].as_str().unwrap().to_string();
    assert_eq!(busy_end, second_rang);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_nobody_answers_the_bot_hears_why_and_keeps_talking() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_with_agent(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        c.send(
            r#"{"type":"session.transfer","destination":["+99920001","+99930001","+99940001","+15550009999"],"timeout":2}"#,
        )
        .await;
        // A second transfer while the first rings is refused.
        c.send(r#"{"type":"session.transfer","destination":"+15557770001"}"#)
            .await;
        match c.until("error", 5 * SEC).await {
            BotEvent::Error { code, .. } => assert_eq!(code, "transfer_in_progress"),
            _ => unreachable!(),
        }
        let failed = c.until("transfer_failed", 10 * SEC).await;
        // The bot keeps the call: it talks for a second, then hangs up.
        c.send_audio(&[BOT_VALUE; 8000]).await;
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(10 * SEC).await;
        c.events.push(failed);
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    assert_eq!(rec["attended_by"], "bot");
    assert_eq!(rec["agent_no"], "");
    assert_eq!(
        leg_outcomes(&rec),
        vec![
            ("+99920001".into(), "busy".into(), json!(486)),
            ("+99930001".into(), "no-answer".into(), json!(408)),
            ("+99940001".into(), "failed".into(), json!(503)),
            ("+15550009999".into(), "failed".into(), json!(404)),
        ]
    );
    let conns = bot.finished(1, 10 * SEC).await;
    let c = &conns[0];
    match c.events.last().unwrap() {
        BotEvent::TransferFailed {
            kind,
            destination,
            reason,
            attempts,
            ..
        } => {
            assert_eq!(kind, "session.transfer");
            assert_eq!(destination, "+99920001");
            assert_eq!(reason, "no-answer");
            let got: Vec<(&str, &str, Option<u16>)> = attempts
                .iter()
                .map(|a| (a.destination.as_str(), a.outcome.as_str(), a.sip_code))
                .collect();
            assert_eq!(
                got,
                vec![
                    ("+99920001", "busy", Some(486)),
                    ("+99930001", "no-answer", Some(408)),
                    ("+99940001", "failed", Some(503)),
                    ("+15550009999", "failed", Some(404)),
                ]
            );
        }
        e => panic!("{e:?}"),
    }
    // The bot's audio after the failure reached the caller.
    let pcm = recording(bridge.addr, &rec).await;
    assert_eq!(count(&pcm.channel(1), BOT_VALUE), 8000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transfers_get_errors_and_the_call_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_with_agent(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        let bad = [
            (
                r#"{"type":"session.transfer","destination":"+15557770001","caller_id":"+12125550000"}"#,
                "bad_field",
            ),
            (
                r#"{"type":"session.transfer","destination":"call me maybe"}"#,
                "bad_field",
            ),
            (r#"{"type":"session.transfer","destination":[]}"#, "bad_field"),
        ];
        for (msg, want) in bad {
            c.send(msg).await;
            match c.until("error", 5 * SEC).await {
                BotEvent::Error { code, message, .. } => {
                    assert_eq!(code, want, "{msg}: {message}");
                }
                _ => unreachable!(),
            }
            c.until("media", 5 * SEC).await;
        }
        // An unreachable number is a failed transfer, not a dropped call.
        c.send(r#"{"type":"session.transfer","destination":"+15550009999"}"#)
            .await;
        match c.until("transfer_failed", 5 * SEC).await {
            BotEvent::TransferFailed { reason, .. } => assert_eq!(reason, "no_route"),
            _ => unreachable!(),
        }
        c.until("media", 5 * SEC).await;
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(10 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    assert_eq!(bot.finished(1, 10 * SEC).await.len(), 1);
}

/// `transfer_ws` is make-before-break: bot B (whose handshake takes 1 s) gets
/// `connected` and `start` (same call, fresh stream) before bot A gets its
/// pending mark back and `stop` `transfer_ws`; A hears the caller until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_ws_hands_the_call_to_another_bot_make_before_break() {
    use futures::StreamExt;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_with_agent(dir.path()).await;
    // Bot B: accepts the socket only after a second, then talks and hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_url = format!("ws://{}/b", listener.local_addr().unwrap());
    let b_events: Arc<Mutex<Vec<(Instant, BotEvent)>>> = Arc::default();
    let b_keep = b_events.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio::time::sleep(SEC).await;
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let mut c = BotConn {
            ws,
            headers: vec![],
            path: String::new(),
            events: vec![],
        };
        let connected = Instant::now();
        c.until("start", 5 * SEC).await;
        b_keep
            .lock()
            .unwrap()
            .push((connected, c.events[0].clone()));
        b_keep
            .lock()
            .unwrap()
            .push((Instant::now(), c.events[1].clone()));
        c.send_audio(&[BOT_VALUE; 4000]).await;
        c.send(r#"{"type":"session.hangup"}"#).await;
        while let Some(ev) = c.ws.next().await {
            if ev.is_err() {
                break;
            }
        }
    });
    let a_events: Arc<Mutex<Vec<(Instant, BotEvent)>>> = Arc::default();
    let a_keep = a_events.clone();
    let a = TestBot::spawn(move |mut c| {
        let b_url = b_url.clone();
        let keep = a_keep.clone();
        async move {
            c.until("start", 5 * SEC).await;
            // Ten seconds of audio queued, a mark after it, then the transfer.
            c.send_audio(&vec![100i16; 80_000]).await;
            c.send(r#"{"type":"mark","name":"after-audio"}"#).await;
            c.send(&format!(
                r#"{{"type":"session.transfer_ws","url":"{b_url}"}}"#
            ))
            .await;
            while let Some(ev) = c.next_event(10 * SEC).await {
                keep.lock().unwrap().push((Instant::now(), ev));
            }
            c
        }
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": a.url(), "text": "hello"}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    assert_eq!(rec["attended_by"], "bot");

    let a_conn = a.finished(1, 10 * SEC).await;
    let a_start = match &a_conn[0].events[1] {
        BotEvent::Start { start, .. } => start.clone(),
        e => panic!("{e:?}"),
    };
    let a_ev = a_events.lock().unwrap().clone();
    let b_ev = b_events.lock().unwrap().clone();
    let names: Vec<&str> = a_ev.iter().rev().take(2).map(|(_, e)| e.name()).collect();
    assert_eq!(
        names,
        vec!["stop", "mark"],
        "A gets its mark back, then stop"
    );
    let (stop_at, stop) = a_ev.last().unwrap().clone();
    assert!(matches!(
        stop,
        BotEvent::Stop {
            reason: StopReason::TransferWs,
            ..
        }
    ));
    // A heard the caller while B's handshake took its second.
    assert!(
        a_ev.iter().filter(|(_, e)| e.name() == "media").count() >= 40,
        "A's media while B connected"
    );
    // B was connected and started before A was stopped. (The two sockets
    // are read by two tasks of a busy test machine, so their clocks may
    // disagree by a little; a bridge that stopped A first and then waited
    // for B's handshake would be late by the handshake, a second here.)
    assert_eq!(b_ev[0].1, BotEvent::Connected);
    assert!(b_ev[0].0 <= stop_at + std::time::Duration::from_millis(200));
    match &b_ev[1].1 {
        BotEvent::Start {
            start, stream_sid, ..
        } => {
            assert_eq!(start.call_sid, a_start.call_sid, "same call");
            assert_ne!(*stream_sid, a_start.stream_sid, "fresh stream");
            assert_eq!(start.custom_parameters["text"], "hello");
        }
        e => panic!("{e:?}"),
    }
    // The caller heard B, and none of A's queued audio after the switch.
    let pcm = recording(bridge.addr, &rec).await;
    assert_eq!(count(&pcm.channel(1), BOT_VALUE), 4000);
    let a_heard = count(&pcm.channel(1), 100);
    assert!(
        a_heard < 3 * 8000,
        "A's queue was dropped: {a_heard} samples heard"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_ws_to_an_unreachable_bot_fails_and_the_first_bot_keeps_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_with_agent(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        c.send(r#"{"type":"session.transfer_ws","url":"ws://127.0.0.1:9/nobody"}"#)
            .await;
        match c.until("transfer_failed", 10 * SEC).await {
            BotEvent::TransferFailed { kind, reason, .. } => {
                assert_eq!(kind, "session.transfer_ws");
                assert_eq!(reason, "bot_unreachable");
            }
            _ => unreachable!(),
        }
        c.send_audio(&[BOT_VALUE; 8000]).await;
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(10 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    let pcm = recording(bridge.addr, &rec).await;
    assert_eq!(count(&pcm.channel(1), BOT_VALUE), 8000);
}

/// A bot that drops mid-call (its socket closes without `session.hangup`):
/// the caller goes to `[calls] fallback`, hears the person there, and the call
/// log says `bot_lost` and where the call went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_drops_hands_the_caller_to_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_with_agent_and(dir.path(), "fallback = \"+15557770009\"").await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        c.until("media", 5 * SEC).await;
        // Gone, without a word: the TCP connection just closes.
        use tokio::io::AsyncWriteExt;
        let _ = c.ws.get_mut().shutdown().await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["call_state"], "completed", "{rec}");
    assert_eq!(rec["end_reason"], "bot_lost");
    assert_eq!(rec["attended_by"], "agent");
    assert_eq!(rec["agent_no"], "+15557770009");
    assert_eq!(
        leg_outcomes(&rec),
        vec![("+15557770009".into(), "answered".into(), Value::Null)]
    );
    let pcm = recording(bridge.addr, &rec).await;
    let heard = count(&pcm.channel(1), AGENT_VALUE);
    assert!(
        heard >= 8000,
        "the caller heard {heard} samples of the fallback"
    );
}

/// A fallback extension rings every phone it has, as a transfer to it does:
/// here two numbers the config adds (one never answers, the agent does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_extension_rings_all_its_phones() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_with_agent_and(
        dir.path(),
        "fallback = \"extension:101\"\n\n[[sip.extensions]]\nnumber = \"101\"\n\
         password = \"pw\"\nalso_ring = [\"+99930001\", \"+15557770003\"]\n",
    )
    .await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("media", 5 * SEC).await;
        use tokio::io::AsyncWriteExt;
        let _ = c.ws.get_mut().shutdown().await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_lost", "{rec}");
    assert_eq!(rec["agent_no"], "+15557770003");
    assert_eq!(
        leg_outcomes(&rec),
        vec![
            ("+99930001".into(), "cancelled".into(), Value::Null),
            ("+15557770003".into(), "answered".into(), Value::Null),
        ]
    );
    let pcm = recording(bridge.addr, &rec).await;
    assert!(count(&pcm.channel(1), AGENT_VALUE) >= 8000);
}

/// An extension rings the numbers the config adds to it (`also_ring`), here
/// with no phone registered (and SIP off): the agent's mobile answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_extension_rings_the_numbers_the_config_adds() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_with_agent_and(
        dir.path(),
        "\n[[sip.extensions]]\nnumber = \"200\"\npassword = \"pw\"\nalso_ring = [\"+15557770002\"]\n",
    )
    .await;
    let bot = transferring_bot(r#"{"type":"session.transfer_extension","extension":"200"}"#).await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "agent_hangup", "{rec}");
    assert_eq!(rec["agent_no"], "+15557770002");
    assert_eq!(
        leg_outcomes(&rec),
        vec![("+15557770002".into(), "answered".into(), Value::Null)]
    );
}

/// What a caller on hold hears.
const HOLD_VALUE: i16 = 4321;

/// The bridge for warm transfers: hold audio, a caller at `+1555999…` who
/// presses `7` 1.5 s after answering, an agent at `+1555888…` who answers
/// after 500 ms, talks at once and hangs up 4 s later, and one at
/// `+1555889…` who hangs up 1 s after answering.
async fn bridge_for_warm(dir: &Path) -> bridge::server::Running {
    let agent = dir.join("agent.wav");
    write_wav_of(&agent, AGENT_VALUE, 10);
    let hold = dir.join("hold.wav");
    write_wav_of(&hold, HOLD_VALUE, 1);
    let cfg = bridge::config::Config::parse(&format!(
        r#"
[calls]
ring_timeout_secs = 5
max_duration_secs = 60
caller_id = "+15550100000"
hold_audio = "{hold}"

[[carrier.phones]]
prefix = "+1555999"
ring_ms = 100
press = "7"
press_after_ms = 1500

[[carrier.phones]]
prefix = "+1555888"
ring_ms = 500
play = "{agent}"
speak_after_ms = 0
hangup_after_ms = 4000

[[carrier.phones]]
prefix = "+1555889"
ring_ms = 500
play = "{agent}"
speak_after_ms = 0
hangup_after_ms = 1000
"#,
        hold = hold.display(),
        agent = agent.display(),
    ))
    .unwrap();
    start_bridge_with(dir, cfg).await
}

/// The samples of every `media` event among `events`.
fn media_samples(events: &[BotEvent]) -> Vec<i16> {
    events
        .iter()
        .filter_map(|e| match e {
            BotEvent::Media { payload, .. } => Some(payload),
            _ => None,
        })
        .flat_map(|p| p.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])))
        .collect()
}

/// Reads events for `how_long`.
async fn listen_for(c: &mut BotConn, how_long: std::time::Duration) {
    let until = tokio::time::Instant::now() + how_long;
    while let Ok(Some(_)) = tokio::time::timeout_at(until, c.next_event(how_long)).await {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_transfer_briefs_the_agent_while_the_caller_holds_then_completes() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_for_warm(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        c.send(r#"{"type":"session.transfer","destination":"+15558880001","mode":"warm"}"#)
            .await;
        let answered = c.until("transfer_answered", 5 * SEC).await;
        let briefing_from = c.events.len();
        // The briefing: half a second of speech and a key, for the agent only.
        c.send_audio(&[BOT_VALUE; 4000]).await;
        c.send(r#"{"type":"session.dtmf","dtmf":"5"}"#).await;
        listen_for(&mut c, 1500 * MS).await;
        let briefing = c.events[briefing_from..].to_vec();
        c.send(r#"{"type":"session.transfer_complete"}"#).await;
        c.drain(10 * SEC).await;
        c.events.push(answered);
        c.events.extend(briefing);
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+15559990001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "agent_hangup", "{rec}");
    assert_eq!(rec["attended_by"], "agent");
    assert_eq!(rec["agent_no"], "+15558880001");
    assert_eq!(
        leg_outcomes(&rec),
        vec![("+15558880001".into(), "answered".into(), Value::Null)]
    );
    assert_eq!(rec["legs"][0]["bridged"], true);
    // The agent heard the bot's key and not the caller's (pressed while it
    // held); the caller did not hear the bot's key.
    assert_eq!(rec["legs"][0]["phone"]["heard_dtmf"], "5", "{rec}");
    assert_eq!(rec["phone"]["heard_dtmf"], "", "{rec}");

    let conns = bot.finished(1, 10 * SEC).await;
    let c = &conns[0];
    let answered_at = c
        .events
        .iter()
        .position(|e| e.name() == "transfer_answered")
        .unwrap();
    match &c.events[answered_at] {
        BotEvent::TransferAnswered {
            kind, destination, ..
        } => {
            assert_eq!(kind, "session.transfer");
            assert_eq!(destination, "+15558880001");
        }
        e => panic!("{e:?}"),
    }
    let stop = c
        .events
        .iter()
        .position(|e| e.name() == "stop")
        .expect("stop");
    match &c.events[stop] {
        BotEvent::Stop { reason, .. } => assert_eq!(*reason, StopReason::Transferred),
        e => panic!("{e:?}"),
    }
    // During the briefing the bot heard the agent, and no key of the caller's.
    let briefing = &c.events[stop + 1..];
    let heard = media_samples(briefing);
    assert!(
        count(&heard, AGENT_VALUE) >= 8000,
        "the bot heard {} samples of the agent while briefing",
        count(&heard, AGENT_VALUE)
    );
    assert!(!briefing.iter().any(|e| e.name() == "dtmf"));

    // The caller heard hold audio while the bot briefed, never the bot's
    // briefing, then the agent.
    let pcm = recording(bridge.addr, &rec).await;
    let heard = pcm.channel(1);
    assert!(
        count(&heard, HOLD_VALUE) >= 8000,
        "hold: {}",
        count(&heard, HOLD_VALUE)
    );
    assert_eq!(count(&heard, BOT_VALUE), 0);
    let first_agent = heard.iter().position(|&s| s == AGENT_VALUE).unwrap();
    let last_hold = heard.iter().rposition(|&s| s == HOLD_VALUE).unwrap();
    assert!(last_hold < first_agent, "hold audio after the agent");
    assert!(count(&heard, AGENT_VALUE) >= 8000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_transfer_cancelled_gives_the_caller_back_to_the_bot() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_for_warm(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        c.send(r#"{"type":"session.transfer","destination":"+15558880001","mode":"warm"}"#)
            .await;
        c.until("transfer_answered", 5 * SEC).await;
        listen_for(&mut c, 500 * MS).await;
        c.send(r#"{"type":"session.transfer_cancel"}"#).await;
        // Back with the caller: a second of speech, then goodbye.
        c.send_audio(&[BOT_VALUE; 8000]).await;
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(10 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+15559990001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    assert_eq!(rec["attended_by"], "bot");
    assert_eq!(rec["agent_no"], "");
    assert_eq!(
        leg_outcomes(&rec),
        vec![("+15558880001".into(), "cancelled".into(), Value::Null)]
    );
    let leg = &rec["legs"][0];
    assert_eq!(leg["bridged"], false);
    assert!(leg["answered_at"].is_string() && leg["ended_at"].is_string());

    let conns = bot.finished(1, 10 * SEC).await;
    match conns[0].events.last().unwrap() {
        BotEvent::Stop { reason, .. } => assert_eq!(*reason, StopReason::BotHangup),
        e => panic!("{e:?}"),
    }
    // The caller heard the bot again after the cancel, and never the agent.
    let pcm = recording(bridge.addr, &rec).await;
    let heard = pcm.channel(1);
    assert_eq!(count(&heard, BOT_VALUE), 8000);
    assert_eq!(count(&heard, AGENT_VALUE), 0);
    assert!(count(&heard, HOLD_VALUE) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_target_that_hangs_up_gives_transfer_failed_target_hung_up() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_for_warm(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        c.send(r#"{"type":"session.transfer","destination":"+15558890001","mode":"warm"}"#)
            .await;
        c.until("transfer_answered", 5 * SEC).await;
        // The agent hangs up while being briefed...
        let failed = c.until("transfer_failed", 5 * SEC).await;
        // ...and after the target left there is nothing to complete.
        c.send(r#"{"type":"session.transfer_complete"}"#).await;
        let refused = c.until("error", 5 * SEC).await;
        c.send_audio(&[BOT_VALUE; 8000]).await;
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(10 * SEC).await;
        c.events.push(failed);
        c.events.push(refused);
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+15559990001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    assert_eq!(rec["attended_by"], "bot");
    assert_eq!(rec["legs"][0]["outcome"], "answered");
    assert_eq!(rec["legs"][0]["bridged"], false);
    let conns = bot.finished(1, 10 * SEC).await;
    let c = &conns[0];
    match &c.events[c.events.len() - 2] {
        BotEvent::TransferFailed {
            reason, attempts, ..
        } => {
            assert_eq!(reason, "target_hung_up");
            assert_eq!(attempts[0].destination, "+15558890001");
            assert_eq!(attempts[0].outcome, "answered");
        }
        e => panic!("{e:?}"),
    }
    match c.events.last().unwrap() {
        BotEvent::Error { code, .. } => assert_eq!(code, "no_warm_transfer"),
        e => panic!("{e:?}"),
    }
    let pcm = recording(bridge.addr, &rec).await;
    assert_eq!(count(&pcm.channel(1), BOT_VALUE), 8000);
}

/// What a flow's menu prompt says.
const PROMPT_VALUE: i16 = 2468;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_plays_its_menu_replays_on_a_wrong_key_and_routes_a_choice_to_an_extension() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("menu.wav");
    write_wav_of(&prompt, PROMPT_VALUE, 1);
    let bridge = bridge_with_agent_and(
        dir.path(),
        &format!(
            r#"
[[sip.extensions]]
number = "101"
password = "pw"
also_ring = ["+15557770002"]

[[clips]]
id = "main_menu"
file = "{}"

[[flows]]
id = "sales"
name = "Sales"
entry_node = "menu"
[[flows.nodes]]
id = "menu"
type = "menu"
config = {{ prompt_clip_id = "main_menu", timeout = 5, options = [{{ digit = "1", next_node = "desk" }}] }}
[[flows.nodes]]
id = "desk"
type = "internal_dial"
config = {{ target_id = "101", timeout = 10 }}

[[carrier.phones]]
prefix = "+1555999"
ring_ms = 100
press = "51"
press_after_ms = 1500
press_interval_ms = 2000
"#,
            prompt.display()
        ),
    )
    .await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        // An unknown flow fails and the bot keeps the call...
        c.send(r#"{"type":"session.flow_transfer","flow_id":"nope"}"#)
            .await;
        let failed = c.until("transfer_failed", 5 * SEC).await;
        // ...then a known one takes the caller.
        c.send(r#"{"type":"session.flow_transfer","flow_id":"sales"}"#)
            .await;
        c.drain(10 * SEC).await;
        c.events.push(failed);
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+15559990001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "agent_hangup", "{rec}");
    assert_eq!(rec["attended_by"], "agent");
    assert_eq!(rec["agent_no"], "+15557770002");
    assert_eq!(
        leg_outcomes(&rec),
        vec![
            ("sales".into(), "answered".into(), Value::Null),
            ("+15557770002".into(), "answered".into(), Value::Null),
        ]
    );
    assert_eq!(rec["legs"][0]["kind"], "flow");
    assert_eq!(rec["legs"][0]["bridged"], false);
    assert!(rec["legs"][0]["ended_at"].is_string());
    assert_eq!(rec["legs"][1]["bridged"], true);

    let conns = bot.finished(1, 10 * SEC).await;
    let c = &conns[0];
    match c.events.last().unwrap() {
        BotEvent::TransferFailed { reason, kind, .. } => {
            assert_eq!(kind, "session.flow_transfer");
            assert_eq!(reason, "unknown_flow");
        }
        e => panic!("{e:?}"),
    }
    match &c.events[c.events.len() - 2] {
        BotEvent::Stop { reason, .. } => assert_eq!(*reason, StopReason::FlowTransfer),
        e => panic!("{e:?}"),
    }

    // The caller heard the prompt twice (the wrong key replayed it), then
    // the person at the extension.
    let pcm = recording(bridge.addr, &rec).await;
    let heard = pcm.channel(1);
    let prompt_heard = count(&heard, PROMPT_VALUE);
    assert!(
        prompt_heard >= 12000,
        "the caller heard {prompt_heard} samples of the prompt"
    );
    let last_prompt = heard.iter().rposition(|&s| s == PROMPT_VALUE).unwrap();
    let first_agent = heard.iter().position(|&s| s == AGENT_VALUE).unwrap();
    assert!(last_prompt < first_agent);
    assert!(count(&heard, AGENT_VALUE) >= 8000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_drops_with_a_prompt_fallback_plays_it_then_hangs_up() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("sorry.wav");
    write_wav_of(&prompt, PROMPT_VALUE, 1);
    let bridge = bridge_with_agent_and(
        dir.path(),
        &format!(
            "fallback = \"prompt:sorry\"\n\n[[clips]]\nid = \"sorry\"\nfile = \"{}\"\n",
            prompt.display()
        ),
    )
    .await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        c.until("media", 5 * SEC).await;
        // Gone, without a word: the TCP connection just closes.
        use tokio::io::AsyncWriteExt;
        let _ = c.ws.get_mut().shutdown().await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_lost", "{rec}");
    assert_eq!(rec["attended_by"], "flow");
    assert_eq!(
        leg_outcomes(&rec),
        vec![("sorry".into(), "answered".into(), Value::Null)]
    );
    assert_eq!(rec["legs"][0]["kind"], "prompt");
    let pcm = recording(bridge.addr, &rec).await;
    assert_eq!(count(&pcm.channel(1), PROMPT_VALUE), 8000);
}

/// A flow's `bot` node hands the caller to a bot: the first node's bot cannot
/// be reached, so its `next` takes the call to a second bot node, whose bot
/// gets the same call (fresh stream), hears the caller, talks and hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_bot_node_hands_the_caller_to_a_bot_after_an_unreachable_one() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBot::spawn(|mut c| async move {
        c.until("start", 5 * SEC).await;
        c.until("media", 5 * SEC).await;
        c.send_audio(&[BOT_VALUE; 8000]).await;
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(10 * SEC).await;
        c
    })
    .await;
    let bridge = bridge_with_agent_and(
        dir.path(),
        &format!(
            r#"
[[flows]]
id = "handoff"
name = "Hand-off"
entry_node = "gone"
[[flows.nodes]]
id = "gone"
type = "bot"
config = {{ wss_url = "ws://127.0.0.1:9/", next = "b" }}
[[flows.nodes]]
id = "b"
type = "bot"
config = {{ wss_url = "{}" }}
"#,
            b.url()
        ),
    )
    .await;
    let a = transferring_bot(r#"{"type":"session.flow_transfer","flow_id":"handoff"}"#).await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": a.url(), "text": "hello"}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 20 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    assert_eq!(rec["attended_by"], "bot");

    let a_conn = a.finished(1, 10 * SEC).await;
    let (a_sid, a_stream) = match &a_conn[0].events[1] {
        BotEvent::Start {
            start, stream_sid, ..
        } => (start.call_sid.clone(), stream_sid.clone()),
        e => panic!("{e:?}"),
    };
    assert!(matches!(
        a_conn[0].events.last(),
        Some(BotEvent::Stop {
            reason: StopReason::FlowTransfer,
            ..
        })
    ));
    let b_conn = b.finished(1, 10 * SEC).await;
    match &b_conn[0].events[1] {
        BotEvent::Start {
            start, stream_sid, ..
        } => {
            assert_eq!(start.call_sid, a_sid, "same call");
            assert_ne!(*stream_sid, a_stream, "fresh stream");
        }
        e => panic!("{e:?}"),
    }
    assert!(b_conn[0].count("media") > 0, "B heard the caller");
    let pcm = recording(bridge.addr, &rec).await;
    assert_eq!(
        count(&pcm.channel(1), BOT_VALUE),
        8000,
        "the caller heard B"
    );
}

/// The live-call registry: a running call is reached by its call sid from
/// outside (as REST call control will): a transfer to an extension under
/// the bot's rules (a second one while it rings is refused), then a hangup;
/// an ended call is no longer live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_call_takes_commands_by_its_call_sid() {
    use bridge::engine::{CallCommand, CommandError};
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_with_agent_and(
        dir.path(),
        "[[sip.extensions]]\nnumber = \"101\"\npassword = \"pw\"\nalso_ring = [\"+15557770002\"]\n",
    )
    .await;
    let bot = TestBot::spawn(|mut c| async move {
        c.drain(10 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let sid = wait_in_progress(bridge.addr, logid, 5 * SEC).await;
    let calls = bridge.engine.calls();
    assert_eq!(calls.live(), vec![sid.clone()]);
    assert_eq!(
        calls.command("CAnot-a-call", CallCommand::Hangup).await,
        Err(CommandError::NotLive)
    );
    calls
        .command(&sid, CallCommand::TransferExtension("101".into()))
        .await
        .expect("the transfer starts");
    match calls
        .command(&sid, CallCommand::TransferExtension("101".into()))
        .await
    {
        Err(CommandError::Refused { code, .. }) => {
            assert_eq!(code, protocol::ErrorCode::TransferInProgress)
        }
        r => panic!("{r:?}"),
    }
    // The agent answers after 500 ms; the caller is with it, then the API
    // hangs up before the agent would (3 s).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    calls.command(&sid, CallCommand::Hangup).await.unwrap();
    let rec = wait_final(bridge.addr, logid, 10 * SEC).await;
    assert_eq!(rec["end_reason"], "api_hangup", "{rec}");
    assert_eq!(rec["call_state"], "completed");
    assert_eq!(rec["attended_by"], "agent");
    assert_eq!(rec["agent_no"], "+15557770002");
    assert_eq!(
        calls.command(&sid, CallCommand::Hangup).await,
        Err(CommandError::NotLive)
    );
    assert!(calls.live().is_empty());
    let conns = bot.finished(1, 10 * SEC).await;
    assert!(matches!(
        conns[0].events.last(),
        Some(BotEvent::Stop {
            reason: StopReason::Transferred,
            ..
        })
    ));
    let pcm = recording(bridge.addr, &rec).await;
    assert!(
        count(&pcm.channel(1), AGENT_VALUE) >= 4000,
        "the caller heard the agent"
    );
}

/// A hangup through the registry ends a bot's call: the bot gets `stop`
/// `callended` and the log says `api_hangup`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_command_ends_a_bot_call() {
    use bridge::engine::CallCommand;
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_with_agent(dir.path()).await;
    let bot = TestBot::spawn(|mut c| async move {
        c.until("media", 5 * SEC).await;
        c.drain(10 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": bot.url()}),
    )
    .await;
    let sid = wait_in_progress(bridge.addr, logid, 5 * SEC).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    bridge
        .engine
        .calls()
        .command(&sid, CallCommand::Hangup)
        .await
        .unwrap();
    let rec = wait_final(bridge.addr, logid, 10 * SEC).await;
    assert_eq!(rec["end_reason"], "api_hangup", "{rec}");
    assert_eq!(rec["attended_by"], "bot");
    let conns = bot.finished(1, 10 * SEC).await;
    assert!(matches!(
        conns[0].events.last(),
        Some(BotEvent::Stop {
            reason: StopReason::CallEnded,
            ..
        })
    ));
}

/// `Attach` through the registry hands a bot's call to another bot, as
/// `session.transfer_ws` does: the new bot gets the same call, the old one
/// `stop` `transfer_ws`. A URL that is not a WebSocket URL is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_command_hands_the_call_to_another_bot() {
    use bridge::engine::{CallCommand, CommandError};
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge_with_agent(dir.path()).await;
    let b = TestBot::spawn(|mut c| async move {
        c.until("media", 5 * SEC).await;
        c.send_audio(&[BOT_VALUE; 4000]).await;
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(10 * SEC).await;
        c
    })
    .await;
    let a = TestBot::spawn(|mut c| async move {
        c.drain(10 * SEC).await;
        c
    })
    .await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+99910001", "wss_url": a.url()}),
    )
    .await;
    let sid = wait_in_progress(bridge.addr, logid, 5 * SEC).await;
    let calls = bridge.engine.calls();
    match calls
        .command(&sid, CallCommand::Attach("http://example.com/".into()))
        .await
    {
        Err(CommandError::Refused { code, .. }) => assert_eq!(code, protocol::ErrorCode::BadField),
        r => panic!("{r:?}"),
    }
    // The call is answered before its bot is connected (connect after
    // answer); until the bot is there the call has no bot to hand over.
    let deadline = tokio::time::Instant::now() + 5 * SEC;
    loop {
        match calls.command(&sid, CallCommand::Attach(b.url())).await {
            Ok(()) => break,
            Err(CommandError::Refused {
                code: protocol::ErrorCode::TransferRefused,
                ..
            }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("attach: {e:?}"),
        }
    }
    let rec = wait_final(bridge.addr, logid, 10 * SEC).await;
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    let a_conn = a.finished(1, 10 * SEC).await;
    assert!(matches!(
        a_conn[0].events.last(),
        Some(BotEvent::Stop {
            reason: StopReason::TransferWs,
            ..
        })
    ));
    let b_conn = b.finished(1, 10 * SEC).await;
    match &b_conn[0].events[1] {
        BotEvent::Start { start, .. } => assert_eq!(start.call_sid, sid),
        e => panic!("{e:?}"),
    }
    let pcm = recording(bridge.addr, &rec).await;
    assert_eq!(
        count(&pcm.channel(1), BOT_VALUE),
        4000,
        "the caller heard B"
    );
}
