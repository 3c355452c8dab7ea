//! Results: what each scenario found, the progress lines and summary table a
//! person reads, and the JUnit and JSON reports machines read.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use serde::Serialize;

/// How a scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every check held.
    Pass,
    /// At least one check failed.
    Fail,
    /// The scenario could not check what it is for (the reason says why).
    Skip,
}

impl Outcome {
    /// `PASS`, `FAIL` or `SKIP`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        }
    }
}

/// What one scenario found while it ran.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Findings {
    /// Broken contract, for a person; the first is shown in the summary.
    pub failures: Vec<String>,
    /// Set when the scenario could not check what it is for.
    pub skipped: Option<String>,
    /// Things worth knowing that break nothing.
    pub notes: Vec<String>,
    /// What was measured, as (name, value with unit), in the order measured.
    pub measurements: Vec<(String, String)>,
}

impl Findings {
    /// Records a failure.
    pub fn fail(&mut self, problem: impl Into<String>) {
        self.failures.push(problem.into());
    }

    /// Records a note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Records a measurement.
    pub fn measure(&mut self, name: &str, value: impl Into<String>) {
        self.measurements.push((name.to_owned(), value.into()));
    }

    /// Marks the scenario skipped.
    pub fn skip(&mut self, why: impl Into<String>) {
        self.skipped.get_or_insert(why.into());
    }

    /// Fails when `ok` is false.
    pub fn expect(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.fail(problem());
        }
    }

    /// The outcome these findings add up to.
    pub fn outcome(&self) -> Outcome {
        if !self.failures.is_empty() {
            Outcome::Fail
        } else if self.skipped.is_some() {
            Outcome::Skip
        } else {
            Outcome::Pass
        }
    }
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub name: String,
    /// Its one-line purpose.
    pub purpose: String,
    /// The PROTOCOL.md section it checks.
    pub section: String,
    /// Pass, fail or skip.
    pub outcome: Outcome,
    /// Wall time it took, in milliseconds.
    pub duration_ms: u64,
    /// What it found.
    #[serde(flatten)]
    pub findings: Findings,
}

impl ScenarioResult {
    /// The reason shown in the summary: the first failure, or the skip reason.
    pub fn headline(&self) -> Option<&str> {
        self.findings
            .failures
            .first()
            .or(self.findings.skipped.as_ref())
            .map(String::as_str)
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `bot` or `bridge`.
    pub suite: String,
    /// What was tested (the bot's URL or the bridge's API URL).
    pub target: String,
    /// Every selected scenario, in the order they were listed.
    pub scenarios: Vec<ScenarioResult>,
}

impl Report {
    /// (passed, failed, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |o| self.scenarios.iter().filter(|s| s.outcome == o).count();
        (n(Outcome::Pass), n(Outcome::Fail), n(Outcome::Skip))
    }

    /// True when every selected scenario passed (and at least one ran).
    pub fn all_passed(&self) -> bool {
        !self.scenarios.is_empty() && self.scenarios.iter().all(|s| s.outcome == Outcome::Pass)
    }

