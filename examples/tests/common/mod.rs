//! The conversation both echo-bot tests have with a bot: the events are
//! written by hand in the exact shapes of PROTOCOL.md section 2, so these
//! tests check the bots against the wire contract, not against our own
//! serializer.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const STEP: Duration = Duration::from_secs(5);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects like the bridge does, with a `wss_header`-style Authorization header.
pub async fn connect(url: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("Authorization", "Bearer test-token-123".parse().unwrap());
    let (ws, _resp) = tokio_tungstenite::connect_async(req).await?;
    Ok(ws)
}

/// 20 ms of little-endian PCM16 at 8 kHz: a ramp, distinct per `seed`.
pub fn pcm_chunk(seed: i16) -> Vec<u8> {
    (0..160i16)
        .flat_map(|i| (i.wrapping_mul(37).wrapping_add(seed)).to_le_bytes())
        .collect()
}

async fn send(ws: &mut Ws, v: Value) {
    // The hand-written event must also be one the protocol crate accepts,
    // or the Rust bot would only log it as unparsable.
    if let Err(e) = protocol::parse_event(&v.to_string()) {
        panic!("test event does not match the protocol: {e}: {v}");
    }
    tokio::time::timeout(STEP, ws.send(Message::text(v.to_string())))
        .await
        .expect("send timed out")
        .expect("send failed");
}

/// Next JSON text message from the bot (skipping control frames).
async fn recv_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("timed out waiting for the bot")
            .expect("bot closed the socket early")
            .expect("websocket error");
        match msg {
            Message::Text(t) => {
                return serde_json::from_str(t.as_str()).expect("bot sent bad JSON")
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame from bot: {other:?}"),
        }
    }
}

/// Plays one short call against the bot at `ws` and checks its replies.
pub async fn echo_conversation(mut ws: Ws) {
    let sid = "MZ00000000000000000000000000000001";
    let call = "CA00000000000000000000000000000001";

    send(&mut ws, json!({"event": "connected"})).await;
    send(
        &mut ws,
        json!({
            "event": "start",
            "sequence_number": 1,
            "stream_sid": sid,
            "start": {
                "stream_sid": sid,
                "call_sid": call,
                "from": "+99910001",
                "to": "+99920002",
                "direction": "outbound",
                "tracks": ["inbound"],
                "custom_parameters": {},
                "media_format": {"encoding": "raw/slin", "sample_rate": 8000}
            }
        }),
    )
    .await;

    let chunks = [pcm_chunk(0), pcm_chunk(1000)];
    for (i, chunk) in chunks.iter().enumerate() {
        send(
            &mut ws,
            json!({
                "event": "media",
                "sequence_number": 2 + i,
                "stream_sid": sid,
                "media": {
                    "chunk": 1 + i,
                    "timestamp": (20 * i).to_string(),
                    "payload": B64.encode(chunk)
                }
            }),
        )
        .await;
    }

    for (i, delta) in chunks.iter().enumerate() {
        let reply = recv_json(&mut ws).await;
        assert_eq!(reply["type"], "response.audio.delta", "reply {i}: {reply}");
        let audio = B64
            .decode(reply["delta"].as_str().expect("delta is a string"))
            .expect("delta is base64");
        assert_eq!(&audio, delta, "echoed audio differs for chunk {i}");
    }

    let dtmf = |seq: usize, digit: &str| {
        json!({
            "event": "dtmf",
            "sequence_number": seq,
            "stream_sid": sid,
            "dtmf": {"digit": digit, "duration": "120"}
        })
    };

    send(&mut ws, dtmf(4, "5")).await;
    let reply = recv_json(&mut ws).await;
    assert_eq!(reply, json!({"type": "session.dtmf", "dtmf": "5"}));

    send(&mut ws, dtmf(5, "#")).await;
    // The bot echoes '#' as DTMF too, then hangs up; accept either order of
    // anything before the hangup, but the hangup must come.
    let mut saw_hangup = false;
    for _ in 0..2 {
        let reply = recv_json(&mut ws).await;
        match reply["type"].as_str() {
            Some("session.hangup") => {
                saw_hangup = true;
                break;
            }
            Some("session.dtmf") => assert_eq!(reply["dtmf"], "#"),
            _ => panic!("unexpected reply after '#': {reply}"),
        }
    }
    assert!(saw_hangup, "no session.hangup after '#'");

    // The bridge then ends the stream; the bot must close the socket.
    send(
        &mut ws,
        json!({
            "event": "stop",
            "sequence_number": 6,
            "stream_sid": sid,
            "stop": {"call_sid": call, "reason": "bot_hangup"}
        }),
    )
    .await;
    let closed = tokio::time::timeout(STEP, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
                Ok(other) => panic!("bot sent {other:?} after stop"),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "bot did not close the socket after stop");
}
