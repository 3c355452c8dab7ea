//! Flows as data: dial plans in the shape of DialStack's `DialPlan` /
//! `DialPlanNode` (plus our `bot` node), business-hours schedules, the audio
//! clips nodes play, and the checks run on all of them before a flow is used.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::run::FlowEnv;
use super::schedule;

/// A flow (IVR dial plan): a graph of nodes, entered at `entry_node`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DialPlan {
    /// Unique identifier of the flow (what `session.flow_transfer` names).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The node the flow starts in.
    pub entry_node: String,
    /// All nodes of the graph.
    pub nodes: Vec<DialPlanNode>,
    /// When the flow was created (RFC 3339), as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When the flow was last changed (RFC 3339), as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

impl DialPlan {
    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&DialPlanNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// One step of a flow: its id, what it does (`type` + `config`), and where the
/// editor draws it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DialPlanNode {
    /// Unique within the flow.
    pub id: String,
    /// The node's type and its configuration (`"type"` and `"config"`).
    #[serde(flatten)]
    pub kind: NodeKind,
    /// Editor coordinates; no meaning at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
}

/// X/Y coordinates in the visual editor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// X coordinate.
    pub x: f64,
    /// Y coordinate.
    pub y: f64,
}

/// What a node does, with its configuration. Exits (`open`, `next`,
/// `next_node`, ...) name other nodes of the same flow; a missing or null
/// exit ends the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "config", rename_all = "snake_case")]
pub enum NodeKind {
    /// Route by whether a schedule is open.
    Schedule(ScheduleNode),
    /// Ring an extension, or continue in another flow.
    InternalDial(InternalDialNode),
    /// Ring every extension at once.
    RingAllUsers(RingAllUsersNode),
    /// Dial an outside number.
    ExternalDial(ExternalDialNode),
    /// Play a prompt and route by the key pressed (IVR).
    Menu(MenuNode),
    /// Play a clip, then go on.
    SoundClip(SoundClipNode),
    /// Hand the caller to a voice bot (ours, not DialStack's).
    Bot(BotNode),
}

impl NodeKind {
    /// The `type` spelling.
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::Schedule(_) => "schedule",
            NodeKind::InternalDial(_) => "internal_dial",
            NodeKind::RingAllUsers(_) => "ring_all_users",
            NodeKind::ExternalDial(_) => "external_dial",
            NodeKind::Menu(_) => "menu",
            NodeKind::SoundClip(_) => "sound_clip",
            NodeKind::Bot(_) => "bot",
        }
    }

    /// Every exit of the node as (field, target), nulls included.
    pub fn exits(&self) -> Vec<(String, Option<&str>)> {
        fn e<'a>(field: &str, v: &'a Option<String>) -> (String, Option<&'a str>) {
            (field.to_string(), v.as_deref())
        }
        match self {
            NodeKind::Schedule(c) => vec![e("open", &c.open), e("closed", &c.closed)],
            NodeKind::InternalDial(c) => vec![e("next", &c.next)],
            NodeKind::RingAllUsers(c) => vec![e("next", &c.next)],
            NodeKind::ExternalDial(c) => vec![e("next", &c.next)],
            NodeKind::SoundClip(c) => vec![e("next", &c.next)],
            NodeKind::Bot(c) => vec![e("next", &c.next)],
            NodeKind::Menu(c) => {
                let mut v: Vec<_> = c
                    .options
                    .iter()
                    .enumerate()
                    .map(|(i, o)| e(&format!("options[{i}].next_node"), &o.next_node))
                    .collect();
                v.push(e("timeout_next_node", &c.timeout_next_node));
                v.push(e("invalid_next_node", &c.invalid_next_node));
                v
            }
        }
    }
}

/// `schedule` node: `open` when the schedule is open, else `closed` (holidays
/// count as closed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleNode {
    /// The [`Schedule`] to check.
    pub schedule_id: String,
    /// Where to go when open (null: hang up).
    pub open: Option<String>,
    /// Where to go when closed or on holiday (null: hang up).
    pub closed: Option<String>,
}

/// The default ring time of `internal_dial`, in seconds.
pub const DEFAULT_INTERNAL_DIAL_TIMEOUT: u32 = 30;

