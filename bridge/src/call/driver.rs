//! The thin driver of one call: the only `select!`, and the copying of frames.
//!
//! The driver owns a call's endpoints ([`crate::endpoint`]: the caller's
//! [`PhoneLeg`], the legs a transfer rings, the bot, a flow) and taps (the
//! recorder), and its [`Call`]. It wakes for the shutdown signal, the bot's
//! socket opening, the bot's messages, the caller's packets, the call's
//! command inbox and a 20 ms clock; it hands what happened to the [`Call`]
//! and carries out what the call asks. It decides nothing itself: who hears
//! whom is [`Call::peer`].
//!
//! Frames move in one of two ways, by who the caller's peer is:
//! - **The bot** (no phone peer): the caller's frames go to the bot as they
//!   arrive (eager), and the bot's audio goes to the caller on the clock, its
//!   first frame after silence at once. This is the hot path every bot call
//!   runs.
//! - **Anyone else, on the clock** ([`step_pair`]): a phone (a transfer
//!   target that answered, the extension a DID rings) or a flow (a bot's
//!   `session.flow_transfer`, or a fallback) is stepped with the caller; the
//!   caller hears it at once. A flow's keys come from the caller as events,
//!   and its dials and bot hand-offs go to the [`Call`] as inputs.
//! - **Nobody, while the bot briefs a warm transfer's target**: the caller
//!   hears [`Hold`] audio on the clock and is heard by no one but the taps;
//!   the bot and the target are stepped as a pair.
//!
//! Legs that ring and are not the peer hear silence and are not heard, so the
//! caller never hears early media from a target that has not won.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use codecs::pcm::{Frame, FRAME_SAMPLES, SILENCE};
use protocol::{Command, ErrorCode, StartInfo, TransferAttempt};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use chrono::{DateTime, Utc};

use super::state::{Attempt, Call, DialTarget, End, EpId, Output, Peer, TransferRequest, CALLER};
use crate::botlink::session::{Action, Played};
use crate::botlink::{self, BotInput};
use crate::carrier::{LegEvent, PhoneLeg};
use crate::endpoint::bot::{BotEp, BotWake, ConnectResult};
use crate::endpoint::flow::FlowEp;
use crate::endpoint::{step_pair, tap, Endpoint, Hold, Tap};
use crate::engine::registry::{CallCommand, CommandError, Request};
use crate::engine::{BotTarget, Engine};
use crate::flow::{FlowAction, FlowTarget};
use crate::metrics::Metrics;
use crate::store::LegRecord;
use crate::wav::Recorder;

/// Rings an extension: all its phones (and the numbers the config adds) at
/// once, as `session.transfer_extension`.
fn transfer_extension(call: &mut Call, engine: &Engine, extension: &str) {
    call.on_bot_transfer(TransferRequest {
        kind: "session.transfer_extension",
        targets: engine.extension_targets(extension),
        strategy: protocol::TransferStrategy::Simultaneous,
        timeout_s: None,
        caller_id: None,
        warm: false,
    });
}

/// A phone endpoint other than the caller: a leg a transfer rang.
struct Target {
    ep: EpId,
    leg: Box<dyn PhoneLeg>,
}

/// What a call's task needs to begin.
pub(crate) struct Setup {
    pub id: i64,
    pub call_sid: String,
    /// The `start` event the bot gets (a second bot gets a fresh `stream_sid`).
    pub start: StartInfo,
    /// The bot that takes the call, if one does.
    pub bot: Option<BotTarget>,
    pub call: Call,
}

