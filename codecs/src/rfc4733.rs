//! RFC 4733 telephone-event payloads ("RTP DTMF"): the 4-byte payload, the
//! digit ↔ event-code mapping, and a receiver that turns the stream of repeated
//! packets into one report per key press.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     event     |E|R| volume    |          duration             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

/// Why a telephone-event payload could not be parsed.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum Rfc4733Error {
    /// The payload has fewer than the 4 bytes every telephone event needs.
    #[error("RFC 4733 telephone-event payload is {0} bytes long, needs at least 4")]
    TooShort(usize),
}

/// Length of one telephone-event payload.
pub const PAYLOAD_LEN: usize = 4;

/// RTP clock rate assumed for telephone events (`telephone-event/8000`).
pub const CLOCK_RATE: u32 = 8000;

/// One RFC 4733 telephone-event payload.
///
/// The R (reserved) bit is ignored on parse and sent as 0, as RFC 4733 requires.
///
/// ```
/// use codecs::rfc4733::TelephoneEvent;
///
/// let ev = TelephoneEvent::parse(&[0x05, 0x8a, 0x03, 0x20]).unwrap();
/// assert_eq!(ev, TelephoneEvent { event: 5, end: true, volume: 10, duration: 800 });
/// assert_eq!(ev.to_bytes(), [0x05, 0x8a, 0x03, 0x20]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0..=15 are the DTMF keys (see [`event_to_digit`]).
    pub event: u8,
    /// E bit: this packet marks the end of the event.
    pub end: bool,
    /// Power level as `-dBm0`, 0..=63 (larger is quieter). Only 6 bits are sent.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units (1/8000 s for `telephone-event/8000`).
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first 4 bytes of an RTP payload.
    ///
    /// Bytes after the fourth are ignored: a telephone-event payload carries one
    /// event unless it is wrapped in RFC 2198 redundancy, which is unwrapped
    /// before this point.
    pub fn parse(b: &[u8]) -> Result<Self, Rfc4733Error> {
        let &[event, flags, d0, d1, ..] = b else {
            return Err(Rfc4733Error::TooShort(b.len()));
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// Writes the payload into `out`. Only the low 6 bits of `volume` are sent.
    pub fn write(&self, out: &mut [u8; 4]) {
        let end = if self.end { 0x80 } else { 0 };
        let [d0, d1] = self.duration.to_be_bytes();
        *out = [self.event, end | (self.volume & 0x3F), d0, d1];
    }

    /// The payload as bytes.
    pub fn to_bytes(&self) -> [u8; 4] {
        let mut out = [0; 4];
        self.write(&mut out);
        out
    }

    /// The DTMF key for this event, if it is one of events 0..=15.
    pub fn digit(&self) -> Option<char> {
        event_to_digit(self.event)
    }
}

const DIGITS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

/// The event code for a DTMF key: `'0'..='9'` → 0..=9, `'*'` → 10, `'#'` → 11,
/// `'A'..='D'` → 12..=15 (lowercase accepted).
pub fn digit_to_event(c: char) -> Option<u8> {
    let c = c.to_ascii_uppercase();
    DIGITS.iter().position(|&d| d == c).map(|i| i as u8)
}

/// The DTMF key for an event code 0..=15 (letters uppercase); `None` for other
/// events such as flash (16) or the tones of RFC 4734.
pub fn event_to_digit(e: u8) -> Option<char> {
    DIGITS.get(usize::from(e)).copied()
}

/// Turns received telephone-event packets into one report per key press.
///
/// A sender repeats packets with the same RTP timestamp while a key is held, and
/// sends the end packet three times. [`push`](Self::push) reports the key once, on
/// the first end packet seen, with the duration in milliseconds. If the end packets
/// are all lost, the key is reported when the next event (a new timestamp) starts,
/// or by [`flush`](Self::flush) when the stream stops.
///
/// Also handled: late packets of an earlier event (ignored), and long presses that
/// the sender split into segments whose timestamps follow on from each other
/// (RFC 4733 §2.5.1.3; reported once, with the summed duration). Events that are not
/// DTMF keys are tracked but never reported. Durations assume an 8 kHz clock.
///
/// ```
/// use codecs::rfc4733::{EventReceiver, TelephoneEvent};
///
/// let mut rx = EventReceiver::new();
/// let ev = |end, duration| TelephoneEvent { event: 11, end, volume: 10, duration };
/// assert_eq!(rx.push(4000, &ev(false, 160)), None);
/// assert_eq!(rx.push(4000, &ev(true, 800)), Some(('#', 100)));
/// assert_eq!(rx.push(4000, &ev(true, 800)), None); // retransmitted end
/// ```
#[derive(Debug, Default, Clone)]
pub struct EventReceiver {
    current: Option<Current>,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    /// RTP timestamp of the latest segment (the event start unless it was split).
    ts: u32,
    event: u8,
    /// Duration of the latest segment, in timestamp units.
    segment_duration: u16,
    /// Duration of earlier segments of the same press.
    earlier_segments: u32,
    reported: bool,
}

impl Current {
    fn report(&mut self) -> Option<(char, u32)> {
        if self.reported {
            return None;
        }
        self.reported = true;
        let digit = event_to_digit(self.event)?;
        let units = self.earlier_segments + u32::from(self.segment_duration);
        Some((digit, units * 1000 / CLOCK_RATE))
    }
}

impl EventReceiver {
    /// A receiver that has seen no events.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one packet: its RTP timestamp and parsed payload. Returns the key and
    /// its duration in ms when this packet completes a key press not yet reported.
    pub fn push(&mut self, rtp_ts: u32, ev: &TelephoneEvent) -> Option<(char, u32)> {
        let Some(cur) = self.current.as_mut() else {
            return self.start(rtp_ts, ev, 0);
        };

        if rtp_ts == cur.ts && ev.event == cur.event {
            cur.segment_duration = cur.segment_duration.max(ev.duration);
            return if ev.end { cur.report() } else { None };
        }

        // Serial-number comparison: a timestamp "before" the current event belongs to
        // an event we are done with.
        if (rtp_ts.wrapping_sub(cur.ts) as i32) <= 0 {
            return None;
        }

        let continues = !cur.reported
            && ev.event == cur.event
            && rtp_ts == cur.ts.wrapping_add(u32::from(cur.segment_duration));
        if continues {
            let earlier = cur.earlier_segments + u32::from(cur.segment_duration);
            return self.start(rtp_ts, ev, earlier);
        }

        let previous = cur.report();
        let new = self.start(rtp_ts, ev, 0);
        // If the new event's first packet is already an end packet and the previous
        // event also needed reporting, the new one stays unreported here and goes out
        // on its retransmitted end packet (or on flush).
        if previous.is_some() {
            if let Some(cur) = self.current.as_mut() {
                cur.reported = false;
            }
            return previous;
        }
        new
    }

    /// Reports the current event if it never saw an end packet: call when the
    /// stream stops (call ended, or no packets for a while).
    pub fn flush(&mut self) -> Option<(char, u32)> {
        self.current.as_mut().and_then(Current::report)
    }

    fn start(
        &mut self,
        ts: u32,
        ev: &TelephoneEvent,
        earlier_segments: u32,
    ) -> Option<(char, u32)> {
        let cur = self.current.insert(Current {
            ts,
            event: ev.event,
            segment_duration: ev.duration,
            earlier_segments,
            reported: false,
        });
        if ev.end {
            cur.report()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: u8, end: bool, duration: u16) -> TelephoneEvent {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
    }

    #[test]
    fn parse_and_write_vectors() {
        let cases: &[([u8; 4], TelephoneEvent)] = &[
            ([0x05, 0x8a, 0x03, 0x20], ev(5, true, 800)),
            ([0x05, 0x0a, 0x00, 0xa0], ev(5, false, 160)),
            (
                [0x0b, 0x00, 0x00, 0x00],
                TelephoneEvent {
                    event: 11,
                    end: false,
                    volume: 0,
                    duration: 0,
                },
            ),
            (
                [0x10, 0xbf, 0xff, 0xff],
                TelephoneEvent {
                    event: 16,
                    end: true,
                    volume: 63,
                    duration: 0xFFFF,
                },
            ),
        ];
        for (bytes, event) in cases {
            assert_eq!(TelephoneEvent::parse(bytes), Ok(*event), "{bytes:02x?}");
            assert_eq!(event.to_bytes(), *bytes);
        }
    }

    #[test]
    fn reserved_bit_is_ignored_and_never_sent() {
        let parsed = TelephoneEvent::parse(&[0x01, 0xca, 0x00, 0x50]).unwrap();
        assert_eq!(parsed, ev(1, true, 80));
        assert_eq!(parsed.to_bytes()[1], 0x8a);
        let loud = TelephoneEvent {
            volume: 0xFF,
            ..parsed
        };
        assert_eq!(loud.to_bytes()[1], 0xbf, "volume masked to 6 bits");
    }

    #[test]
    fn trailing_bytes_are_ignored() {
        assert_eq!(
            TelephoneEvent::parse(&[0x05, 0x8a, 0x03, 0x20, 0xEE]),
            Ok(ev(5, true, 800))
        );
    }

    #[test]
    fn short_payloads_are_errors() {
        for len in 0..4 {
            assert_eq!(
                TelephoneEvent::parse(&[0u8; 3][..len]),
                Err(Rfc4733Error::TooShort(len))
            );
        }
        assert_eq!(
            Rfc4733Error::TooShort(2).to_string(),
            "RFC 4733 telephone-event payload is 2 bytes long, needs at least 4"
        );
    }

    #[test]
    fn digit_mapping() {
        let all = "0123456789*#ABCD";
        for (i, c) in all.chars().enumerate() {
            assert_eq!(digit_to_event(c), Some(i as u8));
            assert_eq!(event_to_digit(i as u8), Some(c));
        }
        assert_eq!(digit_to_event('d'), Some(15));
        assert_eq!(digit_to_event('E'), None);
        assert_eq!(digit_to_event(' '), None);
        assert_eq!(event_to_digit(16), None);
    }

    #[test]
    fn repeated_end_packets_report_once() {
        let mut rx = EventReceiver::new();
        assert_eq!(rx.push(1000, &ev(1, false, 160)), None);
        assert_eq!(rx.push(1000, &ev(1, false, 320)), None);
        assert_eq!(rx.push(1000, &ev(1, false, 480)), None);
        assert_eq!(rx.push(1000, &ev(1, true, 640)), Some(('1', 80)));
        assert_eq!(rx.push(1000, &ev(1, true, 640)), None);
        assert_eq!(rx.push(1000, &ev(1, true, 640)), None);
        assert_eq!(rx.flush(), None);
    }

    #[test]
    fn end_packets_only_report_once() {
        let mut rx = EventReceiver::new();
        let reports: Vec<_> = (0..3)
            .filter_map(|_| rx.push(1000, &ev(9, true, 800)))
            .collect();
        assert_eq!(reports, [('9', 100)]);
    }

    #[test]
    fn lost_end_is_reported_when_next_event_starts() {
        let mut rx = EventReceiver::new();
        assert_eq!(rx.push(1000, &ev(2, false, 160)), None);
        assert_eq!(rx.push(1000, &ev(2, false, 400)), None);
        assert_eq!(rx.push(3000, &ev(3, false, 160)), Some(('2', 50)));
        assert_eq!(rx.push(3000, &ev(3, true, 480)), Some(('3', 60)));
    }

    #[test]
    fn same_key_pressed_twice() {
        let mut rx = EventReceiver::new();
        assert_eq!(rx.push(1000, &ev(7, true, 800)), Some(('7', 100)));
        assert_eq!(rx.push(1000, &ev(7, true, 800)), None);
        assert_eq!(rx.push(5000, &ev(7, false, 160)), None);
        assert_eq!(rx.push(5000, &ev(7, true, 800)), Some(('7', 100)));
    }

    #[test]
    fn new_event_arriving_as_end_after_lost_end_reports_both() {
        let mut rx = EventReceiver::new();
        assert_eq!(rx.push(1000, &ev(4, false, 160)), None);
        assert_eq!(rx.push(3000, &ev(5, true, 800)), Some(('4', 20)));
        assert_eq!(rx.push(3000, &ev(5, true, 800)), Some(('5', 100)));
        assert_eq!(rx.push(3000, &ev(5, true, 800)), None);
    }

    #[test]
    fn late_packets_of_old_event_are_ignored() {
        let mut rx = EventReceiver::new();
        assert_eq!(rx.push(1000, &ev(1, true, 800)), Some(('1', 100)));
        assert_eq!(rx.push(3000, &ev(2, false, 160)), None);
        assert_eq!(rx.push(1000, &ev(1, true, 800)), None);
        assert_eq!(rx.push(3000, &ev(2, true, 800)), Some(('2', 100)));
    }

    #[test]
    fn timestamps_wrap() {
        let mut rx = EventReceiver::new();
        assert_eq!(rx.push(u32::MAX - 10, &ev(1, true, 800)), Some(('1', 100)));
        assert_eq!(rx.push(500, &ev(2, true, 800)), Some(('2', 100)));
        assert_eq!(rx.push(u32::MAX - 10, &ev(1, true, 800)), None);
    }

    #[test]
    fn long_press_split_into_segments_reports_once() {
        let mut rx = EventReceiver::new();
        assert_eq!(rx.push(1000, &ev(0, false, 0xFFFF)), None);
        assert_eq!(rx.push(1000 + 0xFFFF, &ev(0, false, 8000)), None);
        assert_eq!(
            rx.push(1000 + 0xFFFF, &ev(0, true, 16000)),
            Some(('0', (0xFFFF + 16000) / 8))
        );
    }

    #[test]
    fn flush_reports_unended_event_once() {
        let mut rx = EventReceiver::new();
        assert_eq!(rx.flush(), None);
        assert_eq!(rx.push(1000, &ev(12, false, 240)), None);
        assert_eq!(rx.flush(), Some(('A', 30)));
        assert_eq!(rx.flush(), None);
        assert_eq!(rx.push(1000, &ev(12, true, 400)), None);
    }

    #[test]
    fn non_dtmf_events_are_not_reported() {
        let mut rx = EventReceiver::new();
        assert_eq!(rx.push(1000, &ev(16, true, 800)), None);
        assert_eq!(rx.push(3000, &ev(1, true, 800)), Some(('1', 100)));
    }
}
