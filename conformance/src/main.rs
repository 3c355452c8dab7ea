//! `conformance`: checks bot sessions against the protocol contract.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "conformance",
    version,
    about = "Checks bot sessions against protocol/PROTOCOL.md"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checks a captured bridge → bot event stream: one JSON event per line, as a
    /// bot received them (e.g. logged by your bot). Exit code 0 only when it conforms.
    CheckStream {
        /// The file (`-` for standard input).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
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
