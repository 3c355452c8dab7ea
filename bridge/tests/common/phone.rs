//! A SIP phone on loopback, written for the tests: it calls the bridge over
//! UDP (INVITE, ACK, BYE), sends RTP packets the test composes one by one
//! (audio or RFC 4733 events, with the timing the test chooses), and records
//! every RTP packet the bridge sends it. Nothing is hidden from the test, so
//! it can compare what was sent with what came back byte for byte.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

/// One RTP packet the phone received.
#[derive(Debug, Clone)]
pub struct Received {
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub payload_type: u8,
    pub payload: Vec<u8>,
}

/// A call placed by the phone, answered by the bridge.
pub struct SipPhone {
    sip: UdpSocket,
    rtp: Arc<UdpSocket>,
    server: SocketAddr,
    call_id: String,
    from_tag: String,
    to_tag: String,
    from: String,
    /// The number called, at the bridge (the To of the dialog).
    to_uri: String,
    /// Where requests go: the number called, then the bridge's Contact.
    target: String,
    /// Where the bridge wants our RTP.
    pub remote_rtp: SocketAddr,
    /// Every RTP packet received so far, in arrival order.
    pub received: Arc<Mutex<Vec<Received>>>,
    ssrc: u32,
    seq: u16,
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn status(msg: &str) -> Option<u16> {
    msg.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

impl SipPhone {
    /// Calls `did` at the bridge's SIP address from `from` and waits (at most
    /// 10 s) for the answer, which it acknowledges. Offers PCMU and
    /// telephone-event 101.
    pub async fn call(server: SocketAddr, did: &str, from: &str) -> SipPhone {
        let sip = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rtp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let local = sip.local_addr().unwrap();
        let rtp_port = rtp.local_addr().unwrap().port();
        let tag: u64 = rand::random();
        let mut phone = SipPhone {
            sip,
            rtp,
            server,
            call_id: format!("{:x}@test-phone", rand::random::<u64>()),
            from_tag: format!("{tag:x}"),
            to_tag: String::new(),
            from: from.to_string(),
            to_uri: format!("sip:{did}@{server}"),
            target: format!("sip:{did}@{server}"),
            remote_rtp: server,
            received: Arc::new(Mutex::new(Vec::new())),
            ssrc: rand::random(),
            seq: rand::random(),
        };
        let sdp = format!(
            "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        let invite = phone.request("INVITE", 1, &format!("<sip:{local}>"), &sdp, local);
        let answer = phone.transact(&invite, "INVITE").await;
        assert_eq!(status(&answer), Some(200), "the bridge answers: {answer}");
        let to = header(&answer, "to").unwrap_or_default();
        phone.to_tag = to
            .split(";tag=")
            .nth(1)
            .map(|t| t.split(';').next().unwrap_or(t).to_string())
            .expect("To tag in 200 OK");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let ip = body
            .lines()
            .find_map(|l| l.strip_prefix("c=IN IP4 "))
            .expect("c= line")
            .trim();
        let port = body
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|l| l.split(' ').next())
            .expect("m= line")
            .trim();
        phone.remote_rtp = format!("{ip}:{port}").parse().unwrap();
        // The bridge's Contact is where in-dialog requests go.
        if let Some(uri) = header(&answer, "contact")
            .and_then(|c| c.split('<').nth(1))
            .and_then(|c| c.split('>').next())
        {
            phone.target = uri.to_string();
        }
        let ack = phone.request("ACK", 1, &format!("<sip:{local}>"), "", local);
        phone.sip.send_to(ack.as_bytes(), server).await.unwrap();

        let (rtp, received) = (phone.rtp.clone(), phone.received.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, _)) = rtp.recv_from(&mut buf).await {
                if n < 12 {
                    continue;
                }
                let b = &buf[..n];
                received.lock().unwrap().push(Received {
                    marker: b[1] & 0x80 != 0,
                    payload_type: b[1] & 0x7f,
                    seq: u16::from_be_bytes([b[2], b[3]]),
                    ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                    payload: b[12..].to_vec(),
                });
            }
        });
        phone
    }

    fn request(
        &self,
        method: &str,
        cseq: u32,
        contact: &str,
        body: &str,
        local: SocketAddr,
    ) -> String {
        let to_tag = if self.to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={}", self.to_tag)
        };
        let branch: u64 = rand::random();
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch:x};rport\r\n\
             From: <sip:{from}@{local}>;tag={ftag}\r\n\
             To: <{to_uri}>{to_tag}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: {contact}\r\n\
             Max-Forwards: 70\r\n\
             {ctype}Content-Length: {len}\r\n\r\n{body}",
            uri = self.target,
            to_uri = self.to_uri,
            from = self.from,
            ftag = self.from_tag,
            cid = self.call_id,
            len = body.len(),
        )
    }

    /// Sends a request and waits for its final response (retransmitting every
    /// 500 ms, at most 10 s).
    async fn transact(&self, msg: &str, method: &str) -> String {
        let mut buf = vec![0u8; 65535];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        self.sip.send_to(msg.as_bytes(), self.server).await.unwrap();
        loop {
            let wait =
                tokio::time::timeout(Duration::from_millis(500), self.sip.recv_from(&mut buf));
            match wait.await {
                Ok(Ok((n, _))) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let for_us = header(&text, "cseq").is_some_and(|c| c.ends_with(method));
                    match status(&text) {
                        Some(code) if code >= 200 && for_us => return text,
                        _ => {}
                    }
                }
                _ => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "no final answer to {method} in 10 s"
                    );
                    self.sip.send_to(msg.as_bytes(), self.server).await.unwrap();
                }
            }
        }
    }

    /// Sends one RTP packet to the bridge.
    pub async fn send_rtp(&mut self, marker: bool, payload_type: u8, ts: u32, payload: &[u8]) {
        let mut pkt = Vec::with_capacity(12 + payload.len());
        pkt.push(0x80);
        pkt.push(payload_type | if marker { 0x80 } else { 0 });
        pkt.extend_from_slice(&self.seq.to_be_bytes());
        pkt.extend_from_slice(&ts.to_be_bytes());
        pkt.extend_from_slice(&self.ssrc.to_be_bytes());
        pkt.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.rtp.send_to(&pkt, self.remote_rtp).await.unwrap();
    }

    /// Hangs up (BYE) and waits for the bridge's 200.
    pub async fn hang_up(&self) {
        let local = self.sip.local_addr().unwrap();
        let bye = self.request("BYE", 2, &format!("<sip:{local}>"), "", local);
        let answer = self.transact(&bye, "BYE").await;
        assert_eq!(status(&answer), Some(200), "BYE answered: {answer}");
    }

    /// The packets received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}
