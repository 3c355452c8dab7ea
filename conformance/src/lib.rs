//! Conformance checks for the bot WebSocket protocol (`protocol/PROTOCOL.md`).
//!
//! This release has the checks on a stream of bridge → bot events, which the
//! bridge's own end-to-end tests use and which `conformance check-stream` runs on
//! a captured session. The `bot` and `bridge` suites build on them.

pub mod stream;
