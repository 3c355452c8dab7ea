//! `bridge`: the command-line entry point.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use bridge::config::Config;
use bridge::server::{self, Options};

#[derive(Parser)]
#[command(
    name = "bridge",
    version,
    about = "Puts phone calls on WebSockets to voice bots"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge: REST API, call engine, simulated carrier.
    Serve(ServeArgs),
    /// Check a config file and print the configuration in force.
    CheckConfig {
        /// The TOML config file.
        #[arg(long, env = "BRIDGE_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// HTTP listen address of the REST API.
    #[arg(long, env = "BRIDGE_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// SIP listen address (UDP and TCP) for trunks, phones and extensions.
    /// (default: `[sip] listen` from the config file, else 127.0.0.1:5060)
    #[arg(long, env = "BRIDGE_SIP")]
    sip: Option<SocketAddr>,
    /// Run without SIP (simulated carrier only).
    #[arg(long, env = "BRIDGE_NO_SIP", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    no_sip: bool,
    /// Directory for the database and recordings.
    #[arg(long, env = "BRIDGE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// API token callers must present; without it, one is generated at first start and printed once.
    #[arg(long, env = "BRIDGE_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// TOML config file (see bridge/config.example.toml).
    #[arg(long, env = "BRIDGE_CONFIG")]
    config: Option<PathBuf>,
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

/// Waits for Ctrl-C or SIGTERM (what systemd, Docker and Kubernetes send;
/// as PID 1 in a container nothing handles it unless we do).
async fn wait_for_stop() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => tracing::info!("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        // The SIP stack logs every message in full (Authorization headers
        // included) at info: kept to warnings unless RUST_LOG asks.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rsipstack=warn".into()),
        )
        // Colour codes only for a terminal, not in files and journals.
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    match Cli::parse().command {
        Command::CheckConfig { config } => {
            let cfg = load_config(config.as_ref())?;
            // Secrets (passwords, bot headers, URL keys) are not printed.
            println!("{:#?}", cfg.redacted());
            Ok(())
        }
        Command::Serve(args) => {
            let config = load_config(args.config.as_ref())?;
            let running = server::start(Options {
                http: args.http,
                data_dir: args.data_dir.clone(),
                api_token: args.api_token,
                sip: (!args.no_sip).then(|| args.sip.unwrap_or(config.sip.listen)),
                config,
            })
            .await
            .context("the bridge could not start")?;
            if let Some(token) = &running.generated_token {
                println!(
                    "API token (shown once; only its hash is stored in {}): {token}",
                    args.data_dir.display()
                );
            }
            tracing::info!("REST API on http://{}", running.addr);
            wait_for_stop().await?;
            tracing::info!(
                "shutting down: new calls refused; live calls may go on for {} s",
                running.engine.config().server.drain_secs
            );
            running.drain_and_stop().await;
            tracing::info!("stopped");
            Ok(())
        }
    }
}
