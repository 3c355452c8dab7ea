//! The bridge's configuration: a TOML file (`--config`), every key optional.
//! See `bridge/config.example.toml` for a documented example.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything the bridge reads from its config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Calls: timeouts and caller ID.
    pub calls: CallsConfig,
    /// Bot WebSocket sessions.
    pub bot: BotConfig,
    /// Which networks outbound requests may reach.
    pub outbound: OutboundConfig,
    /// The simulated carrier's extra virtual phones.
    pub carrier: CarrierConfig,
    /// Where recording URLs point.
    pub server: ServerConfig,
    /// The SIP user agent: transports, RTP ports, trunks, extensions.
    pub sip: SipConfig,
    /// Outbound routes by number prefix (longest wins). Numbers no route
    /// matches go to the simulated carrier.
    pub routes: Vec<RouteConfig>,
    /// Our DIDs: who takes an inbound call to each.
    pub dids: Vec<DidConfig>,
    /// Flows (IVR dial plans, DialStack's `DialPlan` shape plus our `bot`
    /// node) a bot can hand its caller to with `session.flow_transfer`. They
    /// are stored at start-up, beside any the store already holds.
    pub flows: Vec<crate::flow::DialPlan>,
    /// Business-hours schedules the flows' `schedule` nodes name.
    pub schedules: Vec<crate::flow::Schedule>,
    /// The audio library: WAV files (any rate, mono or stereo) by id, for the
    /// flows' menus and clips and for `prompt:` fallbacks.
    pub clips: Vec<crate::flow::AudioClip>,
}

/// SIP settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// UDP and TCP listen address (the `--sip` flag overrides it).
    pub listen: std::net::SocketAddr,
    /// The address written in SDP and Contact (default: the listen address).
    pub public_ip: Option<std::net::IpAddr>,
    /// First RTP port (even ports are used).
    pub rtp_port_min: u16,
    /// Last RTP port.
    pub rtp_port_max: u16,
    /// Starting delay of the jitter buffer between two bridged phones, in ms
    /// (it adapts between 40 and 200). Audio for a bot is not delayed: it goes
    /// out as it arrives.
    pub jitter_ms: u32,
    /// Realm of the registrar's digest challenges.
    pub realm: String,
    /// Trunks calls can be routed to.
    pub trunks: Vec<TrunkConfig>,
    /// Extensions that may REGISTER.
    pub extensions: Vec<ExtensionConfig>,
    /// New (out-of-dialog) requests a source address may send per second;
    /// past it they are dropped unanswered. 0 turns the limit off.
    pub requests_per_sec: u32,
    /// New requests a source may send at once.
    pub request_burst: u32,
    /// Failed REGISTER authentications from one source within a minute
    /// that lock it out. 0 turns lockouts off.
    pub auth_failures_before_lockout: u32,
    /// How long a lockout lasts.
    pub lockout_secs: u64,
    /// How long a digest nonce may be used.
    pub nonce_lifetime_secs: u64,
    /// Sources never limited, by CIDR (trunks' addresses always are).
    pub trusted_networks: Vec<String>,
    /// Extra CA certificates (PEM) trusted for `tls` trunks, beside the
    /// system's roots.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 5060)),
            public_ip: None,
            rtp_port_min: 20000,
            rtp_port_max: 20999,
            jitter_ms: 60,
            realm: "bridge".into(),
            trunks: Vec::new(),
            extensions: Vec::new(),
            requests_per_sec: 50,
            request_burst: 100,
            auth_failures_before_lockout: 10,
            lockout_secs: 300,
            nonce_lifetime_secs: 300,
            trusted_networks: Vec::new(),
            tls_ca_file: None,
        }
    }
}

/// A SIP trunk (a carrier or PBX we send calls to).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Name routes refer to.
    pub name: String,
    /// Host name or IP address.
    pub host: String,
    /// Port.
    #[serde(default = "default_sip_port")]
    pub port: u16,
    /// `udp`, `tcp` or `tls` (SIP over TLS; give the port, usually 5061).
    #[serde(default = "default_transport")]
    pub transport: String,
    /// Domain of our From URI (default: the trunk host).
    pub from_domain: Option<String>,
    /// Digest username, if the trunk challenges.
    pub username: Option<String>,
    /// Digest password.
    pub password: Option<String>,
    /// Caller ID presented on this trunk (default: `calls.caller_id`).
    pub caller_id: Option<String>,
}

