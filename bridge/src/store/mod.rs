//! Persistence: calls, their state changes and outcomes, settings, and flows
//! (dial plans and schedules), in one SQLite file under the data directory.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;

use crate::flow::{DialPlan, Schedule};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Where a call is in its life. Final states never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Accepted, not dialled yet (or scheduled).
    Initiated,
    /// The far end rings.
    Ringing,
    /// Answered; media flows.
    InProgress,
    /// Answered, then ended.
    Completed,
    /// The far end was busy.
    Busy,
    /// Nobody answered in time.
    NoAnswer,
    /// Could not be placed or kept up.
    Failed,
    /// Ended before it was answered, by us.
    Canceled,
}

impl CallState {
    /// The name stored and shown in the call log.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Initiated => "initiated",
            CallState::Ringing => "ringing",
            CallState::InProgress => "in-progress",
            CallState::Completed => "completed",
            CallState::Busy => "busy",
            CallState::NoAnswer => "no-answer",
            CallState::Failed => "failed",
            CallState::Canceled => "canceled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<CallState> {
        Some(match s {
            "initiated" => CallState::Initiated,
            "ringing" => CallState::Ringing,
            "in-progress" => CallState::InProgress,
            "completed" => CallState::Completed,
            "busy" => CallState::Busy,
            "no-answer" => CallState::NoAnswer,
            "failed" => CallState::Failed,
            "canceled" => CallState::Canceled,
            _ => return None,
        })
    }

    /// True once the call is over.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            CallState::Initiated | CallState::Ringing | CallState::InProgress
        )
    }

    /// The IVR Solutions `call_status` value for this state.
    pub fn call_status(self) -> &'static str {
        match self {
            CallState::Completed => "answered",
            CallState::InProgress => "in_progress",
            CallState::Initiated | CallState::Ringing => "initiated",
            CallState::Busy => "busy",
            CallState::NoAnswer | CallState::Canceled => "no_answer",
            CallState::Failed => "failed",
        }
    }
}

/// A new call to record.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// Our id for it (`CA…`).
    pub call_sid: String,
    /// `outbound` or `inbound`.
    pub direction: String,
    /// The caller's number (our DID for outbound calls).
    pub from: String,
    /// The called number.
    pub to: String,
    /// When to dial, if later.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// The request that made the call, as accepted.
    pub request: Value,
}

/// A call as stored.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The log id (`logid` / `recordid`).
    pub id: i64,
    /// Our call id.
    pub call_sid: String,
    /// `outbound` or `inbound`.
    pub direction: String,
    /// The caller.
    pub from: String,
    /// The called number.
    pub to: String,
    /// Current state.
    pub state: CallState,
    /// Why it ended (`callended`, `bot_hangup`, `bot_unreachable`, ...).
    pub end_reason: Option<String>,
    /// A SIP-style code for failures.
    pub sip_code: Option<u16>,
    /// When the call was accepted.
    pub created_at: DateTime<Utc>,
    /// When it is to be dialled, if scheduled.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// When it was answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// The request that made it.
    pub request: Value,
    /// The recording file name, under the recordings directory.
    pub recording: Option<String>,
    /// Keys the phone pressed.
    pub dtmf_input: String,
    /// What the phone side observed (virtual phones).
    pub phone_report: Option<Value>,
    /// Every leg rung for the call besides the caller (transfer targets, a
    /// DID's extension), in order.
    pub legs: Vec<LegRecord>,
    /// Who ended up with the caller: `bot`, `agent`, `extension`, or empty.
    pub attended_by: String,
    /// The number or extension of the person who ended up with the caller.
    pub agent_no: String,
}

/// One leg rung for a call, as the call log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LegRecord {
    /// The number or extension rung.
    pub destination: String,
    /// `number` or `extension`.
    pub kind: String,
    /// `answered`, `busy`, `no-answer`, `failed` or `cancelled`.
    pub outcome: String,
    /// The SIP code of a failure.
    pub sip_code: Option<u16>,
    /// When it was rung.
    pub rang_at: Option<DateTime<Utc>>,
    /// When it answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// It ended up with the caller.
    pub bridged: bool,
    /// What its phone reported when it hung up (a virtual phone: what it
    /// heard and said), if it reports anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<serde_json::Value>,
}

