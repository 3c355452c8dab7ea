//! The bridge suite's checks: one scripted bot session per scenario. A scenario
//! file names the check (`check = "marks"`) and gives its parameters.
//!
//! Audio the bot sends is one constant sample value per scenario, so the call's
//! recording (raw PCM of what the phone heard) can be searched for it exactly.

use std::time::Duration;

use base64::Engine as _;
use protocol::{BotEvent, Direction, StopReason};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{constant_audio, describe, heard_count, Ctx};
use crate::audio::FRAME_SAMPLES;
use crate::report::Findings;
use crate::scenario::Scenario;

const SEC: Duration = Duration::from_secs(1);

const MARK_VALUE: i16 = 1111;
const CLEAR_VALUE: i16 = 2222;
const GOODBYE_VALUE: i16 = 3333;
const EARLY_VALUE: i16 = 4444;
const BINARY_VALUE: i16 = 5555;
const LOG_VALUE: i16 = 6666;

/// `[params]` of the `call` check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallParams {
    number: String,
    listen_ms: u64,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    custom: serde_json::Map<String, Value>,
}

/// `[params]` of the `cadence` check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CadenceParams {
    number: String,
    listen_ms: u64,
    tolerance_percent: f64,
}

/// `[params]` of checks that send one stretch of audio.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioParams {
    number: String,
    audio_ms: u64,
}

/// `[params]` of the `clear` check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearParams {
    number: String,
    audio_ms: u64,
    clear_after_frames: usize,
}

/// `[params]` of the DTMF checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DtmfParams {
    number: String,
    digits: String,
}

/// `[params]` of the `hangup` check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HangupParams {
    number: String,
    audio_ms: u64,
    immediate: bool,
}

/// One message the `messages` check sends, and what must follow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageCase {
    /// The text frame to send.
    #[serde(default)]
    send: Option<String>,
    /// Or a frame too big or too odd for a file: `odd_binary`, `oversized`,
    /// `queue_overflow`.
    #[serde(default)]
    generate: Option<String>,
    /// An error code, `ok` (no error) or `hangup` (the call ends, bot_hangup).
    expect: String,
}

/// `[params]` of the `messages` check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesParams {
    number: String,
    cases: Vec<MessageCase>,
}

/// `[params]` of the `unanswered` check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnansweredParams {
    number: String,
    reason: String,
    state: String,
    #[serde(default)]
    session_optional: bool,
    #[serde(default = "default_final_within")]
    final_within_s: u64,
}

fn default_final_within() -> u64 {
    15
}

/// `[params]` of the `call-log` check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallLogParams {
    number: String,
    digits: String,
    audio_ms: u64,
}

/// `[params]` of checks that take none.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// A bridge scenario's check, with its parameters.
#[derive(Debug, Clone)]
pub enum BridgeCheck {
    /// A plain call: start's fields, headers, then hang up.
    Call(CallParams),
    /// The media rate over the call.
    Cadence(CadenceParams),
    /// Marks after their audio, and at once on an empty queue.
    Marks(AudioParams),
    /// audio.clear: marks first, then clear; audio stops within a frame.
    Clear(ClearParams),
    /// Keys from the phone.
    DtmfIn(DtmfParams),
    /// Keys to the phone.
    DtmfOut(DtmfParams),
    /// session.hangup, drained or immediate.
    Hangup(HangupParams),
    /// Bot messages and the errors (or not) they get.
    Messages(MessagesParams),
    /// Binary audio frames.
    BinaryAudio(AudioParams),
    /// connect_ws_after_answer "0".
    BeforeAnswer(AudioParams),
    /// A call that is never answered.
    Unanswered(UnansweredParams),
    /// The phone hangs up.
    PhoneHangup,
    /// The call log against the call.
    CallLog(CallLogParams),
    /// A transfer the bot asks for, and what the bot is told.
    Transfer(TransferParams),
}

/// What a `transfer` scenario may expect.
const TRANSFER_EXPECTATIONS: [&str; 7] = [
    "transferred",
    "transfer_ws",
    "flow",
    "failed",
    "warm_complete",
    "warm_cancel",
    "warm_target_hangs_up",
];

/// `[params]` of the `transfer` check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferParams {
    /// The phone called (it answers and never hangs up).
    number: String,
    /// The transfer message the bot sends once the call is up. `{hangup_number}`
    /// becomes `--hangup-number` (a phone that answers and hangs up by itself),
    /// `{second_bot}` a second bot URL of the suite's, `{flow_id}` `--flow-id`,
    /// `{extension}` `--extension`.
    send: String,
    /// `transferred` (stop `transferred`), `transfer_ws` (a second session
    /// takes the call), `flow` (stop `flow_transfer`; the flow ends the
    /// call), `failed` (`transfer_failed`; the bot keeps the call), or a warm
    /// transfer's `transfer_answered` followed by `warm_complete` (the bot
    /// sends `session.transfer_complete`: stop `transferred`), `warm_cancel`
    /// (`session.transfer_cancel`: the bot keeps the caller) or
    /// `warm_target_hangs_up` (the target hangs up while briefed:
    /// `transfer_failed` `target_hung_up`, the bot keeps the caller).
    expect: String,
    /// Sent right after `send`, and the `error` code it must get.
    #[serde(default)]
    then_send: Option<String>,
    #[serde(default)]
    then_expect: Option<String>,
    /// `failed`: the `transfer_failed` reason.
    #[serde(default)]
    reason: Option<String>,
    /// `failed`: each attempt's `outcome`, in order.
    #[serde(default)]
    outcomes: Vec<String>,
}

