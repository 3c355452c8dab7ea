//! Scenarios are data: TOML files under `conformance/scenarios/`, each naming the
//! Rust check it drives and the parameters it drives it with.
//!
//! ```toml
//! name = "marks"
//! suite = "bridge"
//! purpose = "A mark comes back only after the audio queued before it has played."
//! section = "PROTOCOL.md §3 Marks"
//! check = "marks"
//!
//! [params]
//! audio_ms = 500
//! ```
//!
//! The files are compiled into the binary ([`builtin`]); `--scenario-dir` adds more
//! from disk. Each suite turns a scenario's `check` and `params` into a typed plan
//! and refuses unknown checks and parameters, so a typo in a file is an error,
//! not a scenario that silently checks nothing.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::report::{Findings, Progress, ScenarioResult};

/// Which suite runs a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SuiteKind {
    /// `conformance bot`: the suite plays the bridge against a bot.
    Bot,
    /// `conformance bridge`: the suite plays the bot and the phone against a bridge.
    Bridge,
}

impl SuiteKind {
    /// `bot` or `bridge`.
    pub fn as_str(self) -> &'static str {
        match self {
            SuiteKind::Bot => "bot",
            SuiteKind::Bridge => "bridge",
        }
    }
}

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Unique name, used with `--scenario`.
    pub name: String,
    /// The suite that runs it.
    pub suite: SuiteKind,
    /// One line: what it checks, for a person.
    pub purpose: String,
    /// The part of PROTOCOL.md it checks.
    pub section: String,
    /// The Rust check it drives.
    pub check: String,
    /// Command-line options it needs (e.g. `hangup-number`); without them it is
    /// left out of the default selection.
    #[serde(default)]
    pub needs: Vec<String>,
    /// The check's parameters.
    #[serde(default)]
    pub params: toml::Table,
}

impl Scenario {
    /// Parses one scenario file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        if s.name.is_empty()
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "{origin}: name {:?} must be lowercase letters, digits and dashes",
                s.name
            ));
        }
        if s.purpose.trim().is_empty() || s.purpose.contains('\n') {
            return Err(format!("{origin}: purpose must be one non-empty line"));
        }
        Ok(s)
    }

    /// The `[params]` table as the check's typed parameters.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, String> {
        toml::Value::Table(self.params.clone())
            .try_into()
            .map_err(|e| format!("scenario {}: [params]: {e}", self.name))
    }
}

