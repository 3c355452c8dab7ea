//! The SIP port against floods and guessing, sans-I/O.
//!
//! - [`SourceLimiter`]: each source address gets a budget of new
//!   (out-of-dialog) requests, a token bucket, and a source whose REGISTERs
//!   fail authentication too often is locked out for a while. Requests over
//!   budget are dropped before the SIP stack makes any state for them. The
//!   table of sources is bounded: a flood from spoofed addresses shares one
//!   overflow budget instead of growing it. Trusted sources (trunks) are never
//!   limited.
//! - [`Nonces`]: digest nonces that carry their own issue time and a MAC, so
//!   the registrar keeps no state per challenge (a REGISTER flood cannot grow
//!   it) and a nonce expires by itself.
//!
//! Time comes in as milliseconds from the caller's clock.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::netguard::Cidr;

/// Limits, from `[sip]`.
#[derive(Debug, Clone)]
pub struct FloodLimits {
    /// New requests a source may send per second, sustained.
    pub requests_per_sec: u32,
    /// New requests a source may send at once.
    pub burst: u32,
    /// Failed REGISTER authentications within a minute that lock a source out.
    pub auth_failures: u32,
    /// How long a lockout lasts, in ms.
    pub lockout_ms: u64,
    /// Sources never limited (trunks, the operator's own networks).
    pub trusted: Vec<Cidr>,
    /// Sources remembered at once; past this, new ones share one budget.
    pub max_sources: usize,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Allow,
    /// Drop it: the source is over its request budget.
    OverBudget,
    /// Drop it: the source failed authentication too often.
    LockedOut,
}

#[derive(Debug, Clone)]
struct Source {
    /// Budget left, in thousandths of a request.
    milli: u64,
    last_ms: u64,
    failures: u32,
    failures_since_ms: u64,
    locked_until_ms: u64,
}

/// Per-source request budgets and authentication lockouts.
#[derive(Debug)]
pub struct SourceLimiter {
    limits: FloodLimits,
    sources: HashMap<IpAddr, Source>,
}

/// The key the overflow budget is kept under (no real source has it).
const OVERFLOW: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// Failures count within this window.
const FAILURE_WINDOW_MS: u64 = 60_000;

impl SourceLimiter {
    /// A limiter with no sources yet.
    pub fn new(limits: FloodLimits) -> Self {
        SourceLimiter {
            limits,
            sources: HashMap::new(),
        }
    }

    /// Whether `ip` is trusted (never limited).
    pub fn trusted(&self, ip: IpAddr) -> bool {
        self.limits.trusted.iter().any(|c| c.contains(ip))
    }

    /// A new (out-of-dialog) request from `ip` at `now_ms`.
    pub fn on_request(&mut self, ip: IpAddr, now_ms: u64) -> Verdict {
        if self.limits.requests_per_sec == 0 || self.trusted(ip) {
            return Verdict::Allow;
        }
        let limits = self.limits.clone();
        let s = self.source(ip, now_ms);
        if s.locked_until_ms > now_ms {
            return Verdict::LockedOut;
        }
        let full = u64::from(limits.burst.max(1)) * 1000;
        let refill = now_ms.saturating_sub(s.last_ms) * u64::from(limits.requests_per_sec);
        s.milli = s.milli.saturating_add(refill).min(full);
        s.last_ms = now_ms;
        if s.milli < 1000 {
            return Verdict::OverBudget;
        }
        s.milli -= 1000;
        Verdict::Allow
    }

    /// A REGISTER from `ip` failed authentication (wrong password, unknown
    /// user). Returns true when this failure locked the source out.
    pub fn on_auth_failure(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        if self.limits.auth_failures == 0 || self.trusted(ip) {
            return false;
        }
        let limits = self.limits.clone();
        let s = self.source(ip, now_ms);
        if now_ms.saturating_sub(s.failures_since_ms) > FAILURE_WINDOW_MS {
            s.failures = 0;
            s.failures_since_ms = now_ms;
        }
        s.failures += 1;
        if s.failures >= limits.auth_failures {
            s.failures = 0;
            s.locked_until_ms = now_ms + limits.lockout_ms;
            return true;
        }
        false
    }

    /// Sources remembered now.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The record of `ip`, made if need be. When the table is full, sources
    /// that hold nothing worth keeping (a full budget, no failures, no
    /// lockout) are forgotten; if it is still full, `ip` shares the overflow
    /// record.
    fn source(&mut self, ip: IpAddr, now_ms: u64) -> &mut Source {
        let full = u64::from(self.limits.burst.max(1)) * 1000;
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.limits.max_sources {
            let rate = u64::from(self.limits.requests_per_sec);
            self.sources.retain(|k, s| {
                *k == OVERFLOW
                    || s.locked_until_ms > now_ms
                    || (s.failures > 0
                        && now_ms.saturating_sub(s.failures_since_ms) <= FAILURE_WINDOW_MS)
                    || s.milli + now_ms.saturating_sub(s.last_ms) * rate < full
            });
        }
        let key = if self.sources.contains_key(&ip) || self.sources.len() < self.limits.max_sources
        {
            ip
        } else {
            OVERFLOW
        };
        self.sources.entry(key).or_insert(Source {
            milli: full,
            last_ms: now_ms,
            failures: 0,
            failures_since_ms: now_ms,
            locked_until_ms: 0,
        })
    }
}

/// Whether a nonce can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours and fresh.
    Fresh,
    /// Ours but expired: challenge again with `stale=true`.
    Stale,
    /// Not ours (forged, altered or garbage).
    Invalid,
}

