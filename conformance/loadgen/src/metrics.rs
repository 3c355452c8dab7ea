//! Reading the bridge's Prometheus `/metrics` page over plain HTTP/1.1.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fetches `url` (`http://host:port/path`) and parses it as Prometheus text:
/// series (name with labels) to value.
pub async fn fetch(url: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// metrics URLs are supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let body = tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = tokio::net::TcpStream::connect(hostport)
            .await
            .with_context(|| format!("cannot connect to {hostport}"))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    })
    .await
    .with_context(|| format!("{url}: no answer within 5 s"))??;
    let text = String::from_utf8_lossy(&body);
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{url}: not an HTTP response"))?;
    let status = head.lines().next().unwrap_or("");
    if !status.contains(" 200") {
        bail!("{url}: {status}");
    }
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let payload = if chunked {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    Ok(parse(&payload))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Parses Prometheus text exposition: comment lines are skipped.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.trim().rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_series() {
        let m = parse("# HELP x y\nbridge_calls_active 3\nbridge_frames_dropped_total{reason=\"jitter_late\"} 2\n");
        assert_eq!(m["bridge_calls_active"], 3.0);
        assert_eq!(
            m["bridge_frames_dropped_total{reason=\"jitter_late\"}"],
            2.0
        );
        assert_eq!(dechunk("5\r\nhello\r\n3\r\n ab\r\n0\r\n\r\n"), "hello ab");
    }
}