fn default_sip_port() -> u16 {
    5060
}
fn default_transport() -> String {
    "udp".into()
}

/// A SIP extension (an agent's phone) allowed to REGISTER.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionConfig {
    /// The extension number (also the digest username).
    pub number: String,
    /// Its digest password.
    pub password: String,
    /// Numbers rung together with the extension's registered phones when a
    /// DID or a bot's `session.transfer_extension` rings it, e.g. a mobile.
    #[serde(default)]
    pub also_ring: Vec<String>,
}

/// An outbound route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Numbers starting with this.
    pub prefix: String,
    /// A trunk name, or `sim` for the simulated carrier.
    pub trunk: String,
}

/// One of our DIDs: exactly one of `bot_url`, `config_api` or `extension`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DidConfig {
    /// The number, as callers dial it (normalised, e.g. `+15550001000`).
    pub number: String,
    /// A fixed bot that takes every call.
    pub bot_url: Option<String>,
    /// Headers sent to the fixed bot.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// A URL the bridge POSTs the call to, whose answer names the bot.
    pub config_api: Option<String>,
    /// How long to wait for the CONFIG_API.
    #[serde(default = "default_config_api_timeout")]
    pub config_api_timeout_ms: u64,
    /// Ring this registered extension instead of a bot.
    pub extension: Option<String>,
    /// Where the call goes if its bot is lost; overrides `[calls] fallback`.
    pub fallback: Option<Fallback>,
}

/// Where a call goes when its bot is lost mid-call (the socket closed or went
/// dead without `session.hangup`): a number, `extension:NNN`, `flow:ID` (a
/// flow of `[[flows]]`) or `prompt:CLIP` (a clip of `[[clips]]` played
/// before the call ends).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Fallback {
    /// A number, routed like any transfer target.
    Number(String),
    /// A registered extension.
    Extension(String),
    /// A flow, by id.
    Flow(String),
    /// A clip played to the caller, who is then hung up on.
    Prompt(String),
}

impl TryFrom<String> for Fallback {
    type Error = String;

    fn try_from(s: String) -> Result<Fallback, String> {
        let s = s.trim();
        for (prefix, make) in [
            ("extension:", Fallback::Extension as fn(String) -> Fallback),
            ("flow:", Fallback::Flow),
            ("prompt:", Fallback::Prompt),
        ] {
            if let Some(name) = s.strip_prefix(prefix) {
                let name = name.trim();
                if name.is_empty() {
                    return Err(format!("fallback {prefix:?} names nothing"));
                }
                return Ok(make(name.to_string()));
            }
        }
        let digits = s.strip_prefix('+').unwrap_or(s);
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "fallback {s:?} is not a number (+ and digits), extension:NNN, flow:ID or prompt:CLIP"
            ));
        }
        Ok(Fallback::Number(s.to_string()))
    }
}

fn default_config_api_timeout() -> u64 {
    3000
}

/// Limits and defaults for calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    /// How long an outbound call may ring before it ends as `no-answer`.
    pub ring_timeout_secs: u32,
    /// Longest a call may last; then it ends with reason `max_duration`.
    pub max_duration_secs: u32,
    /// The `from` number of outbound calls.
    pub caller_id: String,
    /// Ring seconds per transfer attempt when the bot's message gives no `timeout`.
    pub transfer_timeout_secs: u32,
    /// Where a call goes when its bot is lost mid-call (else the call ends).
    pub fallback: Option<Fallback>,
    /// A WAV file a caller on hold hears, looped (a warm transfer's
    /// briefing); any rate, mono or stereo. Without it: silence.
    pub hold_audio: Option<PathBuf>,
    /// The IANA time zone of schedules that name none (e.g. `America/New_York`).
    pub time_zone: String,
    /// Calls the bridge carries at once (placed, ringing or up; scheduled
    /// calls count from their time). Past it new calls are refused: API 503
    /// with `Retry-After`, SIP 503.
    pub max_calls: usize,
    /// New calls are refused the same way while the bridge's clock runs
    /// this late (the median wake-up of a 20 ms probe over the last second):
    /// the machine is out of CPU and every live call would suffer. 0: never.
    pub max_tick_lateness_ms: u64,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            ring_timeout_secs: 30,
            max_duration_secs: 3600,
            caller_id: "+15550100000".into(),
            transfer_timeout_secs: 30,
            fallback: None,
            hold_audio: None,
            time_zone: "UTC".into(),
            max_calls: 2000,
            max_tick_lateness_ms: 20,
        }
    }
}