/// Runs one call to its end and stores how it went.
pub(crate) async fn run(
    engine: Arc<Engine>,
    setup: Setup,
    caller: Box<dyn PhoneLeg>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Setup {
        id,
        call_sid,
        start,
        bot,
        call,
    } = setup;
    tracing::info!(to = %start.to, direction = ?start.direction, "call starts");
    let inband_dtmf = !caller.takes_out_of_band_dtmf();
    let bot = bot.map(|target| Box::new(BotEp::new(target, start.clone(), &engine, inband_dtmf)));
    // Boxed: the call's future then holds a pointer, not the endpoints.
    let mut d = Box::new(Driver {
        started: Utc::now(),
        engine: engine.clone(),
        id,
        call_sid,
        call,
        caller,
        caller_heard: [0; FRAME_SAMPLES],
        peer_heard: [0; FRAME_SAMPLES],
        targets: Vec::new(),
        bot,
        next_bot: None,
        start,
        taps: Vec::new(),
        bot_heard: SILENCE,
        dtmf_input: String::new(),
        closing: Vec::new(),
        end: None,
        bridged: None,
        reports: Vec::new(),
        gauges: (0, 0),
        hold_at: 0,
        flow: None,
        caller_paced: false,
    });
    engine
        .metrics()
        .calls_active
        .fetch_add(1, Ordering::Relaxed);

    let mut clock = tokio::time::interval(Duration::from_millis(20));
    clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
    // One wait for shutdown for the whole call: a new one per turn of the loop
    // would join and leave the channel's waiter list (a lock) three times a tick.
    let mut stopping = std::pin::pin!(shutdown.wait_for(|s| *s));
    let mut inbox = engine.calls().enter(&d.call_sid);
    d.apply_outputs();

    while d.end.is_none() {
        let bot_waits = d
            .bot
            .as_ref()
            .is_some_and(|b| b.connecting.is_some() || b.link.is_some());
        let next_waits = d.next_bot.as_ref().is_some_and(|b| b.connecting.is_some());
        tokio::select! {
            biased;
            _ = &mut stopping => d.call.on_shutdown(),
            wake = std::future::poll_fn(|cx| d.bot.as_mut().expect("guarded").poll_wake(cx)), if bot_waits => {
                match wake {
                    BotWake::Connect(res) => d.on_bot_connect(*res),
                    BotWake::Input(input) => d.on_bot_input(input, &mut clock),
                }
            }
            wake = std::future::poll_fn(|cx| d.next_bot.as_mut().expect("guarded").poll_wake(cx)), if next_waits => {
                if let BotWake::Connect(res) = wake {
                    d.on_next_bot_connect(*res);
                }
            }
            _ = std::future::poll_fn(|cx| d.caller.poll_arrival(cx)) => {
                // Signalling first: an answer is taken before the audio
                // that follows it, so the phone's first frame reaches the bot.
                d.caller_events();
                if d.bot_is_peer() {
                    d.caller_to_bot(false);
                }
            }
            _ = clock.tick() => d.on_tick(),
            req = std::future::poll_fn(|cx| inbox.poll_recv(cx)) => d.on_command(req),
        }
        d.pump_bot();
        d.apply_outputs();
    }
    engine.calls().leave(&d.call_sid);
    drop(inbox);
    d.finish().await;
}

struct Driver {
    /// When the call's clock started (tick 0).
    started: DateTime<Utc>,
    engine: Arc<Engine>,
    id: i64,
    call_sid: String,
    call: Call,
    caller: Box<dyn PhoneLeg>,
    /// What the caller hears this tick.
    caller_heard: Frame,
    /// What the caller's phone peer hears this tick.
    peer_heard: Frame,
    /// What a bot briefing a warm transfer's target hears this tick.
    bot_heard: Frame,
    targets: Vec<Target>,
    bot: Option<Box<BotEp>>,
    /// The bot a `session.transfer_ws` is connecting.
    next_bot: Option<Box<BotEp>>,
    /// The call's `start`, from which a next bot's is made.
    start: StartInfo,
    /// What hears the caller's conversation without taking part: the
    /// recorder, once the call is answered.
    taps: Vec<Box<dyn Tap>>,
    dtmf_input: String,
    /// Bots handed off, closing their sockets politely.
    closing: Vec<tokio::task::JoinHandle<()>>,
    end: Option<End>,
    /// The last phone the caller was bridged to.
    bridged: Option<EpId>,
    /// What the legs hung up so far reported.
    reports: Vec<(EpId, serde_json::Value)>,
    /// Bot backlog and playout queue, as last added to the metrics' gauges.
    gauges: (i64, i64),
    /// Where the hold audio is, for a caller on hold.
    hold_at: usize,
    /// The flow that has the caller.
    flow: Option<FlowEp>,
    /// The caller's audio is taken on the clock (it was bridged to a phone
    /// or a flow, or left alone), not as it comes.
    caller_paced: bool,
}

impl Driver {
    /// The caller's peer is the bot (it has the call and no phone does).
    fn bot_is_peer(&self) -> bool {
        self.bot.is_some()
            && !matches!(
                self.call.peer(),
                Peer::Phone(_) | Peer::Briefing(_) | Peer::Flow
            )
    }

    fn target_mut(&mut self, ep: EpId) -> Option<&mut Target> {
        self.targets.iter_mut().find(|t| t.ep == ep)
    }

    fn on_bot_connect(&mut self, res: ConnectResult) {
        let Some(bot) = self.bot.as_mut() else {
            return;
        };
        match res {
            Ok(Ok(ws)) => {
                tracing::info!(url = %botlink::redact_url(&bot.target.url), "bot connected");
                bot.link = Some(self.engine.open_link(ws));
                bot.session.on_bot_connected();
                self.call.on_bot_connected();
            }
            Ok(Err(e @ botlink::ConnectError::Refused { .. })) => {
                tracing::warn!("{e}");
                self.call.on_bot_address_refused();
            }
            Ok(Err(e)) => {
                tracing::warn!("{e}");
                self.call.on_bot_unreachable();
            }
            Err(e) => {
                tracing::error!("bot connect task failed: {e}");
                self.call.on_bot_unreachable();
            }
        }
    }

