//! Test harness: our real bridge in process, the example echo bot, deliberately
//! broken bots, and a deliberately broken fake bridge.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protocol::{BotEvent, Command, Event, StartInfo, StopReason};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use conformance::bridgesuite::BridgeOptions;
use conformance::report::{QuietProgress, Report, ScenarioResult};
use conformance::scenario::{self, SuiteKind};

pub const TOKEN: &str = "conformance-test-token";
/// The test config's phone that answers, then hangs up after 1.5 s.
pub const HANGUP_NUMBER: &str = "+999800";
/// The flow [`start_bridge`] configures (an `external_dial` to [`HANGUP_NUMBER`]).
pub const FLOW_ID: &str = "conformance_flow";
/// The extension [`start_bridge`] configures (it rings [`HANGUP_NUMBER`]).
pub const EXTENSION: &str = "201";

/// Our bridge, in process, with a 2 s ring timeout and a phone that hangs up.
pub async fn start_bridge(dir: &Path) -> bridge::server::Running {
    let config = bridge::config::Config::parse(
        r#"
[calls]
ring_timeout_secs = 2
max_duration_secs = 120

[[carrier.phones]]
prefix = "+99980"
ring_ms = 300
hangup_after_ms = 1500

# An extension whose phone answers and hangs up: it rings the phone above.
[[sip.extensions]]
number = "201"
password = "conformance"
also_ring = ["+999800"]

# A flow that ends the call by itself: it rings the phone above.
[[flows]]
id = "conformance_flow"
name = "Conformance"
entry_node = "agent"
[[flows.nodes]]
id = "agent"
type = "external_dial"
config = { phone_number = "+999800", timeout = 10 }
"#,
    )
    .expect("test config");
    bridge::server::start(bridge::server::Options {
        http: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        api_token: Some(TOKEN.into()),
        sip: None,
        config,
    })
    .await
    .expect("bridge starts")
}

/// The example echo bot on loopback; returns its URL.
pub async fn start_echo_bot() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(examples::serve_echo(listener));
    url
}

/// Runs bot scenarios (all when `names` is empty) against `url`.
pub async fn run_bot_suite(url: &str, names: &[&str]) -> Report {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let selected = scenario::select(&scenario::builtin(), SuiteKind::Bot, &names, &[])
        .unwrap()
        .run;
    let opts = conformance::botsuite::BotOptions {
        url: url.into(),
        headers: vec![("Authorization".into(), "Bearer test".into())],
        dialect: conformance::botsuite::Dialect::Ivr,
        jobs: 4,
    };
    conformance::botsuite::run(opts, selected, Arc::new(QuietProgress))
        .await
        .expect("the bot suite runs")
}

/// Runs bridge scenarios (all when `names` is empty) against `api`.
pub async fn run_bridge_suite(api: SocketAddr, names: &[&str], hangup: bool) -> Report {
    let opts = BridgeOptions {
        api: format!("http://{api}"),
        token: TOKEN.into(),
        bot_listen: "127.0.0.1:0".parse().unwrap(),
        bot_url: None,
        hangup_number: hangup.then(|| HANGUP_NUMBER.to_owned()),
        flow_id: hangup.then(|| FLOW_ID.to_owned()),
        extension: hangup.then(|| EXTENSION.to_owned()),
        jobs: 6,
    };
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let available = conformance::bridgesuite::available_options(&opts);
    let selected = scenario::select(&scenario::builtin(), SuiteKind::Bridge, &names, &available)
        .unwrap()
        .run;
    conformance::bridgesuite::run(opts, selected, Arc::new(QuietProgress))
        .await
        .expect("the bridge suite runs")
}

/// The result of the scenario named `name`.
pub fn result<'a>(report: &'a Report, name: &str) -> &'a ScenarioResult {
    report
        .scenarios
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no result for {name}"))
}

/// Asserts the scenario failed with a failure that mentions every one of `words`.
pub fn assert_fails_with(report: &Report, name: &str, words: &[&str]) {
    let r = result(report, name);
    assert_eq!(
        r.outcome,
        conformance::report::Outcome::Fail,
        "{name} should fail:\n{}",
        report.summary()
    );
    assert!(
        r.findings
            .failures
            .iter()
            .any(|f| words.iter().all(|w| f.contains(w))),
        "{name}: no failure mentions {words:?}: {:#?}",
        r.findings.failures
    );
}

// ---------------------------------------------------------------------------
// Broken bots.

/// How a broken bot misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotFault {
    /// Echoes each chunk with one byte cut off: odd-length audio.
    OddAudio,
    /// Echoes, and after `stop` keeps sending audio for a second.
    TalksAfterStop,
}