/// The built-in scenario files, as (path under `scenarios/`, text).
pub const BUILTIN_FILES: &[(&str, &str)] = &[
    (
        "bot/call-flow.toml",
        include_str!("../scenarios/bot/call-flow.toml"),
    ),
    (
        "bot/audio-deltas.toml",
        include_str!("../scenarios/bot/audio-deltas.toml"),
    ),
    (
        "bot/silent-after-stop.toml",
        include_str!("../scenarios/bot/silent-after-stop.toml"),
    ),
    (
        "bot/answers-pings.toml",
        include_str!("../scenarios/bot/answers-pings.toml"),
    ),
    (
        "bot/tolerates-unknown.toml",
        include_str!("../scenarios/bot/tolerates-unknown.toml"),
    ),
    ("bot/dtmf.toml", include_str!("../scenarios/bot/dtmf.toml")),
    (
        "bot/connect-before-answer.toml",
        include_str!("../scenarios/bot/connect-before-answer.toml"),
    ),
    (
        "bot/stop-before-start.toml",
        include_str!("../scenarios/bot/stop-before-start.toml"),
    ),
    (
        "bridge/event-order.toml",
        include_str!("../scenarios/bridge/event-order.toml"),
    ),
    (
        "bridge/numbering.toml",
        include_str!("../scenarios/bridge/numbering.toml"),
    ),
    (
        "bridge/media-cadence.toml",
        include_str!("../scenarios/bridge/media-cadence.toml"),
    ),
    (
        "bridge/marks.toml",
        include_str!("../scenarios/bridge/marks.toml"),
    ),
    (
        "bridge/clear.toml",
        include_str!("../scenarios/bridge/clear.toml"),
    ),
    (
        "bridge/dtmf-from-phone.toml",
        include_str!("../scenarios/bridge/dtmf-from-phone.toml"),
    ),
    (
        "bridge/dtmf-to-phone.toml",
        include_str!("../scenarios/bridge/dtmf-to-phone.toml"),
    ),
    (
        "bridge/hangup-drain.toml",
        include_str!("../scenarios/bridge/hangup-drain.toml"),
    ),
    (
        "bridge/hangup-immediate.toml",
        include_str!("../scenarios/bridge/hangup-immediate.toml"),
    ),
    (
        "bridge/bad-messages.toml",
        include_str!("../scenarios/bridge/bad-messages.toml"),
    ),
    (
        "bridge/lenient-messages.toml",
        include_str!("../scenarios/bridge/lenient-messages.toml"),
    ),
    (
        "bridge/binary-audio.toml",
        include_str!("../scenarios/bridge/binary-audio.toml"),
    ),
    (
        "bridge/before-answer.toml",
        include_str!("../scenarios/bridge/before-answer.toml"),
    ),
    (
        "bridge/stop-busy.toml",
        include_str!("../scenarios/bridge/stop-busy.toml"),
    ),
    (
        "bridge/stop-no-answer.toml",
        include_str!("../scenarios/bridge/stop-no-answer.toml"),
    ),
    (
        "bridge/stop-failed.toml",
        include_str!("../scenarios/bridge/stop-failed.toml"),
    ),
    (
        "bridge/stop-callended.toml",
        include_str!("../scenarios/bridge/stop-callended.toml"),
    ),
    (
        "bridge/call-log.toml",
        include_str!("../scenarios/bridge/call-log.toml"),
    ),
    (
        "bridge/transfer-answered.toml",
        include_str!("../scenarios/bridge/transfer-answered.toml"),
    ),
    (
        "bridge/transfer-simultaneous.toml",
        include_str!("../scenarios/bridge/transfer-simultaneous.toml"),
    ),
    (
        "bridge/transfer-failed.toml",
        include_str!("../scenarios/bridge/transfer-failed.toml"),
    ),
    (
        "bridge/transfer-in-progress.toml",
        include_str!("../scenarios/bridge/transfer-in-progress.toml"),
    ),
    (
        "bridge/transfer-ws.toml",
        include_str!("../scenarios/bridge/transfer-ws.toml"),
    ),
    (
        "bridge/transfer-ws-unreachable.toml",
        include_str!("../scenarios/bridge/transfer-ws-unreachable.toml"),
    ),
    (
        "bridge/flow-transfer-unknown.toml",
        include_str!("../scenarios/bridge/flow-transfer-unknown.toml"),
    ),
    (
        "bridge/flow-transfer.toml",
        include_str!("../scenarios/bridge/flow-transfer.toml"),
    ),
    (
        "bridge/transfer-extension.toml",
        include_str!("../scenarios/bridge/transfer-extension.toml"),
    ),
    (
        "bridge/transfer-extension-unknown.toml",
        include_str!("../scenarios/bridge/transfer-extension-unknown.toml"),
    ),
    (
        "bridge/transfer-warm-complete.toml",
        include_str!("../scenarios/bridge/transfer-warm-complete.toml"),
    ),
    (
        "bridge/transfer-warm-cancel.toml",
        include_str!("../scenarios/bridge/transfer-warm-cancel.toml"),
    ),
    (
        "bridge/transfer-warm-target-hangs-up.toml",
        include_str!("../scenarios/bridge/transfer-warm-target-hangs-up.toml"),
    ),
];

