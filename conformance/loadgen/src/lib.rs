//! `loadgen`: runs N concurrent calls through a running bridge, all on loopback,
//! and reports what they went through.
//!
//! - The **phone side** ([`uac`]) is a minimal SIP user agent client over UDP
//!   (one socket for all calls' signalling) with one RTP socket per call. One
//!   20 ms clock sends a PCMU frame for every call; each frame carries its id
//!   in the audio ([`frameid`]).
//! - The **bot side** ([`bot`]) is a WebSocket server that the bridge connects to
//!   for each call (the DID's `bot_url` must point at it); it echoes every
//!   `media` payload back as `response.audio.delta`.
//! - Latency is measured on the frames themselves: phone → bot is from the RTP
//!   send to the `media` event carrying the same id; bot → phone is from the
//!   echo's send to the RTP packet carrying it. Both ends are in this process,
//!   on one clock.
//! - Loss counts frames sent between 0.5 s after answer and 0.5 s before BYE
//!   whose id never arrived.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let opts = loadgen::Options::new("127.0.0.1:5060".parse()?, "+15550009000", 20);
//! let bot = loadgen::Bot::bind(opts.bot_listen).await?;
//! println!("point the DID's bot_url at {}", bot.url());
//! let report = loadgen::run_with(opts, bot).await?;
//! println!("{}", report.table());
//! # Ok(()) }
//! ```

pub mod bot;
pub mod call;
pub mod frameid;
pub mod metrics;
pub mod procfs;
pub mod report;
pub mod rtp;
pub mod sip;
pub mod stats;
pub mod uac;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

pub use bot::Bot;
pub use report::Report;

use call::Call;
use report::{
    BridgeFigures, Calls, LoadgenFigures, MetricsFigures, SetupFigures, Target, Totals, Way,
};
use stats::{round2, Spread};
use uac::{CallOutcome, CallPlan, RxTally, Setup, SipEndpoint};

/// Frames at each end of a call left out of loss and latency (0.5 s).
pub const EDGE_FRAMES: u32 = 25;

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bridge's SIP address (UDP).
    pub sip: SocketAddr,
    /// The DID to call; its `bot_url` must be this run's bot.
    pub did: String,
    /// Concurrent calls.
    pub calls: u32,
    /// Time over which the calls are started, evenly.
    pub ramp: Duration,
    /// Time all calls stay up once the ramp is over.
    pub hold: Duration,
    /// Where the bot's WebSocket server listens (used by [`run`]).
    pub bot_listen: SocketAddr,
    /// The bridge's PID, for CPU and memory; else found from the SIP port.
    pub bridge_pid: Option<u32>,
    /// The bridge's `/metrics` URL, for its own counters.
    pub bridge_metrics: Option<String>,
    /// Our address, for SIP, RTP and SDP.
    pub local_ip: IpAddr,
    /// RTP port of call 0; call i uses `rtp_base + 2 i`.
    pub rtp_base: u16,
    /// Give up on a call's setup after this long.
    pub setup_timeout: Duration,
    /// The caller talks in spurts of this long...
    pub talk: Duration,
    /// ...with pauses this long between them (quiet frames without an id, not
    /// counted); zero: it talks without pause.
    pub pause: Duration,
    /// Print progress to stderr.
    pub progress: bool,
    /// Run as a soak: calls end and start all the time, for this long.
    pub soak: Option<Soak>,
}

/// A soak's shape: after the ramp, every call slot places call after call
/// (each held for a random time between `call_min` and `call_max`) until
/// `duration` has passed, while the bridge's RSS and descriptors are read
/// every `sample_every`.
#[derive(Debug, Clone)]
pub struct Soak {
    /// How long the hold lasts.
    pub duration: Duration,
    /// Shortest call.
    pub call_min: Duration,
    /// Longest call.
    pub call_max: Duration,
    /// How often the bridge is read.
    pub sample_every: Duration,
}

