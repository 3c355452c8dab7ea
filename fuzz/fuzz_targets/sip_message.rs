//! SIP messages as the transport reads them off UDP or TCP, and the headers
//! our user agent reads from them: the digest `Authorization` of a
//! REGISTER, and the SDP body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsipstack::sip as rsip;
use rsipstack::sip::prelude::*;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = rsip::SipMessage::try_from(data) else {
        return;
    };
    for h in msg.headers().iter() {
        if let rsip::Header::Authorization(a) = h {
            let _ = rsip::typed::Authorization::parse(a.value());
        }
    }
    if let rsip::SipMessage::Request(req) = &msg {
        let _ = req.from_header().and_then(|f| f.uri());
        let _ = req.to_header().and_then(|t| t.uri());
        let _ = req.contact_header().map(|c| c.typed());
    }
    let body = match &msg {
        rsip::SipMessage::Request(r) => &r.body,
        rsip::SipMessage::Response(r) => &r.body,
    };
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = bridge::sdp::parse(text);
    }
});