fn default_internal_dial_timeout() -> u32 {
    DEFAULT_INTERNAL_DIAL_TIMEOUT
}

/// `internal_dial` node: rings an extension, or continues in another flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalDialNode {
    /// An extension, or the id of another flow.
    #[serde(default)]
    pub target_id: String,
    /// Ring time in seconds (0–300, default 30). DialStack delivers straight
    /// to the target's voicemail on 0; we have no voicemail and ring for the
    /// default 30 s instead.
    #[serde(default = "default_internal_dial_timeout")]
    pub timeout: u32,
    /// Where to go on no answer or busy (null: hang up).
    #[serde(default)]
    pub next: Option<String>,
}

impl Default for InternalDialNode {
    fn default() -> Self {
        InternalDialNode {
            target_id: String::new(),
            timeout: DEFAULT_INTERNAL_DIAL_TIMEOUT,
            next: None,
        }
    }
}

/// `ring_all_users` node: rings every extension at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingAllUsersNode {
    /// Ring time in seconds (1–300).
    pub timeout: u32,
    /// Where to go on no answer (null: hang up).
    #[serde(default)]
    pub next: Option<String>,
}

/// `external_dial` node: dials an outside number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalDialNode {
    /// E.164 number (`+14155551234`); empty on a draft, which goes on to `next`.
    #[serde(default)]
    pub phone_number: String,
    /// Ring time in seconds (1–120).
    pub timeout: u32,
    /// Where to go on no answer or busy (null: hang up).
    #[serde(default)]
    pub next: Option<String>,
}

/// `menu` node (IVR): plays a prompt and routes by the key pressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuNode {
    /// The clip played as the prompt (empty: none).
    #[serde(default)]
    pub prompt_clip_id: String,
    /// Seconds to wait for a key after the prompt (1–30).
    pub timeout: u32,
    /// Key-to-node mappings (1–12).
    #[serde(default)]
    pub options: Vec<MenuOption>,
    /// Where to go when no key is pressed (null: replay the prompt).
    #[serde(default)]
    pub timeout_next_node: Option<String>,
    /// Where to go on an unmapped key (null: replay the prompt).
    #[serde(default)]
    pub invalid_next_node: Option<String>,
}

/// One key of a menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuOption {
    /// `0`–`9`, `*` or `#`.
    pub digit: String,
    /// Where the key leads (null: replay the prompt).
    #[serde(default)]
    pub next_node: Option<String>,
}

/// `sound_clip` node: plays a clip, then goes on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SoundClipNode {
    /// The clip to play (empty: none).
    pub clip_id: String,
    /// Where to go after it (null: hang up).
    pub next: Option<String>,
}

/// `bot` node (ours): hands the caller to a voice bot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotNode {
    /// The bot's WebSocket URL (`wss://…`).
    pub wss_url: String,
    /// Where to go when the bot cannot be reached (null: hang up).
    #[serde(default)]
    pub next: Option<String>,
}

/// Business hours: weekly open ranges, holidays, and a temporary hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Unique identifier (what `schedule_id` names).
    pub id: String,
    /// Display name.
    pub name: String,
    /// IANA time zone the times are in (`America/New_York`); none: the
    /// default zone.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Weekly ranges when the schedule is open.
    pub ranges: Vec<TimeRange>,
    /// Date ranges when it is closed whatever the weekly ranges say.
    #[serde(default)]
    pub holidays: Vec<DateRange>,
    /// A temporary override.
    #[serde(default)]
    pub hold: Option<ScheduleHold>,
    /// When the schedule was created (RFC 3339), as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When the schedule was last changed (RFC 3339), as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// A time range within one day of the week.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    /// Day of the week: 0 = Sunday, 1 = Monday, …, 6 = Saturday.
    pub day: u8,
    /// Start, `HH:MM` (24-hour), inclusive.
    pub start: String,
    /// End, `HH:MM` (24-hour, `24:00` for midnight), exclusive.
    pub end: String,
}

/// A range of whole days, both ends included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateRange {
    /// First day, `YYYY-MM-DD`.
    pub start: String,
    /// Last day, `YYYY-MM-DD`, inclusive.
    pub end: String,
}

