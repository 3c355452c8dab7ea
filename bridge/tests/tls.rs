//! `wss://` bots, end to end: a bot whose certificate comes from the operator's
//! own CA is reachable once that CA is configured (`bot.extra_ca_file`), and the
//! certificate is really verified: without the CA, or for another host name, the
//! call fails as `bot_unreachable`.
//!
//! The CA and the bot's certificate are made at test time with `rcgen`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pki::*;
use common::*;
use futures::{SinkExt, StreamExt};
use protocol::BotEvent;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;

/// What the TLS bot saw: the events of each WebSocket session, and each TLS
/// handshake that failed (with its error).
#[derive(Default)]
struct Seen {
    sessions: Vec<Vec<BotEvent>>,
    handshake_errors: Vec<String>,
}

/// A `wss://` bot on 127.0.0.1: after `start` and 10 `media` events it sends
/// `session.hangup`, then reads until the socket closes.
async fn spawn_tls_bot(pki: &Pki) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let acceptor = TlsAcceptor::from(server_config(pki));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let keep = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let keep = keep.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(5 * SEC, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        keep.lock().unwrap().handshake_errors.push(e.to_string());
                        return;
                    }
                    Err(_) => {
                        keep.lock().unwrap().handshake_errors.push("timeout".into());
                        return;
                    }
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                let mut events = Vec::new();
                let mut media = 0;
                let mut hung_up = false;
                loop {
                    let msg = match tokio::time::timeout(5 * SEC, ws.next()).await {
                        Ok(Some(Ok(m))) => m,
                        _ => break,
                    };
                    let Message::Text(text) = msg else {
                        continue;
                    };
                    let ev = protocol::parse_event(&text).expect("the bridge's events parse");
                    if matches!(ev, BotEvent::Media { .. }) {
                        media += 1;
                    }
                    events.push(ev);
                    let started = events.iter().any(|e| e.name() == "start");
                    if started && media >= 10 && !hung_up {
                        hung_up = true;
                        if ws
                            .send(Message::text(r#"{"type":"session.hangup"}"#))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
                keep.lock().unwrap().sessions.push(events);
            });
        }
    });
    (addr, seen)
}

/// A bridge whose config is the test config's `[calls]` plus `bot_section`.
async fn bridge_with_bot_section(dir: &Path, bot_section: &str) -> bridge::server::Running {
    let text =
        format!("[calls]\nring_timeout_secs = 2\nmax_duration_secs = 60\n\n[bot]\n{bot_section}\n");
    let cfg = bridge::config::Config::parse(&text).expect("test config parses");
    start_bridge_with(dir, cfg).await
}

/// Writes the CA to a file in `dir`; returns the `[bot]` line that trusts it.
fn trust_ca(dir: &Path, pki: &Pki) -> String {
    let path = dir.join("operator-ca.pem");
    std::fs::write(&path, &pki.ca_pem).unwrap();
    // A TOML literal string: a temp path holds no `'`.
    format!("extra_ca_file = '{}'", path.display())
}

async fn dial_tls_bot(bridge: &bridge::server::Running, bot: SocketAddr) -> Value {
    let logid = dial(
        bridge.addr,
        json!({
            "customer_no": "+99910001",
            "wss_url": format!("wss://localhost:{}/", bot.port()),
        }),
    )
    .await;
    wait_final(bridge.addr, logid, 20 * SEC).await
}

/// Waits (bounded) until the bot saw a finished session or a failed handshake.
async fn wait_seen(seen: &Mutex<Seen>, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        {
            let s = seen.lock().unwrap();
            if !s.sessions.is_empty() || !s.handshake_errors.is_empty() {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bot saw nothing in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The operator's CA file makes its bots reachable over `wss://`: the call runs
/// and the bot hangs it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_bot_signed_by_the_operators_ca_takes_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&["localhost", "127.0.0.1"]);
    let bridge = bridge_with_bot_section(dir.path(), &trust_ca(dir.path(), &pki)).await;
    let (bot, seen) = spawn_tls_bot(&pki).await;

    let rec = dial_tls_bot(&bridge, bot).await;
    assert_eq!(rec["call_state"], "completed", "{rec}");
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");

    wait_seen(&seen, 10 * SEC).await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.handshake_errors.is_empty(),
        "{:?}",
        seen.handshake_errors
    );
    let events = &seen.sessions[0];
    assert_eq!(events.first(), Some(&BotEvent::Connected));
    assert!(
        events.iter().any(|e| e.name() == "start"),
        "the bot got start"
    );
    match events.last() {
        Some(BotEvent::Stop { reason, .. }) => {
            assert_eq!(*reason, protocol::StopReason::BotHangup)
        }
        e => panic!("last event {e:?}"),
    }
    bridge.stop().await;
}

/// Without the operator's CA the bot's certificate is not trusted: the bridge
/// refuses the TLS handshake and the call fails as `bot_unreachable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_bot_from_an_unknown_ca_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&["localhost", "127.0.0.1"]);
    let bridge = bridge_with_bot_section(dir.path(), "").await;
    let (bot, seen) = spawn_tls_bot(&pki).await;

    let rec = dial_tls_bot(&bridge, bot).await;
    assert_eq!(rec["call_state"], "failed", "{rec}");
    assert_eq!(rec["end_reason"], "bot_unreachable", "{rec}");

    wait_seen(&seen, 10 * SEC).await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.sessions.is_empty(), "no WebSocket session was opened");
    println!(
        "the bot's TLS handshake failed: {:?}",
        seen.handshake_errors
    );
    assert!(
        seen.handshake_errors
            .iter()
            .any(|e| e.contains("UnknownCA") || e.contains("UnknownIssuer")),
        "the bridge rejected the certificate's issuer: {:?}",
        seen.handshake_errors
    );
    bridge.stop().await;
}

