//! SDP (RFC 4566) for one G.711 audio stream, and the offer/answer choices of
//! RFC 3264.
//!
//! We speak PCMU (payload type 0), PCMA (8) and `telephone-event/8000` (RFC 4733)
//! in 20 ms packets over plain RTP/AVP. [`parse`] reads what a phone or trunk sends,
//! tolerating CRLF or LF line ends and lines we do not know; [`offer`] and
//! [`answer`] write ours; the [`Negotiated`] result configures
//! [`RtpStream`](crate::rtpstream::RtpStream).
//!
//! An offer with nothing we can speak gives an error for which
//! [`SdpError::is_not_acceptable`] is true: the SIP layer answers `488 Not
//! Acceptable Here`.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use bridge::sdp;
//!
//! let offer = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
//!              m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
//! let remote = sdp::parse(offer).unwrap();
//! let me = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
//! let (answer, neg) = sdp::answer(&remote, me, 20000, 7).unwrap();
//! assert_eq!(neg.payload_type, 8); // the offerer's first choice that we support
//! assert_eq!(neg.telephone_event, Some(101));
//! assert!(answer.contains("m=audio 20000 RTP/AVP 8 101\r\n"));
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use codecs::g711::Law;

/// The payload type we offer for `telephone-event/8000`.
pub const TELEPHONE_EVENT_PT: u8 = 101;

/// The packet time we send and ask for, in milliseconds.
pub const PTIME_MS: u32 = 20;

/// Why an SDP body cannot be used.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// The body has no `v=` line: it is not SDP.
    #[error("not an SDP body: no \"v=\" line")]
    NotSdp,
    /// A line we need (`c=`, `m=`) could not be read.
    #[error("SDP line {line} ({text:?}): {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The line, cut to 80 characters.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No `m=audio` line with a non-zero port.
    #[error("SDP has no active audio stream")]
    NoAudio,
    /// The audio stream offers no codec we speak.
    #[error("no common codec: the audio stream offers {offered}; we speak PCMU and PCMA")]
    NoCommonCodec {
        /// What was offered, e.g. `"G722/8000, opus/48000"`.
        offered: String,
    },
    /// The audio stream uses a transport other than plain RTP (e.g. SRTP).
    #[error("audio transport {0:?} is not supported; we speak RTP/AVP")]
    UnsupportedTransport(String),
    /// Neither the audio stream nor the session has a `c=` address.
    #[error("no connection address (c=) for the audio stream")]
    NoConnection,
}

impl SdpError {
    /// True when the SDP was readable but there is nothing in it we can do (no
    /// audio, no common codec, SRTP only): SIP answers `488 Not Acceptable Here`.
    /// False for unreadable bodies (`400 Bad Request` is the better answer).
    pub fn is_not_acceptable(&self) -> bool {
        matches!(
            self,
            SdpError::NoAudio | SdpError::NoCommonCodec { .. } | SdpError::UnsupportedTransport(_)
        )
    }
}

/// Media direction attribute (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// `a=sendrecv`, the default.
    #[default]
    SendRecv,
    /// `a=sendonly`: the side that wrote it only sends (e.g. puts us on hold).
    SendOnly,
    /// `a=recvonly`: the side that wrote it only receives.
    RecvOnly,
    /// `a=inactive`: no media either way.
    Inactive,
}

