//! `loadgen`: N concurrent SIP/RTP calls through a running bridge to an echoing
//! bot, on loopback; prints loss, latency, CPU and memory figures.
//!
//! Exit codes: 0 every call was established and no frame was lost; 1 otherwise
//! (the reasons are printed); 2 the run could not be made (bad options, no
//! bridge answering, a port in use).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Runs N concurrent SIP/RTP calls through a bridge to an echoing bot and reports loss, latency, CPU and memory",
    after_help = "The bridge needs a DID whose bot_url is this program's bot server, e.g.\n  [[dids]]\n  number = \"+15550009000\"\n  bot_url = \"ws://127.0.0.1:9100/\"\nwith loadgen --did +15550009000 --bot-listen 127.0.0.1:9100 (see conformance/loadgen/README.md).\n\nExit codes: 0 all calls established and no frame lost; 1 otherwise; 2 the run could not be made."
)]
struct Cli {
    /// The bridge's SIP address (UDP).
    #[arg(long, default_value = "127.0.0.1:5060")]
    sip: SocketAddr,
    /// The DID to call; its bot_url must point at --bot-listen.
    #[arg(long, default_value = "+15550009000")]
    did: String,
    /// Concurrent calls.
    #[arg(long, default_value_t = 20)]
    calls: u32,
    /// Seconds over which the calls are started, evenly.
    #[arg(long, default_value_t = 10.0)]
    ramp_secs: f64,
    /// Seconds every call stays up once the ramp is over.
    #[arg(long, default_value_t = 30.0)]
    hold_secs: f64,
    /// Where the bot's WebSocket server listens.
    #[arg(long, default_value = "127.0.0.1:9100")]
    bot_listen: SocketAddr,
    /// The bridge's PID, for its CPU and memory (default: the process holding the SIP port, if visible).
    #[arg(long)]
    bridge_pid: Option<u32>,
    /// The bridge's /metrics URL (e.g. http://127.0.0.1:8080/metrics), to report its own counters too.
    #[arg(long)]
    bridge_metrics: Option<String>,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Our address for SIP, RTP and SDP.
    #[arg(long, default_value = "127.0.0.1")]
    local_ip: IpAddr,
    /// RTP port of the first call; call i uses rtp-base + 2i.
    #[arg(long, default_value_t = 40000)]
    rtp_base: u16,
    /// Seconds to wait for a call to be answered.
    #[arg(long, default_value_t = 15.0)]
    setup_timeout_secs: f64,
    /// The caller talks in spurts of this many milliseconds...
    #[arg(long, default_value_t = 400)]
    talk_ms: u64,
    /// ...with pauses of this many between them: quiet frames without an id, not
    /// counted (0: it talks without pause).
    #[arg(long, default_value_t = 100)]
    pause_ms: u64,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Soak: instead of holding every call, keep --calls calls up for this
    /// many seconds with churn (each call ends after --call-secs-min to
    /// --call-secs-max and another takes its place), reading the bridge's RSS
    /// and file descriptors every --sample-secs.
    #[arg(long)]
    soak_secs: Option<f64>,
    /// Shortest soak call, seconds.
    #[arg(long, default_value_t = 20.0)]
    call_secs_min: f64,
    /// Longest soak call, seconds.
    #[arg(long, default_value_t = 120.0)]
    call_secs_max: f64,
    /// Seconds between readings of the bridge during a soak.
    #[arg(long, default_value_t = 60.0)]
    sample_secs: f64,
}

fn secs(v: f64, name: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("--{name} must be a number of seconds >= 0"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let durations = (|| {
        let soak = match cli.soak_secs {
            Some(d) => Some(loadgen::Soak {
                duration: secs(d, "soak-secs")?,
                call_min: secs(cli.call_secs_min, "call-secs-min")?,
                call_max: secs(cli.call_secs_max, "call-secs-max")?,
                sample_every: secs(cli.sample_secs, "sample-secs")?,
            }),
            None => None,
        };
        Ok::<_, String>((
            secs(cli.ramp_secs, "ramp-secs")?,
            secs(cli.hold_secs, "hold-secs")?,
            secs(cli.setup_timeout_secs, "setup-timeout-secs")?,
            soak,
        ))
    })();
    let (ramp, hold, setup_timeout, soak) = match durations {
        Ok(d) => d,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let mut opts = loadgen::Options::new(cli.sip, &cli.did, cli.calls);
    opts.ramp = ramp;
    opts.hold = hold;
    opts.setup_timeout = setup_timeout;
    opts.bot_listen = cli.bot_listen;
    opts.bridge_pid = cli.bridge_pid;
    opts.bridge_metrics = cli.bridge_metrics;
    opts.local_ip = cli.local_ip;
    opts.rtp_base = cli.rtp_base;
    opts.talk = Duration::from_millis(cli.talk_ms);
    opts.pause = Duration::from_millis(cli.pause_ms);
    opts.progress = !cli.quiet;
    opts.soak = soak;

    let report = match loadgen::run(opts).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|j| std::fs::write(path, j + "\n").map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
