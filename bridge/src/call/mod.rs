//! A call: its decisions as a sans-I/O state machine ([`state`]) and the thin
//! driver that runs it on sockets and a clock ([`driver`]).

pub(crate) mod driver;
pub mod state;

pub use state::{
    AttemptOutcome, AttendedBy, Call, CallConfig, DialFailure, DialTarget, End, EndReason, EpId,
    Output, Peer, Start, TransferFailure, TransferRequest, CALLER,
};
