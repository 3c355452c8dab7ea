//! One call's decisions, as a sans-I/O state machine.
//!
//! A [`Call`] knows its endpoints by [`EpId`]: the caller (always
//! [`CALLER`]), the bot that has the call, and the legs rung for a transfer.
//! It owns no socket, task or clock. The driver feeds it what happened
//! ([`Call::tick`], [`Call::on_leg`], the `on_bot_*` inputs,
//! [`Call::on_dial_failed`], [`Call::on_shutdown`]) and carries out what it
//! asks ([`Call::poll_output`]): dial a target, answer or hang up a leg, stop a
//! bot, tell a bot a transfer failed, store a state, end the call. Who hears
//! whom is [`Call::peer`]: the caller and its peer hear each other; every other
//! endpoint hears nothing.
//!
//! All timing is in 20 ms ticks: the caller's ring limit, the longest call,
//! each transfer attempt's ring time, and the wait for keys the bot sent before
//! hanging up. So a whole call, races included, is tested tick by tick with no
//! socket and no real time (see the tests below).

use std::collections::{BTreeSet, VecDeque};

use protocol::{ErrorCode, StopReason, TransferStrategy};

use crate::carrier::LegEvent;
use crate::store::CallState;

/// Ticks of the call's clock per second.
pub const TICKS_PER_SEC: u32 = 50;
/// Transfers one call may make (a transfer loop ends here).
pub const MAX_HOPS: u32 = 10;
/// How long keys the bot sent before hanging up may take to go out (2 s).
const KEYS_BEFORE_HANGUP_TICKS: u32 = 100;

/// An endpoint of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpId(pub u32);

/// The caller: the phone the call is about (the number dialled for an
/// outbound call, the phone that called us for an inbound one).
pub const CALLER: EpId = EpId(0);

/// Why a call ended, as the call log spells it (`end_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller hung up after answering.
    CallEnded,
    /// The caller hung up before the call was answered.
    CallerCanceled,
    /// The bot sent `session.hangup`.
    BotHangup,
    /// The bot's socket closed or went dead.
    BotLost,
    /// The bot could not be reached.
    BotUnreachable,
    /// The bot's host resolved only to addresses in ranges the operator has
    /// not allowed (`[outbound] allow_networks`), so nothing was connected.
    BotAddressRefused,
    /// The number dialled was busy.
    Busy,
    /// Nobody answered.
    NoAnswer,
    /// The call could not be set up.
    Failed,
    /// The call reached `max_duration_secs`.
    MaxDuration,
    /// The bridge shut down.
    Shutdown,
    /// No route reaches the number.
    NoRoute,
    /// SIP could not place the call.
    SipError,
    /// The extension a DID rings is not registered.
    ExtensionUnavailable,
    /// The extension a DID rang hung up.
    ExtensionHangup,
    /// The person a transfer reached hung up.
    AgentHangup,
    /// A scheduled call's stored request could not be read back.
    BadStoredRequest,
    /// A DID's CONFIG_API did not answer in time.
    ConfigApiTimeout,
    /// A DID's CONFIG_API failed or answered something unusable.
    ConfigApiFailed,
    /// A DID names no bot, CONFIG_API or extension.
    NoTarget,
    /// The bridge restarted while the call was live.
    BridgeRestart,
    /// The flow the caller was handed to ended the call (a null exit, or a
    /// menu nobody answered).
    FlowHangup,
    /// The call was ended from outside it, through the live-call registry.
    ApiHangup,
}

impl EndReason {
    /// The call log's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallEnded => "callended",
            EndReason::CallerCanceled => "caller_canceled",
            EndReason::BotHangup => "bot_hangup",
            EndReason::BotLost => "bot_lost",
            EndReason::BotUnreachable => "bot_unreachable",
            EndReason::BotAddressRefused => "bot_address_refused",
            EndReason::Busy => "busy",
            EndReason::NoAnswer => "no-answer",
            EndReason::Failed => "failed",
            EndReason::MaxDuration => "max_duration",
            EndReason::Shutdown => "shutdown",
            EndReason::NoRoute => "no_route",
            EndReason::SipError => "sip_error",
            EndReason::ExtensionUnavailable => "extension_unavailable",
            EndReason::ExtensionHangup => "extension_hangup",
            EndReason::AgentHangup => "agent_hangup",
            EndReason::BadStoredRequest => "bad_stored_request",
            EndReason::ConfigApiTimeout => "config_api_timeout",
            EndReason::ConfigApiFailed => "config_api_failed",
            EndReason::NoTarget => "no_target",
            EndReason::BridgeRestart => "bridge_restart",
            EndReason::FlowHangup => "flow_hangup",
            EndReason::ApiHangup => "api_hangup",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// The call's final state.
    pub state: CallState,
    /// Why.
    pub reason: EndReason,
    /// A SIP-style code, for failures.
    pub sip_code: Option<u16>,
    /// The `stop` a bot still on the call gets (none when it is gone, or the
    /// call never reached it).
    pub stop: Option<StopReason>,
}

impl End {
    fn new(state: CallState, reason: EndReason, stop: Option<StopReason>) -> End {
        End {
            state,
            reason,
            sip_code: None,
            stop,
        }
    }

    fn code(mut self, code: u16) -> End {
        self.sip_code = Some(code);
        self
    }
}

/// Where a transfer attempt rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialTarget {
    /// A number, through the routes (a trunk, a registered extension, or the
    /// simulated carrier).
    Number(String),
    /// An extension: its registered contacts, or what the config maps it to.
    Extension(String),
    /// Another bot, by its WebSocket URL (`session.transfer_ws`); never dialled.
    Bot(String),
    /// One registered phone of an extension (an extension rings all of them).
    Contact {
        /// The extension.
        extension: String,
        /// Its registered Contact URI.
        uri: String,
    },
    /// A flow (a dial plan), by id: `session.flow_transfer`, or a fallback.
    /// Never dialled: the flow takes the caller at once.
    Flow(String),
    /// A clip of the audio library played to the caller, who is then hung up
    /// on (a fallback).
    Prompt(String),
}

impl DialTarget {
    /// The destination as the bot or the config named it.
    pub fn as_str(&self) -> &str {
        match self {
            DialTarget::Number(n)
            | DialTarget::Extension(n)
            | DialTarget::Bot(n)
            | DialTarget::Flow(n)
            | DialTarget::Prompt(n) => n,
            DialTarget::Contact { extension, .. } => extension,
        }
    }
}

/// Why a dial could not even start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialFailure {
    /// A SIP-style code (404 no route, 480 not registered, 503 SIP trouble).
    pub code: u16,
    /// The outcome for the call log and the bot.
    pub reason: EndReason,
}

/// How one transfer attempt ended (or where it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Not rung yet (sequential attempts wait their turn).
    Waiting,
    /// Dialled, not answered yet.
    Ringing,
    /// Answered: this is the leg the caller went to.
    Answered,
    /// The target was busy.
    Busy,
    /// Nobody answered within the attempt's time.
    NoAnswer,
    /// The call to the target failed (or no route reaches it).
    Failed,
    /// Rung, then cancelled: another target answered first, or the transfer
    /// ended another way.
    Cancelled,
}

impl AttemptOutcome {
    /// As the bot's `transfer_failed` event and the call log spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Waiting => "waiting",
            AttemptOutcome::Ringing => "ringing",
            AttemptOutcome::Answered => "answered",
            AttemptOutcome::Busy => "busy",
            AttemptOutcome::NoAnswer => "no-answer",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }

    fn is_open(self) -> bool {
        matches!(self, AttemptOutcome::Waiting | AttemptOutcome::Ringing)
    }
}

/// One leg a transfer rang.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Where it rang.
    pub target: DialTarget,
    /// Its endpoint, once dialled.
    pub ep: Option<EpId>,
    /// How it went.
    pub outcome: AttemptOutcome,
    /// The SIP-style code of a failure (486 busy, 408 no answer, 404 no route...).
    pub sip_code: Option<u16>,
    /// Why it could not even be dialled, if it could not.
    pub dial_failure: Option<EndReason>,
    /// Tick it was dialled.
    pub dialled_at: Option<u32>,
    /// Tick it answered.
    pub answered_at: Option<u32>,
    /// Tick it ended (failed, was cancelled, or hung up).
    pub ended_at: Option<u32>,
    /// The caller was bridged to it (it is the leg that took the call).
    pub bridged: bool,
}

/// Why a transfer did not hand the call on; the bot keeps the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferFailure {
    /// Every target was busy.
    Busy,
    /// Nobody answered in time.
    NoAnswer,
    /// The calls failed.
    Failed,
    /// No route reaches any target.
    NoRoute,
    /// The call has made [`MAX_HOPS`] transfers already.
    TooManyHops,
    /// The bot a `session.transfer_ws` named could not be reached.
    BotUnreachable,
    /// A warm transfer's target hung up while the bot briefed it.
    TargetHungUp,
    /// `session.flow_transfer` named no flow the bridge has.
    UnknownFlow,
}

impl TransferFailure {
    /// As the bot's `transfer_failed` event spells it (`reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            TransferFailure::Busy => "busy",
            TransferFailure::NoAnswer => "no-answer",
            TransferFailure::Failed => "failed",
            TransferFailure::NoRoute => "no_route",
            TransferFailure::TooManyHops => "too_many_hops",
            TransferFailure::BotUnreachable => "bot_unreachable",
            TransferFailure::TargetHungUp => "target_hung_up",
            TransferFailure::UnknownFlow => "unknown_flow",
        }
    }
}

/// A transfer the bot asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    /// The message that asked (`session.transfer`, `session.transfer_extension`).
    pub kind: &'static str,
    /// Where to ring, in order.
    pub targets: Vec<DialTarget>,
    /// All at once, or one by one.
    pub strategy: TransferStrategy,
    /// Ring time per attempt, seconds; `None` for the default.
    pub timeout_s: Option<u32>,
    /// The caller ID to present; `None` for the call's own.
    pub caller_id: Option<String>,
    /// Warm: on answer the bot briefs the target while the caller holds.
    pub warm: bool,
}

