//! Datagrams arriving on a call's RTP port (RTP, RTCP, RFC 4733 events,
//! garbage, from the expected address or another) through the stream's
//! receive path and jitter buffer, with the clock running.
#![no_main]

use bridge::jitter::JitterConfig;
use bridge::rtpstream::{Outbox, RtpStream};
use bridge::sdp::{Direction, Negotiated};
use codecs::g711::Law;
use codecs::pcm::SILENCE;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let remote = "192.0.2.10:4000".parse().unwrap();
    let other = "192.0.2.99:5000".parse().unwrap();
    let neg = Negotiated {
        law: Law::Ulaw,
        payload_type: 0,
        telephone_event: Some(101),
        remote,
        ptime_ms: 20,
        direction: Direction::SendRecv,
    };
    let mut stream = RtpStream::new(neg, 0x1234, 100, 8000, JitterConfig::default());
    let mut out = Outbox::new();
    let mut said = SILENCE;
    let mut now = 0u64;
    // Datagrams: [flags][len][len bytes]...; flags say which address and how
    // far the clock moves.
    let mut rest = data;
    while let [flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (pkt, after) = tail.split_at(n);
        rest = after;
        let from = if flags & 0x80 == 0 { remote } else { other };
        let _ = bridge::rtp::parse(pkt);
        let _ = stream.on_datagram(from, pkt, now);
        for _ in 0..(flags & 0x03) {
            now += 20;
            out.clear();
            stream.tick(now, &SILENCE, &mut said, &mut out);
        }
        while stream.poll_dtmf(now).is_some() {}
    }
    if let [a, b, c, d, ..] = data {
        let _ = codecs::rfc4733::TelephoneEvent::parse(&[*a, *b, *c, *d]);
    }
});
