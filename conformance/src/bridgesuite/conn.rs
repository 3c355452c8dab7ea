//! The suite's own bot: a WebSocket server on loopback whose sessions are handed
//! to the scenario that placed the call, and one session as a scenario sees it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use protocol::BotEvent;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Path prefix of the suite's bot URLs; the rest is the scenario's key.
const PATH_PREFIX: &str = "/conformance/";

/// The suite's bot server.
pub struct BotServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The base of the URLs the bridge is given (`ws://127.0.0.1:PORT`).
    pub base_url: String,
    waiting: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<BotConn>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for BotServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl BotServer {
    /// Listens on `listen`; `base_url` overrides the URL base the bridge is given.
    pub async fn start(listen: SocketAddr, base_url: Option<String>) -> Result<BotServer, String> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen for the bridge on {listen}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bot server's address: {e}"))?;
        let base_url = base_url
            .map(|b| b.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("ws://{addr}"));
        let waiting: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<BotConn>>>> = Arc::default();
        let routes = waiting.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let routes = routes.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    if let Some(conn) = handshake(tcp).await {
                        let key = conn.path.strip_prefix(PATH_PREFIX).unwrap_or("").to_owned();
                        let tx = routes.lock().ok().and_then(|r| r.get(&key).cloned());
                        if let Some(tx) = tx {
                            let _ = tx.send(conn);
                        }
                    }
                });
            }
        });
        Ok(BotServer {
            addr,
            base_url,
            waiting,
            accept,
        })
    }

    /// The URL for a scenario's calls, and the sessions that arrive on it.
    pub fn route(&self, key: &str) -> (String, mpsc::UnboundedReceiver<BotConn>) {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(key.to_owned(), tx);
        }
        (format!("{}{PATH_PREFIX}{key}", self.base_url), rx)
    }
}

/// What the upgrade request carried: its headers and path.
type UpgradeRequest = (Vec<(String, String)>, String);

async fn handshake(tcp: TcpStream) -> Option<BotConn> {
    let seen: Arc<Mutex<UpgradeRequest>> = Arc::default();
    let keep = seen.clone();
    #[allow(clippy::result_large_err)] // the signature is tungstenite's
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if let Ok(mut s) = keep.lock() {
            s.0 = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            s.1 = req.uri().path().to_owned();
        }
        Ok(resp)
    };
    // Accept frames past the bridge's limits, to see what it sends.
    let mut cfg = WebSocketConfig::default();
    cfg.max_message_size = Some(64 << 20);
    cfg.max_frame_size = Some(64 << 20);
    let ws = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(cfg)),
    )
    .await
    .ok()?
    .ok()?;
    let (headers, path) = seen.lock().ok()?.clone();
    Some(BotConn {
        ws,
        headers,
        path,
        opened: Instant::now(),
        events: vec![],
        problems: vec![],
        closed_at: None,
        texts: 0,
        binaries: 0,
    })
}

/// One bot session, as the scenario that placed the call sees it.
pub struct BotConn {
    ws: WebSocketStream<TcpStream>,
    /// The upgrade request's headers.
    pub headers: Vec<(String, String)>,
    /// The upgrade request's path.
    pub path: String,
    /// When the session opened.
    pub opened: Instant,
    /// Every event that parsed, with when it arrived.
    pub events: Vec<(Instant, BotEvent)>,
    /// Frames that broke the contract (did not parse, broke the schema, binary).
    pub problems: Vec<String>,
    /// When the socket closed, once it has.
    pub closed_at: Option<Instant>,
    texts: usize,
    binaries: usize,
}

impl BotConn {
    /// Reads the session's first event, which must be `connected`.
    pub async fn expect_connected(&mut self, limit: Duration) -> Result<(), String> {
        match self.next_event(limit).await? {
            Some(BotEvent::Connected) => Ok(()),
            Some(e) => Err(format!(
                "the first event was `{}`, not `connected`",
                e.name()
            )),
            None => Err("the socket closed before any event".into()),
        }
    }