impl CallRecord {
    /// Answered time in whole seconds (0 for an unanswered call).
    pub fn duration_secs(&self) -> i64 {
        match (self.answered_at, self.ended_at) {
            (Some(a), Some(e)) => ((e - a).num_milliseconds() + 500) / 1000,
            (Some(a), None) => (Utc::now() - a).num_seconds(),
            _ => 0,
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its final state.
    pub state: CallState,
    /// Why.
    pub reason: String,
    /// A SIP-style code, for failures.
    pub sip_code: Option<u16>,
    /// The recording file name, if any audio was recorded.
    pub recording: Option<String>,
    /// Keys the phone pressed.
    pub dtmf_input: String,
    /// What the phone side observed.
    pub phone_report: Option<Value>,
    /// The legs rung besides the caller.
    pub legs: Vec<LegRecord>,
    /// Who ended up with the caller, and their number.
    pub attended_by: String,
    /// See [`CallRecord::agent_no`].
    pub agent_no: String,
    /// When the call ended, when that was not now (a call closed after a
    /// crash ended when the last sign of it was).
    pub ended_at: Option<DateTime<Utc>>,
}

impl Outcome {
    /// An outcome with nothing recorded besides its state and reason.
    pub fn new(state: CallState, reason: &str) -> Outcome {
        Outcome {
            state,
            reason: reason.into(),
            sip_code: None,
            recording: None,
            dtmf_input: String::new(),
            phone_report: None,
            legs: Vec::new(),
            attended_by: String::new(),
            agent_no: String::new(),
            ended_at: None,
        }
    }
}

/// The SQLite store. One connection behind a mutex: every statement is short.
pub struct Store {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    call_sid     TEXT NOT NULL UNIQUE,
    direction    TEXT NOT NULL,
    from_no      TEXT NOT NULL,
    to_no        TEXT NOT NULL,
    state        TEXT NOT NULL,
    end_reason   TEXT,
    sip_code     INTEGER,
    created_at   TEXT NOT NULL,
    scheduled_at TEXT,
    answered_at  TEXT,
    ended_at     TEXT,
    request      TEXT NOT NULL,
    recording    TEXT,
    dtmf_input   TEXT NOT NULL DEFAULT '',
    phone_report TEXT,
    legs         TEXT NOT NULL DEFAULT '[]',
    attended_by  TEXT NOT NULL DEFAULT '',
    agent_no     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS calls_to_no ON calls(to_no);
CREATE INDEX IF NOT EXISTS calls_created ON calls(created_at);
CREATE TABLE IF NOT EXISTS call_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id INTEGER NOT NULL REFERENCES calls(id),
    at      TEXT NOT NULL,
    state   TEXT NOT NULL,
    detail  TEXT
);
CREATE TABLE IF NOT EXISTS dial_plans (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
";

const CALL_COLUMNS: &str = "id, call_sid, direction, from_no, to_no, state, end_reason, sip_code, \
     created_at, scheduled_at, answered_at, ended_at, request, recording, dtmf_input, phone_report, \
     legs, attended_by, agent_no";

/// Columns added since the first schema, for databases made before them.
const ADDED_COLUMNS: [(&str, &str); 3] = [
    ("legs", "TEXT NOT NULL DEFAULT '[]'"),
    ("attended_by", "TEXT NOT NULL DEFAULT ''"),
    ("agent_no", "TEXT NOT NULL DEFAULT ''"),
];

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_ts(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn row_to_call(r: &Row<'_>) -> rusqlite::Result<CallRecord> {
    let state: String = r.get(5)?;
    let request: String = r.get(12)?;
    let report: Option<String> = r.get(15)?;
    Ok(CallRecord {
        id: r.get(0)?,
        call_sid: r.get(1)?,
        direction: r.get(2)?,
        from: r.get(3)?,
        to: r.get(4)?,
        state: CallState::parse(&state).unwrap_or(CallState::Failed),
        end_reason: r.get(6)?,
        sip_code: r.get::<_, Option<i64>>(7)?.map(|c| c as u16),
        created_at: parse_ts(r.get(8)?).unwrap_or_default(),
        scheduled_at: parse_ts(r.get(9)?),
        answered_at: parse_ts(r.get(10)?),
        ended_at: parse_ts(r.get(11)?),
        request: serde_json::from_str(&request).unwrap_or(Value::Null),
        recording: r.get(13)?,
        dtmf_input: r.get(14)?,
        phone_report: report.and_then(|s| serde_json::from_str(&s).ok()),
        legs: serde_json::from_str(&r.get::<_, String>(16)?).unwrap_or_default(),
        attended_by: r.get(17)?,
        agent_no: r.get(18)?,
    })
}

/// Flows and schedules are stored whole as JSON, with their id and name beside
/// for listing. The two tables have the same columns.
const DATA_TABLES: [&str; 2] = ["dial_plans", "schedules"];

/// A stored JSON body (column 0) with its times (columns 1 and 2).
fn row_to_body<T: serde::de::DeserializeOwned>(
    r: &Row<'_>,
) -> rusqlite::Result<(T, String, String)> {
    let body: String = r.get(0)?;
    let t = serde_json::from_str(&body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok((t, r.get(1)?, r.get(2)?))
}

impl Store {
    /// Opens (creating if needed) the database file.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        let have: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('calls')")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for (name, decl) in ADDED_COLUMNS {
            if !have.iter().any(|h| h == name) {
                conn.execute_batch(&format!("ALTER TABLE calls ADD COLUMN {name} {decl}"))?;
            }
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every write is
        // one statement), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A setting.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets a setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO settings(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Records a new call in state `initiated`; returns its log id.
    pub fn insert_call(&self, c: &NewCall) -> Result<i64, StoreError> {
        let conn = self.conn();
        let now = ts(Utc::now());
        conn.execute(
            "INSERT INTO calls(call_sid, direction, from_no, to_no, state, created_at, scheduled_at, request)
             VALUES (?1, ?2, ?3, ?4, 'initiated', ?5, ?6, ?7)",
            params![
                c.call_sid,
                c.direction,
                c.from,
                c.to,
                now,
                c.scheduled_at.map(ts),
                c.request.to_string()
            ],
        )?;
        let id = conn.last_insert_rowid();
        conn.execute(
            "INSERT INTO call_events(call_id, at, state, detail) VALUES (?1, ?2, 'initiated', NULL)",
            params![id, now],
        )?;
        Ok(id)
    }

    /// Moves a live call to `state` (ringing, in-progress).
    pub fn set_state(&self, id: i64, state: CallState) -> Result<(), StoreError> {
        let conn = self.conn();
        let now = ts(Utc::now());
        if state == CallState::InProgress {
            conn.execute(
                "UPDATE calls SET state = ?2, answered_at = ?3 WHERE id = ?1",
                params![id, state.as_str(), now],
            )?;
        } else {
            conn.execute(
                "UPDATE calls SET state = ?2 WHERE id = ?1",
                params![id, state.as_str()],
            )?;
        }
        conn.execute(
            "INSERT INTO call_events(call_id, at, state, detail) VALUES (?1, ?2, ?3, NULL)",
            params![id, now, state.as_str()],
        )?;
        Ok(())
    }

    /// Records how a call ended.
    pub fn finish(&self, id: i64, o: &Outcome) -> Result<(), StoreError> {
        let conn = self.conn();
        let now = ts(o.ended_at.unwrap_or_else(Utc::now));
        conn.execute(
            "UPDATE calls SET state = ?2, end_reason = ?3, sip_code = ?4, ended_at = ?5,
                 recording = ?6, dtmf_input = ?7, phone_report = ?8, legs = ?9,
                 attended_by = ?10, agent_no = ?11
             WHERE id = ?1",
            params![
                id,
                o.state.as_str(),
                o.reason,
                o.sip_code,
                now,
                o.recording,
                o.dtmf_input,
                o.phone_report.as_ref().map(|v| v.to_string()),
                serde_json::to_string(&o.legs).unwrap_or_else(|_| "[]".into()),
                o.attended_by,
                o.agent_no
            ],
        )?;
        conn.execute(
            "INSERT INTO call_events(call_id, at, state, detail) VALUES (?1, ?2, ?3, ?4)",
            params![id, now, o.state.as_str(), o.reason],
        )?;
        Ok(())
    }

    /// One call by log id.
    pub fn call(&self, id: i64) -> Result<Option<CallRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = ?1"),
                [id],
                row_to_call,
            )
            .optional()?)
    }

    /// One call by call id.
    pub fn call_by_sid(&self, sid: &str) -> Result<Option<CallRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_sid = ?1"),
                [sid],
                row_to_call,
            )
            .optional()?)
    }

    /// Calls created in `[from, to)`, oldest first.
    pub fn calls_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE created_at >= ?1 AND created_at < ?2 ORDER BY id"
        ))?;
        let rows = st.query_map(params![ts(from), ts(to)], row_to_call)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Calls to or from `number`, oldest first.
    pub fn calls_with_number(&self, number: &str) -> Result<Vec<CallRecord>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE to_no = ?1 OR from_no = ?1 ORDER BY id"
        ))?;
        let rows = st.query_map([number], row_to_call)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The state changes of a call, oldest first: (time, state, detail).
    pub fn events(&self, id: i64) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT at, state, detail FROM call_events WHERE call_id = ?1 ORDER BY id")?;
        let rows = st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Inserts or replaces a row of `dial_plans` or `schedules`; an update
    /// keeps the row's `created_at`.
    fn put_body<T: serde::Serialize>(
        &self,
        table: &str,
        id: &str,
        name: &str,
        body: &T,
    ) -> Result<(), StoreError> {
        debug_assert!(DATA_TABLES.contains(&table));
        let body = serde_json::to_string(body)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let now = ts(Utc::now());
        self.conn().execute(
            &format!(
                "INSERT INTO {table}(id, name, body, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(id) DO UPDATE SET name = excluded.name, body = excluded.body,
                     updated_at = excluded.updated_at"
            ),
            params![id, name, body, now],
        )?;
        Ok(())
    }

    /// Every row of `dial_plans` or `schedules` by id, or the one with `id`.
    fn bodies<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        id: Option<&str>,
    ) -> Result<Vec<(T, String, String)>, StoreError> {
        debug_assert!(DATA_TABLES.contains(&table));
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT body, created_at, updated_at FROM {table}
             WHERE ?1 IS NULL OR id = ?1 ORDER BY id"
        ))?;
        let rows = st.query_map([id], row_to_body)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores a flow (insert or replace, by id). `created_at` and `updated_at`
    /// are the store's own: an update keeps the first `created_at`.
    pub fn put_dial_plan(&self, plan: &DialPlan) -> Result<(), StoreError> {
        let plan = DialPlan {
            created_at: None,
            updated_at: None,
            ..plan.clone()
        };
        self.put_body("dial_plans", &plan.id, &plan.name, &plan)
    }

    /// One flow by id, with its stored times.
    pub fn dial_plan(&self, id: &str) -> Result<Option<DialPlan>, StoreError> {
        Ok(self
            .bodies("dial_plans", Some(id))?
            .into_iter()
            .next()
            .map(with_plan_times))
    }

    /// Every stored flow by id, with its stored times.
    pub fn dial_plans(&self) -> Result<Vec<DialPlan>, StoreError> {
        Ok(self
            .bodies("dial_plans", None)?
            .into_iter()
            .map(with_plan_times)
            .collect())
    }

    /// Deletes a flow; false if there was none.
    pub fn delete_dial_plan(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM dial_plans WHERE id = ?1", [id])?
            > 0)
    }

    /// Stores a schedule (insert or replace, by id); like
    /// [`put_dial_plan`](Self::put_dial_plan) for its times.
    pub fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        let s = Schedule {
            created_at: None,
            updated_at: None,
            ..schedule.clone()
        };
        self.put_body("schedules", &s.id, &s.name, &s)
    }

    /// One schedule by id, with its stored times.
    pub fn schedule(&self, id: &str) -> Result<Option<Schedule>, StoreError> {
        Ok(self
            .bodies("schedules", Some(id))?
            .into_iter()
            .next()
            .map(with_schedule_times))
    }

    /// Every stored schedule by id, with its stored times.
    pub fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        Ok(self
            .bodies("schedules", None)?
            .into_iter()
            .map(with_schedule_times)
            .collect())
    }

    /// Deletes a schedule; false if there was none.
    pub fn delete_schedule(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM schedules WHERE id = ?1", [id])?
            > 0)
    }

    /// The calls that were live when the bridge last stopped without
    /// finishing them (`kill -9`, power loss), each with the time of the last
    /// thing stored about it.
    pub fn interrupted(&self) -> Result<Vec<(CallRecord, DateTime<Utc>)>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE state IN ('ringing', 'in-progress')
                OR (state = 'initiated' AND scheduled_at IS NULL) ORDER BY id"
        ))?;
        let calls: Vec<CallRecord> = st.query_map([], row_to_call)?.collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            let last: Option<String> = conn.query_row(
                "SELECT MAX(at) FROM call_events WHERE call_id = ?1",
                [c.id],
                |r| r.get(0),
            )?;
            let last = parse_ts(last).or(c.answered_at).unwrap_or(c.created_at);
            out.push((c, last));
        }
        Ok(out)
    }

    /// The calls waiting for their scheduled time, to schedule again after a
    /// restart. Calls left live by an unclean stop are closed first
    /// ([`Store::interrupted`], then [`Store::finish`]).
    pub fn recover(&self) -> Result<Vec<CallRecord>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE state = 'initiated' AND scheduled_at IS NOT NULL ORDER BY id"
        ))?;
        let rows = st.query_map([], row_to_call)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn with_plan_times((plan, created, updated): (DialPlan, String, String)) -> DialPlan {
    DialPlan {
        created_at: Some(created),
        updated_at: Some(updated),
        ..plan
    }
}

