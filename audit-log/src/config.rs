//! The `audit:` block, shared by both binaries:
//!
//! ```yaml
//! audit:
//!   sink: file            # stdout | file; absent: audit off
//!   file: /var/log/omni2/audit.log
//!   max_bytes: 10MiB      # rotate before a line would take the file past this
//!   keep: 5               # rotated files kept: audit.log.1 … audit.log.5
//!   queue: 10000          # lines waiting for the writer; past it, dropped and counted
//!   allows: all           # sidecar only: all | none | "1/N" (denials are always audited)
//!   arguments: hash       # omni2 only: hash | full
//! ```

use std::path::{Path, PathBuf};

use config_plumbing::{Problems, RawSize};
use serde::Deserialize;

/// The block as written; every field optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct RawAudit {
    pub sink: Option<String>,
    pub file: Option<PathBuf>,
    pub max_bytes: Option<RawSize>,
    pub keep: Option<i64>,
    pub queue: Option<i64>,
    pub allows: Option<String>,
    pub arguments: Option<String>,
}

/// Which binary reads the block: `allows` is the sidecar's, `arguments` omni2's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Sidecar,
    Omni2,
}

/// Where the lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSettings {
    Stdout,
    /// `path`, rotated to `path.1` … `path.keep` before a line would pass `max_bytes`.
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
    },
}

/// Which allows the sidecar audits. Denials are always audited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allows {
    All,
    None,
    /// One allow in `n` (every `n`-th, counted across workers).
    OneIn(u64),
}

/// What omni2 records of tool-call arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arguments {
    /// SHA-256 of the canonical JSON (object keys sorted at every depth).
    #[default]
    Hash,
    /// The hash and the canonical JSON text itself.
    Full,
}

/// A checked `audit:` block with audit on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    pub sink: SinkSettings,
    /// Queue bound, in lines.
    pub queue: usize,
    pub allows: Allows,
    pub arguments: Arguments,
}

pub const DEFAULT_MAX_BYTES: u64 = 10 << 20;
pub const DEFAULT_KEEP: u32 = 5;
pub const DEFAULT_QUEUE: usize = 10_000;
/// Bounds that catch a misplaced digit, not real limits.
const MAX_KEEP: i64 = 1000;
const MAX_QUEUE: i64 = 10_000_000;
/// A file smaller than this would rotate on nearly every line.
const MIN_MAX_BYTES: u64 = 4096;

/// Checks the block found at `path` (usually `audit`); relative file paths resolve against
/// `base`. `None` when audit is off (no `sink`) or when a problem was pushed.
pub fn compile(
    raw: &RawAudit,
    path: &str,
    binary: Binary,
    base: &Path,
    problems: &mut Problems,
) -> Option<AuditSettings> {
    let at = |field: &str| format!("{path}.{field}");
    let before = problems.len();
    match binary {
        Binary::Sidecar if raw.arguments.is_some() => problems.push(
            at("arguments"),
            "only omni2 records tool arguments; the sidecar has none",
        ),
        Binary::Omni2 if raw.allows.is_some() => problems.push(
            at("allows"),
            "only the sidecar samples allows; omni2 audits every tool call",
        ),
        _ => {}
    }
    let allows = match raw.allows.as_deref() {
        None => Allows::All,
        Some(text) => parse_allows(text).unwrap_or_else(|e| {
            problems.push(at("allows"), e);
            Allows::All
        }),
    };
    let arguments = match raw.arguments.as_deref() {
        None | Some("hash") => Arguments::Hash,
        Some("full") => Arguments::Full,
        Some(other) => {
            problems.push(
                at("arguments"),
                format!("invalid value {other:?}: expected hash or full"),
            );
            Arguments::Hash
        }
    };
    let queue = match raw.queue {
        None => DEFAULT_QUEUE,
        Some(n) if (1..=MAX_QUEUE).contains(&n) => n as usize,
        Some(n) => {
            problems.push(
                at("queue"),
                format!("invalid value {n}: must be 1 to {MAX_QUEUE}"),
            );
            DEFAULT_QUEUE
        }
    };
    let max_bytes = config_plumbing::size(
        raw.max_bytes.as_ref(),
        DEFAULT_MAX_BYTES,
        &at("max_bytes"),
        problems,
    );
    if max_bytes < MIN_MAX_BYTES {
        problems.push(
            at("max_bytes"),
            format!("{max_bytes} bytes is too small: at least {MIN_MAX_BYTES}"),
        );
    }
    let keep = match raw.keep {
        None => DEFAULT_KEEP,
        Some(n) if (1..=MAX_KEEP).contains(&n) => n as u32,
        Some(n) => {
            problems.push(
                at("keep"),
                format!("invalid value {n}: must be 1 to {MAX_KEEP}"),
            );
            DEFAULT_KEEP
        }
    };
    let file_only = |problems: &mut Problems, field: &str, given: bool| {
        if given {
            problems.push(at(field), "only with sink: file");
        }
    };
    let sink = match raw.sink.as_deref() {
        None => {
            // Settings without a sink are a half-done config, not "off".
            for (field, given) in [
                ("file", raw.file.is_some()),
                ("max_bytes", raw.max_bytes.is_some()),
                ("keep", raw.keep.is_some()),
                ("queue", raw.queue.is_some()),
                ("allows", raw.allows.is_some()),
                ("arguments", raw.arguments.is_some()),
            ] {
                if given {
                    problems.push(
                        at(field),
                        "set, but audit.sink is not: add sink: stdout or sink: file",
                    );
                }
            }
            None
        }
        Some("stdout") => {
            file_only(problems, "file", raw.file.is_some());
            file_only(problems, "max_bytes", raw.max_bytes.is_some());
            file_only(problems, "keep", raw.keep.is_some());
            Some(SinkSettings::Stdout)
        }
        Some("file") => match &raw.file {
            None => {
                problems.push(at("file"), "required with sink: file");
                None
            }
            Some(file) => {
                let path = base.join(file);
                check_directory(&path, &at("file"), problems);
                Some(SinkSettings::File {
                    path,
                    max_bytes,
                    keep,
                })
            }
        },
        Some(other) => {
            problems.push(
                at("sink"),
                format!("invalid value {other:?}: expected stdout or file"),
            );
            None
        }
    };
    if problems.len() > before {
        return None;
    }
    Some(AuditSettings {
        sink: sink?,
        queue,
        allows,
        arguments,
    })
}