/// Every built-in scenario, in file order.
pub fn builtin() -> Vec<Scenario> {
    BUILTIN_FILES
        .iter()
        .map(|(path, text)| {
            // The crate's tests parse every built-in file.
            Scenario::parse(text, path).unwrap_or_else(|e| panic!("built-in scenario {e}"))
        })
        .collect()
}

/// Reads every `*.toml` file in `dir` (not recursive), sorted by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            Scenario::parse(&text, &p.display().to_string())
        })
        .collect()
}

/// The scenarios a run selected.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The scenarios to run, in order.
    pub run: Vec<Scenario>,
    /// Scenarios left out of the default selection, with the option each lacks.
    pub left_out: Vec<(Scenario, String)>,
}

/// The scenarios of `suite` to run.
///
/// With no names, every scenario of the suite whose `needs` are all in
/// `available`; the others are left out, with the option they lack. With names,
/// exactly those, in the order given; an unknown name or a missing option is an
/// error.
pub fn select(
    all: &[Scenario],
    suite: SuiteKind,
    names: &[String],
    available: &[&str],
) -> Result<Selection, String> {
    let of_suite: Vec<&Scenario> = all.iter().filter(|s| s.suite == suite).collect();
    let missing = |s: &Scenario| {
        s.needs
            .iter()
            .find(|n| !available.contains(&n.as_str()))
            .cloned()
    };
    if names.is_empty() {
        let mut run = vec![];
        let mut left_out = vec![];
        for s in of_suite {
            match missing(s) {
                Some(need) => left_out.push((s.clone(), need)),
                None => run.push(s.clone()),
            }
        }
        return Ok(Selection { run, left_out });
    }
    let mut run = vec![];
    for name in names {
        let s = of_suite.iter().find(|s| &s.name == name).ok_or_else(|| {
            let known: Vec<&str> = of_suite.iter().map(|s| s.name.as_str()).collect();
            format!(
                "no {} scenario named {name:?}; known: {}",
                suite.as_str(),
                known.join(", ")
            )
        })?;
        if let Some(need) = missing(s) {
            return Err(format!("scenario {name} needs --{need}"));
        }
        run.push((*s).clone());
    }
    Ok(Selection {
        run,
        left_out: vec![],
    })
}

/// The text `--list` prints.
pub fn listing(all: &[Scenario], suite: SuiteKind) -> String {
    let of_suite: Vec<&Scenario> = all.iter().filter(|s| s.suite == suite).collect();
    let width = of_suite.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for s in of_suite {
        out.push_str(&format!(
            "{:<width$}  {}  [{}]",
            s.name, s.purpose, s.section
        ));
        for n in &s.needs {
            out.push_str(&format!(" (needs --{n})"));
        }
        out.push('\n');
    }
    out
}

/// A future that runs one scenario and returns what it found.
pub type ScenarioFuture = Pin<Box<dyn Future<Output = Findings> + Send>>;