/// What the call asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Ring `target` as endpoint `ep`, presenting `caller_id`. A dial that
    /// cannot start is reported with [`Call::on_dial_failed`].
    Dial {
        /// The new endpoint.
        ep: EpId,
        /// Where.
        target: DialTarget,
        /// The number to present.
        caller_id: String,
    },
    /// Connect the call's bot (now, or at answer for an outbound call that
    /// waits for it).
    ConnectBot,
    /// Answer the caller (it rang us).
    Answer,
    /// The caller is up: recording starts and the bot's stream begins.
    Answered,
    /// Hang up (or cancel, while ringing) a phone endpoint.
    Hangup(EpId),
    /// The caller's peer changed: the caller now hears and is heard by this
    /// endpoint (a phone leg answered a transfer).
    Bridged(EpId),
    /// The bot is done with the call: it gets `stop` with this reason, and
    /// its socket is closed.
    StopBot(StopReason),
    /// Refuse the bot's message with an `error` event; the call goes on.
    RefuseBot {
        /// The `error` code.
        code: ErrorCode,
        /// What was wrong, for the bot's developer.
        message: String,
    },
    /// A warm transfer's target answered: the bot now talks to it alone
    /// (`transfer_answered`) while the caller holds; see [`Peer::Briefing`].
    TransferAnswered {
        /// The message that asked.
        kind: &'static str,
        /// The destination that answered.
        destination: String,
    },
    /// Tell the bot its transfer failed; it keeps the call.
    TransferFailed {
        /// The message that asked.
        kind: &'static str,
        /// Why, overall.
        reason: TransferFailure,
        /// Each target and how it went.
        attempts: Vec<Attempt>,
    },
    /// Connect another bot for `session.transfer_ws`; report how it went
    /// with [`Call::on_next_bot_connected`] or [`Call::on_next_bot_unreachable`].
    ConnectNextBot(String),
    /// The new bot takes the call: it gets `connected` and `start`, then the
    /// old one gets `stop` with reason `transfer_ws` (marks it had pending
    /// first) and its socket is closed.
    SwapBot,
    /// Hand the caller to this flow (or prompt): it is the caller's peer
    /// from now on. A flow that cannot be found is reported with
    /// [`Call::on_flow_missing`]; what the flow asks is given back with the
    /// `on_flow_*` inputs.
    StartFlow(DialTarget),
    /// The fallback is an extension: which phones ring for it now (its
    /// registered contacts and the numbers the config adds)? Answered with
    /// [`Call::on_extension_targets`], at once.
    ResolveExtension(String),
    /// How the flow's last dial or bot hand-off went: `true`, it took the
    /// caller (the flow is over); `false`, it did not (the flow goes on).
    FlowOutcome(bool),
    /// Store the call's new state.
    State(CallState),
    /// The call is over. Every endpoint still up was hung up just before.
    End(End),
}

/// Who ended up with the caller (`attended_by` in the call log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttendedBy {
    /// Nobody: the call was never answered.
    Nobody,
    /// The bot kept the call to the end.
    Bot,
    /// A person a bot's transfer reached: the number or extension rung.
    Agent(String),
    /// The extension a DID rings.
    Extension(String),
    /// A flow (or a fallback's prompt) had the caller at the end.
    Flow(String),
}

/// Who the caller hears now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Nobody (ringing, or between peers).
    None,
    /// The bot.
    Bot,
    /// A phone endpoint (a transfer target, or the extension a DID rings).
    Phone(EpId),
    /// Nobody: the caller holds (hears hold audio, is heard by no one) while
    /// the bot and this phone endpoint, a warm transfer's target, hear each
    /// other.
    Briefing(EpId),
    /// A flow: the caller hears its prompts, and its keys go to it.
    Flow,
}

/// How a call begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// We dial the caller; the bot connects now (`connect_at_answer` false)
    /// or when the caller answers.
    Outbound {
        /// Connect the bot only once the caller answers.
        connect_at_answer: bool,
    },
    /// The caller rang a DID whose bot takes it: the bot connects now, and the
    /// caller is answered once it is there.
    InboundToBot,
    /// The caller rang a DID that rings targets (an extension's phones, all at
    /// once): the caller is answered when one answers, and bridged to it.
    InboundToPhone(Vec<DialTarget>),
}

/// A call's limits and numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallConfig {
    /// Ticks the caller (or a DID's target) may ring.
    pub ring_limit_ticks: u32,
    /// Ticks an answered call may last.
    pub max_ticks: u32,
    /// Ring seconds per transfer attempt when the bot gives none.
    pub transfer_timeout_s: u32,
    /// The caller ID a transfer presents when the bot names none.
    pub default_caller_id: String,
    /// Numbers a transfer may present as caller ID: the operator's (DIDs,
    /// trunk caller IDs) and the call's own.
    pub own_numbers: Vec<String>,
    /// Where the caller goes if the bot is lost mid-call; `None`: the call ends.
    pub fallback: Option<DialTarget>,
}

/// Who rang a transfer's targets, and so what its outcome means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The bot asked: it keeps the call if nobody answers.
    Bot,
    /// The call's own first target (a DID that rings an extension).
    Did,
    /// The bot was lost: the fallback takes the caller, or the call ends.
    Fallback,
    /// A flow's dial node: the flow goes on if nobody answers.
    Flow,
}

/// What the flow that has the caller is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlowStep {
    /// Playing, or waiting for keys.
    Running,
    /// Its dial node rings targets.
    Dialing,
    /// Its bot node connects a bot.
    ConnectingBot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Transfer {
    kind: &'static str,
    purpose: Purpose,
    warm: bool,
    strategy: TransferStrategy,
    timeout_ticks: u32,
    caller_id: String,
    attempts: Vec<Attempt>,
}

/// A warm transfer whose target answered: the bot briefs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Briefing {
    /// The target's endpoint.
    ep: EpId,
    /// The message that asked.
    kind: &'static str,
    /// The transfer's attempts in [`Call::legs`], and the target's among them.
    attempts: std::ops::Range<usize>,
    leg: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BotState {
    /// No bot (never had one, or it left).
    None,
    /// Waiting for the caller's answer before connecting.
    Waiting,
    Connecting,
    Connected,
}

/// One call's state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Call {
    cfg: CallConfig,
    ticks: u32,
    answered_at: Option<u32>,
    peer: Peer,
    bot: BotState,
    transfer: Option<Transfer>,
    /// A warm transfer's target the bot is briefing.
    briefing: Option<Briefing>,
    /// The flow that has the caller, and its leg in [`Call::legs`].
    flow: Option<(FlowStep, usize)>,
    /// Every attempt ever made, for the call log.
    legs: Vec<Attempt>,
    /// The call began with a bot.
    had_bot: bool,
    /// The last phone the caller was bridged to: its target, and whether a
    /// bot's transfer rang it (else it is the DID's own extension).
    bridged: Option<(DialTarget, bool)>,
    /// Phone endpoints not yet ended (the caller included, until it ends).
    up: BTreeSet<EpId>,
    next_ep: u32,
    hops: u32,
    /// The caller rang us and is answered once the bot is connected.
    answer_on_bot: bool,
    /// How the call ends when the phone the caller talks to hangs up.
    peer_hangup: EndReason,
    /// A `session.transfer_ws` is connecting its new bot (since this tick).
    next_bot: Option<u32>,
    /// The bot was lost mid-call (the log says `bot_lost` however it ends).
    bot_lost: bool,
    /// The fallback extension's phones were asked for ([`Output::ResolveExtension`]).
    resolving_fallback: bool,
    /// The bot hung up: the tick, and the end, waiting for its keys to go out.
    hangup_pending: Option<(u32, End)>,
    ended: bool,
    out: VecDeque<Output>,
}

