//! The bot WebSocket protocol: the JSON messages a call's bridge and a bot
//! exchange, as plain types with a writer and strict parsers.
//!
//! The contract itself is `PROTOCOL.md`, next to this crate's `Cargo.toml`; this
//! crate is its executable form. It has no I/O: callers hand it
//! text they received and get typed values back, or hand it values and get text to
//! send. Both directions are here so the bridge, example bots, tests and the
//! conformance suite all speak through the same code.
//!
//! - [`event`]: bridge → bot. [`write_event`] appends one event's JSON to a reused
//!   `String` without other allocation (it runs for every 20 ms media frame of every
//!   call); [`parse_event`] reads events back, strictly, as a bot would.
//! - [`command`]: bot → bridge. [`parse_command`] turns one text frame into a
//!   [`Command`] or a [`CommandError`] whose [`ErrorCode`] and message are sent to
//!   the bot in an `error` event; audio deltas are base64-decoded straight into a
//!   caller-owned buffer. [`command_json`] writes commands as a bot would.
//!
//! ```
//! use protocol::{parse_command, write_event, Command, Event};
//!
//! let mut audio = Vec::new();
//! let cmd = parse_command(
//!     r#"{"type":"response.audio.delta","delta":"AAD/fw=="}"#,
//!     &mut audio,
//!     protocol::MAX_MESSAGE_BYTES,
//! )?;
//! assert_eq!(cmd, Command::AudioDelta);
//! assert_eq!(audio, [0x00, 0x00, 0xff, 0x7f]);
//!
//! let mut out = String::new();
//! write_event(&mut out, "MZ1", 7, &Event::Mark { name: "intro_complete" });
//! assert_eq!(
//!     out,
//!     r#"{"event":"mark","sequence_number":7,"stream_sid":"MZ1","mark":{"name":"intro_complete"}}"#
//! );
//! # Ok::<(), protocol::CommandError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Defines a fieldless enum whose variants travel as fixed strings, with
/// `as_str`, `parse`, `Display` and serde impls that use exactly those strings.
macro_rules! wire_strings {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The string that stands for this value on the wire.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The value a wire string stands for, if any (exact, case-sensitive).
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct WireVisitor;
                impl ::serde::de::Visitor<'_> for WireVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " string"))
                    }
                    fn visit_str<E: ::serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::parse(v).ok_or_else(|| E::unknown_variant(v, &[$($text),+]))
                    }
                }
                d.deserialize_str(WireVisitor)
            }
        }
    };
}

pub mod b64;
pub mod command;
pub mod event;
mod json;
pub mod mapping;
pub mod twilio;

pub use command::*;
pub use event::*;

/// The largest bot message the bridge accepts by default (PROTOCOL.md section 4:
/// 1 MiB), in bytes of the WebSocket frame's payload.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Describes a base64 error for a person: where it is and what is wrong.
pub(crate) fn describe_base64_error(err: &base64::DecodeError) -> String {
    use base64::DecodeError;
    match *err {
        DecodeError::InvalidByte(offset, byte) => {
            format!("invalid byte {} at offset {offset}", show_byte(byte))
        }
        DecodeError::InvalidLength(symbols) => {
            format!("{symbols} base64 symbols cannot encode whole bytes; the text looks cut short")
        }
        DecodeError::InvalidLastSymbol(offset, byte) => format!(
            "last symbol {} at offset {offset} has stray bits; the text looks cut short or altered",
            show_byte(byte)
        ),
        DecodeError::InvalidPadding => "bad `=` padding".to_owned(),
    }
}

fn show_byte(byte: u8) -> String {
    if byte.is_ascii_graphic() || byte == b' ' {
        format!("'{}'", char::from(byte))
    } else {
        format!("0x{byte:02x}")
    }
}
