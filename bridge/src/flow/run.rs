//! The flow executor, sans-I/O: it never reads the clock and owns no socket.
//! Its driver feeds it 20 ms ticks, keys and the outcomes of the dials and bot
//! hand-offs it asks for, and plays what [`FlowRun::tick`] writes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use codecs::pcm::FRAME_SAMPLES;

use super::clips::ClipLibrary;
use super::model::{DialPlan, NodeKind, Schedule, DEFAULT_INTERNAL_DIAL_TIMEOUT};
use super::schedule::is_open;

/// Ticks per second (one tick is 20 ms).
const TICKS_PER_SECOND: u32 = 50;
/// Plays of a menu's prompt without a usable choice before the flow gives up.
pub const MAX_MENU_PLAYS: u32 = 3;
/// Node entries allowed without a tick in between (a loop of instant nodes).
pub const MAX_ENTRIES_PER_TICK: u32 = 50;

/// What flows run against: the other flows, schedules, clips and extensions,
/// and the zone of schedules that name none.
#[derive(Debug, Clone)]
pub struct FlowEnv {
    /// Every flow by id (for `internal_dial` into a nested flow).
    pub flows: HashMap<String, Arc<DialPlan>>,
    /// Schedules by id.
    pub schedules: HashMap<String, Schedule>,
    /// The audio library.
    pub clips: ClipLibrary,
    /// All configured extensions, for `ring_all_users` and `internal_dial`.
    pub extensions: Vec<String>,
    /// The zone of schedules without one.
    pub default_tz: chrono_tz::Tz,
}

impl FlowEnv {
    /// Checks every schedule and every flow ([`super::validate`]), in id order,
    /// and returns the first problem.
    pub fn validate(&self) -> Result<(), super::FlowError> {
        let mut ids: Vec<_> = self.schedules.keys().collect();
        ids.sort();
        for id in ids {
            super::schedule::check(&self.schedules[id])?;
        }
        let mut ids: Vec<_> = self.flows.keys().collect();
        ids.sort();
        for id in ids {
            super::validate(&self.flows[id], self)?;
        }
        Ok(())
    }
}

/// Who a dial rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowTarget {
    /// A configured extension.
    Extension(String),
    /// An outside number (E.164).
    Number(String),
}

/// Why a flow hung up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEnd {
    /// It reached a null exit.
    Completed,
    /// A menu's prompt played [`MAX_MENU_PLAYS`] times without a usable key.
    NoInput,
    /// More than [`MAX_ENTRIES_PER_TICK`] nodes were entered without a tick in
    /// between (a loop of nodes that take no time).
    Loop,
    /// The flow names something that does not exist (a node, schedule or
    /// target): a flow that did not pass [`super::validate`].
    Error,
}

impl FlowEnd {
    /// The spelling for logs and the call record.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowEnd::Completed => "completed",
            FlowEnd::NoInput => "no_input",
            FlowEnd::Loop => "loop",
            FlowEnd::Error => "error",
        }
    }
}

/// What the flow asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowAction {
    /// Ring these at once for `timeout_s`; the driver reports back with
    /// [`FlowRun::on_dial_result`].
    Dial {
        /// The node asking.
        node: String,
        /// Who to ring.
        targets: Vec<FlowTarget>,
        /// Ring time in seconds.
        timeout_s: u32,
    },
    /// Hand the caller to a bot; the driver reports back with
    /// [`FlowRun::on_bot_result`].
    Bot {
        /// The node asking.
        node: String,
        /// The bot's WebSocket URL.
        url: String,
    },
    /// The flow reached a null exit (or a dead end): hang up the call.
    Hangup {
        /// Why.
        reason: FlowEnd,
    },
}

/// Where a menu is.
#[derive(Debug)]
enum MenuPhase {
    /// Playing the prompt from `pos`.
    Prompt { pos: usize },
    /// After the prompt; `left` ticks to wait for a key.
    Waiting { left: u32 },
}

/// What the flow is doing.
#[derive(Debug)]
enum State {
    /// Playing a `sound_clip` node's clip from `pos`.
    Clip {
        node: usize,
        clip: Arc<[i16]>,
        pos: usize,
    },
    /// In a menu; `plays` prompts so far.
    Menu {
        node: usize,
        prompt: Option<Arc<[i16]>>,
        phase: MenuPhase,
        plays: u32,
    },
    /// Waiting for the outcome of a dial; then `next`.
    Dialing { next: Option<String> },
    /// Waiting for the outcome of a bot hand-off; then `next`.
    Bot { next: Option<String> },
    /// Finished (answered, connected, or hung up).
    Done,
}