impl Call {
    /// A call that begins as `start` says.
    pub fn new(cfg: CallConfig, start: Start) -> Call {
        let mut call = Call {
            cfg,
            ticks: 0,
            answered_at: None,
            peer: Peer::None,
            bot: BotState::None,
            transfer: None,
            briefing: None,
            flow: None,
            legs: Vec::new(),
            had_bot: !matches!(start, Start::InboundToPhone(_)),
            bridged: None,
            up: BTreeSet::from([CALLER]),
            next_ep: 1,
            hops: 0,
            answer_on_bot: start == Start::InboundToBot,
            peer_hangup: EndReason::AgentHangup,
            next_bot: None,
            bot_lost: false,
            resolving_fallback: false,
            hangup_pending: None,
            ended: false,
            out: VecDeque::new(),
        };
        match start {
            Start::Outbound {
                connect_at_answer: true,
            } => call.bot = BotState::Waiting,
            Start::Outbound {
                connect_at_answer: false,
            }
            | Start::InboundToBot => {
                call.bot = BotState::Connecting;
                call.out.push_back(Output::ConnectBot);
            }
            Start::InboundToPhone(targets) => {
                let caller_id = call.cfg.default_caller_id.clone();
                let timeout_ticks = call.cfg.ring_limit_ticks;
                call.begin_transfer(Transfer {
                    kind: "did",
                    purpose: Purpose::Did,
                    warm: false,
                    strategy: TransferStrategy::Simultaneous,
                    timeout_ticks,
                    caller_id,
                    attempts: targets.into_iter().map(new_attempt).collect(),
                });
            }
        }
        call
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Who the caller hears, and is heard by, now.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// Whether the caller has answered.
    pub fn is_answered(&self) -> bool {
        self.answered_at.is_some()
    }

    /// Whether a transfer is ringing its targets.
    pub fn is_transferring(&self) -> bool {
        self.transfer.is_some()
    }

    /// Whether the bot is briefing a warm transfer's target.
    pub fn is_briefing(&self) -> bool {
        self.briefing.is_some()
    }

    /// Whether the call is over.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Every leg rung for the call (transfers, a DID's extension), in order.
    pub fn legs(&self) -> &[Attempt] {
        &self.legs
    }

    /// Who ended up with the caller, for the call log.
    pub fn attended_by(&self) -> AttendedBy {
        if self.answered_at.is_none() {
            return AttendedBy::Nobody;
        }
        match &self.bridged {
            Some((DialTarget::Flow(id) | DialTarget::Prompt(id), _)) => {
                AttendedBy::Flow(id.clone())
            }
            Some((target, true)) => AttendedBy::Agent(target.as_str().to_string()),
            Some((target, false)) => AttendedBy::Extension(target.as_str().to_string()),
            None if self.had_bot => AttendedBy::Bot,
            None => AttendedBy::Nobody,
        }
    }

    /// Whether the call began with a bot (else it rang a DID's extension).
    pub fn had_bot(&self) -> bool {
        self.had_bot
    }

    /// Ticks since the call began.
    pub fn ticks(&self) -> u32 {
        self.ticks
    }

    /// One 20 ms tick. `caller_sending_keys`: keys the bot sent are still
    /// going out to the caller (a hangup waits for them, boundedly).
    pub fn tick(&mut self, caller_sending_keys: bool) {
        if self.ended {
            return;
        }
        self.ticks += 1;
        if let Some((since, _)) = &self.hangup_pending {
            if !caller_sending_keys || self.ticks - since > KEYS_BEFORE_HANGUP_TICKS {
                let (_, end) = self.hangup_pending.take().expect("checked");
                self.end(end);
                return;
            }
        }
        match self.answered_at {
            Some(at) if self.ticks - at >= self.cfg.max_ticks => {
                let stop = self.bot_stop(StopReason::MaxDuration);
                self.end(End::new(CallState::Completed, EndReason::MaxDuration, stop));
                return;
            }
            None if self.ticks >= self.cfg.ring_limit_ticks => {
                let stop = self.bot_stop(StopReason::NoAnswer);
                self.end(End::new(CallState::NoAnswer, EndReason::NoAnswer, stop).code(408));
                return;
            }
            _ => {}
        }
        self.time_out_attempts();
    }

    /// Something a phone endpoint signalled.
    pub fn on_leg(&mut self, ep: EpId, ev: LegEvent) {
        if self.ended {
            // Whatever answers now has no one to talk to; everything up was
            // hung up when the call ended.
            return;
        }
        if ep == CALLER {
            self.on_caller(ev);
        } else {
            self.on_target(ep, ev);
        }
    }

    fn on_caller(&mut self, ev: LegEvent) {
        match ev {
            LegEvent::Ringing => self.out.push_back(Output::State(CallState::Ringing)),
            LegEvent::Answered => {
                if self.answered_at.is_some() {
                    return;
                }
                self.answered_at = Some(self.ticks);
                self.out.push_back(Output::State(CallState::InProgress));
                self.out.push_back(Output::Answered);
                if self.bot == BotState::Waiting {
                    self.bot = BotState::Connecting;
                    self.out.push_back(Output::ConnectBot);
                }
            }
            LegEvent::Busy => self.caller_gone(
                End::new(CallState::Busy, EndReason::Busy, Some(StopReason::Busy)).code(486),
            ),
            LegEvent::NoAnswer { code } => self.caller_gone(
                End::new(
                    CallState::NoAnswer,
                    EndReason::NoAnswer,
                    Some(StopReason::NoAnswer),
                )
                .code(code),
            ),
            LegEvent::Failed { code, .. } => self.caller_gone(
                End::new(
                    CallState::Failed,
                    EndReason::Failed,
                    Some(StopReason::Failed),
                )
                .code(code),
            ),
            LegEvent::HungUp if self.answered_at.is_none() => self.caller_gone(End::new(
                CallState::Canceled,
                EndReason::CallerCanceled,
                Some(StopReason::CallEnded),
            )),
            LegEvent::HungUp => self.caller_gone(End::new(
                CallState::Completed,
                EndReason::CallEnded,
                Some(StopReason::CallEnded),
            )),
            // Keys go to the bot (the driver's part) or to the peer phone.
            LegEvent::Dtmf { .. } => {}
        }
    }

    /// The caller ended on its own: nothing to hang up there.
    fn caller_gone(&mut self, mut end: End) {
        self.up.remove(&CALLER);
        if !matches!(self.bot, BotState::Connecting | BotState::Connected) {
            end.stop = None;
        }
        self.end(end);
    }

    fn on_target(&mut self, ep: EpId, ev: LegEvent) {
        if Peer::Briefing(ep) == self.peer {
            if ev == LegEvent::HungUp {
                self.target_hung_up();
            }
            return;
        }
        if Peer::Phone(ep) == self.peer {
            // The phone the caller talks to.
            if ev == LegEvent::HungUp {
                self.up.remove(&ep);
                self.end(End::new(CallState::Completed, self.peer_hangup, None));
            }
            return;
        }
        let open = self
            .attempt_index(ep)
            .filter(|i| self.attempt(*i).outcome.is_open());
        let Some(i) = open else {
            // No longer rung (cancelled as another answered in the same
            // tick): it was hung up then, unless it is still up somehow.
            if ev == LegEvent::Answered && self.up.remove(&ep) {
                self.out.push_back(Output::Hangup(ep));
            }
            return;
        };
        match ev {
            LegEvent::Ringing | LegEvent::Dtmf { .. } => {}
            LegEvent::Answered => self.target_answered(i),
            LegEvent::Busy => self.attempt_done(i, AttemptOutcome::Busy, Some(486)),
            LegEvent::NoAnswer { code } => {
                self.attempt_done(i, AttemptOutcome::NoAnswer, Some(code))
            }
            LegEvent::Failed { code, .. } => {
                self.attempt_done(i, AttemptOutcome::Failed, Some(code))
            }
            LegEvent::HungUp => self.attempt_done(i, AttemptOutcome::Failed, None),
        }
    }

    /// A dial asked for with [`Output::Dial`] could not start.
    pub fn on_dial_failed(&mut self, ep: EpId, failure: DialFailure) {
        if self.ended {
            return;
        }
        if let Some(i) = self.attempt_index(ep) {
            if let Some(t) = self.transfer.as_mut() {
                t.attempts[i].dial_failure = Some(failure.reason);
            }
            self.up.remove(&ep);
            self.attempt_done_quiet(i, AttemptOutcome::Failed, Some(failure.code));
            self.after_attempt();
        }
    }

    /// The bot's socket is open.
    pub fn on_bot_connected(&mut self) {
        if self.ended || self.bot != BotState::Connecting {
            return;
        }
        self.bot = BotState::Connected;
        if self.answered_at.is_none() && self.answer_on_bot {
            // An inbound call is answered once its bot is there.
            self.out.push_back(Output::Answer);
        }
    }

    /// The bot could not be reached.
    pub fn on_bot_unreachable(&mut self) {
        self.bot_not_connected(EndReason::BotUnreachable);
    }

    /// The bot's address is one the bridge does not connect to.
    pub fn on_bot_address_refused(&mut self) {
        self.bot_not_connected(EndReason::BotAddressRefused);
    }

    fn bot_not_connected(&mut self, reason: EndReason) {
        if self.ended {
            return;
        }
        self.bot = BotState::None;
        self.end(End::new(CallState::Failed, reason, None));
    }

    /// The bot's socket closed or went dead without `session.hangup`.
    pub fn on_bot_lost(&mut self) {
        if self.ended {
            return;
        }
        self.bot = BotState::None;
        self.bot_lost = true;
        if self.answered_at.is_none() {
            return self.end(End::new(CallState::Canceled, EndReason::BotLost, None));
        }
        if let Some(b) = self.briefing.take() {
            // The person the bot was briefing takes the caller.
            self.hops += 1;
            return self.bridge(b.ep, b.leg);
        }
        if self.transfer.is_some() {
            // Targets the bot had rung go on ringing: one answering takes the
            // caller; all failing hands over to the fallback.
            return;
        }
        self.fallback_or_end();
    }

    /// The bot is gone from an answered call: the caller goes to the
    /// configured fallback, or the call ends (`bot_lost`).
    fn fallback_or_end(&mut self) {
        match self.cfg.fallback.take() {
            Some(target @ (DialTarget::Flow(_) | DialTarget::Prompt(_)))
                if self.hops < MAX_HOPS =>
            {
                self.hops += 1;
                self.start_flow(target);
            }
            Some(DialTarget::Extension(ext)) if self.hops < MAX_HOPS => {
                // Every phone of the extension rings, as for the bot's
                // `session.transfer_extension`: the driver says which.
                self.resolving_fallback = true;
                self.out.push_back(Output::ResolveExtension(ext));
            }
            Some(target) if self.hops < MAX_HOPS => self.ring_fallback(vec![target]),
            _ => self.end(End::new(CallState::Completed, EndReason::BotLost, None)),
        }
    }

    /// The phones of the fallback extension ([`Output::ResolveExtension`]):
    /// they ring at once, the first to answer takes the caller.
    pub fn on_extension_targets(&mut self, targets: Vec<DialTarget>) {
        if !std::mem::take(&mut self.resolving_fallback) || self.ended {
            return;
        }
        if targets.is_empty() {
            self.end(End::new(CallState::Completed, EndReason::BotLost, None));
        } else {
            self.ring_fallback(targets);
        }
    }

    fn ring_fallback(&mut self, targets: Vec<DialTarget>) {
        let caller_id = self.cfg.default_caller_id.clone();
        let timeout_ticks = self.cfg.transfer_timeout_s.max(1) * TICKS_PER_SEC;
        self.begin_transfer(Transfer {
            kind: "fallback",
            purpose: Purpose::Fallback,
            warm: false,
            strategy: TransferStrategy::Simultaneous,
            timeout_ticks,
            caller_id,
            attempts: targets.into_iter().map(new_attempt).collect(),
        });
    }

    /// The bot hung up (its queued audio has played out). The call ends once
    /// keys it sent just before have gone out.
    pub fn on_bot_hangup(&mut self) {
        if self.ended || self.hangup_pending.is_some() {
            return;
        }
        let end = End::new(
            CallState::Completed,
            EndReason::BotHangup,
            Some(StopReason::BotHangup),
        );
        self.hangup_pending = Some((self.ticks, end));
    }

    /// The bot asked for a transfer.
    pub fn on_bot_transfer(&mut self, req: TransferRequest) {
        if !self.may_transfer(req.kind) {
            return;
        }
        let caller_id = match req.caller_id {
            None => self.cfg.default_caller_id.clone(),
            Some(id) if self.cfg.own_numbers.iter().any(|n| same_number(n, &id)) => id,
            Some(id) => {
                self.refuse(
                    ErrorCode::BadField,
                    format!(
                        "{}: `caller_id` {id:?} is not a number of this call or of the operator; \
                         leave it out to present the call's own number",
                        req.kind
                    ),
                );
                return;
            }
        };
        let attempts: Vec<Attempt> = req.targets.into_iter().map(new_attempt).collect();
        if self.hops >= MAX_HOPS {
            self.out.push_back(Output::TransferFailed {
                kind: req.kind,
                reason: TransferFailure::TooManyHops,
                attempts,
            });
            return;
        }
        let timeout_s = req.timeout_s.unwrap_or(self.cfg.transfer_timeout_s).max(1);
        self.begin_transfer(Transfer {
            kind: req.kind,
            purpose: Purpose::Bot,
            warm: req.warm,
            strategy: req.strategy,
            timeout_ticks: timeout_s.saturating_mul(TICKS_PER_SEC),
            caller_id,
            attempts,
        });
    }

    /// Whether the bot may start a transfer now; refuses it if not.
    fn may_transfer(&mut self, kind: &str) -> bool {
        if self.ended || self.bot != BotState::Connected {
            return false;
        }
        let why = if self.transfer.is_some() || self.next_bot.is_some() || self.briefing.is_some() {
            self.refuse(
                ErrorCode::TransferInProgress,
                format!("{kind}: a transfer is already under way; wait for its outcome"),
            );
            return false;
        } else if self.answered_at.is_none() {
            "the call is not answered yet"
        } else if self.hangup_pending.is_some() {
            "the bot already hung up"
        } else {
            return true;
        };
        self.refuse(ErrorCode::TransferRefused, format!("{kind}: {why}"));
        false
    }

    /// The bot asked to hand the call to another bot (`session.transfer_ws`).
    /// The new bot is connected first; the old one keeps the call until then.
    pub fn on_bot_transfer_ws(&mut self, url: String) {
        const KIND: &str = "session.transfer_ws";
        if !self.may_transfer(KIND) {
            return;
        }
        if self.hops >= MAX_HOPS {
            self.out.push_back(Output::TransferFailed {
                kind: KIND,
                reason: TransferFailure::TooManyHops,
                attempts: vec![Attempt {
                    outcome: AttemptOutcome::Cancelled,
                    ..new_attempt(DialTarget::Bot(url))
                }],
            });
            return;
        }
        self.next_bot = Some(self.ticks);
        self.out.push_back(Output::ConnectNextBot(url));
    }

    /// The bot ends a warm transfer by handing the caller to the target it
    /// briefed (`session.transfer_complete`): it gets `stop` `transferred`.
    pub fn on_bot_transfer_complete(&mut self) {
        let Some(b) = self.take_briefing("session.transfer_complete") else {
            return;
        };
        self.hops += 1;
        self.bot = BotState::None;
        self.out.push_back(Output::StopBot(StopReason::Transferred));
        self.bridge(b.ep, b.leg);
    }

    /// The bot ends a warm transfer by dropping the target
    /// (`session.transfer_cancel`): it is back with the caller.
    pub fn on_bot_transfer_cancel(&mut self) {
        let Some(b) = self.take_briefing("session.transfer_cancel") else {
            return;
        };
        self.up.remove(&b.ep);
        self.out.push_back(Output::Hangup(b.ep));
        let leg = &mut self.legs[b.leg];
        leg.outcome = AttemptOutcome::Cancelled;
        leg.ended_at = Some(self.ticks);
        self.peer = Peer::None;
    }

    /// The briefing a warm transfer's ending message ends; refuses the
    /// message if there is none.
    fn take_briefing(&mut self, kind: &str) -> Option<Briefing> {
        if self.ended || self.bot != BotState::Connected {
            return None;
        }
        if self.briefing.is_none() {
            let why = if self.transfer.as_ref().is_some_and(|t| t.warm) {
                "the warm transfer's target has not answered yet (wait for `transfer_answered`)"
            } else {
                "no warm transfer is under way (start one with session.transfer and \"mode\":\"warm\")"
            };
            self.refuse(ErrorCode::NoWarmTransfer, format!("{kind}: {why}"));
        }
        self.briefing.take()
    }

    /// The target a bot was briefing hung up: the bot is back with the caller.
    fn target_hung_up(&mut self) {
        let Some(b) = self.briefing.take() else {
            return;
        };
        self.up.remove(&b.ep);
        self.legs[b.leg].ended_at = Some(self.ticks);
        self.peer = Peer::None;
        self.out.push_back(Output::TransferFailed {
            kind: b.kind,
            reason: TransferFailure::TargetHungUp,
            attempts: self.legs[b.attempts].to_vec(),
        });
    }

    /// The caller's peer becomes the phone endpoint `ep`, the call's leg `leg`.
    fn bridge(&mut self, ep: EpId, leg: usize) {
        for a in self.legs.iter_mut() {
            a.bridged = false;
        }
        self.legs[leg].bridged = true;
        self.bridged = Some((self.legs[leg].target.clone(), true));
        self.peer = Peer::Phone(ep);
        self.out.push_back(Output::Bridged(ep));
    }

    /// The bot a `session.transfer_ws` named is connected: it takes the call.
    pub fn on_next_bot_connected(&mut self) {
        if self.ended || self.next_bot.take().is_none() {
            return;
        }
        self.hops += 1;
        if let Some((FlowStep::ConnectingBot, leg)) = self.flow {
            // A flow's bot node: the bot takes the caller from the flow.
            self.flow = None;
            self.end_leg(leg);
            self.legs[leg].bridged = false;
            self.bridged = None;
            self.bot = BotState::Connected;
            self.peer = Peer::None;
            self.out.push_back(Output::FlowOutcome(true));
        }
        self.out.push_back(Output::SwapBot);
    }

    /// The bot a `session.transfer_ws` named could not be reached: the old
    /// one keeps the call.
    pub fn on_next_bot_unreachable(&mut self, url: String) {
        let Some(since) = self.next_bot.take() else {
            return;
        };
        if self.ended {
            return;
        }
        if let Some((step @ FlowStep::ConnectingBot, _)) = self.flow.as_mut() {
            *step = FlowStep::Running;
            self.out.push_back(Output::FlowOutcome(false));
            return;
        }
        self.out.push_back(Output::TransferFailed {
            kind: "session.transfer_ws",
            reason: TransferFailure::BotUnreachable,
            attempts: vec![Attempt {
                outcome: AttemptOutcome::Failed,
                dialled_at: Some(since),
                ended_at: Some(self.ticks),
                ..new_attempt(DialTarget::Bot(url))
            }],
        });
    }

    /// The bot asked to hand the caller to a flow (`session.flow_transfer`);
    /// `known`: the bridge has a flow of that id.
    pub fn on_bot_flow_transfer(&mut self, flow_id: String, known: bool) {
        const KIND: &str = "session.flow_transfer";
        if !self.may_transfer(KIND) {
            return;
        }
        let reason = if !known {
            TransferFailure::UnknownFlow
        } else if self.hops >= MAX_HOPS {
            TransferFailure::TooManyHops
        } else {
            self.hops += 1;
            self.bot = BotState::None;
            self.out
                .push_back(Output::StopBot(StopReason::FlowTransfer));
            self.start_flow(DialTarget::Flow(flow_id));
            return;
        };
        self.out.push_back(Output::TransferFailed {
            kind: KIND,
            reason,
            attempts: vec![Attempt {
                outcome: AttemptOutcome::Failed,
                ..new_attempt(DialTarget::Flow(flow_id))
            }],
        });
    }

    /// The caller's peer becomes the flow (or prompt) `target`: a leg of its
    /// own, answered at once.
    fn start_flow(&mut self, target: DialTarget) {
        let leg = self.legs.len();
        self.legs.push(Attempt {
            outcome: AttemptOutcome::Answered,
            dialled_at: Some(self.ticks),
            answered_at: Some(self.ticks),
            ..new_attempt(target.clone())
        });
        for a in self.legs.iter_mut() {
            a.bridged = false;
        }
        self.legs[leg].bridged = true;
        self.bridged = Some((target.clone(), true));
        self.flow = Some((FlowStep::Running, leg));
        self.peer = Peer::Flow;
        self.out.push_back(Output::StartFlow(target));
    }

    fn end_leg(&mut self, leg: usize) {
        if self.legs[leg].ended_at.is_none() {
            self.legs[leg].ended_at = Some(self.ticks);
        }
    }

    /// The flow [`Output::StartFlow`] named does not exist: the call ends.
    pub fn on_flow_missing(&mut self) {
        if self.ended || self.flow.is_none() {
            return;
        }
        self.end(End::new(CallState::Completed, EndReason::NoRoute, None));
    }

    /// The flow's dial node rings `targets` at once for `timeout_s`; the
    /// outcome comes back as [`Output::FlowOutcome`].
    pub fn on_flow_dial(&mut self, targets: Vec<DialTarget>, timeout_s: u32) {
        if self.ended {
            return;
        }
        let Some((step @ FlowStep::Running, _)) = self.flow.as_mut() else {
            return;
        };
        if targets.is_empty() {
            self.out.push_back(Output::FlowOutcome(false));
            return;
        }
        *step = FlowStep::Dialing;
        let caller_id = self.cfg.default_caller_id.clone();
        self.begin_transfer(Transfer {
            kind: "flow",
            purpose: Purpose::Flow,
            warm: false,
            strategy: TransferStrategy::Simultaneous,
            timeout_ticks: timeout_s.max(1).saturating_mul(TICKS_PER_SEC),
            caller_id,
            attempts: targets.into_iter().map(new_attempt).collect(),
        });
    }

    /// The flow's bot node hands the caller to a bot; connected or not, the
    /// outcome comes back as [`Output::FlowOutcome`].
    pub fn on_flow_bot(&mut self, url: String) {
        if self.ended {
            return;
        }
        let Some((step @ FlowStep::Running, _)) = self.flow.as_mut() else {
            return;
        };
        if self.hops >= MAX_HOPS {
            // A flow that hands to a bot that hands back to the flow...
            self.out.push_back(Output::FlowOutcome(false));
            return;
        }
        *step = FlowStep::ConnectingBot;
        self.next_bot = Some(self.ticks);
        self.out.push_back(Output::ConnectNextBot(url));
    }

    /// The flow ended the call (a null exit, or a menu without an answer).
    pub fn on_flow_hangup(&mut self) {
        if self.ended || self.flow.is_none() {
            return;
        }
        self.end(End::new(CallState::Completed, EndReason::FlowHangup, None));
    }

    /// The bridge is shutting down.
    pub fn on_shutdown(&mut self) {
        if self.ended {
            return;
        }
        let state = if self.answered_at.is_some() {
            CallState::Completed
        } else {
            CallState::Canceled
        };
        let stop = self.bot_stop(StopReason::Shutdown);
        self.end(End::new(state, EndReason::Shutdown, stop));
    }

    /// The call is ended from outside (a command through the registry):
    /// targets that ring are cancelled, a bot gets `stop` `callended`.
    pub fn on_api_hangup(&mut self) {
        if self.ended {
            return;
        }
        let state = if self.answered_at.is_some() {
            CallState::Completed
        } else {
            CallState::Canceled
        };
        let stop = self.bot_stop(StopReason::CallEnded);
        self.end(End::new(state, EndReason::ApiHangup, stop));
    }

    /// True while a bot is connected and has the call's protocol session
    /// (it may be briefing a target or waiting for a transfer's outcome).
    pub fn bot_connected(&self) -> bool {
        !self.ended && self.bot == BotState::Connected
    }

    /// Takes back the last refusal the call queued for the bot, so that it
    /// goes to whoever made the request instead (a command from outside the
    /// call asked for what the bot could have).
    pub fn take_refusal(&mut self) -> Option<(ErrorCode, String)> {
        let i = self
            .out
            .iter()
            .rposition(|o| matches!(o, Output::RefuseBot { .. }))?;
        match self.out.remove(i) {
            Some(Output::RefuseBot { code, message }) => Some((code, message)),
            _ => None,
        }
    }

    fn refuse(&mut self, code: ErrorCode, message: String) {
        self.out.push_back(Output::RefuseBot { code, message });
    }

    /// The `stop` reason for the bot, if there is one to tell.
    fn bot_stop(&self, reason: StopReason) -> Option<StopReason> {
        matches!(self.bot, BotState::Connecting | BotState::Connected).then_some(reason)
    }

    fn begin_transfer(&mut self, t: Transfer) {
        let sequential = t.strategy == TransferStrategy::Sequential;
        self.transfer = Some(t);
        let n = self.transfer.as_ref().map_or(0, |t| t.attempts.len());
        for i in 0..n {
            self.dial_attempt(i);
            if sequential {
                break;
            }
        }
    }

    fn dial_attempt(&mut self, i: usize) {
        let ep = EpId(self.next_ep);
        self.next_ep += 1;
        let ticks = self.ticks;
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        let a = &mut t.attempts[i];
        a.ep = Some(ep);
        a.outcome = AttemptOutcome::Ringing;
        a.dialled_at = Some(ticks);
        let out = Output::Dial {
            ep,
            target: a.target.clone(),
            caller_id: t.caller_id.clone(),
        };
        self.up.insert(ep);
        self.out.push_back(out);
    }

    fn attempt_index(&self, ep: EpId) -> Option<usize> {
        self.transfer
            .as_ref()?
            .attempts
            .iter()
            .position(|a| a.ep == Some(ep))
    }

    fn attempt(&self, i: usize) -> &Attempt {
        &self.transfer.as_ref().expect("a transfer").attempts[i]
    }

    fn time_out_attempts(&mut self) {
        let Some(t) = self.transfer.as_ref() else {
            return;
        };
        let limit = t.timeout_ticks;
        let due: Vec<usize> = t
            .attempts
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                a.outcome == AttemptOutcome::Ringing
                    && a.dialled_at.is_some_and(|d| self.ticks - d >= limit)
            })
            .map(|(i, _)| i)
            .collect();
        for i in due {
            if let Some(ep) = self.attempt(i).ep {
                self.out.push_back(Output::Hangup(ep));
            }
            self.attempt_done(i, AttemptOutcome::NoAnswer, Some(408));
            if self.transfer.is_none() || self.ended {
                return;
            }
        }
    }

    /// Records an attempt's end (the leg is gone) and moves the transfer on.
    fn attempt_done(&mut self, i: usize, outcome: AttemptOutcome, code: Option<u16>) {
        if let Some(ep) = self.attempt(i).ep {
            self.up.remove(&ep);
        }
        self.attempt_done_quiet(i, outcome, code);
        self.after_attempt();
    }

    fn attempt_done_quiet(&mut self, i: usize, outcome: AttemptOutcome, code: Option<u16>) {
        let ticks = self.ticks;
        if let Some(t) = self.transfer.as_mut() {
            let a = &mut t.attempts[i];
            a.outcome = outcome;
            a.ended_at = a.dialled_at.map(|_| ticks);
            a.sip_code = code.or(a.sip_code);
        }
    }

    /// After an attempt failed: ring the next (sequential), or give up when
    /// none is left ringing.
    fn after_attempt(&mut self) {
        let Some(t) = self.transfer.as_ref() else {
            return;
        };
        if t.attempts
            .iter()
            .any(|a| a.outcome == AttemptOutcome::Ringing)
        {
            return;
        }
        if let Some(next) = t
            .attempts
            .iter()
            .position(|a| a.outcome == AttemptOutcome::Waiting)
        {
            self.dial_attempt(next);
            return;
        }
        let t = self.transfer.take().expect("checked");
        self.legs.extend(t.attempts.iter().cloned());
        let reason = overall_failure(&t.attempts);
        match t.purpose {
            Purpose::Bot if self.bot == BotState::Connected => {
                self.out.push_back(Output::TransferFailed {
                    kind: t.kind,
                    reason,
                    attempts: t.attempts,
                });
                return;
            }
            // The bot that asked is gone: the fallback, or the end.
            Purpose::Bot => return self.fallback_or_end(),
            Purpose::Fallback => {
                return self.end(End::new(CallState::Completed, EndReason::BotLost, None))
            }
            Purpose::Flow => {
                if let Some((step, _)) = self.flow.as_mut() {
                    *step = FlowStep::Running;
                }
                self.out.push_back(Output::FlowOutcome(false));
                return;
            }
            Purpose::Did => {}
        }
        // A DID's own targets failed: so did the call, as the one that says
        // most about why (busy, rang out, or the first).
        let a = match reason {
            TransferFailure::Busy => t
                .attempts
                .iter()
                .find(|a| a.outcome == AttemptOutcome::Busy),
            TransferFailure::NoAnswer => t
                .attempts
                .iter()
                .find(|a| a.outcome == AttemptOutcome::NoAnswer),
            _ => None,
        }
        .unwrap_or(&t.attempts[0]);
        let end = match (a.outcome, a.dial_failure) {
            (_, Some(EndReason::NoRoute)) => End::new(CallState::Failed, EndReason::NoRoute, None),
            (_, Some(reason)) => End::new(CallState::Failed, reason, None),
            (AttemptOutcome::Busy, _) => End::new(CallState::Busy, EndReason::Busy, None),
            (AttemptOutcome::NoAnswer, _) => {
                End::new(CallState::NoAnswer, EndReason::NoAnswer, None)
            }
            _ => End::new(CallState::Failed, EndReason::Failed, None),
        };
        let end = End {
            sip_code: a.sip_code,
            ..end
        };
        self.end(end);
    }

    fn target_answered(&mut self, i: usize) {
        let ticks = self.ticks;
        let mut t = self.transfer.take().expect("an attempt");
        let winner = t.attempts[i].ep.expect("dialled");
        t.attempts[i].outcome = AttemptOutcome::Answered;
        t.attempts[i].answered_at = Some(ticks);
        for a in t.attempts.iter_mut() {
            if a.outcome.is_open() {
                if a.outcome == AttemptOutcome::Ringing {
                    if let Some(ep) = a.ep {
                        self.up.remove(&ep);
                        self.out.push_back(Output::Hangup(ep));
                    }
                    a.outcome = AttemptOutcome::Cancelled;
                    a.ended_at = Some(ticks);
                } else {
                    // Never rung: nothing to cancel, and not worth a leg.
                    a.outcome = AttemptOutcome::Cancelled;
                }
            }
        }
        let first = self.legs.len();
        let leg = first + t.attempts[..i].iter().filter(|a| a.ep.is_some()).count();
        let purpose = t.purpose;
        let (kind, warm) = (t.kind, t.warm);
        self.legs
            .extend(t.attempts.into_iter().filter(|a| a.ep.is_some()));
        match purpose {
            Purpose::Bot if warm && self.bot == BotState::Connected => {
                // The bot briefs the target; the caller holds until it says.
                self.briefing = Some(Briefing {
                    ep: winner,
                    kind,
                    attempts: first..self.legs.len(),
                    leg,
                });
                self.peer = Peer::Briefing(winner);
                let destination = self.legs[leg].target.as_str().to_string();
                self.out
                    .push_back(Output::TransferAnswered { kind, destination });
                return;
            }
            Purpose::Bot => {
                self.hops += 1;
                if self.bot == BotState::Connected {
                    self.bot = BotState::None;
                    self.out.push_back(Output::StopBot(StopReason::Transferred));
                }
            }
            Purpose::Fallback => self.hops += 1,
            Purpose::Flow => {
                // The flow's dial node was answered: the flow is over.
                if let Some((_, flow_leg)) = self.flow.take() {
                    self.end_leg(flow_leg);
                }
                self.out.push_back(Output::FlowOutcome(true));
            }
            Purpose::Did => {
                // A DID's target answered: now the caller is answered too.
                self.peer_hangup = EndReason::ExtensionHangup;
                self.answered_at = Some(ticks);
                self.out.push_back(Output::Answer);
                self.out.push_back(Output::State(CallState::InProgress));
                self.out.push_back(Output::Answered);
            }
        }
        self.bridge(winner, leg);
        if purpose == Purpose::Did {
            self.bridged = Some((self.legs[leg].target.clone(), false));
        }
    }

    /// Ends the call: cancels a transfer, hangs up every endpoint still up,
    /// and says how it ended.
    fn end(&mut self, mut end: End) {
        if self.ended {
            return;
        }
        if self.bot_lost
            && matches!(
                end.reason,
                EndReason::CallEnded
                    | EndReason::AgentHangup
                    | EndReason::FlowHangup
                    | EndReason::NoRoute
            )
        {
            // Where the caller went is in the legs; why is that the bot was lost.
            end.reason = EndReason::BotLost;
        }
        self.ended = true;
        let ticks = self.ticks;
        self.briefing = None;
        self.flow = None;
        if let Some(mut t) = self.transfer.take() {
            for a in t.attempts.iter_mut().filter(|a| a.outcome.is_open()) {
                a.outcome = AttemptOutcome::Cancelled;
                a.ended_at = a.dialled_at.map(|_| ticks);
            }
            self.legs
                .extend(t.attempts.into_iter().filter(|a| a.ep.is_some()));
        }
        // The leg the caller talked to ends with the call.
        for a in self.legs.iter_mut() {
            if a.outcome == AttemptOutcome::Answered && a.ended_at.is_none() {
                a.ended_at = Some(ticks);
            }
        }
        for ep in std::mem::take(&mut self.up) {
            self.out.push_back(Output::Hangup(ep));
        }
        self.peer = Peer::None;
        self.out.push_back(Output::End(end));
    }
}

