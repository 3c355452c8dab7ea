//! The bridge: puts phone calls on WebSockets to voice bots.
//!
//! - [`call`]: one call's decisions ([`call::state::Call`], sans-I/O) and the
//!   thin driver that runs it on its 20 ms clock.
//! - [`engine`]: places and takes calls, routes numbers and DIDs, and keeps
//!   the live-call registry ([`engine::registry`]) through which a running
//!   call takes commands.
//! - [`endpoint`]: what a call connects (phone legs, the bot, a flow, hold
//!   audio) and its taps (the recorder), as the call's clock sees them.
//! - [`botlink`]: the bot side: its protocol session ([`botlink::session`],
//!   sans-I/O) and its WebSocket (connect, I/O task, liveness).
//! - [`carrier`]: the phone side of a call (`PhoneLeg`), and the simulated carrier.
//! - [`sip`]: the SIP user agent and its leg, with its sans-I/O media
//!   ([`sdp`], [`rtp`], [`rtpstream`], re-exported here).
//! - [`media`]: the jitter buffer, the playout queue and the recorder ([`wav`]),
//!   sans-I/O.
//! - [`flow`]: IVR flows and their sans-I/O executor.
//! - [`store`]: SQLite persistence.
//! - [`api`]: the REST API; [`server`]: start-up and shutdown of the whole.

pub mod api;
pub mod botlink;
pub mod call;
pub mod carrier;
pub mod config;
pub mod endpoint;
pub mod engine;
pub mod flow;
pub mod media;
pub mod metrics;
pub mod netguard;
pub mod server;
pub mod sip;
pub mod store;

pub use media::{jitter, wav};
pub use sip::{rtp, rtpstream, sdp};