/// One run of a flow for one call. See the [module](super) docs for how it is
/// driven.
#[derive(Debug)]
pub struct FlowRun {
    /// The flow nodes are taken from: the started one, or the nested flow an
    /// `internal_dial` went on in.
    plan: Arc<DialPlan>,
    root_id: String,
    env: Arc<FlowEnv>,
    started_at: DateTime<Utc>,
    ticks: u64,
    state: State,
    actions: VecDeque<FlowAction>,
    visited: Vec<String>,
    entries_since_tick: u32,
}

impl FlowRun {
    /// Starts `plan` in its entry node. `started_at` is the wall time of the
    /// flow's tick 0; the flow's "now" (for schedule nodes) is `started_at`
    /// plus 20 ms per tick. Actions may be ready at once.
    pub fn new(plan: Arc<DialPlan>, env: Arc<FlowEnv>, started_at: DateTime<Utc>) -> FlowRun {
        let entry = plan.entry_node.clone();
        let mut run = FlowRun {
            root_id: plan.id.clone(),
            plan,
            env,
            started_at,
            ticks: 0,
            state: State::Done,
            actions: VecDeque::new(),
            visited: Vec::new(),
            entries_since_tick: 0,
        };
        run.go(Some(entry));
        run
    }

    /// One 20 ms frame of what the caller hears (a clip or prompt, else
    /// silence), and the timers advance by 20 ms. A clip that ends in this
    /// frame leads to the next node at once.
    pub fn tick(&mut self, out: &mut [i16; FRAME_SAMPLES]) {
        out.fill(0);
        self.ticks += 1;
        self.entries_since_tick = 0;
        match &mut self.state {
            State::Clip { node, clip, pos } => {
                let end = play(clip, pos, out);
                if end {
                    let next = match &self.plan.nodes[*node].kind {
                        NodeKind::SoundClip(c) => c.next.clone(),
                        _ => None,
                    };
                    self.go(next);
                }
            }
            State::Menu {
                node,
                prompt,
                phase,
                ..
            } => match phase {
                MenuPhase::Prompt { pos } => {
                    let end = prompt.as_ref().is_none_or(|p| play(p, pos, out));
                    if end {
                        *phase = MenuPhase::Waiting {
                            left: menu_timeout_ticks(&self.plan, *node),
                        };
                    }
                }
                MenuPhase::Waiting { left } => {
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        let next = match &self.plan.nodes[*node].kind {
                            NodeKind::Menu(c) => c.timeout_next_node.clone(),
                            _ => None,
                        };
                        self.menu_exit(next);
                    }
                }
            },
            State::Dialing { .. } | State::Bot { .. } | State::Done => {}
        }
    }

    /// A key the caller pressed. Only a menu (during or after its prompt)
    /// listens; other keys are ignored.
    pub fn on_dtmf(&mut self, digit: char) {
        let State::Menu { node, .. } = &self.state else {
            return;
        };
        let NodeKind::Menu(c) = &self.plan.nodes[*node].kind else {
            return;
        };
        let mut buf = [0u8; 4];
        let key = &*digit.encode_utf8(&mut buf);
        let next = match c.options.iter().find(|o| o.digit == key) {
            Some(o) => o.next_node.clone(),
            None => c.invalid_next_node.clone(),
        };
        self.menu_exit(next);
    }

    /// The outcome of the last [`FlowAction::Dial`]: answered ends the flow
    /// (the caller is with whoever answered); otherwise the dial node's `next`
    /// is followed (null: hang up). Ignored when no dial is outstanding.
    pub fn on_dial_result(&mut self, answered: bool) {
        if matches!(self.state, State::Dialing { .. }) {
            self.on_outcome(answered);
        }
    }

    /// The outcome of the last [`FlowAction::Bot`]: connected ends the flow
    /// (the bot has the caller); otherwise the bot node's `next` is followed
    /// (null: hang up). Ignored when no hand-off is outstanding.
    pub fn on_bot_result(&mut self, connected: bool) {
        if matches!(self.state, State::Bot { .. }) {
            self.on_outcome(connected);
        }
    }

    /// The outcome of whichever dial or bot hand-off is outstanding: `taken`
    /// ends the flow; otherwise its node's `next` is followed (null: hang
    /// up). Ignored when neither is outstanding.
    pub fn on_outcome(&mut self, taken: bool) {
        let next = match &self.state {
            State::Dialing { next } | State::Bot { next } => next.clone(),
            _ => return,
        };
        if taken {
            self.state = State::Done;
        } else {
            self.go(next);
        }
    }

    /// The next thing the driver must do, oldest first.
    pub fn poll_action(&mut self) -> Option<FlowAction> {
        self.actions.pop_front()
    }

    /// True once the flow is over: a dial was answered, a bot connected, or a
    /// [`FlowAction::Hangup`] was queued.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Nodes entered, in order (for the call log). Nodes of a nested flow are
    /// written `flow_id/node_id`.
    pub fn visited(&self) -> &[String] {
        &self.visited
    }

    /// The flow's time: `started_at` plus 20 ms per tick.
    pub fn now(&self) -> DateTime<Utc> {
        self.started_at + chrono::Duration::milliseconds(self.ticks as i64 * 20)
    }

    fn hangup(&mut self, reason: FlowEnd) {
        self.state = State::Done;
        self.actions.push_back(FlowAction::Hangup { reason });
    }

    /// Leaves the current menu for `next`, or plays its prompt again (null),
    /// giving up after [`MAX_MENU_PLAYS`] plays.
    fn menu_exit(&mut self, next: Option<String>) {
        if next.is_some() {
            return self.go(next);
        }
        let State::Menu { node, .. } = &self.state else {
            return;
        };
        let wait = menu_timeout_ticks(&self.plan, *node);
        if let State::Menu {
            prompt,
            phase,
            plays,
            ..
        } = &mut self.state
        {
            if *plays >= MAX_MENU_PLAYS {
                return self.hangup(FlowEnd::NoInput);
            }
            *plays += 1;
            *phase = match prompt {
                Some(_) => MenuPhase::Prompt { pos: 0 },
                // No prompt: the wait starts at once.
                None => MenuPhase::Waiting { left: wait },
            };
        }
    }

    /// Follows an exit: enters node `next`, or hangs up on null. Nodes that
    /// take no time lead on at once, up to [`MAX_ENTRIES_PER_TICK`] entries.
    fn go(&mut self, mut next: Option<String>) {
        loop {
            let Some(id) = next.take() else {
                return self.hangup(FlowEnd::Completed);
            };
            self.entries_since_tick += 1;
            if self.entries_since_tick > MAX_ENTRIES_PER_TICK {
                return self.hangup(FlowEnd::Loop);
            }
            let Some(idx) = self.plan.nodes.iter().position(|n| n.id == id) else {
                return self.hangup(FlowEnd::Error);
            };
            self.visited.push(if self.plan.id == self.root_id {
                id.clone()
            } else {
                format!("{}/{id}", self.plan.id)
            });
            let plan = Arc::clone(&self.plan);
            let node = &plan.nodes[idx];
            match &node.kind {
                NodeKind::SoundClip(c) => match self.clip(&c.clip_id) {
                    Some(clip) => {
                        self.state = State::Clip {
                            node: idx,
                            clip,
                            pos: 0,
                        };
                        return;
                    }
                    None => next = c.next.clone(),
                },
                NodeKind::Menu(c) => {
                    let prompt = self.clip(&c.prompt_clip_id);
                    let phase = match prompt {
                        Some(_) => MenuPhase::Prompt { pos: 0 },
                        None => MenuPhase::Waiting {
                            left: menu_timeout_ticks(&plan, idx),
                        },
                    };
                    self.state = State::Menu {
                        node: idx,
                        prompt,
                        phase,
                        plays: 1,
                    };
                    return;
                }
                NodeKind::Schedule(c) => {
                    let Some(s) = self.env.schedules.get(&c.schedule_id) else {
                        return self.hangup(FlowEnd::Error);
                    };
                    match is_open(s, self.now(), self.env.default_tz) {
                        Ok(true) => next = c.open.clone(),
                        Ok(false) => next = c.closed.clone(),
                        Err(_) => return self.hangup(FlowEnd::Error),
                    }
                }
                NodeKind::InternalDial(c) => {
                    if self.env.extensions.contains(&c.target_id) {
                        // DialStack sends a timeout of 0 straight to voicemail;
                        // we have none, so ring for the default instead.
                        let timeout_s = match c.timeout {
                            0 => DEFAULT_INTERNAL_DIAL_TIMEOUT,
                            t => t,
                        };
                        return self.dial(
                            &node.id,
                            vec![FlowTarget::Extension(c.target_id.clone())],
                            timeout_s,
                            c.next.clone(),
                        );
                    }
                    match self.env.flows.get(&c.target_id) {
                        Some(nested) => {
                            // Continue in the nested flow for good: its null
                            // exits hang up, as DialStack does.
                            self.plan = Arc::clone(nested);
                            next = Some(self.plan.entry_node.clone());
                        }
                        None => return self.hangup(FlowEnd::Error),
                    }
                }
                NodeKind::RingAllUsers(c) => {
                    if self.env.extensions.is_empty() {
                        next = c.next.clone();
                    } else {
                        let targets = self
                            .env
                            .extensions
                            .iter()
                            .map(|e| FlowTarget::Extension(e.clone()))
                            .collect();
                        return self.dial(&node.id, targets, c.timeout, c.next.clone());
                    }
                }
                NodeKind::ExternalDial(c) => {
                    if c.phone_number.is_empty() {
                        next = c.next.clone();
                    } else {
                        return self.dial(
                            &node.id,
                            vec![FlowTarget::Number(c.phone_number.clone())],
                            c.timeout,
                            c.next.clone(),
                        );
                    }
                }
                NodeKind::Bot(c) => {
                    self.actions.push_back(FlowAction::Bot {
                        node: node.id.clone(),
                        url: c.wss_url.clone(),
                    });
                    self.state = State::Bot {
                        next: c.next.clone(),
                    };
                    return;
                }
            }
        }
    }

    fn dial(&mut self, node: &str, targets: Vec<FlowTarget>, timeout_s: u32, next: Option<String>) {
        self.actions.push_back(FlowAction::Dial {
            node: node.into(),
            targets,
            timeout_s,
        });
        self.state = State::Dialing { next };
    }

    /// A non-empty clip by id; none for an empty id, an unknown clip or no
    /// samples.
    fn clip(&self, id: &str) -> Option<Arc<[i16]>> {
        if id.is_empty() {
            return None;
        }
        self.env.clips.get(id).filter(|c| !c.is_empty())
    }
}