    fn on_next_bot_connect(&mut self, res: ConnectResult) {
        let Some(next) = self.next_bot.as_mut() else {
            return;
        };
        let url = next.target.url.clone();
        match res {
            Ok(Ok(ws)) => {
                tracing::info!(url = %botlink::redact_url(&url), "next bot connected");
                next.link = Some(self.engine.open_link(ws));
                self.call.on_next_bot_connected();
            }
            Ok(Err(e)) => {
                tracing::warn!("transfer_ws: {e}");
                self.next_bot = None;
                self.call.on_next_bot_unreachable(url);
            }
            Err(e) => {
                tracing::error!("bot connect task failed: {e}");
                self.next_bot = None;
                self.call.on_next_bot_unreachable(url);
            }
        }
    }

    fn on_bot_input(&mut self, input: BotInput, clock: &mut tokio::time::Interval) {
        let bot_is_peer = self.bot_is_peer();
        let answered = self.call.is_answered();
        let Some(bot) = self.bot.as_mut() else {
            return;
        };
        match input {
            BotInput::Text(t) => bot.session.on_bot_text(&t),
            BotInput::Binary(b) => bot.session.on_bot_binary(&b),
            BotInput::Lost(why) => {
                tracing::warn!("bot lost: {why}");
                bot.session.on_bot_lost();
                bot.link = None;
                // Gone from the call: the caller hears silence until a
                // fallback (if any) takes it.
                if let Some(mut bot) = self.bot.take() {
                    self.settle_held(&mut bot);
                    self.fold_stats(&mut bot);
                }
                self.call.on_bot_lost();
                return;
            }
        }
        if !bot_is_peer || !answered {
            return;
        }
        let session = &mut bot.session;
        let heard = &mut self.caller_heard;
        if session.held_frame_ready() {
            // The frame a tick held its slot for is here: it goes out now, in
            // its place in the stream.
            session.play_held(heard);
            self.caller.play_held(heard);
            tap(&mut self.taps, |t| t.heard(heard));
        } else if session.starts_talkspurt() && self.caller.ready_to_play_now() {
            // The first frame of what the bot starts to say goes out now, and
            // the clock restarts from it.
            session.play(heard, false);
            self.caller.play_now(heard);
            tap(&mut self.taps, |t| t.heard(heard));
            clock.reset();
        }
    }

    /// One 20 ms tick: the call's clock, then the media as the peer says.
    fn on_tick(&mut self) {
        self.call.tick(self.caller.is_sending_dtmf());
        match self.call.peer() {
            Peer::Phone(ep) => self.phone_tick(ep),
            Peer::Briefing(ep) => self.briefing_tick(ep),
            Peer::Flow => self.flow_tick(),
            _ if self.bot.is_some() => {
                // Bot audio for this tick is made first and goes out now; the
                // caller's frames go to the bot below.
                self.bot_tick();
                self.caller_events();
                self.caller_to_bot(true);
            }
            _ => {
                // Nobody to hear yet (a DID's extension rings) or any more
                // (the bot was lost): the caller runs on the clock.
                self.pace_caller();
                let mut said: Frame = [0; FRAME_SAMPLES];
                self.caller.step(&SILENCE, &mut said);
                if self.call.is_answered() {
                    tap(&mut self.taps, |t| t.both(&said, &SILENCE));
                }
                self.caller_events();
            }
        }
        // Legs still ringing hear silence and are not heard.
        let peer = self.call.peer();
        for t in self.targets.iter_mut() {
            if Peer::Phone(t.ep) != peer && Peer::Briefing(t.ep) != peer {
                let mut said: Frame = [0; FRAME_SAMPLES];
                t.leg.step(&SILENCE, &mut said);
            }
        }
        self.target_events();
        self.update_metrics();
    }

    /// The caller and its phone peer, both on the clock.
    fn phone_tick(&mut self, ep: EpId) {
        let Some(i) = self.targets.iter().position(|t| t.ep == ep) else {
            return;
        };
        let (said, heard) = step_pair(
            &mut *self.caller,
            &mut *self.targets[i].leg,
            &mut self.peer_heard,
        );
        if self.call.is_answered() {
            tap(&mut self.taps, |t| t.both(&said, &heard));
        }
        self.caller_events();
    }