/// Runs `scenarios`, at most `jobs` at a time, reporting each as it finishes;
/// returns the results in the order of `scenarios`.
pub async fn run_all<F>(
    scenarios: Vec<Scenario>,
    jobs: usize,
    progress: Arc<dyn Progress>,
    run_one: F,
) -> Vec<ScenarioResult>
where
    F: Fn(Scenario) -> ScenarioFuture,
{
    let total = scenarios.len();
    let limit = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = vec![];
    for s in scenarios {
        let fut = run_one(s.clone());
        let done = done.clone();
        let progress = progress.clone();
        // Taking the slot before spawning keeps scenarios in their listed order.
        let permit = limit.clone().acquire_owned().await;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let began = Instant::now();
            let findings = fut.await;
            let result = ScenarioResult {
                name: s.name.clone(),
                purpose: s.purpose.clone(),
                section: s.section.clone(),
                outcome: findings.outcome(),
                duration_ms: crate::report::ms(began.elapsed()),
                findings,
            };
            let index = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            progress.finished(index, total, &result);
            result
        }));
    }
    let mut out = vec![];
    for t in tasks {
        match t.await {
            Ok(r) => out.push(r),
            Err(e) => {
                // A check that panicked is a bug in the suite; say so rather
                // than hide the scenario.
                let mut f = Findings::default();
                f.fail(format!("the suite's check crashed: {e}"));
                out.push(ScenarioResult {
                    name: "(crashed)".into(),
                    purpose: String::new(),
                    section: String::new(),
                    outcome: f.outcome(),
                    duration_ms: 0,
                    findings: f,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_file_is_built_in_and_names_are_unique() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut on_disk = vec![];
        for suite in ["bot", "bridge"] {
            for s in load_dir(&dir.join(suite)).unwrap() {
                on_disk.push(s.name);
            }
        }
        let built: Vec<String> = builtin().into_iter().map(|s| s.name).collect();
        let mut a = on_disk.clone();
        let mut b = built.clone();
        a.sort();
        b.sort();
        assert_eq!(
            a, b,
            "every file under scenarios/ is listed in BUILTIN_FILES"
        );
        let mut dedup = b.clone();
        dedup.dedup();
        assert_eq!(dedup, b, "scenario names are unique");
        for (path, text) in BUILTIN_FILES {
            let s = Scenario::parse(text, path).unwrap();
            assert!(
                path.starts_with(s.suite.as_str()),
                "{path} is under its suite's folder"
            );
            assert!(
                path.ends_with(&format!("{}.toml", s.name)),
                "{path} is named after its scenario"
            );
        }
    }

    #[test]
    fn selection_by_name_and_by_needs() {
        let all = builtin();
        let Selection {
            run,
            left_out: left,
        } = select(&all, SuiteKind::Bridge, &[], &[]).unwrap();
        assert!(run.iter().all(|s| s.needs.is_empty()));
        assert!(left
            .iter()
            .any(|(s, need)| s.name == "stop-callended" && need == "hangup-number"));
        let Selection {
            run,
            left_out: left,
        } = select(&all, SuiteKind::Bridge, &[], &["hangup-number"]).unwrap();
        assert_eq!(
            left.iter()
                .map(|(s, n)| (s.name.as_str(), n.as_str()))
                .collect::<Vec<_>>(),
            vec![
                ("flow-transfer", "flow-id"),
                ("transfer-extension", "extension")
            ]
        );
        assert!(run.iter().any(|s| s.name == "stop-callended"));
        let Selection { left_out, .. } = select(
            &all,
            SuiteKind::Bridge,
            &[],
            &["hangup-number", "flow-id", "extension"],
        )
        .unwrap();
        assert!(left_out.is_empty());
        let e = select(&all, SuiteKind::Bot, &["marks".into()], &[]).unwrap_err();
        assert!(e.contains("no bot scenario named \"marks\""), "{e}");
        let e = select(&all, SuiteKind::Bridge, &["stop-callended".into()], &[]).unwrap_err();
        assert_eq!(e, "scenario stop-callended needs --hangup-number");
    }

    #[test]
    fn bad_files_are_refused_with_their_origin() {
        let e = Scenario::parse("name = \"x\"\n", "a.toml").unwrap_err();
        assert!(e.starts_with("a.toml:"), "{e}");
        let e = Scenario::parse(
            "name = \"Bad Name\"\nsuite = \"bot\"\npurpose = \"p\"\nsection = \"s\"\ncheck = \"session\"\n",
            "b.toml",
        )
        .unwrap_err();
        assert!(e.contains("lowercase"), "{e}");
        let e = Scenario::parse(
            "name = \"x\"\nsuite = \"bot\"\npurpose = \"p\"\nsection = \"s\"\ncheck = \"session\"\ntypo = 1\n",
            "c.toml",
        )
        .unwrap_err();
        assert!(e.contains("typo"), "{e}");
    }
}
