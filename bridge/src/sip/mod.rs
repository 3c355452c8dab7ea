//! The SIP user agent: UDP and TCP transports (rsipstack), outbound INVITEs to
//! trunks and registered extensions, inbound INVITEs to our DIDs, and a
//! registrar with digest authentication.
//!
//! Signalling runs in one small task per call; media does not: a [`SipLeg`]
//! owns the call's RTP socket. The engine's 20 ms clock drives what it sends,
//! and the socket's readiness what it receives, so a packet from the phone
//! reaches the bot the moment it arrives.

pub mod guard;
pub mod rtp;
pub mod rtpstream;
pub mod sdp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use codecs::pcm::Frame;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{self as rsip, Header, Method, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TransportLayer};
use rsipstack::EndpointBuilder;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::carrier::{LegEvent, PhoneLeg};
use crate::config::{ExtensionConfig, SipConfig, TrunkConfig};
use crate::jitter::JitterConfig;
use crate::rtpstream::{Outbox, RtpStream, RxOutcome};

/// A pool of RTP ports; a port goes back when its guard drops.
pub struct PortPool {
    free: Mutex<std::collections::VecDeque<u16>>,
    ip: IpAddr,
}

/// A bound RTP socket holding its port.
pub struct RtpPort {
    /// The socket.
    pub socket: tokio::net::UdpSocket,
    /// Its port.
    pub port: u16,
    pool: Arc<PortPool>,
}

impl Drop for RtpPort {
    fn drop(&mut self) {
        self.pool
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(self.port);
    }
}

impl PortPool {
    /// Even ports from `min` to `max` on `ip`.
    pub fn new(ip: IpAddr, min: u16, max: u16) -> Arc<PortPool> {
        let first = min + (min & 1);
        Arc::new(PortPool {
            free: Mutex::new((first..=max).step_by(2).collect()),
            ip,
        })
    }