/// The file is opened by the writer (a FIFO's open blocks), so only the directory is
/// checked here: a typo in it is a config error, not a stream of failed writes.
fn check_directory(file: &Path, path: &str, problems: &mut Problems) {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        problems.push(
            path,
            format!(
                "directory {} does not exist (the file is created, its directory is not)",
                dir.display()
            ),
        );
    } else if file.is_dir() {
        problems.push(path, format!("{} is a directory", file.display()));
    }
}

fn parse_allows(text: &str) -> Result<Allows, String> {
    let bad = || format!("invalid value {text:?}: expected all, none or \"1/N\" (N >= 1)");
    match text.trim() {
        "all" => Ok(Allows::All),
        "none" => Ok(Allows::None),
        ratio => {
            let (one, n) = ratio.split_once('/').ok_or_else(bad)?;
            let n: u64 = n.trim().parse().map_err(|_| bad())?;
            if one.trim() != "1" || n == 0 {
                return Err(bad());
            }
            Ok(if n == 1 {
                Allows::All
            } else {
                Allows::OneIn(n)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str, binary: Binary) -> Result<Option<AuditSettings>, Problems> {
        let raw: RawAudit = serde_yaml::from_str(yaml).expect("yaml");
        let mut problems = Problems::default();
        let dir = std::env::temp_dir();
        let settings = compile(&raw, "audit", binary, &dir, &mut problems);
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(problems)
        }
    }

    #[test]
    fn off_by_default_and_defaults_when_on() {
        assert_eq!(check("{}", Binary::Sidecar), Ok(None));
        let s = check("sink: file\nfile: audit.log", Binary::Sidecar)
            .expect("valid")
            .expect("on");
        assert_eq!(s.queue, DEFAULT_QUEUE);
        assert_eq!(s.allows, Allows::All);
        assert_eq!(
            s.sink,
            SinkSettings::File {
                path: std::env::temp_dir().join("audit.log"),
                max_bytes: DEFAULT_MAX_BYTES,
                keep: DEFAULT_KEEP
            }
        );
        let s = check("sink: stdout\nallows: 1/100\nqueue: 5", Binary::Sidecar)
            .expect("valid")
            .expect("on");
        assert_eq!((s.allows, s.queue), (Allows::OneIn(100), 5));
        let s = check("sink: stdout\narguments: full", Binary::Omni2)
            .expect("valid")
            .expect("on");
        assert_eq!(s.arguments, Arguments::Full);
    }

    #[test]
    fn every_bad_value_names_its_field() {
        let cases = [
            ("sink: syslog", Binary::Sidecar, "audit.sink"),
            ("sink: file", Binary::Sidecar, "audit.file"),
            (
                "sink: file\nfile: /nonexistent-dir/a.log",
                Binary::Sidecar,
                "audit.file",
            ),
            (
                "sink: file\nfile: a.log\nmax_bytes: 10 parsecs",
                Binary::Sidecar,
                "audit.max_bytes",
            ),
            (
                "sink: file\nfile: a.log\nmax_bytes: 100",
                Binary::Sidecar,
                "audit.max_bytes",
            ),
            (
                "sink: file\nfile: a.log\nkeep: 0",
                Binary::Sidecar,
                "audit.keep",
            ),
            ("sink: stdout\nqueue: 0", Binary::Sidecar, "audit.queue"),
            ("sink: stdout\nallows: 2/3", Binary::Sidecar, "audit.allows"),
            ("sink: stdout\nallows: 1/0", Binary::Sidecar, "audit.allows"),
            (
                "sink: stdout\nallows: some",
                Binary::Sidecar,
                "audit.allows",
            ),
            ("sink: stdout\nallows: all", Binary::Omni2, "audit.allows"),
            (
                "sink: stdout\narguments: hash",
                Binary::Sidecar,
                "audit.arguments",
            ),
            (
                "sink: stdout\narguments: plain",
                Binary::Omni2,
                "audit.arguments",
            ),
            ("sink: stdout\nkeep: 3", Binary::Sidecar, "audit.keep"),
            ("file: a.log", Binary::Sidecar, "audit.file"),
        ];
        for (yaml, binary, field) in cases {
            let problems = check(yaml, binary).expect_err(yaml);
            assert!(problems.has(field), "{yaml}: {problems}");
        }
    }

    #[test]
    fn allows_syntax() {
        assert_eq!(parse_allows("1/1"), Ok(Allows::All));
        assert_eq!(parse_allows(" 1 / 7 "), Ok(Allows::OneIn(7)));
        assert_eq!(parse_allows("none"), Ok(Allows::None));
    }
}
