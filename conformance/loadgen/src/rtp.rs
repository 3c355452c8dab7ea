//! Just enough RTP (RFC 3550): write a PCMU packet, read a received one, and
//! count losses by sequence number.

/// Fixed header length.
pub const HEADER: usize = 12;

/// Writes a 12-byte header (version 2, no padding, extension or CSRCs).
pub fn write_header(out: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    out[0] = 0x80;
    out[1] = (u8::from(marker) << 7) | (pt & 0x7f);
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// A received packet's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Payload type.
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub ts: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// The payload, without padding.
    pub payload: &'a [u8],
}

/// Reads a datagram as RTP; `None` if it is not RTP version 2.
pub fn parse(data: &[u8]) -> Option<Packet<'_>> {
    if data.len() < HEADER || data[0] >> 6 != 2 {
        return None;
    }
    let csrcs = (data[0] & 0x0f) as usize;
    let mut start = HEADER + 4 * csrcs;
    if data[0] & 0x10 != 0 {
        let ext = data.get(start..start + 4)?;
        start += 4 + 4 * u16::from_be_bytes([ext[2], ext[3]]) as usize;
    }
    let mut end = data.len();
    if data[0] & 0x20 != 0 {
        end = end.checked_sub(*data.last()? as usize)?;
    }
    let payload = data.get(start..end)?;
    Some(Packet {
        pt: data[1] & 0x7f,
        seq: u16::from_be_bytes([data[2], data[3]]),
        ts: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
        payload,
    })
}

/// Counts received packets against the sequence numbers seen, per source.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    ssrc: Option<u32>,
    base: u64,
    highest: u64,
    received: u64,
    /// Packets expected but never received, summed over past sources.
    lost_before: i64,
    /// Times the source changed.
    pub sources: u32,
}

impl SeqTracker {
    /// Notes a received packet.
    pub fn on_packet(&mut self, ssrc: u32, seq: u16) {
        if self.ssrc != Some(ssrc) {
            self.lost_before += self.current_lost();
            self.ssrc = Some(ssrc);
            self.sources += 1;
            self.base = seq as u64 + (1 << 16);
            self.highest = self.base;
            self.received = 1;
            return;
        }
        // Extend to 64 bits: pick the cycle that puts seq nearest the highest.
        let hi = self.highest;
        let candidate = (hi & !0xffff) | seq as u64;
        let ext = [
            candidate.wrapping_sub(1 << 16),
            candidate,
            candidate + (1 << 16),
        ]
        .into_iter()
        .min_by_key(|c| c.abs_diff(hi))
        .unwrap_or(candidate);
        self.highest = self.highest.max(ext);
        self.received += 1;
    }

    fn current_lost(&self) -> i64 {
        if self.ssrc.is_none() {
            return 0;
        }
        (self.highest - self.base + 1) as i64 - self.received as i64
    }

    /// Packets missing from the sequence (negative with duplicates).
    pub fn lost(&self) -> i64 {
        self.lost_before + self.current_lost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_parses() {
        let mut buf = [0u8; HEADER + 3];
        write_header(&mut buf, true, 0, 65535, 160, 0xdead_beef);
        buf[HEADER..].copy_from_slice(&[1, 2, 3]);
        let p = parse(&buf).unwrap();
        assert_eq!((p.pt, p.seq, p.ts, p.ssrc), (0, 65535, 160, 0xdead_beef));
        assert_eq!(p.payload, &[1, 2, 3]);
        assert!(parse(&buf[..5]).is_none());
    }

    #[test]
    fn counts_gaps_across_wrap() {
        let mut t = SeqTracker::default();
        for s in [65533u16, 65534, 65535, 1, 2] {
            t.on_packet(7, s);
        }
        assert_eq!(t.lost(), 1);
        t.on_packet(8, 100);
        t.on_packet(8, 101);
        assert_eq!(t.lost(), 1);
        assert_eq!(t.sources, 2);
    }
}
