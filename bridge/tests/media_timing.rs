//! Media timing through the bridge, measured from outside: a SIP phone on
//! loopback (`common::phone`) calls a DID whose bot echoes what it hears. Every
//! frame the phone sends carries its own pattern, so what reaches the bot and
//! what comes back to the phone can be compared byte for byte:
//! - the phone's first frame reaches the bot (it used to be lost: it arrived
//!   before the bridge had taken in its own answer);
//! - the echo comes back whole, in order, with consecutive RTP sequence numbers
//!   and timestamps, and no frame of silence inserted (a bot frame arriving
//!   just after the bridge's tick used to get a filler frame before it);
//! - keys sent as RFC 4733 events alone, with no audio while held, do not hold
//!   up the bot's `media` (they used to stall it ~60 ms per key).
//!
//! Each test runs one call, one at a time, so that no other test's load
//! shifts the timing.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use codecs::g711::Law;
use common::phone::SipPhone;
use common::*;
use protocol::BotEvent;

const DID: &str = "+15550002000";

async fn start_sip_bridge(dir: &std::path::Path, bot_url: &str) -> bridge::server::Running {
    init_logs();
    let toml = format!("[[dids]]\nnumber = \"{DID}\"\nbot_url = \"{bot_url}\"\n");
    bridge::server::start(bridge::server::Options {
        http: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        api_token: Some(TOKEN.into()),
        sip: Some("127.0.0.1:0".parse().unwrap()),
        config: bridge::config::Config::parse(&toml).expect("test config"),
    })
    .await
    .expect("bridge with SIP starts")
}

/// A bot that sends back every `media` payload as an audio delta the moment
/// it gets it, and keeps every event.
async fn echo_bot() -> TestBot {
    TestBot::spawn(|mut c| async move {
        while let Some(ev) = c.next_event(20 * SEC).await {
            if let BotEvent::Media { payload, .. } = ev {
                let msg = format!(
                    r#"{{"type":"response.audio.delta","delta":"{}"}}"#,
                    base64::engine::general_purpose::STANDARD.encode(&payload)
                );
                c.send(&msg).await;
            }
        }
        c
    })
    .await
}

/// A bot's `media` payload (PCM16 LE) as µ-law.
fn as_ulaw(payload: &[u8]) -> Vec<u8> {
    payload
        .chunks_exact(2)
        .map(|b| Law::Ulaw.encode(i16::from_le_bytes([b[0], b[1]])))
        .collect()
}

