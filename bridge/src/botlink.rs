//! The bot's WebSocket: connecting (ws:// and wss:// with headers), and the thin
//! I/O task that moves frames between the socket and the call's session.
//!
//! The protocol itself lives in [`crate::session`]; this module only carries
//! bytes, answers for liveness (pings), and reports a lost bot.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::session::Outgoing;

/// An open bot socket.
pub type BotSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a bot could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is unusable.
    #[error("bad bot URL {url:?}: {why}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// Nothing answered in time.
    #[error("bot at {url} did not accept a connection within {ms} ms")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit.
        ms: u64,
    },
    /// The connection or handshake failed.
    #[error("cannot connect to bot at {url}: {why}")]
    Failed {
        /// The URL.
        url: String,
        /// The error.
        why: String,
    },
}

/// Checks a bot URL: `ws://` or `wss://`, with a host; plain `ws://` only to
/// loopback unless `allow_insecure` is set.
pub fn check_url(url: &str, allow_insecure: bool) -> Result<url::Url, String> {
    let u = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match u.scheme() {
        "wss" => {}
        "ws" => {
            let loopback = match u.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(a)) => IpAddr::V4(a).is_loopback(),
                Some(url::Host::Ipv6(a)) => IpAddr::V6(a).is_loopback(),
                None => false,
            };
            if !loopback && !allow_insecure {
                return Err(format!(
                    "{url:?} is plain ws:// to a host that is not loopback; use wss:// (or let the operator set bot.allow_insecure_ws)"
                ));
            }
        }
        other => return Err(format!("{url:?} has scheme {other:?}; use ws:// or wss://")),
    }
    if u.host().is_none() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(u)
}

/// Parses `wss_header`: one `Name: value` per line. Blank lines are skipped.
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("wss_header line {n} has no ':' (expected `Name: value`)"))?;
        let name = name.trim();
        let value = value.trim();
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("wss_header line {n}: {name:?} is not a valid header name"))?;
        HeaderValue::from_str(value).map_err(|_| {
            format!("wss_header line {n}: the value of {name} has characters a header cannot carry")
        })?;
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

/// TLS settings for `wss://`: the web PKI roots plus an optional extra CA file.
pub fn tls_config(extra_ca: Option<&std::path::Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read extra CA file {}: {e}", path.display()))?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| anyhow::anyhow!("extra CA file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("extra CA file {}: {e}", path.display()))?;
            n += 1;
        }
        anyhow::ensure!(
            n > 0,
            "extra CA file {} holds no certificate",
            path.display()
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Connects to a bot, sending `headers` with the upgrade request.
pub async fn connect(
    url: &str,
    headers: &[(String, String)],
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    max_message_bytes: usize,
) -> Result<BotSocket, ConnectError> {
    let bad = |why: String| ConnectError::BadUrl {
        url: url.to_string(),
        why,
    };
    let mut req = url.into_client_request().map_err(|e| bad(e.to_string()))?;
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let value = HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
        req.headers_mut().append(name, value);
    }
    let mut ws_cfg = WebSocketConfig::default();
    ws_cfg.max_message_size = Some(max_message_bytes + 1024);
    ws_cfg.max_frame_size = Some(max_message_bytes + 1024);
    // tungstenite zero-fills its read buffer up to this size on every read: at
    // the default 128 KiB that memset was a fifth of the bridge's CPU under load
    // (perf, 200 calls) and most of its memory per call. A 20 ms delta is under
    // 1 KiB; larger messages simply take several reads.
    ws_cfg.read_buffer_size = 4096;
    let fut = tokio_tungstenite::connect_async_tls_with_config(
        req,
        Some(ws_cfg),
        true,
        Some(Connector::Rustls(tls)),
    );
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(ConnectError::Timeout {
            url: url.to_string(),
            ms: timeout.as_millis() as u64,
        }),
        Ok(Err(e)) => Err(ConnectError::Failed {
            url: url.to_string(),
            why: e.to_string(),
        }),
        Ok(Ok((ws, _resp))) => Ok(ws),
    }
}

/// What the socket brought in, for the call's session.
#[derive(Debug)]
pub enum BotInput {
    /// A text frame.
    Text(Utf8Bytes),
    /// A binary frame (raw audio).
    Binary(Bytes),
    /// The socket is gone: closed, failed, or silent past the pong timeout.
    Lost(String),
}

/// Liveness settings.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Ping this often.
    pub ping_every: Duration,
    /// Lost after this long with no pong.
    pub pong_timeout: Duration,
}

/// Media events queued towards a bot and not yet written to its socket.
#[derive(Debug, Default)]
pub struct Backlog(AtomicUsize);