impl Direction {
    fn from_flags(sends: bool, receives: bool) -> Self {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Whether the side this direction describes sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side this direction describes receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The same stream seen from the other side (`sendonly` ↔ `recvonly`).
    pub fn reversed(self) -> Self {
        Direction::from_flags(self.receives(), self.sends())
    }

    /// What both allow.
    pub fn intersect(self, other: Direction) -> Self {
        Direction::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }

    /// The attribute name, e.g. `"sendrecv"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn parse(attr: &str) -> Option<Self> {
        Some(match attr {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
}

/// The parts of an SDP body that an audio call needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sdp {
    /// `o=` sess-id (0 if it is not a number).
    pub origin_session: u64,
    /// `o=` sess-version (0 if it is not a number); a re-INVITE with the same
    /// version carries no change.
    pub origin_version: u64,
    /// Session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// The first `m=audio` stream with a non-zero port.
    pub audio: Option<AudioMedia>,
    /// Every `m=` line in order; an answer has one line for each.
    pub media: Vec<MediaLine>,
}

/// One `m=` line of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLine {
    /// `audio`, `video`, `image`, ...
    pub kind: String,
    /// The port; 0 means the stream is rejected or disabled.
    pub port: u16,
    /// The transport, e.g. `RTP/AVP`.
    pub proto: String,
    /// The format list as written.
    pub formats: Vec<String>,
    /// The stream's details, for `audio` lines.
    pub audio: Option<AudioMedia>,
}

/// One audio stream (`m=audio` and its attributes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AudioMedia {
    /// RTP port.
    pub port: u16,
    /// Transport, e.g. `RTP/AVP`.
    pub proto: String,
    /// Payload types in the order of the `m=` line (the offerer's preference).
    pub payload_types: Vec<u8>,
    /// `a=rtpmap`: payload type, encoding name as written (e.g. `"PCMU"`), clock rate.
    pub rtpmap: Vec<(u8, String, u32)>,
    /// `a=fmtp`: payload type and its parameters, e.g. `(101, "0-16")`.
    pub fmtp: Vec<(u8, String)>,
    /// `a=ptime` in milliseconds.
    pub ptime: Option<u32>,
    /// Direction of the stream as its writer sees it (media level, else session
    /// level, else `sendrecv`).
    pub direction: Direction,
    /// Media-level `c=` address.
    pub connection: Option<IpAddr>,
}

impl AudioMedia {
    /// Encoding name and clock rate of `pt`: from `a=rtpmap`, else the static
    /// payload types of RFC 3551 that phones send without one.
    pub fn codec(&self, pt: u8) -> Option<(&str, u32)> {
        if let Some((_, name, clock)) = self.rtpmap.iter().find(|(p, _, _)| *p == pt) {
            return Some((name.as_str(), *clock));
        }
        let name = match pt {
            0 => "PCMU",
            3 => "GSM",
            4 => "G723",
            8 => "PCMA",
            9 => "G722",
            18 => "G729",
            _ => return None,
        };
        Some((name, 8000))
    }

    /// The G.711 law of `pt`, if it is PCMU or PCMA at 8000 Hz.
    pub fn law(&self, pt: u8) -> Option<Law> {
        let (name, clock) = self.codec(pt)?;
        if clock != 8000 {
            return None;
        }
        [Law::Ulaw, Law::Alaw]
            .into_iter()
            .find(|law| name.eq_ignore_ascii_case(law.encoding_name()))
    }

    /// The first payload type mapped to `telephone-event/8000`.
    pub fn telephone_event(&self) -> Option<u8> {
        self.payload_types.iter().copied().find(|&pt| {
            matches!(self.codec(pt), Some((name, 8000)) if name.eq_ignore_ascii_case("telephone-event"))
        })
    }

    fn describe_codecs(&self) -> String {
        let mut out = String::new();
        for &pt in &self.payload_types {
            if !out.is_empty() {
                out.push_str(", ");
            }
            match self.codec(pt) {
                Some((name, clock)) => {
                    let _ = write!(out, "{name}/{clock}");
                }
                None => {
                    let _ = write!(out, "payload type {pt}");
                }
            }
        }
        if out.is_empty() {
            out.push_str("no payload types");
        }
        out
    }
}

/// The outcome of offer/answer: how to run the RTP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The G.711 law we send and expect.
    pub law: Law,
    /// Its payload type (the number the far end used for it).
    pub payload_type: u8,
    /// The far end's `telephone-event/8000` payload type, if it takes RFC 4733.
    pub telephone_event: Option<u8>,
    /// Where the far end wants our RTP (until symmetric RTP learns better).
    pub remote: SocketAddr,
    /// The far end's `a=ptime`, or 20. We always send 20 ms packets.
    pub ptime_ms: u32,
    /// What we do: `sendrecv`, or less when the far end holds or is held.
    pub direction: Direction,
}

/// Our side of an offer or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// Address for `o=` and `c=`.
    pub ip: IpAddr,
    /// Our RTP port.
    pub port: u16,
    /// `o=` sess-id, fixed for the call.
    pub session_id: u64,
    /// `o=` sess-version: must grow each time our SDP changes (re-INVITE).
    pub session_version: u64,
    /// What we want to do (`sendonly` to put the far end on hold).
    pub direction: Direction,
}

