//! The figures of a run, as a table for people and as JSON for machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::Spread;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was called.
    pub target: Target,
    /// Calls placed and how they went.
    pub calls: Calls,
    /// Call setup (INVITE → 200 OK).
    pub setup: SetupFigures,
    /// Which frames count for loss and latency.
    pub window: String,
    /// How the bot talks, and which frames time bot → phone.
    pub bot_talk: String,
    /// Phone (RTP) → bot (`media`).
    pub phone_to_bot: Way,
    /// Bot (`response.audio.delta`) → phone (RTP).
    pub bot_to_phone: Way,
    /// Packet-level and protocol counts over whole calls.
    pub totals: Totals,
    /// The bridge process.
    pub bridge: BridgeFigures,
    /// The load generator itself.
    pub loadgen: LoadgenFigures,
    /// A soak's figures over time (`--soak-secs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakFigures>,
    /// True when every call was established and no frame was lost.
    pub passed: bool,
    /// Why it did not pass.
    pub problems: Vec<String>,
}

/// What was called, and the run's shape.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The bridge's SIP address.
    pub sip: String,
    /// The DID called.
    pub did: String,
    /// The bot URL the DID must point at.
    pub bot_url: String,
    /// Calls asked for.
    pub calls: u32,
    /// Ramp, seconds (as asked).
    pub ramp_secs: f64,
    /// Hold with every call up, seconds.
    pub hold_secs: f64,
}

/// Calls placed and how they went.
#[derive(Debug, Clone, Serialize)]
pub struct Calls {
    /// INVITEs sent.
    pub attempted: u32,
    /// Answered with 200 OK and a usable SDP.
    pub established: u32,
    /// Not established.
    pub failed: u32,
    /// Established, then hung up by the bridge before the hold ended.
    pub dropped_by_bridge: u32,
    /// Our BYE got no answer.
    pub bye_unanswered: u32,
    /// Failure reasons, with counts.
    pub failures: BTreeMap<String, u32>,
}

/// Call setup figures.
#[derive(Debug, Clone, Serialize)]
pub struct SetupFigures {
    /// Calls established per second from the first INVITE to the last 200 OK.
    pub rate_per_sec: Option<f64>,
    /// INVITE → 200 OK.
    pub time: Option<Spread>,
}

/// A soak: calls ending and starting all the time for a long hold, and the
/// bridge's memory and descriptors read as it goes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakFigures {
    /// Each call lasted between these many seconds (drawn at random).
    pub call_secs: (f64, f64),
    /// Calls placed over the whole run.
    pub calls_placed: u64,
    /// One reading every `--sample-secs`.
    pub series: Vec<SoakSample>,
    /// RSS at the first reading after warm-up (a tenth of the hold), and at
    /// the last, KiB, and the growth between them in percent.
    pub rss_after_warmup_kib: Option<u64>,
    /// See above.
    pub rss_last_kib: Option<u64>,
    /// See above.
    pub rss_growth_after_warmup_percent: Option<f64>,
    /// Descriptors at the first reading after warm-up and at the last.
    pub fds_after_warmup: Option<u64>,
    /// See above.
    pub fds_last: Option<u64>,
}

/// One reading during a soak.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakSample {
    /// Seconds since the hold began.
    pub at_secs: u64,
    /// Bridge RSS, KiB.
    pub rss_kib: Option<u64>,
    /// Bridge open descriptors.
    pub fds: Option<u64>,
    /// Bot sessions open.
    pub bot_sessions: u64,
    /// Calls answered so far.
    pub calls_answered: u64,
}

/// Frames one way.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Way {
    /// Frames sent in the window.
    pub frames_sent: u64,
    /// Of those, frames whose id arrived.
    pub frames_received: u64,
    /// Sent minus received.
    pub frames_lost: u64,
    /// Frame ids that arrived more than once (whole calls).
    pub duplicates: u64,
    /// Frame ids that arrived on another call (whole calls).
    pub misrouted: u64,
    /// Added latency of the frames in the window; for bot → phone, of those
    /// that met an empty playout queue.
    pub latency: Option<Spread>,
    /// Bot → phone only: latency of every frame in the window as played,
    /// including the time it waited behind earlier audio in the playout queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_as_played: Option<Spread>,
}

/// The load generator's own figures, to judge whether it kept up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadgenFigures {
    /// CPU over the hold, % of one core.
    pub cpu_percent: Option<f64>,
    /// How late the sending clock's ticks went out (each tick's last frame).
    pub send_lateness: Option<Spread>,
}

