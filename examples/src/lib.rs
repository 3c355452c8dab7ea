//! Example bots for the telephony bridge.
//!
//! The bridge is the WebSocket *client*: for every phone call it opens one
//! WebSocket session to the bot's URL (see `protocol/PROTOCOL.md`). A bot is
//! therefore a WebSocket *server*. This library holds the echo bot's
//! per-connection logic so it can be run by the `echo-bot` binary and, in
//! process, by tests.
//!
//! Nothing here installs process-global state (no tracing subscriber, no
//! signal handlers); the caller decides how logs are collected.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protocol::{BotEvent, Command};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn, Instrument};

/// How long to wait for the bridge to answer our close frame after `stop`.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Accepts connections on `listener` forever, running the echo bot on each
/// one in its own task.
///
/// Per session the bot:
/// - echoes every `media` payload straight back as `response.audio.delta`;
/// - answers every `dtmf` digit with `session.dtmf` carrying the same digit;
/// - after the digit `#`, also sends `session.hangup`;
/// - after the digit `0`, when it has a transfer target
///   ([`serve_echo_transferring`]), sends `session.transfer` to it;
/// - logs `start`, `stop` and `error` events (with the call's `call_sid`);
/// - on `stop`, sends nothing more and closes the socket.
///
/// Pings from the bridge are answered by the WebSocket layer while the
/// session keeps reading.
pub async fn serve_echo(listener: TcpListener) {
    serve_echo_transferring(listener, None).await
}