    /// A warm transfer's briefing: the caller holds (it hears the hold
    /// audio, and what it says reaches only the taps); the bot and the
    /// target hear each other on the clock.
    fn briefing_tick(&mut self, ep: EpId) {
        Hold::new(self.engine.hold_audio(), &mut self.hold_at)
            .step(&SILENCE, &mut self.caller_heard);
        self.caller.tick(&self.caller_heard);
        tap(&mut self.taps, |t| t.heard(&self.caller_heard));
        self.caller_events();
        // The caller stays eager: when the briefing is cancelled it goes
        // back to the bot's hot path.
        let mut said: Frame = [0; FRAME_SAMPLES];
        while self.caller.next_said(&mut said, false) {
            tap(&mut self.taps, |t| t.said(&said));
        }
        let Some(i) = self.targets.iter().position(|t| t.ep == ep) else {
            return;
        };
        let Some(bot) = self.bot.as_mut() else {
            return;
        };
        // The target hears the bot at once; the bot hears the target a
        // tick later.
        step_pair(&mut *self.targets[i].leg, &mut **bot, &mut self.bot_heard);
    }

    /// The caller hears its flow, on the clock; what it says is recorded.
    fn flow_tick(&mut self) {
        self.pace_caller();
        let Some(flow) = self.flow.as_mut() else {
            return;
        };
        let (said, heard) = step_pair(&mut *self.caller, flow, &mut self.peer_heard);
        tap(&mut self.taps, |t| t.both(&said, &heard));
        self.caller_events();
        self.pump_flow();
    }

    /// Hands what the flow asks to the call.
    fn pump_flow(&mut self) {
        let Some(f) = self.flow.as_mut() else {
            return;
        };
        while let Some(action) = f.run.poll_action() {
            match action {
                FlowAction::Dial {
                    node,
                    targets,
                    timeout_s,
                } => {
                    tracing::info!(%node, ?targets, timeout_s, "flow dials");
                    let targets = targets
                        .into_iter()
                        .flat_map(|t| match t {
                            FlowTarget::Extension(e) => self.engine.extension_targets(&e),
                            FlowTarget::Number(n) => vec![DialTarget::Number(n)],
                        })
                        .collect();
                    self.call.on_flow_dial(targets, timeout_s);
                }
                FlowAction::Bot { node, url } => {
                    tracing::info!(%node, url = %botlink::redact_url(&url), "flow hands the caller to a bot");
                    self.call.on_flow_bot(url);
                }
                FlowAction::Hangup { reason } => {
                    tracing::info!(reason = reason.as_str(), path = ?f.run.visited(), "flow hangs up");
                    self.call.on_flow_hangup();
                }
            }
        }
    }

    /// Caller audio is taken on the clock from now on.
    fn pace_caller(&mut self) {
        if !self.caller_paced {
            self.caller.set_paced();
            self.caller_paced = true;
        }
    }

    /// One tick of bot audio to the caller. A slot held on the last tick for a
    /// late frame is filled or given up first; then this tick's frame is
    /// played, or held in its turn.
    fn bot_tick(&mut self) {
        let Some(bot) = self.bot.as_mut() else {
            return;
        };
        let heard = &mut self.caller_heard;
        if self.call.is_answered() {
            if let Some(played) = bot.session.release_held(heard) {
                match played {
                    Played::Sound => self.caller.play_held(heard),
                    _ => self.caller.skip_held(),
                }
                tap(&mut self.taps, |t| t.heard(heard));
            }
            if bot.session.play(heard, self.caller.ready_to_play_now()) == Played::Held {
                self.caller.tick_held();
                return;
            }
            tap(&mut self.taps, |t| t.heard(heard));
        }
        self.caller.tick(heard);
    }

    /// Hands every frame of the caller's that is ready to the bot (as
    /// `media`) and to the recording; before the answer they are dropped.
    /// A caller on the clock (it was bridged to a flow before this bot) gives
    /// one frame a tick (`tick`), and nothing between ticks.
    fn caller_to_bot(&mut self, tick: bool) {
        let answered = self.call.is_answered();
        let Some(bot) = self.bot.as_mut() else {
            return;
        };
        let backlogged = bot.backlogged();
        let mut said: Frame = [0; FRAME_SAMPLES];
        if self.caller_paced {
            if tick {
                self.caller.next_said(&mut said, true);
                if answered {
                    bot.session.hear(&said, backlogged);
                    tap(&mut self.taps, |t| t.said(&said));
                }
            }
            return;
        }
        while self.caller.next_said(&mut said, false) {
            if answered {
                bot.session.hear(&said, backlogged);
                tap(&mut self.taps, |t| t.said(&said));
            }
        }
    }

