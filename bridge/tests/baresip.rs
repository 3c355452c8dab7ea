//! Outbound calls to a real softphone: baresip on loopback is the trunk. It
//! auto-answers, speaks `assets/speech.wav` (the `aufile` source) and records
//! both directions of each call (the `sndfile` filter), so the test can look
//! for its own speech, echoed by the bot, in what it received.
//!
//! These tests need `baresip` (Debian: `baresip-core`, whose modules include
//! `aufile`, `sndfile` and `g711`). Without it they print SKIPPED locally,
//! and fail when `CI` is set.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use codecs::pcm::find_delay;
use common::phone::SipPhone;
use common::*;
use protocol::{BotEvent, StopReason};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};

/// Where the Debian package puts the modules.
const MODULE_DIRS: [&str; 3] = [
    "/usr/lib/baresip/modules",
    "/usr/lib64/baresip/modules",
    "/usr/local/lib/baresip/modules",
];

/// The modules the tests load, each a must.
const MODULES: [&str; 6] = ["stdio", "menu", "account", "g711", "aufile", "sndfile"];

fn module_dir() -> Option<PathBuf> {
    MODULE_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| MODULES.iter().all(|m| d.join(format!("{m}.so")).is_file()))
}

/// The baresip modules directory, or `None` (and SKIPPED) without baresip.
fn baresip_available() -> Option<PathBuf> {
    let runs = std::process::Command::new("baresip")
        .arg("-h")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let dir = module_dir().filter(|_| runs);
    if dir.is_none() {
        // CI installs baresip (.ci/run); there a missing one is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "baresip (with modules {MODULES:?}) is not installed but CI is set: \
             .ci/run must install baresip-core"
        );
        eprintln!("SKIPPED: baresip is not installed (apt-get install baresip-core)");
    }
    dir
}

/// A free UDP port on loopback.
fn free_port() -> u16 {
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        if p.is_multiple_of(2) && p < 60000 {
            return p;
        }
    }
}

fn speech() -> bridge::wav::Pcm {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/speech.wav");
    let pcm = bridge::wav::read(&path).expect("assets/speech.wav");
    assert_eq!((pcm.sample_rate, pcm.channels), (8000, 1));
    pcm
}

/// A baresip instance answering calls on loopback, in its own directory.
struct Baresip {
    child: Child,
    stdin: ChildStdin,
    dir: tempfile::TempDir,
    port: u16,
}

impl Baresip {
    /// The number the bridge dials; baresip takes calls for its account's user.
    const USER: &'static str = "+16660000001";

    /// Starts baresip with an account that needs no registration and answers
    /// at once. It speaks `assets/speech.wav` and then silence (the `aufile`
    /// source ends the call at the end of its file, so the file is padded),
    /// and records each call in `rec/`. It quits by itself after `quit_after`.
    fn start(modules: &Path, quit_after: Duration) -> Baresip {
        Self::launch(modules, quit_after, None)
    }

    /// [`Baresip::start`], but as extension `ext` of the bridge at
    /// `registrar`: it registers there (digest `password`) and answers the
    /// calls the bridge sends to its Contact.
    fn start_registered(
        modules: &Path,
        quit_after: Duration,
        registrar: SocketAddr,
        ext: &str,
        password: &str,
    ) -> Baresip {
        Self::launch(modules, quit_after, Some((registrar, ext, password)))
    }

