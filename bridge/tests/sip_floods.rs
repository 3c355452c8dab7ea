//! The SIP port under floods and guessing, from raw UDP peers on loopback
//! addresses of their own (127.0.0.2, .3, ...), beside a well-behaved peer on
//! 127.0.0.1: per-source budgets, lockout after failed REGISTERs, nonces that
//! expire, and no way to tell which extensions exist.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::sipp::start_sip_bridge;
use common::*;
use rsipstack::dialog::authenticate::compute_digest;
use rsipstack::sip::headers::auth::{Algorithm, AuthQop};
use rsipstack::sip::Method;
use tokio::net::UdpSocket;

/// A SIP peer on its own loopback address.
struct Peer {
    socket: UdpSocket,
    bridge: SocketAddr,
    n: u32,
}

impl Peer {
    async fn on(ip: &str, bridge: SocketAddr) -> Peer {
        let socket = UdpSocket::bind(format!("{ip}:0")).await.unwrap();
        Peer {
            socket,
            bridge,
            n: 0,
        }
    }

    fn request(&mut self, method: &str, user: &str, extra: &str) -> String {
        self.n += 1;
        let me = self.socket.local_addr().unwrap();
        let b = self.bridge;
        format!(
            "{method} sip:{b} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-{n}-{port}\r\n\
             From: <sip:{user}@{b}>;tag=t{n}\r\n\
             To: <sip:{user}@{b}>\r\n\
             Call-ID: c{n}-{port}@test\r\n\
             CSeq: {n} {method}\r\n\
             Contact: <sip:{user}@{me}>\r\n\
             Max-Forwards: 70\r\n{extra}\
             Content-Length: 0\r\n\r\n",
            n = self.n,
            port = me.port(),
        )
    }

    async fn send(&self, text: &str) {
        self.socket
            .send_to(text.as_bytes(), self.bridge)
            .await
            .unwrap();
    }

    /// The next answer, if one comes within `limit`.
    async fn answer(&self, limit: Duration) -> Option<String> {
        let mut buf = vec![0u8; 65536];
        match tokio::time::timeout(limit, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => None,
        }
    }

    /// Sends and waits for the final answer (skipping 1xx).
    async fn ask(&mut self, method: &str, user: &str, extra: &str) -> Option<String> {
        let req = self.request(method, user, extra);
        self.send(&req).await;
        loop {
            let a = self.answer(Duration::from_secs(2)).await?;
            if !a.starts_with("SIP/2.0 1") {
                return Some(a);
            }
        }
    }

    /// REGISTERs `user` with `password`: the status of the answer to the
    /// authenticated attempt (or of the challenge, if it was not one).
    async fn register(&mut self, user: &str, password: &str) -> Option<u16> {
        let challenge = self.ask("REGISTER", user, "Expires: 60\r\n").await?;
        if status(&challenge) != 401 {
            return Some(status(&challenge));
        }
        let nonce = nonce_of(&challenge);
        let auth = self.authorization(user, password, &nonce);
        let a = self.ask("REGISTER", user, &auth).await?;
        Some(status(&a))
    }