/// Bot session settings (PROTOCOL.md section 4).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotConfig {
    /// Give up connecting to a bot after this long.
    pub connect_timeout_ms: u64,
    /// Send a WebSocket ping this often.
    pub ping_interval_secs: u64,
    /// A bot that has not answered a ping for this long is lost.
    pub pong_timeout_secs: u64,
    /// Largest accepted bot message.
    pub max_message_bytes: usize,
    /// Largest playout queue, in seconds of audio.
    pub max_playout_secs: u32,
    /// How long `session.hangup` waits for queued audio to play.
    pub hangup_drain_secs: u32,
    /// Allow plain `ws://` to hosts other than loopback.
    pub allow_insecure_ws: bool,
    /// Extra CA certificates (PEM) trusted for `wss://`, beside the web PKI roots.
    pub extra_ca_file: Option<PathBuf>,
    /// `wss://` hosts whose certificate is not verified at all (TLS still
    /// encrypts). For a lab bot with a self-signed certificate; prefer a pin.
    pub insecure_hosts: Vec<String>,
    /// `wss://` hosts whose certificate must be one of these, by SHA-256 of
    /// the certificate (`sha256/` + base64, or hex), instead of a CA's word.
    pub pinned_certs: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            connect_timeout_ms: 5000,
            ping_interval_secs: 15,
            pong_timeout_secs: 30,
            max_message_bytes: protocol::MAX_MESSAGE_BYTES,
            max_playout_secs: 60,
            hangup_drain_secs: 5,
            allow_insecure_ws: false,
            extra_ca_file: None,
            insecure_hosts: Vec::new(),
            pinned_certs: Default::default(),
        }
    }
}

/// Where the bridge may connect on someone else's say-so: bot URLs (from API
/// callers, CONFIG_APIs, bots) and CONFIG_API requests and their redirects.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Special address ranges (loopback, private, link-local, reserved) that
    /// may be connected to, by CIDR; addresses outside them are always
    /// allowed. Checked on the address connected to, after DNS. Link-local
    /// (169.254.169.254, cloud metadata) only by a CIDR inside it.
    pub allow_networks: Vec<String>,
    /// Redirects a CONFIG_API request may follow (each one checked).
    pub max_redirects: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            allow_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            max_redirects: 3,
        }
    }
}

/// Extra virtual phones, matched by number prefix before the built-in ones.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CarrierConfig {
    /// The phones, longest matching prefix wins.
    pub phones: Vec<PhoneConfig>,
}

/// How a configured virtual phone behaves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneConfig {
    /// Numbers starting with this (after normalisation, e.g. `+9996`).
    pub prefix: String,
    /// `answer`, `busy`, `no-answer` or `fail`.
    #[serde(default = "default_outcome")]
    pub outcome: String,
    /// Ringing time before the outcome.
    #[serde(default = "default_ring_ms")]
    pub ring_ms: u32,
    /// What the phone says after answering: `speech` (the built-in sample),
    /// `silence`, or a path to a 16-bit 8 kHz mono WAV file.
    #[serde(default = "default_play")]
    pub play: String,
    /// Delay after answer before it speaks.
    #[serde(default = "default_speak_after")]
    pub speak_after_ms: u32,
    /// Keys to press after answering, one every `press_interval_ms`.
    #[serde(default)]
    pub press: String,
    /// Delay after answer before the first key.
    #[serde(default = "default_press_after")]
    pub press_after_ms: u32,
    /// Time between key presses.
    #[serde(default = "default_press_interval")]
    pub press_interval_ms: u32,
    /// Hang up this long after answering (else stay until the other side ends).
    pub hangup_after_ms: Option<u32>,
}

fn default_outcome() -> String {
    "answer".into()
}
fn default_ring_ms() -> u32 {
    500
}
fn default_play() -> String {
    "silence".into()
}
fn default_speak_after() -> u32 {
    200
}
fn default_press_after() -> u32 {
    1000
}
fn default_press_interval() -> u32 {
    300
}

/// How the bridge names itself in URLs it hands out, and how it stops.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Base of `recording_url` (e.g. `https://bridge.example.com`); default
    /// `http://` + the HTTP listen address.
    pub public_url: Option<String>,
    /// On SIGTERM or Ctrl-C: how long live calls may go on (new ones are
    /// refused) before they are ended with reason `shutdown`.
    pub drain_secs: u64,
    /// Serve the API over HTTPS with this PEM certificate chain...
    pub tls_cert_file: Option<PathBuf>,
    /// ...and this PEM private key (both, or neither).
    pub tls_key_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            public_url: None,
            drain_secs: 5,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is wrong.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its place in the file.
        message: String,
    },
}

