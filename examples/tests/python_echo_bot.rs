//! Runs `python/echo_bot.py` as a child process and talks to it like the
//! bridge does. Skipped (with a message) when python3 or the `websockets`
//! package is not installed.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the bot process when the test ends, pass or fail.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python_websockets_available() -> bool {
    Command::new("python3")
        .args(["-c", "import websockets.asyncio.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn python_echo_bot_echoes_media_answers_dtmf_and_hangs_up_on_hash() {
    if !python_websockets_available() {
        println!(
            "SKIPPED: python3 with the `websockets` package (>= 13, asyncio API) \
             is not available; install it with `pip install websockets`"
        );
        return;
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/echo_bot.py");
    let port = free_port();
    let child = Command::new("python3")
        .arg(script)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3");
    let mut bot = KillOnDrop(child);

    // Python needs a moment to start listening; retry until it accepts.
    let url = format!("ws://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(10);
    let ws = loop {
        if let Ok(Some(status)) = bot.0.try_wait() {
            panic!("echo_bot.py exited early with {status}");
        }
        match tokio::time::timeout(common::STEP, common::connect(&url)).await {
            Ok(Ok(ws)) => break ws,
            _ if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => panic!("cannot connect to echo_bot.py: {e}"),
            Err(_) => panic!("connecting to echo_bot.py timed out"),
        }
    };

    common::echo_conversation(ws).await;
}