    /// Binds the next free port; `None` when every port is taken. Call it
    /// within the runtime.
    pub fn take(self: &Arc<Self>) -> Option<RtpPort> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..free.len() {
            let port = free.pop_front()?;
            let bound = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port))
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .and_then(tokio::net::UdpSocket::from_std);
            match bound {
                Ok(socket) => {
                    return Some(RtpPort {
                        socket,
                        port,
                        pool: self.clone(),
                    })
                }
                _ => {
                    tracing::warn!(port, "RTP port busy, skipped");
                    free.push_back(port);
                }
            }
        }
        None
    }

    /// Ports not in use.
    pub fn available(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// What the signalling task tells the leg.
enum Signal {
    Leg(LegEvent),
    Media(sdp::Negotiated),
}

/// What the leg asks of the signalling task.
#[derive(Debug)]
enum Control {
    Answer,
    Hangup,
}

/// Datagrams read from an RTP socket before the call's task takes the frames
/// they make (160 ms of audio).
const RECEIVE_BATCH: usize = 8;

/// A SIP call's phone side: RTP media on the engine's clock, signalling via
/// its task.
pub struct SipLeg {
    rtp: RtpPort,
    stream: Option<RtpStream>,
    jitter: JitterConfig,
    signals: mpsc::UnboundedReceiver<Signal>,
    control: mpsc::UnboundedSender<Control>,
    pending: std::collections::VecDeque<LegEvent>,
    outbox: Outbox,
    /// How the phone's audio is taken, once the engine has said
    /// ([`PhoneLeg::next_said`]).
    paced: Option<bool>,
    epoch: Instant,
    last_warning: Option<Instant>,
    ended: bool,
    /// Datagrams that came before the media was negotiated, with their
    /// arrival times (at most [`MAX_EARLY_DATAGRAMS`]).
    early: Vec<(SocketAddr, Vec<u8>, u64)>,
}

/// RTP kept from before the SDP answer was read (a 200 OK and the first
/// packets after it race to the bridge).
const MAX_EARLY_DATAGRAMS: usize = 16;

impl SipLeg {
    fn new(
        rtp: RtpPort,
        jitter: JitterConfig,
        signals: mpsc::UnboundedReceiver<Signal>,
        control: mpsc::UnboundedSender<Control>,
    ) -> SipLeg {
        SipLeg {
            rtp,
            stream: None,
            jitter,
            signals,
            control,
            pending: Default::default(),
            outbox: Outbox::default(),
            paced: None,
            epoch: Instant::now(),
            last_warning: None,
            ended: false,
            early: Vec::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn warn(&mut self, what: std::fmt::Arguments<'_>) {
        // Garbage can arrive at packet rate: say so at most once a second.
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_warning = Some(now);
            tracing::warn!(port = self.rtp.port, "{what}");
        }
    }

    fn start_media(&mut self, neg: sdp::Negotiated) {
        if self.stream.is_some() {
            return;
        }
        tracing::info!(remote = %neg.remote, law = ?neg.law, te = ?neg.telephone_event, "RTP media starts");
        let mut stream = RtpStream::new(
            neg,
            rand::random(),
            rand::random(),
            rand::random(),
            self.jitter,
        );
        if self.paced == Some(false) {
            stream.set_eager();
        }
        self.stream = Some(stream);
        // The far end may send its first packets before its 200 OK has been
        // read here: they were kept, and count now.
        for (from, data, at) in std::mem::take(&mut self.early) {
            self.on_datagram(from, &data, at);
        }
    }

    fn drain_signals(&mut self) {
        while let Ok(s) = self.signals.try_recv() {
            self.on_signal(s);
        }
    }

    fn on_signal(&mut self, s: Signal) {
        match s {
            Signal::Media(neg) => self.start_media(neg),
            Signal::Leg(ev) => self.pending.push_back(ev),
        }
    }

    /// Reads the datagrams waiting on the socket, at most [`RECEIVE_BATCH`] at a
    /// time (so that a task that ran late hands them on in pieces rather than
    /// overfilling the jitter buffer). Ready once something was read (or the
    /// socket failed); pending, with the waker registered, once nothing is left.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let now = self.now_ms();
        let mut got = 0;
        // Not zeroed: the socket writes what is read.
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
        loop {
            let mut rb = tokio::io::ReadBuf::uninit(&mut buf);
            match self.rtp.socket.poll_recv_from(cx, &mut rb) {
                Poll::Ready(Ok(from)) => {
                    got += 1;
                    self.on_datagram(from, rb.filled(), now);
                    if got == RECEIVE_BATCH {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(Err(e)) => {
                    // An ICMP error from an earlier send, typically: the phone
                    // is not listening (yet). The socket stays usable.
                    self.warn(format_args!("RTP receive error: {e}"));
                    return Poll::Ready(());
                }
                Poll::Pending if got > 0 => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Reads what is waiting, without registering for a wake-up.
    fn receive_now(&mut self) {
        let now = self.now_ms();
        let mut buf = [0u8; 1500];
        for _ in 0..RECEIVE_BATCH {
            match self.rtp.socket.try_recv_from(&mut buf) {
                Ok((n, from)) => self.on_datagram(from, &buf[..n], now),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.warn(format_args!("RTP receive error: {e}"));
                    return;
                }
            }
        }
    }

    fn on_datagram(&mut self, from: SocketAddr, data: &[u8], now: u64) {
        let Some(stream) = self.stream.as_mut() else {
            if self.early.len() < MAX_EARLY_DATAGRAMS {
                self.early.push((from, data.to_vec(), now));
            }
            return;
        };
        match stream.on_datagram(from, data, now) {
            RxOutcome::Dtmf(digit, duration_ms) => self
                .pending
                .push_back(LegEvent::Dtmf { digit, duration_ms }),
            RxOutcome::Malformed(why) => self.warn(format_args!(
                "ignored a malformed RTP packet from {from}: {why}"
            )),
            RxOutcome::UnexpectedSource(src) => self.warn(format_args!(
                "ignored RTP from unexpected source {src} (media comes from {})",
                stream_remote(&self.stream)
            )),
            _ => {}
        }
    }

    fn send_outbox(&mut self) {
        for (to, pkt) in self.outbox.packets() {
            if let Err(e) = self.rtp.socket.try_send_to(pkt, *to) {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    tracing::debug!("RTP send to {to}: {e}");
                }
            }
        }
    }
}

fn stream_remote(s: &Option<RtpStream>) -> String {
    s.as_ref()
        .map(|s| s.remote().to_string())
        .unwrap_or_default()
}

impl SipLeg {
    /// One tick's work: signalling, keys received, and (with `heard`) the
    /// frame played to the phone.
    fn step(&mut self, heard: Option<&Frame>) {
        self.drain_signals();
        let now = self.now_ms();
        // Nothing for a frame's time: look at the socket before the jitter
        // buffer takes a packet for late, in case a busy machine has not yet
        // run the wake-up for it.
        if self.paced == Some(false)
            && self
                .stream
                .as_ref()
                .is_some_and(|s| s.last_rx_ms().is_none_or(|t| now.saturating_sub(t) > 20))
        {
            self.receive_now();
        }
        match self.stream.as_mut() {
            Some(stream) if !self.ended => {
                // A key whose end packets were all lost still counts, once.
                if let Some((digit, duration_ms)) = stream.poll_dtmf(now) {
                    self.pending
                        .push_back(LegEvent::Dtmf { digit, duration_ms });
                }
                if let Some(heard) = heard {
                    stream.play(now, heard, &mut self.outbox);
                    self.send_outbox();
                }
            }
            _ => {}
        }
    }
}

impl PhoneLeg for SipLeg {
    fn tick(&mut self, heard: &Frame) {
        self.step(Some(heard));
    }

    fn tick_held(&mut self) {
        self.step(None);
    }

    fn play_held(&mut self, heard: &Frame) {
        let now = self.now_ms();
        if let Some(stream) = self.stream.as_mut().filter(|_| !self.ended) {
            stream.play(now, heard, &mut self.outbox);
            self.send_outbox();
        }
    }

    fn skip_held(&mut self) {
        let now = self.now_ms();
        if let Some(stream) = self.stream.as_mut() {
            stream.skip_frame(now);
        }
    }

    fn set_paced(&mut self) {
        if self.paced == Some(false) {
            if let Some(stream) = self.stream.as_mut() {
                stream.set_paced();
            }
        }
        self.paced = Some(true);
    }

    fn next_said(&mut self, said: &mut Frame, paced: bool) -> bool {
        if self.paced.is_none() {
            self.paced = Some(paced);
            if let (false, Some(stream)) = (paced, self.stream.as_mut()) {
                stream.set_eager();
            }
        }
        let now = self.now_ms();
        if paced {
            self.receive_now();
            match self.stream.as_mut() {
                Some(stream) if !self.ended => {
                    stream.pull(now, said);
                }
                _ => said.fill(0),
            }
            return true;
        }
        match self.stream.as_mut() {
            Some(stream) if !self.ended => stream.next_ready(now, said).is_some(),
            _ => false,
        }
    }

    fn poll_arrival(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Signalling first, so that an answer (and the media it starts) is
        // known before the audio that follows it is read.
        let mut signalled = false;
        while let Poll::Ready(Some(s)) = self.signals.poll_recv(cx) {
            self.on_signal(s);
            signalled = true;
        }
        match self.poll_receive(cx) {
            Poll::Pending if signalled => Poll::Ready(()),
            p => p,
        }
    }

    fn ready_to_play_now(&self) -> bool {
        let now = self.now_ms();
        match self.stream.as_ref() {
            Some(stream) if !self.ended => stream.can_play_now(now),
            _ => false,
        }
    }

    fn play_now(&mut self, heard: &Frame) {
        let now = self.now_ms();
        if let Some(stream) = self.stream.as_mut() {
            stream.play_now(now, heard, &mut self.outbox);
            self.send_outbox();
        }
    }

    fn poll_event(&mut self) -> Option<LegEvent> {
        if self.pending.is_empty() {
            self.drain_signals();
        }
        self.pending.pop_front()
    }

    fn takes_out_of_band_dtmf(&self) -> bool {
        true
    }

    fn send_dtmf(&mut self, digit: char) -> bool {
        self.stream.as_mut().is_some_and(|s| s.send_dtmf(digit))
    }

    fn is_sending_dtmf(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_sending_dtmf())
    }

    fn answer(&mut self) {
        let _ = self.control.send(Control::Answer);
    }

    fn hangup(&mut self) {
        self.ended = true;
        let _ = self.control.send(Control::Hangup);
    }

    fn report(&self) -> Option<serde_json::Value> {
        let s = self.stream.as_ref()?.stats();
        Some(serde_json::json!({ "rtp": s }))
    }
}

/// A registered contact of an extension.
#[derive(Debug, Clone)]
struct Binding {
    contact: rsip::Uri,
    expires: Instant,
}

/// Why a call could not be placed over SIP.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Every RTP port is in use.
    #[error("no free RTP port")]
    NoPort,
    /// The extension has no registered contact.
    #[error("extension {0} is not registered")]
    NotRegistered(String),
    /// A URI could not be built.
    #[error("bad SIP address: {0}")]
    BadUri(String),
}

/// The running SIP user agent.
pub struct SipUa {
    cfg: SipConfig,
    dialogs: Arc<DialogLayer>,
    listen: SocketAddr,
    public_ip: IpAddr,
    ports: Arc<PortPool>,
    bindings: Mutex<HashMap<String, Vec<Binding>>>,
    nonces: guard::Nonces,
    limiter: Arc<Mutex<guard::SourceLimiter>>,
    /// What the flood guard refused, for `/metrics`.
    pub guard_stats: Arc<GuardStats>,
    /// The guard's clock starts here.
    epoch: Instant,
    cancel: CancellationToken,
}

/// Counts of what the SIP flood guard did.
#[derive(Debug, Default)]
pub struct GuardStats {
    /// Requests dropped: the source was over its budget.
    pub over_budget: std::sync::atomic::AtomicU64,
    /// Requests dropped: the source was locked out.
    pub locked_out: std::sync::atomic::AtomicU64,
    /// REGISTERs that failed authentication.
    pub auth_failures: std::sync::atomic::AtomicU64,
    /// Sources locked out.
    pub lockouts: std::sync::atomic::AtomicU64,
}

impl GuardStats {
    /// Appends the Prometheus text of these counts.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let _ = writeln!(
            out,
            "# HELP bridge_sip_requests_dropped_total New SIP requests dropped unanswered, by reason.\n\
             # TYPE bridge_sip_requests_dropped_total counter\n\
             bridge_sip_requests_dropped_total{{reason=\"over_budget\"}} {}\n\
             bridge_sip_requests_dropped_total{{reason=\"locked_out\"}} {}\n\
             # HELP bridge_sip_auth_failures_total REGISTERs that failed digest authentication.\n\
             # TYPE bridge_sip_auth_failures_total counter\n\
             bridge_sip_auth_failures_total {}\n\
             # HELP bridge_sip_lockouts_total Sources locked out for failing authentication.\n\
             # TYPE bridge_sip_lockouts_total counter\n\
             bridge_sip_lockouts_total {}",
            self.over_budget.load(Relaxed),
            self.locked_out.load(Relaxed),
            self.auth_failures.load(Relaxed),
            self.lockouts.load(Relaxed),
        );
    }
}

