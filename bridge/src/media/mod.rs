//! Media that every endpoint shares, sans-I/O: the jitter buffer that turns
//! a network's packets into a steady 20 ms stream ([`jitter`]), the playout
//! queue of bot audio with its marks ([`playout`]), and the recorder tap and
//! WAV files ([`wav`]).

pub mod jitter;
pub mod playout;
pub mod wav;

pub use playout::Playout;