    /// What the caller signalled: to the call, and keys to whoever hears them.
    fn caller_events(&mut self) {
        while let Some(ev) = self.caller.poll_event() {
            if let LegEvent::Dtmf { digit, duration_ms } = ev {
                self.dtmf_input.push(digit);
                match self.call.peer() {
                    Peer::Phone(ep) => {
                        if let Some(t) = self.target_mut(ep) {
                            t.leg.send_dtmf(digit);
                        }
                    }
                    // A caller on hold is heard by no one, its keys too.
                    Peer::Briefing(_) => {}
                    Peer::Flow => {
                        if let Some(f) = self.flow.as_mut() {
                            f.run.on_dtmf(digit);
                        }
                        self.pump_flow();
                    }
                    _ => {
                        if let Some(bot) = self.bot.as_mut() {
                            bot.session.on_phone_dtmf(digit, duration_ms);
                        }
                    }
                }
            }
            match &ev {
                LegEvent::Ringing => tracing::info!("ringing"),
                LegEvent::Answered => tracing::info!("answered"),
                _ => {}
            }
            self.call.on_leg(CALLER, ev);
            // At once: an answer starts the bot's stream before the frames
            // that follow it are handed on.
            self.apply_outputs();
        }
    }

    /// What the transfer legs signalled.
    fn target_events(&mut self) {
        let mut events = Vec::new();
        for t in self.targets.iter_mut() {
            while let Some(ev) = t.leg.poll_event() {
                events.push((t.ep, ev));
            }
        }
        for (ep, ev) in events {
            if let LegEvent::Dtmf { digit, duration_ms } = &ev {
                if self.call.peer() == Peer::Phone(ep) {
                    self.caller.send_dtmf(*digit);
                } else if self.call.peer() == Peer::Briefing(ep) {
                    if let Some(bot) = self.bot.as_mut() {
                        bot.session.on_phone_dtmf(*digit, *duration_ms);
                    }
                }
            }
            tracing::info!(leg = ep.0, event = ?ev, "transfer leg");
            self.call.on_leg(ep, ev);
            self.apply_outputs();
        }
    }

    /// Sends the bot's events and hands its actions to the call.
    fn pump_bot(&mut self) {
        let Some(bot) = self.bot.as_mut() else {
            return;
        };
        bot.flush();
        while let Some(a) = bot.session.poll_action() {
            match a {
                Action::Hangup => self.call.on_bot_hangup(),
                Action::Dtmf(d) => {
                    // While it briefs a warm transfer's target, the bot's
                    // keys go there.
                    let to = match self.call.peer() {
                        Peer::Briefing(ep) => self.targets.iter_mut().find(|t| t.ep == ep),
                        _ => None,
                    };
                    let sent = match to {
                        Some(t) => t.leg.send_dtmf(d),
                        None => self.caller.send_dtmf(d),
                    };
                    if !sent {
                        let mut buf = [0u8; 4];
                        bot.session.play_dtmf_tones(d.encode_utf8(&mut buf));
                    }
                }
                Action::Transfer(Command::TransferWs { url }) => {
                    match self.engine.check_bot_url(&url) {
                        Ok(_) => self.call.on_bot_transfer_ws(url),
                        Err(why) => bot.session.refuse(
                            ErrorCode::BadField,
                            format!("session.transfer_ws: `url` {url:?}: {why}"),
                        ),
                    }
                }
                Action::Transfer(Command::TransferExtension { extension }) => {
                    transfer_extension(&mut self.call, &self.engine, &extension);
                }
                Action::Transfer(Command::FlowTransfer { flow_id }) => {
                    let known = self.engine.has_flow(&flow_id);
                    self.call.on_bot_flow_transfer(flow_id, known);
                }
                Action::Transfer(Command::TransferComplete) => self.call.on_bot_transfer_complete(),
                Action::Transfer(Command::TransferCancel) => self.call.on_bot_transfer_cancel(),
                Action::Transfer(cmd) => match transfer_request(cmd) {
                    Ok(req) => self.call.on_bot_transfer(req),
                    Err((code, message)) => bot.session.refuse(code, message),
                },
            }
        }
        // What the call said back (a refusal) goes out with the outputs'
        // events, at the end of `apply_outputs`, in the same turn.
    }

    /// A command from outside the call (the registry): handed to the call
    /// as if the bot had asked, and answered with the call's refusal if any.
    fn on_command(&mut self, req: Request) {
        let result = match req.command {
            CallCommand::Hangup => {
                self.call.on_api_hangup();
                Ok(())
            }
            CallCommand::TransferExtension(extension) => self.as_the_bot(|d| {
                transfer_extension(&mut d.call, &d.engine, &extension);
            }),
            CallCommand::Attach(url) => match self.engine.check_bot_url(&url) {
                Ok(_) => self.as_the_bot(|d| d.call.on_bot_transfer_ws(url)),
                Err(why) => Err(CommandError::Refused {
                    code: ErrorCode::BadField,
                    message: format!("`url` {url:?}: {why}"),
                }),
            },
        };
        let _ = req.reply.send(result);
    }