impl Local {
    /// A `sendrecv` side with version equal to the session id.
    pub fn new(ip: IpAddr, port: u16, session_id: u64) -> Self {
        Local {
            ip,
            port,
            session_id,
            session_version: session_id,
            direction: Direction::SendRecv,
        }
    }
}

/// Parses an SDP body.
///
/// Tolerant of CRLF or LF, blank lines, unknown line types and attributes, and
/// numbers in `o=` that are not numbers. Strict about the lines a call needs: a
/// `c=` or `m=` that cannot be read is an error. Static payload types 0 and 8
/// are understood without `a=rtpmap`.
pub fn parse(text: &str) -> Result<Sdp, SdpError> {
    let mut sdp = Sdp::default();
    let mut saw_version = false;
    let mut session_direction = None;
    // Direction given at media level, for the line being read.
    let mut media_directions: Vec<Option<Direction>> = Vec::new();

    for (index, raw) in text.split('\n').enumerate() {
        let line = raw.trim_end_matches('\r').trim_end();
        let bad = |reason| SdpError::BadLine {
            line: index + 1,
            text: line.chars().take(80).collect(),
            reason,
        };
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        match kind {
            "v" => saw_version = true,
            "o" => {
                let mut fields = value.split_ascii_whitespace().skip(1);
                sdp.origin_session = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                sdp.origin_version = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            }
            "c" => {
                let ip = parse_connection(value)
                    .ok_or_else(|| bad("expected \"IN IP4 <address>\" or \"IN IP6 <address>\""))?;
                match sdp.media.last_mut() {
                    Some(m) => {
                        if let Some(a) = m.audio.as_mut() {
                            a.connection = Some(ip);
                        }
                    }
                    None => sdp.connection = Some(ip),
                }
            }
            "m" => {
                let m = parse_media(value)
                    .ok_or_else(|| bad("expected \"<media> <port> <proto> <formats>\""))?;
                sdp.media.push(m);
                media_directions.push(None);
            }
            "a" => {
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                if let Some(d) = Direction::parse(name) {
                    match media_directions.last_mut() {
                        Some(slot) => *slot = Some(d),
                        None => session_direction = Some(d),
                    }
                    continue;
                }
                if let Some(audio) = sdp.media.last_mut().and_then(|m| m.audio.as_mut()) {
                    audio_attribute(audio, name, arg);
                }
            }
            _ => {}
        }
    }
    if !saw_version {
        return Err(SdpError::NotSdp);
    }
    for (m, d) in sdp.media.iter_mut().zip(media_directions) {
        if let Some(a) = m.audio.as_mut() {
            a.direction = d.or(session_direction).unwrap_or_default();
        }
    }
    sdp.audio = sdp
        .media
        .iter()
        .filter(|m| m.port != 0)
        .find_map(|m| m.audio.clone());
    Ok(sdp)
}

fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut fields = value.split_ascii_whitespace();
    if fields.next() != Some("IN") {
        return None;
    }
    let addrtype = fields.next()?;
    // Multicast addresses carry "/ttl" and "/count"; we take the address.
    let addr = fields.next()?.split('/').next()?;
    let ip: IpAddr = addr.parse().ok()?;
    match (addrtype, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Some(ip),
        _ => None,
    }
}

fn parse_media(value: &str) -> Option<MediaLine> {
    let mut fields = value.split_ascii_whitespace();
    let kind = fields.next()?.to_string();
    // "<port>/<count>" asks for several ports; we use the first.
    let port = fields.next()?.split('/').next()?.parse().ok()?;
    let proto = fields.next()?.to_string();
    let formats: Vec<String> = fields.map(str::to_string).collect();
    let audio = (kind == "audio").then(|| AudioMedia {
        port,
        proto: proto.clone(),
        payload_types: formats.iter().filter_map(|f| f.parse().ok()).collect(),
        ..AudioMedia::default()
    });
    Some(MediaLine {
        kind,
        port,
        proto,
        formats,
        audio,
    })
}