/// Counts over whole calls.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// RTP packets the phones sent.
    pub rtp_packets_sent: u64,
    /// RTP packets the phones could not send (socket refused).
    pub rtp_send_errors: u64,
    /// RTP packets the phones received.
    pub rtp_packets_received: u64,
    /// Gaps in the received sequence numbers.
    pub rtp_seq_lost: i64,
    /// Received packets without a frame id (silence before the bot spoke,
    /// underruns).
    pub rtp_without_id: u64,
    /// Bot sessions opened by the bridge.
    pub bot_sessions: u64,
    /// Bot sessions that got `stop`.
    pub bot_stops: u64,
    /// `media` events at the bot.
    pub media_events: u64,
    /// `media` events without a frame id.
    pub media_without_id: u64,
    /// `response.audio.delta` messages the bot sent.
    pub deltas_sent: u64,
    /// `error` events the bot got.
    pub bot_error_events: u64,
    /// Sessions that could not be tied to a call.
    pub bot_sessions_unmatched: u64,
}

/// The bridge process, when it can be seen.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BridgeFigures {
    /// Its PID.
    pub pid: Option<u32>,
    /// How the PID was found: `given` or `sip port`.
    pub pid_source: Option<String>,
    /// CPU over the hold, % of one core.
    pub cpu_percent: Option<f64>,
    /// That divided by the established calls.
    pub cpu_percent_per_call: Option<f64>,
    /// RSS before the first call, KiB.
    pub rss_start_kib: Option<u64>,
    /// RSS at the end of the hold, KiB.
    pub rss_hold_end_kib: Option<u64>,
    /// Growth divided by the established calls, KiB.
    pub rss_per_call_kib: Option<f64>,
    /// `/metrics` at the end of the hold, and the change of each series over the run.
    pub metrics: Option<MetricsFigures>,
}

/// What the bridge's `/metrics` said.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MetricsFigures {
    /// Every series at the end of the hold.
    pub at_hold_end: BTreeMap<String, f64>,
    /// How each series changed from before the first call to after the last.
    pub change: BTreeMap<String, f64>,
}

fn opt(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(v) => format!("{v:.2}{unit}"),
        None => "n/a".into(),
    }
}

fn spread(s: &Option<Spread>) -> String {
    match s {
        Some(s) => format!("{:.2} / {:.2} / {:.2}", s.p50_ms, s.p99_ms, s.max_ms),
        None => "n/a".into(),
    }
}

impl Report {
    /// The report as a readable table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let t = &self.target;
        let _ = writeln!(
            o,
            "loadgen: {} calls to {} via SIP {}, ramp {} s, hold {} s; bot {}",
            t.calls, t.did, t.sip, t.ramp_secs, t.hold_secs, t.bot_url
        );
        let row = |o: &mut String, k: &str, v: String| {
            let _ = writeln!(o, "  {k:<36} {v}");
        };
        let _ = writeln!(o, "\nCalls");
        let c = &self.calls;
        row(&mut o, "attempted", c.attempted.to_string());
        row(&mut o, "established", c.established.to_string());
        row(&mut o, "failed", c.failed.to_string());
        for (why, n) in &c.failures {
            row(&mut o, "  failure", format!("{n} x {why}"));
        }
        row(
            &mut o,
            "dropped by the bridge",
            c.dropped_by_bridge.to_string(),
        );
        row(&mut o, "BYE unanswered", c.bye_unanswered.to_string());
        row(
            &mut o,
            "setup rate",
            opt(self.setup.rate_per_sec, " calls/s"),
        );
        row(
            &mut o,
            "setup time p50 / p99 / max (ms)",
            spread(&self.setup.time),
        );

        let _ = writeln!(o, "\nFrames ({})", self.window);
        let _ = writeln!(o, "  ({})", self.bot_talk);
        let _ = writeln!(
            o,
            "  {:<36} {:>14} {:>14}",
            "", "phone -> bot", "bot -> phone"
        );
        let (a, b) = (&self.phone_to_bot, &self.bot_to_phone);
        let mut two = |k: &str, x: String, y: String| {
            let _ = writeln!(o, "  {k:<36} {x:>14} {y:>14}");
        };
        two("sent", a.frames_sent.to_string(), b.frames_sent.to_string());
        two(
            "received",
            a.frames_received.to_string(),
            b.frames_received.to_string(),
        );
        two("lost", a.frames_lost.to_string(), b.frames_lost.to_string());
        two(
            "duplicated (whole calls)",
            a.duplicates.to_string(),
            b.duplicates.to_string(),
        );
        two(
            "misrouted (whole calls)",
            a.misrouted.to_string(),
            b.misrouted.to_string(),
        );
        two(
            "latency samples",
            a.latency.map_or(0, |l| l.samples).to_string(),
            b.latency.map_or(0, |l| l.samples).to_string(),
        );
        let ms = |s: &Option<Spread>, f: fn(&Spread) -> f64| {
            s.as_ref()
                .map_or("n/a".to_string(), |s| format!("{:.2}", f(s)))
        };
        two(
            "added latency p50 (ms)",
            ms(&a.latency, |s| s.p50_ms),
            ms(&b.latency, |s| s.p50_ms),
        );
        two(
            "added latency p99 (ms)",
            ms(&a.latency, |s| s.p99_ms),
            ms(&b.latency, |s| s.p99_ms),
        );
        two(
            "added latency max (ms)",
            ms(&a.latency, |s| s.max_ms),
            ms(&b.latency, |s| s.max_ms),
        );
        two(
            "as played, incl. queue, p50 (ms)",
            "".into(),
            ms(&b.latency_as_played, |s| s.p50_ms),
        );
        two(
            "as played, incl. queue, p99 (ms)",
            "".into(),
            ms(&b.latency_as_played, |s| s.p99_ms),
        );
        two(
            "as played, incl. queue, max (ms)",
            "".into(),
            ms(&b.latency_as_played, |s| s.max_ms),
        );

