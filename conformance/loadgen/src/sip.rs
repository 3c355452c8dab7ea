//! A minimal SIP (RFC 3261) message layer for a UDP user agent client: parse one
//! datagram, write INVITE / ACK / BYE / OPTIONS and replies to requests, and read
//! the SDP answer. Only what a caller that places plain G.711 calls needs.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// A request: method and Request-URI.
    Request {
        /// e.g. `BYE`.
        method: String,
        /// The Request-URI.
        uri: String,
    },
    /// A response: status code and reason.
    Response {
        /// e.g. 200.
        code: u16,
        /// e.g. `OK`.
        reason: String,
    },
}

/// One parsed SIP message.
#[derive(Debug, Clone)]
pub struct Message {
    /// Request or status line.
    pub start: StartLine,
    /// Header names in lower case, compact forms expanded; values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

fn expand(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "i" => "call-id",
        "f" => "from",
        "t" => "to",
        "v" => "via",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        _ => return lower,
    }
    .to_string()
}

impl Message {
    /// Parses a datagram; `None` if it is not a SIP message.
    pub fn parse(data: &[u8]) -> Option<Message> {
        let split = data.windows(4).position(|w| w == b"\r\n\r\n");
        let (head, body) = match split {
            Some(p) => (&data[..p], &data[p + 4..]),
            None => (data, &[][..]),
        };
        let head = std::str::from_utf8(head).ok()?;
        let mut lines = head.split("\r\n");
        let first = lines.next()?.trim();
        let start = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            StartLine::Response {
                code: code.parse().ok()?,
                reason: reason.to_string(),
            }
        } else {
            let mut parts = first.split(' ');
            let method = parts.next()?.to_string();
            let uri = parts.next()?.to_string();
            if parts.next()? != "SIP/2.0" {
                return None;
            }
            StartLine::Request { method, uri }
        };
        let mut headers = Vec::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                headers.push((expand(name.trim()), value.trim().to_string()));
            }
        }
        let mut msg = Message {
            start,
            headers,
            body: body.to_vec(),
        };
        if let Some(len) = msg.header("content-length").and_then(|l| l.parse().ok()) {
            msg.body.truncate(len);
        }
        Some(msg)
    }

    /// The first value of a header (lower-case name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn all(&self, name: &str) -> impl Iterator<Item = &str> + '_ {
        let name = name.to_string();
        self.headers
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.header("call-id")
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let (n, m) = self.header("cseq")?.split_once(' ')?;
        Some((n.trim().parse().ok()?, m.trim()))
    }

    /// The status code, for a response.
    pub fn code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The method, for a request.
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The URI of the Contact header.
    pub fn contact_uri(&self) -> Option<String> {
        uri_of(self.header("contact")?)
    }

    /// A reply to this request: Via, From, To, Call-ID and CSeq copied, a tag
    /// added to To if it has none.
    pub fn reply(&self, code: u16, reason: &str, to_tag: &str) -> String {
        let mut out = format!("SIP/2.0 {code} {reason}\r\n");
        for via in self.all("via") {
            let _ = write!(out, "Via: {via}\r\n");
        }
        if let Some(f) = self.header("from") {
            let _ = write!(out, "From: {f}\r\n");
        }
        if let Some(t) = self.header("to") {
            if t.contains(";tag=") {
                let _ = write!(out, "To: {t}\r\n");
            } else {
                let _ = write!(out, "To: {t};tag={to_tag}\r\n");
            }
        }
        for name in ["call-id", "cseq"] {
            if let Some(v) = self.header(name) {
                let label = if name == "call-id" { "Call-ID" } else { "CSeq" };
                let _ = write!(out, "{label}: {v}\r\n");
            }
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        out
    }
}

/// The URI inside a name-addr (`"x" <sip:a@b>;tag=1`) or addr-spec (`sip:a@b;p`).
pub fn uri_of(value: &str) -> Option<String> {
    if let Some(start) = value.find('<') {
        let end = value[start..].find('>')? + start;
        return Some(value[start + 1..end].to_string());
    }
    let v = value.split(';').next()?.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// A random token for tags, branches and Call-IDs.
pub fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The fixed parts of one call's dialog, from our side.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Where requests go (the bridge's SIP address).
    pub server: SocketAddr,
    /// Our signalling address (Via, Contact).
    pub local: SocketAddr,
    /// The INVITE's Request-URI.
    pub target_uri: String,
    /// Our From header value, with tag.
    pub from: String,
    /// The To header value as first sent (no tag).
    pub to: String,
    /// The Call-ID.
    pub call_id: String,
    /// Branch of the INVITE transaction.
    pub invite_branch: String,
    /// Our Contact URI.
    pub contact: String,
}