fn with_schedule_times((s, created, updated): (Schedule, String, String)) -> Schedule {
    Schedule {
        created_at: Some(created),
        updated_at: Some(updated),
        ..s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_call(sid: &str, to: &str) -> NewCall {
        NewCall {
            call_sid: sid.into(),
            direction: "outbound".into(),
            from: "+15550100000".into(),
            to: to.into(),
            scheduled_at: None,
            request: serde_json::json!({"customer_no": to}),
        }
    }

    #[test]
    fn calls_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.db");
        let id = {
            let s = Store::open(&path).unwrap();
            let id = s.insert_call(&new_call("CA1", "+99910001")).unwrap();
            s.set_state(id, CallState::Ringing).unwrap();
            s.set_state(id, CallState::InProgress).unwrap();
            s.finish(
                id,
                &Outcome {
                    recording: Some("CA1.wav".into()),
                    dtmf_input: "12".into(),
                    ..Outcome::new(CallState::Completed, "callended")
                },
            )
            .unwrap();
            id
        };
        let s = Store::open(&path).unwrap();
        let c = s.call(id).unwrap().unwrap();
        assert_eq!(c.state, CallState::Completed);
        assert_eq!(c.end_reason.as_deref(), Some("callended"));
        assert_eq!(c.dtmf_input, "12");
        assert!(c.answered_at.is_some() && c.ended_at.is_some());
        let states: Vec<String> = s.events(id).unwrap().into_iter().map(|e| e.1).collect();
        assert_eq!(states, ["initiated", "ringing", "in-progress", "completed"]);
        assert_eq!(s.calls_with_number("+99910001").unwrap().len(), 1);
    }

    #[test]
    fn interrupted_calls_and_scheduled_ones_are_found_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("b.db")).unwrap();
        let live = s.insert_call(&new_call("CA1", "+1")).unwrap();
        s.set_state(live, CallState::Ringing).unwrap();
        let mut sched = new_call("CA2", "+2");
        sched.scheduled_at = Some(Utc::now() + chrono::Duration::hours(1));
        let sched_id = s.insert_call(&sched).unwrap();
        let cut = s.interrupted().unwrap();
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].0.id, live);
        assert!(cut[0].1 <= Utc::now() && cut[0].1 >= cut[0].0.created_at);
        // Closed as it ended, not as now.
        let ended = Utc::now() - chrono::Duration::minutes(5);
        s.finish(
            live,
            &Outcome {
                ended_at: Some(ended),
                ..Outcome::new(CallState::Failed, "bridge_restart")
            },
        )
        .unwrap();
        let again = s.recover().unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, sched_id);
        assert!(s.interrupted().unwrap().is_empty());
        let c = s.call(live).unwrap().unwrap();
        assert_eq!(c.state, CallState::Failed);
        assert_eq!(c.end_reason.as_deref(), Some("bridge_restart"));
        assert_eq!(
            c.ended_at.unwrap().timestamp_millis(),
            ended.timestamp_millis()
        );
    }

    fn plan(id: &str, name: &str) -> DialPlan {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "entry_node": "menu",
            "nodes": [
                {"id": "menu", "type": "menu", "config": {
                    "prompt_clip_id": "main", "timeout": 5,
                    "options": [{"digit": "1", "next_node": "bot"}, {"digit": "#"}]},
                 "position": {"x": 10.5, "y": 20.0}},
                {"id": "bot", "type": "bot", "config": {"wss_url": "wss://b/ws", "next": null}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn dial_plans_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.db");
        let (created, first) = {
            let s = Store::open(&path).unwrap();
            assert!(s.dial_plans().unwrap().is_empty());
            assert!(s.dial_plan("sales").unwrap().is_none());
            s.put_dial_plan(&plan("sales", "Sales")).unwrap();
            s.put_dial_plan(&plan("after_hours", "After hours"))
                .unwrap();
            let got = s.dial_plan("sales").unwrap().unwrap();
            let created = got.created_at.clone().unwrap();
            assert_eq!(got.updated_at.as_deref(), Some(created.as_str()));
            (created, got)
        };
        std::thread::sleep(std::time::Duration::from_millis(5));
        let s = Store::open(&path).unwrap();
        assert_eq!(s.dial_plan("sales").unwrap().unwrap(), first);
        // An update replaces the body and keeps created_at.
        let mut changed = plan("sales", "Sales (new)");
        changed.nodes.pop();
        changed.created_at = Some("1999-01-01T00:00:00Z".into()); // not taken
        s.put_dial_plan(&changed).unwrap();
        let got = s.dial_plan("sales").unwrap().unwrap();
        assert_eq!(got.name, "Sales (new)");
        assert_eq!(got.nodes.len(), 1);
        assert_eq!(got.created_at.as_deref(), Some(created.as_str()));
        assert!(got.updated_at.clone().unwrap() > created);
        let all = s.dial_plans().unwrap();
        let ids: Vec<_> = all.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["after_hours", "sales"]);
        assert_eq!(
            DialPlan {
                created_at: None,
                updated_at: None,
                ..all[0].clone()
            },
            plan("after_hours", "After hours")
        );
        assert!(s.delete_dial_plan("after_hours").unwrap());
        assert!(!s.delete_dial_plan("after_hours").unwrap());
        assert_eq!(s.dial_plans().unwrap().len(), 1);
    }

    #[test]
    fn schedules_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.db");
        let sched: Schedule = serde_json::from_value(serde_json::json!({
            "id": "hours", "name": "Business hours", "timezone": "America/New_York",
            "ranges": [{"day": 1, "start": "09:00", "end": "17:00"}],
            "holidays": [{"start": "2025-12-25", "end": "2025-12-25"}],
            "hold": {"value": false, "until": "2025-12-20T17:00:00"}
        }))
        .unwrap();
        {
            let s = Store::open(&path).unwrap();
            s.put_schedule(&sched).unwrap();
            s.put_schedule(&Schedule {
                id: "always".into(),
                timezone: None,
                hold: None,
                ..sched.clone()
            })
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let got = s.schedule("hours").unwrap().unwrap();
        assert!(got.created_at.is_some());
        assert_eq!(
            Schedule {
                created_at: None,
                updated_at: None,
                ..got
            },
            sched
        );
        let all = s.schedules().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].id, "always");
        assert_eq!(all[0].timezone, None);
        assert!(s.delete_schedule("always").unwrap());
        assert!(s.schedule("always").unwrap().is_none());
    }
}