impl Options {
    /// Defaults for `calls` calls to `did` at `sip`: ramp 10 s, hold 30 s, bot on
    /// 127.0.0.1:9100, RTP from port 40000.
    pub fn new(sip: SocketAddr, did: &str, calls: u32) -> Options {
        Options {
            sip,
            did: did.to_string(),
            calls,
            ramp: Duration::from_secs(10),
            hold: Duration::from_secs(30),
            bot_listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            bridge_pid: None,
            bridge_metrics: None,
            local_ip: IpAddr::from([127, 0, 0, 1]),
            rtp_base: 40000,
            setup_timeout: Duration::from_secs(15),
            talk: Duration::from_millis(400),
            pause: Duration::from_millis(100),
            progress: false,
            soak: None,
        }
    }

    /// The longest the run may send frames on one call slot.
    fn span(&self) -> Duration {
        match &self.soak {
            Some(s) => self.ramp + s.duration + s.call_max + self.setup_timeout,
            None => self.ramp + self.hold + self.setup_timeout,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.calls == 0 {
            bail!("--calls must be at least 1");
        }
        if self.calls > frameid::MAX_CALLS {
            bail!("--calls is at most {}", frameid::MAX_CALLS);
        }
        let last_port = self.rtp_base as u64 + 2 * (self.calls as u64 - 1);
        if last_port > 65535 {
            bail!(
                "--rtp-base {} leaves no room for {} calls (two ports per call)",
                self.rtp_base,
                self.calls
            );
        }
        if self.span().as_secs_f64() * 50.0 >= frameid::MAX_FRAMES as f64 {
            bail!("ramp + hold (or soak + the longest call) must stay under 80 minutes");
        }
        if let Some(s) = &self.soak {
            if s.call_min > s.call_max || s.call_min < Duration::from_secs(2) {
                bail!("soak calls must last at least 2 s, and the shortest no longer than the longest");
            }
            if s.sample_every.is_zero() {
                bail!("--sample-secs must be above 0");
            }
        }
        if self.talk.as_millis() < 20 {
            bail!("the bot's talk spurts must last at least 20 ms");
        }
        if self.did.trim().is_empty() {
            bail!("--did must not be empty");
        }
        Ok(())
    }
}

/// Binds the bot on `opts.bot_listen` and runs.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let bot = Bot::bind(opts.bot_listen).await?;
    if opts.progress {
        eprintln!(
            "bot server on {} (the DID {}'s bot_url must be this)",
            bot.url(),
            opts.did
        );
    }
    run_with(opts, bot).await
}

fn progress(opts: &Options, text: std::fmt::Arguments<'_>) {
    if opts.progress {
        eprintln!("{text}");
    }
}

/// A soak's readings, summed up.
fn soak_figures(
    soak: &Soak,
    series: Vec<report::SoakSample>,
    placed: usize,
) -> report::SoakFigures {
    // Warm-up: the first tenth of the hold (buffers, pools and caches
    // settle); after it, memory and descriptors should stay flat.
    let warm = soak.duration.as_secs() / 10;
    let after = series.iter().find(|x| x.at_secs >= warm);
    let last = series.last();
    let rss_after = after.and_then(|x| x.rss_kib);
    let rss_last = last.and_then(|x| x.rss_kib);
    report::SoakFigures {
        call_secs: (soak.call_min.as_secs_f64(), soak.call_max.as_secs_f64()),
        calls_placed: placed as u64,
        rss_after_warmup_kib: rss_after,
        rss_last_kib: rss_last,
        rss_growth_after_warmup_percent: match (rss_after, rss_last) {
            (Some(a), Some(b)) if a > 0 => Some(round2((b as f64 - a as f64) * 100.0 / a as f64)),
            _ => None,
        },
        fds_after_warmup: after.and_then(|x| x.fds),
        fds_last: last.and_then(|x| x.fds),
        series,
    }
}

