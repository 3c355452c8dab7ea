//! Secrets never reach logs, errors or API answers. The real binary runs
//! with its default log level and with debug logging, a config full of
//! secrets, calls to bots whose URLs and headers carry keys (one reached,
//! one not); then its output, `check-config`'s and the API's answers are
//! searched for every secret used.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::json;

const SECRETS: [&str; 8] = [
    "TRUNKPW-s3cret",
    "EXTPW-s3cret",
    "DIDKEY-s3cret",
    "DIDHDR-s3cret",
    "APIKEY-s3cret",
    "WSSHDR-s3cret",
    "DEADKEY-s3cret",
    "CFGKEY-s3cret",
];

fn config(bot: &str) -> String {
    format!(
        r#"
[[sip.trunks]]
name = "carrier"
host = "127.0.0.1"
username = "acct"
password = "TRUNKPW-s3cret"

[[sip.extensions]]
number = "101"
password = "EXTPW-s3cret"

[[dids]]
number = "+15550007000"
bot_url = "{bot}?key=DIDKEY-s3cret"
headers = {{ Authorization = "Bearer DIDHDR-s3cret" }}

[[dids]]
number = "+15550007001"
config_api = "http://127.0.0.1:9/config?key=CFGKEY-s3cret"
"#
    )
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows {s}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_errors_or_answers() {
    let dir = tempfile::tempdir().unwrap();
    let bot = TestBot::spawn(|mut c| async move {
        c.until("media", 5 * SEC).await;
        c.send(r#"{"type":"session.transfer_ws","url":"ws://127.0.0.1:9/?key=DEADKEY-s3cret"}"#)
            .await;
        c.until("transfer_failed", 10 * SEC).await;
        c.send(r#"{"type":"session.hangup"}"#).await;
        c.drain(5 * SEC).await;
        c
    })
    .await;
    let cfg = dir.path().join("bridge.toml");
    std::fs::write(&cfg, config(&bot.url())).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bridge"))
        .arg("check-config")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("<redacted>"), "{printed}");
    assert_no_secret("check-config", &printed);

    for level in [None, Some("debug")] {
        let data = dir
            .path()
            .join(format!("data-{}", level.unwrap_or("default")));
        let log = dir.path().join("bridge.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_bridge"));
        cmd.args([
            "serve",
            "--no-sip",
            "--http",
            &addr.to_string(),
            "--api-token",
            TOKEN,
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .kill_on_drop(true);
        if let Some(l) = level {
            cmd.env("RUST_LOG", l);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = tokio::time::Instant::now() + 10 * SEC;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let logid = dial(
            addr,
            json!({
                "customer_no": "+99910001",
                "wss_url": format!("{}?token=APIKEY-s3cret", bot.url()),
                "wss_header": "X-Key: WSSHDR-s3cret",
            }),
        )
        .await;
        let rec = wait_final(addr, logid, 20 * SEC).await;
        assert_eq!(rec["end_reason"], "bot_hangup", "{rec}");
        assert_no_secret("the call log", &rec.to_string());
        // A bad URL's error names it without its key.
        let (status, v) = http_json(
            addr,
            "POST",
            "/api/dial_by_aivoicebot",
            Some(TOKEN),
            Some(r#"{"customer_no":"+99910001","wss_url":"ws://bot.example.com/?key=APIKEY-s3cret"}"#),
        )
        .await;
        assert_eq!(status, 400);
        assert_no_secret("an API error", &v.to_string());
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().unwrap().to_string()])
            .status();
        let _ = tokio::time::timeout(15 * SEC, child.wait()).await;
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("bot connected"),
            "the log has the call:\n{text}"
        );
        assert!(!text.contains('\u{1b}'), "no colour codes in a file");
        assert_no_secret(&format!("the log at {level:?}"), &text);
    }
    let conns = bot.finished(2, 10 * SEC).await;
    assert_eq!(conns.len(), 2);
}