fn new_attempt(target: DialTarget) -> Attempt {
    Attempt {
        target,
        ep: None,
        outcome: AttemptOutcome::Waiting,
        sip_code: None,
        dial_failure: None,
        dialled_at: None,
        answered_at: None,
        ended_at: None,
        bridged: false,
    }
}

/// Why a transfer failed overall, from how each target went.
fn overall_failure(attempts: &[Attempt]) -> TransferFailure {
    if attempts
        .iter()
        .all(|a| a.dial_failure == Some(EndReason::NoRoute))
    {
        TransferFailure::NoRoute
    } else if attempts.iter().all(|a| a.outcome == AttemptOutcome::Busy) {
        TransferFailure::Busy
    } else if attempts
        .iter()
        .any(|a| a.outcome == AttemptOutcome::NoAnswer)
    {
        TransferFailure::NoAnswer
    } else if attempts.iter().any(|a| a.outcome == AttemptOutcome::Busy) {
        TransferFailure::Busy
    } else {
        TransferFailure::Failed
    }
}

/// Two spellings of one number (`+1555…` and `1555…`).
fn same_number(a: &str, b: &str) -> bool {
    let digits = |s: &str| s.trim().trim_start_matches('+').to_string();
    !a.trim().is_empty() && digits(a) == digits(b)
}

