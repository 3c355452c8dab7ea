//! The phone side of a call, and the simulated carrier.
//!
//! A [`PhoneLeg`] is one endpoint of a call on the phone side. It is driven by
//! the call's 20 ms clock: each tick it hears a frame and says a frame, and
//! between ticks it reports signalling (ringing, answered, busy, hung up, keys).
//! The simulated carrier's [`VirtualPhone`] is a sans-I/O leg whose behaviour
//! comes from its number; SIP legs plug in behind the same trait.

use std::sync::Arc;

use codecs::dtmf::Detector;
use codecs::pcm::{Frame, FRAME_SAMPLES};

use crate::config::{CarrierConfig, PhoneConfig};

/// Something the phone side did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// The far end is ringing.
    Ringing,
    /// The far end answered: media flows.
    Answered,
    /// The far end is busy.
    Busy,
    /// Nobody answered (the far end gave up ringing, e.g. SIP 408/480).
    NoAnswer {
        /// The SIP code, kept in the call log.
        code: u16,
    },
    /// The call could not be placed.
    Failed {
        /// A SIP-style code (e.g. 503), kept in the call log.
        code: u16,
        /// Why, for a person.
        reason: String,
    },
    /// The far end hung up after answering.
    HungUp,
    /// The far end pressed a key.
    Dtmf {
        /// The key.
        digit: char,
        /// How long it was held.
        duration_ms: u32,
    },
}

/// One phone-side endpoint of a call.
pub trait PhoneLeg: Send {
    /// One 20 ms step of the call's clock: `heard` is what the bridge plays to
    /// the phone now.
    fn tick(&mut self, heard: &Frame);
    /// The phone's next 20 ms, into `said`. Paced (once per tick, for another
    /// phone on the same clock) it always fills `said`, the leg smoothing out
    /// the network's jitter. Not paced (for a bot, which takes audio as it
    /// comes) it gives each frame as soon as it is complete, and false when
    /// none is. Say the same `paced` on every call, until
    /// [`set_paced`](PhoneLeg::set_paced).
    fn next_said(&mut self, said: &mut Frame, paced: bool) -> bool;
    /// From now on the phone's audio is taken paced (`next_said(.., true)`):
    /// the leg was heard by a bot and is now bridged to another phone.
    fn set_paced(&mut self) {}
    /// Ready when something came in from the phone, which
    /// [`next_said`](PhoneLeg::next_said) and [`poll_event`](PhoneLeg::poll_event)
    /// then give. Legs whose audio comes on ticks are never ready.
    fn poll_arrival(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Pending
    }
    /// True when the leg can play a frame at once, ahead of the next tick (the
    /// first frame of bot audio after silence); false when it plays only on
    /// ticks, or cannot now.
    fn ready_to_play_now(&self) -> bool {
        false
    }
    /// Plays `heard` at once; only when [`ready_to_play_now`](PhoneLeg::ready_to_play_now).
    fn play_now(&mut self, _heard: &Frame) {}
    /// One 20 ms step of the clock whose frame is held for bot audio that is
    /// a little late: everything [`tick`](PhoneLeg::tick) does but play. The
    /// frame follows with [`play_held`](PhoneLeg::play_held), or the slot is
    /// given up with [`skip_held`](PhoneLeg::skip_held). Only asked of legs
    /// [`ready_to_play_now`](PhoneLeg::ready_to_play_now).
    fn tick_held(&mut self) {
        self.tick(&codecs::pcm::SILENCE);
    }
    /// Plays the held tick's frame, late, in its place in the stream.
    fn play_held(&mut self, _heard: &Frame) {}
    /// Gives up the held tick's slot: nothing is played for it.
    fn skip_held(&mut self) {}
    /// The next signalling event, if any.
    fn poll_event(&mut self) -> Option<LegEvent>;
    /// True when keys can be sent out of band ([`PhoneLeg::send_dtmf`]); false
    /// when the bridge must play them as tones in the audio.
    fn takes_out_of_band_dtmf(&self) -> bool;
    /// Sends one key out of band; false when the far end cannot take it that
    /// way (the caller then plays it as tones).
    fn send_dtmf(&mut self, digit: char) -> bool;
    /// True while keys sent out of band are still going out.
    fn is_sending_dtmf(&self) -> bool {
        false
    }
    /// Answers an inbound call (legs that ring us); outbound legs ignore it.
    fn answer(&mut self) {}
    /// Ends the leg (cancel while ringing, hang up once answered).
    fn hangup(&mut self);
    /// What the leg observed, for the call log (virtual phones report what they heard).
    fn report(&self) -> Option<serde_json::Value>;
}

