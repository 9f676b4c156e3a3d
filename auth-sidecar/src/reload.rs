//! Hot reload: on a file change (debounced) or SIGHUP, the config is validated completely,
//! then swapped in atomically; requests already running finish on the config they loaded.
//! A config with problems is refused: the last good one keeps serving, every problem is
//! logged, and `auth_sidecar_config_reloads_total{result="failure"}` counts it. The
//! revocation file is watched the same way and reloaded on its own.
//!
//! The watcher watches the directories holding the files (editors and Kubernetes replace
//! files by rename or symlink swap, which a watch on the file itself would miss) and acts
//! only when a file's content actually changed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};

use crate::clock::unix_now;
use crate::config::{Env, Problems, Runtime, short_hash};
use crate::http::AppState;

/// How long file events settle before a reload: editors write in several steps.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Reloads the config file into `state`. Success: the new config answers from now on, with
/// the unchanged issuers' keys, cache and rate-limit buckets carried over. Failure: nothing
/// changes. Either way the attempt is logged and counted.
pub fn reload(state: &AppState, path: &Path, env: &dyn Env) -> Result<(), Problems> {
    match Runtime::load(path, env) {
        Ok(mut rt) => {
            let old = state.active.load();
            // Sockets and workers are set up once at start.
            if (rt.listen, rt.admin_listen, rt.workers)
                != (old.rt.listen, old.rt.admin_listen, old.rt.workers)
            {
                tracing::warn!(
                    "listen, admin_listen and workers take effect only after a restart."
                );
            }
            rt.adopt(&old.rt);
            drop(old);
            for w in &rt.warnings {
                tracing::warn!(warning = %w, "Configuration warning.");
            }
            let (hash, rules) = (rt.hash.clone(), rt.policy.rules.len());
            state.install(rt);
            state
                .metrics
                .config_reloads
                .with_label_values(&["success"])
                .inc();
            tracing::info!(path = %path.display(), config_hash = %hash, rules, "Configuration reloaded.");
            Ok(())
        }
        Err(problems) => {
            state
                .metrics
                .config_reloads
                .with_label_values(&["failure"])
                .inc();
            tracing::error!(
                path = %path.display(),
                problems = %problems,
                "Configuration refused; the last good configuration keeps serving."
            );
            Err(problems)
        }
    }
}

/// Re-reads the active config's revocation file; on problems the current list stays.
pub fn reload_revocations(state: &AppState) -> Result<(), Problems> {
    let active = state.active.load();
    let result = active.rt.revocation.reload(unix_now());
    let label = if result.is_ok() { "success" } else { "failure" };
    state
        .metrics
        .revocation_reloads
        .with_label_values(&[label])
        .inc();
    match &result {
        Ok(()) => tracing::info!("Revocation list reloaded."),
        Err(problems) => tracing::error!(
            problems = %problems,
            "Revocation list refused; the last good list stays in force."
        ),
    }
    result
}

/// Why the watcher woke up.
enum Wake {
    Files,
    Signal,
}

/// Watches the config file, the revocation file it names and SIGHUP, reloading until the
/// returned future is dropped. Runs inside a tokio runtime. It should never return; `run`
/// supervises it (restarts, then ends the process).
pub async fn watch(
    state: Arc<AppState>,
    path: PathBuf,
    env: Box<dyn Env + Send + Sync>,
) -> std::io::Result<()> {
    let (files, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut debouncer = new_debouncer(DEBOUNCE, move |events: DebounceEventResult| {
        if events.is_ok() {
            let _ = files.send(Wake::Files);
        }
    })
    .map_err(std::io::Error::other)?;
    // Polled in this task, not a helper task: a restarted watcher leaves nothing behind.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;

    let mut watched = HashSet::new();
    let mut watch_dir_of = |file: &Path, watched: &mut HashSet<PathBuf>| {
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        if watched.insert(dir.clone())
            && let Err(e) = debouncer.watcher().watch(&dir, RecursiveMode::NonRecursive)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "Cannot watch for changes; SIGHUP still reloads.");
        }
    };
    let revocation_path =
        |state: &AppState| state.active.load().rt.revocation.path().map(Path::to_owned);
    watch_dir_of(&path, &mut watched);
    let mut revocations = revocation_path(&state);
    if let Some(r) = &revocations {
        watch_dir_of(r, &mut watched);
    }

    loop {
        let wake = tokio::select! {
            wake = rx.recv() => match wake {
                Some(wake) => wake,
                None => break,
            },
            signal = hangup.recv() => match signal {
                Some(()) => Wake::Signal,
                None => break,
            },
        };
        #[cfg(any(test, feature = "test-util"))]
        if state
            .test_hooks
            .panic_watcher
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("test hook: the config watcher panics");
        }
        let config_changed = match wake {
            Wake::Signal => {
                tracing::info!("SIGHUP: reloading.");
                true
            }
            Wake::Files => std::fs::read_to_string(&path)
                .is_ok_and(|text| short_hash(&text) != state.active.load().rt.hash),
        };
        if config_changed && reload(&state, &path, env.as_ref()).is_ok() {
            // The new config loaded its revocation file itself.
            revocations = revocation_path(&state);
            if let Some(r) = &revocations {
                watch_dir_of(r, &mut watched);
            }
            continue;
        }
        let changed = state.active.load().rt.revocation.is_file_changed();
        if revocations.is_some() && (changed || matches!(wake, Wake::Signal)) {
            let _ = reload_revocations(&state);
        }
    }
    Ok(())
}
