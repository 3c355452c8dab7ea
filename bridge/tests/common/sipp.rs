//! SIPp (`sip-tester`) as a test peer, and a bridge with SIP on loopback.
//!
//! Tests that use SIPp call [`sipp_available`] first: without SIPp they print
//! SKIPPED locally, and fail when `CI` is set (`.ci/run` installs it).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::{init_logs, TOKEN};

pub fn sipp_available() -> bool {
    let ok = std::process::Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        // CI installs SIPp (.ci/run); there a missing sipp is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "sipp is not installed but CI is set: .ci/run must install sip-tester"
        );
        eprintln!("SKIPPED: sipp is not installed (apt-get install sip-tester)");
    }
    ok
}

pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// A free UDP port on loopback (even, so SIPp's media port +2 stays free too).
pub fn free_port() -> u16 {
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        if p.is_multiple_of(2) && p < 60000 {
            return p;
        }
    }
}

pub struct Sipp {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Sipp {
    /// Starts SIPp with `scenario` against `target` (or as a UAS when `None`).
    pub fn start(
        scenario_file: &str,
        target: Option<SocketAddr>,
        port: u16,
        extra: &[&str],
    ) -> Sipp {
        let dir = std::env::temp_dir().join(format!("sipp-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("errors.log");
        let mut cmd = Command::new("sipp");
        cmd.current_dir(&dir)
            .arg("-sf")
            .arg(scenario(scenario_file))
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mp", &(port + 2).to_string()])
            .args(["-m", "1", "-timeout", "40s"])
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(t) = target {
            cmd.arg(t.to_string());
        }
        Sipp {
            child: cmd.spawn().expect("sipp starts"),
            log,
        }
    }

    /// Waits for SIPp to finish; returns its exit code and error log.
    pub async fn finish(mut self, limit: Duration) -> (i32, String) {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("sipp finishes in time")
            .unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        (status.code().unwrap_or(-1), log)
    }
}

/// Starts SIPp registering extension `ext` (digest password `password`) at
/// `bridge`, with its Contact on `contact_port`; finish it to see the result.
pub fn register(bridge: SocketAddr, ext: &str, password: &str, contact_port: u16) -> Sipp {
    Sipp::start(
        "register.xml",
        Some(bridge),
        free_port(),
        &[
            "-s",
            ext,
            "-au",
            ext,
            "-ap",
            password,
            "-set",
            "contact_port",
            &contact_port.to_string(),
        ],
    )
}

pub async fn start_sip_bridge(dir: &std::path::Path, toml: &str) -> bridge::server::Running {
    init_logs();
    let config = bridge::config::Config::parse(toml).expect("test config");
    bridge::server::start(bridge::server::Options {
        http: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        api_token: Some(TOKEN.into()),
        sip: Some("127.0.0.1:0".parse().unwrap()),
        config,
    })
    .await
    .expect("bridge with SIP starts")
}
