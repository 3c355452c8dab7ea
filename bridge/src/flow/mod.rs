//! Flows: IVR dial plans a call can be handed to (`session.flow_transfer`).
//!
//! A flow is data ([`DialPlan`]): a graph of nodes in the shape of DialStack's
//! dial plans — `schedule`, `internal_dial`, `ring_all_users`,
//! `external_dial`, `menu`, `sound_clip` — plus our `bot` node, which hands
//! the caller to a voice bot. Each node's `config` names the nodes its exits
//! lead to; a null exit ends the call. Flows come from the config file (TOML)
//! or the store (JSON) in the same types, and are checked with [`validate`]
//! (or [`FlowEnv::validate`] for all of them) before use. Nodes refer to
//! [`Schedule`]s (see [`is_open`]) and to clips of the audio library
//! ([`ClipLibrary`], loaded from WAV files and kept as 8 kHz mono).
//!
//! [`FlowRun`] runs one flow for one call, sans-I/O. Its driver:
//!
//! 1. creates it with [`FlowRun::new`] (the entry node is entered at once);
//! 2. every 20 ms calls [`FlowRun::tick`] and plays the frame it writes
//!    (prompts and clips, else silence) to the caller;
//! 3. passes the caller's keys to [`FlowRun::on_dtmf`];
//! 4. after every call into it, drains [`FlowRun::poll_action`]: a
//!    [`FlowAction::Dial`] is answered with [`FlowRun::on_dial_result`], a
//!    [`FlowAction::Bot`] with [`FlowRun::on_bot_result`] (or either with
//!    [`FlowRun::on_outcome`], which applies to the one outstanding), and a
//!    [`FlowAction::Hangup`] ends the call;
//! 5. stops once [`FlowRun::is_done`] (the caller is with whoever answered or
//!    with the bot, or was hung up on), and logs [`FlowRun::visited`].

pub mod clips;
pub mod model;
pub mod run;
pub mod schedule;

pub use clips::ClipLibrary;
pub use model::{
    validate, AudioClip, BotNode, DateRange, DialPlan, DialPlanNode, ExternalDialNode, FlowError,
    InternalDialNode, MenuNode, MenuOption, NodeKind, Position, RingAllUsersNode, Schedule,
    ScheduleHold, ScheduleNode, SoundClipNode, TimeRange,
};
pub use run::{FlowAction, FlowEnd, FlowEnv, FlowRun, FlowTarget};
pub use schedule::is_open;
