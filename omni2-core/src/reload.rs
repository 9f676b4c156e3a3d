//! Configuration hot reload: on a change of the config file (debounced) or SIGHUP, the file
//! is checked completely, then its `servers` replace the running ones: servers added,
//! removed or changed go in or out at once, unchanged ones keep their health, breaker and
//! client, and status WebSockets stay open (they get `server_added` / `server_removed`).
//!
//! A file with problems is refused: the servers in force stay, every problem is logged on
//! its own line, and `omni2_config_reloads_total{result="failure"}` and
//! `omni2_config_reload_problems_total` count it. Only `servers` is reloaded: a change to
//! any other top-level setting is logged as needing a restart (and not applied).
//!
//! Triggers are `config_plumbing::watch`'s, the same as the sidecar's.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use config_plumbing::watch::{Trigger, Triggers};
use config_plumbing::{Env, Problems};

use crate::config::{Config, ServerConfig};
use crate::coordinator::ReloadSummary;
use crate::mcp::{HttpMcpClient, McpClient};
use crate::shared::Shared;

/// How long file events settle before a reload: editors write in several steps.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Makes the MCP client of a server a reload adds or changes.
pub type ClientFactory = Arc<dyn Fn(&ServerConfig) -> Arc<dyn McpClient> + Send + Sync>;

/// Streamable-HTTP clients sharing one HTTP client (what [`crate::Omni2::from_config`] makes).
pub fn http_clients() -> ClientFactory {
    let http = HttpMcpClient::default_http_client();
    Arc::new(move |s: &ServerConfig| {
        let http = if s.credentials.is_empty() {
            http.clone()
        } else {
            HttpMcpClient::http_client_with(&s.credentials).unwrap_or_else(|e| {
                // Fails closed: without its credentials the server refuses us.
                tracing::error!(server = %s.name, error = %e, "Credentials unusable.");
                http.clone()
            })
        };
        Arc::new(HttpMcpClient::new(&s.url, s.protocol, http)) as Arc<dyn McpClient>
    })
}

/// Why a reload did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file has problems (each one is logged).
    #[error("{0}")]
    Problems(Problems),
    /// The coordinator is gone (shutdown, or it died).
    #[error("the health coordinator is not running")]
    Unavailable,
}

/// Checks `text` and, if good, installs its servers. Logged and counted either way;
/// `previous`: the text in force before (to name settings that need a restart).
pub async fn reload_text(
    shared: &Arc<Shared>,
    text: &str,
    previous: Option<&str>,
    env: &(dyn Env + Sync),
    clients: &ClientFactory,
) -> Result<ReloadSummary, ReloadError> {
    let config = match Config::from_yaml(text, env) {
        Ok(c) => c,
        Err(problems) => {
            refuse(shared, &problems);
            return Err(ReloadError::Problems(problems));
        }
    };
    if let Some(previous) = previous {
        let keys = restart_only_changes(previous, text);
        if !keys.is_empty() {
            tracing::warn!(
                settings = %keys.join(", "),
                "Only `servers` is reloaded: these settings take effect after a restart."
            );
        }
    }
    let factory = clients.clone();
    let summary = shared
        .registry
        .reload(config.servers, Box::new(move |s| factory(s)))
        .await
        .map_err(|_| {
            shared
                .metrics
                .config_reloads
                .with_label_values(&["failure"])
                .inc();
            tracing::error!("Configuration not reloaded: the health coordinator is not running.");
            ReloadError::Unavailable
        })?;
    // Results of a server that went, or now has another configuration, are not its own.
    for name in summary.removed.iter().chain(&summary.changed) {
        shared.cache.invalidate(name, None);
    }
    shared
        .metrics
        .config_reloads
        .with_label_values(&["success"])
        .inc();
    shared
        .metrics
        .config_reload_last_success
        .set(i64::try_from(crate::identity::unix_now()).unwrap_or(i64::MAX));
    tracing::info!(
        added = ?summary.added,
        removed = ?summary.removed,
        changed = ?summary.changed,
        unchanged = summary.unchanged.len(),
        "Configuration reloaded."
    );
    Ok(summary)
}