impl Backlog {
    /// Frames waiting.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
    /// One more frame queued.
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn done(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs one bot socket until the call drops `out` (then it sends what is left,
/// closes the socket politely and returns) or the bot is lost.
pub async fn run(
    ws: BotSocket,
    mut out: mpsc::UnboundedReceiver<Outgoing>,
    input: mpsc::Sender<BotInput>,
    backlog: Arc<Backlog>,
    live: Liveness,
) {
    let (mut sink, mut stream) = ws.split();
    let mut ping = tokio::time::interval_at(Instant::now() + live.ping_every, live.ping_every);
    let mut last_pong = Instant::now();
    let mut lost: Option<String> = None;
    loop {
        tokio::select! {
            biased;
            msg = out.recv() => {
                let Some(first) = msg else { break };
                // A bot that stops reading without closing (host gone, network
                // cut) fills the socket buffer and a write never finishes: the
                // pong deadline bounds the write too.
                let deadline = last_pong + live.pong_timeout;
                let wrote = tokio::time::timeout_at(
                    deadline,
                    write_batch(&mut sink, first, &mut out, &backlog),
                )
                .await;
                match wrote {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => { lost = Some(format!("write failed: {e}")); break; }
                    Err(_) => {
                        lost = Some(format!(
                            "bot stopped reading: no pong and writes stuck for {} s",
                            live.pong_timeout.as_secs()
                        ));
                        break;
                    }
                }
            }
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(t))) => {
                    if input.send(BotInput::Text(t)).await.is_err() { break; }
                }
                Some(Ok(Message::Binary(b))) => {
                    if input.send(BotInput::Binary(b)).await.is_err() { break; }
                }
                Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                Some(Ok(Message::Ping(_))) | Some(Ok(Message::Frame(_))) => {}
                Some(Ok(Message::Close(c))) => {
                    lost = Some(match c {
                        Some(c) => format!("bot closed the socket ({} {})", u16::from(c.code), c.reason),
                        None => "bot closed the socket".into(),
                    });
                    break;
                }
                Some(Err(e)) => { lost = Some(format!("socket error: {e}")); break; }
                None => { lost = Some("bot socket ended".into()); break; }
            },
            _ = ping.tick() => {
                if last_pong.elapsed() > live.pong_timeout {
                    lost = Some(format!("no pong for {} s", live.pong_timeout.as_secs()));
                    break;
                }
                let deadline = last_pong + live.pong_timeout;
                let sent = tokio::time::timeout_at(deadline, sink.send(Message::Ping(Bytes::new()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    lost = Some("ping could not be sent".into());
                    break;
                }
            }
        }
    }
    match lost {
        Some(why) => {
            let _ = input.send(BotInput::Lost(why)).await;
            let _ = sink.close().await;
        }
        None => {
            // The call is over and `stop` was written: close, and give the bot a
            // moment to answer the close handshake.
            let _ = sink.close().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = stream.next().await {}
            })
            .await;
        }
    }
}

/// Writes `first` and everything else already queued, then flushes once.
async fn write_batch(
    sink: &mut futures::stream::SplitSink<BotSocket, Message>,
    first: Outgoing,
    out: &mut mpsc::UnboundedReceiver<Outgoing>,
    backlog: &Backlog,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut next = Some(first);
    while let Some(o) = next {
        if o.is_media {
            backlog.done();
        }
        next = out.try_recv().ok();
        // The session writes only JSON text; a frame that is not UTF-8 would be
        // a bug, logged rather than sent corrupt.
        let Ok(text) = Utf8Bytes::try_from(o.text) else {
            tracing::error!("dropped an outgoing event that is not UTF-8");
            continue;
        };
        sink.feed(Message::Text(text)).await?;
    }
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("ws://127.0.0.1:9000/x", false).is_ok());
        assert!(check_url("ws://localhost/x", false).is_ok());
        assert!(check_url("ws://[::1]:9/", false).is_ok());
        assert!(check_url("wss://bot.example.com/voice", false).is_ok());
        let e = check_url("ws://bot.example.com/voice", false).unwrap_err();
        assert!(e.contains("not loopback"), "{e}");
        assert!(check_url("ws://bot.example.com/voice", true).is_ok());
        assert!(check_url("http://bot.example.com/", true)
            .unwrap_err()
            .contains("scheme"));
        assert!(check_url("not a url", true).is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_headers("Authorization: Bearer xyz\r\nX-Bot: 1\n\n").unwrap(),
            vec![
                ("Authorization".into(), "Bearer xyz".into()),
                ("X-Bot".into(), "1".into())
            ]
        );
        let e = parse_headers("A: 1\nno colon here").unwrap_err();
        assert_eq!(e, "wss_header line 2 has no ':' (expected `Name: value`)");
        assert!(parse_headers("Bad Name: 1")
            .unwrap_err()
            .contains("not a valid header name"));
    }
}
