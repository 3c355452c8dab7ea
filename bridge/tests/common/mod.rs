//! Test harness: a real bridge on loopback, a tiny HTTP client, and scriptable
//! WebSocket bots that record what they receive.
#![allow(dead_code, clippy::result_large_err)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use protocol::BotEvent;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use bridge::config::Config;
use bridge::server::{self, Options, Running};

pub mod phone;
pub mod pki;
pub mod sipp;

pub const TOKEN: &str = "test-token-123";

/// Bridge logs in test output when `RUST_LOG` is set (e.g. `RUST_LOG=bridge=debug`).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Test config: short ring timeout so `no-answer` comes quickly.
pub fn test_config() -> Config {
    Config::parse(
        r#"
[calls]
ring_timeout_secs = 2
max_duration_secs = 60

[[carrier.phones]]
prefix = "+99970"
press = "12#"
press_after_ms = 600
play = "silence"
"#,
    )
    .expect("test config")
}

pub async fn start_bridge(dir: &Path) -> Running {
    start_bridge_with(dir, test_config()).await
}

pub async fn start_bridge_with(dir: &Path, config: Config) -> Running {
    init_logs();
    server::start(Options {
        http: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        api_token: Some(TOKEN.into()),
        sip: None,
        config,
    })
    .await
    .expect("bridge starts")
}

/// A minimal HTTP/1.1 client: (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect to bridge");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("HTTP response in time")
        .unwrap();
    let head_end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head");
    let head = String::from_utf8_lossy(&out[..head_end]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = out[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + n]);
        b = &b[line_end + 4 + n..];
    }
}

pub async fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let (status, body) = http(addr, method, path, token, body).await;
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("JSON body, got {:?}", String::from_utf8_lossy(&body)));
    (status, v)
}

/// One series of `/metrics` (the whole name, labels included, e.g.
/// `bridge_calls_refused_total{reason="full"}`); panics if it is not there.
pub async fn metric(addr: SocketAddr, series: &str) -> i64 {
    let (_, body) = http(addr, "GET", "/metrics", None, None).await;
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
        .unwrap_or_else(|| panic!("no {series} on /metrics:\n{text}"))
}

/// Asks for a bot call: the status and answer, whatever they are.
pub async fn try_dial(addr: SocketAddr, body: &Value) -> (u16, Value) {
    http_json(
        addr,
        "POST",
        "/api/dial_by_aivoicebot",
        Some(TOKEN),
        Some(&body.to_string()),
    )
    .await
}

/// Places a bot call; returns the log id.
pub async fn dial(addr: SocketAddr, body: Value) -> i64 {
    let (status, v) = try_dial(addr, &body).await;
    assert_eq!(status, 200, "dial answered {v}");
    assert_eq!(v["status"], true);
    v["data"]["logid"].as_i64().expect("logid")
}

