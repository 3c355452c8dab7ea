//! RTP packets (RFC 3550 §5.1): parse a received datagram into its fixed header and
//! payload, and write the packets we send.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           timestamp                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                             SSRC                              |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |            CSRC list (CC entries), header extension (X)       |
//! |            payload ... | padding | padding count (P)          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Parsing never panics and borrows the payload from the datagram; writing reuses
//! the caller's buffer, so neither allocates on the steady path.
//!
//! ```
//! use bridge::rtp::{self, RtpHeader};
//!
//! let h = RtpHeader { marker: true, payload_type: 0, sequence: 7, timestamp: 160, ssrc: 42 };
//! let mut pkt = Vec::new();
//! rtp::write(&h, &[0xFF; 160], &mut pkt);
//! let (parsed, payload) = rtp::parse(&pkt).unwrap();
//! assert_eq!(parsed, h);
//! assert_eq!(payload.len(), 160);
//! ```

/// Length of the fixed RTP header (no CSRCs, no extension).
pub const HEADER_LEN: usize = 12;

/// The only RTP version in use (RFC 3550).
pub const VERSION: u8 = 2;

/// The fields of an RTP header that a G.711 stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// M bit: first packet of a talkspurt for audio, first packet of an event for
    /// RFC 4733.
    pub marker: bool,
    /// Payload type, 0..=127.
    pub payload_type: u8,
    /// Sequence number, +1 per packet sent, wrapping.
    pub sequence: u16,
    /// Sampling instant of the first octet of the payload, in clock units
    /// (1/8000 s for G.711 and `telephone-event/8000`).
    pub timestamp: u32,
    /// Synchronisation source: the sender's random stream id.
    pub ssrc: u32,
}

/// Why a datagram is not a valid RTP packet.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    /// Fewer bytes than the fixed header.
    #[error("RTP packet is {0} bytes long, shorter than the 12-byte fixed header")]
    TooShort(usize),
    /// The version field is not 2 (version 0 is often STUN or other traffic).
    #[error("RTP version is {0}, expected 2")]
    BadVersion(u8),
    /// The CSRC count promises more bytes than the packet has.
    #[error(
        "RTP header lists {count} CSRCs, needing {needed} bytes, but the packet is {len} bytes"
    )]
    CsrcPastEnd {
        /// The CC field.
        count: u8,
        /// Header bytes the CSRC list needs.
        needed: usize,
        /// Bytes in the packet.
        len: usize,
    },
    /// The header extension (X bit) runs past the end of the packet.
    #[error("RTP header extension needs {needed} bytes of header, but the packet is {len} bytes")]
    ExtensionPastEnd {
        /// Header bytes the extension needs.
        needed: usize,
        /// Bytes in the packet.
        len: usize,
    },
    /// The padding count (P bit) is zero or larger than what follows the header.
    #[error("RTP padding count is {padding}, but only {available} bytes follow the header")]
    BadPadding {
        /// The last byte of the packet.
        padding: u8,
        /// Bytes after the header, padding included.
        available: usize,
    },
}

/// Parses one datagram: the header, and the payload with CSRCs, header extension
/// and padding removed.
pub fn parse(pkt: &[u8]) -> Result<(RtpHeader, &[u8]), RtpError> {
    let &[b0, b1, s0, s1, t0, t1, t2, t3, c0, c1, c2, c3, ..] = pkt else {
        return Err(RtpError::TooShort(pkt.len()));
    };
    let version = b0 >> 6;
    if version != VERSION {
        return Err(RtpError::BadVersion(version));
    }
    let len = pkt.len();
    let csrc_count = b0 & 0x0F;
    let mut start = HEADER_LEN + 4 * usize::from(csrc_count);
    if start > len {
        return Err(RtpError::CsrcPastEnd {
            count: csrc_count,
            needed: start,
            len,
        });
    }
    if b0 & 0x10 != 0 {
        let Some(&[_, _, w0, w1]) = pkt.get(start..start + 4) else {
            return Err(RtpError::ExtensionPastEnd {
                needed: start + 4,
                len,
            });
        };
        start += 4 + 4 * usize::from(u16::from_be_bytes([w0, w1]));
        if start > len {
            return Err(RtpError::ExtensionPastEnd { needed: start, len });
        }
    }
    let mut end = len;
    if b0 & 0x20 != 0 {
        // The count includes itself, so it is at least 1 and must lie after the
        // header.
        let available = len - start;
        let padding = pkt[len - 1];
        if padding == 0 || usize::from(padding) > available {
            return Err(RtpError::BadPadding { padding, available });
        }
        end -= usize::from(padding);
    }
    let header = RtpHeader {
        marker: b1 & 0x80 != 0,
        payload_type: b1 & 0x7F,
        sequence: u16::from_be_bytes([s0, s1]),
        timestamp: u32::from_be_bytes([t0, t1, t2, t3]),
        ssrc: u32::from_be_bytes([c0, c1, c2, c3]),
    };
    Ok((header, &pkt[start..end]))
}