impl Dialog {
    /// A new dialog calling `did` at `server` from `caller`.
    pub fn new(server: SocketAddr, local: SocketAddr, did: &str, caller: &str) -> Dialog {
        let ip = local.ip();
        Dialog {
            server,
            local,
            target_uri: format!("sip:{did}@{server}"),
            from: format!("<sip:{caller}@{ip}>;tag={}", token()),
            to: format!("<sip:{did}@{server}>"),
            call_id: format!("{}@{ip}", token()),
            invite_branch: format!("z9hG4bK{}", token()),
            contact: format!("<sip:{caller}@{local}>"),
        }
    }

    fn via(&self, branch: &str) -> String {
        format!("Via: SIP/2.0/UDP {};branch={branch};rport\r\n", self.local)
    }

    /// The INVITE carrying `sdp`.
    pub fn invite(&self, sdp: &str) -> String {
        format!(
            "INVITE {uri} SIP/2.0\r\n{via}Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: {contact}\r\nUser-Agent: loadgen\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            uri = self.target_uri,
            via = self.via(&self.invite_branch),
            from = self.from,
            to = self.to,
            cid = self.call_id,
            contact = self.contact,
            len = sdp.len(),
        )
    }

    /// The ACK of a final response `resp` to the INVITE. For a 2xx it is a new
    /// transaction to the remote target; otherwise it reuses the INVITE's branch.
    pub fn ack(&self, resp: &Message) -> String {
        let success = resp.code().is_some_and(|c| (200..300).contains(&c));
        let (uri, branch) = if success {
            (
                resp.contact_uri()
                    .unwrap_or_else(|| self.target_uri.clone()),
                format!("z9hG4bK{}", token()),
            )
        } else {
            (self.target_uri.clone(), self.invite_branch.clone())
        };
        format!(
            "ACK {uri} SIP/2.0\r\n{via}Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            via = self.via(&branch),
            from = self.from,
            to = resp.header("to").unwrap_or(&self.to),
            cid = self.call_id,
        )
    }

    /// A BYE in the dialog the 200 OK `ok` set up.
    pub fn bye(&self, ok: &Message, cseq: u32) -> String {
        let uri = ok.contact_uri().unwrap_or_else(|| self.target_uri.clone());
        format!(
            "BYE {uri} SIP/2.0\r\n{via}Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} BYE\r\nUser-Agent: loadgen\r\nContent-Length: 0\r\n\r\n",
            via = self.via(&format!("z9hG4bK{}", token())),
            from = self.from,
            to = ok.header("to").unwrap_or(&self.to),
            cid = self.call_id,
        )
    }
}

/// An out-of-dialog OPTIONS, to see whether anything answers at `server`.
pub fn options(server: SocketAddr, local: SocketAddr, call_id: &str) -> String {
    format!(
        "OPTIONS sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{b};rport\r\nMax-Forwards: 70\r\nFrom: <sip:loadgen@{ip}>;tag={t}\r\nTo: <sip:{server}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContact: <sip:loadgen@{local}>\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n",
        b = token(),
        t = token(),
        ip = local.ip(),
    )
}

/// ACK and BYE for a 2xx to an INVITE whose call we no longer track (it was
/// answered after we gave up), built from the response alone, so the bridge's
/// call does not stay up.
pub fn ack_and_bye_orphan(
    ok: &Message,
    local: SocketAddr,
    server: SocketAddr,
) -> Option<[String; 2]> {
    let from = ok.header("from")?;
    let to = ok.header("to")?;
    let cid = ok.call_id()?;
    let uri = ok.contact_uri().unwrap_or_else(|| format!("sip:{server}"));
    let msg = |method: &str, cseq: u32| {
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{b};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            b = token()
        )
    };
    Some([msg("ACK", 1), msg("BYE", 2)])
}

