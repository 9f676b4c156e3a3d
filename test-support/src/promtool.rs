//! The real `promtool` (Debian `prometheus`, installed by `.ci/run`). A missing promtool is
//! a test failure, never a silent pass: the metrics contract is only checked if it runs.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const INSTALL: &str = "promtool is required (apt-get install prometheus; .ci/run installs it)";

const PROMTOOL: &str = "promtool";

fn promtool(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// `promtool check metrics` on an exposition text: `Err` with promtool's findings (lint
/// warnings count). Panics when promtool cannot be run.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    check_metrics_with(PROMTOOL, text)
}

fn check_metrics_with(program: &str, text: &str) -> Result<(), String> {
    let mut child = promtool(program)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{INSTALL}: cannot run promtool: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("write the exposition to promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && findings.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool: {}", findings.trim()))
    }
}

/// Panics with promtool's findings unless the exposition is clean.
#[track_caller]
pub fn assert_promtool_metrics(text: &str) {
    if let Err(findings) = promtool_check_metrics(text) {
        panic!("{findings}\nexposition:\n{text}");
    }
}

/// `promtool check config` on a Prometheus configuration file; panics with its output.
#[track_caller]
pub fn assert_promtool_config(path: &Path) {
    let out = promtool(PROMTOOL)
        .args(["check", "config"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{INSTALL}: cannot run promtool: {e}"));
    assert!(
        out.status.success(),
        "promtool check config {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_exposition_passes() {
        assert_promtool_metrics("# HELP up_total Ups.\n# TYPE up_total counter\nup_total 1\n");
    }

    #[test]
    #[should_panic(expected = "promtool is required")]
    fn a_missing_promtool_fails_loudly() {
        let _ = check_metrics_with("promtool-not-installed-here", "up_total 1\n");
    }

    #[test]
    fn a_lint_finding_fails() {
        // A counter without the _total suffix and without HELP: promtool's linter objects.
        let err = promtool_check_metrics("# TYPE ups counter\nups 1\n").expect_err("lint");
        assert!(err.contains("ups"), "{err}");
    }
}
