//! SIP over TLS to a trunk (`transport = "tls"`): the bridge dials out over a
//! TLS connection verified against the operator's CA, the trunk (a small TLS
//! SIP user agent written here, with a certificate from a test CA) answers,
//! audio flows both ways over RTP, and the BYE comes back over the same TLS
//! connection. Without the CA the trunk is not trusted: nothing is sent to it
//! and the call is not answered.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pki::*;
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// What the TLS trunk saw: each request's method, and RTP packets received.
#[derive(Default)]
struct Trunk {
    methods: Vec<String>,
    rtp_in: usize,
}

fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        })
        .collect()
}

/// An answer to `req` with `status`, and `body` as SDP if given.
fn answer(req: &str, status: &str, contact: &str, body: Option<&str>) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        for line in header(req, name) {
            out.push_str(line.trim_end());
            out.push_str("\r\n");
        }
    }
    for line in header(req, "To") {
        out.push_str(line.trim_end());
        if !line.contains("tag=") {
            out.push_str(";tag=tlstrunk");
        }
        out.push_str("\r\n");
    }
    out.push_str(&format!("Contact: {contact}\r\n"));
    match body {
        Some(b) => out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    out
}

/// The remote RTP address in an SDP body.
fn rtp_target(sdp: &str) -> std::net::SocketAddr {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap()
        .trim();
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    format!("{ip}:{port}").parse().unwrap()
}

/// Starts the TLS trunk; returns its port and what it saw.
async fn tls_trunk(pki: &Pki) -> (u16, Arc<Mutex<Trunk>>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(pki));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let rtp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let rtp_port = rtp.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Trunk::default()));
    {
        let (rtp, seen) = (rtp.clone(), seen.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while rtp.recv_from(&mut buf).await.is_ok() {
                seen.lock().unwrap().rtp_in += 1;
            }
        });
    }
    let keep = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let (seen, rtp) = (keep.clone(), rtp.clone());
            tokio::spawn(async move {
                let contact = format!("<sip:trunk@127.0.0.1:{port};transport=tls>");
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One message: the head, then Content-Length bytes.
                    let msg = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_string();
                            let len: usize = header(&head, "Content-Length")
                                .first()
                                .and_then(|l| l.split_once(':'))
                                .and_then(|(_, v)| v.trim().parse().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                let msg =
                                    String::from_utf8_lossy(&buf[..end + 4 + len]).to_string();
                                buf.drain(..end + 4 + len);
                                break Some(msg);
                            }
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => break None,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let Some(msg) = msg else { return };
                    if msg.starts_with("SIP/2.0") {
                        continue;
                    }
                    let method = msg.split_whitespace().next().unwrap_or("").to_string();
                    seen.lock().unwrap().methods.push(method.clone());
                    let reply = match method.as_str() {
                        "INVITE" => {
                            let offer = msg.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
                            let target = rtp_target(offer);
                            let sdp = format!(
                                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                                 m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
                                 a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
                            );
                            // Speech-like audio for 3 s once answered.
                            let rtp = rtp.clone();
                            tokio::spawn(async move {
                                let mut clock = tokio::time::interval(Duration::from_millis(20));
                                for n in 0u16..150 {
                                    clock.tick().await;
                                    let mut pkt = vec![0x80, 0];
                                    pkt.extend_from_slice(&n.to_be_bytes());
                                    pkt.extend_from_slice(&(160 * u32::from(n)).to_be_bytes());
                                    pkt.extend_from_slice(&[1, 2, 3, 4]);
                                    pkt.extend_from_slice(&[0x10; 160]);
                                    let _ = rtp.send_to(&pkt, target).await;
                                }
                            });
                            answer(&msg, "200 OK", &contact, Some(&sdp))
                        }
                        "ACK" => continue,
                        _ => answer(&msg, "200 OK", &contact, None),
                    };
                    if tls.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

fn config(port: u16, ca: Option<&std::path::Path>) -> String {
    let ca = ca.map_or(String::new(), |p| {
        format!("tls_ca_file = '{}'\n", p.display())
    });
    format!(
        "[calls]\nring_timeout_secs = 5\n\n[sip]\n{ca}\n\
         [[sip.trunks]]\nname = \"secure\"\nhost = \"127.0.0.1\"\nport = {port}\ntransport = \"tls\"\n\n\
         [[routes]]\nprefix = \"+1555\"\ntrunk = \"secure\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_a_tls_trunk_carries_audio_and_ends_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&["127.0.0.1"]);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let (port, trunk) = tls_trunk(&pki).await;
    let bot = TestBot::spawn(|mut c| async move {
        // Until the trunk's audio (μ-law 0x10, not silence) has been heard.
        let mut heard = 0;
        while heard < 50 {
            if let Some(protocol::BotEvent::Media { payload, .. }) = c.next_event(5 * SEC).await {
                if payload.iter().any(|&b| b != 0) {
                    heard += 1;
                }
            }
        }
        c.send_audio(&[3000i16; 8000]).await;
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(10 * SEC).await;
        c
    })
    .await;
    let bridge = common::sipp::start_sip_bridge(dir.path(), &config(port, Some(&ca))).await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+15551230000", "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 30 * SEC).await;
    assert_eq!(rec["call_state"], "completed", "{rec}");
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    bot.finished(1, 10 * SEC).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (methods, rtp_in) = {
        let seen = trunk.lock().unwrap();
        (seen.methods.clone(), seen.rtp_in)
    };
    assert_eq!(methods, ["INVITE", "ACK", "BYE"], "over TLS");
    assert!(rtp_in > 25, "the trunk heard the bot: {rtp_in} packets");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_trunk_with_an_untrusted_certificate_is_not_called() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&["127.0.0.1"]);
    // Trusted: another CA than the trunk's.
    let other = make_pki(&["127.0.0.1"]);
    let ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, &other.ca_pem).unwrap();
    let (port, trunk) = tls_trunk(&pki).await;
    let bridge = common::sipp::start_sip_bridge(dir.path(), &config(port, Some(&ca))).await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": "+15551230000", "wss_url": "ws://127.0.0.1:9/"}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 60 * SEC).await;
    // Known gap: the refused handshake is not reported as such; the INVITE
    // is never sent and the call ends at the ring timeout (408).
    assert_ne!(rec["call_state"], "completed", "{rec}");
    assert!(rec["answered_at"].is_null(), "{rec}");
    assert!(
        trunk.lock().unwrap().methods.is_empty(),
        "nothing reached the trunk"
    );
    bridge.stop().await;
}
