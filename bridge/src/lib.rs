//! The bridge: puts phone calls on WebSockets to voice bots.
//!
//! - [`session`] and [`media`]: one call's bot protocol and playout queue, sans-I/O.
//! - [`carrier`]: the phone side of a call, and the simulated carrier.
//! - [`botlink`]: the bot's WebSocket (connect, I/O task, liveness).
//! - [`engine`]: places calls and runs each on its 20 ms clock.
//! - [`store`]: SQLite persistence; [`wav`]: recordings.
//! - [`api`]: the REST API; [`server`]: start-up and shutdown of the whole.

pub mod api;
pub mod botlink;
pub mod call;
pub mod carrier;
pub mod config;
pub mod engine;
pub mod jitter;
pub mod media;
pub mod metrics;
pub mod rtp;
pub mod rtpstream;
pub mod sdp;
pub mod server;
pub mod session;
pub mod sip;
pub mod store;
pub mod wav;