impl Config {
    /// The config as `check-config` prints it: passwords, the headers sent to
    /// bots, and the credentials and query strings of every URL (where keys
    /// travel) replaced, so the output can be pasted into a ticket.
    pub fn redacted(&self) -> Config {
        const HIDDEN: &str = "<redacted>";
        let url = |u: &mut String| *u = crate::botlink::redact_url(u);
        let mut c = self.clone();
        for t in &mut c.sip.trunks {
            if t.password.is_some() {
                t.password = Some(HIDDEN.into());
            }
        }
        for e in &mut c.sip.extensions {
            e.password = HIDDEN.into();
        }
        for d in &mut c.dids {
            d.bot_url.as_mut().map(url);
            d.config_api.as_mut().map(url);
            for v in d.headers.values_mut() {
                *v = HIDDEN.into();
            }
        }
        for f in &mut c.flows {
            for n in &mut f.nodes {
                if let crate::flow::NodeKind::Bot(b) = &mut n.kind {
                    url(&mut b.wss_url);
                }
            }
        }
        c
    }

    /// Every fallback the config names: the DIDs' and `[calls] fallback`.
    pub fn fallbacks(&self) -> impl Iterator<Item = &Fallback> {
        self.dids
            .iter()
            .filter_map(|d| d.fallback.as_ref())
            .chain(self.calls.fallback.as_ref())
    }

