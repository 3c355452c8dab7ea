//! Bot messages, text and binary, through a live call's session: each input
//! is a sequence of frames (a first byte says text or binary and how many
//! ticks pass after it), so the state machine sees floods, half-played
//! audio, hangups and transfers in any order.
#![no_main]

use bridge::botlink::session::{CallSession, SessionConfig};
use codecs::pcm::SILENCE;
use libfuzzer_sys::fuzz_target;
use protocol::{Direction, MediaFormat, StartInfo};

fuzz_target!(|data: &[u8]| {
    // The parser on its own, as the socket task's first step sees it.
    if let Ok(text) = std::str::from_utf8(data) {
        let mut audio = Vec::new();
        let _ = protocol::parse_command(text, &mut audio, protocol::MAX_MESSAGE_BYTES);
        let _ = protocol::parse_command_with_sample_bytes(text, &mut audio, 4096, 1);
    }

    let start = StartInfo {
        stream_sid: "MZfuzz".into(),
        call_sid: "CAfuzz".into(),
        from: "+15550000000".into(),
        to: "+99910001".into(),
        direction: Direction::Outbound,
        media_format: MediaFormat::default(),
        tracks: vec!["inbound".into()],
        custom_parameters: Default::default(),
    };
    let cfg = SessionConfig {
        max_playout_samples: 8000,
        hangup_drain_ticks: 5,
        max_message_bytes: 4096,
        inband_dtmf: data.first().is_some_and(|b| b & 1 == 1),
    };
    let mut s = CallSession::new(start, cfg);
    s.on_bot_connected();
    s.on_answer();
    let mut heard = SILENCE;
    // Frames: [kind/ticks byte][len byte][len bytes]...
    let mut rest = data;
    while let [head, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (frame, after) = tail.split_at(n);
        rest = after;
        if head & 0x80 == 0 {
            if let Ok(text) = std::str::from_utf8(frame) {
                s.on_bot_text(text);
            }
        } else {
            s.on_bot_binary(frame);
        }
        if head & 0x40 != 0 {
            s.on_phone_dtmf('5', 100);
        }
        for _ in 0..(head & 0x07) {
            s.tick(&SILENCE, &mut heard, head & 0x08 != 0);
        }
        while s.poll_event().is_some() {}
        while s.poll_action().is_some() {}
    }
    for _ in 0..10 {
        s.tick(&SILENCE, &mut heard, false);
    }
    s.finish(protocol::StopReason::CallEnded);
    while s.poll_event().is_some() {}
    while s.poll_action().is_some() {}
});