/// Drops new requests from sources over budget or locked out, before the
/// SIP stack makes a transaction for them.
struct FloodInspector {
    limiter: Arc<Mutex<guard::SourceLimiter>>,
    stats: Arc<GuardStats>,
    epoch: Instant,
}

#[async_trait::async_trait]
impl rsipstack::transaction::endpoint::TransportEventInspector for FloodInspector {
    async fn handle(
        &self,
        event: rsipstack::transport::TransportEvent,
    ) -> Option<rsipstack::transport::TransportEvent> {
        use rsipstack::transport::TransportEvent;
        let TransportEvent::Incoming(rsip::SipMessage::Request(req), _, from) = &event else {
            return Some(event);
        };
        // In-dialog requests (a To tag) are cheap to refuse when they match
        // nothing, and a trunk's BYEs must never wait.
        let in_dialog = req
            .to_header()
            .ok()
            .and_then(|h| h.tag().ok().flatten())
            .is_some();
        let Ok(source) = from.get_socketaddr() else {
            return Some(event);
        };
        if in_dialog {
            return Some(event);
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let verdict = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .on_request(source.ip(), now);
        use std::sync::atomic::Ordering::Relaxed;
        match verdict {
            guard::Verdict::Allow => Some(event),
            guard::Verdict::OverBudget => {
                let n = self.stats.over_budget.fetch_add(1, Relaxed);
                if (n + 1).is_power_of_two() {
                    tracing::warn!(%source, dropped = n + 1, "SIP requests over the per-source budget are dropped ([sip] requests_per_sec)");
                }
                None
            }
            guard::Verdict::LockedOut => {
                self.stats.locked_out.fetch_add(1, Relaxed);
                tracing::debug!(%source, method = %req.method, "dropped: source locked out");
                None
            }
        }
    }
}

/// The CA certificates `tls` trunks are checked against, as PEM: the
/// system's roots and the operator's extra CA file.
fn trunk_roots_pem(extra: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    use base64::Engine as _;
    let mut pem = Vec::new();
    for cert in rustls_native_certs::load_native_certs().certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    if let Some(path) = extra {
        let extra = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read sip.tls_ca_file {}: {e}", path.display()))?;
        anyhow::ensure!(
            rustls_pemfile::certs(&mut extra.as_slice()).any(|c| c.is_ok()),
            "sip.tls_ca_file {} holds no certificate",
            path.display()
        );
        pem.extend_from_slice(&extra);
        pem.push(b'\n');
    }
    anyhow::ensure!(
        !pem.is_empty(),
        "a tls trunk needs CA certificates: the system has none; set sip.tls_ca_file"
    );
    Ok(pem)
}

/// Where a request came from: the top Via's `received`/`rport`, which the
/// transport sets to the packet's source.
fn source_of(req: &rsip::Request) -> Option<SocketAddr> {
    let via = req.via_header().ok()?;
    let (_, hp) =
        rsipstack::transport::connection::SipConnection::parse_target_from_via(via).ok()?;
    hp.try_into().ok()
}

/// An inbound call, handed to the engine once its INVITE is acceptable.
pub struct InboundCall {
    /// The caller (user part of From).
    pub from: String,
    /// The DID called (user part of To / request URI).
    pub to: String,
    /// The SIP Call-ID.
    pub sip_call_id: String,
    /// The phone side, ringing; `answer()` sends 200 OK.
    pub leg: Box<dyn PhoneLeg>,
}

/// Where inbound calls go.
pub trait InboundHandler: Send + Sync + 'static {
    /// Whether `did` is one of ours (else the INVITE gets 404).
    fn knows_did(&self, did: &str) -> bool;
    /// Whether new calls are taken now (else the INVITE gets 503).
    fn accepting(&self) -> bool {
        true
    }
    /// Takes the call.
    fn accept(&self, call: InboundCall);
}