/// Stateless digest nonces: the issue time in ms and a MAC over it.
pub struct Nonces {
    key: [u8; 32],
    lifetime_ms: u64,
}

impl Nonces {
    /// Nonces under `key` (random per process) that last `lifetime_ms`.
    pub fn new(key: [u8; 32], lifetime_ms: u64) -> Self {
        Nonces { key, lifetime_ms }
    }

    fn mac(&self, issued_ms: u64) -> [u8; 16] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(&issued_ms.to_be_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// A nonce issued at `now_ms`.
    pub fn issue(&self, now_ms: u64) -> String {
        format!("{:016x}{}", now_ms, hex::encode(self.mac(now_ms)))
    }

    /// Whether `nonce` is one of ours, and fresh at `now_ms`.
    pub fn check(&self, nonce: &str, now_ms: u64) -> NonceCheck {
        if nonce.len() != 48 || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let (time, mac) = nonce.split_at(16);
        let (Ok(issued), Ok(mac)) = (u64::from_str_radix(time, 16), hex::decode(mac)) else {
            return NonceCheck::Invalid;
        };
        // Constant-time comparison: the MAC check says nothing about how
        // much of a guess was right.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(&issued.to_be_bytes());
        if m.verify_truncated_left(&mac).is_err() {
            return NonceCheck::Invalid;
        }
        if issued > now_ms || now_ms - issued > self.lifetime_ms {
            return NonceCheck::Stale;
        }
        NonceCheck::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> FloodLimits {
        FloodLimits {
            requests_per_sec: 10,
            burst: 20,
            auth_failures: 5,
            lockout_ms: 300_000,
            trusted: vec!["192.0.2.0/24".parse().unwrap()],
            max_sources: 100,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_flooding_source_gets_its_budget_and_no_more() {
        let mut l = SourceLimiter::new(limits());
        let a = ip("203.0.113.1");
        let allowed = (0..1000)
            .filter(|_| l.on_request(a, 0) == Verdict::Allow)
            .count();
        assert_eq!(allowed, 20, "the burst");
        // A second later, 10 more.
        let allowed = (0..1000)
            .filter(|_| l.on_request(a, 1000) == Verdict::Allow)
            .count();
        assert_eq!(allowed, 10);
        // Another source is not affected, nor a trusted one.
        assert_eq!(l.on_request(ip("203.0.113.2"), 1000), Verdict::Allow);
        assert!((0..1000).all(|_| l.on_request(ip("192.0.2.7"), 1000) == Verdict::Allow));
        // A steady 10 a second is always allowed.
        for t in 0..100 {
            assert_eq!(l.on_request(a, 3000 + t * 100), Verdict::Allow);
        }
    }

    #[test]
    fn guessing_passwords_locks_the_source_out() {
        let mut l = SourceLimiter::new(limits());
        let a = ip("203.0.113.9");
        for _ in 0..4 {
            assert!(!l.on_auth_failure(a, 0));
        }
        assert!(l.on_auth_failure(a, 0), "the fifth failure locks");
        assert_eq!(l.on_request(a, 1), Verdict::LockedOut);
        assert_eq!(l.on_request(a, 299_999), Verdict::LockedOut);
        assert_eq!(l.on_request(a, 300_001), Verdict::Allow);
        // Failures spread over more than a minute do not add up.
        let b = ip("203.0.113.10");
        for k in 0..20 {
            assert!(!l.on_auth_failure(b, k * 61_000));
        }
        // Trusted sources are never locked out.
        for _ in 0..20 {
            assert!(!l.on_auth_failure(ip("192.0.2.1"), 0));
        }
    }

    #[test]
    fn spoofed_sources_cannot_grow_the_table() {
        let mut l = SourceLimiter::new(limits());
        let mut allowed = 0;
        for n in 0..100_000u32 {
            let spoofed = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            if l.on_request(spoofed, 0) == Verdict::Allow {
                allowed += 1;
            }
        }
        // At most 100 sources, and the shared overflow record.
        assert!(l.len() <= 101, "{}", l.len());
        // The first 100 had their own budgets, the rest shared one burst.
        assert_eq!(allowed, 100 + 20);
        // Once the flood's budgets have refilled, new sources get their own.
        assert_eq!(l.on_request(ip("203.0.113.50"), 10_000), Verdict::Allow);
    }

    #[test]
    fn nonces_are_checked_and_expire() {
        let n = Nonces::new([7; 32], 300_000);
        let nonce = n.issue(1_000);
        assert_eq!(n.check(&nonce, 1_000), NonceCheck::Fresh);
        assert_eq!(n.check(&nonce, 301_000), NonceCheck::Fresh);
        assert_eq!(n.check(&nonce, 301_001), NonceCheck::Stale);
        // Altered time, altered MAC, another key, garbage: not ours.
        let later = format!("{:016x}{}", 2_000, &nonce[16..]);
        assert_eq!(n.check(&later, 2_000), NonceCheck::Invalid);
        let mut bad = nonce.clone().into_bytes();
        bad[47] = if bad[47] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            n.check(std::str::from_utf8(&bad).unwrap(), 1_000),
            NonceCheck::Invalid
        );
        assert_eq!(
            Nonces::new([8; 32], 300_000).check(&nonce, 1_000),
            NonceCheck::Invalid
        );
        for junk in ["", "abc", &"z".repeat(48), &"é".repeat(24)] {
            assert_eq!(n.check(junk, 1_000), NonceCheck::Invalid);
        }
    }
}