    /// Runs `ask` (a bot's request) for a command, when a bot has the call's
    /// session; the call's refusal, if any, becomes the command's answer.
    fn as_the_bot(&mut self, ask: impl FnOnce(&mut Self)) -> Result<(), CommandError> {
        if !self.call.bot_connected() {
            return Err(CommandError::Refused {
                code: ErrorCode::TransferRefused,
                message: "no bot has this call now; a call without a bot cannot be \
                          transferred from outside yet"
                    .into(),
            });
        }
        ask(self);
        match self.call.take_refusal() {
            Some((code, message)) => Err(CommandError::Refused { code, message }),
            None => Ok(()),
        }
    }

    /// Carries out what the call asks.
    fn apply_outputs(&mut self) {
        while let Some(out) = self.call.poll_output() {
            match out {
                Output::Dial {
                    ep,
                    target,
                    caller_id,
                } => {
                    tracing::info!(leg = ep.0, target = target.as_str(), %caller_id, "dialling");
                    match self.engine.dial_target(&target, &caller_id) {
                        Ok(leg) => self.targets.push(Target { ep, leg }),
                        Err(e) => {
                            tracing::warn!(leg = ep.0, "{}", e.why);
                            self.call.on_dial_failed(ep, e.failure);
                        }
                    }
                }
                Output::ConnectBot => {
                    if let Some(bot) = self.bot.as_mut() {
                        bot.connecting = Some(self.engine.connect_bot(&bot.target));
                    }
                }
                Output::ConnectNextBot(url) => {
                    let start = StartInfo {
                        stream_sid: crate::engine::new_sid("MZ"),
                        ..self.start.clone()
                    };
                    let target = BotTarget {
                        url,
                        headers: Vec::new(),
                        custom_parameters: self.start.custom_parameters.clone(),
                    };
                    let inband = !self.caller.takes_out_of_band_dtmf();
                    let mut next = Box::new(BotEp::new(target, start, &self.engine, inband));
                    next.connecting = Some(self.engine.connect_bot(&next.target));
                    self.next_bot = Some(next);
                }
                Output::SwapBot => {
                    if let Some(mut next) = self.next_bot.take() {
                        // The new bot hears `connected` and `start` first...
                        next.session.on_bot_connected();
                        next.session.on_answer();
                        next.flush();
                        // ...then the old one its marks and `stop`.
                        if let Some(mut old) = self.bot.replace(next) {
                            self.settle_held(&mut old);
                            old.session.hand_off(protocol::StopReason::TransferWs);
                            self.close_bot(old);
                        }
                        tracing::info!("the next bot has the call");
                    }
                }
                Output::Answer => self.caller.answer(),
                Output::Answered => {
                    let path = self
                        .engine
                        .recordings_dir()
                        .join(format!("{}.wav", self.call_sid));
                    match Recorder::create(&path) {
                        Ok(rec) => self.taps.push(Box::new(rec)),
                        Err(e) => tracing::error!("cannot record to {}: {e}", path.display()),
                    }
                    if let Some(bot) = self.bot.as_mut() {
                        bot.session.on_answer();
                    }
                }
                Output::Hangup(ep) if ep == CALLER => self.caller.hangup(),
                Output::Hangup(ep) => {
                    if let Some(i) = self.targets.iter().position(|t| t.ep == ep) {
                        let mut t = self.targets.remove(i);
                        t.leg.hangup();
                        if let Some(report) = t.leg.report() {
                            self.reports.push((ep, report));
                        }
                    }
                }
                Output::Bridged(ep) => {
                    tracing::info!(leg = ep.0, "caller bridged");
                    self.bridged = Some(ep);
                    // The caller is heard on the clock now, like its peer.
                    self.pace_caller();
                    self.caller_heard = SILENCE;
                    self.peer_heard = SILENCE;
                }
                Output::StopBot(reason) => {
                    if let Some(mut bot) = self.bot.take() {
                        tracing::info!(reason = reason.as_str(), "bot leaves the call");
                        self.settle_held(&mut bot);
                        bot.session.hand_off(reason);
                        self.close_bot(bot);
                    }
                }
                Output::RefuseBot { code, message } => {
                    if let Some(bot) = self.bot.as_mut() {
                        bot.session.refuse(code, message);
                    }
                }
                Output::TransferAnswered { kind, destination } => {
                    tracing::info!(kind, %destination, "warm transfer answered: the bot briefs");
                    if let Some(mut bot) = self.bot.take() {
                        // The caller's stream goes on whole into the hold.
                        self.settle_held(&mut bot);
                        bot.session.transfer_answered(kind, &destination);
                        self.bot = Some(bot);
                    }
                    self.hold_at = 0;
                    self.peer_heard = SILENCE;
                    self.bot_heard = SILENCE;
                }
                Output::TransferFailed {
                    kind,
                    reason,
                    attempts,
                } => {
                    tracing::info!(kind, reason = reason.as_str(), "transfer failed");
                    if let Some(bot) = self.bot.as_mut() {
                        let list: Vec<TransferAttempt<'_>> = attempts
                            .iter()
                            .map(|a| TransferAttempt {
                                destination: a.target.as_str(),
                                outcome: a.outcome.as_str(),
                                sip_code: a.sip_code,
                            })
                            .collect();
                        bot.session.transfer_failed(kind, reason.as_str(), &list);
                    }
                }
                Output::StartFlow(target) => match self.engine.flow_run(&target) {
                    Some(run) => {
                        tracing::info!(flow = target.as_str(), "the caller goes to a flow");
                        self.flow = Some(FlowEp { run });
                        self.caller_heard = SILENCE;
                        self.peer_heard = SILENCE;
                        self.pump_flow();
                    }
                    None => {
                        tracing::warn!(flow = target.as_str(), "no such flow");
                        self.call.on_flow_missing();
                    }
                },
                Output::FlowOutcome(taken) => {
                    if let Some(f) = self.flow.as_mut() {
                        f.run.on_outcome(taken);
                        if f.run.is_done() {
                            tracing::info!(path = ?f.run.visited(), "the flow is done");
                            self.flow = None;
                        } else {
                            self.pump_flow();
                        }
                    }
                }
                Output::ResolveExtension(ext) => {
                    let targets = self.engine.extension_targets(&ext);
                    self.call.on_extension_targets(targets);
                }
                Output::State(state) => self.engine.set_state(self.id, state),
                Output::End(end) => self.end = Some(end),
            }
        }
        // Events the outputs made (a refusal, `transfer_failed`) go out now.
        if let Some(bot) = self.bot.as_mut() {
            bot.flush();
        }
    }

