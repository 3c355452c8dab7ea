//! The bridge: puts phone calls on WebSockets to voice bots.
//!
//! - [`call`]: one call's decisions ([`call::state::Call`], sans-I/O) and the
//!   thin driver that runs it on its 20 ms clock.
//! - [`session`] and [`media`]: one call's bot protocol and playout queue, sans-I/O.
//! - [`carrier`]: the phone side of a call (`PhoneLeg`), and the simulated carrier.
//! - [`sip`]: the SIP user agent and its leg, with the sans-I/O media under it
//!   ([`sdp`], [`rtp`], [`rtpstream`], [`jitter`], re-exported here).
//! - [`botlink`]: the bot's WebSocket (connect, I/O task, liveness).
//! - [`engine`]: routes numbers and DIDs, and starts each call.
//! - [`store`]: SQLite persistence; [`wav`]: recordings.
//! - [`api`]: the REST API; [`server`]: start-up and shutdown of the whole.

pub mod api;
pub mod botlink;
pub mod call;
pub mod carrier;
pub mod config;
pub mod engine;
pub mod flow;
pub mod media;
pub mod metrics;
pub mod server;
pub mod session;
pub mod sip;
pub mod store;
pub mod wav;

pub use sip::{jitter, rtp, rtpstream, sdp};