/// Where a number goes.
pub enum Route {
    /// A virtual phone of the simulated carrier.
    Virtual(Box<dyn PhoneLeg>),
    /// Nothing can reach this number.
    NoRoute(String),
}

/// How the phone ends the ringing phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Picks up.
    Answer,
    /// Answers busy.
    Busy,
    /// Rings until the caller gives up.
    NoAnswer,
    /// The network fails the call.
    Fail,
}

/// A virtual phone's behaviour, all times in 20 ms ticks.
#[derive(Clone)]
pub struct Behaviour {
    /// How the ringing ends.
    pub outcome: Outcome,
    /// Ticks of ringing before the outcome.
    pub ring_ticks: u32,
    /// Audio said once after answering.
    pub speech: Option<Arc<[i16]>>,
    /// Ticks after answer before speaking.
    pub speak_after: u32,
    /// Keys pressed after answering.
    pub press: String,
    /// Ticks after answer before the first key.
    pub press_after: u32,
    /// Ticks between keys.
    pub press_every: u32,
    /// Hang up this many ticks after answering.
    pub hangup_after: Option<u32>,
}

const TICK_MS: u32 = 20;
/// How long a virtual phone holds each key it presses.
const KEY_MS: u32 = 100;

fn ticks(ms: u32) -> u32 {
    ms.div_ceil(TICK_MS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhoneState {
    Dialing,
    Ringing,
    Answered,
    Ended,
}

/// A simulated phone: rings, answers, speaks, presses keys, hangs up, and listens.
pub struct VirtualPhone {
    b: Behaviour,
    state: PhoneState,
    /// Ticks since the call was placed.
    t: u32,
    /// Tick of the answer.
    answered_at: u32,
    events: std::collections::VecDeque<LegEvent>,
    speech_pos: usize,
    keys_pressed: usize,
    detector: Detector,
    heard_dtmf: Vec<char>,
    heard_voice_ticks: u32,
    heard_ticks: u32,
    said_ticks: u32,
    /// What the phone said on the last tick, until taken.
    said: Option<Frame>,
}

impl VirtualPhone {
    /// A phone that behaves as `b` says.
    pub fn new(b: Behaviour) -> Self {
        VirtualPhone {
            b,
            state: PhoneState::Dialing,
            t: 0,
            answered_at: 0,
            events: Default::default(),
            speech_pos: 0,
            keys_pressed: 0,
            detector: Detector::new(),
            heard_dtmf: Vec::new(),
            heard_voice_ticks: 0,
            heard_ticks: 0,
            said_ticks: 0,
            said: None,
        }
    }

    fn advance_signalling(&mut self) {
        match self.state {
            PhoneState::Dialing => {
                if self.b.outcome == Outcome::Fail && self.t >= self.b.ring_ticks {
                    self.state = PhoneState::Ended;
                    self.events.push_back(LegEvent::Failed {
                        code: 503,
                        reason: "the simulated network failed the call".into(),
                    });
                } else if self.b.outcome != Outcome::Fail {
                    self.state = PhoneState::Ringing;
                    self.events.push_back(LegEvent::Ringing);
                }
            }
            PhoneState::Ringing if self.t >= self.b.ring_ticks => match self.b.outcome {
                Outcome::Answer => {
                    self.state = PhoneState::Answered;
                    self.answered_at = self.t;
                    self.events.push_back(LegEvent::Answered);
                }
                Outcome::Busy => {
                    self.state = PhoneState::Ended;
                    self.events.push_back(LegEvent::Busy);
                }
                Outcome::NoAnswer | Outcome::Fail => {}
            },
            PhoneState::Answered => {
                let since = self.t - self.answered_at;
                let next_key = self.b.press_after + self.keys_pressed as u32 * self.b.press_every;
                if let Some(digit) = self.b.press.chars().nth(self.keys_pressed) {
                    // A key is reported when it is released, as RFC 4733 ends it.
                    if since >= next_key + ticks(KEY_MS) {
                        self.keys_pressed += 1;
                        self.events.push_back(LegEvent::Dtmf {
                            digit,
                            duration_ms: KEY_MS,
                        });
                    }
                }
                if self.b.hangup_after.is_some_and(|h| since >= h) {
                    self.state = PhoneState::Ended;
                    self.events.push_back(LegEvent::HungUp);
                }
            }
            _ => {}
        }
    }
}

impl PhoneLeg for VirtualPhone {
    fn tick(&mut self, heard: &Frame) {
        self.t += 1;
        let said = self.said.insert([0; FRAME_SAMPLES]);
        if self.state == PhoneState::Answered {
            self.heard_ticks += 1;
            if codecs::pcm::rms(heard) > 100.0 {
                self.heard_voice_ticks += 1;
            }
            self.detector.push(heard, &mut self.heard_dtmf);
            let since = self.t - self.answered_at;
            if let Some(speech) = self.b.speech.as_ref() {
                if since > self.b.speak_after && self.speech_pos < speech.len() {
                    let n = (speech.len() - self.speech_pos).min(FRAME_SAMPLES);
                    said[..n].copy_from_slice(&speech[self.speech_pos..self.speech_pos + n]);
                    self.speech_pos += n;
                    self.said_ticks += 1;
                }
            }
        }
        self.advance_signalling();
    }

    fn next_said(&mut self, said: &mut Frame, paced: bool) -> bool {
        match self.said.take() {
            Some(frame) => *said = frame,
            None if paced => said.fill(0),
            None => return false,
        }
        true
    }

    fn poll_event(&mut self) -> Option<LegEvent> {
        self.events.pop_front()
    }

    fn takes_out_of_band_dtmf(&self) -> bool {
        false
    }

    fn send_dtmf(&mut self, _digit: char) -> bool {
        // Virtual phones hear keys as tones only.
        false
    }

    fn hangup(&mut self) {
        self.state = PhoneState::Ended;
    }

    fn report(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "heard_dtmf": self.heard_dtmf.iter().collect::<String>(),
            "heard_ms": self.heard_ticks * TICK_MS,
            "heard_voice_ms": self.heard_voice_ticks * TICK_MS,
            "said_ms": self.said_ticks * TICK_MS,
        }))
    }
}