/// [`serve_echo`], and the key `0` transfers the call to `transfer_to` (a
/// number the bridge can reach); the bot logs `transfer_failed` if nobody
/// answers, and keeps echoing.
pub async fn serve_echo_transferring(listener: TcpListener, transfer_to: Option<String>) {
    let transfer_to: Option<std::sync::Arc<str>> = transfer_to.map(Into::into);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let span = tracing::info_span!("echo", %peer);
                let transfer_to = transfer_to.clone();
                tokio::spawn(
                    async move {
                        let _ = stream.set_nodelay(true);
                        let ws =
                            match tokio_tungstenite::accept_hdr_async(stream, log_request_headers)
                                .await
                            {
                                Ok(ws) => ws,
                                Err(e) => {
                                    warn!("handshake failed: {e}");
                                    return;
                                }
                            };
                        info!("websocket session opened");
                        if let Err(e) = run_echo_session(ws, transfer_to.as_deref()).await {
                            warn!("session ended with an error: {e:#}");
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                // Usually a transient condition (e.g. too many open files);
                // back off briefly instead of spinning.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs one echo session on an accepted TCP connection until the bridge
/// stops the stream or the socket closes. Logs go to the caller's current
/// tracing span ([`serve_echo`] opens one per connection, with the peer).
pub async fn handle_echo_connection(stream: TcpStream) -> anyhow::Result<()> {
    let _ = stream.set_nodelay(true);
    let ws = tokio_tungstenite::accept_hdr_async(stream, log_request_headers).await?;
    info!("websocket session opened");
    run_echo_session(ws, None).await
}

/// Logs the handshake request: path, header names, and a redacted
/// `Authorization` value, so a user can see `wss_header` arrive.
#[allow(clippy::result_large_err)] // the signature is fixed by tungstenite's `Callback`
fn log_request_headers(
    req: &Request,
    resp: Response,
) -> Result<Response, tokio_tungstenite::tungstenite::handshake::server::ErrorResponse> {
    let names: Vec<&str> = req.headers().keys().map(|n| n.as_str()).collect();
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| redact(&String::from_utf8_lossy(v.as_bytes())));
    info!(
        path = %req.uri(),
        headers = %names.join(", "),
        authorization = authorization.as_deref().unwrap_or("(none)"),
        "handshake request"
    );
    Ok(resp)
}

/// Keeps the first four characters of a secret. Values too short for that to
/// hide anything are hidden entirely.
pub fn redact(value: &str) -> String {
    if value.chars().count() <= 8 {
        "…".to_string()
    } else {
        let prefix: String = value.chars().take(4).collect();
        format!("{prefix}…")
    }
}

/// Per-session state worth putting in log lines.
#[derive(Default)]
struct Session {
    call_sid: Option<String>,
    stream_sid: Option<String>,
    media_echoed: u64,
    /// A warm transfer's target answered and is being briefed.
    briefing: bool,
}

impl Session {
    fn call_sid(&self) -> &str {
        self.call_sid.as_deref().unwrap_or("-")
    }
}

async fn run_echo_session<S>(
    mut ws: WebSocketStream<S>,
    transfer_to: Option<&str>,
) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut session = Session::default();

    while let Some(msg) = ws.next().await {
        let text = match msg? {
            Message::Text(text) => text,
            Message::Close(frame) => {
                info!(
                    call_sid = session.call_sid(),
                    ?frame,
                    "bridge closed the socket"
                );
                break;
            }
            // Pings are answered by tungstenite itself; the bridge never
            // sends binary frames in the default dialect.
            Message::Binary(b) => {
                debug!(len = b.len(), "ignoring binary frame");
                continue;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };

        let event = match protocol::parse_event(text.as_str()) {
            Ok(event) => event,
            Err(e) => {
                warn!(call_sid = session.call_sid(), "unparsable event: {e}");
                continue;
            }
        };

        match event {
            BotEvent::Connected => info!("connected"),
            BotEvent::Start {
                stream_sid, start, ..
            } => {
                info!(
                    call_sid = %start.call_sid,
                    stream_sid = %stream_sid,
                    from = %start.from,
                    to = %start.to,
                    "start"
                );
                session.call_sid = Some(start.call_sid.clone());
                session.stream_sid = Some(stream_sid);
            }
            BotEvent::Media { payload, .. } => {
                let reply = protocol::command_json(&Command::AudioDelta, &payload);
                ws.send(Message::text(reply)).await?;
                session.media_echoed += 1;
            }
            BotEvent::Dtmf {
                digit, duration_ms, ..
            } => {
                info!(call_sid = session.call_sid(), %digit, duration_ms, "dtmf");
                if session.briefing {
                    // The person being briefed decides: 1 takes the caller,
                    // 2 declines (the caller comes back to this bot).
                    let end = match digit {
                        '1' => Some(Command::TransferComplete),
                        '2' => Some(Command::TransferCancel),
                        _ => None,
                    };
                    if let Some(end) = end {
                        info!(
                            call_sid = session.call_sid(),
                            "briefed target pressed {digit}: {}",
                            end.name()
                        );
                        session.briefing = false;
                        ws.send(Message::text(protocol::command_json(&end, &[])))
                            .await?;
                    }
                    continue;
                }
                let reply = Command::Dtmf {
                    digits: digit.to_string(),
                };
                ws.send(Message::text(protocol::command_json(&reply, &[])))
                    .await?;
                if let (Some(to), '0' | '9') = (transfer_to, digit) {
                    let mode = if digit == '9' {
                        protocol::TransferMode::Warm
                    } else {
                        protocol::TransferMode::Cold
                    };
                    info!(call_sid = session.call_sid(), %to, "'{digit}' pressed: {} transfer", mode.as_str());
                    let transfer = Command::Transfer {
                        destinations: vec![to.to_string()],
                        strategy: Default::default(),
                        timeout_s: None,
                        caller_id: None,
                        mode,
                    };
                    ws.send(Message::text(protocol::command_json(&transfer, &[])))
                        .await?;
                }
                if digit == '#' {
                    info!(call_sid = session.call_sid(), "'#' pressed: hanging up");
                    let hangup = Command::Hangup { immediate: false };
                    ws.send(Message::text(protocol::command_json(&hangup, &[])))
                        .await?;
                }
            }
            BotEvent::Mark { name, .. } => {
                info!(call_sid = session.call_sid(), %name, "mark");
            }
            BotEvent::Clear { .. } => info!(call_sid = session.call_sid(), "clear"),
            BotEvent::TransferFailed {
                kind,
                destination,
                reason,
                ..
            } => {
                info!(
                    call_sid = session.call_sid(),
                    %kind, %destination, %reason,
                    "transfer_failed"
                );
            }
            BotEvent::TransferAnswered { destination, .. } => {
                // From now on this bot talks to the target alone (it hears
                // its own voice echoed: the "briefing"); its keys decide.
                info!(call_sid = session.call_sid(), %destination, "transfer_answered: briefing (target presses 1 to take the call, 2 to decline)");
                session.briefing = true;
            }
            BotEvent::Error { code, message, .. } => {
                warn!(call_sid = session.call_sid(), %code, %message, "error from bridge");
            }
            BotEvent::Stop {
                call_sid, reason, ..
            } => {
                info!(
                    %call_sid,
                    stream_sid = session.stream_sid.as_deref().unwrap_or("-"),
                    %reason,
                    media_echoed = session.media_echoed,
                    "stop"
                );
                close_after_stop(&mut ws).await;
                return Ok(());
            }
        }
    }

    info!(
        call_sid = session.call_sid(),
        media_echoed = session.media_echoed,
        "session closed without stop"
    );
    Ok(())
}

/// Sends our close frame and waits (bounded) for the bridge's reply, so the
/// closing handshake completes cleanly.
async fn close_after_stop<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "stream stopped".into(),
    };
    if let Err(e) = ws.close(Some(frame)).await {
        debug!("close: {e}");
        return;
    }
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
}