    /// The summary table and closing line, as printed at the end of a run.
    pub fn summary(&self) -> String {
        let width = self
            .scenarios
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(8)
            .max(8);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{:<width$}  result  time    first failure, or what was measured",
            "scenario"
        );
        let _ = writeln!(out, "{}", "-".repeat(width + 40));
        for s in &self.scenarios {
            let measured: Vec<String> = s
                .findings
                .measurements
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let measured = measured.join(", ");
            let why = s.headline().unwrap_or(&measured);
            let _ = writeln!(
                out,
                "{:<width$}  {}    {:>5.1}s  {}",
                s.name,
                s.outcome.label(),
                s.duration_ms as f64 / 1000.0,
                one_line(why, 160)
            );
        }
        let (p, f, k) = self.counts();
        let _ = writeln!(out, "\nconformance: {p} passed, {f} failed, {k} skipped");
        out
    }

    /// The report as JUnit XML: one `testsuite`, one `testcase` per scenario.
    pub fn junit(&self) -> String {
        let (_, f, k) = self.counts();
        let total: u64 = self.scenarios.iter().map(|s| s.duration_ms).sum();
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            x,
            "<testsuites name=\"conformance\" tests=\"{}\" failures=\"{f}\" skipped=\"{k}\" time=\"{:.3}\">",
            self.scenarios.len(),
            total as f64 / 1000.0
        );
        let _ = writeln!(
            x,
            "  <testsuite name=\"conformance {}\" tests=\"{}\" failures=\"{f}\" errors=\"0\" skipped=\"{k}\" time=\"{:.3}\">",
            xml(&self.suite),
            self.scenarios.len(),
            total as f64 / 1000.0
        );
        let _ = writeln!(
            x,
            "    <properties><property name=\"target\" value=\"{}\"/></properties>",
            xml(&self.target)
        );
        for s in &self.scenarios {
            let _ = write!(
                x,
                "    <testcase classname=\"conformance.{}\" name=\"{}\" time=\"{:.3}\">",
                xml(&self.suite),
                xml(&s.name),
                s.duration_ms as f64 / 1000.0
            );
            match s.outcome {
                Outcome::Fail => {
                    let _ = write!(
                        x,
                        "\n      <failure message=\"{}\">{}</failure>\n    ",
                        xml(s.headline().unwrap_or("")),
                        xml(&s.findings.failures.join("\n"))
                    );
                }
                Outcome::Skip => {
                    let _ = write!(
                        x,
                        "\n      <skipped message=\"{}\"/>\n    ",
                        xml(s.headline().unwrap_or(""))
                    );
                }
                Outcome::Pass => {}
            }
            let mut out = format!("{} ({})\n", s.purpose, s.section);
            for (k, v) in &s.findings.measurements {
                let _ = writeln!(out, "{k}: {v}");
            }
            for n in &s.findings.notes {
                let _ = writeln!(out, "note: {n}");
            }
            let _ = writeln!(x, "<system-out>{}</system-out></testcase>", xml(&out));
        }
        x.push_str("  </testsuite>\n</testsuites>\n");
        x
    }

    /// The report as pretty JSON.
    pub fn json(&self) -> String {
        let (p, f, k) = self.counts();
        let v = serde_json::json!({
            "suite": self.suite,
            "target": self.target,
            "passed": p,
            "failed": f,
            "skipped": k,
            "scenarios": self.scenarios.iter().map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                if let Some(obj) = v.as_object_mut() {
                    let m: serde_json::Map<String, serde_json::Value> = s
                        .findings
                        .measurements
                        .iter()
                        .map(|(k, val)| (k.clone(), serde_json::Value::String(val.clone())))
                        .collect();
                    obj.insert("measurements".into(), serde_json::Value::Object(m));
                }
                v
            }).collect::<Vec<_>>(),
        });
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// The progress line printed when a scenario finishes, with its failures and
/// measurements indented below.
pub fn progress_line(index: usize, total: usize, r: &ScenarioResult) -> String {
    let digits = total.to_string().len();
    let mut s = format!(
        "[{index:>digits$}/{total}] {} {:<22} {:>5.1}s  {}",
        r.outcome.label(),
        r.name,
        r.duration_ms as f64 / 1000.0,
        r.purpose
    );
    for f in &r.findings.failures {
        let _ = write!(s, "\n      ✗ {f}");
    }
    if let Some(why) = &r.findings.skipped {
        let _ = write!(s, "\n      - skipped: {why}");
    }
    if !r.findings.measurements.is_empty() {
        let m: Vec<String> = r
            .findings
            .measurements
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = write!(s, "\n      measured: {}", m.join(", "));
    }
    for n in &r.findings.notes {
        let _ = write!(s, "\n      note: {n}");
    }
    s
}

/// Where progress lines go.
pub trait Progress: Send + Sync {
    /// A scenario finished.
    fn finished(&self, index: usize, total: usize, result: &ScenarioResult);
}

/// Prints progress lines to standard output.
pub struct StdoutProgress;

impl Progress for StdoutProgress {
    fn finished(&self, index: usize, total: usize, result: &ScenarioResult) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", progress_line(index, total, result));
        let _ = out.flush();
    }
}

/// Prints nothing (library use, tests).
pub struct QuietProgress;

impl Progress for QuietProgress {
    fn finished(&self, _: usize, _: usize, _: &ScenarioResult) {}
}

/// Milliseconds of a duration, rounded.
pub fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry other control characters at all.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, f: Findings) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            purpose: "does a thing".into(),
            section: "§3".into(),
            outcome: f.outcome(),
            duration_ms: 1500,
            findings: f,
        }
    }

    fn report() -> Report {
        let mut bad = Findings::default();
        bad.fail("mark \"a\" came back <early> & \"wrong\"");
        bad.fail("second problem");
        let mut skip = Findings::default();
        skip.skip("the bot sent no audio");
        let mut ok = Findings::default();
        ok.measure("media rate", "50.0/s");
        Report {
            suite: "bridge".into(),
            target: "http://127.0.0.1:1".into(),
            scenarios: vec![result("ok", ok), result("bad", bad), result("skip", skip)],
        }
    }

    #[test]
    fn summary_shows_each_scenario_and_the_closing_counts() {
        let r = report();
        let s = r.summary();
        assert!(
            s.contains("bad       FAIL      1.5s  mark \"a\" came back"),
            "{s}"
        );
        assert!(s.contains("skip      SKIP"), "{s}");
        assert!(
            s.ends_with("conformance: 1 passed, 1 failed, 1 skipped\n"),
            "{s}"
        );
        assert!(!r.all_passed());
    }

    #[test]
    fn junit_escapes_and_counts() {
        let x = report().junit();
        assert!(
            x.contains("tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""),
            "{x}"
        );
        assert!(x.contains("<failure message=\"mark &quot;a&quot; came back &lt;early&gt; &amp; &quot;wrong&quot;\">"), "{x}");
        assert!(
            x.contains("<skipped message=\"the bot sent no audio\"/>"),
            "{x}"
        );
        assert!(x.contains("media rate: 50.0/s"), "{x}");
    }

    #[test]
    fn json_has_outcomes_and_measurements() {
        let v: serde_json::Value = serde_json::from_str(&report().json()).unwrap();
        assert_eq!(v["failed"], 1);
        assert_eq!(v["scenarios"][1]["outcome"], "fail");
        assert_eq!(v["scenarios"][1]["failures"][1], "second problem");
        assert_eq!(v["scenarios"][0]["measurements"]["media rate"], "50.0/s");
    }
}