/// Our SDP offer: PCMU only, 20 ms packets.
pub fn sdp_offer(ip: IpAddr, port: u16, session: u64) -> String {
    let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=loadgen {session} {session} IN {fam} {ip}\r\ns=loadgen\r\nc=IN {fam} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// Where the answer wants our RTP sent, and its payload type; an error says
/// what is wrong with it.
pub fn sdp_answer(body: &[u8]) -> Result<(SocketAddr, u8), String> {
    let text = std::str::from_utf8(body).map_err(|_| "the SDP answer is not UTF-8".to_string())?;
    let mut session_ip: Option<IpAddr> = None;
    let mut media_ip: Option<IpAddr> = None;
    let mut audio: Option<(u16, u8)> = None;
    let mut in_audio = false;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("m=") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            in_audio = parts.first() == Some(&"audio");
            if in_audio && audio.is_none() {
                let port = parts.get(1).and_then(|p| p.parse().ok());
                let pt = parts.get(3).and_then(|p| p.parse().ok());
                if let (Some(port), Some(pt)) = (port, pt) {
                    audio = Some((port, pt));
                }
            }
        } else if let Some(rest) = line.strip_prefix("c=") {
            let ip = rest.split_whitespace().nth(2).and_then(|a| a.parse().ok());
            if audio.is_some() && in_audio {
                media_ip = ip.or(media_ip);
            } else if audio.is_none() {
                session_ip = ip.or(session_ip);
            }
        }
    }
    let (port, pt) = audio.ok_or("the SDP answer has no m=audio line")?;
    if port == 0 {
        return Err("the SDP answer rejected the audio stream (port 0)".into());
    }
    let ip = media_ip
        .or(session_ip)
        .ok_or("the SDP answer has no c= address")?;
    Ok((SocketAddr::new(ip, port), pt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_and_builds_ack_and_bye() {
        let text = "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 127.0.0.1:5000;branch=z9hG4bKx\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:+1555@127.0.0.1:5060>;tag=abc\r\ni: cid@x\r\nCSeq: 1 INVITE\r\nContact: <sip:+1555@127.0.0.1:5060>\r\nContent-Type: application/sdp\r\nContent-Length: 62\r\n\r\nv=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 20002 RTP/AVP 0 101\r\nt=0 0\r\nextra";
        let m = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(m.code(), Some(200));
        assert_eq!(m.call_id(), Some("cid@x"));
        assert_eq!(m.cseq(), Some((1, "INVITE")));
        assert_eq!(m.contact_uri().as_deref(), Some("sip:+1555@127.0.0.1:5060"));
        assert_eq!(
            sdp_answer(&m.body).unwrap(),
            ("127.0.0.1:20002".parse().unwrap(), 0)
        );
        let d = Dialog::new(
            "127.0.0.1:5060".parse().unwrap(),
            "127.0.0.1:5000".parse().unwrap(),
            "+1555",
            "+1999",
        );
        let ack = d.ack(&m);
        assert!(ack.starts_with("ACK sip:+1555@127.0.0.1:5060 SIP/2.0\r\n"));
        assert!(ack.contains("To: <sip:+1555@127.0.0.1:5060>;tag=abc\r\n"));
        let bye = Message::parse(d.bye(&m, 2).as_bytes()).unwrap();
        assert_eq!(bye.method(), Some("BYE"));
        assert_eq!(bye.cseq(), Some((2, "BYE")));
        let invite = Message::parse(
            d.invite(&sdp_offer([127, 0, 0, 1].into(), 41000, 1))
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            invite.body.len(),
            invite
                .header("content-length")
                .unwrap()
                .parse::<usize>()
                .unwrap()
        );
    }

    #[test]
    fn replies_copy_the_transaction_headers() {
        let bye = "BYE sip:x@127.0.0.1:5000 SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP 1.2.3.5;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=9\r\nTo: <sip:x@c>;tag=8\r\nCall-ID: q\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(bye.as_bytes()).unwrap();
        let r = m.reply(200, "OK", "zz");
        assert!(r.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP 1.2.3.5;branch=z9hG4bK2\r\n"));
        assert!(r.contains("To: <sip:x@c>;tag=8\r\nCall-ID: q\r\nCSeq: 5 BYE\r\n"));
    }
}