fn audio_attribute(audio: &mut AudioMedia, name: &str, arg: &str) {
    match name {
        "rtpmap" => {
            let Some((pt, rest)) = arg.split_once(' ') else {
                return;
            };
            let mut parts = rest.trim().split('/');
            let (Ok(pt), Some(encoding), Some(Ok(clock))) = (
                pt.parse::<u8>(),
                parts.next(),
                parts.next().map(str::parse::<u32>),
            ) else {
                return;
            };
            audio.rtpmap.push((pt, encoding.to_string(), clock));
        }
        "fmtp" => {
            let Some((pt, params)) = arg.split_once(' ') else {
                return;
            };
            if let Ok(pt) = pt.parse() {
                audio.fmtp.push((pt, params.trim().to_string()));
            }
        }
        "ptime" => audio.ptime = arg.trim().parse().ok().filter(|&p| p > 0),
        _ => {}
    }
}

/// Checks one audio stream and reads what we would run on it.
fn negotiate(m: &AudioMedia, session: Option<IpAddr>) -> Result<Negotiated, SdpError> {
    if m.port == 0 {
        return Err(SdpError::NoAudio);
    }
    if !m.proto.eq_ignore_ascii_case("RTP/AVP") && !m.proto.eq_ignore_ascii_case("RTP/AVPF") {
        return Err(SdpError::UnsupportedTransport(m.proto.clone()));
    }
    let (payload_type, law) = m
        .payload_types
        .iter()
        .find_map(|&pt| m.law(pt).map(|law| (pt, law)))
        .ok_or_else(|| SdpError::NoCommonCodec {
            offered: m.describe_codecs(),
        })?;
    let ip = m.connection.or(session).ok_or(SdpError::NoConnection)?;
    Ok(Negotiated {
        law,
        payload_type,
        telephone_event: m.telephone_event(),
        remote: SocketAddr::new(ip, m.port),
        ptime_ms: m.ptime.unwrap_or(PTIME_MS),
        direction: m.direction.reversed(),
    })
}

fn write_session(out: &mut String, local: &Local) {
    let ip_kind = match local.ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    let _ = write!(
        out,
        "v=0\r\no=- {} {} IN {ip_kind} {ip}\r\ns=-\r\nc=IN {ip_kind} {ip}\r\nt=0 0\r\n",
        local.session_id,
        local.session_version,
        ip = local.ip,
    );
}

fn write_audio(out: &mut String, local: &Local, proto: &str, codecs: &[(u8, Law)], te: Option<u8>) {
    let _ = write!(out, "m=audio {} {proto}", local.port);
    for (pt, _) in codecs {
        let _ = write!(out, " {pt}");
    }
    if let Some(te) = te {
        let _ = write!(out, " {te}");
    }
    out.push_str("\r\n");
    for (pt, law) in codecs {
        let _ = write!(out, "a=rtpmap:{pt} {}/8000\r\n", law.encoding_name());
    }
    if let Some(te) = te {
        let _ = write!(
            out,
            "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
        );
    }
    let _ = write!(
        out,
        "a=ptime:{PTIME_MS}\r\na={}\r\n",
        local.direction.as_str()
    );
}

/// Our offer: PCMU (0), PCMA (8), `telephone-event/8000` (101, events 0-16),
/// `ptime:20`, `sendrecv`; `o=` version equal to `session_id`.
pub fn offer(local_ip: IpAddr, port: u16, session_id: u64) -> String {
    offer_with(&Local::new(local_ip, port, session_id))
}

/// Our offer with a chosen version and direction (re-INVITEs, hold).
pub fn offer_with(local: &Local) -> String {
    let mut out = String::with_capacity(256);
    write_session(&mut out, local);
    write_audio(
        &mut out,
        local,
        "RTP/AVP",
        &[(0, Law::Ulaw), (8, Law::Alaw)],
        Some(TELEPHONE_EVENT_PT),
    );
    out
}

/// Answers a remote offer: takes the first codec of the offer's order that we
/// support (PCMU or PCMA) and `telephone-event` if offered, and writes our
/// answer. `Err` with [`SdpError::is_not_acceptable`] true means SIP 488.
pub fn answer(
    remote: &Sdp,
    local_ip: IpAddr,
    port: u16,
    session_id: u64,
) -> Result<(String, Negotiated), SdpError> {
    answer_with(remote, &Local::new(local_ip, port, session_id))
}

