//! Counters for operators and the benchmark, served as Prometheus text at
//! `/metrics`. Calls add to them as they run: relaxed atomics, a handful of
//! additions per 20 ms tick at most.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The bridge's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Calls whose clock is running.
    pub calls_active: AtomicI64,
    /// Calls ended, by final state (same order as [`STATES`]).
    pub calls_ended: [AtomicU64; 5],
    /// `media` events produced for bots.
    pub frames_to_bot: AtomicU64,
    /// `media` frames skipped because a bot was more than 5 s behind.
    pub frames_skipped_bot_backlog: AtomicU64,
    /// 20 ms frames of bot audio played to phones.
    pub frames_from_bot: AtomicU64,
    /// Bot messages refused with an `error` event.
    pub bot_messages_refused: AtomicU64,
    /// New calls refused because the bridge carried `[calls] max_calls`.
    pub calls_refused_full: AtomicU64,
    /// New calls refused because the clock ran late (overload).
    pub calls_refused_overload: AtomicU64,
    /// The median lateness of the load probe over the last second, µs.
    pub tick_lateness_us: AtomicU64,
    /// New calls refused because the bridge was shutting down.
    pub calls_refused_shutdown: AtomicU64,
    /// `error` events not sent: a bot refused faster than the error budget.
    pub bot_errors_dropped: AtomicU64,
    /// Keys sent to bots / keys bots sent.
    pub dtmf_to_bot: AtomicU64,
    /// See above.
    pub dtmf_from_bot: AtomicU64,
    /// Media events queued towards bots and not yet written (all calls).
    pub bot_backlog_frames: AtomicI64,
    /// Bot audio queued for playout, in samples (all calls).
    pub playout_queued_samples: AtomicI64,
    /// Bot connections that failed.
    pub bot_connect_failures: AtomicU64,
    /// Time from starting a bot connection to its open socket, summed (ms).
    pub bot_connect_ms_sum: AtomicU64,
    /// Bot connections opened.
    pub bot_connects: AtomicU64,
    /// RTP packets received / sent (ended calls).
    pub rtp_packets_in: AtomicU64,
    /// RTP packets sent (ended calls).
    pub rtp_packets_out: AtomicU64,
    /// Datagrams on RTP ports that were not valid RTP.
    pub rtp_malformed: AtomicU64,
    /// RTP from a source other than the call's far end.
    pub rtp_unexpected_source: AtomicU64,
    /// Received frames concealed (loss or underrun).
    pub jitter_concealed: AtomicU64,
    /// Received frames played as silence.
    pub jitter_silence: AtomicU64,
    /// RTP packets that came too late to play.
    pub jitter_late: AtomicU64,
}

/// The final states counted in [`Metrics::calls_ended`].
pub const STATES: [&str; 5] = ["completed", "busy", "no-answer", "failed", "canceled"];