/// The built-in speech sample (see `bridge/assets/README.md`).
pub fn builtin_speech() -> Arc<[i16]> {
    static SPEECH: std::sync::OnceLock<Arc<[i16]>> = std::sync::OnceLock::new();
    SPEECH
        .get_or_init(|| {
            crate::wav::parse(include_bytes!("../../assets/speech.wav"))
                .map(|p| p.samples.into())
                .unwrap_or_else(|_| Arc::from(Vec::new()))
        })
        .clone()
}

/// The simulated carrier: maps numbers to virtual phones.
pub struct SimCarrier {
    phones: Vec<(PhoneConfig, Option<Arc<[i16]>>)>,
}

/// A configured phone's audio file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("carrier phone {prefix}: cannot use {path}: {source}")]
pub struct CarrierError {
    prefix: String,
    path: String,
    source: crate::wav::WavError,
}

impl SimCarrier {
    /// The built-in numbering plus the phones from the config.
    pub fn new(cfg: &CarrierConfig) -> Result<Self, CarrierError> {
        let mut phones = Vec::new();
        for p in &cfg.phones {
            let audio = match p.play.as_str() {
                "speech" => Some(builtin_speech()),
                "silence" | "" => None,
                path => {
                    let pcm = crate::wav::read(std::path::Path::new(path)).map_err(|source| {
                        CarrierError {
                            prefix: p.prefix.clone(),
                            path: path.into(),
                            source,
                        }
                    })?;
                    Some(Arc::from(pcm.channel(0)))
                }
            };
            phones.push((p.clone(), audio));
        }
        phones.sort_by_key(|(p, _)| std::cmp::Reverse(p.prefix.len()));
        Ok(SimCarrier { phones })
    }

    /// The virtual phone for `number` (normalised), if the carrier has one.
    pub fn behaviour(&self, number: &str) -> Option<Behaviour> {
        if let Some((p, audio)) = self
            .phones
            .iter()
            .find(|(p, _)| number.starts_with(&p.prefix))
        {
            return Some(Behaviour {
                outcome: match p.outcome.as_str() {
                    "busy" => Outcome::Busy,
                    "no-answer" => Outcome::NoAnswer,
                    "fail" => Outcome::Fail,
                    _ => Outcome::Answer,
                },
                ring_ticks: ticks(p.ring_ms),
                speech: audio.clone(),
                speak_after: ticks(p.speak_after_ms),
                press: p.press.clone(),
                press_after: ticks(p.press_after_ms),
                press_every: ticks(p.press_interval_ms).max(1),
                hangup_after: p.hangup_after_ms.map(ticks),
            });
        }
        let rest = number.strip_prefix("+999")?;
        let mut b = Behaviour {
            outcome: Outcome::Answer,
            ring_ticks: ticks(500),
            speech: None,
            speak_after: ticks(200),
            press: String::new(),
            press_after: ticks(1000),
            press_every: ticks(300),
            hangup_after: None,
        };
        match rest.chars().next()? {
            '1' => b.speech = Some(builtin_speech()),
            '2' => {
                b.outcome = Outcome::Busy;
                b.ring_ticks = ticks(200);
            }
            '3' => b.outcome = Outcome::NoAnswer,
            '4' => {
                b.outcome = Outcome::Fail;
                b.ring_ticks = ticks(100);
            }
            '5' => b.press = rest[1..].to_string(),
            _ => return None,
        }
        Some(b)
    }