/// Writes a packet into `out` (cleared first): the 12-byte header (no CSRCs, no
/// extension, no padding) and `payload`. Only the low 7 bits of the payload type
/// are used.
pub fn write(h: &RtpHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(HEADER_LEN + payload.len());
    let marker = if h.marker { 0x80 } else { 0 };
    out.push(VERSION << 6);
    out.push(marker | (h.payload_type & 0x7F));
    out.extend_from_slice(&h.sequence.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

/// True if a datagram looks like RTCP rather than RTP (RFC 5761 §4: packet types
/// 192..=223 sit where RTP's marker and payload type are). We do not offer
/// `rtcp-mux`, but some peers send RTCP to the RTP port anyway.
pub fn looks_like_rtcp(pkt: &[u8]) -> bool {
    matches!(pkt, [b0, 192..=223, ..] if b0 >> 6 == VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RtpHeader {
        RtpHeader {
            marker: false,
            payload_type: 8,
            sequence: 0xBEEF,
            timestamp: 0xDEAD_BEEF,
            ssrc: 0x0123_4567,
        }
    }

    #[test]
    fn round_trip_and_wire_layout() {
        let h = RtpHeader {
            marker: true,
            ..header()
        };
        let mut pkt = vec![0xAA; 3]; // stale content is cleared
        write(&h, &[1, 2, 3], &mut pkt);
        assert_eq!(
            pkt,
            [0x80, 0x88, 0xBE, 0xEF, 0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x23, 0x45, 0x67, 1, 2, 3]
        );
        assert_eq!(parse(&pkt), Ok((h, &[1u8, 2, 3][..])));

        let h = RtpHeader {
            payload_type: 0xFF, // only 7 bits go out
            ..header()
        };
        write(&h, &[], &mut pkt);
        assert_eq!(pkt.len(), HEADER_LEN);
        let (parsed, payload) = parse(&pkt).unwrap();
        assert_eq!(parsed.payload_type, 0x7F);
        assert!(!parsed.marker);
        assert!(payload.is_empty());
    }

    /// A packet with two CSRCs, a one-word extension and 3 bytes of padding.
    fn full_packet() -> Vec<u8> {
        let mut p = vec![0xB2, 0x00, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9];
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]); // CSRCs
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]); // extension
        p.extend_from_slice(&[7, 8, 9]); // payload
        p.extend_from_slice(&[0, 0, 3]); // padding
        p
    }

    #[test]
    fn skips_csrcs_extension_and_padding() {
        let pkt = full_packet();
        let (h, payload) = parse(&pkt).unwrap();
        assert_eq!(payload, [7, 8, 9]);
        assert_eq!(h.sequence, 1);
        assert_eq!(h.timestamp, 160);
        assert_eq!(h.ssrc, 9);
    }

    #[test]
    fn malformed_packets() {
        let mut short_ext = vec![0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        short_ext.extend_from_slice(&[0xBE, 0xDE, 0, 2, 0, 0, 0, 0]); // says 2 words, has 1
        let cases: Vec<(Vec<u8>, RtpError)> = vec![
            (vec![], RtpError::TooShort(0)),
            (vec![0x80; 11], RtpError::TooShort(11)),
            (vec![0x00; 12], RtpError::BadVersion(0)),
            (vec![0x40; 20], RtpError::BadVersion(1)),
            (vec![0xC0; 20], RtpError::BadVersion(3)),
            (
                // CC = 3 needs 24 bytes
                [&[0x83u8][..], &[0; 19]].concat(),
                RtpError::CsrcPastEnd {
                    count: 3,
                    needed: 24,
                    len: 20,
                },
            ),
            (
                // X set, but no room for the extension header
                [&[0x90u8][..], &[0; 13]].concat(),
                RtpError::ExtensionPastEnd {
                    needed: 16,
                    len: 14,
                },
            ),
            (
                short_ext,
                RtpError::ExtensionPastEnd {
                    needed: 24,
                    len: 20,
                },
            ),
            (
                // padding of 5 with 4 bytes after the header
                [&[0xA0u8][..], &[0; 14], &[5]].concat(),
                RtpError::BadPadding {
                    padding: 5,
                    available: 4,
                },
            ),
            (
                // padding bit with a zero count
                [&[0xA0u8][..], &[0; 12]].concat(),
                RtpError::BadPadding {
                    padding: 0,
                    available: 1,
                },
            ),
            (
                // padding bit on a header-only packet: the count byte is header
                [&[0xA0u8][..], &[0; 10], &[1]].concat(),
                RtpError::BadPadding {
                    padding: 1,
                    available: 0,
                },
            ),
        ];
        for (pkt, err) in cases {
            assert_eq!(parse(&pkt), Err(err), "{pkt:02x?}");
        }
    }

    #[test]
    fn padding_may_fill_the_whole_payload() {
        let pkt = [&[0xA0u8][..], &[0; 11], &[0, 0, 3]].concat();
        assert_eq!(parse(&pkt).map(|(_, p)| p.len()), Ok(0));
    }

    #[test]
    fn truncations_of_a_valid_packet_never_panic() {
        let full = full_packet();
        for len in 0..full.len() {
            let _ = parse(&full[..len]);
        }
        for byte in 0..=255u8 {
            let mut p = full.clone();
            p[0] = byte;
            let _ = parse(&p);
        }
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        assert_eq!(
            RtpError::CsrcPastEnd {
                count: 3,
                needed: 24,
                len: 20
            }
            .to_string(),
            "RTP header lists 3 CSRCs, needing 24 bytes, but the packet is 20 bytes"
        );
    }

    #[test]
    fn rtcp_is_recognised() {
        assert!(looks_like_rtcp(&[0x81, 200, 0, 6]));
        assert!(looks_like_rtcp(&[0x80, 201, 0, 1]));
        let mut rtp = Vec::new();
        write(&header(), &[0; 4], &mut rtp);
        assert!(!looks_like_rtcp(&rtp));
        assert!(!looks_like_rtcp(&[0x00, 200]));
        assert!(!looks_like_rtcp(&[0x80]));
    }
}
