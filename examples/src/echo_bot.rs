//! `echo-bot`: a minimal bot for the telephony bridge.
//!
//! Run it, then point a call's `wss_url` at it:
//!
//! ```text
//! cargo run -p examples --bin echo-bot -- --listen 127.0.0.1:9000
//! ```
//!
//! The caller hears themselves; each key they press is sent back to the
//! phone as DTMF, `#` hangs up, and `0` transfers the call to
//! `--transfer-to` (a person: the caller is bridged to them and the bot is
//! done). `9` makes it a warm transfer: when the person answers, the bot
//! talks to them alone (it echoes them) while the caller holds; the person
//! presses `1` to take the caller or `2` to send them back to the bot.
//! Logs go to stderr (`RUST_LOG` filters).

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "echo-bot",
    about = "Echo bot for the telephony bridge (WebSocket server)"
)]
struct Args {
    /// Address to listen on for the bridge's WebSocket connections.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// Where the key `0` (cold) or `9` (warm) transfers the call
    /// (`session.transfer`); `none` to
    /// turn it off. The default is a simulated-carrier phone that answers and
    /// speaks.
    #[arg(long, default_value = "+99910002")]
    transfer_to: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!("echo bot listening on ws://{}/", listener.local_addr()?);

    tokio::select! {
        () = examples::serve_echo_transferring(listener, (args.transfer_to != "none").then_some(args.transfer_to)) => {}
        r = tokio::signal::ctrl_c() => {
            r?;
            tracing::info!("interrupted, exiting");
        }
    }
    Ok(())
}