/// Trusting the CA does not mean trusting any name: a certificate for another
/// host is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_bot_with_a_certificate_for_another_host_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&["bot.example.com"]);
    let bridge = bridge_with_bot_section(dir.path(), &trust_ca(dir.path(), &pki)).await;
    let (bot, seen) = spawn_tls_bot(&pki).await;

    let rec = dial_tls_bot(&bridge, bot).await;
    assert_eq!(rec["call_state"], "failed", "{rec}");
    assert_eq!(rec["end_reason"], "bot_unreachable", "{rec}");

    wait_seen(&seen, 10 * SEC).await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.sessions.is_empty(), "no WebSocket session was opened");
    println!(
        "the bot's TLS handshake failed: {:?}",
        seen.handshake_errors
    );
    assert!(
        seen.handshake_errors
            .iter()
            .any(|e| e.contains("BadCertificate")),
        "the bridge rejected the certificate's name: {:?}",
        seen.handshake_errors
    );
    bridge.stop().await;
}

/// The REST API over HTTPS: with `[server] tls_cert_file`/`tls_key_file` the
/// API answers a client that trusts the CA, recording URLs say `https://`,
/// and a plain-HTTP request gets no API answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&["127.0.0.1"]);
    let (cert, key) = (dir.path().join("api.pem"), dir.path().join("api.key"));
    std::fs::write(&cert, &pki.server_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let toml = format!(
        "[server]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let config = bridge::config::Config::parse(&toml).unwrap();
    let data = dir.path().join("data");
    let bridge = bridge::server::start(bridge::server::Options {
        http: "127.0.0.1:0".parse().unwrap(),
        data_dir: data,
        api_token: Some(TOKEN.into()),
        sip: None,
        config,
    })
    .await
    .unwrap();

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://{}", bridge.addr);
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let answer: Value = client
        .post(format!("{base}/api/dial_by_aivoicebot"))
        .bearer_auth(TOKEN)
        .json(&json!({"customer_no": "+99910001", "wss_url": "ws://127.0.0.1:9/"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], true, "{answer}");
    let logid = answer["data"]["logid"].as_i64().unwrap();
    // The call fails (nothing at :9), but its log is there, with an https
    // recording base if it recorded anything.
    let rec: Value = client
        .get(format!("{base}/api/get_call_status?logid={logid}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = rec["data"]["recording_url"].as_str().unwrap_or("");
    assert!(url.is_empty() || url.starts_with("https://"), "{rec}");

    // Plain HTTP to the HTTPS port: no API answer.
    let plain = tokio::time::timeout(
        Duration::from_secs(15),
        reqwest::Client::new()
            .get(format!("http://{}/healthz", bridge.addr))
            .send(),
    )
    .await
    .expect("the plain request ends");
    assert!(
        plain.map(|r| r.status() != 200).unwrap_or(true),
        "plain HTTP was answered"
    );
    bridge.stop().await;
}

/// A bot whose certificate no configured CA signed: reachable when its host
/// is pinned to that certificate (`[bot] pinned_certs`, SHA-256 of the
/// certificate) or named in `[bot] insecure_hosts`; a wrong pin is refused
/// even though nothing else would have accepted it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_or_unverified_host_is_reached_without_a_ca() {
    use sha2::Digest;
    let pki = make_pki(&["localhost", "127.0.0.1"]);
    let digest = sha2::Sha256::digest(pki.server_chain[0].as_ref());
    let right = hex::encode(digest);
    let wrong = "00".repeat(32);
    for (section, reached) in [
        (
            format!("pinned_certs = {{ localhost = [\"{right}\"] }}"),
            true,
        ),
        ("insecure_hosts = [\"localhost\"]".to_string(), true),
        (
            format!("pinned_certs = {{ localhost = [\"{wrong}\"] }}"),
            false,
        ),
        // A pin or exception for another host changes nothing for this one.
        (
            format!("pinned_certs = {{ \"bot.example.com\" = [\"{right}\"] }}"),
            false,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let bridge = bridge_with_bot_section(dir.path(), &section).await;
        let (bot, _seen) = spawn_tls_bot(&pki).await;
        let rec = dial_tls_bot(&bridge, bot).await;
        if reached {
            assert_eq!(rec["end_reason"], "bot_hangup", "{section}: {rec}");
        } else {
            assert_eq!(rec["end_reason"], "bot_unreachable", "{section}: {rec}");
        }
        bridge.stop().await;
    }
}