        if let Some(sk) = &self.soak {
            let _ = writeln!(
                o,
                "\nSoak: calls of {:.0}-{:.0} s, {} placed",
                sk.call_secs.0, sk.call_secs.1, sk.calls_placed
            );
            let _ = writeln!(
                o,
                "  {:>8} {:>12} {:>8} {:>13} {:>15}",
                "at (s)", "RSS (KiB)", "fds", "bot sessions", "calls answered"
            );
            let show = |v: Option<u64>| v.map_or("n/a".to_string(), |v| v.to_string());
            for x in &sk.series {
                let _ = writeln!(
                    o,
                    "  {:>8} {:>12} {:>8} {:>13} {:>15}",
                    x.at_secs,
                    show(x.rss_kib),
                    show(x.fds),
                    x.bot_sessions,
                    x.calls_answered
                );
            }
            row(
                &mut o,
                "RSS after warm-up -> last (KiB)",
                format!(
                    "{} -> {} ({})",
                    show(sk.rss_after_warmup_kib),
                    show(sk.rss_last_kib),
                    opt(sk.rss_growth_after_warmup_percent, " %")
                ),
            );
            row(
                &mut o,
                "descriptors after warm-up -> last",
                format!("{} -> {}", show(sk.fds_after_warmup), show(sk.fds_last)),
            );
        }

        let _ = writeln!(o, "\nWhole calls");
        let x = &self.totals;
        row(&mut o, "RTP packets sent", x.rtp_packets_sent.to_string());
        row(&mut o, "RTP send errors", x.rtp_send_errors.to_string());
        row(
            &mut o,
            "RTP packets received",
            x.rtp_packets_received.to_string(),
        );
        row(&mut o, "RTP sequence gaps", x.rtp_seq_lost.to_string());
        row(
            &mut o,
            "RTP packets without a frame id",
            x.rtp_without_id.to_string(),
        );
        row(
            &mut o,
            "bot sessions / stops",
            format!("{} / {}", x.bot_sessions, x.bot_stops),
        );
        row(
            &mut o,
            "media events / without frame id",
            format!("{} / {}", x.media_events, x.media_without_id),
        );
        row(&mut o, "audio deltas sent", x.deltas_sent.to_string());
        row(
            &mut o,
            "error events at the bot",
            x.bot_error_events.to_string(),
        );

        let br = &self.bridge;
        let _ = writeln!(
            o,
            "\nBridge process{}",
            match (&br.pid, &br.pid_source) {
                (Some(p), Some(s)) => format!(" (pid {p}, {s})"),
                (Some(p), None) => format!(" (pid {p})"),
                _ => " (pid unknown: give --bridge-pid)".into(),
            }
        );
        row(
            &mut o,
            "CPU over the hold (% of one core)",
            opt(br.cpu_percent, " %"),
        );
        row(
            &mut o,
            "CPU per call (% of one core)",
            opt(br.cpu_percent_per_call, " %"),
        );
        row(
            &mut o,
            "RSS before calls / at hold end",
            match (br.rss_start_kib, br.rss_hold_end_kib) {
                (Some(a), Some(b)) => format!("{a} KiB / {b} KiB"),
                _ => "n/a".into(),
            },
        );
        row(&mut o, "RSS per call", opt(br.rss_per_call_kib, " KiB"));
        if let Some(m) = &br.metrics {
            let get = |k: &str| m.at_hold_end.get(k).map_or("n/a".into(), |v| v.to_string());
            row(
                &mut o,
                "/metrics calls active at hold end",
                get("bridge_calls_active"),
            );
            for (k, v) in &m.change {
                if k.starts_with("bridge_frames_dropped_total") && *v != 0.0 {
                    row(&mut o, &format!("/metrics {k}"), format!("+{v}"));
                }
            }
        }
        let _ = writeln!(o, "\nLoad generator");
        row(
            &mut o,
            "own CPU over the hold (% of one core)",
            opt(self.loadgen.cpu_percent, " %"),
        );
        row(
            &mut o,
            "send clock lateness p50 / p99 / max (ms)",
            spread(&self.loadgen.send_lateness),
        );

        let _ = writeln!(o);
        if self.passed {
            let _ = writeln!(o, "PASS: every call established, no frame lost");
        } else {
            let _ = writeln!(o, "FAIL:");
            for p in &self.problems {
                let _ = writeln!(o, "  - {p}");
            }
        }
        o
    }
}