    /// The next event, skipping nothing; `Ok(None)` once the socket has closed,
    /// `Err` when none came within `limit`.
    pub async fn next_event(&mut self, limit: Duration) -> Result<Option<BotEvent>, String> {
        let deadline = Instant::now() + limit;
        loop {
            if self.closed_at.is_some() {
                return Ok(None);
            }
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| {
                    format!("no event from the bridge for {:.1} s", limit.as_secs_f64())
                })?;
            let now = Instant::now();
            match msg {
                Some(Ok(Message::Text(t))) => {
                    self.texts += 1;
                    if let Some(ev) = self.take_text(t.as_str()) {
                        self.events.push((now, ev.clone()));
                        return Ok(Some(ev));
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    self.binaries += 1;
                    if self.binaries == 1 {
                        self.problems.push(format!(
                            "the bridge sent a binary frame ({} bytes); in the ivr dialect every event is a JSON text frame",
                            b.len()
                        ));
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    self.closed_at = Some(now);
                    return Ok(None);
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Checks one text frame against the schema and the parser.
    fn take_text(&mut self, text: &str) -> Option<BotEvent> {
        let n = self.texts;
        let shown: String = text.chars().take(160).collect();
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => {
                let problems = crate::schema::events().validate(&v);
                if !problems.is_empty() {
                    let p: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                    self.problems.push(format!(
                        "frame {n} does not match the events schema: {}: {shown}",
                        p.join("; ")
                    ));
                }
            }
            Err(e) => {
                self.problems
                    .push(format!("frame {n} is not JSON ({e}): {shown}"));
                return None;
            }
        }
        match protocol::parse_event(text) {
            Ok(ev) => Some(ev),
            Err(e) => {
                self.problems.push(format!(
                    "frame {n} does not parse as an event: {e}: {shown}"
                ));
                None
            }
        }
    }

    /// Reads until an event named `name`; returns it.
    pub async fn until(&mut self, name: &str, limit: Duration) -> Result<BotEvent, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .next_event(left)
                .await
                .map_err(|_| format!("no `{name}` event within {:.1} s", limit.as_secs_f64()))?
            {
                Some(ev) if ev.name() == name => return Ok(ev),
                Some(_) => {}
                None => {
                    return Err(format!(
                        "the socket closed while waiting for a `{name}` event"
                    ))
                }
            }
        }
    }

    /// Reads `n` more media events (and whatever else comes between).
    pub async fn media(&mut self, n: usize) -> Result<(), String> {
        for _ in 0..n {
            self.until("media", Duration::from_secs(3)).await?;
        }
        Ok(())
    }

    /// The `chunk` of the last media event received (0 before any).
    pub fn last_chunk(&self) -> u64 {
        self.events
            .iter()
            .rev()
            .find_map(|(_, e)| match e {
                BotEvent::Media { chunk, .. } => Some(*chunk),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Events received so far named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.events.iter().filter(|(_, e)| e.name() == name).count()
    }

    /// The `stop` event, if one came.
    pub fn stop(&self) -> Option<(Instant, &BotEvent)> {
        self.events
            .iter()
            .find(|(_, e)| e.name() == "stop")
            .map(|(t, e)| (*t, e))
    }

    /// The `start` event, if one came.
    pub fn start(&self) -> Option<&BotEvent> {
        self.events
            .iter()
            .map(|(_, e)| e)
            .find(|e| e.name() == "start")
    }

    /// Sends a text frame.
    pub async fn send(&mut self, text: &str) -> Result<(), String> {
        tokio::time::timeout(Duration::from_secs(5), self.ws.send(Message::text(text)))
            .await
            .map_err(|_| "the bridge did not take a message within 5 s".to_owned())?
            .map_err(|e| format!("sending to the bridge failed: {e}"))
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        tokio::time::timeout(Duration::from_secs(5), self.ws.send(Message::binary(bytes)))
            .await
            .map_err(|_| "the bridge did not take a message within 5 s".to_owned())?
            .map_err(|e| format!("sending to the bridge failed: {e}"))
    }

    /// Sends `samples` as one `response.audio.delta`.
    pub async fn send_audio(&mut self, samples: &[i16]) -> Result<(), String> {
        let bytes = crate::audio::samples_to_le_bytes(samples);
        let text = format!(
            r#"{{"type":"response.audio.delta","delta":"{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        self.send(&text).await
    }

    /// Reads until the socket closes, at most `limit`.
    pub async fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.closed_at.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.next_event(left).await.is_err() {
                return;
            }
        }
    }

    /// Closes our side (used when a check gives up with the call still up).
    pub async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}
