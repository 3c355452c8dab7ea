//! Audio for the telephone side of the bridge: G.711 µ-law and A-law, PCM16 frames,
//! RFC 4733 telephone-event payloads, and DTMF tone generation and detection.
//!
//! Everything here is plain computation on slices: no I/O, no clock, no async.
//! Callers feed samples or payloads in and get samples, payloads or events out,
//! so the same code serves a live call and a microsecond-fast test.
//!
//! ```
//! use codecs::{g711::Law, pcm};
//!
//! let frame: pcm::Frame = pcm::SILENCE;
//! let mut wire = [0u8; pcm::FRAME_SAMPLES];
//! Law::Ulaw.encode_slice(&frame, &mut wire);
//! assert!(wire.iter().all(|&b| b == 0xFF)); // µ-law "positive zero"
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dtmf;
pub mod format;
pub mod g711;
pub mod pcm;
pub mod resample;
pub mod rfc4733;
pub mod wav;

pub use rfc4733::Rfc4733Error;
