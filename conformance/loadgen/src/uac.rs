//! The phone side: one UDP socket for all SIP signalling, one RTP socket per
//! call, one 20 ms clock that sends every call's frames, and one receiving task
//! per RTP socket.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use codecs::pcm::FRAME_SAMPLES;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant, MissedTickBehavior};

use crate::call::{caller_number, Call, Shared};
use crate::frameid::{self, UlawFramer, MAX_FRAMES};
use crate::rtp::{self, SeqTracker};
use crate::sip::{self, Dialog, Message};

/// First INVITE retransmission interval (T1); it doubles up to [`T2`].
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// How long a BYE may go unanswered.
const BYE_TIMEOUT: Duration = Duration::from_secs(8);

/// The signalling socket and the calls listening on it, by Call-ID.
pub struct SipEndpoint {
    socket: UdpSocket,
    /// The bridge's SIP address.
    pub server: SocketAddr,
    /// Our signalling address.
    pub local: SocketAddr,
    routes: Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>,
}

impl SipEndpoint {
    /// Binds the signalling socket on `ip` and starts reading it.
    pub async fn start(ip: IpAddr, server: SocketAddr) -> anyhow::Result<Arc<SipEndpoint>> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
            .await
            .with_context(|| format!("cannot bind a SIP socket on {ip}"))?;
        let local = socket.local_addr()?;
        let ep = Arc::new(SipEndpoint {
            socket,
            server,
            local,
            routes: Mutex::new(HashMap::new()),
        });
        tokio::spawn(ep.clone().read_loop());
        Ok(ep)
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Message>>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Messages for `call_id` go to the returned receiver.
    pub fn register(&self, call_id: &str) -> mpsc::UnboundedReceiver<Message> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes().insert(call_id.to_string(), tx);
        rx
    }

    /// Stops routing `call_id`.
    pub fn unregister(&self, call_id: &str) {
        self.routes().remove(call_id);
    }

    /// Sends a message to the bridge.
    pub async fn send(&self, text: &str) {
        self.send_to(text, self.server).await;
    }

    async fn send_to(&self, text: &str, to: SocketAddr) {
        // A lost datagram is what retransmissions are for.
        let _ = self.socket.send_to(text.as_bytes(), to).await;
    }

    async fn read_loop(self: Arc<Self>) {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(_) => {
                    // ICMP errors surface here on Linux; they are not fatal.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            };
            let Some(msg) = Message::parse(&buf[..n]) else {
                continue;
            };
            let route = msg
                .call_id()
                .and_then(|cid| self.routes().get(cid).cloned());
            match msg.method().map(str::to_string) {
                Some(method) => {
                    let reply = match (method.as_str(), &route) {
                        ("ACK", _) => None,
                        ("BYE", Some(_)) | ("OPTIONS", _) | ("CANCEL", Some(_)) => {
                            Some(msg.reply(200, "OK", &sip::token()))
                        }
                        ("BYE", None) | ("CANCEL", None) => {
                            Some(msg.reply(481, "Call/Transaction Does Not Exist", &sip::token()))
                        }
                        ("INVITE", _) => Some(msg.reply(488, "Not Acceptable Here", &sip::token())),
                        _ => Some(msg.reply(501, "Not Implemented", &sip::token())),
                    };
                    if let Some(r) = reply {
                        self.send_to(&r, from).await;
                    }
                    if method == "BYE" {
                        if let Some(r) = route {
                            let _ = r.send(msg);
                        }
                    }
                }
                None => match route {
                    Some(r) => {
                        let _ = r.send(msg);
                    }
                    None => {
                        let late_answer = msg.code().is_some_and(|c| (200..300).contains(&c))
                            && msg.cseq().is_some_and(|(_, m)| m == "INVITE");
                        if late_answer {
                            if let Some(reqs) =
                                sip::ack_and_bye_orphan(&msg, self.local, self.server)
                            {
                                for r in reqs {
                                    self.send_to(&r, from).await;
                                }
                            }
                        }
                    }
                },
            }
        }
    }

    /// Sends OPTIONS until something answers, for up to `limit`.
    pub async fn probe(&self, limit: Duration) -> anyhow::Result<u16> {
        let cid = format!("{}@{}", sip::token(), self.local.ip());
        let mut rx = self.register(&cid);
        let req = sip::options(self.server, self.local, &cid);
        let deadline = Instant::now() + limit;
        let mut answer = None;
        while Instant::now() < deadline && answer.is_none() {
            self.send(&req).await;
            let wait = (Instant::now() + T1).min(deadline);
            if let Ok(Some(m)) = tokio::time::timeout_at(wait, rx.recv()).await {
                answer = m.code();
            }
        }
        self.unregister(&cid);
        answer.with_context(|| {
            format!(
                "nothing answers SIP at {} (OPTIONS, {} s): is the bridge running with --sip {}?",
                self.server,
                limit.as_secs(),
                self.server
            )
        })
    }
}