    /// Reads and checks a TOML config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text and checks the values.
    pub fn parse(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        let guard = crate::netguard::Guard::new(&cfg.outbound.allow_networks)
            .map_err(|e| format!("outbound.allow_networks: {e}"))?;
        for (host, pins) in &cfg.bot.pinned_certs {
            for p in pins {
                crate::botlink::tls::parse_pin(p)
                    .map_err(|e| format!("bot.pinned_certs {host}: {e}"))?;
            }
        }
        if cfg.server.tls_cert_file.is_some() != cfg.server.tls_key_file.is_some() {
            return Err(
                "server: give both tls_cert_file and tls_key_file for HTTPS, or neither".into(),
            );
        }
        for n in &cfg.sip.trusted_networks {
            n.parse::<crate::netguard::Cidr>()
                .map_err(|e| format!("sip.trusted_networks: {e}"))?;
        }
        for p in &cfg.carrier.phones {
            if !matches!(p.outcome.as_str(), "answer" | "busy" | "no-answer" | "fail") {
                return Err(format!(
                    "carrier phone {}: outcome {:?} is not one of answer, busy, no-answer, fail",
                    p.prefix, p.outcome
                ));
            }
            if let Some(bad) = p.press.chars().find(|c| !protocol::is_valid_dtmf(*c)) {
                return Err(format!(
                    "carrier phone {}: press has {bad:?}, not a DTMF key (0-9 * # A-D)",
                    p.prefix
                ));
            }
        }
        let trunks: Vec<&str> = cfg.sip.trunks.iter().map(|t| t.name.as_str()).collect();
        for t in &cfg.sip.trunks {
            if !matches!(t.transport.as_str(), "udp" | "tcp" | "tls") {
                return Err(format!(
                    "trunk {}: transport {:?} is not udp, tcp or tls",
                    t.name, t.transport
                ));
            }
        }
        for r in &cfg.routes {
            if r.trunk != "sim" && !trunks.contains(&r.trunk.as_str()) {
                return Err(format!(
                    "route {}: no trunk named {:?} (trunks: {}; or \"sim\")",
                    r.prefix,
                    r.trunk,
                    trunks.join(", ")
                ));
            }
        }
        for e in &cfg.sip.extensions {
            for n in &e.also_ring {
                let digits = n.strip_prefix('+').unwrap_or(n);
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    return Err(format!(
                        "extension {}: also_ring {n:?} is not a number (+ and digits)",
                        e.number
                    ));
                }
            }
        }
        crate::flow::schedule::parse_tz(&cfg.calls.time_zone)
            .map_err(|e| format!("[calls] time_zone: {e}"))?;
        for f in cfg.fallbacks() {
            if let Fallback::Prompt(c) = f {
                if !cfg.clips.iter().any(|k| &k.id == c) {
                    return Err(format!("fallback prompt:{c}: no clip {c:?} in [[clips]]"));
                }
            }
        }
        for d in &cfg.dids {
            let targets = [
                d.bot_url.is_some(),
                d.config_api.is_some(),
                d.extension.is_some(),
            ];
            if targets.iter().filter(|t| **t).count() != 1 {
                return Err(format!(
                    "did {}: give exactly one of bot_url, config_api, extension",
                    d.number
                ));
            }
            // An address the bridge would refuse to connect to is a start-up
            // error, not a failed call later.
            for (key, u) in [("bot_url", &d.bot_url), ("config_api", &d.config_api)] {
                let Some(u) = u.as_deref().and_then(|u| url::Url::parse(u).ok()) else {
                    continue;
                };
                guard
                    .check_url_host(&u)
                    .map_err(|e| format!("did {}: {key}: {e}", d.number))?;
            }
            if let Some(ext) = &d.extension {
                if !cfg.sip.extensions.iter().any(|e| &e.number == ext) {
                    return Err(format!(
                        "did {}: no extension {ext:?} in [[sip.extensions]]",
                        d.number
                    ));
                }
            }
        }
        if cfg.sip.rtp_port_min > cfg.sip.rtp_port_max {
            return Err(format!(
                "sip: rtp_port_min {} is above rtp_port_max {}",
                cfg.sip.rtp_port_min, cfg.sip.rtp_port_max
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../config.example.toml");
        let cfg = Config::parse(text).unwrap();
        assert_eq!(cfg.carrier.phones[0].prefix, "+9996");
    }

    #[test]
    fn a_did_pointing_into_a_refused_range_is_an_error() {
        let did = |url: &str| format!("[[dids]]\nnumber = \"+15550001000\"\nbot_url = \"{url}\"\n");
        let e = Config::parse(&did("wss://10.0.0.5/bot")).unwrap_err();
        assert!(
            e.contains("did +15550001000: bot_url") && e.contains("private"),
            "{e}"
        );
        let allowed = format!(
            "[outbound]\nallow_networks = [\"10.0.0.0/8\"]\n{}",
            did("wss://10.0.0.5/bot")
        );
        assert!(Config::parse(&allowed).is_ok());
        assert!(Config::parse(&did("ws://127.0.0.1:9000/bot")).is_ok());
        let e = Config::parse("[outbound]\nallow_networks = [\"10.0.0.0/40\"]").unwrap_err();
        assert!(e.contains("outbound.allow_networks"), "{e}");
    }

    #[test]
    fn empty_config_is_the_defaults() {
        let cfg = Config::parse("").unwrap();
        assert_eq!(cfg.calls.ring_timeout_secs, 30);
        assert_eq!(cfg.bot.connect_timeout_ms, 5000);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::parse("[calls]\nring_timeout = 3\n").unwrap_err();
        assert!(e.contains("ring_timeout"), "{e}");
        let e = Config::parse("[[carrier.phones]]\nprefix = \"+9997\"\noutcome = \"maybe\"\n")
            .unwrap_err();
        assert!(e.contains("maybe"), "{e}");
    }

    #[test]
    fn a_fallback_is_a_number_an_extension_a_flow_or_a_prompt() {
        let cfg = Config::parse("[calls]\nfallback = \"+15551230000\"\n").unwrap();
        assert_eq!(
            cfg.calls.fallback,
            Some(Fallback::Number("+15551230000".into()))
        );
        let cfg = Config::parse("[calls]\nfallback = \"extension:101\"\n").unwrap();
        assert_eq!(cfg.calls.fallback, Some(Fallback::Extension("101".into())));
        let cfg = Config::parse("[calls]\nfallback = \"flow:after_hours\"\n").unwrap();
        assert_eq!(
            cfg.calls.fallback,
            Some(Fallback::Flow("after_hours".into()))
        );
        let e = Config::parse("[calls]\nfallback = \"prompt:sorry\"\n").unwrap_err();
        assert!(e.contains("no clip \"sorry\""), "{e}");
        let e = Config::parse("[calls]\nfallback = \"flow: \"\n").unwrap_err();
        assert!(e.contains("names nothing"), "{e}");
        let e = Config::parse("[calls]\ntime_zone = \"Mars/Olympus\"\n").unwrap_err();
        assert!(e.contains("time_zone"), "{e}");
        let e = Config::parse("[calls]\nfallback = \"the front desk\"\n").unwrap_err();
        assert!(e.to_string().contains("is not a number"), "{e}");
    }
}