    /// What the phone of endpoint `ep` reported (when it was hung up, or now).
    fn leg_report(&mut self, ep: Option<EpId>) -> Option<serde_json::Value> {
        let ep = ep?;
        match self.reports.iter().find(|(e, _)| *e == ep) {
            Some((_, report)) => Some(report.clone()),
            None => self.target_mut(ep).and_then(|t| t.leg.report()),
        }
    }

    /// A slot a tick held for a departing bot's late frame is played or
    /// given up now, so the caller's stream goes on whole.
    fn settle_held(&mut self, bot: &mut BotEp) {
        if let Some(played) = bot.session.release_held(&mut self.caller_heard) {
            match played {
                Played::Sound => self.caller.play_held(&self.caller_heard),
                _ => self.caller.skip_held(),
            }
            tap(&mut self.taps, |t| t.heard(&self.caller_heard));
        }
    }

    /// Sends a departing bot what it still has to hear and closes its
    /// socket, politely and without holding up the call.
    fn close_bot(&mut self, mut bot: Box<BotEp>) {
        self.fold_stats(&mut bot);
        if let Some(pending) = bot.connecting.take() {
            pending.abort();
        }
        bot.flush();
        if let Some(link) = bot.link.take() {
            self.closing
                .push(tokio::spawn(link.finish(Duration::from_secs(3))));
        }
    }

    fn fold_stats(&self, bot: &mut BotEp) {
        let now = bot.session.stats();
        self.engine.metrics().add_session(&bot.counted, &now);
        bot.counted = now;
    }

    fn update_metrics(&mut self) {
        if !self.call.is_answered() {
            return;
        }
        let (backlog, queued) = match self.bot.as_mut() {
            Some(bot) => {
                let now = bot.session.stats();
                self.engine.metrics().add_session(&bot.counted, &now);
                bot.counted = now;
                (bot.backlog() as i64, bot.session.queued_samples() as i64)
            }
            None => (0, 0),
        };
        let m = self.engine.metrics();
        Metrics::shift(&m.bot_backlog_frames, &mut self.gauges.0, backlog);
        Metrics::shift(&m.playout_queued_samples, &mut self.gauges.1, queued);
    }