fn media_payloads(events: &[BotEvent]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            BotEvent::Media { payload, .. } => Some(as_ulaw(payload)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_speech_comes_back_whole_first_frame_included_nothing_inserted() {
    let _serial = ONE_AT_A_TIME.lock().await;
    const FRAMES: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let bot = echo_bot().await;
    let bridge = start_sip_bridge(dir.path(), &bot.url()).await;
    let codes = stable_ulaw_codes();
    let sent: Vec<Vec<u8>> = (0..FRAMES).map(|n| ulaw_frame(&codes, n)).collect();

    let mut phone = SipPhone::call(bridge.sip_addr.unwrap(), DID, "+15557650001").await;
    // The phone talks from the moment it has the answer, as phones do.
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    let ts0: u32 = rand::random();
    for (n, payload) in sent.iter().enumerate() {
        clock.tick().await;
        phone
            .send_rtp(n == 0, 0, ts0.wrapping_add(160 * n as u32), payload)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    phone.hang_up().await;

    let conns = bot.finished(1, 10 * SEC).await;
    assert_stream_contiguous(&conns[0].events);
    // The bot heard every frame, the first included, in order, with nothing
    // but silence before the first.
    let heard = media_payloads(&conns[0].events);
    let first = heard
        .iter()
        .position(|p| p.iter().any(|&c| Law::Ulaw.decode(c) != 0))
        .expect("the bot heard the phone");
    assert!(
        heard.len() >= first + FRAMES,
        "{} chunks after the first sound, {FRAMES} sent",
        heard.len() - first
    );
    for (n, want) in sent.iter().enumerate() {
        assert!(
            &heard[first + n] == want,
            "the bot's chunk {} is not the phone's frame {n} (first frame reached the bot: {})",
            first + n + 1,
            heard[first] == sent[0]
        );
    }

    // The phone heard the echo of every frame, each in the packet after the
    // one before: consecutive sequence numbers and timestamps, no filler.
    let got = phone.received();
    let start = got
        .iter()
        .position(|p| p.payload == sent[0])
        .expect("the echo of the phone's first frame came back");
    let echo = &got[start..];
    assert!(
        echo.len() >= FRAMES,
        "{} packets after the first echo",
        echo.len()
    );
    for n in 0..FRAMES {
        let p = &echo[n];
        let which = sent.iter().position(|s| *s == p.payload);
        assert_eq!(
            which,
            Some(n),
            "packet {n} after the first echo should carry frame {n}"
        );
        if n > 0 {
            let prev = &echo[n - 1];
            assert_eq!(p.seq, prev.seq.wrapping_add(1), "sequence at frame {n}");
            assert_eq!(p.ts, prev.ts.wrapping_add(160), "timestamp at frame {n}");
            assert!(!p.marker, "frame {n} is not a new talkspurt");
        }
    }
    bridge.stop().await;
}

/// The tests of this file run one at a time: each measures one call's timing.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Keys sent as RFC 4733 events only, then the phone going quiet: the bot's
/// chunks keep pace with the phone. The test counts the phone's 20 ms steps
/// as it sends; the bot notes the step count as each chunk arrives. A chunk
/// that comes when the phone is more than a step past its frame was held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_sent_as_events_only_and_a_quiet_phone_do_not_hold_up_media() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let step = Arc::new(AtomicUsize::new(0));
    // (chunk has sound, phone's step when it arrived); digits as they came.
    let arrivals = Arc::new(Mutex::new((Vec::<(bool, usize)>::new(), String::new())));
    let bot = {
        let (step, arrivals) = (step.clone(), arrivals.clone());
        TestBot::spawn(move |mut c| {
            let (step, arrivals) = (step.clone(), arrivals.clone());
            async move {
                while let Some(ev) = c.next_event(20 * SEC).await {
                    let at = step.load(Ordering::SeqCst);
                    let mut a = arrivals.lock().unwrap();
                    match ev {
                        BotEvent::Media { payload, .. } => {
                            a.0.push((payload.iter().any(|&b| b != 0), at))
                        }
                        BotEvent::Dtmf { digit, .. } => a.1.push(digit),
                        _ => {}
                    }
                }
                c
            }
        })
        .await
    };
    let bridge = start_sip_bridge(dir.path(), &bot.url()).await;
    let codes = stable_ulaw_codes();

    let mut phone = SipPhone::call(bridge.sip_addr.unwrap(), DID, "+15557650002").await;
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    let ts0: u32 = rand::random();
    let mut n = 0u32;
    // Five keys, each after 300 ms of audio; while a key is held (100 ms) only
    // its event packets go, stamped with the key's start, the end one thrice.
    for key in 1..=5u8 {
        for _ in 0..15 {
            clock.tick().await;
            let ts = ts0.wrapping_add(160 * n);
            phone
                .send_rtp(n == 0, 0, ts, &ulaw_frame(&codes, key as usize))
                .await;
            n = step.fetch_add(1, Ordering::SeqCst) as u32 + 1;
        }
        let start = ts0.wrapping_add(160 * n);
        for held in 1..=5u16 {
            clock.tick().await;
            let end = held == 5;
            let mut payload = vec![key, if end { 0x80 | 10 } else { 10 }];
            payload.extend_from_slice(&(held * 160).to_be_bytes());
            for _ in 0..if end { 3 } else { 1 } {
                phone.send_rtp(held == 1, 101, start, &payload).await;
            }
            n = step.fetch_add(1, Ordering::SeqCst) as u32 + 1;
        }
    }
    for _ in 0..15 {
        clock.tick().await;
        let ts = ts0.wrapping_add(160 * n);
        phone.send_rtp(false, 0, ts, &ulaw_frame(&codes, 9)).await;
        n = step.fetch_add(1, Ordering::SeqCst) as u32 + 1;
    }
    // Then the phone sends nothing for a second, and hangs up.
    let quiet_from = n as usize;
    for _ in 0..50 {
        clock.tick().await;
        step.fetch_add(1, Ordering::SeqCst);
    }
    phone.hang_up().await;

    let conns = bot.finished(1, 10 * SEC).await;
    assert_stream_contiguous(&conns[0].events);
    let (chunks, digits) = arrivals.lock().unwrap().clone();
    assert_eq!(digits, "12345", "each key once");
    let first = chunks
        .iter()
        .position(|c| c.0)
        .expect("the bot heard the phone");
    let mut late = Vec::new();
    for (k, &(_, at)) in chunks[first..].iter().enumerate() {
        // Chunk k carries the phone's step k, sent when the count went to k + 1.
        let behind = at.saturating_sub(k + 1);
        // Going quiet is waited out once (the network's lateness, a few
        // frames); after that the chunks are on time again.
        let settling = (quiet_from..quiet_from + 8).contains(&k);
        if behind > 1 && !settling {
            late.push((k, behind));
        }
    }
    assert!(
        late.is_empty(),
        "chunks held up (step, steps behind): {late:?}; keys end at steps 20, 40, 60, 80, 100; quiet from {quiet_from}"
    );
    bridge.stop().await;
}