/// What the sending clock did.
#[derive(Debug, Default, Clone)]
pub struct ClockTally {
    /// Frames a socket refused.
    pub refused: u64,
    /// For each tick that sent anything: how late its last frame left, µs
    /// after the tick was due.
    pub lateness: Vec<u64>,
}

/// The 20 ms clock that sends every active call's next frame.
pub async fn media_clock(
    calls: Vec<Arc<Call>>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> ClockTally {
    let framer = UlawFramer::default();
    let mut state: Vec<(u16, u32, u32)> = calls
        .iter()
        .map(|_| (rand::random(), rand::random(), rand::random()))
        .collect();
    let mut pkt = [0u8; rtp::HEADER + FRAME_SAMPLES];
    let mut payload = [0u8; FRAME_SAMPLES];
    let mut tally = ClockTally::default();
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
    loop {
        let due = tokio::select! {
            _ = stop.changed() => break,
            due = clock.tick() => due,
        };
        let mut sent_any = false;
        for (call, (seq, ts, ssrc)) in calls.iter().zip(state.iter_mut()) {
            if !call.sending.load(Ordering::Acquire) {
                continue;
            }
            let Some(remote) = call.remote() else {
                continue;
            };
            let counter = call.next_frame.load(Ordering::Relaxed);
            if counter >= MAX_FRAMES {
                continue;
            }
            let first = call.first_frame.load(Ordering::Relaxed) == counter;
            rtp::write_header(&mut pkt, first, 0, *seq, *ts, *ssrc);
            let speech = call.speaks(counter);
            if speech {
                framer.write(frameid::make_id(call.index, counter), &mut payload);
                pkt[rtp::HEADER..].copy_from_slice(&payload);
                call.phone_sent.put(counter, shared.now_us());
            } else {
                pkt[rtp::HEADER..].copy_from_slice(framer.quiet());
            }
            match call.socket.try_send_to(&pkt, remote) {
                Ok(_) if speech => {
                    call.phone_sent_ok.insert(counter);
                }
                Ok(_) => {}
                Err(_) => tally.refused += 1,
            }
            sent_any = true;
            call.next_frame.store(counter + 1, Ordering::Release);
            *seq = seq.wrapping_add(1);
            *ts = ts.wrapping_add(FRAME_SAMPLES as u32);
        }
        if sent_any {
            tally
                .lateness
                .push(Instant::now().saturating_duration_since(due).as_micros() as u64);
        }
    }
    tally
}

/// What one call's RTP receiver saw.
#[derive(Debug, Default, Clone)]
pub struct RxTally {
    /// RTP packets received.
    pub packets: u64,
    /// Missing sequence numbers.
    pub seq_lost: i64,
    /// SSRCs seen.
    pub sources: u32,
    /// Datagrams that were not RTP, or not PCMU.
    pub other: u64,
    /// Packets without a frame id (silence, the bridge's own audio).
    pub no_id: u64,
    /// Frame ids seen again.
    pub duplicates: u64,
    /// Frame ids of another call.
    pub misrouted: u64,
    /// Bot → phone latency: (frame counter, microseconds, whether the frame
    /// met an empty playout queue: the packet before it had no bot audio).
    pub latency: Vec<(u32, u64, bool)>,
}

/// Reads one call's RTP socket until `stop`.
pub async fn rtp_receiver(
    call: Arc<Call>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> RxTally {
    let mut t = RxTally::default();
    let mut seq = SeqTracker::default();
    let mut buf = [0u8; 2048];
    // (ssrc, seq, carried bot audio) of the last packet.
    let mut prev: Option<(u32, u16, bool)> = None;
    loop {
        let n = tokio::select! {
            _ = stop.changed() => break,
            r = call.socket.recv_from(&mut buf) => match r {
                Ok((n, _)) => n,
                Err(_) => continue,
            },
        };
        let now = shared.now_us();
        let Some(p) = rtp::parse(&buf[..n]) else {
            t.other += 1;
            continue;
        };
        t.packets += 1;
        seq.on_packet(p.ssrc, p.seq);
        if p.pt != 0 {
            t.other += 1;
            continue;
        }
        let id = frameid::read_ulaw(p.payload).map(frameid::split_id);
        // The bridge plays silence only when its playout queue is empty, so a
        // frame right after a silent one found the queue empty when it came.
        let after_silence = prev.is_some_and(|(ssrc, seq, audio)| {
            ssrc == p.ssrc && seq.wrapping_add(1) == p.seq && !audio
        });
        prev = Some((p.ssrc, p.seq, id.is_some()));
        match id {
            Some((index, counter)) if index == call.index => {
                if call.phone_got.insert(counter) {
                    if let Some(sent) = call
                        .bot_sent
                        .get(counter)
                        .filter(|_| call.keeps_latency(counter))
                    {
                        t.latency
                            .push((counter, now.saturating_sub(sent), after_silence));
                    }
                } else {
                    t.duplicates += 1;
                }
            }
            Some(_) => t.misrouted += 1,
            None => t.no_id += 1,
        }
    }
    t.seq_lost = seq.lost();
    t.sources = seq.sources;
    t
}

/// How a call's setup ended, reported as soon as it is known.
#[derive(Debug, Clone)]
pub enum Setup {
    /// 200 OK after this long.
    Established(Duration),
    /// It failed, for this reason.
    Failed(String),
}

/// How a whole call went.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// The call's index.
    pub index: u32,
    /// INVITE → 200 OK, when it was answered.
    pub setup: Option<Duration>,
    /// When the 200 OK came.
    pub answered_at: Option<Instant>,
    /// Why it failed to set up.
    pub failure: Option<String>,
    /// The bridge hung up before we did.
    pub dropped: bool,
    /// Our BYE got a final answer (None when no BYE was sent).
    pub bye_answered: Option<bool>,
    /// The counter of the first frame this call sent.
    pub first_frame: u32,
    /// The counter of the last frame sent, when any was.
    pub last_frame: Option<u32>,
}

/// Where a call sends and what it calls.
pub struct CallPlan {
    /// The signalling endpoint.
    pub sip: Arc<SipEndpoint>,
    /// The DID.
    pub did: String,
    /// Our address for SDP.
    pub local_ip: IpAddr,
    /// Give up on setup after this long.
    pub setup_timeout: Duration,
}

/// Places call `call` at `start_at`: INVITE, media until `hang_up` turns
/// true, BYE. Sends its setup result on `setup_tx` exactly once.
pub async fn run_call(
    plan: Arc<CallPlan>,
    call: Arc<Call>,
    start_at: Instant,
    setup_tx: mpsc::UnboundedSender<Setup>,
    mut hang_up: watch::Receiver<bool>,
) -> CallOutcome {
    let mut out = CallOutcome {
        index: call.index,
        setup: None,
        answered_at: None,
        failure: None,
        dropped: false,
        bye_answered: None,
        first_frame: 0,
        last_frame: None,
    };
    sleep_until(start_at).await;
    let ep = &plan.sip;
    let dialog = Dialog::new(ep.server, ep.local, &plan.did, &caller_number(call.index));
    let mut rx = ep.register(&dialog.call_id);
    let port = call.socket.local_addr().map(|a| a.port()).unwrap_or(0);
    let invite = dialog.invite(&sip::sdp_offer(
        plan.local_ip,
        port,
        rand::random::<u32>() as u64,
    ));

    // Setup.
    let sent_at = Instant::now();
    ep.send(&invite).await;
    let deadline = sent_at + plan.setup_timeout;
    let mut interval = T1;
    let mut next_resend = sent_at + interval;
    let mut provisional = false;
    let answered: Result<(Message, String, SocketAddr), String> = loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(m) = m else { break Err("signalling stopped".into()) };
                if m.method() == Some("BYE") {
                    break Err("the bridge hung up before answering".into());
                }
                if m.cseq().map(|(_, meth)| meth) != Some("INVITE") {
                    continue;
                }
                match m.code() {
                    Some(100..=199) => provisional = true,
                    Some(200..=299) => {
                        let ack = dialog.ack(&m);
                        ep.send(&ack).await;
                        match sip::sdp_answer(&m.body) {
                            Ok((remote, 0)) => break Ok((m, ack, remote)),
                            Ok((_, pt)) => {
                                ep.send(&dialog.bye(&m, 2)).await;
                                break Err(format!("the answer chose payload type {pt}; we offered PCMU (0) only"));
                            }
                            Err(e) => {
                                ep.send(&dialog.bye(&m, 2)).await;
                                break Err(e);
                            }
                        }
                    }
                    Some(code) => {
                        ep.send(&dialog.ack(&m)).await;
                        let reason = match &m.start {
                            sip::StartLine::Response { reason, .. } => reason.clone(),
                            _ => String::new(),
                        };
                        break Err(format!("{code} {reason}"));
                    }
                    None => {}
                }
            }
            _ = sleep_until(next_resend), if !provisional => {
                ep.send(&invite).await;
                interval = (interval * 2).min(T2);
                next_resend = Instant::now() + interval;
            }
            _ = sleep_until(deadline) => {
                break Err(format!("no answer within {} s", plan.setup_timeout.as_secs()));
            }
        }
    };
    let (ok, ack, remote) = match answered {
        Ok(a) => a,
        Err(why) => {
            ep.unregister(&dialog.call_id);
            let _ = setup_tx.send(Setup::Failed(why.clone()));
            out.failure = Some(why);
            return out;
        }
    };
    let now = Instant::now();
    out.setup = Some(now - sent_at);
    out.answered_at = Some(now);
    let _ = setup_tx.send(Setup::Established(now - sent_at));

    // Media until the hold ends or the bridge hangs up.
    *call.remote.write().unwrap_or_else(|p| p.into_inner()) = Some(remote);
    out.first_frame = call.next_frame.load(Ordering::Acquire);
    call.first_frame.store(out.first_frame, Ordering::Relaxed);
    call.sending.store(true, Ordering::Release);
    loop {
        tokio::select! {
            // Map at once: the borrow `wait_for` returns must not be held.
            _ = async { hang_up.wait_for(|h| *h).await.map(|_| ()) } => break,
            m = rx.recv() => match m {
                None => break,
                Some(m) if m.method() == Some("BYE") => {
                    out.dropped = true;
                    break;
                }
                // Our ACK was lost: the 200 OK comes again.
                Some(m) if m.code().is_some_and(|c| (200..300).contains(&c)) => ep.send(&ack).await,
                Some(_) => {}
            },
        }
    }
    call.sending.store(false, Ordering::Release);
    out.last_frame = call
        .next_frame
        .load(Ordering::Acquire)
        .checked_sub(1)
        .filter(|l| *l >= out.first_frame);

    if !out.dropped {
        let bye = dialog.bye(&ok, 2);
        let deadline = Instant::now() + BYE_TIMEOUT;
        let mut interval = T1;
        ep.send(&bye).await;
        let mut next_resend = Instant::now() + interval;
        let mut answered = false;
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    None => break,
                    Some(m) => {
                        if m.method() == Some("BYE") {
                            // Both hung up at once: theirs was answered already.
                            answered = true;
                            break;
                        }
                        if m.cseq().is_some_and(|(_, meth)| meth == "BYE") && m.code().is_some_and(|c| c >= 200) {
                            answered = true;
                            break;
                        }
                        if m.code().is_some_and(|c| (200..300).contains(&c)) && m.cseq().is_some_and(|(_, meth)| meth == "INVITE") {
                            ep.send(&ack).await;
                        }
                    }
                },
                _ = sleep_until(next_resend) => {
                    ep.send(&bye).await;
                    interval = (interval * 2).min(T2);
                    next_resend = Instant::now() + interval;
                }
                _ = sleep_until(deadline) => break,
            }
        }
        out.bye_answered = Some(answered);
    }
    ep.unregister(&dialog.call_id);
    out
}