/// [`answer`] with a chosen version and direction. The direction we answer is
/// what both `local.direction` and the offer allow.
///
/// Every `m=` line of the offer gets a line in the answer (RFC 3264 §6): the
/// first audio stream we can run is accepted, every other line is rejected with
/// port 0.
pub fn answer_with(remote: &Sdp, local: &Local) -> Result<(String, Negotiated), SdpError> {
    // A hand-built `Sdp` may have only `audio`; treat it as the one line.
    let single;
    let lines: &[MediaLine] = if remote.media.is_empty() {
        let audio = remote.audio.clone().ok_or(SdpError::NoAudio)?;
        single = [MediaLine {
            kind: "audio".into(),
            port: audio.port,
            proto: audio.proto.clone(),
            formats: audio.payload_types.iter().map(u8::to_string).collect(),
            audio: Some(audio),
        }];
        &single
    } else {
        &remote.media
    };

    let mut chosen = None;
    let mut first_error = None;
    for (i, line) in lines.iter().enumerate() {
        let Some(audio) = line.audio.as_ref().filter(|_| line.port != 0) else {
            continue;
        };
        match negotiate(audio, remote.connection) {
            Ok(neg) => {
                chosen = Some((i, neg));
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let Some((chosen_index, mut neg)) = chosen else {
        return Err(first_error.unwrap_or(SdpError::NoAudio));
    };
    neg.direction = neg.direction.intersect(local.direction);
    let ours = Local {
        direction: neg.direction,
        ..*local
    };

    let mut out = String::with_capacity(256);
    write_session(&mut out, &ours);
    for (i, line) in lines.iter().enumerate() {
        if i == chosen_index {
            write_audio(
                &mut out,
                &ours,
                &line.proto,
                &[(neg.payload_type, neg.law)],
                neg.telephone_event,
            );
        } else {
            let _ = write!(out, "m={} 0 {}", line.kind, line.proto);
            for f in &line.formats {
                let _ = write!(out, " {f}");
            }
            out.push_str("\r\n");
        }
    }
    Ok((out, neg))
}

/// Reads the far end's answer to our [`offer`].
pub fn negotiated_from_answer(answer: &Sdp) -> Result<Negotiated, SdpError> {
    let audio = answer.audio.as_ref().ok_or(SdpError::NoAudio)?;
    negotiate(audio, answer.connection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// What SIPp's `uac_pcap` scenario sends (its `[media_ip]`/`[media_port]`
    /// filled in): LF line ends as in the scenario file, A-law and events.
    const SIPP_OFFER: &str = "v=0\n\
        o=user1 53655765 2353687637 IN IP4 127.0.0.1\n\
        s=-\n\
        c=IN IP4 127.0.0.1\n\
        t=0 0\n\
        m=audio 6000 RTP/AVP 8 101\n\
        a=rtpmap:8 PCMA/8000\n\
        a=rtpmap:101 telephone-event/8000\n\
        a=fmtp:101 0-11,16\n";

    /// A baresip 3.x offer with its default audio codecs (G.722 first, then
    /// G.711 µ-law and A-law), CRLF line ends and attributes we do not use.
    const BARESIP_OFFER: &str = "v=0\r\n\
        o=- 3942611457 1786520170 IN IP4 192.168.1.20\r\n\
        s=-\r\n\
        c=IN IP4 192.168.1.20\r\n\
        t=0 0\r\n\
        a=tool:baresip 3.10.1\r\n\
        m=audio 10002 RTP/AVP 9 0 8 101\r\n\
        b=AS:64\r\n\
        a=rtpmap:9 G722/8000/1\r\n\
        a=rtpmap:0 PCMU/8000/1\r\n\
        a=rtpmap:8 PCMA/8000/1\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\n\
        a=rtcp-rsize\r\n\
        a=ptime:20\r\n\
        a=sendrecv\r\n\
        a=label:1\r\n\
        a=ssrc:1732004423 cname:a1f0c2de-7a5c\r\n";

    fn me() -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))
    }

    fn lines(text: &str) -> Vec<&str> {
        text.split("\r\n").filter(|l| !l.is_empty()).collect()
    }

    #[test]
    fn parses_sipp_offer() {
        let sdp = parse(SIPP_OFFER).unwrap();
        assert_eq!(sdp.origin_session, 53655765);
        assert_eq!(sdp.origin_version, 2353687637);
        assert_eq!(sdp.connection, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let audio = sdp.audio.unwrap();
        assert_eq!(audio.port, 6000);
        assert_eq!(audio.proto, "RTP/AVP");
        assert_eq!(audio.payload_types, [8, 101]);
        assert_eq!(
            audio.rtpmap,
            [
                (8, "PCMA".to_string(), 8000),
                (101, "telephone-event".to_string(), 8000)
            ]
        );
        assert_eq!(audio.fmtp, [(101, "0-11,16".to_string())]);
        assert_eq!(audio.ptime, None);
        assert_eq!(audio.direction, Direction::SendRecv);
        assert_eq!(audio.connection, None);
    }

    #[test]
    fn parses_baresip_offer() {
        let sdp = parse(BARESIP_OFFER).unwrap();
        assert_eq!(sdp.origin_session, 3942611457);
        let audio = sdp.audio.as_ref().unwrap();
        assert_eq!(audio.port, 10002);
        assert_eq!(audio.payload_types, [9, 0, 8, 101]);
        assert_eq!(audio.ptime, Some(20));
        assert_eq!(audio.codec(9), Some(("G722", 8000)));
        assert_eq!(audio.law(0), Some(Law::Ulaw));
        assert_eq!(audio.law(8), Some(Law::Alaw));
        assert_eq!(audio.law(9), None);
        assert_eq!(audio.telephone_event(), Some(101));
        assert_eq!(sdp.media.len(), 1);
    }

    #[test]
    fn answers_sipp_with_pcma_and_events() {
        let (text, neg) = answer(&parse(SIPP_OFFER).unwrap(), me(), 30000, 99).unwrap();
        assert_eq!(
            neg,
            Negotiated {
                law: Law::Alaw,
                payload_type: 8,
                telephone_event: Some(101),
                remote: "127.0.0.1:6000".parse().unwrap(),
                ptime_ms: 20,
                direction: Direction::SendRecv,
            }
        );
        assert_eq!(
            lines(&text),
            [
                "v=0",
                "o=- 99 99 IN IP4 10.1.2.3",
                "s=-",
                "c=IN IP4 10.1.2.3",
                "t=0 0",
                "m=audio 30000 RTP/AVP 8 101",
                "a=rtpmap:8 PCMA/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
                "a=ptime:20",
                "a=sendrecv",
            ]
        );
        assert!(text.ends_with("\r\n"));
        // Our answer is itself SDP we can read back.
        let back = parse(&text).unwrap();
        assert_eq!(back.audio.unwrap().payload_types, [8, 101]);
    }

    #[test]
    fn answer_takes_first_supported_codec_in_offer_order() {
        let (text, neg) = answer(&parse(BARESIP_OFFER).unwrap(), me(), 30000, 1).unwrap();
        assert_eq!(neg.law, Law::Ulaw, "G722 skipped, PCMU before PCMA");
        assert_eq!(neg.payload_type, 0);
        assert_eq!(neg.remote, "192.168.1.20:10002".parse().unwrap());
        assert!(text.contains("m=audio 30000 RTP/AVP 0 101\r\n"));
        assert!(!text.contains("PCMA"));
    }

    #[test]
    fn static_payload_types_without_rtpmap() {
        let sdp = parse("v=0\nc=IN IP4 192.0.2.5\nm=audio 5004 RTP/AVP 18 8\n").unwrap();
        let (text, neg) = answer(&sdp, me(), 4000, 1).unwrap();
        assert_eq!(
            (neg.law, neg.payload_type, neg.telephone_event),
            (Law::Alaw, 8, None)
        );
        assert!(text.contains("m=audio 4000 RTP/AVP 8\r\n"));
        assert!(!text.contains("telephone-event"));
    }

    #[test]
    fn dynamic_payload_type_for_g711_keeps_the_offerers_number() {
        let sdp = parse(
            "v=0\nc=IN IP4 192.0.2.5\nm=audio 5004 RTP/AVP 96 97\n\
             a=rtpmap:96 pcmu/8000\na=rtpmap:97 telephone-event/8000\n",
        )
        .unwrap();
        let neg = negotiated_from_answer(&sdp).unwrap();
        assert_eq!(
            (neg.law, neg.payload_type, neg.telephone_event),
            (Law::Ulaw, 96, Some(97))
        );
    }

    #[test]
    fn no_common_codec_is_488() {
        for offer in [
            "v=0\r\nc=IN IP4 192.0.2.5\r\nm=audio 5004 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n",
            "v=0\r\nc=IN IP4 192.0.2.5\r\nm=audio 5004 RTP/AVP 111 101\r\n\
             a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n",
        ] {
            let err = answer(&parse(offer).unwrap(), me(), 4000, 1).unwrap_err();
            assert!(matches!(err, SdpError::NoCommonCodec { .. }), "{err}");
            assert!(err.is_not_acceptable());
        }
        let err = answer(
            &parse("v=0\nc=IN IP4 192.0.2.5\nm=audio 5004 RTP/AVP 111 101\na=rtpmap:111 opus/48000/2\na=rtpmap:101 telephone-event/48000\n").unwrap(),
            me(),
            4000,
            1,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no common codec: the audio stream offers opus/48000, telephone-event/48000; \
             we speak PCMU and PCMA"
        );
        // PCMU at another clock rate is not G.711.
        let wideband =
            parse("v=0\nc=IN IP4 192.0.2.5\nm=audio 5004 RTP/AVP 96\na=rtpmap:96 PCMU/16000\n")
                .unwrap();
        assert!(answer(&wideband, me(), 4000, 1)
            .unwrap_err()
            .is_not_acceptable());
    }

    #[test]
    fn other_reasons_for_488() {
        let srtp = parse("v=0\nc=IN IP4 192.0.2.5\nm=audio 5004 RTP/SAVP 0\n").unwrap();
        assert_eq!(
            answer(&srtp, me(), 4000, 1),
            Err(SdpError::UnsupportedTransport("RTP/SAVP".into()))
        );
        let video_only = parse("v=0\nc=IN IP4 192.0.2.5\nm=video 5006 RTP/AVP 96\n").unwrap();
        assert_eq!(answer(&video_only, me(), 4000, 1), Err(SdpError::NoAudio));
        let disabled = parse("v=0\nc=IN IP4 192.0.2.5\nm=audio 0 RTP/AVP 0\n").unwrap();
        assert_eq!(disabled.audio, None);
        assert!(answer(&disabled, me(), 4000, 1)
            .unwrap_err()
            .is_not_acceptable());
        let no_c = parse("v=0\nm=audio 5004 RTP/AVP 0\n").unwrap();
        assert_eq!(answer(&no_c, me(), 4000, 1), Err(SdpError::NoConnection));
        assert!(!SdpError::NoConnection.is_not_acceptable());
    }

    #[test]
    fn answer_rejects_other_streams_in_order() {
        let offer = "v=0\r\nc=IN IP4 192.0.2.5\r\n\
            m=audio 5000 RTP/SAVP 0\r\n\
            m=audio 5002 RTP/AVP 8\r\n\
            m=video 5004 RTP/AVP 96 97\r\na=rtpmap:96 H264/90000\r\n";
        let (text, neg) = answer(&parse(offer).unwrap(), me(), 4000, 1).unwrap();
        assert_eq!(neg.remote.port(), 5002);
        let m: Vec<_> = lines(&text)
            .into_iter()
            .filter(|l| l.starts_with("m="))
            .collect();
        assert_eq!(
            m,
            [
                "m=audio 0 RTP/SAVP 0",
                "m=audio 4000 RTP/AVP 8",
                "m=video 0 RTP/AVP 96 97"
            ]
        );
    }

    #[test]
    fn offer_text() {
        let text = offer(me(), 40000, 12345);
        assert_eq!(
            lines(&text),
            [
                "v=0",
                "o=- 12345 12345 IN IP4 10.1.2.3",
                "s=-",
                "c=IN IP4 10.1.2.3",
                "t=0 0",
                "m=audio 40000 RTP/AVP 0 8 101",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:8 PCMA/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
                "a=ptime:20",
                "a=sendrecv",
            ]
        );
        let v6 = offer(IpAddr::V6(Ipv6Addr::LOCALHOST), 40000, 1);
        assert!(v6.contains("c=IN IP6 ::1\r\n"));
        let hold = offer_with(&Local {
            session_version: 13,
            direction: Direction::SendOnly,
            ..Local::new(me(), 40000, 12)
        });
        assert!(hold.contains("o=- 12 13 IN IP4"));
        assert!(hold.contains("a=sendonly\r\n"));
    }

    #[test]
    fn reads_the_answer_to_our_offer() {
        let answer_text = "v=0\r\no=- 5 6 IN IP4 203.0.113.7\r\ns=-\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\n\
            m=audio 7078 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
            a=ptime:30\r\n";
        let neg = negotiated_from_answer(&parse(answer_text).unwrap()).unwrap();
        assert_eq!(neg.law, Law::Alaw);
        assert_eq!(neg.telephone_event, Some(101));
        assert_eq!(neg.remote, "203.0.113.7:7078".parse().unwrap());
        assert_eq!(neg.ptime_ms, 30);
        let rejected = parse("v=0\r\nc=IN IP4 203.0.113.7\r\nm=audio 0 RTP/AVP 0\r\n").unwrap();
        assert_eq!(negotiated_from_answer(&rejected), Err(SdpError::NoAudio));
    }

    #[test]
    fn directions_and_media_level_connection() {
        let sdp = parse(
            "v=0\nc=IN IP4 192.0.2.5\na=sendonly\nm=audio 5004 RTP/AVP 0\nc=IN IP4 198.51.100.1\n",
        )
        .unwrap();
        let audio = sdp.audio.as_ref().unwrap();
        assert_eq!(
            audio.direction,
            Direction::SendOnly,
            "session level applies"
        );
        assert_eq!(audio.connection, Some("198.51.100.1".parse().unwrap()));
        let (text, neg) = answer(&sdp, me(), 4000, 1).unwrap();
        assert_eq!(neg.remote, "198.51.100.1:5004".parse().unwrap());
        assert_eq!(neg.direction, Direction::RecvOnly, "they hold us");
        assert!(text.contains("a=recvonly\r\n"));

        let inactive =
            parse("v=0\nc=IN IP4 192.0.2.5\nm=audio 5004 RTP/AVP 0\na=inactive\n").unwrap();
        assert_eq!(
            answer(&inactive, me(), 4000, 1).unwrap().1.direction,
            Direction::Inactive
        );
        let local = Local {
            direction: Direction::SendOnly,
            ..Local::new(me(), 4000, 1)
        };
        let plain = parse("v=0\nc=IN IP4 192.0.2.5\nm=audio 5004 RTP/AVP 0\n").unwrap();
        let (text, neg) = answer_with(&plain, &local).unwrap();
        assert_eq!(neg.direction, Direction::SendOnly);
        assert!(text.contains("a=sendonly\r\n"));
    }

    #[test]
    fn bad_input() {
        assert_eq!(parse(""), Err(SdpError::NotSdp));
        assert_eq!(parse("hello world"), Err(SdpError::NotSdp));
        let err = parse("v=0\r\nc=IN IP4 not-an-address\r\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "SDP line 2 (\"c=IN IP4 not-an-address\"): expected \"IN IP4 <address>\" or \"IN IP6 <address>\""
        );
        assert!(matches!(
            parse("v=0\nm=audio x RTP/AVP 0\n"),
            Err(SdpError::BadLine { line: 2, .. })
        ));
        assert!(matches!(
            parse("v=0\nm=audio 70000 RTP/AVP 0\n"),
            Err(SdpError::BadLine { .. })
        ));
        assert!(matches!(
            parse("v=0\nc=IN IP6 10.0.0.1\n"),
            Err(SdpError::BadLine { .. })
        ));
        // Unknown and odd lines are skipped; bad rtpmap/ptime lines are ignored.
        let sdp = parse(
            "v=0\nx=whatever\nnonsense\no=- abc def IN IP4 1.2.3.4\nc=IN IP4 224.2.1.1/127\n\
             m=audio 5004/2 RTP/AVP 0 abc\na=rtpmap:zz PCMU/8000\na=rtpmap:0\na=ptime:fast\n",
        )
        .unwrap();
        assert_eq!(sdp.origin_session, 0);
        assert_eq!(sdp.connection, Some("224.2.1.1".parse().unwrap()));
        let audio = sdp.audio.unwrap();
        assert_eq!(
            (audio.port, audio.payload_types.as_slice()),
            (5004, &[0u8][..])
        );
        assert!(audio.rtpmap.is_empty());
        assert_eq!(audio.ptime, None);
    }

    #[test]
    fn any_prefix_of_an_offer_parses_or_errors_without_panic() {
        for end in 0..BARESIP_OFFER.len() {
            if BARESIP_OFFER.is_char_boundary(end) {
                let _ = parse(&BARESIP_OFFER[..end]).and_then(|s| answer(&s, me(), 1, 1));
            }
        }
    }
}