    /// After the call's end: the bot hears `stop`, the recording is closed,
    /// the outcome and the legs are stored.
    async fn finish(mut self) {
        let end = self.end.take().expect("the loop ends with an end");
        let m = self.engine.metrics().clone();
        Metrics::shift(&m.bot_backlog_frames, &mut self.gauges.0, 0);
        Metrics::shift(&m.playout_queued_samples, &mut self.gauges.1, 0);
        m.calls_active.fetch_sub(1, Ordering::Relaxed);
        let mut lingering = None;
        if let Some(mut next) = self.next_bot.take() {
            if let Some(pending) = next.connecting.take() {
                pending.abort();
            }
        }
        if let Some(mut bot) = self.bot.take() {
            self.fold_stats(&mut bot);
            if let Some(mut pending) = bot.connecting.take() {
                // A bot still shaking hands when the call ends (busy, failed, ...)
                // is let in, briefly, so it hears `stop` with the outcome.
                let limit = Duration::from_millis(self.engine.config().bot.connect_timeout_ms);
                match tokio::time::timeout(limit, &mut pending).await {
                    Ok(Ok(Ok(ws))) if end.stop.is_some() => {
                        bot.link = Some(self.engine.open_link(ws));
                        bot.session.on_bot_connected();
                    }
                    Ok(_) => {}
                    Err(_) => pending.abort(),
                }
            }
            if let Some(reason) = end.stop {
                bot.session.finish(reason);
            }
            bot.flush();
            lingering = bot.link.take();
        }
        let mut recording = None;
        for t in std::mem::take(&mut self.taps) {
            match t.finish() {
                Ok(kept) => recording = recording.or(kept),
                Err(e) => tracing::error!("cannot finish recording: {e}"),
            }
        }
        // The report of the phone the call is about: the caller, or for a
        // DID that rings an extension, the extension that answered.
        let report = match self.bridged {
            Some(ep) if !self.call.had_bot() => self.leg_report(Some(ep)),
            _ => self.caller.report(),
        };
        let attempts = self.call.legs().to_vec();
        let legs: Vec<LegRecord> = attempts
            .iter()
            .map(|a| LegRecord {
                phone: self.leg_report(a.ep),
                ..leg_record(a, self.started)
            })
            .collect();
        let attended = self.call.attended_by();
        self.engine.conclude(
            self.id,
            end,
            crate::engine::Concluded {
                recording,
                dtmf_input: std::mem::take(&mut self.dtmf_input),
                phone_report: report,
                legs,
                attended: Some(attended),
            },
        );
        // Let the bots' sockets deliver `stop` and close politely before the
        // call counts as over (a shutdown waits for that).
        // (Each in its own task: the call's future stays small.)
        if let Some(link) = lingering {
            self.closing
                .push(tokio::spawn(link.finish(Duration::from_secs(3))));
        }
        for c in self.closing.drain(..) {
            let _ = c.await;
        }
    }
}

/// A leg as the call log keeps it; ticks become times from the call's start.
fn leg_record(a: &Attempt, started: DateTime<Utc>) -> LegRecord {
    let at =
        |t: Option<u32>| t.map(|t| started + chrono::Duration::milliseconds(i64::from(t) * 20));
    LegRecord {
        destination: match &a.target {
            // A bot's URL may carry its key in the query string.
            DialTarget::Bot(url) => botlink::redact_url(url),
            t => t.as_str().to_string(),
        },
        kind: match a.target {
            DialTarget::Number(_) => "number",
            DialTarget::Extension(_) | DialTarget::Contact { .. } => "extension",
            DialTarget::Bot(_) => "bot",
            DialTarget::Flow(_) => "flow",
            DialTarget::Prompt(_) => "prompt",
        }
        .into(),
        outcome: a.outcome.as_str().into(),
        sip_code: a.sip_code,
        rang_at: at(a.dialled_at),
        answered_at: at(a.answered_at),
        ended_at: at(a.ended_at),
        bridged: a.bridged,
        phone: None,
    }
}

/// The call's view of a transfer command, or why it cannot be one.
fn transfer_request(cmd: Command) -> Result<TransferRequest, (ErrorCode, String)> {
    let kind = cmd.name();
    match cmd {
        Command::Transfer {
            destinations,
            strategy,
            timeout_s,
            caller_id,
            mode,
        } => {
            let mut targets = Vec::with_capacity(destinations.len());
            for d in destinations {
                let n = crate::api::normalize_phone(&d).map_err(|why| {
                    (
                        ErrorCode::BadField,
                        format!("{kind}: `destination` {d:?} is not a phone number: {why}"),
                    )
                })?;
                targets.push(DialTarget::Number(n));
            }
            Ok(TransferRequest {
                kind,
                targets,
                strategy,
                timeout_s,
                caller_id,
                warm: mode == protocol::TransferMode::Warm,
            })
        }
        _ => Err((
            ErrorCode::NotSupported,
            format!("{kind} is not supported by this bridge yet; the call goes on with this bot"),
        )),
    }
}