    fn launch(
        modules: &Path,
        quit_after: Duration,
        registrar: Option<(SocketAddr, &str, &str)>,
    ) -> Baresip {
        let dir = tempfile::Builder::new()
            .prefix("baresip-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let mut source = speech().samples;
        source.resize(source.len() + 30 * 8000, 0);
        let wav = dir.path().join("speech-then-silence.wav");
        write_wav(&wav, &source);
        let rec = dir.path().join("rec");
        std::fs::create_dir(&rec).unwrap();
        let mut config = format!(
            "poll_method epoll\n\
             sip_listen 127.0.0.1:{port}\n\
             net_interface 127.0.0.1\n\
             call_local_timeout 20\n\
             call_max_calls 1\n\
             audio_source aufile,{wav}\n\
             audio_level no\n\
             ausrc_format s16\n\
             auplay_format s16\n\
             auenc_format s16\n\
             audec_format s16\n\
             jitter_buffer_delay 1-5\n\
             rtp_stats no\n\
             statmode_default off\n\
             module_path {modules}\n\
             snd_path {rec}\n",
            wav = wav.display(),
            modules = modules.display(),
            rec = rec.display(),
        );
        for m in ["stdio", "g711", "aufile", "sndfile"] {
            config.push_str(&format!("module {m}.so\n"));
        }
        config.push_str("module_tmp account.so\nmodule_app menu.so\n");
        std::fs::write(dir.path().join("config"), config).unwrap();
        let account = match registrar {
            None => format!("<sip:{}@127.0.0.1:{port}>;regint=0", Self::USER),
            Some((at, ext, password)) => {
                format!("<sip:{ext}@{at};transport=udp>;auth_pass={password};regint=60")
            }
        };
        std::fs::write(
            dir.path().join("accounts"),
            format!("{account};answermode=auto;audio_codecs=PCMU,PCMA\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("contacts"), "").unwrap();
        let log = std::fs::File::create(dir.path().join("baresip.log")).unwrap();
        let mut child = Command::new("baresip")
            .current_dir(dir.path())
            .arg("-f")
            .arg(dir.path())
            // SIP trace and debug output, so a failure can be explained.
            .args(["-s", "-v", "-t", &quit_after.as_secs().to_string()])
            // stdio (the menu's keyboard) needs a pipe: epoll refuses /dev/null.
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("baresip starts");
        let stdin = child.stdin.take().unwrap();
        Baresip {
            child,
            stdin,
            dir,
            port,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// Waits until baresip listens (bounded).
    async fn ready(&self) {
        let deadline = tokio::time::Instant::now() + 10 * SEC;
        while !self.log().contains("baresip is ready") {
            assert!(
                tokio::time::Instant::now() < deadline && !self.log().contains("init failed"),
                "baresip did not start; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the registrar accepted baresip's REGISTER (bounded).
    async fn registered(&self) {
        let deadline = tokio::time::Instant::now() + 10 * SEC;
        let me = format!("127.0.0.1:{}", self.port);
        while !sip_trace(&self.log())
            .iter()
            .any(|m| m.to == me && m.cseq == "REGISTER" && m.first.starts_with("SIP/2.0 200"))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "baresip did not register; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types a menu command (e.g. `/hangup`).
    async fn command(&mut self, cmd: &str) {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("baresip reads its stdin");
        self.stdin.flush().await.unwrap();
    }

    /// Asks baresip to quit and waits (bounded) so its recordings are complete.
    /// Returns its log.
    async fn quit(&mut self) -> String {
        let _ = self.command("/quit").await;
        let done = tokio::time::timeout(10 * SEC, self.child.wait()).await;
        if done.is_err() {
            let _ = self.child.kill().await;
        }
        self.log()
    }

    /// The one recording of `what` (`"dec"`: what baresip received and
    /// decoded; `"enc"`: what it sent). sndfile names them
    /// `dump-<date-time>-dec.wav` and `-enc.wav`.
    fn recording(&self, what: &str) -> bridge::wav::Pcm {
        let rec = self.dir.path().join("rec");
        let files: Vec<PathBuf> = std::fs::read_dir(&rec)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("dump-") && n.ends_with(&format!("-{what}.wav")))
            })
            .collect();
        assert_eq!(
            files.len(),
            1,
            "one {what} recording in {}: {files:?}; baresip's log:\n{}",
            rec.display(),
            self.log()
        );
        bridge::wav::read(&files[0]).expect("baresip's recording is a WAV file")
    }
}

/// One SIP message of baresip's trace (`-s`): sender, receiver, first line
/// and CSeq method.
#[derive(Debug)]
struct Traced {
    from: String,
    to: String,
    first: String,
    cseq: String,
}

/// The SIP messages in baresip's log. Each is printed as a `#` line, then
/// `UDP <from> -> <to>`, the message, and a blank line.
fn sip_trace(log: &str) -> Vec<Traced> {
    let mut out = Vec::new();
    let lines: Vec<&str> = log.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some((from, to)) = line.strip_prefix("UDP ").and_then(|l| l.split_once(" -> ")) else {
            continue;
        };
        let Some(first) = lines.get(i + 1) else {
            continue;
        };
        let cseq = lines[i + 1..]
            .iter()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| l.strip_prefix("CSeq: "))
            .and_then(|v| v.split_whitespace().nth(1))
            .unwrap_or_default();
        out.push(Traced {
            from: from.trim().to_string(),
            to: to.trim().to_string(),
            first: first.trim().to_string(),
            cseq: cseq.to_string(),
        });
    }
    out
}

/// Whether baresip's trace (baresip at `baresip_port`) has a BYE sent by
/// baresip (`baresip_sends`) or to it, and the 200 OK for it the other way.
fn bye_completed(log: &str, baresip_port: u16, baresip_sends: bool) -> bool {
    let me = format!("127.0.0.1:{baresip_port}");
    let trace = sip_trace(log);
    let bye = trace
        .iter()
        .any(|m| m.first.starts_with("BYE ") && (m.from == me) == baresip_sends);
    let ok = trace.iter().any(|m| {
        m.first.starts_with("SIP/2.0 200") && m.cseq == "BYE" && (m.to == me) == baresip_sends
    });
    bye && ok
}

/// The bridge with a route `+1666` to baresip as a UDP trunk.
async fn start_bridge_to(dir: &Path, baresip_port: u16) -> bridge::server::Running {
    init_logs();
    let toml = format!(
        "[calls]\nring_timeout_secs = 10\n\n\
         [[sip.trunks]]\nname = \"baresip\"\nhost = \"127.0.0.1\"\nport = {baresip_port}\ntransport = \"udp\"\n\n\
         [[routes]]\nprefix = \"+1666\"\ntrunk = \"baresip\"\n"
    );
    common::sipp::start_sip_bridge(dir, &toml).await
}

/// A bot that echoes the caller's audio like `examples::serve_echo`, and hangs
/// up after `hangup_after` media chunks (never, if `None`).
async fn echo_bot(hangup_after: Option<u64>) -> TestBot {
    TestBot::spawn(move |mut c| async move {
        while let Some(ev) = c.next_event(15 * SEC).await {
            if let BotEvent::Media { chunk, payload, .. } = ev {
                let samples: Vec<i16> = payload
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                c.send_audio(&samples).await;
                if Some(chunk) == hangup_after {
                    c.send(r#"{"type":"session.hangup"}"#).await;
                }
            }
        }
        c
    })
    .await
}

/// Waits until the call is answered (bounded).
async fn wait_answered(addr: SocketAddr, logid: i64, baresip: &Baresip) {
    let deadline = tokio::time::Instant::now() + 15 * SEC;
    loop {
        let rec = call_log(addr, logid).await;
        match rec["call_state"].as_str().unwrap_or("") {
            "in-progress" => return,
            "initiated" | "ringing" => {}
            _ => panic!(
                "the call ended before it was answered: {rec}\nbaresip's log:\n{}",
                baresip.log()
            ),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "baresip did not answer: {rec}\nbaresip's log:\n{}",
            baresip.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The echo bot's call through baresip: baresip hears its own speech come
/// back, and the bot's hangup reaches baresip as a BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_hears_its_speech_echoed_by_the_bot() {
    let Some(modules) = baresip_available() else {
        return;
    };
    let mut phone = Baresip::start(&modules, Duration::from_secs(60));
    phone.ready().await;
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge_to(dir.path(), phone.port).await;
    let bot = echo_bot(Some(250)).await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": Baresip::USER, "wss_url": bot.url()}),
    )
    .await;
    let rec = wait_final(bridge.addr, logid, 30 * SEC).await;
    assert_eq!(
        rec["call_state"],
        "completed",
        "{rec}\nbaresip's log:\n{}",
        phone.log()
    );
    assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
    let conns = bot.finished(1, 10 * SEC).await;
    assert_stream_contiguous(&conns[0].events);
    match conns[0].events.last().unwrap() {
        BotEvent::Stop { reason, .. } => assert_eq!(*reason, StopReason::BotHangup),
        e => panic!("last event {e:?}"),
    }

    // baresip got the BYE, answered 200 OK and closed the call.
    let deadline = tokio::time::Instant::now() + 10 * SEC;
    while !phone.log().contains("terminated (duration") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "baresip did not close the call; its log:\n{}",
            phone.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = phone.quit().await;
    assert!(
        bye_completed(&log, phone.port, false),
        "the bridge sent BYE and baresip answered 200 OK; its log:\n{log}"
    );

    let speech = speech().samples;
    let first = speech
        .iter()
        .position(|&s| s.unsigned_abs() > 500)
        .expect("speech.wav has speech");
    // What baresip sent: speech.wav from the start of the call.
    let sent = phone.recording("enc");
    assert_eq!((sent.sample_rate, sent.channels), (8000, 1));
    let (sent_lag, corr) = find_delay(&sent.samples, &speech[first..first + 8000], 2 * first);
    assert!(
        corr > 0.99 && sent_lag.abs_diff(first) <= 160,
        "baresip sent speech.wav (lag {sent_lag}, correlation {corr:.3})"
    );

    // What baresip received (decoded): the same speech, echoed back by the
    // bot, after G.711 twice. Each half second of speech is looked for on its
    // own, up to 1 s late: a jitter buffer that drops or inserts a frame (as
    // they do on a loaded machine) then spoils one piece, not the whole match.
    let received = phone.recording("dec");
    assert_eq!(
        (received.sample_rate, received.channels),
        (8000, 1),
        "baresip records received audio at 8 kHz mono"
    );
    let heard = received.samples;
    let mut pieces = Vec::new();
    for start in (first..speech.len() - 4000).step_by(4000) {
        let piece = &speech[start..start + 4000];
        if codecs::pcm::rms(piece) < 500.0 || heard.len() < start + 4000 {
            continue;
        }
        let (lag, corr) = find_delay(&heard[start..], piece, 8000);
        pieces.push((start, lag, corr));
    }
    let found: Vec<_> = pieces.iter().filter(|p| p.2 > 0.5).collect();
    println!(
        "baresip heard its speech back (speech at ms, echo delay ms, correlation): {:?}; \
         {} ms of audio received; the bridge's RTP: {}",
        pieces
            .iter()
            .map(|(s, l, c)| (s / 8, l / 8, format!("{c:.3}")))
            .collect::<Vec<_>>(),
        heard.len() / 8,
        rec["phone"]["rtp"]
    );
    assert!(
        pieces.len() >= 4 && found.len() * 4 >= pieces.len() * 3,
        "baresip's own speech is in what it received (correlation > 0.5 in at least \
         3/4 of the half-second pieces): {pieces:?}"
    );
    // The echo may line up with the speech to the sample: the bridge passes
    // each packet on as it arrives and plays the bot's first frame at once.
    assert!(
        found.iter().all(|p| p.1 < 4000),
        "the echo comes less than 500 ms after the speech: {pieces:?}"
    );
    bridge.stop().await;
}

/// baresip hangs up after 3 s: the call completes with `callended` and the
/// bot gets `stop` with that reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_hangup_ends_the_call() {
    let Some(modules) = baresip_available() else {
        return;
    };
    let mut phone = Baresip::start(&modules, Duration::from_secs(60));
    phone.ready().await;
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge_to(dir.path(), phone.port).await;
    let bot = echo_bot(None).await;
    let logid = dial(
        bridge.addr,
        json!({"customer_no": Baresip::USER, "wss_url": bot.url()}),
    )
    .await;
    wait_answered(bridge.addr, logid, &phone).await;
    tokio::time::sleep(3 * SEC).await;
    phone.command("/hangup").await;
    let rec = wait_final(bridge.addr, logid, 15 * SEC).await;
    assert_eq!(
        rec["call_state"],
        "completed",
        "{rec}\nbaresip's log:\n{}",
        phone.log()
    );
    assert_eq!(
        rec["end_reason"],
        "callended",
        "{rec}\nbaresip's log:\n{}",
        phone.log()
    );
    let duration = rec["call_duration"].as_i64().unwrap();
    assert!((2..=6).contains(&duration), "duration {duration} s");
    let conns = bot.finished(1, 10 * SEC).await;
    assert_stream_contiguous(&conns[0].events);
    assert!(conns[0].count("media") > 100, "media flowed for 3 s");
    match conns[0].events.last().unwrap() {
        BotEvent::Stop { reason, .. } => assert_eq!(*reason, StopReason::CallEnded),
        e => panic!("last event {e:?}"),
    }
    let loud = conns[0]
        .events
        .iter()
        .filter(|e| match e {
            BotEvent::Media { payload, .. } => {
                let s: Vec<i16> = payload
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                codecs::pcm::rms(&s) > 300.0
            }
            _ => false,
        })
        .count();
    assert!(
        loud > 50,
        "baresip's speech reached the bot ({loud} loud chunks)"
    );
    let log = phone.quit().await;
    assert!(
        bye_completed(&log, phone.port, true),
        "baresip sent BYE and the bridge answered 200 OK; its log:\n{log}"
    );
    bridge.stop().await;
}

/// `session.transfer_extension` to an extension that baresip registered with
/// the bridge's registrar: a SIP caller reaches a DID's bot, the bot hands it
/// to extension 101, baresip answers; the caller hears baresip's speech and
/// baresip records the caller's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_transfers_a_sip_caller_to_a_registered_baresip() {
    let Some(modules) = baresip_available() else {
        return;
    };
    const DID: &str = "+15550004000";
    let dir = tempfile::tempdir().unwrap();
    let bot = TestBot::spawn(|mut c| async move {
        c.until("start", 10 * SEC).await;
        c.send(r#"{"type":"session.transfer_extension","extension":"101"}"#)
            .await;
        c.drain(20 * SEC).await;
        c
    })
    .await;
    let toml = format!(
        "[calls]\nring_timeout_secs = 10\n\n\
         [[dids]]\nnumber = \"{DID}\"\nbot_url = \"{}\"\n\n\
         [[sip.extensions]]\nnumber = \"101\"\npassword = \"s3cret\"\n",
        bot.url()
    );
    let bridge = common::sipp::start_sip_bridge(dir.path(), &toml).await;
    let mut agent = Baresip::start_registered(
        &modules,
        Duration::from_secs(60),
        bridge.sip_addr.unwrap(),
        "101",
        "s3cret",
    );
    agent.ready().await;
    agent.registered().await;

    // The caller says speech.wav backwards (so each direction is told from
    // the other) for 8 s, on a 20 ms clock, and hangs up.
    let speech = speech().samples;
    let mut said: Vec<i16> = speech.iter().rev().copied().collect();
    said.resize(8 * 8000, 0);
    let mut phone = SipPhone::call(bridge.sip_addr.unwrap(), DID, "+15557650009").await;
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    let ts0: u32 = rand::random();
    for (n, frame) in said.chunks_exact(160).enumerate() {
        let mut payload = [0u8; 160];
        codecs::g711::ulaw_encode_slice(frame, &mut payload);
        clock.tick().await;
        phone
            .send_rtp(n == 0, 0, ts0.wrapping_add(160 * n as u32), &payload)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    phone.hang_up().await;

    let conns = bot.finished(1, 10 * SEC).await;
    assert!(
        matches!(
            conns[0].events.last(),
            Some(BotEvent::Stop {
                reason: StopReason::Transferred,
                ..
            })
        ),
        "{:?}\nbaresip's log:\n{}",
        conns[0].events.last(),
        agent.log()
    );
    let rec = &wait_final(bridge.addr, 1, 10 * SEC).await;
    assert_eq!(rec["end_reason"], "callended", "{rec}");
    assert_eq!(rec["attended_by"], "agent", "{rec}");
    assert_eq!(rec["agent_no"], "101");
    assert_eq!(rec["legs"][0]["kind"], "extension");
    assert_eq!(rec["legs"][0]["outcome"], "answered");

    let deadline = tokio::time::Instant::now() + 10 * SEC;
    while !agent.log().contains("terminated (duration") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "baresip did not close the call; its log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let trace = agent.quit().await;
    assert!(
        bye_completed(&trace, agent.port, false),
        "the bridge sent BYE when the caller hung up; baresip's log:\n{trace}"
    );

    // The caller heard baresip's speech, and baresip heard the caller's.
    let heard: Vec<i16> = phone
        .received()
        .iter()
        .flat_map(|r| r.payload.iter().map(|&c| codecs::g711::ulaw_decode(c)))
        .collect();
    let pieces = pieces_found(&heard, &speech);
    println!("baresip's speech at the caller (offset, lag, correlation): {pieces:?}");
    assert!(
        pieces.len() >= 4 && pieces.iter().filter(|p| p.2 > 0.5).count() * 4 >= pieces.len() * 3,
        "baresip's speech reached the caller: {pieces:?}"
    );
    let recorded = agent.recording("dec").samples;
    let pieces = pieces_found(&recorded, &said);
    println!("the caller's speech at baresip (offset, lag, correlation): {pieces:?}");
    assert!(
        pieces.len() >= 4 && pieces.iter().filter(|p| p.2 > 0.5).count() * 4 >= pieces.len() * 3,
        "the caller's speech reached baresip: {pieces:?}"
    );
    bridge.stop().await;
}

/// Where `speech`'s loud half-second pieces are in `heard`: the first one
/// anywhere, the next ones within 1 s of where it put them. Each is (offset
/// in `speech`, lag, correlation).
fn pieces_found(heard: &[i16], speech: &[i16]) -> Vec<(usize, usize, f64)> {
    let loud: Vec<usize> = (0..speech.len().saturating_sub(4000))
        .step_by(4000)
        .filter(|&s| codecs::pcm::rms(&speech[s..s + 4000]) >= 500.0)
        .collect();
    let Some(&first) = loud.first() else {
        return Vec::new();
    };
    let (at, corr) = find_delay(heard, &speech[first..first + 4000], heard.len());
    let mut out = vec![(first, at, corr)];
    for &start in &loud[1..] {
        let from = (at + start - first).saturating_sub(4000);
        if heard.len() < from + 12000 {
            break;
        }
        let (lag, corr) = find_delay(&heard[from..], &speech[start..start + 4000], 8000);
        out.push((start, from + lag, corr));
    }
    out
}