/// A bridge scenario's check, from its file.
pub fn plan(s: &Scenario) -> Result<BridgeCheck, String> {
    let check = match s.check.as_str() {
        "call" => BridgeCheck::Call(s.params()?),
        "cadence" => BridgeCheck::Cadence(s.params()?),
        "marks" => BridgeCheck::Marks(s.params()?),
        "clear" => BridgeCheck::Clear(s.params()?),
        "dtmf-in" => BridgeCheck::DtmfIn(s.params()?),
        "dtmf-out" => BridgeCheck::DtmfOut(s.params()?),
        "hangup" => BridgeCheck::Hangup(s.params()?),
        "messages" => BridgeCheck::Messages(s.params()?),
        "binary-audio" => BridgeCheck::BinaryAudio(s.params()?),
        "before-answer" => BridgeCheck::BeforeAnswer(s.params()?),
        "unanswered" => BridgeCheck::Unanswered(s.params()?),
        "phone-hangup" => {
            let _: NoParams = s.params()?;
            BridgeCheck::PhoneHangup
        }
        "call-log" => BridgeCheck::CallLog(s.params()?),
        "transfer" => BridgeCheck::Transfer(s.params()?),
        other => {
            return Err(format!(
                "scenario {}: unknown bridge check {other:?} (known: call, cadence, marks, clear, dtmf-in, dtmf-out, hangup, messages, binary-audio, before-answer, unanswered, phone-hangup, call-log, transfer)",
                s.name
            ))
        }
    };
    match &check {
        BridgeCheck::Messages(p) => {
            for c in &p.cases {
                let ok = matches!(c.expect.as_str(), "ok" | "hangup")
                    || protocol::ErrorCode::parse(&c.expect).is_some();
                if !ok {
                    return Err(format!(
                        "scenario {}: expect {:?} is not ok, hangup or an error code",
                        s.name, c.expect
                    ));
                }
                match (&c.send, c.generate.as_deref()) {
                    (Some(_), None) => {}
                    (None, Some("odd_binary" | "oversized" | "queue_overflow")) => {}
                    _ => {
                        return Err(format!(
                            "scenario {}: each case has `send` text or `generate` = odd_binary, oversized or queue_overflow",
                            s.name
                        ))
                    }
                }
            }
        }
        BridgeCheck::Transfer(p) if !TRANSFER_EXPECTATIONS.contains(&p.expect.as_str()) => {
            return Err(format!(
                "scenario {}: expect {:?} is not one of {TRANSFER_EXPECTATIONS:?}",
                s.name, p.expect
            ))
        }
        BridgeCheck::Unanswered(p) if StopReason::parse(&p.reason).is_none() => {
            return Err(format!(
                "scenario {}: {:?} is not a stop reason",
                s.name, p.reason
            ))
        }
        BridgeCheck::DtmfIn(p) | BridgeCheck::DtmfOut(p)
            if p.digits.is_empty() || !p.digits.chars().all(protocol::is_valid_dtmf) =>
        {
            return Err(format!(
                "scenario {}: digits {:?} are not DTMF keys",
                s.name, p.digits
            ))
        }
        _ => {}
    }
    Ok(check)
}

impl BridgeCheck {
    /// How long the check may take before it counts as stuck.
    pub fn time_limit(&self) -> Duration {
        match self {
            BridgeCheck::Unanswered(p) => Duration::from_secs(p.final_within_s + 15),
            BridgeCheck::PhoneHangup => 60 * SEC,
            _ => 40 * SEC,
        }
    }

    pub(crate) async fn run(&self, ctx: &mut Ctx) -> Result<(), String> {
        match self {
            BridgeCheck::Call(p) => call(ctx, p).await,
            BridgeCheck::Cadence(p) => cadence(ctx, p).await,
            BridgeCheck::Marks(p) => marks(ctx, p).await,
            BridgeCheck::Clear(p) => clear(ctx, p).await,
            BridgeCheck::DtmfIn(p) => dtmf_in(ctx, p).await,
            BridgeCheck::DtmfOut(p) => dtmf_out(ctx, p).await,
            BridgeCheck::Hangup(p) => hangup(ctx, p).await,
            BridgeCheck::Messages(p) => messages(ctx, p).await,
            BridgeCheck::BinaryAudio(p) => binary_audio(ctx, p).await,
            BridgeCheck::BeforeAnswer(p) => before_answer(ctx, p).await,
            BridgeCheck::Unanswered(p) => unanswered(ctx, p).await,
            BridgeCheck::PhoneHangup => phone_hangup(ctx).await,
            BridgeCheck::CallLog(p) => call_log(ctx, p).await,
            BridgeCheck::Transfer(p) => transfer(ctx, p).await,
        }
    }
}

impl Ctx {
    /// The session and the findings, borrowed together.
    fn parts(&mut self) -> Result<(&mut super::BotConn, &mut Findings), String> {
        let c = self.conn.as_mut().ok_or("no bot session")?;
        Ok((c, &mut self.f))
    }
}

/// Dials, takes the bot session and reads up to `start`.
async fn answered_call(ctx: &mut Ctx, number: &str, extra: Value) -> Result<(), String> {
    ctx.dial(number, true, extra).await?;
    ctx.accept(15 * SEC).await?;
    let c = ctx.conn()?;
    c.expect_connected(10 * SEC).await?;
    c.until("start", 10 * SEC).await?;
    Ok(())
}

/// Sends `session.hangup` and reads up to `stop`, which must say `bot_hangup`.
async fn hang_up(ctx: &mut Ctx, immediate: bool) -> Result<(), String> {
    let c = ctx.conn()?;
    let msg = if immediate {
        r#"{"type":"session.hangup","immediate":true}"#
    } else {
        r#"{"type":"session.hangup"}"#
    };
    c.send(msg).await?;
    expect_stop(c, StopReason::BotHangup, 10 * SEC).await
}

async fn expect_stop(
    c: &mut super::BotConn,
    want: StopReason,
    limit: Duration,
) -> Result<(), String> {
    match c.until("stop", limit).await? {
        BotEvent::Stop { reason, .. } if reason == want => Ok(()),
        BotEvent::Stop { reason, .. } => Err(format!(
            "stop came with reason {:?}; expected {:?}",
            reason.as_str(),
            want.as_str()
        )),
        _ => unreachable!("until returns the named event"),
    }
}