/// A menu node's wait for a key, in ticks.
fn menu_timeout_ticks(plan: &DialPlan, node: usize) -> u32 {
    match &plan.nodes[node].kind {
        NodeKind::Menu(c) => c.timeout.max(1) * TICKS_PER_SECOND,
        _ => TICKS_PER_SECOND,
    }
}

/// Copies the next frame of `clip` from `pos` into `out` (zero-padded) and
/// advances `pos`; true when the clip has ended with this frame.
fn play(clip: &[i16], pos: &mut usize, out: &mut [i16; FRAME_SAMPLES]) -> bool {
    let n = clip.len().saturating_sub(*pos).min(FRAME_SAMPLES);
    out[..n].copy_from_slice(&clip[*pos..*pos + n]);
    *pos += n;
    *pos >= clip.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::model::{Schedule, TimeRange};
    use chrono::TimeZone;
    use serde_json::json;

    const SILENT: [i16; FRAME_SAMPLES] = [0; FRAME_SAMPLES];

    /// A clip of `frames` frames whose frame k holds the value `base + k`.
    fn clip(frames: usize, base: i16) -> Vec<i16> {
        (0..frames * FRAME_SAMPLES)
            .map(|i| base + (i / FRAME_SAMPLES) as i16)
            .collect()
    }

    fn plan(v: serde_json::Value) -> Arc<DialPlan> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn env_with(flows: Vec<Arc<DialPlan>>, extensions: &[&str]) -> Arc<FlowEnv> {
        let env = FlowEnv {
            flows: flows.into_iter().map(|p| (p.id.clone(), p)).collect(),
            schedules: [(
                "hours".to_string(),
                Schedule {
                    id: "hours".into(),
                    name: "Hours".into(),
                    timezone: Some("America/New_York".into()),
                    ranges: (1..=5)
                        .map(|day| TimeRange {
                            day,
                            start: "09:00".into(),
                            end: "17:00".into(),
                        })
                        .collect(),
                    holidays: vec![],
                    hold: None,
                    created_at: None,
                    updated_at: None,
                },
            )]
            .into(),
            clips: ClipLibrary::from_samples([
                ("prompt", clip(3, 1)), // frames hold 1, 2, 3
                ("short", clip(2, 10)), // 10, 11
                ("bye", clip(1, 100)),  // 100
                ("open_msg", clip(1, 200)),
                ("closed_msg", clip(1, 300)),
                ("partial", vec![5; 200]), // one and a quarter frames
            ]),
            extensions: extensions.iter().map(|e| e.to_string()).collect(),
            default_tz: chrono_tz::UTC,
        };
        env.validate().unwrap();
        Arc::new(env)
    }

    fn t0() -> DateTime<Utc> {
        // Monday 2025-01-06 12:00 in New York: open.
        Utc.with_ymd_and_hms(2025, 1, 6, 17, 0, 0).unwrap()
    }

    /// The first sample of the next frame.
    fn tick(r: &mut FlowRun) -> i16 {
        let mut f = [7i16; FRAME_SAMPLES];
        r.tick(&mut f);
        f[0]
    }

    fn actions(r: &mut FlowRun) -> Vec<FlowAction> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    /// A menu: 1 → sales (internal_dial 201), 2 → bot, 3 → null (replay).
    fn ivr() -> Arc<DialPlan> {
        plan(json!({
            "id": "ivr", "name": "IVR", "entry_node": "menu",
            "nodes": [
                {"id": "menu", "type": "menu", "config": {
                    "prompt_clip_id": "prompt", "timeout": 1,
                    "options": [
                        {"digit": "1", "next_node": "sales"},
                        {"digit": "2", "next_node": "bot"},
                        {"digit": "3", "next_node": null}
                    ]}},
                {"id": "sales", "type": "internal_dial",
                 "config": {"target_id": "201", "timeout": 20, "next": "bye"}},
                {"id": "bot", "type": "bot",
                 "config": {"wss_url": "wss://bot.example/ws", "next": "bye"}},
                {"id": "bye", "type": "sound_clip", "config": {"clip_id": "bye", "next": null}}
            ]
        }))
    }

    #[test]
    fn menu_prompt_is_heard_frame_by_frame_then_silence() {
        let p = ivr();
        let mut r = FlowRun::new(p.clone(), env_with(vec![p], &["201"]), t0());
        assert!(actions(&mut r).is_empty());
        let mut f = [7i16; FRAME_SAMPLES];
        r.tick(&mut f);
        assert!(f.iter().all(|&s| s == 1));
        assert_eq!([tick(&mut r), tick(&mut r)], [2, 3]);
        for _ in 0..10 {
            let mut f = [7i16; FRAME_SAMPLES];
            r.tick(&mut f);
            assert_eq!(f, SILENT);
        }
        assert_eq!(r.visited(), ["menu"]);
        assert!(!r.is_done());
    }

    #[test]
    fn key_1_routes_to_internal_dial_and_an_answer_ends_the_flow() {
        let p = ivr();
        let mut r = FlowRun::new(p.clone(), env_with(vec![p], &["201"]), t0());
        for _ in 0..5 {
            tick(&mut r);
        }
        r.on_dtmf('1');
        assert_eq!(
            actions(&mut r),
            [FlowAction::Dial {
                node: "sales".into(),
                targets: vec![FlowTarget::Extension("201".into())],
                timeout_s: 20
            }]
        );
        // Silence while the dial is out; keys are ignored.
        r.on_dtmf('2');
        assert_eq!(tick(&mut r), 0);
        assert!(actions(&mut r).is_empty());
        r.on_bot_result(false); // nothing asked for a bot: ignored
        assert!(actions(&mut r).is_empty());
        r.on_dial_result(true);
        assert!(r.is_done());
        assert!(actions(&mut r).is_empty());
        assert_eq!(r.visited(), ["menu", "sales"]);
        assert_eq!(tick(&mut r), 0);
    }

    #[test]
    fn a_dial_failure_follows_next() {
        let p = ivr();
        let mut r = FlowRun::new(p.clone(), env_with(vec![p], &["201"]), t0());
        r.on_dtmf('1');
        actions(&mut r);
        r.on_dial_result(false);
        // `bye` plays, then its null exit hangs up.
        assert!(actions(&mut r).is_empty());
        assert_eq!(tick(&mut r), 100);
        assert_eq!(
            actions(&mut r),
            [FlowAction::Hangup {
                reason: FlowEnd::Completed
            }]
        );
        assert!(r.is_done());
        assert_eq!(r.visited(), ["menu", "sales", "bye"]);
    }

    #[test]
    fn a_wrong_key_replays_the_prompt_from_its_start() {
        let p = ivr();
        let mut r = FlowRun::new(p.clone(), env_with(vec![p], &["201"]), t0());
        assert_eq!([tick(&mut r), tick(&mut r), tick(&mut r)], [1, 2, 3]);
        assert_eq!(tick(&mut r), 0); // waiting
        r.on_dtmf('9'); // unmapped, no invalid_next_node
        assert_eq!([tick(&mut r), tick(&mut r)], [1, 2]);
        r.on_dtmf('#'); // during the prompt, too
        assert_eq!([tick(&mut r), tick(&mut r)], [1, 2]);
        assert!(actions(&mut r).is_empty());
        assert_eq!(r.visited(), ["menu"]);
        // A third unusable choice after three plays ends the flow.
        r.on_dtmf('3'); // mapped to null: would replay
        assert_eq!(
            actions(&mut r),
            [FlowAction::Hangup {
                reason: FlowEnd::NoInput
            }]
        );
    }

    #[test]
    fn a_key_mapped_to_null_replays() {
        let p = ivr();
        let mut r = FlowRun::new(p.clone(), env_with(vec![p], &["201"]), t0());
        assert_eq!([tick(&mut r), tick(&mut r)], [1, 2]);
        r.on_dtmf('3');
        assert_eq!([tick(&mut r), tick(&mut r)], [1, 2]);
        r.on_dtmf('1');
        assert!(matches!(&actions(&mut r)[..], [FlowAction::Dial { .. }]));
    }

    #[test]
    fn barge_in_stops_the_prompt() {
        let p = ivr();
        let mut r = FlowRun::new(p.clone(), env_with(vec![p], &["201"]), t0());
        assert_eq!(tick(&mut r), 1);
        r.on_dtmf('2');
        assert_eq!(
            actions(&mut r),
            [FlowAction::Bot {
                node: "bot".into(),
                url: "wss://bot.example/ws".into()
            }]
        );
        assert_eq!(tick(&mut r), 0);
        r.on_bot_result(true);
        assert!(r.is_done());
        assert!(actions(&mut r).is_empty());
    }

    #[test]
    fn an_unreachable_bot_follows_next() {
        let p = ivr();
        let mut r = FlowRun::new(p.clone(), env_with(vec![p], &["201"]), t0());
        r.on_dtmf('2');
        actions(&mut r);
        r.on_bot_result(false);
        assert_eq!(tick(&mut r), 100);
        assert_eq!(r.visited(), ["menu", "bot", "bye"]);
    }

    #[test]
    fn no_key_replays_three_times_then_hangs_up() {
        let p = ivr();
        let mut r = FlowRun::new(p.clone(), env_with(vec![p], &["201"]), t0());
        // Each play: 3 prompt frames and 50 frames (1 s) of waiting.
        for play in 0..3 {
            assert_eq!(
                [tick(&mut r), tick(&mut r), tick(&mut r)],
                [1, 2, 3],
                "{play}"
            );
            for _ in 0..49 {
                assert_eq!(tick(&mut r), 0);
                assert!(actions(&mut r).is_empty());
            }
            assert_eq!(tick(&mut r), 0);
        }
        assert_eq!(
            actions(&mut r),
            [FlowAction::Hangup {
                reason: FlowEnd::NoInput
            }]
        );
        assert!(r.is_done());
        assert_eq!(FlowEnd::NoInput.as_str(), "no_input");
        r.on_dtmf('1');
        assert!(actions(&mut r).is_empty());
    }

    #[test]
    fn timeout_and_invalid_exits_are_followed() {
        let p = plan(json!({
            "id": "m", "name": "M", "entry_node": "menu",
            "nodes": [
                {"id": "menu", "type": "menu", "config": {
                    "prompt_clip_id": "short", "timeout": 2,
                    "options": [{"digit": "1"}],
                    "timeout_next_node": "late", "invalid_next_node": "wrong"}},
                {"id": "late", "type": "sound_clip", "config": {"clip_id": "bye"}},
                {"id": "wrong", "type": "sound_clip", "config": {"clip_id": "open_msg"}}
            ]
        }));
        let env = env_with(vec![p.clone()], &[]);
        let mut r = FlowRun::new(p.clone(), env.clone(), t0());
        assert_eq!([tick(&mut r), tick(&mut r)], [10, 11]);
        for _ in 0..100 {
            assert_eq!(tick(&mut r), 0);
        }
        assert_eq!(tick(&mut r), 100);
        assert_eq!(r.visited(), ["menu", "late"]);

        let mut r = FlowRun::new(p, env, t0());
        tick(&mut r);
        r.on_dtmf('5');
        assert_eq!(tick(&mut r), 200);
        assert_eq!(r.visited(), ["menu", "wrong"]);
        assert_eq!(
            actions(&mut r),
            [FlowAction::Hangup {
                reason: FlowEnd::Completed
            }]
        );
    }

    #[test]
    fn a_menu_without_prompt_waits_at_once() {
        let p = plan(json!({
            "id": "m", "name": "M", "entry_node": "menu",
            "nodes": [{"id": "menu", "type": "menu", "config": {
                "timeout": 1, "options": [{"digit": "1"}]}}]
        }));
        let mut r = FlowRun::new(p.clone(), env_with(vec![p], &[]), t0());
        for _ in 0..149 {
            assert_eq!(tick(&mut r), 0);
        }
        assert!(actions(&mut r).is_empty());
        tick(&mut r);
        assert_eq!(
            actions(&mut r),
            [FlowAction::Hangup {
                reason: FlowEnd::NoInput
            }]
        );
    }

    #[test]
    fn a_sound_clip_then_null_hangs_up_after_its_frames() {
        let p = plan(json!({
            "id": "c", "name": "C", "entry_node": "c",
            "nodes": [{"id": "c", "type": "sound_clip", "config": {"clip_id": "partial", "next": null}}]
        }));
        let mut r = FlowRun::new(p.clone(), env_with(vec![p], &[]), t0());
        let mut f = [7i16; FRAME_SAMPLES];
        r.tick(&mut f);
        assert!(f.iter().all(|&s| s == 5));
        assert!(actions(&mut r).is_empty() && !r.is_done());
        r.on_dtmf('1'); // nothing listens
        let mut f = [7i16; FRAME_SAMPLES];
        r.tick(&mut f);
        assert!(f[..40].iter().all(|&s| s == 5) && f[40..].iter().all(|&s| s == 0));
        assert_eq!(
            actions(&mut r),
            [FlowAction::Hangup {
                reason: FlowEnd::Completed
            }]
        );
        assert!(r.is_done());
        assert_eq!(tick(&mut r), 0);
    }

    #[test]
    fn schedule_routes_by_the_flow_clock() {
        let p = plan(json!({
            "id": "s", "name": "S", "entry_node": "check",
            "nodes": [
                {"id": "check", "type": "schedule",
                 "config": {"schedule_id": "hours", "open": "open", "closed": "closed"}},
                {"id": "open", "type": "sound_clip", "config": {"clip_id": "open_msg"}},
                {"id": "closed", "type": "sound_clip", "config": {"clip_id": "closed_msg"}},
                {"id": "greet", "type": "sound_clip", "config": {"clip_id": "bye", "next": "check"}}
            ]
        }));
        let env = env_with(vec![p.clone()], &[]);
        let at = |h, m, s| Utc.with_ymd_and_hms(2025, 1, 6, h, m, s).unwrap();
        // 12:00 New York: open; 08:59 New York: closed.
        let mut r = FlowRun::new(p.clone(), env.clone(), at(17, 0, 0));
        assert_eq!(tick(&mut r), 200);
        let mut r = FlowRun::new(p.clone(), env.clone(), at(13, 59, 0));
        assert_eq!(tick(&mut r), 300);
        assert_eq!(r.visited(), ["check", "closed"]);
        // Entered after one 20 ms frame of `greet`: the flow's now is
        // started_at + 20 ms.
        let mut greet = (*p).clone();
        greet.entry_node = "greet".into();
        let greet = Arc::new(greet);
        let start = at(13, 59, 59);
        let mut r = FlowRun::new(
            greet.clone(),
            env.clone(),
            start + chrono::Duration::milliseconds(970),
        );
        assert_eq!(tick(&mut r), 100); // now 13:59:59.990 → closed
        assert_eq!(tick(&mut r), 300);
        let mut r = FlowRun::new(greet, env, start + chrono::Duration::milliseconds(985));
        assert_eq!(tick(&mut r), 100); // now 14:00:00.005 → open
        assert_eq!(tick(&mut r), 200);
        assert_eq!(r.visited(), ["greet", "check", "open"]);
    }

    #[test]
    fn ring_all_then_external_then_hangup() {
        let p = plan(json!({
            "id": "r", "name": "R", "entry_node": "all",
            "nodes": [
                {"id": "all", "type": "ring_all_users", "config": {"timeout": 24, "next": "out"}},
                {"id": "out", "type": "external_dial",
                 "config": {"phone_number": "+14155551234", "timeout": 60, "next": null}}
            ]
        }));
        let mut r = FlowRun::new(p.clone(), env_with(vec![p.clone()], &["201", "202"]), t0());
        assert_eq!(
            actions(&mut r),
            [FlowAction::Dial {
                node: "all".into(),
                targets: vec![
                    FlowTarget::Extension("201".into()),
                    FlowTarget::Extension("202".into())
                ],
                timeout_s: 24
            }]
        );
        r.on_dial_result(false);
        assert_eq!(
            actions(&mut r),
            [FlowAction::Dial {
                node: "out".into(),
                targets: vec![FlowTarget::Number("+14155551234".into())],
                timeout_s: 60
            }]
        );
        r.on_dial_result(false);
        assert_eq!(
            actions(&mut r),
            [FlowAction::Hangup {
                reason: FlowEnd::Completed
            }]
        );
        // No extensions: ring_all_users goes on at once.
        let mut r = FlowRun::new(p.clone(), env_with(vec![p], &[]), t0());
        assert_eq!(
            actions(&mut r),
            [FlowAction::Dial {
                node: "out".into(),
                targets: vec![FlowTarget::Number("+14155551234".into())],
                timeout_s: 60
            }]
        );
        assert_eq!(r.visited(), ["all", "out"]);
    }

    #[test]
    fn empty_number_and_zero_timeout() {
        let p = plan(json!({
            "id": "e", "name": "E", "entry_node": "out",
            "nodes": [
                {"id": "out", "type": "external_dial",
                 "config": {"phone_number": "", "timeout": 60, "next": "ext"}},
                {"id": "ext", "type": "internal_dial", "config": {"target_id": "201", "timeout": 0}}
            ]
        }));
        let mut r = FlowRun::new(p.clone(), env_with(vec![p], &["201"]), t0());
        assert_eq!(
            actions(&mut r),
            [FlowAction::Dial {
                node: "ext".into(),
                targets: vec![FlowTarget::Extension("201".into())],
                timeout_s: 30
            }]
        );
    }

    #[test]
    fn internal_dial_into_a_nested_plan() {
        let outer = plan(json!({
            "id": "main", "name": "Main", "entry_node": "hello",
            "nodes": [
                {"id": "hello", "type": "sound_clip", "config": {"clip_id": "bye", "next": "to_support"}},
                {"id": "to_support", "type": "internal_dial",
                 "config": {"target_id": "support", "next": "hello"}}
            ]
        }));
        let inner = plan(json!({
            "id": "support", "name": "Support", "entry_node": "hello",
            "nodes": [
                {"id": "hello", "type": "sound_clip", "config": {"clip_id": "open_msg", "next": "dial"}},
                {"id": "dial", "type": "internal_dial", "config": {"target_id": "202", "next": null}}
            ]
        }));
        let env = env_with(vec![outer.clone(), inner], &["202"]);
        let mut r = FlowRun::new(outer, env, t0());
        assert_eq!(tick(&mut r), 100);
        assert_eq!(tick(&mut r), 200); // the nested plan's own `hello`
        assert_eq!(
            actions(&mut r),
            [FlowAction::Dial {
                node: "dial".into(),
                targets: vec![FlowTarget::Extension("202".into())],
                timeout_s: 30
            }]
        );
        // The nested plan's null exit hangs up.
        r.on_dial_result(false);
        assert_eq!(
            actions(&mut r),
            [FlowAction::Hangup {
                reason: FlowEnd::Completed
            }]
        );
        assert_eq!(
            r.visited(),
            ["hello", "to_support", "support/hello", "support/dial"]
        );
    }

    #[test]
    fn a_loop_of_instant_nodes_hangs_up() {
        let p = plan(json!({
            "id": "l", "name": "L", "entry_node": "a",
            "nodes": [
                {"id": "a", "type": "sound_clip", "config": {"clip_id": "", "next": "b"}},
                {"id": "b", "type": "sound_clip", "config": {"next": "a"}}
            ]
        }));
        let mut r = FlowRun::new(p.clone(), env_with(vec![p], &[]), t0());
        assert_eq!(
            actions(&mut r),
            [FlowAction::Hangup {
                reason: FlowEnd::Loop
            }]
        );
        assert!(r.is_done());
        assert_eq!(r.visited().len(), MAX_ENTRIES_PER_TICK as usize);
        assert_eq!(FlowEnd::Loop.as_str(), "loop");
        assert_eq!(FlowEnd::Completed.as_str(), "completed");
    }

    #[test]
    fn a_dangling_exit_in_an_unchecked_plan_hangs_up_with_error() {
        let p = plan(json!({
            "id": "x", "name": "X", "entry_node": "nowhere", "nodes": []
        }));
        let env = Arc::new(FlowEnv {
            flows: HashMap::new(),
            schedules: HashMap::new(),
            clips: ClipLibrary::default(),
            extensions: vec![],
            default_tz: chrono_tz::UTC,
        });
        let mut r = FlowRun::new(p, env, t0());
        assert_eq!(
            actions(&mut r),
            [FlowAction::Hangup {
                reason: FlowEnd::Error
            }]
        );
    }
}
