//! The bot's WebSocket: connecting (ws:// and wss:// with headers), and the
//! [`Link`] through which the call's task moves frames between the socket and
//! its session.
//!
//! The protocol itself lives in [`crate::botlink::session`]; this module only carries
//! bytes, answers for liveness (pings), and reports a lost bot.

pub mod session;
pub mod tls;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::botlink::session::Outgoing;

/// An open bot socket.
pub type BotSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a bot could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is unusable.
    #[error("bad bot URL {url:?}: {why}")]
    BadUrl {
        /// The URL, redacted ([`redact_url`]).
        url: String,
        /// What is wrong.
        why: String,
    },
    /// Nothing answered in time.
    #[error("bot at {url} did not accept a connection within {ms} ms")]
    Timeout {
        /// The URL, redacted ([`redact_url`]).
        url: String,
        /// The limit.
        ms: u64,
    },
    /// Every address the host resolved to is in a range the operator has
    /// not allowed ([`crate::netguard`]); nothing was connected.
    #[error("refused to connect to bot at {url}: {why}")]
    Refused {
        /// The URL, redacted ([`redact_url`]).
        url: String,
        /// Which address, and which range.
        why: String,
    },
    /// The connection or handshake failed.
    #[error("cannot connect to bot at {url}: {why}")]
    Failed {
        /// The URL, redacted ([`redact_url`]).
        url: String,
        /// The error.
        why: String,
    },
}

/// A URL as logs and error messages show it: no user or password, and no
/// query or fragment, which often carry keys (`wss://bot/ws?key=…`). What is
/// left still says which bot: scheme, host, port and path.
///
/// ```
/// use bridge::botlink::redact_url;
/// assert_eq!(redact_url("wss://u:pw@bot.example.com:8443/ws?key=s3cret#x"),
///            "wss://***@bot.example.com:8443/ws?…");
/// assert_eq!(redact_url("ws://127.0.0.1:9/"), "ws://127.0.0.1:9/");
/// assert_eq!(redact_url("not a url ?key=s3cret"), "<not a URL>");
/// ```
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "<not a URL>".into();
    };
    let had_user = !u.username().is_empty() || u.password().is_some();
    let had_query = u.query().is_some() || u.fragment().is_some();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    let mut s = u.to_string();
    if had_user {
        if let Some(i) = s.find("://") {
            s.insert_str(i + 3, "***@");
        }
    }
    if had_query {
        s.push_str("?…");
    }
    s
}

/// Checks a bot URL: `ws://` or `wss://`, with a host; plain `ws://` only to
/// loopback unless `allow_insecure` is set.
pub fn check_url(url: &str, allow_insecure: bool) -> Result<url::Url, String> {
    let shown = redact_url(url);
    let u = url::Url::parse(url).map_err(|e| format!("the URL is not a URL: {e}"))?;
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
                    "{shown:?} is plain ws:// to a host that is not loopback; use wss:// (or let the operator set bot.allow_insecure_ws)"
                ));
            }
        }
        other => {
            return Err(format!(
                "{shown:?} has scheme {other:?}; use ws:// or wss://"
            ))
        }
    }
    if u.host().is_none() {
        return Err(format!("{shown:?} has no host"));
    }
    Ok(u)
}