async fn call(ctx: &mut Ctx, p: &CallParams) -> Result<(), String> {
    let mut extra = json!({});
    for (k, v) in &p.custom {
        extra[k] = v.clone();
    }
    if let Some(h) = &p.header {
        extra["wss_header"] = Value::String(h.clone());
    }
    answered_call(ctx, &p.number, extra).await?;
    let dialled_sid = ctx.call.as_ref().map(|c| c.1.clone()).unwrap_or_default();
    let number = ctx.number.clone();
    let (c, f) = ctx.parts()?;
    if let Some(BotEvent::Start {
        stream_sid, start, ..
    }) = c.start().cloned()
    {
        f.expect(start.stream_sid == stream_sid, || {
            format!(
                "start.stream_sid {:?} differs from the event's stream_sid {stream_sid:?}",
                start.stream_sid
            )
        });
        f.expect(start.call_sid == dialled_sid, || {
            format!(
                "start.call_sid {:?} is not the call_sid dial_by_aivoicebot returned ({dialled_sid:?})",
                start.call_sid
            )
        });
        f.expect(start.to == number, || {
            format!("start.to is {:?}; the call was to {number:?}", start.to)
        });
        f.expect(!start.from.is_empty(), || "start.from is empty".into());
        f.expect(start.direction == Direction::Outbound, || {
            format!(
                "start.direction is {:?} for a dial_by_aivoicebot call; expected outbound",
                start.direction.as_str()
            )
        });
        f.expect(
            start.media_format.encoding == "raw/slin" && start.media_format.sample_rate == 8000,
            || {
                format!(
                    "start.media_format is {} at {} Hz; the default is raw/slin at 8000 Hz",
                    start.media_format.encoding, start.media_format.sample_rate
                )
            },
        );
        f.expect(start.tracks == ["inbound"], || {
            format!("start.tracks is {:?}; expected [\"inbound\"]", start.tracks)
        });
        for (k, v) in &p.custom {
            let got = start.custom_parameters.get(k);
            f.expect(got == Some(v), || {
                format!(
                    "start.custom_parameters.{k} is {}; the API call gave {v}",
                    got.map(Value::to_string).unwrap_or_else(|| "absent".into())
                )
            });
        }
    }
    if let Some(h) = &p.header {
        let (name, value) = h.split_once(':').unwrap_or((h, ""));
        let (name, value) = (name.trim(), value.trim());
        let arrived = c
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(name) && v == value);
        f.expect(arrived, || {
            format!("the wss_header {name}: {value} did not arrive with the WebSocket upgrade")
        });
    }
    c.media((p.listen_ms / 20) as usize).await?;
    hang_up(ctx, false).await
}

async fn cadence(ctx: &mut Ctx, p: &CadenceParams) -> Result<(), String> {
    answered_call(ctx, &p.number, json!({})).await?;
    let (c, f) = ctx.parts()?;
    let first = c.events.len();
    c.media((p.listen_ms / 20) as usize).await?;
    let media: Vec<(tokio::time::Instant, &Vec<u8>)> = c.events[first..]
        .iter()
        .filter_map(|(t, e)| match e {
            BotEvent::Media { payload, .. } => Some((*t, payload)),
            _ => None,
        })
        .collect();
    if let (Some((t0, _)), Some((t1, _))) = (media.first(), media.last()) {
        let span = t1.duration_since(*t0).as_secs_f64();
        let rate = (media.len() - 1) as f64 / span.max(0.001);
        let gap = media
            .windows(2)
            .map(|w| w[1].0.duration_since(w[0].0))
            .max()
            .unwrap_or_default();
        f.measure("media rate", format!("{rate:.1}/s over {span:.1} s"));
        f.measure("longest gap", format!("{} ms", gap.as_millis()));
        let low = 50.0 * (1.0 - p.tolerance_percent / 100.0);
        let high = 50.0 * (1.0 + p.tolerance_percent / 100.0);
        f.expect((low..=high).contains(&rate), || {
            format!(
                "media came at {rate:.1} events a second over {span:.1} s; the 20 ms clock gives 50 (allowed {low:.0} to {high:.0})"
            )
        });
        let voiced = media
            .iter()
            .filter(|(_, p)| crate::audio::rms(&crate::audio::le_bytes_to_samples(p)) > 300.0)
            .count();
        f.expect(voiced > 0, || {
            format!(
                "none of the {} media payloads holds the caller's speech (the {} phone speaks after it answers)",
                media.len(),
                p.number
            )
        });
    }
    hang_up(ctx, false).await
}