/// A bot with a fault, on loopback; returns its URL.
pub async fn start_broken_bot(fault: BotFault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(t) = msg else { continue };
                    match protocol::parse_event(&t) {
                        Ok(BotEvent::Media { mut payload, .. }) => {
                            if fault == BotFault::OddAudio {
                                payload.pop();
                            }
                            let reply = protocol::command_json(&Command::AudioDelta, &payload);
                            if ws.send(Message::text(reply)).await.is_err() {
                                return;
                            }
                        }
                        Ok(BotEvent::Stop { .. }) => {
                            if fault == BotFault::TalksAfterStop {
                                for _ in 0..40 {
                                    let reply =
                                        protocol::command_json(&Command::AudioDelta, &[0; 320]);
                                    if ws.send(Message::text(reply)).await.is_err() {
                                        return;
                                    }
                                    tokio::time::sleep(Duration::from_millis(25)).await;
                                }
                            }
                            let _ = ws.close(None).await;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    url
}

/// A bot that reads its socket but never answers a ping: a WebSocket server
/// written by hand, since WebSocket libraries answer pings by themselves.
pub async fn start_ping_deaf_bot() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = deaf_session(tcp).await;
            });
        }
    });
    url
}

async fn deaf_session(mut tcp: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let key = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    tcp.write_all(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    loop {
        let mut h = [0u8; 2];
        tcp.read_exact(&mut h).await?;
        let opcode = h[0] & 0x0f;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            tcp.read_exact(&mut b).await?;
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            tcp.read_exact(&mut b).await?;
            len = u64::from_be_bytes(b);
        }
        let mut mask = [0u8; 4];
        if h[1] & 0x80 != 0 {
            tcp.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len as usize];
        tcp.read_exact(&mut payload).await?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        match opcode {
            // A close: answer it and end.
            0x8 => {
                tcp.write_all(&[0x88, 0x00]).await?;
                return Ok(());
            }
            // Text: on `stop`, close.
            0x1 => {
                if let Ok(BotEvent::Stop { .. }) =
                    protocol::parse_event(&String::from_utf8_lossy(&payload))
                {
                    tcp.write_all(&[0x88, 0x00]).await?;
                }
            }
            // Pings (0x9) and everything else: ignored.
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// A fake bridge: REST API, bot WebSocket client, and a recording.

/// How the fake bridge breaks the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeFault {
    /// None: it keeps the contract (for the scenarios it is used with).
    None,
    /// Skips one `sequence_number`.
    SkipsSequenceNumber,
    /// Echoes a mark the moment it arrives, before its audio has played.
    EarlyMark,
    /// Forgets pending marks on `audio.clear`.
    DropsMarksOnClear,
}

#[derive(Clone)]
struct FakeState {
    fault: BridgeFault,
    base: String,
    next_id: Arc<AtomicI64>,
    calls: Arc<Mutex<HashMap<i64, Value>>>,
    recordings: Arc<Mutex<HashMap<i64, Vec<u8>>>>,
}

/// Starts a fake bridge; returns its address.
pub async fn start_fake_bridge(fault: BridgeFault) -> SocketAddr {
    use axum::extract::{Path as AxPath, Query, State};
    use axum::routing::{get, post};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = FakeState {
        fault,
        base: format!("http://{addr}"),
        next_id: Arc::new(AtomicI64::new(1)),
        calls: Arc::default(),
        recordings: Arc::default(),
    };
    let app = axum::Router::new()
        .route(
            "/api/dial_by_aivoicebot",
            post(
                |State(st): State<FakeState>, axum::Json(body): axum::Json<Value>| async move {
                    let id = st.next_id.fetch_add(1, Ordering::SeqCst);
                    let call_sid = format!("CAfake{id}");
                    st.calls.lock().unwrap().insert(
                        id,
                        json!({"call_sid": call_sid, "call_state": "in-progress"}),
                    );
                    tokio::spawn(fake_call(st.clone(), id, call_sid.clone(), body));
                    axum::Json(json!({"status": true, "data": {"logid": id, "call_sid": call_sid}}))
                },
            ),
        )
        .route(
            "/api/get_call_status",
            get(
                |State(st): State<FakeState>, Query(q): Query<HashMap<String, String>>| async move {
                    let id: Option<i64> = q.get("logid").and_then(|v| v.parse().ok());
                    let data = match id {
                        Some(id) => st
                            .calls
                            .lock()
                            .unwrap()
                            .get(&id)
                            .cloned()
                            .unwrap_or(Value::Null),
                        None => json!([]),
                    };
                    axum::Json(json!({"status": true, "data": data}))
                },
            ),
        )
        .route(
            "/recordings/{id}",
            get(
                |State(st): State<FakeState>, AxPath(id): AxPath<i64>| async move {
                    st.recordings
                        .lock()
                        .unwrap()
                        .get(&id)
                        .cloned()
                        .unwrap_or_default()
                },
            ),
        )
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn wav(left: &[i16], right: &[i16]) -> Vec<u8> {
    let n = left.len().min(right.len());
    let data = (n * 4) as u32;
    let mut out = Vec::with_capacity(44 + n * 4);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&32000u32.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for i in 0..n {
        out.extend_from_slice(&left[i].to_le_bytes());
        out.extend_from_slice(&right[i].to_le_bytes());
    }
    out
}

/// One call on the fake bridge: answers at once, streams silence, plays the
/// bot's audio, and breaks the contract as its fault says.
async fn fake_call(st: FakeState, id: i64, call_sid: String, body: Value) {
    let url = body["wss_url"].as_str().unwrap_or_default().to_owned();
    let to = body["customer_no"].as_str().unwrap_or_default().to_owned();
    let Ok((ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let stream_sid = format!("MZfake{id}");
    let start = StartInfo {
        stream_sid: stream_sid.clone(),
        call_sid: call_sid.clone(),
        from: "+15550100000".into(),
        to,
        direction: protocol::Direction::Outbound,
        media_format: Default::default(),
        tracks: vec!["inbound".into()],
        custom_parameters: Default::default(),
    };
    let mut seq = 0u64;
    let mut send = |ev: &Event<'_>| {
        let n = if matches!(ev, Event::Connected) {
            0
        } else {
            seq += 1;
            if st.fault == BridgeFault::SkipsSequenceNumber && seq == 20 {
                seq += 1;
            }
            seq
        };
        let mut text = String::new();
        protocol::write_event(&mut text, &stream_sid, n, ev);
        Message::text(text)
    };
    let _ = sink.send(send(&Event::Connected)).await;
    let _ = sink.send(send(&Event::Start(&start))).await;
    let mut queue: VecDeque<i16> = VecDeque::new();
    let mut marks: VecDeque<(usize, String)> = VecDeque::new();
    let mut enqueued = 0usize;
    let mut heard: Vec<i16> = vec![];
    let mut hangup: Option<bool> = None;
    let mut chunk = 0u64;
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    let mut audio = vec![];
    let silence = [0u8; 320];
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(Ok(msg)) = msg else { break };
                let Message::Text(t) = msg else { continue };
                let mut out = vec![];
                match protocol::parse_command(&t, &mut audio, protocol::MAX_MESSAGE_BYTES) {
                    Ok(Command::AudioDelta) => {
                        queue.extend(audio.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
                        enqueued += audio.len() / 2;
                    }
                    Ok(Command::Mark { name }) => {
                        if st.fault == BridgeFault::EarlyMark {
                            out.push(send(&Event::Mark { name: &name }));
                        } else {
                            marks.push_back((enqueued, name));
                        }
                    }
                    Ok(Command::Clear) => {
                        enqueued -= queue.len();
                        queue.clear();
                        let pending: Vec<String> = marks.drain(..).map(|(_, n)| n).collect();
                        if st.fault != BridgeFault::DropsMarksOnClear {
                            for name in &pending {
                                out.push(send(&Event::Mark { name }));
                            }
                        }
                        out.push(send(&Event::Clear));
                    }
                    Ok(Command::Hangup { immediate }) => hangup = Some(immediate),
                    Ok(_) => {}
                    Err(e) => out.push(send(&e.to_event())),
                }
                for m in out {
                    let _ = sink.send(m).await;
                }
            }
            _ = clock.tick() => {
                if let Some(immediate) = hangup {
                    if immediate || queue.is_empty() {
                        break;
                    }
                }
                chunk += 1;
                let media = send(&Event::Media { chunk, timestamp_ms: (chunk - 1) * 20, payload: &silence });
                let _ = sink.send(media).await;
                for _ in 0..160 {
                    heard.push(queue.pop_front().unwrap_or(0));
                }
                let played = enqueued - queue.len();
                while marks.front().is_some_and(|(at, _)| *at <= played) {
                    if let Some((_, name)) = marks.pop_front() {
                        let _ = sink.send(send(&Event::Mark { name: &name })).await;
                    }
                }
                if chunk > 3000 {
                    break;
                }
            }
        }
    }
    let _ = sink
        .send(send(&Event::Stop {
            call_sid: &call_sid,
            reason: StopReason::BotHangup,
        }))
        .await;
    let _ = sink.close().await;
    let left = vec![0i16; heard.len()];
    st.recordings.lock().unwrap().insert(id, wav(&left, &heard));
    st.calls.lock().unwrap().insert(
        id,
        json!({
            "call_sid": call_sid,
            "call_state": "completed",
            "end_reason": "bot_hangup",
            "dtmf_input": "",
            "recording_url": format!("{}/recordings/{id}", st.base),
        }),
    );
}
