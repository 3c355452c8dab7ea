//! Where the bridge connects on a caller's say-so.
//!
//! A bot URL comes from API callers, CONFIG_APIs and bots themselves
//! (`session.transfer_ws`). Pointed at the bridge's own network it would make
//! the bridge a door into it: cloud metadata at 169.254.169.254, admin ports on
//! loopback, private services. So addresses in special ranges (loopback,
//! private, link-local, shared, reserved, multicast, documentation) are
//! refused unless the operator allows them by CIDR (`[outbound] allow_networks`),
//! and the check is made on the address actually connected to, after DNS, so
//! a name that resolves into such a range is caught too. Link-local is only
//! allowed by a CIDR inside it (naming it explicitly), never by a wide one such
//! as `0.0.0.0/0`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

/// A network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a network (e.g. 10.0.0.0/8 or fd00::/8)"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { net, prefix })
    }
}

impl Cidr {
    /// The network of one address.
    pub fn host(ip: IpAddr) -> Cidr {
        let ip = canonical(ip);
        Cidr {
            net: ip,
            prefix: if ip.is_ipv4() { 32 } else { 128 },
        }
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// Whether every address of this network is link-local.
    fn within_link_local(&self) -> bool {
        match self.net {
            IpAddr::V4(n) => self.prefix >= 16 && n.is_link_local(),
            IpAddr::V6(n) => self.prefix >= 10 && (n.segments()[0] & 0xffc0) == 0xfe80,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The special range `ip` is in, if any.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(a) => special_v4(a),
        IpAddr::V6(a) => special_v6(a),
    }
}

fn special_v4(a: Ipv4Addr) -> Option<&'static str> {
    let [b0, b1, ..] = a.octets();
    Some(match () {
        _ if a.is_loopback() => "loopback",
        _ if a.is_private() => "private",
        _ if a.is_link_local() => "link-local",
        _ if b0 == 0 => "this network (0.0.0.0/8)",
        _ if b0 == 100 && (64..128).contains(&b1) => "shared address space (100.64.0.0/10)",
        _ if b0 == 198 && (b1 == 18 || b1 == 19) => "benchmarking (198.18.0.0/15)",
        _ if a.is_documentation() => "documentation",
        _ if a.is_multicast() => "multicast",
        _ if b0 >= 240 => "reserved (240.0.0.0/4)",
        _ if b0 == 192 && b1 == 0 && a.octets()[2] == 0 => "IETF protocol assignments",
        _ => return None,
    })
}

fn special_v6(a: Ipv6Addr) -> Option<&'static str> {
    let s0 = a.segments()[0];
    Some(match () {
        _ if a.is_loopback() => "loopback",
        _ if a.is_unspecified() => "unspecified",
        _ if (s0 & 0xfe00) == 0xfc00 => "unique local (fc00::/7)",
        _ if (s0 & 0xffc0) == 0xfe80 => "link-local",
        _ if a.is_multicast() => "multicast",
        _ if s0 == 0x2001 && a.segments()[1] == 0x0db8 => "documentation",
        _ if s0 == 0x0064 && a.segments()[1] == 0xff9b => "IPv4/IPv6 translation",
        _ => return None,
    })
}

/// The operator's allow list, and the check made with it.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<Cidr>,
}

impl Guard {
    /// A guard allowing the special ranges `allow` names (CIDR text).
    pub fn new(allow: &[String]) -> Result<Guard, String> {
        let allow = allow
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<Cidr>, String>>()?;
        Ok(Guard { allow })
    }

    /// Whether the bridge may connect to `ip`; why not if not.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let Some(range) = special_range(ip) else {
            return Ok(());
        };
        let link_local = range == "link-local";
        let allowed = self
            .allow
            .iter()
            .any(|c| c.contains(ip) && (!link_local || c.within_link_local()));
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "{ip} is a {range} address, which the bridge does not connect to unless \
                 [outbound] allow_networks names it"
            ))
        }
    }
}