async fn marks(ctx: &mut Ctx, p: &AudioParams) -> Result<(), String> {
    answered_call(ctx, &p.number, json!({})).await?;
    let frames = p.audio_ms / 20;
    let (c, f) = ctx.parts()?;
    c.media(5).await?;
    let sent_after = c.last_chunk();
    c.send_audio(&constant_audio(MARK_VALUE, p.audio_ms))
        .await?;
    c.send(r#"{"type":"mark","name":"conformance-after-audio"}"#)
        .await?;
    let limit = Duration::from_millis(p.audio_ms) + 5 * SEC;
    match c.until("mark", limit).await? {
        BotEvent::Mark { name, .. } if name == "conformance-after-audio" => {}
        BotEvent::Mark { name, .. } => {
            return Err(format!(
                "a mark named {name:?} came back; the bot placed \"conformance-after-audio\""
            ))
        }
        _ => unreachable!("until returns the named event"),
    }
    let waited = c.last_chunk().saturating_sub(sent_after);
    f.measure(
        "mark echoed",
        format!("{waited} media frames after it was sent ({frames} frames of audio before it)"),
    );
    // The last frame of the audio and that tick's `media` event happen on the
    // same tick, in either order (a bridge may play before it listens), so the
    // mark may arrive one media event early, never more.
    f.expect(waited + 1 >= frames, || {
        format!(
            "mark \"conformance-after-audio\" came back {waited} media frames ({} ms) after it was sent, but the {} ms of audio queued before it takes {frames} frames to play: a mark must come back only after its audio has played",
            waited * 20,
            p.audio_ms
        )
    });
    f.expect(waited <= frames + 50, || {
        format!(
            "mark \"conformance-after-audio\" came back {waited} media frames after it was sent; its audio takes {frames}, so it came back over a second late"
        )
    });
    // On an empty queue a mark comes back at once.
    let before = c.last_chunk();
    c.send(r#"{"type":"mark","name":"conformance-empty-queue"}"#)
        .await?;
    match c.until("mark", 5 * SEC).await? {
        BotEvent::Mark { name, .. } if name == "conformance-empty-queue" => {}
        BotEvent::Mark { name, .. } => {
            return Err(format!(
                "a mark named {name:?} came back; expected \"conformance-empty-queue\""
            ))
        }
        _ => unreachable!("until returns the named event"),
    }
    let late = c.last_chunk().saturating_sub(before);
    f.expect(late <= 10, || {
        format!("a mark placed on an empty queue came back {late} media frames later; it must come back at once")
    });
    hang_up(ctx, false).await?;
    let wav = ctx.recording().await?;
    let heard = heard_count(&wav, MARK_VALUE);
    let want = constant_audio(MARK_VALUE, p.audio_ms).len();
    ctx.f.expect(heard == want, || {
        format!("the recording holds {heard} samples of the marked audio; all {want} must have been heard")
    });
    Ok(())
}

async fn clear(ctx: &mut Ctx, p: &ClearParams) -> Result<(), String> {
    answered_call(ctx, &p.number, json!({})).await?;
    let (c, f) = ctx.parts()?;
    c.media(5).await?;
    let sent_after = c.last_chunk();
    let audio = constant_audio(CLEAR_VALUE, p.audio_ms);
    c.send_audio(&audio).await?;
    c.send(r#"{"type":"mark","name":"conformance-a"}"#).await?;
    c.send_audio(&audio).await?;
    c.send(r#"{"type":"mark","name":"conformance-b"}"#).await?;
    c.media(p.clear_after_frames).await?;
    c.send(r#"{"type":"audio.clear"}"#).await?;
    let mut before_clear = vec![];
    loop {
        match c.next_event(3 * SEC).await.map_err(|_| {
            format!(
                "no `clear` event within 3 s of audio.clear (got {} first)",
                if before_clear.is_empty() {
                    "nothing else".to_owned()
                } else {
                    before_clear.join(", ")
                }
            )
        })? {
            Some(BotEvent::Media { .. }) => {}
            Some(BotEvent::Clear { .. }) => break,
            Some(e) => before_clear.push(describe(&e)),
            None => return Err("the socket closed before the `clear` event".into()),
        }
    }
    let want = ["mark \"conformance-a\"", "mark \"conformance-b\""];
    f.expect(before_clear == want, || {
        format!(
            "after audio.clear the bridge sent [{}] before `clear`; every pending mark must come back, in order, before `clear` (expected {})",
            before_clear.join(", "),
            want.join(", ")
        )
    });
    c.until("media", 3 * SEC).await?;
    let first_after = c.last_chunk();
    c.media(25).await?;
    let marks_after: Vec<String> = c
        .events
        .iter()
        .skip_while(|(_, e)| e.name() != "clear")
        .filter(|(_, e)| e.name() == "mark")
        .map(|(_, e)| describe(e))
        .collect();
    f.expect(marks_after.is_empty(), || {
        format!(
            "{} came back after `clear`; pending marks are all returned before it",
            marks_after.join(", ")
        )
    });
    hang_up(ctx, false).await?;
    let wav = ctx.recording().await?;
    let played = heard_count(&wav, CLEAR_VALUE).div_ceil(FRAME_SAMPLES) as u64;
    // The audio was sent after media `sent_after`, so it played from the next
    // tick at the earliest; `clear` came before media `first_after`.
    let could_play = first_after.saturating_sub(1).saturating_sub(sent_after);
    ctx.f.measure(
        "played before clear",
        format!("{played} frames (at most {could_play} could play before it)"),
    );
    ctx.f.expect(played >= 1, || {
        "none of the audio queued before audio.clear was heard in the recording".into()
    });
    ctx.f.expect(played <= could_play + 1, || {
        format!(
            "the recording holds {played} frames of the cleared audio, but only {could_play} could have played before audio.clear: playback went on for {} frame(s) after it; it must stop within one frame (20 ms)",
            played - could_play
        )
    });
    Ok(())
}

async fn dtmf_in(ctx: &mut Ctx, p: &DtmfParams) -> Result<(), String> {
    answered_call(ctx, &p.number, json!({})).await?;
    let (c, f) = ctx.parts()?;
    let limit = Duration::from_millis(1500 + 400 * p.digits.len() as u64) + 3 * SEC;
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = String::new();
    while got.chars().count() < p.digits.chars().count() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_event(left).await {
            Ok(Some(BotEvent::Dtmf {
                digit, duration_ms, ..
            })) => {
                f.expect(duration_ms > 0, || format!("dtmf {digit} has duration 0"));
                got.push(digit);
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("the socket closed while waiting for keys".into()),
            Err(_) => break,
        }
    }
    // Half a second more: a key reported twice would show up here.
    c.media(25).await?;
    let all: String = c
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            BotEvent::Dtmf { digit, .. } => Some(*digit),
            _ => None,
        })
        .collect();
    f.expect(all == p.digits, || {
        format!(
            "the phone pressed {:?}; the bot got dtmf events for {all:?} (each key once, in order)",
            p.digits
        )
    });
    hang_up(ctx, false).await
}

async fn dtmf_out(ctx: &mut Ctx, p: &DtmfParams) -> Result<(), String> {
    answered_call(ctx, &p.number, json!({})).await?;
    let c = ctx.conn()?;
    c.media(5).await?;
    c.send(&format!(
        r#"{{"type":"session.dtmf","dtmf":"{}"}}"#,
        p.digits
    ))
    .await?;
    // Each key is 100 ms of tone and 60 ms of silence; then a little more.
    c.media(p.digits.len() * 8 + 25).await?;
    hang_up(ctx, false).await?;
    let log = ctx.final_log(10 * SEC).await?;
    match log["phone"]["heard_dtmf"].as_str() {
        Some(heard) => ctx.f.expect(heard == p.digits, || {
            format!(
                "the bot sent session.dtmf {:?}; the phone heard {heard:?}",
                p.digits
            )
        }),
        None => ctx.f.fail(format!(
            "the call log has no phone.heard_dtmf (is {} a virtual phone of the simulated carrier?)",
            p.number
        )),
    }
    Ok(())
}

async fn hangup(ctx: &mut Ctx, p: &HangupParams) -> Result<(), String> {
    answered_call(ctx, &p.number, json!({})).await?;
    let frames = p.audio_ms / 20;
    let (c, f) = ctx.parts()?;
    c.media(5).await?;
    let sent_after = c.last_chunk();
    c.send_audio(&constant_audio(GOODBYE_VALUE, p.audio_ms))
        .await?;
    if p.immediate {
        c.send(r#"{"type":"session.hangup","immediate":true}"#)
            .await?;
    } else {
        c.send(r#"{"type":"session.hangup"}"#).await?;
    }
    expect_stop(
        c,
        StopReason::BotHangup,
        Duration::from_millis(p.audio_ms) + 8 * SEC,
    )
    .await?;
    let waited = c.last_chunk().saturating_sub(sent_after);
    f.measure(
        "stop",
        format!("{waited} media frames after session.hangup"),
    );
    if p.immediate {
        f.expect(waited <= 25, || {
            format!("session.hangup with immediate true: stop came {waited} media frames later; the call must end at once, not after the {frames} frames of queued audio")
        });
    } else {
        // The last frame of the audio and that tick's `media` event happen on the
        // same tick, in either order (a bridge may play before it listens), so the
        // mark may arrive one media event early, never more.
        f.expect(waited + 1 >= frames, || {
            format!("session.hangup: stop came {waited} media frames later, before the {frames} frames of queued goodbye could play: queued audio must be played out first")
        });
    }
    let wav = ctx.recording().await?;
    let heard = heard_count(&wav, GOODBYE_VALUE);
    let want = constant_audio(GOODBYE_VALUE, p.audio_ms).len();
    if p.immediate {
        ctx.f.expect(heard < want, || {
            format!("immediate hangup: all {want} samples of the queued audio were played; none past the hangup should be")
        });
    } else {
        ctx.f.expect(heard == want, || {
            format!("the recording holds {heard} of the goodbye's {want} samples: a goodbye before session.hangup must be heard whole")
        });
    }
    Ok(())
}

fn oversized_delta() -> String {
    // 1.1 MiB of text: over the bridge's 1 MiB message limit.
    let n = (protocol::MAX_MESSAGE_BYTES + protocol::MAX_MESSAGE_BYTES / 10) / 4 * 4;
    format!(
        r#"{{"type":"response.audio.delta","delta":"{}"}}"#,
        "A".repeat(n)
    )
}

fn delta_of_seconds(secs: usize) -> String {
    let bytes = vec![0u8; secs * 16_000];
    format!(
        r#"{{"type":"response.audio.delta","delta":"{}"}}"#,
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

async fn messages(ctx: &mut Ctx, p: &MessagesParams) -> Result<(), String> {
    answered_call(ctx, &p.number, json!({})).await?;
    let (c, f) = ctx.parts()?;
    c.media(3).await?;
    let mut hung_up = false;
    let mut expected_errors = 0;
    for case in &p.cases {
        let label = match (&case.send, &case.generate) {
            (Some(t), _) => t.chars().take(72).collect::<String>(),
            (None, Some(g)) => format!("({g})"),
            _ => String::new(),
        };
        match (case.send.as_deref(), case.generate.as_deref()) {
            (Some(text), _) => c.send(text).await?,
            (None, Some("odd_binary")) => c.send_binary(vec![0, 0, 0]).await?,
            (None, Some("oversized")) => c.send(&oversized_delta()).await?,
            (None, Some("queue_overflow")) => {
                // 35 s fits in the 60 s queue; 35 s more does not.
                c.send(&delta_of_seconds(35)).await?;
                c.send(&delta_of_seconds(35)).await?;
            }
            _ => return Err(format!("bad case {label}")),
        }
        match case.expect.as_str() {
            "ok" => {
                let from = c.events.len();
                c.media(10).await?;
                if let Some((_, BotEvent::Error { code, message, .. })) =
                    c.events[from..].iter().find(|(_, e)| e.name() == "error")
                {
                    f.fail(format!(
                        "{label} was refused ({code}: {message}), but it is a legal message"
                    ));
                }
            }
            "hangup" => {
                expect_stop(c, StopReason::BotHangup, 10 * SEC)
                    .await
                    .map_err(|e| format!("after {label}: {e}"))?;
                hung_up = true;
                break;
            }
            code => {
                expected_errors += 1;
                match c.until("error", 5 * SEC).await {
                    Ok(BotEvent::Error {
                        code: got, message, ..
                    }) => {
                        f.expect(got == code, || {
                            format!("{label} got an error with code {got:?} ({message}); expected {code:?}")
                        });
                        f.expect(!message.is_empty(), || {
                            format!("the error for {label} has an empty message")
                        });
                    }
                    Ok(_) => unreachable!("until returns the named event"),
                    Err(e) => f.fail(format!("{label}: {e}; it must be refused with {code}")),
                }
                // The call goes on.
                c.media(2)
                    .await
                    .map_err(|e| format!("after {label}: {e}"))?;
                if case.generate.as_deref() == Some("queue_overflow") {
                    c.send(r#"{"type":"audio.clear"}"#).await?;
                    c.until("clear", 3 * SEC).await?;
                }
            }
        }
    }
    let errors = c.count("error");
    f.expect(errors == expected_errors, || {
        format!("the bridge sent {errors} error events for {expected_errors} refused messages")
    });
    if !hung_up {
        hang_up(ctx, true).await?;
    }
    Ok(())
}

async fn binary_audio(ctx: &mut Ctx, p: &AudioParams) -> Result<(), String> {
    answered_call(ctx, &p.number, json!({})).await?;
    let (c, f) = ctx.parts()?;
    c.media(5).await?;
    let samples = constant_audio(BINARY_VALUE, p.audio_ms);
    c.send_binary(crate::audio::samples_to_le_bytes(&samples))
        .await?;
    c.media((p.audio_ms / 20) as usize + 10).await?;
    if let Some((_, BotEvent::Error { code, message, .. })) =
        c.events.iter().find(|(_, e)| e.name() == "error")
    {
        f.fail(format!(
            "a binary audio frame was refused ({code}: {message})"
        ));
    }
    hang_up(ctx, false).await?;
    let wav = ctx.recording().await?;
    let heard = heard_count(&wav, BINARY_VALUE);
    ctx.f.expect(heard == samples.len(), || {
        format!("the recording holds {heard} of the binary frame's {} samples; it must be played like a delta", samples.len())
    });
    Ok(())
}

async fn before_answer(ctx: &mut Ctx, p: &AudioParams) -> Result<(), String> {
    ctx.dial(&p.number, false, json!({})).await?;
    ctx.accept(15 * SEC).await?;
    let frames = p.audio_ms / 20;
    let (c, f) = ctx.parts()?;
    c.expect_connected(10 * SEC).await?;
    let connected_at = tokio::time::Instant::now();
    c.send_audio(&constant_audio(EARLY_VALUE, p.audio_ms))
        .await?;
    c.send(r#"{"type":"mark","name":"conformance-early"}"#)
        .await?;
    c.send("{oops").await?;
    match c.next_event(15 * SEC).await? {
        Some(BotEvent::Start { .. }) => {}
        Some(e) => {
            return Err(format!(
                "with connect_ws_after_answer \"0\" the bot got `{}` while the phone rang; only `connected` comes before `start`",
                e.name()
            ))
        }
        None => return Err("the socket closed before `start`".into()),
    }
    let ring = connected_at.elapsed();
    // If the bridge connected the bot only as the phone answered, the early audio
    // was not early; its timing then says nothing.
    let early = ring >= Duration::from_millis(100);
    if !early {
        f.note("the bot was connected only as the phone answered, so the early audio's timing was not checked");
    }
    f.measure(
        "start",
        format!("{} ms after connected (the phone rang)", ring.as_millis()),
    );
    match c.next_event(5 * SEC).await? {
        Some(BotEvent::Error { code, .. }) => f.expect(code == "bad_json", || {
            format!("the held error for \"{{oops\" has code {code:?}; expected bad_json")
        }),
        Some(e) => f.fail(format!(
            "the event after `start` is `{}`; the error for a message sent before start is held and sent right after `start`",
            describe(&e)
        )),
        None => return Err("the socket closed after `start`".into()),
    }
    match c.until("mark", 5 * SEC).await? {
        BotEvent::Mark { name, .. } if name == "conformance-early" => {}
        e => {
            return Err(format!(
                "expected mark \"conformance-early\", got {}",
                describe(&e)
            ))
        }
    }
    let at = c.last_chunk();
    f.expect(!early || (frames..=frames + 2).contains(&at), || {
        format!(
            "the mark after {frames} frames of audio queued before answer came back with media chunk {at}; audio queued before answer plays from the first answered frame, so it comes back with chunk {frames}"
        )
    });
    hang_up(ctx, false).await?;
    let wav = ctx.recording().await?;
    let heard = wav.channel(1);
    let first = heard.iter().position(|&s| s == EARLY_VALUE);
    let want = constant_audio(EARLY_VALUE, p.audio_ms).len();
    ctx.f.expect(heard_count(&wav, EARLY_VALUE) == want, || {
        format!(
            "the recording holds {} of the {want} samples queued before answer",
            heard_count(&wav, EARLY_VALUE)
        )
    });
    ctx.f.expect(!early || first.is_some_and(|i| i < 2 * FRAME_SAMPLES), || {
        format!(
            "audio queued before answer starts {} into the recording; it must play from the first answered frame",
            first.map(|i| format!("{} ms", i / 8)).unwrap_or_else(|| "nowhere".into())
        )
    });
    Ok(())
}

async fn unanswered(ctx: &mut Ctx, p: &UnansweredParams) -> Result<(), String> {
    ctx.dial(&p.number, false, json!({})).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(p.final_within_s);
    // Either the bot is connected while the phone rings, or the call is over first.
    loop {
        if ctx.try_accept() {
            break;
        }
        let rec = ctx.call_log().await?;
        let state = rec["call_state"].as_str().unwrap_or("");
        if !super::LIVE_STATES.contains(&state) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            ctx.try_accept();
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the call to {} is still {state:?} after {} s",
                p.number, p.final_within_s
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let want = StopReason::parse(&p.reason).unwrap_or(StopReason::Failed);
    if let Some(c) = ctx.conn.as_mut() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now()) + 5 * SEC;
        c.drain(left).await;
        // A handshake the bridge gave up on as the call failed is no session.
        if p.session_optional && c.events.is_empty() {
            ctx.conn = None;
        }
    }
    match ctx.conn.as_mut() {
        Some(c) => {
            let names: Vec<String> = c.events.iter().map(|(_, e)| describe(e)).collect();
            let stop = format!("stop ({})", want.as_str());
            ctx.f.expect(names == ["connected".to_owned(), stop.clone()], || {
                format!(
                    "a call that is never answered gives the bot `connected` then `{stop}` and nothing else; it got [{}]",
                    names.join(", ")
                )
            });
        }
        None if p.session_optional => ctx
            .f
            .note("the call failed before the bridge had connected the bot, so there was no session to check"),
        None => ctx.f.fail(format!(
            "the bot was never connected: with connect_ws_after_answer \"0\" the bridge connects while dialing and the bot must get stop with reason {}",
            p.reason
        )),
    }
    let log = ctx.final_log(Duration::from_secs(p.final_within_s)).await?;
    let f = &mut ctx.f;
    f.expect(log["call_state"] == p.state.as_str(), || {
        format!(
            "call log: call_state {}; expected {:?}",
            log["call_state"], p.state
        )
    });
    f.expect(log["end_reason"] == p.reason.as_str(), || {
        format!(
            "call log: end_reason {}; expected {:?}",
            log["end_reason"], p.reason
        )
    });
    f.expect(log["call_duration"] == 0, || {
        format!(
            "call log: call_duration {} for a call that was never answered",
            log["call_duration"]
        )
    });
    f.expect(log["recording_url"] == "", || {
        format!(
            "call log: recording_url {} for a call that was never answered",
            log["recording_url"]
        )
    });
    Ok(())
}

async fn phone_hangup(ctx: &mut Ctx) -> Result<(), String> {
    let number = ctx
        .hangup_number()
        .ok_or("this scenario needs --hangup-number")?;
    answered_call(ctx, &number, json!({})).await?;
    let c = ctx.conn()?;
    expect_stop(c, StopReason::CallEnded, 45 * SEC)
        .await
        .map_err(|e| format!("{e} (waiting for the phone at {number} to hang up)"))?;
    Ok(())
}

async fn call_log(ctx: &mut Ctx, p: &CallLogParams) -> Result<(), String> {
    let custom = json!({
        "system_msg": "conformance call-log scenario",
        "Voicechat_id": "77",
    });
    answered_call(ctx, &p.number, custom).await?;
    let c = ctx.conn()?;
    for _ in p.digits.chars() {
        c.until("dtmf", 10 * SEC).await?;
    }
    c.send_audio(&constant_audio(LOG_VALUE, p.audio_ms)).await?;
    c.media((p.audio_ms / 20) as usize + 25).await?;
    hang_up(ctx, false).await?;
    let log = ctx.final_log(10 * SEC).await?;
    let (c, f) = ctx.parts()?;
    let media = c.count("media") as f64 * 0.02;
    let from = match c.start() {
        Some(BotEvent::Start { start, .. }) => start.from.clone(),
        _ => String::new(),
    };
    f.expect(log["client_no"] == p.number.as_str(), || {
        format!(
            "call log: client_no {}; the call was to {:?}",
            log["client_no"], p.number
        )
    });
    f.expect(log["did_no"] == from.as_str(), || {
        format!(
            "call log: did_no {}; start.from was {from:?}",
            log["did_no"]
        )
    });
    f.expect(
        log["call_state"] == "completed" && log["call_status"] == "answered",
        || {
            format!(
                "call log: call_state {} and call_status {}; expected completed and answered",
                log["call_state"], log["call_status"]
            )
        },
    );
    f.expect(log["dtmf_input"] == p.digits.as_str(), || {
        format!(
            "call log: dtmf_input {}; the phone pressed {:?}",
            log["dtmf_input"], p.digits
        )
    });
    f.expect(
        !log["answered_at"].is_null() && !log["ended_at"].is_null(),
        || {
            format!(
                "call log: answered_at {} and ended_at {} must both be set",
                log["answered_at"], log["ended_at"]
            )
        },
    );
    let duration = log["call_duration"].as_f64().unwrap_or(-1.0);
    f.measure(
        "call_duration",
        format!("{duration} s (the bot saw {media:.1} s of media)"),
    );
    f.expect((duration - media).abs() <= 2.0, || {
        format!("call log: call_duration {duration} s, but the bot got {media:.1} s of media")
    });
    let wav = ctx.recording().await?;
    let secs = wav.seconds();
    ctx.f.measure("recording", format!("{secs:.1} s"));
    ctx.f
        .expect(secs + 0.5 >= media && secs <= media + 3.0, || {
            format!("the recording is {secs:.1} s long; the bot got {media:.1} s of media")
        });
    let heard = heard_count(&wav, LOG_VALUE);
    let want = constant_audio(LOG_VALUE, p.audio_ms).len();
    ctx.f.expect(heard == want, || {
        format!("the recording's second channel holds {heard} of the bot's {want} samples; it must be what the caller heard")
    });
    Ok(())
}

async fn transfer(ctx: &mut Ctx, p: &TransferParams) -> Result<(), String> {
    let (second_url, mut second) = ctx.second_route();
    let hangup_number = ctx.hangup_number();
    if p.send.contains("{hangup_number}") && hangup_number.is_none() {
        ctx.f
            .note("skipped: this scenario needs --hangup-number (a phone that answers and hangs up by itself)");
        return Ok(());
    }
    let flow_id = ctx.flow_id();
    if p.send.contains("{flow_id}") && flow_id.is_none() {
        ctx.f
            .note("skipped: this scenario needs --flow-id (a flow that ends the call by itself)");
        return Ok(());
    }
    let extension = ctx.extension();
    if p.send.contains("{extension}") && extension.is_none() {
        ctx.f.note(
            "skipped: this scenario needs --extension (an extension whose phone answers and hangs up)",
        );
        return Ok(());
    }
    let send = p
        .send
        .replace("{hangup_number}", hangup_number.as_deref().unwrap_or(""))
        .replace("{flow_id}", flow_id.as_deref().unwrap_or(""))
        .replace("{extension}", extension.as_deref().unwrap_or(""))
        .replace("{second_bot}", &second_url);
    ctx.dial(&p.number, false, json!({})).await?;
    ctx.accept(15 * SEC).await?;
    let (c, f) = ctx.parts()?;
    c.until("start", 15 * SEC).await?;
    c.media(10).await?;
    c.send(&send).await?;
    if let (Some(msg), Some(code)) = (&p.then_send, &p.then_expect) {
        c.send(msg).await?;
        match c.until("error", 10 * SEC).await? {
            BotEvent::Error { code: got, .. } => f.expect(&got == code, || {
                format!("a second transfer while the first was under way got error {got:?}; expected {code:?}")
            }),
            _ => unreachable!("until returns the named event"),
        }
    }
    let media_before = c.count("media");
    match p.expect.as_str() {
        "transferred" => {
            expect_stop(c, StopReason::Transferred, 30 * SEC).await?;
            let during = c.count("media") - media_before;
            f.measure("media while the target rang", format!("{during} chunks"));
            f.expect(during > 0, || {
                "the bot heard nothing while the target rang; it keeps the caller until someone answers".into()
            });
            c.drain(5 * SEC).await;
            let log = ctx.final_log(Duration::from_secs(30)).await?;
            ctx.f.expect(log["call_state"] == "completed", || {
                format!(
                    "call log: call_state {} after the agent hung up; expected \"completed\"",
                    log["call_state"]
                )
            });
        }
        "flow" => {
            expect_stop(c, StopReason::FlowTransfer, 15 * SEC).await?;
            c.drain(5 * SEC).await;
            let log = ctx.final_log(Duration::from_secs(60)).await?;
            ctx.f.expect(log["call_state"] == "completed", || {
                format!(
                    "call log: call_state {} after the flow ended the call; expected \"completed\"",
                    log["call_state"]
                )
            });
            ctx.f.expect(log["attended_by"] != "bot", || {
                "call log: attended_by \"bot\" after the bot handed the call to a flow".into()
            });
        }
        "warm_complete" | "warm_cancel" | "warm_target_hangs_up" => {
            match c.until("transfer_answered", 30 * SEC).await? {
                BotEvent::TransferAnswered { kind, .. } => {
                    f.expect(kind == "session.transfer", || {
                        format!(
                            "transfer_answered has kind {kind:?}; expected \"session.transfer\""
                        )
                    })
                }
                _ => unreachable!("until returns the named event"),
            }
            // The bot and the target are connected: the bot hears the target
            // (media goes on) while the caller waits.
            match p.expect.as_str() {
                "warm_complete" => {
                    c.send(r#"{"type":"session.transfer_complete"}"#).await?;
                    expect_stop(c, StopReason::Transferred, 10 * SEC).await?;
                    c.drain(5 * SEC).await;
                    let log = ctx.final_log(Duration::from_secs(30)).await?;
                    ctx.f.expect(log["attended_by"] != "bot", || {
                        "call log: attended_by \"bot\" after a completed warm transfer".into()
                    });
                }
                "warm_cancel" => {
                    c.send(r#"{"type":"session.transfer_cancel"}"#).await?;
                    // Back with the caller: media goes on, its hangup ends the call.
                    c.media(25).await?;
                    hang_up(ctx, false).await?;
                    let log = ctx.final_log(Duration::from_secs(30)).await?;
                    ctx.f.expect(log["attended_by"] == "bot", || {
                        format!(
                            "call log: attended_by {} after a cancelled warm transfer; expected \"bot\"",
                            log["attended_by"]
                        )
                    });
                }
                _ => {
                    match c.until("transfer_failed", 30 * SEC).await? {
                        BotEvent::TransferFailed { reason, .. } => {
                            f.expect(reason == "target_hung_up", || {
                                format!("transfer_failed has reason {reason:?}; expected \"target_hung_up\"")
                            })
                        }
                        _ => unreachable!("until returns the named event"),
                    }
                    c.media(25).await?;
                    hang_up(ctx, false).await?;
                }
            }
        }
        "transfer_ws" => {
            let next = tokio::time::timeout(15 * SEC, second.recv())
                .await
                .ok()
                .flatten()
                .ok_or("the second bot was never connected")?;
            expect_stop(c, StopReason::TransferWs, 15 * SEC).await?;
            let first_start = c.start().cloned();
            ctx.conn = Some(next);
            let (c, f) = ctx.parts()?;
            c.expect_connected(10 * SEC).await?;
            match (c.until("start", 10 * SEC).await?, first_start) {
                (
                    BotEvent::Start {
                        stream_sid, start, ..
                    },
                    Some(BotEvent::Start {
                        stream_sid: first_sid,
                        start: first,
                        ..
                    }),
                ) => {
                    f.expect(start.call_sid == first.call_sid, || {
                        format!(
                            "the second bot's start has call_sid {}; the call's is {}",
                            start.call_sid, first.call_sid
                        )
                    });
                    f.expect(stream_sid != first_sid, || {
                        "the second bot's stream has the first one's stream_sid; it must be a fresh one".into()
                    });
                }
                _ => return Err("no start for the first or the second bot".into()),
            }
            c.media(10).await?;
            hang_up(ctx, false).await?;
        }
        _ => {
            match c.until("transfer_failed", 60 * SEC).await? {
                BotEvent::TransferFailed {
                    reason, attempts, ..
                } => {
                    if let Some(want) = &p.reason {
                        f.expect(&reason == want, || {
                            format!("transfer_failed has reason {reason:?}; expected {want:?}")
                        });
                    }
                    let got: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
                    f.expect(p.outcomes.is_empty() || got == p.outcomes, || {
                        format!(
                            "transfer_failed attempts have outcomes {got:?}; expected {:?}",
                            p.outcomes
                        )
                    });
                }
                _ => unreachable!("until returns the named event"),
            }
            // The bot keeps the call: media goes on, and its hangup ends it.
            c.media(10).await?;
            hang_up(ctx, false).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{builtin, SuiteKind};

    #[test]
    fn every_bridge_scenario_has_a_valid_plan() {
        for s in builtin().iter().filter(|s| s.suite == SuiteKind::Bridge) {
            plan(s).unwrap();
        }
    }

    #[test]
    fn typos_in_a_scenario_are_errors() {
        let s = Scenario::parse(
            "name = \"x\"\nsuite = \"bridge\"\npurpose = \"p\"\nsection = \"s\"\ncheck = \"marks\"\n[params]\nnumber = \"+9991\"\naudio_msec = 5\n",
            "x.toml",
        )
        .unwrap();
        let e = plan(&s).unwrap_err();
        assert!(e.contains("audio_msec"), "{e}");
        let s = Scenario::parse(
            "name = \"x\"\nsuite = \"bridge\"\npurpose = \"p\"\nsection = \"s\"\ncheck = \"messages\"\n[params]\nnumber = \"+9991\"\ncases = [{ send = \"{}\", expect = \"bad_jsn\" }]\n",
            "x.toml",
        )
        .unwrap();
        let e = plan(&s).unwrap_err();
        assert!(e.contains("bad_jsn"), "{e}");
        let mut s = s.clone();
        s.check = "markz".into();
        assert!(plan(&s)
            .unwrap_err()
            .contains("unknown bridge check \"markz\""));
    }
}
