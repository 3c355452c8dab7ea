//! `conformance`: checks bots and bridges against the bot WebSocket protocol.
//!
//! Exit codes: 0 when every selected scenario passed; 1 when one failed or could
//! not check what it is for (skipped); 2 when the suite could not run (bad
//! options, nothing to test, an unavailable dialect).

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use conformance::botsuite::{self, BotOptions, Dialect};
use conformance::bridgesuite::{self, BridgeOptions};
use conformance::report::{Report, StdoutProgress};
use conformance::scenario::{self, Scenario, SuiteKind};
use conformance::schema;

#[derive(Parser)]
#[command(
    name = "conformance",
    version,
    about = "Checks bots and bridges against the bot WebSocket protocol (protocol/PROTOCOL.md)",
    after_help = "Exit codes: 0 every selected scenario passed; 1 a scenario failed or was skipped; 2 the suite could not run."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Plays the bridge against your bot: real calls' worth of events over a real
    /// WebSocket, checking every message the bot sends.
    Bot(BotArgs),
    /// Plays the bot and the phone against a bridge: places calls through its REST
    /// API to the simulated carrier and checks the bridge against the protocol.
    Bridge(BridgeArgs),
    /// Writes the protocol's JSON Schema files (generated from the protocol types).
    Schema {
        /// The folder to write `events.schema.json` and `commands.schema.json` to;
        /// without it they are printed.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only compare the files in this folder with the generated ones; exit 1
        /// when they differ.
        #[arg(long, value_name = "DIR", conflicts_with = "out")]
        check: Option<PathBuf>,
    },
    /// Checks a captured bridge → bot event stream: one JSON event per line, as a
    /// bot received them (e.g. logged by your bot). Exit code 0 only when it conforms.
    CheckStream {
        /// The file (`-` for standard input).
        file: PathBuf,
    },
}

/// Options both suites share.
#[derive(Args)]
struct Common {
    /// Run only this scenario (repeatable); default: all of the suite's scenarios.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// List the suite's scenarios (name, purpose, protocol section) and exit.
    #[arg(long)]
    list: bool,
    /// Also load scenario files (*.toml) from this folder.
    #[arg(long, value_name = "DIR")]
    scenario_dir: Option<PathBuf>,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a JSON report here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Scenarios to run at once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    jobs: usize,
}

