//! SDP offers and answers from the far end, and our answer to each offer.
#![no_main]

use bridge::sdp::{self, Direction, Local};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(remote) = sdp::parse(text) else {
        return;
    };
    let local = Local {
        ip: "127.0.0.1".parse().unwrap(),
        port: 20000,
        session_id: 1,
        session_version: 1,
        direction: Direction::SendRecv,
    };
    if let Ok((answer, _)) = sdp::answer_with(&remote, &local) {
        // Our own answer always parses.
        sdp::parse(&answer).expect("our SDP answer parses");
    }
    let _ = sdp::negotiated_from_answer(&remote);
});