    /// Places a call to `number`.
    pub fn dial(&self, number: &str) -> Route {
        match self.behaviour(number) {
            Some(b) => Route::Virtual(Box::new(VirtualPhone::new(b))),
            None => Route::NoRoute(format!(
                "no route to {number}: it is not a simulated-carrier number and no SIP trunk is configured"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(phone: &mut VirtualPhone, n: u32) -> Vec<(u32, LegEvent)> {
        let heard = [0i16; FRAME_SAMPLES];
        let mut said = [0i16; FRAME_SAMPLES];
        let mut out = vec![];
        for t in 1..=n {
            phone.tick(&heard);
            assert!(phone.next_said(&mut said, false));
            while let Some(e) = phone.poll_event() {
                out.push((t, e));
            }
        }
        out
    }

    fn carrier() -> SimCarrier {
        SimCarrier::new(&CarrierConfig::default()).unwrap()
    }

    #[test]
    fn speech_phone_rings_answers_after_half_a_second_and_speaks() {
        let b = carrier().behaviour("+99910001").unwrap();
        let mut p = VirtualPhone::new(b);
        let ev = run(&mut p, 30);
        assert_eq!(ev, vec![(1, LegEvent::Ringing), (25, LegEvent::Answered)]);
        let heard = [0i16; FRAME_SAMPLES];
        let mut said = [0i16; FRAME_SAMPLES];
        let mut voiced = 0;
        for _ in 0..400 {
            p.tick(&heard);
            assert!(p.next_said(&mut said, false));
            if codecs::pcm::rms(&said) > 50.0 {
                voiced += 1;
            }
        }
        assert!(voiced > 50, "the phone spoke ({voiced} voiced frames)");
        assert!(p.poll_event().is_none(), "and stayed on the line");
    }

    #[test]
    fn outcomes_by_number() {
        let c = carrier();
        let outcome = |n: &str| {
            let mut p = VirtualPhone::new(c.behaviour(n).unwrap());
            run(&mut p, 100)
                .into_iter()
                .map(|(_, e)| e)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            outcome("+99920000"),
            vec![LegEvent::Ringing, LegEvent::Busy]
        );
        assert_eq!(outcome("+99930000"), vec![LegEvent::Ringing]);
        assert!(matches!(
            outcome("+99940000").as_slice(),
            [LegEvent::Failed { code: 503, .. }]
        ));
        assert!(c.behaviour("+14155550100").is_none());
        assert!(matches!(c.dial("+14155550100"), Route::NoRoute(_)));
    }

    #[test]
    fn key_phone_presses_its_digits_once_each_300ms_apart() {
        let b = carrier().behaviour("+99951234").unwrap();
        let mut p = VirtualPhone::new(b);
        let ev = run(&mut p, 200);
        let keys: Vec<(u32, char)> = ev
            .into_iter()
            .filter_map(|(t, e)| match e {
                LegEvent::Dtmf { digit, .. } => Some((t, digit)),
                _ => None,
            })
            .collect();
        let answered = 25;
        assert_eq!(
            keys,
            vec![
                (answered + 55, '1'),
                (answered + 70, '2'),
                (answered + 85, '3'),
                (answered + 100, '4')
            ]
        );
    }

    #[test]
    fn configured_phone_wins_over_builtin_and_hangs_up() {
        let cfg: crate::config::Config = crate::config::Config::parse(
            "[[carrier.phones]]\nprefix = \"+99910\"\nring_ms = 100\nhangup_after_ms = 200\n",
        )
        .unwrap();
        let c = SimCarrier::new(&cfg.carrier).unwrap();
        let mut p = VirtualPhone::new(c.behaviour("+99910001").unwrap());
        let ev: Vec<_> = run(&mut p, 30).into_iter().map(|(_, e)| e).collect();
        assert_eq!(
            ev,
            vec![LegEvent::Ringing, LegEvent::Answered, LegEvent::HungUp]
        );
    }

    #[test]
    fn phone_detects_tones_it_hears() {
        let b = carrier().behaviour("+99910001").unwrap();
        let mut p = VirtualPhone::new(b);
        run(&mut p, 30);
        let mut seq = codecs::dtmf::ToneSequencer::new("42", 100, 60);
        let mut heard = [0i16; FRAME_SAMPLES];
        for _ in 0..30 {
            seq.next_frame(&mut heard);
            p.tick(&heard);
        }
        assert_eq!(p.report().unwrap()["heard_dtmf"], "42");
    }
}