/// [`check_url`], and for an address written in the URL, `guard`; a name
/// is checked on the addresses it resolves to, in [`connect`].
pub fn check_bot_url(
    url: &str,
    allow_insecure: bool,
    guard: &crate::netguard::Guard,
) -> Result<url::Url, String> {
    let u = check_url(url, allow_insecure)?;
    guard
        .check_url_host(&u)
        .map_err(|e| format!("{:?}: {e}", redact_url(url)))?;
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

/// TLS settings for `wss://`: the system's roots and the web PKI roots, plus
/// an optional extra CA file; per host, a pinned certificate instead, or no
/// verification at all ([`tls::PerHostVerifier`]).
pub fn tls_config(bot: &crate::config::BotConfig) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // The system's store, where there is one (a CA the machine's operator
    // installed is trusted as a browser would).
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = &bot.extra_ca_file {
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
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let cfg = if bot.insecure_hosts.is_empty() && bot.pinned_certs.is_empty() {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        for h in &bot.insecure_hosts {
            tracing::warn!(host = %h, "wss:// certificates of this host are not verified ([bot] insecure_hosts)");
        }
        let verifier = tls::PerHostVerifier::new(roots, provider, bot)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    Ok(Arc::new(cfg))
}

/// Connects to a bot, sending `headers` with the upgrade request.
///
/// The host is resolved here and the connection made to the first address
/// `guard` allows, so a name that resolves into a refused range is refused
/// ([`crate::netguard`]); TLS still checks the certificate against the name.
pub async fn connect(
    url: &str,
    headers: &[(String, String)],
    tls: Arc<rustls::ClientConfig>,
    guard: &crate::netguard::Guard,
    timeout: Duration,
    max_message_bytes: usize,
) -> Result<BotSocket, ConnectError> {
    let bad = |why: String| ConnectError::BadUrl {
        url: redact_url(url),
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
    ws_cfg.read_buffer_size = 2048;
    let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| bad("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| bad("no port".into()))?;
    let failed = |why: String| ConnectError::Failed {
        url: redact_url(url),
        why,
    };
    let fut = async {
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| failed(format!("cannot resolve {host}: {e}")))?
            .collect();
        // Only addresses the guard allows are tried; if none is, the
        // refusal (not a connection error) is the answer.
        let mut refused = None;
        let mut last_error = None;
        let mut stream = None;
        for a in &addrs {
            if let Err(why) = guard.check(a.ip()) {
                refused.get_or_insert(why);
                continue;
            }
            match TcpStream::connect(a).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = Some(format!("{a}: {e}")),
            }
        }
        let stream = match (stream, last_error, refused) {
            (Some(s), _, _) => s,
            (None, Some(e), _) => return Err(failed(e)),
            (None, None, Some(why)) => {
                return Err(ConnectError::Refused {
                    url: redact_url(url),
                    why,
                })
            }
            (None, None, None) => return Err(failed(format!("{host} has no address"))),
        };
        let _ = stream.set_nodelay(true);
        tokio_tungstenite::client_async_tls_with_config(
            req,
            stream,
            Some(ws_cfg),
            Some(Connector::Rustls(tls)),
        )
        .await
        .map_err(|e| failed(e.to_string()))
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(ConnectError::Timeout {
            url: redact_url(url),
            ms: timeout.as_millis() as u64,
        }),
        Ok(Err(e)) => Err(e),
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

/// An open bot socket, driven by the call's own task: events queue with
/// [`Link::send`] and go out while the call waits in
/// [`Link::poll_input`], which also answers for liveness (pings) and gives
/// what the bot sends. No task of its own, no channels: one wake-up per
/// packet fewer each way.
pub struct Link {
    ws: BotSocket,
    /// Frames not yet handed to the socket, and whether each is `media`.
    queue: VecDeque<(Message, bool)>,
    media_queued: usize,
    /// Frames were handed to the socket and a flush is still in progress.
    flushing: bool,
    ping: tokio::time::Interval,
    last_pong: Instant,
    live: Liveness,
}

impl Link {
    /// Takes over an open socket.
    pub fn new(ws: BotSocket, live: Liveness) -> Link {
        let mut ping = tokio::time::interval_at(Instant::now() + live.ping_every, live.ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Link {
            ws,
            queue: VecDeque::new(),
            media_queued: 0,
            flushing: false,
            ping,
            last_pong: Instant::now(),
            live,
        }
    }

    /// Queues an event; it goes out on the next [`poll_input`](Self::poll_input).
    pub fn send(&mut self, o: Outgoing) {
        // The session writes only JSON text; a frame that is not UTF-8 would be
        // a bug, logged rather than sent corrupt.
        let Ok(text) = Utf8Bytes::try_from(o.text) else {
            tracing::error!("dropped an outgoing event that is not UTF-8");
            return;
        };
        if o.is_media {
            self.media_queued += 1;
        }
        self.queue.push_back((Message::Text(text), o.is_media));
    }

    /// `media` events queued and not yet handed to the socket: how far behind
    /// a bot that does not keep up is.
    pub fn backlog(&self) -> usize {
        self.media_queued
    }

    /// Writes what is queued (as far as the socket takes it) and waits for the
    /// bot: ready with what it sent, or with [`BotInput::Lost`] once it is
    /// gone (closed, failed, or no pong within the timeout, which also bounds
    /// writes a bot that stopped reading leaves stuck).
    pub fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<BotInput> {
        loop {
            while self.ping.poll_tick(cx).is_ready() {
                if self.last_pong.elapsed() > self.live.pong_timeout {
                    let secs = self.live.pong_timeout.as_secs();
                    return Poll::Ready(BotInput::Lost(if self.flushing {
                        format!("bot stopped reading: no pong and writes stuck for {secs} s")
                    } else {
                        format!("no pong for {secs} s")
                    }));
                }
                self.queue.push_front((Message::Ping(Bytes::new()), false));
            }
            if let Err(e) = self.poll_write(cx) {
                return Poll::Ready(BotInput::Lost(format!("write failed: {e}")));
            }
            let frame = match self.ws.poll_next_unpin(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => return Poll::Pending,
            };
            return Poll::Ready(match frame {
                Some(Ok(Message::Text(t))) => BotInput::Text(t),
                Some(Ok(Message::Binary(b))) => BotInput::Binary(b),
                Some(Ok(Message::Pong(_))) => {
                    self.last_pong = Instant::now();
                    continue;
                }
                Some(Ok(Message::Ping(_))) => {
                    // The socket queued the pong; it goes with the next flush.
                    self.flushing = true;
                    continue;
                }
                Some(Ok(Message::Frame(_))) => continue,
                Some(Ok(Message::Close(c))) => BotInput::Lost(match c {
                    Some(c) => {
                        format!("bot closed the socket ({} {})", u16::from(c.code), c.reason)
                    }
                    None => "bot closed the socket".into(),
                }),
                Some(Err(e)) => BotInput::Lost(format!("socket error: {e}")),
                None => BotInput::Lost("bot socket ended".into()),
            });
        }
    }

    /// Hands queued frames to the socket once the previous batch is flushed,
    /// then flushes: one write for everything queued.
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        if self.flushing {
            match self.ws.poll_flush_unpin(cx) {
                Poll::Ready(r) => {
                    r?;
                    self.flushing = false;
                }
                Poll::Pending => return Ok(()),
            }
        }
        if self.queue.is_empty() {
            return Ok(());
        }
        while let Some((msg, media)) = self.queue.pop_front() {
            match self.ws.poll_ready_unpin(cx) {
                Poll::Ready(r) => r?,
                Poll::Pending => {
                    self.queue.push_front((msg, media));
                    break;
                }
            }
            if media {
                self.media_queued -= 1;
            }
            self.ws.start_send_unpin(msg)?;
        }
        self.flushing = true;
        match self.ws.poll_flush_unpin(cx) {
            Poll::Ready(r) => {
                r?;
                self.flushing = false;
            }
            Poll::Pending => {}
        }
        Ok(())
    }

    /// The call is over: sends what is queued (its `stop`), closes the socket
    /// and gives the bot a moment to answer the close, within `limit`.
    pub async fn finish(mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            for (msg, _) in std::mem::take(&mut self.queue) {
                if self.ws.feed(msg).await.is_err() {
                    return;
                }
            }
            if self.ws.close(None).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
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