    fn authorization(&self, user: &str, password: &str, nonce: &str) -> String {
        let uri = format!("sip:{}", self.bridge);
        let qop = AuthQop::Auth {
            cnonce: "c0ffee".into(),
            nc: 1,
        };
        let response = compute_digest(
            user,
            password,
            "bridge",
            nonce,
            &Method::Register,
            &uri,
            Algorithm::Md5,
            Some(&qop),
        );
        format!(
            "Authorization: Digest username=\"{user}\", realm=\"bridge\", nonce=\"{nonce}\", \
             uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, \
             cnonce=\"c0ffee\"\r\nExpires: 60\r\n"
        )
    }
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn nonce_of(challenge: &str) -> String {
    let at = challenge.find("nonce=\"").expect("a nonce") + 7;
    challenge[at..].split('"').next().unwrap().to_string()
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

const CONFIG: &str = r#"
[sip]
requests_per_sec = 20
request_burst = 40
auth_failures_before_lockout = 5
lockout_secs = 300
nonce_lifetime_secs = 1

[[sip.extensions]]
number = "101"
password = "right-pw"
"#;

/// Guessing passwords: an unknown extension and a wrong password get the
/// same answers (401, then 403); after 5 failures the guesser's source gets
/// no answers at all, while the real phone on another address registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_locked_out_and_users_cannot_be_enumerated() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_sip_bridge(dir.path(), CONFIG).await;
    let sip = bridge.sip_addr.unwrap();

    let mut guesser = Peer::on("127.0.0.2", sip).await;
    // Both unknown and known users: challenged, then refused alike.
    let unknown = guesser.ask("REGISTER", "999", "").await.unwrap();
    let known = guesser.ask("REGISTER", "101", "").await.unwrap();
    assert_eq!(status(&unknown), 401, "{unknown}");
    assert_eq!(status(&known), 401, "{known}");
    assert_eq!(guesser.register("999", "guess").await, Some(403));
    assert_eq!(guesser.register("101", "guess").await, Some(403));
    for _ in 0..3 {
        assert_eq!(guesser.register("101", "guess").await, Some(403));
    }
    // Five failures: locked out, even with the right password.
    assert_eq!(guesser.ask("REGISTER", "101", "").await, None);
    assert_eq!(guesser.register("101", "right-pw").await, None);
    assert_eq!(
        metric(bridge.addr, "bridge_sip_auth_failures_total").await,
        5
    );
    assert_eq!(metric(bridge.addr, "bridge_sip_lockouts_total").await, 1);
    assert!(
        metric(
            bridge.addr,
            "bridge_sip_requests_dropped_total{reason=\"locked_out\"}"
        )
        .await
            >= 2
    );

    // The phone on its own address is not affected.
    let mut phone = Peer::on("127.0.0.1", sip).await;
    assert_eq!(phone.register("101", "right-pw").await, Some(200));
    assert!(bridge.engine.sip().unwrap().is_registered("101"));
    bridge.stop().await;
}

/// A nonce is good for `nonce_lifetime_secs`: an answer computed on an older
/// one gets a fresh challenge marked `stale=true` (not a 403), and a forged
/// nonce is challenged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_expire_and_forged_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_sip_bridge(dir.path(), CONFIG).await;
    let sip = bridge.sip_addr.unwrap();
    let mut phone = Peer::on("127.0.0.1", sip).await;

    let challenge = phone.ask("REGISTER", "101", "").await.unwrap();
    let nonce = nonce_of(&challenge);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let auth = phone.authorization("101", "right-pw", &nonce);
    let again = phone.ask("REGISTER", "101", &auth).await.unwrap();
    assert_eq!(status(&again), 401, "{again}");
    let www = header(&again, "WWW-Authenticate").unwrap();
    assert!(www.contains("stale=true"), "{www}");
    // With the fresh nonce it goes through.
    let auth = phone.authorization("101", "right-pw", &nonce_of(&again));
    let ok = phone.ask("REGISTER", "101", &auth).await.unwrap();
    assert_eq!(status(&ok), 200, "{ok}");

    // A nonce the bridge never issued is not taken, even with the right
    // password computed over it.
    let forged = format!("{:016x}{}", 1u64, "00".repeat(16));
    let auth = phone.authorization("101", "right-pw", &forged);
    let refused = phone.ask("REGISTER", "101", &auth).await.unwrap();
    assert_eq!(status(&refused), 401, "{refused}");
    assert!(!header(&refused, "WWW-Authenticate")
        .unwrap()
        .contains("stale=true"));
    bridge.stop().await;
}