/// Reads `path` and [`reload_text`]s it; an unreadable file is a refused reload.
pub async fn reload_file(
    shared: &Arc<Shared>,
    path: &Path,
    previous: Option<&str>,
    env: &(dyn Env + Sync),
    clients: &ClientFactory,
) -> Result<ReloadSummary, ReloadError> {
    match std::fs::read_to_string(path) {
        Ok(text) => reload_text(shared, &text, previous, env, clients).await,
        Err(e) => {
            let problems = Problems::one(path.display().to_string(), format!("cannot read: {e}"));
            refuse(shared, &problems);
            Err(ReloadError::Problems(problems))
        }
    }
}

fn refuse(shared: &Shared, problems: &Problems) {
    shared
        .metrics
        .config_reloads
        .with_label_values(&["failure"])
        .inc();
    shared
        .metrics
        .config_reload_problems
        .inc_by(problems.len() as u64);
    for p in &problems.0 {
        tracing::error!(problem = %p, "Configuration problem.");
    }
    tracing::error!(
        problems = problems.len(),
        "Configuration refused; the last good configuration stays in force."
    );
}

/// Top-level keys other than `servers` whose YAML differs between the two texts.
fn restart_only_changes(before: &str, after: &str) -> Vec<String> {
    let top = |text: &str| -> serde_yaml::Mapping {
        match serde_yaml::from_str::<serde_yaml::Value>(text) {
            Ok(serde_yaml::Value::Mapping(m)) => m,
            _ => serde_yaml::Mapping::new(),
        }
    };
    let (before, after) = (top(before), top(after));
    let mut keys: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter_map(|k| k.as_str())
        .filter(|k| *k != "servers")
        .filter(|k| before.get(*k) != after.get(*k))
        .map(str::to_owned)
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Reloads `path` on file changes and SIGHUP until the future is dropped. Without a path
/// (the embedded config) SIGHUP is still handled (logged: nothing to reload) instead of
/// ending the process. Should never return; the caller supervises it.
pub async fn watch(
    shared: Arc<Shared>,
    path: Option<PathBuf>,
    env: Box<dyn Env + Send + Sync>,
    clients: ClientFactory,
) -> std::io::Result<()> {
    let mut triggers = Triggers::new(DEBOUNCE)?;
    if let Some(p) = &path {
        triggers.watch_dir_of(p);
    }
    // The text in force, and the hash of the last text tried (a refused file is not
    // tried again until it changes, or SIGHUP).
    let mut in_force = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
    let mut last_tried = in_force.as_deref().map(hash);
    while let Some(trigger) = triggers.next().await {
        let Some(path) = &path else {
            tracing::info!("SIGHUP: no --config file, nothing to reload.");
            continue;
        };
        let text = std::fs::read_to_string(path);
        if trigger == Trigger::Files {
            match &text {
                Ok(t) if Some(hash(t)) == last_tried => continue,
                Ok(_) => {}
                // Gone for a moment while an editor or Kubernetes swaps it: wait for the next
                // event rather than refuse (SIGHUP reports it).
                Err(_) => continue,
            }
        } else {
            tracing::info!("SIGHUP: reloading.");
        }
        let result = match &text {
            Ok(t) => {
                last_tried = Some(hash(t));
                reload_text(&shared, t, in_force.as_deref(), env.as_ref(), &clients).await
            }
            Err(_) => reload_file(&shared, path, None, env.as_ref(), &clients).await,
        };
        if result.is_ok() {
            in_force = text.ok();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_changed_settings_other_than_servers() {
        let before = "listen: 127.0.0.1:1\nservers: []\nroles: {control: [admin]}\n";
        let after = "listen: 127.0.0.1:2\nservers: [{name: a, url: 'http://h/'}]\nroles: {control: [admin]}\ncache: {max_bytes: 1MiB}\n";
        assert_eq!(restart_only_changes(before, after), ["cache", "listen"]);
        assert!(restart_only_changes(before, before).is_empty());
    }
}