/// A soak's call slot: from `start_at`, call after call until `end` turns
/// true, each hung up after a time drawn between `length.0` and `length.1`
/// (so calls end and start all the time), the next placed at once (a second
/// later after a failure). Every call's setup is reported on `setup_tx`.
pub async fn run_slot(
    plan: Arc<CallPlan>,
    call: Arc<Call>,
    start_at: Instant,
    setup_tx: mpsc::UnboundedSender<Setup>,
    mut end: watch::Receiver<bool>,
    length: (Duration, Duration),
) -> Vec<CallOutcome> {
    let mut outcomes = Vec::new();
    let mut at = start_at;
    loop {
        tokio::select! {
            _ = sleep_until(at) => {}
            _ = async { end.wait_for(|e| *e).await.map(|_| ()) } => break,
        }
        let span = length.1.saturating_sub(length.0);
        let hold = length.0 + span.mul_f64(rand::random::<f64>());
        let (hang_up_tx, hang_up) = watch::channel(false);
        let mut end2 = end.clone();
        let timer = tokio::spawn(async move {
            tokio::select! {
                _ = sleep_until(at + hold) => {}
                _ = async { end2.wait_for(|e| *e).await.map(|_| ()) } => {}
            }
            let _ = hang_up_tx.send(true);
        });
        let o = run_call(plan.clone(), call.clone(), at, setup_tx.clone(), hang_up).await;
        timer.abort();
        at = Instant::now()
            + if o.failure.is_some() {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            };
        outcomes.push(o);
        if *end.borrow() {
            break;
        }
    }
    outcomes
}