/// A flood of new requests from one source: answered up to its budget and
/// then dropped, counted on `/metrics`; a phone on another address is
/// answered throughout, a call that is up meanwhile loses nothing, and the
/// flooder's budget comes back with time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_is_held_to_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let bot = TestBot::listener(10 * SEC).await;
    let toml = format!(
        "{CONFIG}\n[[dids]]\nnumber = \"+15550002000\"\nbot_url = \"{}\"\n",
        bot.url()
    );
    let bridge = start_sip_bridge(dir.path(), &toml).await;
    let sip = bridge.sip_addr.unwrap();
    let mut flooder = Peer::on("127.0.0.3", sip).await;
    let mut phone = Peer::on("127.0.0.1", sip).await;

    // A live call talks through the flood: 150 frames of a steady tone.
    let mut caller = common::phone::SipPhone::call(sip, "+15550002000", "+15557650001").await;
    let talking = tokio::spawn(async move {
        let mut clock = tokio::time::interval(Duration::from_millis(20));
        for n in 0..150u32 {
            clock.tick().await;
            caller.send_rtp(n == 0, 0, 160 * n, &[0xF0; 160]).await;
        }
        caller
    });

    let sent = 2000;
    for _ in 0..sent {
        let req = flooder.request("OPTIONS", "x", "");
        flooder.send(&req).await;
    }
    let mut answered = 0;
    while flooder.answer(Duration::from_millis(500)).await.is_some() {
        answered += 1;
    }
    // The burst (40), plus what the budget refilled while the flood went on.
    assert!(
        (40..=200).contains(&answered),
        "{answered} of {sent} answered"
    );
    let dropped = metric(
        bridge.addr,
        "bridge_sip_requests_dropped_total{reason=\"over_budget\"}",
    )
    .await;
    // Some of the flood may be lost in the kernel's socket buffer before the
    // bridge reads it; what was read was answered or counted.
    eprintln!("flood: {sent} sent, {answered} answered, {dropped} dropped by the guard");
    assert!(
        dropped > 0 && dropped + answered <= sent,
        "{dropped} dropped"
    );
    // The phone was never limited.
    let a = phone.ask("OPTIONS", "x", "").await.unwrap();
    assert_eq!(status(&a), 200, "{a}");
    // A second later the flooder has a budget again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let a = flooder.ask("OPTIONS", "x", "").await.unwrap();
    assert_eq!(status(&a), 200, "{a}");

    // The call heard every frame, in order, with no gap.
    let caller = talking.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    caller.hang_up().await;
    let conns = bot.finished(1, 10 * SEC).await;
    assert_stream_contiguous(&conns[0].events);
    let tone = codecs::g711::Law::Ulaw.decode(0xF0);
    let heard = conns[0]
        .events
        .iter()
        .filter_map(|e| match e {
            protocol::BotEvent::Media { payload, .. } => Some(payload),
            _ => None,
        })
        .filter(|p| {
            p.chunks_exact(2)
                .all(|b| i16::from_le_bytes([b[0], b[1]]) == tone)
        })
        .count();
    assert_eq!(heard, 150, "every frame the caller said reached the bot");
    bridge.stop().await;
}

/// RTP from another address in the middle of a call (an attacker guessing
/// the port, or injecting audio) is ignored: the bot hears only the phone,
/// and the packets are counted on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_from_another_address_is_not_heard() {
    use codecs::g711::Law;
    let dir = tempfile::tempdir().unwrap();
    let bot = TestBot::listener(10 * SEC).await;
    let toml = format!(
        "[[dids]]\nnumber = \"+15550002000\"\nbot_url = \"{}\"\n",
        bot.url()
    );
    let bridge = start_sip_bridge(dir.path(), &toml).await;
    let mut phone =
        common::phone::SipPhone::call(bridge.sip_addr.unwrap(), "+15550002000", "+15557650001")
            .await;
    let intruder = UdpSocket::bind("127.0.0.4:0").await.unwrap();
    // The phone says a quiet tone (μ-law 0xF0); the intruder the loudest
    // negative sample there is (0x00), with its own SSRC, interleaved.
    let (phone_code, intruder_code) = (0xF0u8, 0x00u8);
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    for n in 0..100u32 {
        clock.tick().await;
        phone.send_rtp(n == 0, 0, 160 * n, &[phone_code; 160]).await;
        if n >= 10 {
            let mut pkt = vec![0x80, 0, 0, n as u8, 0, 0, 0, 0, 0xBA, 0xD0, 0xBA, 0xD0];
            pkt[4..8].copy_from_slice(&(160 * n).to_be_bytes());
            pkt.extend_from_slice(&[intruder_code; 160]);
            intruder.send_to(&pkt, phone.remote_rtp).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    phone.hang_up().await;

    let conns = bot.finished(1, 10 * SEC).await;
    let samples: Vec<i16> = conns[0]
        .events
        .iter()
        .filter_map(|e| match e {
            protocol::BotEvent::Media { payload, .. } => Some(payload),
            _ => None,
        })
        .flat_map(|p| p.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])))
        .collect();
    let phone_sample = Law::Ulaw.decode(phone_code);
    let intruder_sample = Law::Ulaw.decode(intruder_code);
    let heard_phone = samples.iter().filter(|&&s| s == phone_sample).count();
    assert!(
        heard_phone >= 90 * 160,
        "the bot heard the phone: {heard_phone} samples"
    );
    assert!(
        !samples.contains(&intruder_sample),
        "the bot heard the intruder"
    );
    let ignored = metric(
        bridge.addr,
        "bridge_frames_dropped_total{reason=\"rtp_unexpected_source\"}",
    )
    .await;
    assert_eq!(ignored, 90, "every intruding packet counted");
    bridge.stop().await;
}