/// Runs the calls against the bridge, with `bot` as the bot side.
pub async fn run_with(opts: Options, bot: Bot) -> anyhow::Result<Report> {
    opts.check()?;
    let shared = bot.shared.clone();
    let n = opts.calls;

    // Sockets first: a port in use is an error before anything is sent.
    let frames_cap = ((opts.span() + Duration::from_secs(10)).as_secs_f64() * 50.0) as u32;
    let frames = |d: Duration| (d.as_millis() / 20) as u32;
    let (talk, pause) = (frames(opts.talk), frames(opts.pause));
    let mut calls = Vec::with_capacity(n as usize);
    for i in 0..n {
        let port = opts.rtp_base + 2 * i as u16;
        let addr = SocketAddr::new(opts.local_ip, port);
        let sock = tokio::net::UdpSocket::bind(addr).await.with_context(|| {
            format!("cannot bind RTP port {addr} (call {i}); try another --rtp-base")
        })?;
        let mut call = Call::new(
            i,
            Arc::new(sock),
            frames_cap.min(frameid::MAX_FRAMES),
            (talk, pause),
        );
        if opts.soak.is_some() {
            // One latency sample per call per second keeps an hour small.
            call.latency_every = 50;
        }
        calls.push(Arc::new(call));
    }
    if shared.calls.set(calls.clone()).is_err() {
        bail!("a Bot serves one run only");
    }
    let ep = SipEndpoint::start(opts.local_ip, opts.sip).await?;
    ep.probe(Duration::from_secs(3)).await?;

    // The bridge process.
    let (pid, pid_source) = match opts.bridge_pid {
        Some(p) if p == std::process::id() => (
            Some(p),
            Some("given; it is this process, so the figures include loadgen".to_string()),
        ),
        Some(p) => (Some(p), Some("given".to_string())),
        None => match procfs::udp_port_owner(opts.sip.port()) {
            Some(p) => (Some(p), Some("found by its SIP port".to_string())),
            None => (None, None),
        },
    };
    let ticks_per_sec = procfs::clock_ticks();
    let rss_start = pid.and_then(procfs::rss_kib);
    let metrics_start = match &opts.bridge_metrics {
        Some(url) => Some(
            metrics::fetch(url)
                .await
                .context("reading the bridge's /metrics")?,
        ),
        None => None,
    };

    // Media: one clock for every call's sending, on a thread of its own so
    // that it never waits behind the receiving and bot tasks; one receiver
    // per socket.
    let (stop_tx, stop_rx) = watch::channel(false);
    let clock = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .context("cannot build the sending clock's runtime")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = uac::media_clock(calls.clone(), shared.clone(), stop_rx.clone());
        std::thread::Builder::new()
            .name("loadgen-clock".into())
            .spawn(move || {
                let _ = tx.send(rt.block_on(job));
            })
            .context("cannot start the sending clock's thread")?;
        rx
    };
    let receivers: Vec<_> = calls
        .iter()
        .map(|c| {
            tokio::spawn(uac::rtp_receiver(
                c.clone(),
                shared.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    // Ramp.
    let plan = Arc::new(CallPlan {
        sip: ep.clone(),
        did: opts.did.clone(),
        local_ip: opts.local_ip,
        setup_timeout: opts.setup_timeout,
    });
    let (setup_tx, mut setup_rx) = mpsc::unbounded_channel();
    let (hang_up_tx, hang_up_rx) = watch::channel(false);
    let t0 = Instant::now();
    let tasks: Vec<_> = calls
        .iter()
        .map(|c| {
            let at = t0 + opts.ramp.mul_f64(c.index as f64 / n as f64);
            let (plan, c, setup_tx, hang_up) = (
                plan.clone(),
                c.clone(),
                setup_tx.clone(),
                hang_up_rx.clone(),
            );
            let soak = opts.soak.clone();
            tokio::spawn(async move {
                match soak {
                    Some(s) => {
                        uac::run_slot(plan, c, at, setup_tx, hang_up, (s.call_min, s.call_max))
                            .await
                    }
                    None => vec![uac::run_call(plan, c, at, setup_tx, hang_up).await],
                }
            })
        })
        .collect();
    drop(setup_tx);
    progress(
        &opts,
        format_args!("ramp: {n} calls over {:.1} s", opts.ramp.as_secs_f64()),
    );
    let (mut established, mut failed) = (0u32, 0u32);
    let mut last_answer = t0;
    let mut next_note = Instant::now() + Duration::from_secs(5);
    // Every call task reports its setup exactly once.
    while established + failed < n {
        let Some(s) = setup_rx.recv().await else {
            break;
        };
        match s {
            Setup::Established(_) => {
                established += 1;
                last_answer = Instant::now();
            }
            Setup::Failed(_) => failed += 1,
        }
        if Instant::now() >= next_note {
            next_note += Duration::from_secs(5);
            progress(
                &opts,
                format_args!("ramp: {established} established, {failed} failed of {n}"),
            );
        }
    }
    progress(
        &opts,
        format_args!("ramp done: {established} established, {failed} failed"),
    );

    // Hold.
    sleep_until(t0 + opts.ramp).await;
    let hold_start = Instant::now();
    let cpu_a = pid.and_then(procfs::CpuSample::take);
    let self_a = procfs::CpuSample::take(std::process::id());
    let hold = opts.soak.as_ref().map_or(opts.hold, |s| s.duration);
    let hold_end = hold_start + hold;
    progress(
        &opts,
        format_args!(
            "hold: {:.1} s with {established} calls up{}",
            hold.as_secs_f64(),
            if opts.soak.is_some() {
                ", each replaced as it ends"
            } else {
                ""
            }
        ),
    );
    let mut series = Vec::new();
    match &opts.soak {
        None => sleep_until(hold_end).await,
        Some(soak) => {
            // Read the bridge every `sample_every`; count the re-dialled
            // calls' setups as they come.
            let mut answered = established as u64;
            let mut next = hold_start;
            loop {
                tokio::select! {
                    s = setup_rx.recv() => {
                        if let Some(Setup::Established(_)) = s {
                            answered += 1;
                        }
                        continue;
                    }
                    _ = sleep_until(next.min(hold_end)) => {}
                }
                let sample = report::SoakSample {
                    at_secs: hold_start.elapsed().as_secs(),
                    rss_kib: pid.and_then(procfs::rss_kib),
                    fds: pid.and_then(procfs::fd_count),
                    bot_sessions: shared.active() as u64,
                    calls_answered: answered,
                };
                progress(
                    &opts,
                    format_args!(
                        "soak: {:>5} s  RSS {} KiB  fds {}  bot sessions {}  calls answered {}",
                        sample.at_secs,
                        sample.rss_kib.map_or("n/a".into(), |v| v.to_string()),
                        sample.fds.map_or("n/a".into(), |v| v.to_string()),
                        sample.bot_sessions,
                        sample.calls_answered
                    ),
                );
                series.push(sample);
                if Instant::now() >= hold_end {
                    break;
                }
                next += soak.sample_every;
            }
        }
    }
    let cpu_b = pid.and_then(procfs::CpuSample::take);
    let self_b = procfs::CpuSample::take(std::process::id());
    let rss_end = pid.and_then(procfs::rss_kib);
    let metrics_hold = match &opts.bridge_metrics {
        Some(url) => metrics::fetch(url).await.ok(),
        None => None,
    };

    // Hang up (after the readings above), then let the bot sessions see
    // `stop` and close.
    progress(&opts, format_args!("hanging up"));
    let _ = hang_up_tx.send(true);
    let mut outcomes: Vec<CallOutcome> = Vec::with_capacity(n as usize);
    for t in tasks {
        outcomes.extend(t.await.context("a call task failed")?);
    }
    let settle = Instant::now() + Duration::from_secs(5);
    while shared.active() > 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let mut clock = clock.await.unwrap_or_default();
    let refused = clock.refused;
    let mut rx: Vec<RxTally> = Vec::with_capacity(n as usize);
    for r in receivers {
        rx.push(r.await.unwrap_or_default());
    }
    let metrics_end = match &opts.bridge_metrics {
        Some(url) => metrics::fetch(url).await.ok(),
        None => None,
    };

    // Figures.
    let mut report = Report {
        target: Target {
            sip: opts.sip.to_string(),
            did: opts.did.clone(),
            bot_url: bot.url(),
            calls: n,
            ramp_secs: opts.ramp.as_secs_f64(),
            hold_secs: opts.hold.as_secs_f64(),
        },
        calls: Calls {
            attempted: outcomes.len() as u32,
            established: 0,
            failed: 0,
            dropped_by_bridge: 0,
            bye_unanswered: 0,
            failures: BTreeMap::new(),
        },
        setup: SetupFigures {
            rate_per_sec: None,
            time: None,
        },
        window:
            "counted from 0.5 s after answer to 0.5 s before BYE; warm-up and teardown left out"
                .into(),
        bot_talk: format!(
            "the caller talks in {} ms spurts with {} ms pauses of quiet frames, which carry no id and are not counted; the bot echoes what it hears; bot -> phone latency is of frames that met an empty playout queue",
            opts.talk.as_millis(),
            opts.pause.as_millis()
        ),
        phone_to_bot: Way::default(),
        bot_to_phone: Way::default(),
        totals: Totals::default(),
        bridge: BridgeFigures {
            pid,
            pid_source,
            rss_start_kib: rss_start,
            rss_hold_end_kib: rss_end,
            ..BridgeFigures::default()
        },
        loadgen: LoadgenFigures {
            cpu_percent: match (self_a, self_b) {
                (Some(a), Some(b)) => a.percent_until(&b, ticks_per_sec).map(round2),
                _ => None,
            },
            send_lateness: Spread::of(&mut clock.lateness),
        },
        soak: opts.soak.as_ref().map(|s| soak_figures(s, series, outcomes.len())),
        passed: false,
        problems: Vec::new(),
    };
    let mut setups = Vec::new();
    let (mut lat_p2b, mut lat_b2p, mut lat_b2p_all) = (Vec::new(), Vec::new(), Vec::new());
    let mut bot_errors = Vec::new();
    // What each slot's phone and bot saw, over all its calls.
    for (call, r) in calls.iter().zip(&rx) {
        let bot = call.bot().clone();
        let t = &mut report.totals;
        t.rtp_packets_sent += call.next_frame.load(std::sync::atomic::Ordering::Acquire) as u64;
        t.rtp_packets_received += r.packets;
        t.rtp_seq_lost += r.seq_lost;
        t.rtp_without_id += r.no_id;
        t.bot_sessions += bot.sessions as u64;
        t.bot_stops += bot.stops as u64;
        t.media_events += bot.media;
        t.media_without_id += bot.no_id;
        t.deltas_sent += bot.deltas;
        t.bot_error_events += bot.error_events;
        bot_errors.extend(bot.errors.iter().cloned());
        report.phone_to_bot.duplicates += bot.duplicates;
        report.phone_to_bot.misrouted += bot.misrouted;
        report.bot_to_phone.duplicates += r.duplicates;
        report.bot_to_phone.misrouted += r.misrouted;
    }
    // Each call's frames, in its own window.
    for o in &outcomes {
        let call = &calls[o.index as usize];
        let r = &rx[o.index as usize];
        let bot = call.bot();
        if let Some(why) = &o.failure {
            report.calls.failed += 1;
            *report.calls.failures.entry(why.clone()).or_default() += 1;
            continue;
        }
        report.calls.established += 1;
        if let Some(s) = o.setup {
            setups.push(s.as_micros() as u64);
        }
        if o.dropped {
            report.calls.dropped_by_bridge += 1;
        }
        if o.bye_answered == Some(false) {
            report.calls.bye_unanswered += 1;
        }
        let Some(last) = o.last_frame else { continue };
        if last < o.first_frame + 2 * EDGE_FRAMES {
            continue;
        }
        let window = o.first_frame + EDGE_FRAMES..=last - EDGE_FRAMES;
        let p = &mut report.phone_to_bot;
        p.frames_sent += call.phone_sent_ok.count(window.clone());
        p.frames_received += call.phone_sent_ok.count_both(&call.bot_got, window.clone());
        let b = &mut report.bot_to_phone;
        b.frames_sent += call.bot_echoed.count(window.clone());
        b.frames_received += call.bot_echoed.count_both(&call.phone_got, window.clone());
        lat_p2b.extend(
            bot.latency
                .iter()
                .filter(|(c, _)| window.contains(c))
                .map(|(_, us)| *us),
        );
        for (c, us, empty_queue) in &r.latency {
            if window.contains(c) {
                lat_b2p_all.push(*us);
                if *empty_queue {
                    lat_b2p.push(*us);
                }
            }
        }
    }
    for w in [&mut report.phone_to_bot, &mut report.bot_to_phone] {
        w.frames_lost = w.frames_sent - w.frames_received;
    }
    report.phone_to_bot.latency = Spread::of(&mut lat_p2b);
    report.bot_to_phone.latency = Spread::of(&mut lat_b2p);
    report.bot_to_phone.latency_as_played = Spread::of(&mut lat_b2p_all);
    report.setup.time = Spread::of(&mut setups);
    // The ramp's own calls (a soak places many more later).
    let ramp_secs = last_answer.duration_since(t0).as_secs_f64();
    if established > 0 && ramp_secs > 0.0 {
        report.setup.rate_per_sec = Some(round2(established as f64 / ramp_secs));
    }
    report.totals.rtp_send_errors = refused;
    {
        let unmatched = shared.unmatched.lock().unwrap_or_else(|p| p.into_inner());
        report.totals.bot_sessions += unmatched.sessions as u64;
        report.totals.bot_sessions_unmatched = unmatched.sessions as u64;
        report.totals.media_events += unmatched.media;
        report.totals.deltas_sent += unmatched.deltas;
    }

    let br = &mut report.bridge;
    if let (Some(a), Some(b)) = (cpu_a, cpu_b) {
        br.cpu_percent = a.percent_until(&b, ticks_per_sec).map(round2);
    }
    // Per call means per call up at once: in a soak the slots, not the
    // thousands of calls placed over the hour.
    let est = if opts.soak.is_some() {
        established
    } else {
        report.calls.established
    };
    if est > 0 {
        br.cpu_percent_per_call = br.cpu_percent.map(|c| round2(c / est as f64));
        if let (Some(a), Some(b)) = (rss_start, rss_end) {
            br.rss_per_call_kib = Some(round2((b as f64 - a as f64) / est as f64));
        }
    }
    if let (Some(start), Some(end)) = (&metrics_start, &metrics_end) {
        let change = end
            .iter()
            .map(|(k, v)| (k.clone(), v - start.get(k).copied().unwrap_or(0.0)))
            .collect();
        br.metrics = Some(MetricsFigures {
            at_hold_end: metrics_hold.unwrap_or_default(),
            change,
        });
    }

    // Verdict.
    let mut problems = Vec::new();
    let c = &report.calls;
    if c.failed > 0 {
        let reasons: Vec<String> = c
            .failures
            .iter()
            .map(|(k, v)| format!("{v} x {k}"))
            .collect();
        problems.push(format!(
            "{} of {} calls failed to set up ({})",
            c.failed,
            c.attempted,
            reasons.join("; ")
        ));
    }
    if c.dropped_by_bridge > 0 {
        problems.push(format!(
            "the bridge hung up {} calls before the hold ended",
            c.dropped_by_bridge
        ));
    }
    if c.bye_unanswered > 0 {
        problems.push(format!("{} BYEs got no answer", c.bye_unanswered));
    }
    for (name, w) in [
        ("phone -> bot", &report.phone_to_bot),
        ("bot -> phone", &report.bot_to_phone),
    ] {
        if w.frames_lost > 0 {
            problems.push(format!(
                "{name}: {} of {} frames lost",
                w.frames_lost, w.frames_sent
            ));
        }
        if w.misrouted > 0 {
            problems.push(format!(
                "{name}: {} frames arrived on the wrong call",
                w.misrouted
            ));
        }
        if est > 0 && w.latency.is_none() {
            problems.push(format!(
                "{name}: no frame arrived, so no latency could be measured"
            ));
        }
    }
    if refused > 0 {
        problems.push(format!(
            "loadgen could not send {refused} RTP packets (its own socket refused them)"
        ));
    }
    if report.totals.bot_error_events > 0 {
        problems.push(format!(
            "the bridge refused {} bot messages (first: {})",
            report.totals.bot_error_events,
            bot_errors.first().map_or("", |s| s.as_str())
        ));
    }
    if report.totals.bot_sessions_unmatched > 0 {
        problems.push(format!(
            "{} bot sessions could not be tied to a call (is the DID's bot_url shared with other traffic?)",
            report.totals.bot_sessions_unmatched
        ));
    }
    report.passed = problems.is_empty();
    report.problems = problems;
    drop(bot);
    Ok(report)
}
