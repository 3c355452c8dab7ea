//! The conformance suite for the bot WebSocket protocol (`protocol/PROTOCOL.md`).
//!
//! Two suites, one binary (`conformance`):
//! - [`botsuite`] (`conformance bot --url URL`) plays the bridge against a bot
//!   server and checks what a bridge needs from a bot;
//! - [`bridgesuite`] (`conformance bridge --api URL --token T`) plays the bot and
//!   the phone against a bridge and checks the bridge against the contract.
//!
//! Scenarios are data ([`scenario`]: TOML files under `conformance/scenarios/`)
//! driving checks written in Rust. Messages are validated against the committed
//! JSON Schema of the protocol ([`schema`]) as well as with `protocol`'s parsers.
//! Results are printed as they come and summed up in a table, a JUnit file and a
//! JSON file ([`report`]). [`stream`] holds the checks on one session's events,
//! which the bridge's own tests use too (`conformance check-stream` runs them on a
//! captured session).
//!
//! Running a suite from Rust:
//!
//! ```no_run
//! use std::sync::Arc;
//! use conformance::{botsuite, report, scenario};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let all = scenario::builtin();
//! let selected = scenario::select(&all, scenario::SuiteKind::Bot, &[], &[])?.run;
//! let opts = botsuite::BotOptions {
//!     url: "ws://127.0.0.1:9000/".into(),
//!     headers: vec![],
//!     dialect: botsuite::Dialect::Ivr,
//!     jobs: 1,
//! };
//! let report = botsuite::run(opts, selected, Arc::new(report::QuietProgress)).await?;
//! assert!(report.all_passed(), "{}", report.summary());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audio;
pub mod botsuite;
pub mod bridgesuite;
pub mod http;
pub mod report;
pub mod scenario;
pub mod schema;
pub mod stream;
