//! The bot side: a WebSocket server that takes the bridge's sessions and echoes
//! the caller's frames back unchanged as `response.audio.delta`, each at once,
//! as a real bot streaming its answer would. It reads the frame id in each
//! payload to time phone → bot and to note when it sent each echo (for
//! bot → phone).
//!
//! It echoes the frames that carry an id, each once: the bot speaks one frame
//! per frame of the caller's speech it heard, so it is quiet while the caller
//! pauses, and the bridge's playout queue runs empty between spurts. (A bot
//! streaming in exactly real time without pauses never lets it drain: each
//! echo that arrives a little late leaves one more frame queued for the rest
//! of the call.) Frames without an id (the caller's pauses, silence before the
//! caller's audio, concealment) and repeats of an id are not echoed.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use protocol::{BotEvent, Command};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::call::{caller_index, BotTally, Call, Shared};
use crate::frameid;

/// The running bot server. Dropping it stops accepting connections.
pub struct Bot {
    pub(crate) shared: Arc<Shared>,
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Bot {
    /// Listens on `addr` (port 0 picks a free one) and starts serving.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Bot> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for the bot's WebSocket on {addr}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    // Out of file descriptors and the like: try again shortly.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(session(s.clone(), tcp));
            }
        });
        Ok(Bot {
            shared,
            addr,
            accept,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to configure as the DID's `bot_url`.
    pub fn url(&self) -> String {
        let mut a = self.addr;
        if a.ip().is_unspecified() {
            a.set_ip(if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("ws://{a}/")
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Counts a session as open for as long as it lives.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.active_sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn session(shared: Arc<Shared>, tcp: TcpStream) {
    shared.active_sessions.fetch_add(1, Ordering::Relaxed);
    let _open = Open(shared.clone());
    // tungstenite zero-fills its read buffer (128 KiB by default) before every
    // read: that memset was a quarter of the load generator's CPU at 500 calls.
    let mut cfg = WebSocketConfig::default();
    cfg.read_buffer_size = 2048;
    let mut ws = match tokio_tungstenite::accept_async_with_config(tcp, Some(cfg)).await {
        Ok(ws) => ws,
        Err(_) => {
            shared.handshake_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut t = BotTally {
        sessions: 1,
        ..BotTally::default()
    };
    let mut call: Option<Arc<Call>> = None;
    while let Some(msg) = ws.next().await {
        let text = match msg {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let event = match protocol::parse_event(&text) {
            Ok(e) => e,
            Err(e) => {
                if t.bad_events.len() < 5 {
                    t.bad_events.push(e.to_string());
                }
                continue;
            }
        };
        match event {
            BotEvent::Start { start, .. } => {
                t.starts += 1;
                if call.is_none() {
                    call = caller_index(&start.from).and_then(|i| shared.call(i));
                }
            }
            BotEvent::Media { payload, .. } => {
                let now = shared.now_us();
                t.media += 1;
                let mut echoed = None;
                match frameid::read_le_bytes(&payload).map(frameid::split_id) {
                    Some((index, counter)) => {
                        if call.is_none() {
                            call = shared.call(index);
                        }
                        match &call {
                            Some(c) if c.index == index => {
                                if c.bot_got.insert(counter) {
                                    if let Some(sent) = c
                                        .phone_sent
                                        .get(counter)
                                        .filter(|_| c.keeps_latency(counter))
                                    {
                                        t.latency.push((counter, now.saturating_sub(sent)));
                                    }
                                    echoed = Some(counter);
                                } else {
                                    t.duplicates += 1;
                                }
                            }
                            _ => t.misrouted += 1,
                        }
                    }
                    None => t.no_id += 1,
                }
                let (Some(c), Some(counter)) = (&call, echoed) else {
                    continue;
                };
                let json = protocol::command_json(&Command::AudioDelta, &payload);
                c.bot_sent.put(counter, shared.now_us());
                if ws.send(Message::text(json)).await.is_err() {
                    break;
                }
                t.deltas += 1;
                c.bot_echoed.insert(counter);
            }
            BotEvent::Stop { .. } => t.stops += 1,
            BotEvent::Error { code, message, .. } => {
                t.error_events += 1;
                if t.errors.len() < 5 {
                    t.errors.push(format!("{code}: {message}"));
                }
            }
            _ => {}
        }
    }
    match call {
        Some(c) => c.bot().merge(t),
        None => shared
            .unmatched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .merge(t),
    }
}