fn user_of(uri: &rsip::Uri) -> String {
    uri.auth
        .as_ref()
        .map(|a| a.user.clone())
        .unwrap_or_default()
}

impl SipUa {
    /// Binds UDP and TCP on `listen` and starts serving. Returns the agent and
    /// its incoming transactions, to be handed to [`SipUa::serve_incoming`].
    pub async fn start(
        cfg: SipConfig,
        listen: SocketAddr,
    ) -> anyhow::Result<(Arc<SipUa>, TransactionReceiver)> {
        let cancel = CancellationToken::new();
        let transport = TransportLayer::new(cancel.child_token());
        let udp = UdpConnection::create_connection(listen, None, Some(cancel.child_token()))
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for SIP on udp {listen}: {e}"))?;
        let listen = udp.get_addr().get_socketaddr()?;
        transport.add_transport(udp.into());
        let tcp = TcpListenerConnection::new(listen, None)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for SIP on tcp {listen}: {e}"))?;
        transport.add_transport(tcp.into());
        let mut trusted = Vec::new();
        for n in &cfg.trusted_networks {
            trusted.push(
                n.parse()
                    .map_err(|e| anyhow::anyhow!("sip.trusted_networks: {e}"))?,
            );
        }
        // Trunks send calls at their own pace: never limited.
        for t in &cfg.trunks {
            match tokio::net::lookup_host((t.host.as_str(), t.port)).await {
                Ok(addrs) => trusted.extend(addrs.map(|a| crate::netguard::Cidr::host(a.ip()))),
                Err(e) => {
                    tracing::warn!(trunk = %t.name, "cannot resolve {}: {e}; its requests are limited like anyone's", t.host)
                }
            }
        }
        let limiter = Arc::new(Mutex::new(guard::SourceLimiter::new(guard::FloodLimits {
            requests_per_sec: cfg.requests_per_sec,
            burst: cfg.request_burst.max(1),
            auth_failures: cfg.auth_failures_before_lockout,
            lockout_ms: cfg.lockout_secs * 1000,
            trusted,
            max_sources: 10_000,
        })));
        let guard_stats = Arc::new(GuardStats::default());
        let epoch = Instant::now();
        if cfg.trunks.iter().any(|t| t.transport == "tls") {
            transport.set_tls_config(rsipstack::transport::tls::TlsConfig {
                ca_certs: Some(trunk_roots_pem(cfg.tls_ca_file.as_deref())?),
                ..Default::default()
            });
        }
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(cancel.child_token())
            .with_transport_layer(transport)
            .with_user_agent("bridge")
            .with_transport_inspector(Box::new(FloodInspector {
                limiter: limiter.clone(),
                stats: guard_stats.clone(),
                epoch,
            }))
            .build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| anyhow::anyhow!("SIP endpoint: {e}"))?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let public_ip = cfg.public_ip.unwrap_or(listen.ip());
        let ports = PortPool::new(listen.ip(), cfg.rtp_port_min, cfg.rtp_port_max);
        tokio::spawn(async move {
            endpoint.serve().await;
        });
        tracing::info!("SIP on udp and tcp {listen}");
        Ok((
            Arc::new(SipUa {
                nonces: guard::Nonces::new(rand::random(), cfg.nonce_lifetime_secs * 1000),
                cfg,
                dialogs,
                listen,
                public_ip,
                ports,
                bindings: Mutex::new(HashMap::new()),
                limiter,
                guard_stats,
                epoch,
                cancel,
            }),
            incoming,
        ))
    }

    /// The SIP listen address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Free RTP ports.
    pub fn free_rtp_ports(&self) -> usize {
        self.ports.available()
    }

    /// Stops the transports.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    fn jitter(&self) -> JitterConfig {
        JitterConfig {
            initial_delay_ms: self.cfg.jitter_ms,
            ..JitterConfig::default()
        }
    }

    fn contact(&self, user: &str) -> Result<rsip::Uri, DialError> {
        let s = format!(
            "sip:{user}@{}",
            SocketAddr::new(self.public_ip, self.listen.port())
        );
        rsip::Uri::try_from(s.as_str()).map_err(|e| DialError::BadUri(format!("{s}: {e}")))
    }

    /// Looks up an extension's config.
    pub fn extension(&self, number: &str) -> Option<&ExtensionConfig> {
        self.cfg.extensions.iter().find(|e| e.number == number)
    }

    /// A trunk by name.
    pub fn trunk(&self, name: &str) -> Option<&TrunkConfig> {
        self.cfg.trunks.iter().find(|t| t.name == name)
    }

    /// Places a call to `to` through `trunk`, presenting `from`.
    pub fn dial_trunk(
        self: &Arc<Self>,
        trunk: &TrunkConfig,
        to: &str,
        from: &str,
    ) -> Result<Box<dyn PhoneLeg>, DialError> {
        let transport = match trunk.transport.as_str() {
            "tcp" => ";transport=tcp",
            "tls" => ";transport=tls",
            _ => "",
        };
        let callee = format!("sip:{to}@{}:{}{transport}", trunk.host, trunk.port);
        let domain = trunk.from_domain.clone().unwrap_or(trunk.host.clone());
        let caller = format!("sip:{from}@{domain}");
        let credential = trunk.username.as_ref().map(|u| Credential {
            username: u.clone(),
            password: trunk.password.clone().unwrap_or_default(),
            realm: None,
            auth_username: None,
        });
        let dest = SipAddr {
            r#type: Some(match trunk.transport.as_str() {
                "tcp" => rsip::Transport::Tcp,
                "tls" => rsip::Transport::Tls,
                _ => rsip::Transport::Udp,
            }),
            addr: rsip::HostWithPort::try_from(format!("{}:{}", trunk.host, trunk.port).as_str())
                .map_err(|e| DialError::BadUri(e.to_string()))?,
        };
        self.invite(&callee, &caller, from, Some(dest), credential)
    }

    /// Rings extension `number` at its most recently registered contact.
    pub fn dial_extension(
        self: &Arc<Self>,
        number: &str,
        from: &str,
    ) -> Result<Box<dyn PhoneLeg>, DialError> {
        let contact = {
            let mut b = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let list = b.entry(number.to_string()).or_default();
            list.retain(|x| x.expires > now);
            // The newest registration is where the phone is now.
            list.last().map(|x| x.contact.clone())
        }
        .ok_or_else(|| DialError::NotRegistered(number.to_string()))?;
        let caller = format!("sip:{from}@{}", self.public_ip);
        self.invite(&contact.to_string(), &caller, from, None, None)
    }

    fn invite(
        self: &Arc<Self>,
        callee: &str,
        caller: &str,
        from_user: &str,
        destination: Option<SipAddr>,
        credential: Option<Credential>,
    ) -> Result<Box<dyn PhoneLeg>, DialError> {
        let rtp = self.ports.take().ok_or(DialError::NoPort)?;
        let offer = sdp::offer(self.public_ip, rtp.port, rand::random::<u32>() as u64);
        let opt = InviteOption {
            caller: rsip::Uri::try_from(caller)
                .map_err(|e| DialError::BadUri(format!("{caller}: {e}")))?,
            callee: rsip::Uri::try_from(callee)
                .map_err(|e| DialError::BadUri(format!("{callee}: {e}")))?,
            destination,
            content_type: Some("application/sdp".into()),
            offer: Some(offer.into_bytes()),
            contact: self.contact(from_user)?,
            credential,
            ..Default::default()
        };
        let (sig_tx, sig_rx) = mpsc::unbounded_channel();
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let leg = SipLeg::new(rtp, self.jitter(), sig_rx, ctl_tx);
        let ua = self.clone();
        tokio::spawn(async move { ua.run_outbound(opt, sig_tx, ctl_rx).await });
        Ok(Box::new(leg))
    }

    async fn run_outbound(
        self: Arc<Self>,
        opt: InviteOption,
        sig: mpsc::UnboundedSender<Signal>,
        mut ctl: mpsc::UnboundedReceiver<Control>,
    ) {
        let (state_tx, mut states) = self.dialogs.new_dialog_state_channel();
        let callee = opt.callee.to_string();
        let (dialog, mut invite) = match self.dialogs.do_invite_async(opt, state_tx) {
            Ok(r) => r,
            Err(e) => {
                let _ = sig.send(Signal::Leg(LegEvent::Failed {
                    code: 500,
                    reason: format!("cannot send INVITE to {callee}: {e}"),
                }));
                return;
            }
        };
        let leg = |e: LegEvent| {
            let _ = sig.send(Signal::Leg(e));
        };
        let mut answered = false;
        let mut ringing = false;
        let mut invite_done = false;
        let mut hangup_sent = false;
        loop {
            tokio::select! {
                st = states.recv() => match st {
                    Some(DialogState::Early(_, resp)) => {
                        if !ringing {
                            ringing = true;
                            leg(LegEvent::Ringing);
                        }
                        if let Some(neg) = media_of(&resp.body) {
                            let _ = sig.send(Signal::Media(neg));
                        }
                    }
                    Some(DialogState::Confirmed(_, resp)) => {
                        if answered { continue; }
                        answered = true;
                        match media_of(&resp.body) {
                            Some(neg) => {
                                let _ = sig.send(Signal::Media(neg));
                                leg(LegEvent::Answered);
                            }
                            None => {
                                tracing::warn!("200 OK from {callee} has no usable SDP answer; hanging up");
                                let _ = dialog.hangup().await;
                                leg(LegEvent::Failed { code: 488, reason: "the answer had no usable SDP".into() });
                            }
                        }
                    }
                    Some(DialogState::Terminated(id, reason)) => {
                        self.dialogs.remove_dialog(&id);
                        if answered {
                            leg(LegEvent::HungUp);
                        } else if !invite_done {
                            leg(final_of(&reason));
                        }
                        break;
                    }
                    Some(_) => {}
                    None => break,
                },
                r = &mut invite, if !invite_done => {
                    invite_done = true;
                    match r {
                        Ok(Ok((_, Some(resp)))) => {
                            let code = u16::from(resp.status_code.clone());
                            if code >= 300 && !hangup_sent {
                                leg(outcome_of(code, &resp.status_code.to_string()));
                                break;
                            }
                        }
                        Ok(Ok((_, None))) => {
                            if !answered && !hangup_sent {
                                leg(LegEvent::NoAnswer { code: 408 });
                                break;
                            }
                        }
                        Ok(Err(e)) => {
                            if !hangup_sent {
                                leg(LegEvent::Failed { code: 503, reason: format!("INVITE to {callee} failed: {e}") });
                            }
                            break;
                        }
                        Err(e) => {
                            leg(LegEvent::Failed { code: 500, reason: format!("INVITE task failed: {e}") });
                            break;
                        }
                    }
                }
                c = ctl.recv() => match c {
                    Some(Control::Hangup) | None => {
                        if !hangup_sent {
                            hangup_sent = true;
                            if let Err(e) = dialog.hangup().await {
                                tracing::debug!("hangup of {callee}: {e}");
                            }
                            if answered || invite_done {
                                break;
                            }
                        }
                    }
                    Some(Control::Answer) => {}
                }
            }
        }
    }

    /// Handles incoming transactions until the agent stops.
    pub async fn serve_incoming(
        self: Arc<Self>,
        mut incoming: TransactionReceiver,
        handler: Arc<dyn InboundHandler>,
    ) {
        while let Some(mut tx) = incoming.recv().await {
            let ua = self.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                if let Err(e) = ua.on_transaction(&mut tx, handler).await {
                    tracing::warn!(method = %tx.original.method, "SIP request failed: {e}");
                }
            });
        }
    }

    async fn on_transaction(
        self: Arc<Self>,
        tx: &mut Transaction,
        handler: Arc<dyn InboundHandler>,
    ) -> anyhow::Result<()> {
        let in_dialog = tx
            .original
            .to_header()
            .ok()
            .and_then(|h| h.tag().ok().flatten())
            .is_some();
        if in_dialog {
            match self.dialogs.match_dialog(tx) {
                Some(mut d) => d.handle(tx).await?,
                None => tx.reply(StatusCode::CallTransactionDoesNotExist).await?,
            }
            return Ok(());
        }
        match tx.original.method {
            Method::Invite => self.on_invite(tx, handler).await,
            Method::Register => self.on_register(tx).await,
            Method::Options => Ok(tx.reply(StatusCode::OK).await?),
            Method::Ack => Ok(()),
            _ => Ok(tx.reply(StatusCode::MethodNotAllowed).await?),
        }
    }

    async fn on_invite(
        self: Arc<Self>,
        tx: &mut Transaction,
        handler: Arc<dyn InboundHandler>,
    ) -> anyhow::Result<()> {
        let did = user_of(&tx.original.uri);
        let from = tx
            .original
            .from_header()
            .ok()
            .and_then(|h| h.typed().ok())
            .map(|f| user_of(&f.uri))
            .unwrap_or_default();
        let call_id = tx
            .original
            .call_id_header()
            .map(|c| c.value().to_string())
            .unwrap_or_default();
        if !handler.accepting() {
            tracing::warn!(%did, %from, "INVITE refused (shutting down, or the bridge is full): 503");
            tx.reply(StatusCode::ServiceUnavailable).await?;
            return Ok(());
        }
        if !handler.knows_did(&did) {
            tracing::warn!(%did, %from, "INVITE for a number that is not one of our DIDs: 404");
            tx.reply(StatusCode::NotFound).await?;
            return Ok(());
        }
        let offer = match std::str::from_utf8(&tx.original.body)
            .ok()
            .filter(|b| !b.trim().is_empty())
            .map(sdp::parse)
        {
            Some(Ok(o)) => o,
            Some(Err(e)) => {
                tracing::warn!(%did, %from, "INVITE with an SDP we cannot read ({e}): 400");
                tx.reply(StatusCode::BadRequest).await?;
                return Ok(());
            }
            None => {
                tracing::warn!(%did, %from, "INVITE without an SDP offer: 488");
                tx.reply(StatusCode::NotAcceptableHere).await?;
                return Ok(());
            }
        };
        let Some(rtp) = self.ports.take() else {
            tracing::warn!(%did, %from, "no free RTP port: 503");
            tx.reply(StatusCode::ServiceUnavailable).await?;
            return Ok(());
        };
        let (answer, neg) = match sdp::answer(
            &offer,
            self.public_ip,
            rtp.port,
            rand::random::<u32>() as u64,
        ) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%did, %from, "no common codec ({e}): 488");
                tx.reply(StatusCode::NotAcceptableHere).await?;
                return Ok(());
            }
        };
        let (state_tx, mut states) = self.dialogs.new_dialog_state_channel();
        let dialog = match self.dialogs.get_or_create_server_invite(
            tx,
            state_tx,
            None,
            Some(self.contact(&did)?),
        ) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("cannot create a dialog for the INVITE: {e}");
                tx.reply(StatusCode::ServerInternalError).await?;
                return Ok(());
            }
        };
        let (sig_tx, sig_rx) = mpsc::unbounded_channel();
        let (ctl_tx, mut ctl) = mpsc::unbounded_channel();
        let _ = sig_tx.send(Signal::Media(neg));
        let leg = SipLeg::new(rtp, self.jitter(), sig_rx, ctl_tx);
        dialog.ringing(None, None).ok();
        let _ = sig_tx.send(Signal::Leg(LegEvent::Ringing));
        handler.accept(InboundCall {
            from,
            to: did,
            sip_call_id: call_id,
            leg: Box::new(leg),
        });

        let mut d2 = dialog.clone();
        let ua = self.clone();
        // The dialog's signalling for the rest of the call.
        let control = async move {
            let mut answered = false;
            loop {
                tokio::select! {
                    c = ctl.recv() => match c {
                        Some(Control::Answer) if !answered => {
                            answered = true;
                            let headers = vec![Header::ContentType("application/sdp".into())];
                            if let Err(e) = dialog.accept(Some(headers), Some(answer.clone().into_bytes())) {
                                tracing::warn!("cannot answer: {e}");
                            }
                            let _ = sig_tx.send(Signal::Leg(LegEvent::Answered));
                        }
                        Some(Control::Answer) => {}
                        Some(Control::Hangup) | None => {
                            if answered {
                                let _ = dialog.hangup().await;
                                let _ = dialog.bye().await;
                            } else {
                                let _ = dialog.reject(Some(StatusCode::TemporarilyUnavailable), None);
                            }
                            break;
                        }
                    },
                    st = states.recv() => match st {
                        Some(DialogState::Terminated(id, _)) => {
                            ua.dialogs.remove_dialog(&id);
                            let _ = sig_tx.send(Signal::Leg(LegEvent::HungUp));
                            break;
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            }
        };
        tokio::spawn(control);
        d2.handle(tx).await?;
        Ok(())
    }

    async fn on_register(self: Arc<Self>, tx: &mut Transaction) -> anyhow::Result<()> {
        let req = &tx.original;
        let user = req
            .to_header()
            .ok()
            .and_then(|h| h.typed().ok())
            .map(|t| user_of(&t.uri))
            .unwrap_or_default();
        let source = source_of(req);
        // An unknown user is challenged and refused exactly like a known one
        // with a wrong password, so the registrar does not tell which
        // extensions exist.
        let ext = self.extension(&user).cloned();
        let auth = req.headers.iter().find_map(|h| match h {
            Header::Authorization(a) => Some(a.clone()),
            _ => None,
        });
        let Some(auth) = auth else {
            return self.challenge(tx, false).await;
        };
        let raw = auth.value().to_string();
        let typed = match rsip::typed::Authorization::parse(&raw) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(%user, "unreadable Authorization header: {e}");
                tx.reply(StatusCode::BadRequest).await?;
                return Ok(());
            }
        };
        match self.nonces.check(&typed.nonce, self.now_ms()) {
            guard::NonceCheck::Fresh => {}
            guard::NonceCheck::Stale => return self.challenge(tx, true).await,
            guard::NonceCheck::Invalid => return self.challenge(tx, false).await,
        }
        // A made-up password for an unknown user: the digest is computed
        // either way, so the answer takes as long.
        let password = ext
            .as_ref()
            .map(|e| e.password.clone())
            .unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>()));
        let verified = rsipstack::dialog::authenticate::verify_digest(
            &typed,
            &password,
            &Method::Register,
            &raw,
        );
        let ext = match ext {
            Some(ext)
                if verified && typed.username == ext.number && typed.realm == self.cfg.realm =>
            {
                ext
            }
            _ => {
                self.guard_stats
                    .auth_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let locked = source.is_some_and(|s| {
                    self.limiter
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .on_auth_failure(s.ip(), self.now_ms())
                });
                if locked {
                    self.guard_stats
                        .lockouts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        source = ?source,
                        "too many failed REGISTERs: source locked out for {} s ([sip] lockout_secs)",
                        self.cfg.lockout_secs
                    );
                }
                tracing::warn!(%user, source = ?source, "REGISTER with wrong credentials: 403");
                tx.reply(StatusCode::Forbidden).await?;
                return Ok(());
            }
        };
        let expires = req
            .expires_header()
            .and_then(|e| e.value().trim().parse::<u64>().ok())
            .unwrap_or(3600)
            .min(3600);
        let contact = req
            .contact_header()
            .ok()
            .and_then(|c| c.typed().ok())
            .map(|c| c.uri);
        {
            let mut b = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
            let list = b.entry(ext.number.clone()).or_default();
            if let Some(uri) = contact.clone() {
                list.retain(|x| x.contact != uri);
                if expires > 0 {
                    list.push(Binding {
                        contact: uri,
                        expires: Instant::now() + Duration::from_secs(expires),
                    });
                }
            }
        }
        tracing::info!(extension = %ext.number, ?contact, expires, "registered");
        let mut headers = vec![Header::Expires(expires.to_string().into())];
        if let Ok(c) = req.contact_header() {
            headers.push(Header::Contact(c.clone()));
        }
        tx.reply_with(StatusCode::OK, headers, None).await?;
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A 401 with a fresh nonce (`stale` when the client's was only old: it
    /// retries with the same credentials).
    async fn challenge(&self, tx: &mut Transaction, stale: bool) -> anyhow::Result<()> {
        let nonce = self.nonces.issue(self.now_ms());
        let value = format!(
            "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"{}",
            self.cfg.realm,
            if stale { ", stale=true" } else { "" }
        );
        tx.reply_with(
            StatusCode::Unauthorized,
            vec![Header::WwwAuthenticate(value.into())],
            None,
        )
        .await?;
        Ok(())
    }

    /// True if the extension has a live registration.
    /// Every registered contact of an extension, oldest first.
    pub fn contacts(&self, number: &str) -> Vec<String> {
        let b = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.get(number)
            .map(|l| {
                l.iter()
                    .filter(|x| x.expires > now)
                    .map(|x| x.contact.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Rings one registered contact of an extension, presenting `from`.
    pub fn dial_contact(
        self: &Arc<Self>,
        contact: &str,
        from: &str,
    ) -> Result<Box<dyn PhoneLeg>, DialError> {
        let caller = format!("sip:{from}@{}", self.public_ip);
        self.invite(contact, &caller, from, None, None)
    }

    pub fn is_registered(&self, number: &str) -> bool {
        let b = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
        b.get(number)
            .is_some_and(|l| l.iter().any(|x| x.expires > Instant::now()))
    }
}

fn media_of(body: &[u8]) -> Option<sdp::Negotiated> {
    let text = std::str::from_utf8(body).ok()?;
    if text.trim().is_empty() {
        return None;
    }
    let parsed = sdp::parse(text).ok()?;
    sdp::negotiated_from_answer(&parsed).ok()
}

fn outcome_of(code: u16, text: &str) -> LegEvent {
    match code {
        486 | 600 => LegEvent::Busy,
        408 | 480 | 487 => LegEvent::NoAnswer { code },
        _ => LegEvent::Failed {
            code,
            reason: format!("far end answered {text}"),
        },
    }
}

fn final_of(reason: &TerminatedReason) -> LegEvent {
    match reason {
        TerminatedReason::UasBusy => LegEvent::Busy,
        TerminatedReason::UasDecline => LegEvent::Failed {
            code: 603,
            reason: "declined".into(),
        },
        TerminatedReason::Timeout => LegEvent::NoAnswer { code: 408 },
        TerminatedReason::UasOther(c) | TerminatedReason::ProxyError(c) => {
            outcome_of(u16::from(c.clone()), &c.to_string())
        }
        other => LegEvent::Failed {
            code: 500,
            reason: format!("{other:?}"),
        },
    }
}