/// A temporary override of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleHold {
    /// true: open, false: closed.
    pub value: bool,
    /// When the hold ends, local time in the schedule's zone
    /// (`YYYY-MM-DDTHH:MM:SS`).
    pub until: String,
}

/// An audio clip of the library nodes refer to by id (ours).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioClip {
    /// What `prompt_clip_id` / `clip_id` name.
    pub id: String,
    /// A 16-bit PCM WAV file, any rate and channel count.
    pub file: PathBuf,
}

/// A flow, schedule or clip that cannot be used. The message names the flow,
/// node and field (or the schedule or clip) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// `entry_node` names no node.
    #[error("flow {flow:?}: entry_node {entry:?} names no node of the flow")]
    NoEntry {
        /// The flow.
        flow: String,
        /// The missing node.
        entry: String,
    },
    /// Two nodes share an id.
    #[error("flow {flow:?}: node id {node:?} is used more than once")]
    DuplicateNode {
        /// The flow.
        flow: String,
        /// The repeated id.
        node: String,
    },
    /// An exit names no node of the flow.
    #[error("flow {flow:?}, node {node:?}: {field} {target:?} names no node of the flow")]
    UnknownExit {
        /// The flow.
        flow: String,
        /// The node with the exit.
        node: String,
        /// The exit's field.
        field: String,
        /// What it names.
        target: String,
    },
    /// A node's field has a value that cannot be used.
    #[error("flow {flow:?}, node {node:?}: {field}: {reason}")]
    Invalid {
        /// The flow.
        flow: String,
        /// The node.
        node: String,
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A schedule's field cannot be used.
    #[error("schedule {schedule:?}: {field}: {reason}")]
    Schedule {
        /// The schedule.
        schedule: String,
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An audio clip could not be loaded.
    #[error("audio clip {clip:?} ({}): {reason}", path.display())]
    Clip {
        /// The clip id.
        clip: String,
        /// Its file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Menu and timeout limits, as DialStack's schema gives them.
const MENU_OPTIONS: std::ops::RangeInclusive<usize> = 1..=12;
const MENU_TIMEOUT: std::ops::RangeInclusive<u32> = 1..=30;
const INTERNAL_DIAL_TIMEOUT: std::ops::RangeInclusive<u32> = 0..=300;
const RING_ALL_TIMEOUT: std::ops::RangeInclusive<u32> = 1..=300;
const EXTERNAL_DIAL_TIMEOUT: std::ops::RangeInclusive<u32> = 1..=120;

/// Checks a flow against the environment it runs in: the entry node and every
/// exit exist, node ids are unique, menus and timeouts are within the schema's
/// limits, and every schedule, clip, extension or flow named exists. Schedules
/// the flow uses are checked too ([`schedule::check`]).
pub fn validate(plan: &DialPlan, env: &FlowEnv) -> Result<(), FlowError> {
    let flow = plan.id.as_str();
    let mut ids = HashSet::new();
    for n in &plan.nodes {
        if !ids.insert(n.id.as_str()) {
            return Err(FlowError::DuplicateNode {
                flow: flow.into(),
                node: n.id.clone(),
            });
        }
    }
    if !ids.contains(plan.entry_node.as_str()) {
        return Err(FlowError::NoEntry {
            flow: flow.into(),
            entry: plan.entry_node.clone(),
        });
    }
    for n in &plan.nodes {
        let node = n.id.as_str();
        let invalid = |field: &str, reason: String| FlowError::Invalid {
            flow: flow.into(),
            node: node.into(),
            field: field.into(),
            reason,
        };
        for (field, target) in n.kind.exits() {
            if let Some(t) = target {
                if !ids.contains(t) {
                    return Err(FlowError::UnknownExit {
                        flow: flow.into(),
                        node: node.into(),
                        field,
                        target: t.into(),
                    });
                }
            }
        }
        let range = |field: &str, v: u32, r: std::ops::RangeInclusive<u32>| {
            if r.contains(&v) {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("{v} is out of range {}..={}", r.start(), r.end()),
                ))
            }
        };
        let clip = |field: &str, id: &str| {
            if id.is_empty() || env.clips.contains(id) {
                Ok(())
            } else {
                Err(invalid(field, format!("no audio clip {id:?} is loaded")))
            }
        };
        match &n.kind {
            NodeKind::Schedule(c) => match env.schedules.get(&c.schedule_id) {
                Some(s) => schedule::check(s)?,
                None => {
                    return Err(invalid(
                        "schedule_id",
                        format!("no schedule {:?} is configured", c.schedule_id),
                    ))
                }
            },
            NodeKind::InternalDial(c) => {
                range("timeout", c.timeout, INTERNAL_DIAL_TIMEOUT)?;
                let known =
                    env.extensions.contains(&c.target_id) || env.flows.contains_key(&c.target_id);
                if !known {
                    return Err(invalid(
                        "target_id",
                        format!(
                            "{:?} is neither a configured extension nor a flow",
                            c.target_id
                        ),
                    ));
                }
            }
            NodeKind::RingAllUsers(c) => range("timeout", c.timeout, RING_ALL_TIMEOUT)?,
            NodeKind::ExternalDial(c) => {
                range("timeout", c.timeout, EXTERNAL_DIAL_TIMEOUT)?;
                if !c.phone_number.is_empty() && !is_e164(&c.phone_number) {
                    return Err(invalid(
                        "phone_number",
                        format!("{:?} is not an E.164 number (+14155551234)", c.phone_number),
                    ));
                }
            }
            NodeKind::Menu(c) => {
                range("timeout", c.timeout, MENU_TIMEOUT)?;
                if !MENU_OPTIONS.contains(&c.options.len()) {
                    return Err(invalid(
                        "options",
                        format!("has {} options, must have 1 to 12", c.options.len()),
                    ));
                }
                let mut digits = HashSet::new();
                for (i, o) in c.options.iter().enumerate() {
                    let field = format!("options[{i}].digit");
                    if !is_dtmf_digit(&o.digit) {
                        return Err(invalid(
                            &field,
                            format!("{:?} is not one of 0-9, * or #", o.digit),
                        ));
                    }
                    if !digits.insert(o.digit.as_str()) {
                        return Err(invalid(&field, format!("{:?} is mapped twice", o.digit)));
                    }
                }
                clip("prompt_clip_id", &c.prompt_clip_id)?;
            }
            NodeKind::SoundClip(c) => clip("clip_id", &c.clip_id)?,
            NodeKind::Bot(c) => {
                if c.wss_url.trim().is_empty() {
                    return Err(invalid("wss_url", "is empty".into()));
                }
                match url::Url::parse(&c.wss_url) {
                    Ok(u) if matches!(u.scheme(), "ws" | "wss") => {}
                    _ => {
                        return Err(invalid(
                            "wss_url",
                            format!("{:?} is not a ws:// or wss:// URL", c.wss_url),
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

/// One DTMF key: `0`–`9`, `*` or `#`.
fn is_dtmf_digit(s: &str) -> bool {
    let mut c = s.chars();
    matches!((c.next(), c.next()), (Some(d), None) if d.is_ascii_digit() || d == '*' || d == '#')
}

/// `^\+[1-9]\d{1,14}$`.
fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::ClipLibrary;
    use std::sync::Arc;

    #[derive(Deserialize)]
    struct Config {
        flows: Vec<DialPlan>,
        #[serde(default)]
        schedules: Vec<Schedule>,
        #[serde(default)]
        clips: Vec<AudioClip>,
    }

    const TOML: &str = r#"
[[schedules]]
id = "hours"
name = "Office hours"
timezone = "America/New_York"
ranges = [{ day = 1, start = "09:00", end = "17:00" }]
holidays = [{ start = "2025-12-25", end = "2025-12-26" }]
hold = { value = false, until = "2025-12-20T17:00:00" }

[[clips]]
id = "main_menu"
file = "audio/main_menu.wav"

[[flows]]
id = "sales_flow"
name = "Sales"
entry_node = "menu"
[[flows.nodes]]
id = "menu"
type = "menu"
config = { prompt_clip_id = "main_menu", timeout = 5, options = [{ digit = "1", next_node = "sales" }, { digit = "2", next_node = "bot" }] }
[[flows.nodes]]
id = "sales"
type = "internal_dial"
config = { target_id = "201", next = "hours" }
position = { x = 200.0, y = 100 }
[[flows.nodes]]
id = "hours"
type = "schedule"
config = { schedule_id = "hours", open = "all", closed = "bot" }
[[flows.nodes]]
id = "all"
type = "ring_all_users"
config = { timeout = 24 }
[[flows.nodes]]
id = "bot"
type = "bot"
config = { wss_url = "wss://bot.example/ws", next = "out" }
[[flows.nodes]]
id = "out"
type = "external_dial"
config = { phone_number = "+14155551234", timeout = 60 }
[[flows.nodes]]
id = "bye"
type = "sound_clip"
config = { clip_id = "main_menu" }
"#;

    fn env(flows: &[DialPlan], schedules: &[Schedule]) -> FlowEnv {
        FlowEnv {
            flows: flows
                .iter()
                .map(|p| (p.id.clone(), Arc::new(p.clone())))
                .collect(),
            schedules: schedules
                .iter()
                .map(|s| (s.id.clone(), s.clone()))
                .collect(),
            clips: ClipLibrary::from_samples([("main_menu", vec![0i16; 160])]),
            extensions: vec!["201".into(), "202".into()],
            default_tz: chrono_tz::UTC,
        }
    }

    fn parsed() -> Config {
        toml::from_str(TOML).unwrap()
    }

    #[test]
    fn parses_from_toml() {
        let c = parsed();
        assert_eq!(c.clips[0].file, PathBuf::from("audio/main_menu.wav"));
        let s = &c.schedules[0];
        assert_eq!(s.timezone.as_deref(), Some("America/New_York"));
        assert_eq!(s.ranges[0].day, 1);
        assert_eq!(s.hold.as_ref().map(|h| h.value), Some(false));
        let p = &c.flows[0];
        assert_eq!(
            (p.id.as_str(), p.entry_node.as_str()),
            ("sales_flow", "menu")
        );
        let NodeKind::Menu(m) = &p.nodes[0].kind else {
            panic!("{:?}", p.nodes[0]);
        };
        assert_eq!(m.prompt_clip_id, "main_menu");
        assert_eq!(m.timeout, 5);
        assert_eq!(m.options[1].digit, "2");
        assert_eq!(m.options[1].next_node.as_deref(), Some("bot"));
        assert_eq!(m.timeout_next_node, None);
        // internal_dial's timeout defaults to 30.
        assert_eq!(
            p.nodes[1].kind,
            NodeKind::InternalDial(InternalDialNode {
                target_id: "201".into(),
                timeout: 30,
                next: Some("hours".into())
            })
        );
        assert_eq!(p.nodes[1].position, Some(Position { x: 200.0, y: 100.0 }));
        assert_eq!(p.nodes[4].kind.type_name(), "bot");
        assert_eq!(
            p.nodes[6].kind,
            NodeKind::SoundClip(SoundClipNode {
                clip_id: "main_menu".into(),
                next: None
            })
        );
        validate(p, &env(&c.flows, &c.schedules)).unwrap();
    }

    #[test]
    fn json_round_trip_keeps_the_seed_shape() {
        let p = &parsed().flows[0];
        let v = serde_json::to_value(p).unwrap();
        assert_eq!(v["nodes"][0]["type"], "menu");
        assert_eq!(v["nodes"][0]["config"]["options"][0]["digit"], "1");
        assert_eq!(v["nodes"][1]["config"]["timeout"], 30);
        assert!(v["nodes"][3]["config"]["next"].is_null());
        assert_eq!(v["nodes"][1]["position"]["x"], 200.0);
        assert!(v.get("created_at").is_none());
        let back: DialPlan = serde_json::from_value(v).unwrap();
        assert_eq!(&back, p);
    }

    #[test]
    fn parses_the_seed_example() {
        // The 201 response example of `POST /v1/dialplans`.
        let p: DialPlan = serde_json::from_str(
            r#"{"id": "dp_01h2xcejqtf2nbrexx3vqjhp60", "name": "Main Line Routing",
            "entry_node": "check_hours", "nodes": [
            {"id": "check_hours", "type": "schedule", "config": {"schedule_id":
              "sched_01h2xcejqtf2nbrexx3vqjhp50", "open": "reception", "closed": "voicemail"}},
            {"id": "reception", "type": "internal_dial", "config": {"target_id":
              "user_01h2xcejqtf2nbrexx3vqjhp45", "timeout": 30, "next": "voicemail"}},
            {"id": "voicemail", "type": "internal_dial", "config": {"target_id":
              "user_01h2xcejqtf2nbrexx3vqjhp46", "timeout": 60}}],
            "created_at": "2025-10-18T10:00:00Z", "updated_at": "2025-10-18T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(p.nodes.len(), 3);
        assert_eq!(p.created_at.as_deref(), Some("2025-10-18T10:00:00Z"));
        assert!(matches!(&p.nodes[2].kind,
            NodeKind::InternalDial(d) if d.timeout == 60 && d.next.is_none()));
    }

    #[test]
    fn unknown_types_and_config_fields_are_refused() {
        let bad_type = r#"{"id":"f","name":"F","entry_node":"a","nodes":[
            {"id":"a","type":"voicemail","config":{}}]}"#;
        assert!(serde_json::from_str::<DialPlan>(bad_type).is_err());
        let typo = r#"{"id":"f","name":"F","entry_node":"a","nodes":[
            {"id":"a","type":"sound_clip","config":{"clip":"x"}}]}"#;
        assert!(serde_json::from_str::<DialPlan>(typo).is_err());
        let no_timeout = r#"{"id":"f","name":"F","entry_node":"a","nodes":[
            {"id":"a","type":"menu","config":{"options":[{"digit":"1"}]}}]}"#;
        assert!(serde_json::from_str::<DialPlan>(no_timeout).is_err());
    }

    /// Validates the TOML flow after `change`, and returns the error message.
    fn error_after(change: impl FnOnce(&mut Config)) -> String {
        let mut c = parsed();
        change(&mut c);
        let e = env(&c.flows, &c.schedules);
        validate(&c.flows[0], &e).unwrap_err().to_string()
    }

    fn menu(c: &mut Config) -> &mut MenuNode {
        match &mut c.flows[0].nodes[0].kind {
            NodeKind::Menu(m) => m,
            _ => unreachable!(),
        }
    }

    fn set_kind(c: &mut Config, node: usize, kind: NodeKind) {
        c.flows[0].nodes[node].kind = kind;
    }

    #[test]
    fn validate_names_flow_node_and_field() {
        type Change = Box<dyn FnOnce(&mut Config)>;
        let cases: Vec<(Change, &[&str])> = vec![
            (
                Box::new(|c| c.flows[0].entry_node = "start".into()),
                &["\"sales_flow\"", "entry_node", "\"start\""],
            ),
            (
                Box::new(|c| c.flows[0].nodes[2].id = "sales".into()),
                &["\"sales_flow\"", "\"sales\"", "more than once"],
            ),
            (
                Box::new(|c| menu(c).options[0].next_node = Some("nope".into())),
                &["\"menu\"", "options[0].next_node", "\"nope\""],
            ),
            (
                Box::new(|c| menu(c).invalid_next_node = Some("nope".into())),
                &["\"menu\"", "invalid_next_node"],
            ),
            (
                Box::new(|c| menu(c).options[1].digit = "12".into()),
                &["\"menu\"", "options[1].digit", "0-9"],
            ),
            (
                Box::new(|c| menu(c).options[1].digit = "1".into()),
                &["options[1].digit", "mapped twice"],
            ),
            (
                Box::new(|c| menu(c).options.clear()),
                &["\"menu\"", "options", "1 to 12"],
            ),
            (
                Box::new(|c| {
                    let m = menu(c);
                    let o = m.options[0].clone();
                    m.options = (0..13)
                        .map(|i| MenuOption {
                            digit: i.to_string(),
                            ..o.clone()
                        })
                        .collect();
                }),
                &["options", "has 13 options"],
            ),
            (
                Box::new(|c| menu(c).timeout = 31),
                &["\"menu\"", "timeout", "1..=30"],
            ),
            (
                Box::new(|c| menu(c).prompt_clip_id = "welcome".into()),
                &["\"menu\"", "prompt_clip_id", "\"welcome\""],
            ),
            (
                Box::new(|c| {
                    set_kind(
                        c,
                        1,
                        NodeKind::InternalDial(InternalDialNode {
                            target_id: "999".into(),
                            ..Default::default()
                        }),
                    )
                }),
                &["\"sales\"", "target_id", "\"999\""],
            ),
            (
                Box::new(|c| {
                    set_kind(
                        c,
                        1,
                        NodeKind::InternalDial(InternalDialNode {
                            target_id: "201".into(),
                            timeout: 301,
                            next: None,
                        }),
                    )
                }),
                &["\"sales\"", "timeout", "0..=300"],
            ),
            (
                Box::new(|c| {
                    set_kind(
                        c,
                        2,
                        NodeKind::Schedule(ScheduleNode {
                            schedule_id: "weekend".into(),
                            ..Default::default()
                        }),
                    )
                }),
                &["\"hours\"", "schedule_id", "\"weekend\""],
            ),
            (
                Box::new(|c| c.schedules[0].timezone = Some("Nowhere/City".into())),
                &["schedule \"hours\"", "timezone", "Nowhere/City"],
            ),
            (
                Box::new(|c| {
                    set_kind(
                        c,
                        3,
                        NodeKind::RingAllUsers(RingAllUsersNode {
                            timeout: 0,
                            next: None,
                        }),
                    )
                }),
                &["\"all\"", "timeout", "1..=300"],
            ),
            (
                Box::new(|c| {
                    set_kind(
                        c,
                        4,
                        NodeKind::Bot(BotNode {
                            wss_url: " ".into(),
                            next: None,
                        }),
                    )
                }),
                &["\"bot\"", "wss_url", "empty"],
            ),
            (
                Box::new(|c| {
                    set_kind(
                        c,
                        4,
                        NodeKind::Bot(BotNode {
                            wss_url: "https://bot".into(),
                            next: None,
                        }),
                    )
                }),
                &["\"bot\"", "wss_url", "ws://"],
            ),
            (
                Box::new(|c| {
                    set_kind(
                        c,
                        5,
                        NodeKind::ExternalDial(ExternalDialNode {
                            phone_number: "4155551234".into(),
                            timeout: 60,
                            next: None,
                        }),
                    )
                }),
                &["\"out\"", "phone_number", "E.164"],
            ),
            (
                Box::new(|c| {
                    set_kind(
                        c,
                        5,
                        NodeKind::ExternalDial(ExternalDialNode {
                            phone_number: "+14155551234".into(),
                            timeout: 121,
                            next: None,
                        }),
                    )
                }),
                &["\"out\"", "timeout", "1..=120"],
            ),
            (
                Box::new(|c| {
                    set_kind(
                        c,
                        6,
                        NodeKind::SoundClip(SoundClipNode {
                            clip_id: "bye".into(),
                            next: Some("gone".into()),
                        }),
                    )
                }),
                &["\"bye\"", "next", "\"gone\""],
            ),
        ];
        for (change, words) in cases {
            let msg = error_after(change);
            for w in words {
                assert!(msg.contains(w), "{msg:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn validate_accepts_drafts_nested_flows_and_star_hash() {
        let mut c = parsed();
        let nested = DialPlan {
            id: "support".into(),
            name: "Support".into(),
            entry_node: "x".into(),
            nodes: vec![DialPlanNode {
                id: "x".into(),
                kind: NodeKind::SoundClip(SoundClipNode::default()),
                position: None,
            }],
            created_at: None,
            updated_at: None,
        };
        c.flows.push(nested);
        c.flows[0].nodes[1].kind = NodeKind::InternalDial(InternalDialNode {
            target_id: "support".into(),
            timeout: 0,
            next: None,
        });
        c.flows[0].nodes[5].kind = NodeKind::ExternalDial(ExternalDialNode {
            phone_number: String::new(),
            timeout: 1,
            next: None,
        });
        menu(&mut c).options.push(MenuOption {
            digit: "*".into(),
            next_node: None,
        });
        menu(&mut c).options.push(MenuOption {
            digit: "#".into(),
            next_node: Some("bye".into()),
        });
        menu(&mut c).prompt_clip_id = String::new();
        let e = env(&c.flows, &c.schedules);
        e.validate().unwrap();
    }
}