#[cfg(test)]
mod tests {
    //! Whole calls, tick by tick: the call's outputs are carried out by a
    //! tiny driver over the simulated carrier's virtual phones.

    use super::*;
    use crate::carrier::{PhoneLeg, SimCarrier, VirtualPhone};
    use crate::config::CarrierConfig;
    use codecs::pcm::{Frame, SILENCE};
    use std::collections::BTreeMap;

    /// A destination a transfer tried: where, how it went, its SIP code.
    type Tried = (String, AttemptOutcome, Option<u16>);

    /// A call and the virtual phones its outputs dialled.
    struct Harness {
        call: Call,
        carrier: SimCarrier,
        phones: BTreeMap<EpId, VirtualPhone>,
        /// Every output, with the tick it came on.
        log: Vec<(u32, Output)>,
        hung_up: Vec<EpId>,
        bot_connected: bool,
    }

    fn cfg() -> CallConfig {
        CallConfig {
            ring_limit_ticks: 30 * TICKS_PER_SEC,
            max_ticks: 3600 * TICKS_PER_SEC,
            transfer_timeout_s: 30,
            default_caller_id: "+15550001111".into(),
            own_numbers: vec!["+15550001111".into(), "+15550002222".into()],
            fallback: None,
        }
    }

    impl Harness {
        /// An outbound bot call, answered, with its bot connected.
        fn talking() -> Harness {
            let mut h = Harness::new(Start::Outbound {
                connect_at_answer: false,
            });
            h.call.on_bot_connected();
            h.call.on_leg(CALLER, LegEvent::Ringing);
            h.call.on_leg(CALLER, LegEvent::Answered);
            h.drain();
            h
        }

        fn new(start: Start) -> Harness {
            let mut h = Harness {
                call: Call::new(cfg(), start),
                carrier: SimCarrier::new(&CarrierConfig::default()).unwrap(),
                phones: BTreeMap::new(),
                log: Vec::new(),
                hung_up: Vec::new(),
                bot_connected: false,
            };
            h.drain();
            h
        }

        /// Carries out the call's outputs, as the driver does.
        fn drain(&mut self) {
            while let Some(out) = self.call.poll_output() {
                match &out {
                    Output::Dial { ep, target, .. } => {
                        let number = target.as_str().to_string();
                        match self.carrier.behaviour(&number) {
                            Some(b) => {
                                self.phones.insert(*ep, VirtualPhone::new(b));
                            }
                            None => self.call.on_dial_failed(
                                *ep,
                                DialFailure {
                                    code: 404,
                                    reason: EndReason::NoRoute,
                                },
                            ),
                        }
                    }
                    Output::Hangup(ep) => {
                        if let Some(p) = self.phones.get_mut(ep) {
                            p.hangup();
                        }
                        self.hung_up.push(*ep);
                    }
                    Output::ConnectBot => self.bot_connected = true,
                    _ => {}
                }
                self.log.push((self.call.ticks(), out));
            }
        }

        /// One tick: the call's clock, then every phone's.
        fn tick(&mut self) {
            self.call.tick(false);
            self.drain();
            let eps: Vec<EpId> = self.phones.keys().copied().collect();
            for ep in eps {
                let p = self.phones.get_mut(&ep).unwrap();
                p.tick(&SILENCE);
                let mut said: Frame = SILENCE;
                p.next_said(&mut said, true);
                let events: Vec<LegEvent> = std::iter::from_fn(|| p.poll_event()).collect();
                for ev in events {
                    self.call.on_leg(ep, ev);
                    self.drain();
                }
            }
        }

        fn ticks(&mut self, n: u32) {
            for _ in 0..n {
                self.tick();
            }
        }

        fn transfer(
            &mut self,
            targets: &[&str],
            strategy: TransferStrategy,
            timeout_s: Option<u32>,
        ) {
            self.call.on_bot_transfer(TransferRequest {
                kind: "session.transfer",
                targets: targets
                    .iter()
                    .map(|t| DialTarget::Number(t.to_string()))
                    .collect(),
                strategy,
                timeout_s,
                caller_id: None,
                warm: false,
            });
            self.drain();
        }