impl Guard {
    /// Checks the host of `url` when it is an address written out; a name is
    /// checked on what it resolves to when connecting.
    pub fn check_url_host(&self, url: &url::Url) -> Result<(), String> {
        match url.host() {
            Some(url::Host::Ipv4(a)) => self.check(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => self.check(IpAddr::V6(a)),
            _ => Ok(()),
        }
    }

    /// An HTTP client whose every connection, redirects included, is
    /// checked: names through a resolver that drops refused addresses,
    /// addresses written in a redirect's URL by the redirect policy, and at
    /// most `max_redirects` of them.
    pub fn http_client(
        self: &Arc<Self>,
        timeout: std::time::Duration,
        max_redirects: usize,
    ) -> reqwest::Result<reqwest::Client> {
        // reqwest's TLS needs a process-wide crypto provider; the first
        // caller installs it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let guard = self.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                let why = format!("more than {max_redirects} redirects ([outbound] max_redirects)");
                return attempt.error(why);
            }
            match guard.check_url_host(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(format!("redirect refused: {why}")),
            }
        });
        reqwest::Client::builder()
            .timeout(timeout)
            .redirect(policy)
            .dns_resolver(GuardedResolver(self.clone()))
            .build()
    }
}

/// A DNS resolver that keeps only the addresses the guard allows, and fails
/// with the guard's reason when none is left.
struct GuardedResolver(Arc<Guard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<std::net::SocketAddr> = all
                .into_iter()
                .filter(|a| match guard.check(a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| format!("{host} has no address"));
                return Err(format!("{host}: {why}").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_refused_unless_allowed() {
        let g = Guard::new(&["127.0.0.0/8".into(), "::1/128".into()]).unwrap();
        for ok in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "8.8.8.8",
            "2606:4700::1111",
        ] {
            assert!(g.check(ip(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "169.254.169.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::",
        ] {
            let e = g.check(ip(bad)).unwrap_err();
            assert!(e.contains("allow_networks"), "{bad}: {e}");
        }
        assert!(Guard::default().check(ip("127.0.0.1")).is_err());
    }

    #[test]
    fn link_local_needs_naming_explicitly() {
        let wide = Guard::new(&["0.0.0.0/0".into(), "::/0".into()]).unwrap();
        assert!(wide.check(ip("10.0.0.1")).is_ok());
        assert!(wide.check(ip("169.254.169.254")).is_err());
        assert!(wide.check(ip("fe80::1")).is_err());
        let named = Guard::new(&["169.254.169.254/32".into()]).unwrap();
        assert!(named.check(ip("169.254.169.254")).is_ok());
        assert!(named.check(ip("169.254.0.1")).is_err());
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.0.1")) && !c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")));
        let c: Cidr = "fd00::/8".parse().unwrap();
        assert!(c.contains(ip("fd12::1")) && !c.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten/8".parse::<Cidr>().is_err());
        assert_eq!(
            "1.2.3.4".parse::<Cidr>().unwrap(),
            "1.2.3.4/32".parse().unwrap()
        );
    }

    /// A one-route HTTP server on loopback: every request is answered with
    /// `answer(n)`, n counting requests from 0.
    async fn server(
        answer: fn(u16, usize) -> String,
    ) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer(port, n).as_bytes()).await;
            }
        });
        (port, hits)
    }

    fn redirect(to: &str) -> String {
        format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    fn error_chain(e: &reqwest::Error) -> String {
        let mut why = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        why
    }

    #[tokio::test]
    async fn http_requests_are_guarded_through_redirects_and_dns() {
        let loopback = Arc::new(Guard::new(&["127.0.0.0/8".into()]).unwrap());
        let timeout = std::time::Duration::from_secs(5);

        // A redirect into the metadata service is refused, not followed.
        let (port, _) = server(|_, _| redirect("http://169.254.169.254/latest/meta-data")).await;
        let client = loopback.http_client(timeout, 3).unwrap();
        let e = client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        let why = error_chain(&e);
        assert!(
            why.contains("redirect refused") && why.contains("link-local"),
            "{why}"
        );

        // Redirects are counted: the fourth is refused.
        let (port, hits) =
            server(|port, n| redirect(&format!("http://127.0.0.1:{port}/{n}"))).await;
        let e = client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert!(
            error_chain(&e).contains("more than 3 redirects"),
            "{}",
            error_chain(&e)
        );
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 4);

        // A name is checked on what it resolves to: with loopback not
        // allowed, `localhost` is refused and nothing is connected to.
        let (port, hits) =
            server(|_, _| "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".into()).await;
        let none = Arc::new(Guard::default());
        let client = none.http_client(timeout, 3).unwrap();
        let e = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert!(error_chain(&e).contains("loopback"), "{}", error_chain(&e));
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        // And allowed, it goes through.
        let ok = loopback.http_client(timeout, 3).unwrap();
        let r = ok.get(format!("http://localhost:{port}/")).send().await;
        assert!(r.is_ok(), "{r:?}");
    }
}
