//! The bot endpoint: one bot's protocol session and its WebSocket.

use std::future::Future;

use codecs::pcm::Frame;
use protocol::StartInfo;

use super::Endpoint;
use crate::botlink::session::{CallSession, SessionStats};
use crate::botlink::{self, BotInput};
use crate::engine::{BotTarget, Engine};

/// Media frames a bot may fall behind before its media is skipped (5 s).
pub(crate) const MAX_BOT_BACKLOG: usize = 250;

pub(crate) type ConnectResult =
    Result<Result<botlink::BotSocket, botlink::ConnectError>, tokio::task::JoinError>;
pub(crate) type Connecting =
    tokio::task::JoinHandle<Result<botlink::BotSocket, botlink::ConnectError>>;

/// The bot endpoint: its protocol session and its socket.
pub(crate) struct BotEp {
    pub target: BotTarget,
    pub session: CallSession,
    pub connecting: Option<Connecting>,
    pub link: Option<botlink::Link>,
    /// Session counters already added to the metrics.
    pub counted: SessionStats,
}

/// What woke the call on the bot's side.
pub(crate) enum BotWake {
    /// The connection attempt ended.
    Connect(Box<ConnectResult>),
    /// The socket gave something.
    Input(BotInput),
}

impl BotEp {
    pub fn new(target: BotTarget, start: StartInfo, engine: &Engine, inband_dtmf: bool) -> BotEp {
        BotEp {
            session: CallSession::new(start, engine.session_config(inband_dtmf)),
            target,
            connecting: None,
            link: None,
            counted: SessionStats::default(),
        }
    }

    #[inline]
    pub fn poll_wake(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<BotWake> {
        use std::task::Poll;
        if let Some(pending) = self.connecting.as_mut() {
            if let Poll::Ready(res) = std::pin::Pin::new(pending).poll(cx) {
                self.connecting = None;
                return Poll::Ready(BotWake::Connect(Box::new(res)));
            }
        }
        match self.link.as_mut() {
            Some(link) => link.poll_input(cx).map(BotWake::Input),
            None => Poll::Pending,
        }
    }

    /// Hands the session's events to the socket (dropped when there is none).
    #[inline]
    pub fn flush(&mut self) {
        while let Some(ev) = self.session.poll_event() {
            if let Some(link) = self.link.as_mut() {
                link.send(ev);
            }
        }
    }

    #[inline]
    pub fn backlog(&self) -> usize {
        self.link.as_ref().map_or(0, |l| l.backlog())
    }

    #[inline]
    /// The bot reads so far behind that its media is being skipped.
    pub fn backlogged(&self) -> bool {
        self.backlog() > MAX_BOT_BACKLOG
    }
}

/// On the clock (a warm transfer's briefing, a caller handed on by a flow),
/// the bot plays its next frame and hears one. Its eager path, the hot path
/// of every bot call, is the driver's: frames to the bot as they arrive, its
/// audio out at once after silence.
impl Endpoint for BotEp {
    fn step(&mut self, heard: &Frame, said: &mut Frame) {
        self.session.play(said, false);
        let backlogged = self.backlogged();
        self.session.hear(heard, backlogged);
    }
}