        /// A warm transfer to one target, ticked until it answers.
        fn warm_answered(&mut self, target: &str) -> EpId {
            self.call.on_bot_transfer(TransferRequest {
                kind: "session.transfer",
                targets: vec![DialTarget::Number(target.into())],
                strategy: TransferStrategy::Simultaneous,
                timeout_s: None,
                caller_id: None,
                warm: true,
            });
            self.drain();
            let (ep, _) = self.dialled().last().cloned().expect("dialled");
            for _ in 0..200 {
                if self.call.is_briefing() {
                    break;
                }
                self.tick();
            }
            assert_eq!(self.call.peer(), Peer::Briefing(ep));
            ep
        }

        fn outputs(&self) -> Vec<&Output> {
            self.log.iter().map(|(_, o)| o).collect()
        }

        fn dialled(&self) -> Vec<(EpId, String)> {
            self.outputs()
                .into_iter()
                .filter_map(|o| match o {
                    Output::Dial { ep, target, .. } => Some((*ep, target.as_str().to_string())),
                    _ => None,
                })
                .collect()
        }

        fn transfer_failed(&self) -> Option<(TransferFailure, Vec<Tried>)> {
            self.outputs().into_iter().find_map(|o| match o {
                Output::TransferFailed {
                    reason, attempts, ..
                } => Some((
                    *reason,
                    attempts
                        .iter()
                        .map(|a| (a.target.as_str().to_string(), a.outcome, a.sip_code))
                        .collect(),
                )),
                _ => None,
            })
        }

        fn end(&self) -> Option<&End> {
            self.outputs().into_iter().find_map(|o| match o {
                Output::End(e) => Some(e),
                _ => None,
            })
        }

        fn refusal(&self) -> Option<ErrorCode> {
            self.outputs().into_iter().find_map(|o| match o {
                Output::RefuseBot { code, .. } => Some(*code),
                _ => None,
            })
        }
    }

    #[test]
    fn a_transfer_answered_bridges_the_caller_and_stops_the_bot() {
        let mut h = Harness::talking();
        h.transfer(&["+99910001"], TransferStrategy::Simultaneous, None);
        let (ep, _) = h.dialled()[0].clone();
        assert!(h.call.is_transferring());
        // While it rings the bot keeps the caller.
        h.ticks(24);
        assert_eq!(h.call.peer(), Peer::None);
        assert!(!h.log.iter().any(|(_, o)| matches!(o, Output::StopBot(_))));
        h.ticks(2);
        assert_eq!(h.call.peer(), Peer::Phone(ep));
        let tail: Vec<&Output> = h.outputs().into_iter().rev().take(2).collect();
        assert_eq!(
            tail,
            vec![
                &Output::Bridged(ep),
                &Output::StopBot(StopReason::Transferred)
            ]
        );
        assert_eq!(h.call.legs().len(), 1);
        assert_eq!(h.call.legs()[0].outcome, AttemptOutcome::Answered);
        assert_eq!(h.call.attended_by(), AttendedBy::Agent("+99910001".into()));
        // The agent hangs up: the call ends, nobody left to hang up but the caller.
        h.phones.get_mut(&ep).unwrap();
        h.call.on_leg(ep, LegEvent::HungUp);
        h.drain();
        let end = h.end().unwrap();
        assert_eq!(
            (end.state, end.reason),
            (CallState::Completed, EndReason::AgentHangup)
        );
        assert_eq!(end.stop, None, "the bot left at the transfer");
        assert_eq!(h.hung_up, vec![CALLER]);
        assert!(h.call.legs()[0].ended_at.is_some());
    }

    #[test]
    fn simultaneous_first_answer_wins_and_the_others_are_cancelled_at_once() {
        let mut h = Harness::talking();
        // busy (after 200 ms), never answers, answers (after 500 ms)
        h.transfer(
            &["+99920001", "+99930001", "+99910001"],
            TransferStrategy::Simultaneous,
            None,
        );
        let d = h.dialled();
        assert_eq!(d.len(), 3, "all rung at once");
        h.ticks(26);
        let winner = d[2].0;
        assert_eq!(h.call.peer(), Peer::Phone(winner));
        // The one still ringing was cancelled on the tick the winner answered.
        let answered_at = h
            .call
            .legs()
            .iter()
            .find(|a| a.outcome == AttemptOutcome::Answered)
            .unwrap()
            .answered_at;
        let cancel = h
            .log
            .iter()
            .find(|(_, o)| *o == Output::Hangup(d[1].0))
            .unwrap();
        assert_eq!(Some(cancel.0), answered_at);
        let outcomes: Vec<AttemptOutcome> = h.call.legs().iter().map(|a| a.outcome).collect();
        assert_eq!(
            outcomes,
            vec![
                AttemptOutcome::Busy,
                AttemptOutcome::Cancelled,
                AttemptOutcome::Answered
            ]
        );
        assert_eq!(h.call.legs()[0].sip_code, Some(486));
    }

    #[test]
    fn sequential_skips_a_busy_target_at_once() {
        let mut h = Harness::talking();
        h.transfer(
            &["+99920001", "+99910001"],
            TransferStrategy::Sequential,
            Some(5),
        );
        assert_eq!(h.dialled().len(), 1, "one at a time");
        // Busy after 200 ms: the next is rung on the same tick.
        h.ticks(10);
        let d = h.dialled();
        assert_eq!(d.len(), 2);
        let busy_at = h
            .log
            .iter()
            .position(|(_, o)| matches!(o, Output::Dial { ep, .. } if *ep == d[1].0))
            .unwrap();
        assert_eq!(h.log[busy_at].0, 10);
        h.ticks(26);
        assert_eq!(h.call.peer(), Peer::Phone(d[1].0));
    }

    #[test]
    fn sequential_gives_each_attempt_its_timeout() {
        let mut h = Harness::talking();
        h.transfer(
            &["+99930001", "+99910001"],
            TransferStrategy::Sequential,
            Some(2),
        );
        h.ticks(100);
        let d = h.dialled();
        assert_eq!(d.len(), 2, "second rung once the first timed out");
        let second = h
            .log
            .iter()
            .find(|(_, o)| matches!(o, Output::Dial { ep, .. } if *ep == d[1].0))
            .unwrap();
        assert_eq!(second.0, 100);
        assert!(h.hung_up.contains(&d[0].0), "the first was cancelled");
        assert_eq!(
            h.call.legs().len(),
            0,
            "legs are logged when the transfer ends"
        );
        h.ticks(30);
        assert_eq!(h.call.peer(), Peer::Phone(d[1].0));
        assert_eq!(h.call.legs()[0].outcome, AttemptOutcome::NoAnswer);
        assert_eq!(h.call.legs()[0].sip_code, Some(408));
    }

    #[test]
    fn nobody_answering_tells_the_bot_which_is_how_and_it_keeps_the_call() {
        let mut h = Harness::talking();
        h.transfer(
            &["+99920001", "+99930001", "+99940001", "+15550009999"],
            TransferStrategy::Simultaneous,
            Some(3),
        );
        h.ticks(150);
        let (reason, attempts) = h.transfer_failed().expect("transfer_failed");
        assert_eq!(reason, TransferFailure::NoAnswer);
        assert_eq!(
            attempts,
            vec![
                ("+99920001".into(), AttemptOutcome::Busy, Some(486)),
                ("+99930001".into(), AttemptOutcome::NoAnswer, Some(408)),
                ("+99940001".into(), AttemptOutcome::Failed, Some(503)),
                ("+15550009999".into(), AttemptOutcome::Failed, Some(404)),
            ]
        );
        assert!(!h.call.is_transferring());
        assert!(!h.call.is_ended());
        assert!(!h.log.iter().any(|(_, o)| matches!(o, Output::StopBot(_))));
        assert_eq!(h.call.attended_by(), AttendedBy::Bot);
        // It may try again.
        h.transfer(&["+99910001"], TransferStrategy::Simultaneous, None);
        h.ticks(30);
        assert!(matches!(h.call.peer(), Peer::Phone(_)));
    }

    #[test]
    fn unreachable_destinations_fail_with_no_route() {
        let mut h = Harness::talking();
        h.transfer(&["+15550009999"], TransferStrategy::Simultaneous, None);
        let (reason, _) = h.transfer_failed().unwrap();
        assert_eq!(reason, TransferFailure::NoRoute);
        assert!(!h.call.is_ended());
    }

    #[test]
    fn a_second_transfer_while_ringing_is_refused() {
        let mut h = Harness::talking();
        h.transfer(&["+99910001"], TransferStrategy::Simultaneous, None);
        h.transfer(&["+99910002"], TransferStrategy::Simultaneous, None);
        assert_eq!(h.refusal(), Some(ErrorCode::TransferInProgress));
        assert_eq!(h.dialled().len(), 1);
        h.ticks(26);
        assert!(matches!(h.call.peer(), Peer::Phone(_)));
    }

    #[test]
    fn a_caller_id_the_operator_does_not_own_is_refused() {
        let mut h = Harness::talking();
        h.call.on_bot_transfer(TransferRequest {
            kind: "session.transfer",
            targets: vec![DialTarget::Number("+99910001".into())],
            strategy: TransferStrategy::Simultaneous,
            timeout_s: None,
            caller_id: Some("+12125550000".into()),
            warm: false,
        });
        h.drain();
        assert_eq!(h.refusal(), Some(ErrorCode::BadField));
        assert!(h.dialled().is_empty());
        // An own number (spelt without +) is used.
        h.call.on_bot_transfer(TransferRequest {
            kind: "session.transfer",
            targets: vec![DialTarget::Number("+99910001".into())],
            strategy: TransferStrategy::Simultaneous,
            timeout_s: None,
            caller_id: Some("15550002222".into()),
            warm: false,
        });
        h.drain();
        let presented = h.outputs().into_iter().find_map(|o| match o {
            Output::Dial { caller_id, .. } => Some(caller_id.clone()),
            _ => None,
        });
        assert_eq!(presented.as_deref(), Some("15550002222"));
    }

    #[test]
    fn the_bot_hanging_up_while_targets_ring_cancels_them() {
        let mut h = Harness::talking();
        h.transfer(
            &["+99930001", "+99930002"],
            TransferStrategy::Simultaneous,
            None,
        );
        let d = h.dialled();
        h.ticks(5);
        h.call.on_bot_hangup();
        h.tick();
        let end = h.end().unwrap().clone();
        assert_eq!(end.reason, EndReason::BotHangup);
        assert_eq!(end.stop, Some(StopReason::BotHangup));
        for (ep, _) in &d {
            assert!(h.hung_up.contains(ep));
        }
        assert!(h.hung_up.contains(&CALLER));
        let outcomes: Vec<AttemptOutcome> = h.call.legs().iter().map(|a| a.outcome).collect();
        assert_eq!(outcomes, vec![AttemptOutcome::Cancelled; 2]);
    }