impl Metrics {
    /// Counts a call that ended in `state`.
    pub fn call_ended(&self, state: &str) {
        if let Some(i) = STATES.iter().position(|s| *s == state) {
            self.calls_ended[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds what a session did since `before`.
    pub fn add_session(
        &self,
        before: &crate::botlink::session::SessionStats,
        now: &crate::botlink::session::SessionStats,
    ) {
        let add = |c: &AtomicU64, a: u64, b: u64| {
            if b > a {
                c.fetch_add(b - a, Ordering::Relaxed);
            }
        };
        add(&self.frames_to_bot, before.media_sent, now.media_sent);
        add(
            &self.frames_skipped_bot_backlog,
            before.media_skipped,
            now.media_skipped,
        );
        add(
            &self.frames_from_bot,
            before.frames_played,
            now.frames_played,
        );
        add(
            &self.bot_errors_dropped,
            before.errors_dropped,
            now.errors_dropped,
        );
        add(&self.bot_messages_refused, before.refused, now.refused);
        add(&self.dtmf_to_bot, before.dtmf_to_bot, now.dtmf_to_bot);
        add(&self.dtmf_from_bot, before.dtmf_from_bot, now.dtmf_from_bot);
    }

    /// Moves a gauge from one call's old value to its new one.
    pub fn shift(gauge: &AtomicI64, old: &mut i64, new: i64) {
        if new != *old {
            gauge.fetch_add(new - *old, Ordering::Relaxed);
            *old = new;
        }
    }

    /// Adds a phone leg's RTP figures (from its report) when its call ends.
    pub fn add_rtp(&self, report: &serde_json::Value) {
        let get = |path: &str| report.pointer(path).and_then(|v| v.as_u64()).unwrap_or(0);
        let add = |c: &AtomicU64, v: u64| {
            if v > 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.rtp_packets_in, get("/rtp/packets_in"));
        add(&self.rtp_packets_out, get("/rtp/packets_out"));
        add(&self.rtp_malformed, get("/rtp/malformed"));
        add(&self.rtp_unexpected_source, get("/rtp/unexpected_source"));
        add(&self.jitter_concealed, get("/rtp/jitter/concealed"));
        add(&self.jitter_silence, get("/rtp/jitter/silence"));
        add(&self.jitter_late, get("/rtp/jitter/late"));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "bridge_calls_active",
            "gauge",
            "Calls whose 20 ms clock is running.",
            g(&self.calls_active).to_string(),
        );
        metric(
            "bridge_media_frames_to_bot_total",
            "counter",
            "media events produced for bots.",
            r(&self.frames_to_bot).to_string(),
        );
        metric(
            "bridge_media_frames_from_bot_total",
            "counter",
            "20 ms frames of bot audio played to phones.",
            r(&self.frames_from_bot).to_string(),
        );
        metric(
            "bridge_bot_messages_refused_total",
            "counter",
            "Bot messages answered with an error event.",
            r(&self.bot_messages_refused).to_string(),
        );
        metric(
            "bridge_bot_errors_dropped_total",
            "counter",
            "error events not sent to bots that were refused faster than 50 a second.",
            r(&self.bot_errors_dropped).to_string(),
        );
        metric(
            "bridge_bot_backlog_frames",
            "gauge",
            "media events queued towards bots, not yet written.",
            g(&self.bot_backlog_frames).to_string(),
        );
        metric(
            "bridge_playout_queued_samples",
            "gauge",
            "Bot audio waiting to be played, in 8 kHz samples.",
            g(&self.playout_queued_samples).to_string(),
        );
        metric(
            "bridge_bot_connects_total",
            "counter",
            "Bot WebSocket connections opened.",
            r(&self.bot_connects).to_string(),
        );
        metric(
            "bridge_bot_connect_failures_total",
            "counter",
            "Bot WebSocket connections that failed.",
            r(&self.bot_connect_failures).to_string(),
        );
        metric(
            "bridge_bot_connect_ms_sum",
            "counter",
            "Total time to open bot connections, ms (divide by bridge_bot_connects_total).",
            r(&self.bot_connect_ms_sum).to_string(),
        );
        metric(
            "bridge_rtp_packets_in_total",
            "counter",
            "RTP packets received (counted when calls end).",
            r(&self.rtp_packets_in).to_string(),
        );
        metric(
            "bridge_rtp_packets_out_total",
            "counter",
            "RTP packets sent (counted when calls end).",
            r(&self.rtp_packets_out).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP bridge_dtmf_total DTMF keys, by direction.\n\
             # TYPE bridge_dtmf_total counter\n\
             bridge_dtmf_total{{direction=\"to_bot\"}} {}\n\
             bridge_dtmf_total{{direction=\"from_bot\"}} {}",
            r(&self.dtmf_to_bot),
            r(&self.dtmf_from_bot)
        );
        let _ = writeln!(
            out,
            "# HELP bridge_calls_refused_total New calls refused, by reason.\n\
             # TYPE bridge_calls_refused_total counter\n\
             bridge_calls_refused_total{{reason=\"full\"}} {}\n\
             bridge_calls_refused_total{{reason=\"overload\"}} {}\n\
             bridge_calls_refused_total{{reason=\"shutdown\"}} {}\n\
             # HELP bridge_tick_lateness_ms The median lateness of a 20 ms probe on the calls' runtime over the last second.\n\
             # TYPE bridge_tick_lateness_ms gauge\n\
             bridge_tick_lateness_ms {:.3}",
            r(&self.calls_refused_full),
            r(&self.calls_refused_overload),
            r(&self.calls_refused_shutdown),
            r(&self.tick_lateness_us) as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "# HELP bridge_frames_dropped_total Frames lost or refused, by reason.\n# TYPE bridge_frames_dropped_total counter"
        );
        for (reason, v) in [
            ("bot_backlog", r(&self.frames_skipped_bot_backlog)),
            ("rtp_malformed", r(&self.rtp_malformed)),
            ("rtp_unexpected_source", r(&self.rtp_unexpected_source)),
            ("jitter_late", r(&self.jitter_late)),
            ("jitter_concealed", r(&self.jitter_concealed)),
            ("jitter_silence", r(&self.jitter_silence)),
        ] {
            let _ = writeln!(
                out,
                "bridge_frames_dropped_total{{reason=\"{reason}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP bridge_calls_ended_total Calls ended, by final state.\n# TYPE bridge_calls_ended_total counter"
        );
        for (state, c) in STATES.iter().zip(&self.calls_ended) {
            let _ = writeln!(
                out,
                "bridge_calls_ended_total{{state=\"{state}\"}} {}",
                r(c)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.calls_active.fetch_add(2, Ordering::Relaxed);
        m.call_ended("busy");
        m.add_rtp(&serde_json::json!({"rtp": {"packets_in": 5, "jitter": {"late": 1}}}));
        let text = m.render();
        assert!(text.contains("bridge_calls_active 2\n"));
        assert!(text.contains("bridge_calls_ended_total{state=\"busy\"} 1\n"));
        assert!(text.contains("bridge_rtp_packets_in_total 5\n"));
        assert!(text.contains("bridge_frames_dropped_total{reason=\"jitter_late\"} 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(!name.is_empty());
            value.parse::<f64>().unwrap();
        }
    }
}