#[derive(Args)]
struct BotArgs {
    /// The bot's WebSocket URL, e.g. ws://127.0.0.1:9000/ or wss://bot.example.com/voice.
    #[arg(long, required_unless_present = "list")]
    url: Option<String>,
    /// A header for the WebSocket upgrade, as the bridge sends `wss_header`
    /// lines: 'Name: value' (repeatable).
    #[arg(long = "header", value_name = "'NAME: VALUE'")]
    headers: Vec<String>,
    /// The protocol dialect to speak.
    #[arg(long, value_enum, default_value = "ivr")]
    dialect: Dialect,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct BridgeArgs {
    /// The bridge's base URL, e.g. http://127.0.0.1:8080 (the API is under /api).
    #[arg(long, required_unless_present = "list")]
    api: Option<String>,
    /// The bridge's API token.
    #[arg(
        long,
        env = "BRIDGE_API_TOKEN",
        hide_env_values = true,
        required_unless_present = "list"
    )]
    token: Option<String>,
    /// Where the suite's bot listens; the bridge must be able to reach it.
    #[arg(long, default_value = "127.0.0.1:0")]
    bot_listen: SocketAddr,
    /// The base URL the bridge is given for the suite's bot (default
    /// ws:// + the listen address).
    #[arg(long, value_name = "URL")]
    bot_url: Option<String>,
    /// A simulated-carrier number whose phone answers and then hangs up by itself
    /// (a `carrier.phones` entry with `hangup_after_ms`); enables stop-callended.
    #[arg(long, value_name = "NUMBER")]
    hangup_number: Option<String>,
    /// A flow the bridge has (`session.flow_transfer`) that ends the call by
    /// itself, e.g. an `external_dial` to the hangup number; enables flow-transfer.
    #[arg(long, value_name = "ID")]
    flow_id: Option<String>,
    /// An extension of the bridge's whose phone answers and hangs up by itself
    /// (e.g. `also_ring` the hangup number); enables transfer-extension.
    #[arg(long, value_name = "EXTENSION")]
    extension: Option<String>,
    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Bot(args) => run_suite(
            SuiteKind::Bot,
            &args.common,
            |selected| {
                let headers = args
                    .headers
                    .iter()
                    .map(|h| parse_header(h))
                    .collect::<Result<Vec<_>, _>>()?;
                let opts = BotOptions {
                    url: args.url.clone().unwrap_or_default(),
                    headers,
                    dialect: args.dialect,
                    jobs: args.common.jobs,
                };
                println!(
                    "conformance bot: {} scenario(s) against {}",
                    selected.len(),
                    opts.url
                );
                runtime()?
                    .block_on(botsuite::run(opts, selected, Arc::new(StdoutProgress)))
                    .map_err(|e| e.to_string())
            },
            &[],
        ),
        Command::Bridge(args) => {
            let opts = BridgeOptions {
                api: args.api.clone().unwrap_or_default(),
                token: args.token.clone().unwrap_or_default(),
                bot_listen: args.bot_listen,
                bot_url: args.bot_url.clone(),
                hangup_number: args.hangup_number.clone(),
                flow_id: args.flow_id.clone(),
                extension: args.extension.clone(),
                jobs: args.common.jobs,
            };
            let available = bridgesuite::available_options(&opts);
            run_suite(
                SuiteKind::Bridge,
                &args.common,
                |selected| {
                    println!(
                        "conformance bridge: {} scenario(s) against {}",
                        selected.len(),
                        opts.api
                    );
                    runtime()?
                        .block_on(bridgesuite::run(
                            opts.clone(),
                            selected,
                            Arc::new(StdoutProgress),
                        ))
                        .map_err(|e| e.to_string())
                },
                &available,
            )
        }
        Command::Schema { out, check } => write_schema(out.as_deref(), check.as_deref()),
        Command::CheckStream { file } => match check_file(&file) {
            Ok(0) => {
                println!("ok: the stream conforms");
                ExitCode::SUCCESS
            }
            Ok(n) => {
                println!("FAILED: {n} problem(s)");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn parse_header(h: &str) -> Result<(String, String), String> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| format!("--header {h:?} has no ':' (expected 'Name: value')"))?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("--header {h:?}: {name:?} is not a header name"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// Selects scenarios, runs them with `run`, prints the summary and writes the
/// reports; returns the exit code.
fn run_suite<F>(suite: SuiteKind, common: &Common, run: F, available: &[&str]) -> ExitCode
where
    F: FnOnce(Vec<Scenario>) -> Result<Report, String>,
{
    let mut all = scenario::builtin();
    if let Some(dir) = &common.scenario_dir {
        match scenario::load_dir(dir) {
            Ok(more) => all.extend(more),
            Err(e) => return usage_error(&e),
        }
    }
    if common.list {
        print!("{}", scenario::listing(&all, suite));
        return ExitCode::SUCCESS;
    }
    let scenario::Selection {
        run: selected,
        left_out,
    } = match scenario::select(&all, suite, &common.scenarios, available) {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    if selected.is_empty() {
        return usage_error("no scenario selected");
    }
    for (s, need) in &left_out {
        println!("not selected: {} (needs --{need})", s.name);
    }
    let report = match run(selected) {
        Ok(r) => r,
        Err(e) => return usage_error(&e),
    };
    print!("{}", report.summary());
    for (path, text) in [
        (&common.junit, report.junit()),
        (&common.json, report.json()),
    ] {
        if let Some(path) = path {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn usage_error(e: &str) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

fn write_schema(out: Option<&Path>, check: Option<&Path>) -> ExitCode {
    let files = [
        (
            schema::EVENTS_FILE,
            schema::to_file_text(&schema::events_schema()),
        ),
        (
            schema::COMMANDS_FILE,
            schema::to_file_text(&schema::commands_schema()),
        ),
    ];
    if let Some(dir) = check {
        let mut stale = 0;
        for (name, text) in &files {
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                println!(
                    "{} differs from the protocol types; run `conformance schema --out {}`",
                    path.display(),
                    dir.display()
                );
                stale += 1;
            }
        }
        return if stale == 0 {
            println!("ok: the schema files match the protocol types");
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    match out {
        Some(dir) => {
            for (name, text) in &files {
                let path = dir.join(name);
                if let Err(e) = std::fs::write(&path, text) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
                println!("wrote {}", path.display());
            }
        }
        None => {
            for (_, text) in &files {
                print!("{text}");
            }
        }
    }
    ExitCode::SUCCESS
}

fn check_file(path: &PathBuf) -> anyhow::Result<usize> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut events = Vec::new();
    let mut problems = 0;
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match protocol::parse_event(&line) {
            Ok(ev) => events.push(ev),
            Err(e) => {
                problems += 1;
                println!("line {}: does not parse: {e}", n + 1);
            }
        }
    }
    for v in conformance::stream::check_stream(&events) {
        problems += 1;
        println!("{v}");
    }
    Ok(problems)
}