    #[test]
    fn a_hangup_from_outside_while_targets_ring_cancels_them() {
        let mut h = Harness::talking();
        h.transfer(&["+99930001"], TransferStrategy::Simultaneous, None);
        let d = h.dialled();
        h.tick();
        // A second request, made for someone outside the call, is refused
        // to them and not to the bot.
        h.call.on_bot_transfer(TransferRequest {
            kind: "session.transfer",
            targets: vec![DialTarget::Number("+99930002".into())],
            strategy: TransferStrategy::Simultaneous,
            timeout_s: None,
            caller_id: None,
            warm: false,
        });
        assert_eq!(
            h.call.take_refusal().map(|r| r.0),
            Some(ErrorCode::TransferInProgress)
        );
        assert!(h.call.take_refusal().is_none());
        h.call.on_api_hangup();
        h.tick();
        let end = h.end().unwrap().clone();
        assert_eq!(end.reason, EndReason::ApiHangup);
        assert_eq!(end.stop, Some(StopReason::CallEnded));
        assert!(h.hung_up.contains(&d[0].0) && h.hung_up.contains(&CALLER));
        assert_eq!(h.call.legs()[0].outcome, AttemptOutcome::Cancelled);
        assert!(!h.call.bot_connected());
    }

    #[test]
    fn race_target_answers_and_caller_hangs_up_in_the_same_tick() {
        for caller_first in [true, false] {
            let mut h = Harness::talking();
            h.transfer(&["+99930001"], TransferStrategy::Simultaneous, None);
            let ep = h.dialled()[0].0;
            h.tick();
            let mut events = vec![(CALLER, LegEvent::HungUp), (ep, LegEvent::Answered)];
            if !caller_first {
                events.reverse();
            }
            for (who, ev) in events {
                h.call.on_leg(who, ev);
                h.drain();
            }
            let end = h.end().unwrap().clone();
            assert_eq!(
                end.reason,
                EndReason::CallEnded,
                "caller first: {caller_first}"
            );
            // The target that answered into an ended call is hung up, once.
            assert_eq!(h.hung_up.iter().filter(|e| **e == ep).count(), 1);
            assert!(!h.hung_up.contains(&CALLER), "the caller hung up itself");
            assert_eq!(h.call.peer(), Peer::None);
        }
    }

    #[test]
    fn race_two_targets_answer_in_the_same_tick() {
        let mut h = Harness::talking();
        h.transfer(
            &["+99930001", "+99930002"],
            TransferStrategy::Simultaneous,
            None,
        );
        let d = h.dialled();
        h.tick();
        h.call.on_leg(d[1].0, LegEvent::Answered);
        h.call.on_leg(d[0].0, LegEvent::Answered);
        h.drain();
        assert_eq!(h.call.peer(), Peer::Phone(d[1].0));
        assert_eq!(h.hung_up, vec![d[0].0]);
        assert_eq!(
            h.log
                .iter()
                .filter(|(_, o)| matches!(o, Output::StopBot(_)))
                .count(),
            1
        );
    }

    #[test]
    fn transfers_before_the_answer_are_refused() {
        let mut h = Harness::new(Start::Outbound {
            connect_at_answer: false,
        });
        h.call.on_bot_connected();
        h.transfer(&["+99910001"], TransferStrategy::Simultaneous, None);
        assert_eq!(h.refusal(), Some(ErrorCode::TransferRefused));
    }

    #[test]
    fn a_did_that_rings_an_extension_answers_the_caller_when_it_answers() {
        let mut h = Harness::new(Start::InboundToPhone(vec![DialTarget::Number(
            "+99910001".into(),
        )]));
        let ep = h.dialled()[0].0;
        h.ticks(26);
        let outs = h.outputs();
        let from = outs.iter().position(|o| **o == Output::Answer).unwrap();
        assert_eq!(
            outs[from..].to_vec(),
            vec![
                &Output::Answer,
                &Output::State(CallState::InProgress),
                &Output::Answered,
                &Output::Bridged(ep)
            ]
        );
        assert!(!h.bot_connected);
        assert_eq!(
            h.call.attended_by(),
            AttendedBy::Extension("+99910001".into())
        );
        h.call.on_leg(ep, LegEvent::HungUp);
        h.drain();
        assert_eq!(h.end().unwrap().reason, EndReason::ExtensionHangup);
    }

    #[test]
    fn a_did_whose_extension_is_busy_or_unreachable_fails_the_call() {
        let mut h = Harness::new(Start::InboundToPhone(vec![DialTarget::Number(
            "+99920001".into(),
        )]));
        h.ticks(12);
        let end = h.end().unwrap();
        assert_eq!(
            (end.state, end.reason, end.sip_code),
            (CallState::Busy, EndReason::Busy, Some(486))
        );
        assert!(h.hung_up.contains(&CALLER));

        let h = Harness::new(Start::InboundToPhone(vec![DialTarget::Number(
            "+15550009999".into(),
        )]));
        let end = h.end().unwrap();
        assert_eq!(
            (end.state, end.reason, end.sip_code),
            (CallState::Failed, EndReason::NoRoute, Some(404))
        );
    }

    #[test]
    fn ring_limit_and_max_duration_are_counted_in_ticks() {
        let mut c = cfg();
        c.ring_limit_ticks = 10;
        let mut call = Call::new(
            c,
            Start::Outbound {
                connect_at_answer: true,
            },
        );
        for _ in 0..9 {
            call.tick(false);
        }
        assert!(!call.is_ended());
        call.tick(false);
        let outs: Vec<Output> = std::iter::from_fn(|| call.poll_output()).collect();
        assert_eq!(
            outs,
            vec![
                Output::Hangup(CALLER),
                Output::End(End {
                    state: CallState::NoAnswer,
                    reason: EndReason::NoAnswer,
                    sip_code: Some(408),
                    stop: None,
                })
            ]
        );

        let mut c = cfg();
        c.max_ticks = 5;
        let mut call = Call::new(
            c,
            Start::Outbound {
                connect_at_answer: false,
            },
        );
        call.on_bot_connected();
        call.on_leg(CALLER, LegEvent::Answered);
        for _ in 0..5 {
            call.tick(false);
        }
        let end = std::iter::from_fn(|| call.poll_output()).find_map(|o| match o {
            Output::End(e) => Some(e),
            _ => None,
        });
        assert_eq!(end.unwrap().stop, Some(StopReason::MaxDuration));
    }

    #[test]
    fn a_bot_hangup_waits_boundedly_for_its_keys() {
        let mut h = Harness::talking();
        h.call.on_bot_hangup();
        for _ in 0..50 {
            h.call.tick(true);
        }
        h.drain();
        assert!(h.end().is_none(), "keys still going out");
        h.call.tick(false);
        h.drain();
        assert_eq!(h.end().unwrap().reason, EndReason::BotHangup);
    }

    #[test]
    fn transfer_ws_swaps_bots_only_once_the_new_one_is_connected() {
        let mut h = Harness::talking();
        h.call.on_bot_transfer_ws("ws://127.0.0.1:1/next".into());
        h.drain();
        assert!(h
            .outputs()
            .contains(&&Output::ConnectNextBot("ws://127.0.0.1:1/next".into())));
        // While it connects, another transfer is refused and the old bot keeps the call.
        h.transfer(&["+99910001"], TransferStrategy::Simultaneous, None);
        assert_eq!(h.refusal(), Some(ErrorCode::TransferInProgress));
        assert!(!h.outputs().contains(&&Output::SwapBot));
        h.call.on_next_bot_connected();
        h.drain();
        assert_eq!(h.outputs().last(), Some(&&Output::SwapBot));
        assert_eq!(h.call.attended_by(), AttendedBy::Bot);
        // The new bot may transfer again.
        h.call.on_bot_transfer_ws("ws://127.0.0.1:1/third".into());
        h.drain();
        assert_eq!(
            h.outputs().last(),
            Some(&&Output::ConnectNextBot("ws://127.0.0.1:1/third".into()))
        );
    }

    #[test]
    fn transfer_ws_to_an_unreachable_bot_leaves_the_old_one_the_call() {
        let mut h = Harness::talking();
        h.call.on_bot_transfer_ws("ws://127.0.0.1:1/gone".into());
        h.call
            .on_next_bot_unreachable("ws://127.0.0.1:1/gone".into());
        h.drain();
        let (reason, attempts) = h.transfer_failed().unwrap();
        assert_eq!(reason, TransferFailure::BotUnreachable);
        assert_eq!(
            attempts,
            vec![("ws://127.0.0.1:1/gone".into(), AttemptOutcome::Failed, None)]
        );
        assert!(!h.call.is_ended());
        assert!(!h.outputs().contains(&&Output::SwapBot));
    }

    #[test]
    fn a_bot_transferring_to_itself_is_stopped_after_ten_hops() {
        let mut h = Harness::talking();
        for _ in 0..MAX_HOPS {
            h.call.on_bot_transfer_ws("ws://127.0.0.1:1/me".into());
            h.call.on_next_bot_connected();
        }
        h.drain();
        assert!(h.transfer_failed().is_none());
        h.call.on_bot_transfer_ws("ws://127.0.0.1:1/me".into());
        h.drain();
        assert_eq!(h.transfer_failed().unwrap().0, TransferFailure::TooManyHops);
        assert!(!h.call.is_ended(), "the bot keeps the call");
    }

    #[test]
    fn a_lost_bot_hands_the_caller_to_the_fallback() {
        let mut h = Harness::talking();
        h.call.cfg.fallback = Some(DialTarget::Number("+99910001".into()));
        h.call.on_bot_lost();
        h.drain();
        assert!(!h.call.is_ended());
        let ep = h.dialled()[0].0;
        h.ticks(26);
        assert_eq!(h.call.peer(), Peer::Phone(ep));
        assert!(!h
            .outputs()
            .iter()
            .any(|o| matches!(o, Output::StopBot(_) | Output::Answer)));
        assert_eq!(h.call.attended_by(), AttendedBy::Agent("+99910001".into()));
        h.call.on_leg(CALLER, LegEvent::HungUp);
        h.drain();
        let end = h.end().unwrap();
        assert_eq!(
            (end.state, end.reason),
            (CallState::Completed, EndReason::BotLost)
        );
    }

    #[test]
    fn a_fallback_extension_rings_every_phone_it_has() {
        let mut h = Harness::talking();
        h.call.cfg.fallback = Some(DialTarget::Extension("101".into()));
        h.call.on_bot_lost();
        let asked = std::iter::from_fn(|| h.call.poll_output()).find_map(|o| match o {
            Output::ResolveExtension(e) => Some(e),
            _ => None,
        });
        assert_eq!(asked.as_deref(), Some("101"));
        // Two phones: one that never answers, one that does.
        h.call.on_extension_targets(vec![
            DialTarget::Number("+99930001".into()),
            DialTarget::Number("+99910001".into()),
        ]);
        h.drain();
        assert_eq!(h.dialled().len(), 2);
        h.ticks(26);
        let winner = h.dialled()[1].0;
        assert_eq!(h.call.peer(), Peer::Phone(winner));
        let outcomes: Vec<AttemptOutcome> = h.call.legs().iter().map(|a| a.outcome).collect();
        assert_eq!(
            outcomes,
            vec![AttemptOutcome::Cancelled, AttemptOutcome::Answered]
        );
        // An answer nobody asked for is ignored.
        h.call
            .on_extension_targets(vec![DialTarget::Number("+99910002".into())]);
        h.drain();
        assert_eq!(h.dialled().len(), 2);
    }

    #[test]
    fn a_lost_bot_whose_fallback_fails_ends_the_call() {
        let mut h = Harness::talking();
        h.call.cfg.fallback = Some(DialTarget::Number("+99920001".into()));
        h.call.on_bot_lost();
        h.ticks(12);
        let end = h.end().unwrap();
        assert_eq!(end.reason, EndReason::BotLost);
        assert_eq!(h.call.legs()[0].outcome, AttemptOutcome::Busy);
    }

