//! Reload triggers (feature `watch`): a change in the directory of a watched file
//! (debounced), or SIGHUP.
//!
//! Directories, not files: editors and Kubernetes replace files by rename or symlink swap,
//! which a watch on the file itself would miss. A trigger says only that something may have
//! changed; the caller compares contents before acting.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

/// Why a reload may be due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Something changed in a watched directory.
    Files,
    /// SIGHUP: reload whatever the contents.
    Signal,
}

/// File-change and SIGHUP triggers. Installing it replaces SIGHUP's default action
/// (terminate) for the whole process.
pub struct Triggers {
    /// `None` when the OS refused a watcher (e.g. the inotify limit): SIGHUP only.
    debouncer: Option<Debouncer<RecommendedWatcher>>,
    files: mpsc::UnboundedReceiver<()>,
    hangup: Signal,
    watched: HashSet<PathBuf>,
}

impl std::fmt::Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triggers")
            .field("watched", &self.watched)
            .finish()
    }
}

impl Triggers {
    /// Triggers with file events settling for `debounce` (editors write in several steps).
    /// Must run inside a tokio runtime. Fails only when SIGHUP cannot be handled; a file
    /// watcher the OS refuses is logged, and SIGHUP still works.
    pub fn new(debounce: Duration) -> std::io::Result<Self> {
        let (tx, files) = mpsc::unbounded_channel();
        let debouncer = new_debouncer(debounce, move |events: DebounceEventResult| {
            if events.is_ok() {
                let _ = tx.send(());
            }
        })
        .inspect_err(|e| {
            tracing::warn!(error = %e, "Cannot watch files for changes; SIGHUP still reloads.");
        })
        .ok();
        Ok(Self {
            debouncer,
            files,
            hangup: signal(SignalKind::hangup())?,
            watched: HashSet::new(),
        })
    }

    /// Also wakes on changes in `file`'s directory. A directory that cannot be watched is
    /// logged: SIGHUP still works.
    pub fn watch_dir_of(&mut self, file: &Path) {
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let Some(debouncer) = self.debouncer.as_mut() else {
            return;
        };
        if self.watched.insert(dir.clone())
            && let Err(e) = debouncer.watcher().watch(&dir, RecursiveMode::NonRecursive)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "Cannot watch for changes; SIGHUP still reloads.");
        }
    }

    /// The next trigger; `None` once SIGHUP can no longer be delivered. Without a file
    /// watcher (or once it stopped) only SIGHUP wakes.
    pub async fn next(&mut self) -> Option<Trigger> {
        let has_files = self.debouncer.is_some();
        tokio::select! {
            Some(()) = self.files.recv(), if has_files => Some(Trigger::Files),
            signal = self.hangup.recv() => signal.map(|()| Trigger::Signal),
        }
    }
}
