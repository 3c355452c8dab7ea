//! Endpoints: everything a call connects, as the call's 20 ms clock sees it.
//!
//! Each endpoint hears and says 20 ms frames of 8 kHz PCM16 ([`Endpoint`]);
//! its signalling (answered, hung up, keys; a bot's protocol actions; a
//! flow's dials) goes to the [`Call`](crate::call::Call) as inputs through
//! the call's driver. The endpoints are:
//!
//! - phone legs ([`PhoneLeg`]: a SIP leg, a virtual phone): the caller and
//!   the legs a transfer rings;
//! - the bot ([`bot::BotEp`]): its protocol session and its socket;
//! - a flow ([`flow::FlowEp`]): an IVR run, whose prompts the caller hears;
//! - hold audio ([`Hold`]): what a caller on hold hears;
//! - taps ([`Tap`]): they hear the caller's conversation without taking part.
//!   The recorder is one.
//!
//! **Pacing.** An endpoint on the clock is stepped once a tick
//! ([`Endpoint::step`]); two bridged on the clock are stepped as a pair
//! ([`step_pair`]). A phone heard by a bot is taken *eagerly* instead, each
//! frame as soon as it is complete, and the bot's audio goes out at once
//! after silence: that is the hot path of every bot call, and the driver's
//! own. The caller's pacing changes from eager to clocked when it is bridged
//! to a phone or a flow ([`PhoneLeg::set_paced`]).

pub(crate) mod bot;
pub(crate) mod flow;

use std::io;

use codecs::pcm::{Frame, SILENCE};

pub use crate::carrier::PhoneLeg;
use crate::media::wav::Recorder;

/// Something a call connects, on the call's clock.
pub trait Endpoint {
    /// One 20 ms step: the endpoint hears `heard` and says its next frame
    /// into `said`.
    fn step(&mut self, heard: &Frame, said: &mut Frame);
}

/// A phone leg on the clock: it plays what it hears and gives one frame a
/// tick, smoothing out the network's jitter.
impl<L: PhoneLeg + ?Sized> Endpoint for L {
    fn step(&mut self, heard: &Frame, said: &mut Frame) {
        self.tick(heard);
        self.next_said(said, true);
    }
}

/// One tick of two endpoints bridged on the clock. `b` goes first: `a`
/// hears what `b` says now, and `b` hears what `a` said on the tick before
/// (`b_hears` carries it from tick to tick). So the caller (`a`) hears its
/// peer without a tick's delay, and a flow's prompt or a bot's briefing is
/// heard whole, to its last frame, even when the peer leaves right after it.
/// Returns what `a` said and what `a` heard, for the taps.
pub fn step_pair(
    a: &mut (impl Endpoint + ?Sized),
    b: &mut (impl Endpoint + ?Sized),
    b_hears: &mut Frame,
) -> (Frame, Frame) {
    let mut a_said = SILENCE;
    let mut b_said = SILENCE;
    b.step(b_hears, &mut b_said);
    a.step(&b_said, &mut a_said);
    *b_hears = a_said;
    (a_said, b_said)
}

/// Hold audio: a clip played in a loop (silence without one). It hears
/// nothing.
pub struct Hold<'a> {
    clip: Option<&'a [i16]>,
    at: &'a mut usize,
}

impl<'a> Hold<'a> {
    /// The hold clip, and where in it the caller is (kept across ticks).
    pub fn new(clip: Option<&'a [i16]>, at: &'a mut usize) -> Self {
        Hold { clip, at }
    }
}

impl Endpoint for Hold<'_> {
    fn step(&mut self, _heard: &Frame, said: &mut Frame) {
        match self.clip {
            Some(clip) if !clip.is_empty() => {
                for s in said.iter_mut() {
                    *self.at %= clip.len();
                    *s = clip[*self.at];
                    *self.at += 1;
                }
            }
            _ => *said = SILENCE,
        }
    }
}

/// Something that hears the caller's conversation without taking part: the
/// recorder, and next a listener. The two sides may come at their own times
/// (what the caller said as its packets arrive, what it heard on the clock).
pub trait Tap: Send {
    /// 20 ms of what the caller said.
    fn said(&mut self, frame: &Frame) -> io::Result<()>;
    /// 20 ms of what the caller heard.
    fn heard(&mut self, frame: &Frame) -> io::Result<()>;
    /// Both sides of the same 20 ms.
    fn both(&mut self, said: &Frame, heard: &Frame) -> io::Result<()> {
        self.said(said)?;
        self.heard(heard)
    }
    /// The call has ended. Returns what the call log keeps of the tap (a
    /// recording's file name), if anything.
    fn finish(self: Box<Self>) -> io::Result<Option<String>>;
}

impl Tap for Recorder {
    fn said(&mut self, frame: &Frame) -> io::Result<()> {
        Recorder::said(self, frame)
    }
    fn heard(&mut self, frame: &Frame) -> io::Result<()> {
        Recorder::heard(self, frame)
    }
    fn both(&mut self, said: &Frame, heard: &Frame) -> io::Result<()> {
        self.write(said, heard)
    }
    fn finish(self: Box<Self>) -> io::Result<Option<String>> {
        let path = Recorder::finish(*self)?;
        Ok(path.file_name().map(|n| n.to_string_lossy().into_owned()))
    }
}

/// Hands audio to every tap; a tap that fails is dropped (the call goes on
/// without it). On the bot path this runs twice a frame, so it is a plain
/// loop with nothing to do but the calls.
#[inline]
pub(crate) fn tap(
    taps: &mut Vec<Box<dyn Tap>>,
    mut give: impl FnMut(&mut dyn Tap) -> io::Result<()>,
) {
    let mut i = 0;
    while i < taps.len() {
        match give(&mut *taps[i]) {
            Ok(()) => i += 1,
            Err(e) => {
                tracing::error!("a tap stopped (the recording, if it was): {e}");
                taps.remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Says a constant, remembers what it heard.
    struct Const(i16, Vec<i16>);
    impl Endpoint for Const {
        fn step(&mut self, heard: &Frame, said: &mut Frame) {
            self.1.push(heard[0]);
            *said = [self.0; codecs::pcm::FRAME_SAMPLES];
        }
    }

    #[test]
    fn a_hears_b_at_once_and_b_hears_a_a_tick_later() {
        let (mut a, mut b) = (Const(1, vec![]), Const(2, vec![]));
        let mut b_hears = SILENCE;
        for _ in 0..3 {
            let (said, heard) = step_pair(&mut a, &mut b, &mut b_hears);
            assert_eq!((said[0], heard[0]), (1, 2));
        }
        assert_eq!(a.1, vec![2, 2, 2]);
        assert_eq!(b.1, vec![0, 1, 1]);
    }

    #[test]
    fn hold_loops_its_clip_and_is_silent_without_one() {
        let clip = [1i16, 2, 3];
        let mut at = 0;
        let mut said = SILENCE;
        Hold::new(Some(&clip), &mut at).step(&SILENCE, &mut said);
        assert_eq!(&said[..4], &[1, 2, 3, 1]);
        Hold::new(Some(&clip), &mut at).step(&SILENCE, &mut said);
        assert_eq!(
            said[0], 2,
            "the next frame goes on where the last one ended"
        );
        Hold::new(None, &mut at).step(&SILENCE, &mut said);
        assert_eq!(said, SILENCE);
    }
}