    #[test]
    fn a_bot_lost_while_its_transfer_rings_lets_the_target_take_the_caller() {
        let mut h = Harness::talking();
        h.transfer(&["+99910001"], TransferStrategy::Simultaneous, None);
        h.call.on_bot_lost();
        h.drain();
        assert!(!h.call.is_ended());
        h.ticks(26);
        assert!(matches!(h.call.peer(), Peer::Phone(_)));
        assert!(!h.outputs().iter().any(|o| matches!(o, Output::StopBot(_))));
        // Without a fallback, a transfer failing after the bot left ends the call.
        let mut h = Harness::talking();
        h.transfer(&["+99920001"], TransferStrategy::Simultaneous, None);
        h.call.on_bot_lost();
        h.ticks(12);
        assert_eq!(h.end().unwrap().reason, EndReason::BotLost);
        assert!(h.transfer_failed().is_none());
    }

    #[test]
    fn a_did_rings_all_its_targets_and_fails_as_the_most_telling_one() {
        let mut h = Harness::new(Start::InboundToPhone(vec![
            DialTarget::Number("+99920001".into()),
            DialTarget::Number("+99910001".into()),
        ]));
        assert_eq!(h.dialled().len(), 2);
        h.ticks(26);
        assert!(matches!(h.call.peer(), Peer::Phone(_)));

        let mut h = Harness::new(Start::InboundToPhone(vec![
            DialTarget::Number("+99940001".into()),
            DialTarget::Number("+99920001".into()),
        ]));
        h.ticks(12);
        let end = h.end().unwrap();
        assert_eq!((end.state, end.sip_code), (CallState::Busy, Some(486)));
    }

    #[test]
    fn a_warm_transfer_briefs_the_target_then_completes() {
        let mut h = Harness::talking();
        let ep = h.warm_answered("+99910001");
        // The bot is told and keeps its socket; the caller holds.
        assert!(h.outputs().contains(&&Output::TransferAnswered {
            kind: "session.transfer",
            destination: "+99910001".into(),
        }));
        assert!(!h
            .outputs()
            .iter()
            .any(|o| matches!(o, Output::StopBot(_) | Output::Bridged(_))));
        h.ticks(100);
        assert_eq!(h.call.peer(), Peer::Briefing(ep));
        // A second transfer, or a second bot, must wait.
        h.transfer(&["+99910002"], TransferStrategy::Simultaneous, None);
        assert_eq!(h.refusal(), Some(ErrorCode::TransferInProgress));

        h.call.on_bot_transfer_complete();
        h.drain();
        let tail: Vec<&Output> = h.outputs().into_iter().rev().take(2).collect();
        assert_eq!(
            tail,
            vec![
                &Output::Bridged(ep),
                &Output::StopBot(StopReason::Transferred)
            ]
        );
        assert_eq!(h.call.peer(), Peer::Phone(ep));
        assert!(h.call.legs()[0].bridged);
        assert_eq!(h.call.attended_by(), AttendedBy::Agent("+99910001".into()));
    }

    #[test]
    fn a_warm_transfer_cancelled_hangs_up_the_target_and_the_bot_has_the_caller_again() {
        let mut h = Harness::talking();
        let ep = h.warm_answered("+99910001");
        h.ticks(10);
        h.call.on_bot_transfer_cancel();
        h.drain();
        assert_eq!(h.outputs().last(), Some(&&Output::Hangup(ep)));
        assert_eq!(h.call.peer(), Peer::None);
        assert!(!h.call.is_briefing());
        let leg = &h.call.legs()[0];
        assert_eq!(leg.outcome, AttemptOutcome::Cancelled);
        assert!(leg.answered_at.is_some() && leg.ended_at.is_some() && !leg.bridged);
        // The bot may transfer again, and the caller ends with it.
        h.transfer(&["+99920000"], TransferStrategy::Simultaneous, None);
        assert_eq!(h.refusal(), None);
        h.ticks(100);
        assert_eq!(
            h.transfer_failed().map(|f| f.0),
            Some(TransferFailure::Busy)
        );
        h.call.on_leg(CALLER, LegEvent::HungUp);
        h.drain();
        assert_eq!(h.call.attended_by(), AttendedBy::Bot);
        assert_eq!(h.end().map(|e| e.reason), Some(EndReason::CallEnded));
    }

    #[test]
    fn a_warm_target_hanging_up_gives_the_caller_back_to_the_bot() {
        let mut h = Harness::talking();
        let ep = h.warm_answered("+99910001");
        h.call.on_leg(ep, LegEvent::HungUp);
        h.drain();
        let (reason, tried) = h.transfer_failed().expect("transfer_failed");
        assert_eq!(reason, TransferFailure::TargetHungUp);
        assert_eq!(
            tried,
            vec![("+99910001".to_string(), AttemptOutcome::Answered, None)]
        );
        assert_eq!(h.call.peer(), Peer::None);
        assert!(h.end().is_none());
        // Nothing left to hang up: the target is gone already.
        assert!(!h.hung_up.contains(&ep));
    }

    #[test]
    fn complete_or_cancel_without_a_briefing_is_refused() {
        let mut h = Harness::talking();
        h.call.on_bot_transfer_complete();
        h.drain();
        assert_eq!(h.refusal(), Some(ErrorCode::NoWarmTransfer));
        // Ringing, not answered yet: still refused, and the ringing goes on.
        let mut h = Harness::talking();
        h.call.on_bot_transfer(TransferRequest {
            kind: "session.transfer",
            targets: vec![DialTarget::Number("+99910001".into())],
            strategy: TransferStrategy::Simultaneous,
            timeout_s: None,
            caller_id: None,
            warm: true,
        });
        h.drain();
        h.call.on_bot_transfer_cancel();
        h.drain();
        assert_eq!(h.refusal(), Some(ErrorCode::NoWarmTransfer));
        assert!(h.call.is_transferring());
    }

    #[test]
    fn a_bot_lost_while_briefing_leaves_the_caller_with_the_target() {
        let mut h = Harness::talking();
        let ep = h.warm_answered("+99910001");
        h.call.on_bot_lost();
        h.drain();
        assert_eq!(h.call.peer(), Peer::Phone(ep));
        assert_eq!(h.outputs().last(), Some(&&Output::Bridged(ep)));
        h.call.on_leg(CALLER, LegEvent::HungUp);
        h.drain();
        assert_eq!(h.end().map(|e| e.reason), Some(EndReason::BotLost));
        assert!(h.hung_up.contains(&ep));
    }

    #[test]
    fn the_caller_hanging_up_during_a_briefing_hangs_up_the_target() {
        let mut h = Harness::talking();
        let ep = h.warm_answered("+99910001");
        h.call.on_leg(CALLER, LegEvent::HungUp);
        h.drain();
        assert!(h.hung_up.contains(&ep));
        let end = h.end().expect("ended");
        assert_eq!(end.reason, EndReason::CallEnded);
        assert_eq!(end.stop, Some(StopReason::CallEnded));
        let leg = &h.call.legs()[0];
        assert!(leg.ended_at.is_some() && !leg.bridged);
    }

    #[test]
    fn a_flow_takes_the_caller_and_its_dials_and_hangup_come_back_as_inputs() {
        let mut h = Harness::talking();
        h.call.on_bot_flow_transfer("nope".into(), false);
        h.drain();
        assert_eq!(
            h.transfer_failed(),
            Some((
                TransferFailure::UnknownFlow,
                vec![("nope".into(), AttemptOutcome::Failed, None)]
            ))
        );
        assert_eq!(h.call.peer(), Peer::None);

        h.call.on_bot_flow_transfer("sales".into(), true);
        h.drain();
        assert!(h
            .outputs()
            .contains(&&Output::StopBot(StopReason::FlowTransfer)));
        assert_eq!(
            h.outputs().last(),
            Some(&&Output::StartFlow(DialTarget::Flow("sales".into())))
        );
        assert_eq!(h.call.peer(), Peer::Flow);
        assert_eq!(h.call.attended_by(), AttendedBy::Flow("sales".into()));

        // A busy dial gives the flow its outcome; the flow keeps the caller.
        h.call
            .on_flow_dial(vec![DialTarget::Number("+99920000".into())], 5);
        h.drain();
        h.ticks(100);
        assert!(h.outputs().contains(&&Output::FlowOutcome(false)));
        assert_eq!(h.call.peer(), Peer::Flow);
        // An answered one takes the caller from the flow.
        h.call
            .on_flow_dial(vec![DialTarget::Number("+99910001".into())], 5);
        h.drain();
        let (ep, _) = h.dialled().last().cloned().unwrap();
        h.ticks(100);
        assert!(h.outputs().contains(&&Output::FlowOutcome(true)));
        assert_eq!(h.call.peer(), Peer::Phone(ep));
        let flow_leg = &h.call.legs()[0];
        assert_eq!(flow_leg.target, DialTarget::Flow("sales".into()));
        assert!(!flow_leg.bridged && flow_leg.ended_at.is_some());
        assert!(h.call.legs().last().unwrap().bridged);
    }

    #[test]
    fn a_flow_hangs_up_or_hands_the_caller_to_a_bot() {
        let mut h = Harness::talking();
        h.call.on_bot_flow_transfer("menu".into(), true);
        h.drain();
        h.call.on_flow_hangup();
        h.drain();
        assert_eq!(h.end().map(|e| e.reason), Some(EndReason::FlowHangup));

        let mut h = Harness::talking();
        h.call.on_bot_flow_transfer("menu".into(), true);
        h.drain();
        h.call.on_flow_bot("ws://127.0.0.1:9/".into());
        h.drain();
        assert_eq!(
            h.outputs().last(),
            Some(&&Output::ConnectNextBot("ws://127.0.0.1:9/".into()))
        );
        // Unreachable: the flow goes on.
        h.call.on_next_bot_unreachable("ws://127.0.0.1:9/".into());
        h.drain();
        assert_eq!(h.outputs().last(), Some(&&Output::FlowOutcome(false)));
        assert!(h.transfer_failed().is_none());
        assert_eq!(h.call.peer(), Peer::Flow);
        // Reachable: the bot has the caller, and may transfer again.
        h.call.on_flow_bot("ws://127.0.0.1:9/".into());
        h.drain();
        h.call.on_next_bot_connected();
        h.drain();
        let tail: Vec<&Output> = h.outputs().into_iter().rev().take(2).collect();
        assert_eq!(tail, vec![&Output::SwapBot, &Output::FlowOutcome(true)]);
        assert_eq!(h.call.peer(), Peer::None);
        assert_eq!(h.call.attended_by(), AttendedBy::Bot);
        h.call.on_bot_flow_transfer("menu".into(), true);
        h.drain();
        assert_eq!(h.call.peer(), Peer::Flow);
    }

    #[test]
    fn a_lost_bot_with_a_prompt_fallback_ends_when_the_prompt_does() {
        let mut h = Harness::talking();
        h.call.cfg.fallback = Some(DialTarget::Prompt("sorry".into()));
        h.call.on_bot_lost();
        h.drain();
        assert_eq!(
            h.outputs().last(),
            Some(&&Output::StartFlow(DialTarget::Prompt("sorry".into())))
        );
        h.call.on_flow_hangup();
        h.drain();
        assert_eq!(h.end().map(|e| e.reason), Some(EndReason::BotLost));
        assert_eq!(h.call.attended_by(), AttendedBy::Flow("sorry".into()));
    }
}