/// The call log record of `logid`.
pub async fn call_log(addr: SocketAddr, logid: i64) -> Value {
    let (status, v) = http_json(
        addr,
        "GET",
        &format!("/api/get_call_status?logid={logid}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

/// Waits until the call is answered (`in-progress`); returns its call sid.
pub async fn wait_in_progress(addr: SocketAddr, logid: i64, limit: Duration) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let rec = call_log(addr, logid).await;
        if rec["call_state"] == "in-progress" {
            return rec["call_sid"].as_str().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "{rec}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the call has a final state; returns its log record.
pub async fn wait_final(addr: SocketAddr, logid: i64, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let rec = call_log(addr, logid).await;
        let state = rec["call_state"].as_str().unwrap_or("").to_string();
        if !["initiated", "ringing", "in-progress"].contains(&state.as_str()) {
            return rec;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "call {logid} still {state} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fetches a call's recording through the API.
pub async fn recording(addr: SocketAddr, rec: &Value) -> bridge::wav::Pcm {
    let url = rec["recording_url"].as_str().expect("recording_url");
    assert!(!url.is_empty(), "call has a recording: {rec}");
    let path = url.split_once("://").unwrap().1;
    let path = &path[path.find('/').unwrap()..];
    let (status, body) = http(addr, "GET", path, Some(TOKEN), None).await;
    assert_eq!(status, 200, "recording download");
    bridge::wav::parse(&body).expect("recording is a WAV file")
}

/// One bot connection as the test sees it.
pub struct BotConn {
    pub ws: WebSocketStream<TcpStream>,
    pub headers: Vec<(String, String)>,
    pub path: String,
    pub events: Vec<BotEvent>,
}

impl BotConn {
    /// The next event (skipping nothing); panics after `limit`. `None` once the socket closed.
    pub async fn next_event(&mut self, limit: Duration) -> Option<BotEvent> {
        loop {
            let msg = tokio::time::timeout(limit, self.ws.next())
                .await
                .expect("an event in time");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let ev = protocol::parse_event(&t).unwrap_or_else(|e| {
                        panic!("bridge sent an event that does not parse: {e}: {t}")
                    });
                    self.events.push(ev.clone());
                    return Some(ev);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Reads events until one named `name`; returns it.
    pub async fn until(&mut self, name: &str, limit: Duration) -> BotEvent {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(ev) if ev.name() == name => return ev,
                Some(_) => {}
                None => panic!("socket closed while waiting for {name}"),
            }
        }
    }

    /// Reads until the socket closes (bounded).
    pub async fn drain(&mut self, limit: Duration) {
        while self.next_event(limit).await.is_some() {}
    }

    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("send to bridge");
    }

    pub async fn send_audio(&mut self, samples: &[i16]) {
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let msg = format!(
            r#"{{"type":"response.audio.delta","delta":"{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        self.send(&msg).await;
    }

    pub fn count(&self, name: &str) -> usize {
        self.events.iter().filter(|e| e.name() == name).count()
    }
}

/// A bot server on loopback: each connection is handed to `script`, and the
/// finished connections (with every event they got) are kept for the test.
pub struct TestBot {
    pub addr: SocketAddr,
    pub done: Arc<Mutex<Vec<BotConn>>>,
}

impl TestBot {
    pub async fn spawn<F, Fut>(script: F) -> TestBot
    where
        F: Fn(BotConn) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = BotConn> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let done = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let keep = done.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let script = script.clone();
                let keep = keep.clone();
                tokio::spawn(async move {
                    let seen = Arc::new(Mutex::new((Vec::new(), String::new())));
                    let seen2 = seen.clone();
                    let cb = move |req: &Request, resp: Response| {
                        let mut s = seen2.lock().unwrap();
                        s.0 = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                            .collect();
                        s.1 = req.uri().path().to_string();
                        Ok(resp)
                    };
                    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                        return;
                    };
                    let (headers, path) = seen.lock().unwrap().clone();
                    let conn = script(BotConn {
                        ws,
                        headers,
                        path,
                        events: Vec::new(),
                    })
                    .await;
                    keep.lock().unwrap().push(conn);
                });
            }
        });
        TestBot { addr, done }
    }

    /// A bot that only listens: it reads every event until the bridge closes
    /// the socket (or `limit` passes between two events).
    pub async fn listener(limit: Duration) -> TestBot {
        TestBot::spawn(move |mut c| async move {
            c.drain(limit).await;
            c
        })
        .await
    }

    pub fn url(&self) -> String {
        format!("ws://{}/bot", self.addr)
    }

    /// Waits for `n` finished connections and takes them.
    pub async fn finished(&self, n: usize, limit: Duration) -> Vec<BotConn> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            {
                let mut d = self.done.lock().unwrap();
                if d.len() >= n {
                    return std::mem::take(&mut *d);
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "bot sessions did not finish in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Writes 8 kHz mono 16-bit PCM as a WAV file.
pub fn write_wav(path: &Path, samples: &[i16]) {
    let data = (samples.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + data as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&16000u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// µ-law codes that survive decoding and encoding again, and are not quiet.
pub fn stable_ulaw_codes() -> Vec<u8> {
    use codecs::g711::Law;
    (0..=255u8)
        .filter(|&c| Law::Ulaw.encode(Law::Ulaw.decode(c)) == c && Law::Ulaw.decode(c).abs() > 200)
        .collect()
}

/// Frame `n`'s µ-law payload: a pattern no other frame of the call has.
pub fn ulaw_frame(codes: &[u8], n: usize) -> Vec<u8> {
    (0..160)
        .map(|i| codes[(n * 37 + i * (n % 7 + 1)) % codes.len()])
        .collect()
}

pub const SEC: Duration = Duration::from_secs(1);
/// A millisecond, for test time limits.
pub const MS: Duration = Duration::from_millis(1);

/// The session's events keep the contract (conformance's stream checks: order,
/// contiguous sequence numbers, chunks and timestamps, nothing after `stop`).
pub fn assert_stream_contiguous(events: &[BotEvent]) {
    let problems = conformance::stream::check_stream(events);
    assert!(
        problems.is_empty(),
        "stream breaks the contract: {problems:#?}"
    );
}
