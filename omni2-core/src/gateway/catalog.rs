//! The tools `/mcp` lists: every listed server's tools, renamed `server<sep>tool`, each
//! with the roles that may call it. Built once per coordinator snapshot, then filtered
//! per caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{JsonObject, Tool};
use serde_json::Value;

use crate::breaker::CircuitState;
use crate::config::Config;
use crate::coordinator::{ServerStatus, Snapshot};
use crate::health::HealthState;
use crate::identity::Identity;
use crate::mcp::ToolInfo;

/// Is a server's tool list offered? Only while it answers (healthy or degraded) and its
/// breaker is not open: a listed tool should be callable.
pub fn is_listed(status: &ServerStatus) -> bool {
    matches!(status.state, HealthState::Healthy | HealthState::Degraded)
        && status.circuit != CircuitState::Open
}

/// One listed tool.
#[derive(Debug)]
struct Entry {
    tool: Tool,
    /// Who may call it (empty: any authenticated identity).
    roles: Arc<[String]>,
    /// Its input schema has an `x-mcp-header` somewhere: calls may need `Mcp-Param-*`
    /// headers checked against their arguments (rmcp does that; the fast path does not).
    mirrors_params: bool,
}

/// The namespaced tools of one snapshot.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    /// The catalog of `snapshot` under `config` (separator, per-tool roles of
    /// `config.servers`, found by name).
    pub fn build(config: &Config, snapshot: &Snapshot) -> Self {
        Self::build_with(config, snapshot, |server, tool| {
            let server = config.servers.iter().find(|s| s.name == server)?;
            server.tools.get(tool)?.roles.as_deref().map(Into::into)
        })
    }

    /// The catalog of `snapshot`, with each tool's own `roles` from `own_roles(server, tool)`
    /// (`None`: `roles.tool_call`). Servers are looked up by name, never by position: a
    /// reload changes the server list after startup.
    pub fn build_with(
        config: &Config,
        snapshot: &Snapshot,
        own_roles: impl Fn(&str, &str) -> Option<Arc<[String]>>,
    ) -> Self {
        let sep = &config.gateway.separator;
        let default_roles: Arc<[String]> = config.roles.tool_call.clone().into();
        let mut catalog = Self::default();
        for status in snapshot.servers.iter() {
            if !is_listed(status) {
                continue;
            }
            for info in status.tools.iter() {
                let roles =
                    own_roles(&status.name, &info.name).unwrap_or_else(|| default_roles.clone());
                let mut tool = Tool::clone(&info.definition);
                let name = format!("{}{sep}{}", status.name, info.name);
                tool.name = name.clone().into();
                catalog.by_name.insert(name, catalog.entries.len());
                let mirrors_params = has_header_annotation(&tool.input_schema);
                catalog.entries.push(Entry {
                    tool,
                    roles,
                    mirrors_params,
                });
            }
        }
        catalog
    }

    /// The tools `caller` may call, in configured server order.
    pub fn visible(&self, caller: &Identity) -> Vec<Tool> {
        self.entries
            .iter()
            .filter(|e| caller.has_any_role(&e.roles))
            .map(|e| e.tool.clone())
            .collect()
    }

    /// A listed tool by its namespaced name.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.by_name.get(name).map(|&i| &self.entries[i].tool)
    }

    /// Whether calls of a listed tool may carry `Mcp-Param-*` headers to check (see
    /// `Entry::mirrors_params`); `false` for a tool not listed (rmcp checks none then).
    pub(super) fn mirrors_params(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|&i| self.entries[i].mirrors_params)
    }

    /// Every listed tool.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No listed tool.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An `x-mcp-header` key anywhere in `schema`: a superset of the annotations rmcp acts on
/// (those on `properties` chains), so a `false` here is safe to rely on.
fn has_header_annotation(schema: &JsonObject) -> bool {
    fn any(value: &Value) -> bool {
        match value {
            Value::Object(map) => has_header_annotation(map),
            Value::Array(items) => items.iter().any(any),
            _ => false,
        }
    }
    schema
        .iter()
        .any(|(key, value)| key == "x-mcp-header" || any(value))
}

/// `server<sep>tool` split back (at the separator's first occurrence, which config
/// checks make unambiguous).
pub fn split<'a>(name: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    name.split_once(sep)
        .filter(|(s, t)| !s.is_empty() && !t.is_empty())
}

/// What a caller's list depends on: which servers are listed, and their tools. When it
/// changes, clients get `notifications/tools/list_changed`.
#[derive(Debug, PartialEq)]
pub struct Fingerprint(Vec<Option<Arc<Vec<ToolInfo>>>>);

impl Fingerprint {
    /// Of `snapshot`.
    pub fn of(snapshot: &Snapshot) -> Self {
        Self(
            snapshot
                .servers
                .iter()
                .map(|s| is_listed(s).then(|| s.tools.clone()))
                .collect(),
        )
    }
}

/// The catalog of the latest snapshot, rebuilt only when the snapshot changes.
#[derive(Debug, Default)]
pub struct CatalogCache(Mutex<Option<(Arc<Snapshot>, Arc<Catalog>)>>);

impl CatalogCache {
    /// The catalog of `snapshot`, built by `build` when it is not the cached one.
    pub fn get(
        &self,
        snapshot: Arc<Snapshot>,
        build: impl FnOnce(&Snapshot) -> Catalog,
    ) -> Arc<Catalog> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, c)) = slot.as_ref()
            && Arc::ptr_eq(s, &snapshot)
        {
            return c.clone();
        }
        let catalog = Arc::new(build(&snapshot));
        *slot = Some((snapshot, catalog.clone()));
        catalog
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProcessEnv;
    use crate::test_util::tool;

    fn status(name: &str, state: HealthState, tools: &[&str]) -> Arc<ServerStatus> {
        Arc::new(ServerStatus {
            name: name.into(),
            state,
            circuit: CircuitState::Closed,
            latency_ms: None,
            last_error: None,
            last_change: String::new(),
            tool_count: tools.len(),
            tools: Arc::new(tools.iter().map(|t| tool(t, None)).collect()),
        })
    }

    fn who(roles: &[&str]) -> Identity {
        Identity {
            id: "u".into(),
            username: String::new(),
            role: String::new(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            email: String::new(),
            expires: None,
        }
    }

    #[test]
    fn lists_healthy_servers_tools_namespaced_and_filtered_by_roles() {
        let config = Config::from_yaml(
            "roles: {tool_call: [user, admin]}\nservers:\n  - name: a\n    url: http://h/mcp\n    tools: {secret: {roles: [admin]}}\n  - {name: b, url: http://h/mcp}\n  - {name: c, url: http://h/mcp}\n",
            &ProcessEnv,
        )
        .expect("config");
        let snapshot = Snapshot::new(vec![
            status("a", HealthState::Healthy, &["open", "secret"]),
            status("b", HealthState::Degraded, &["x"]),
            status("c", HealthState::Unhealthy, &["y"]),
        ]);
        let catalog = Catalog::build(&config, &snapshot);
        let names = |id: &Identity| -> Vec<String> {
            catalog
                .visible(id)
                .iter()
                .map(|t| t.name.to_string())
                .collect()
        };
        assert_eq!(names(&who(&["admin"])), ["a__open", "a__secret", "b__x"]);
        assert_eq!(names(&who(&["user"])), ["a__open", "b__x"]);
        assert!(names(&who(&["guest"])).is_empty());
        assert_eq!(
            catalog.get("a__secret").map(|t| t.name.as_ref()),
            Some("a__secret")
        );
        assert!(catalog.get("c__y").is_none());
        assert_eq!(split("a__secret", "__"), Some(("a", "secret")));
        assert_eq!(split("__x", "__"), None);

        // What clients list changes with health, not with latency.
        let before = Fingerprint::of(&snapshot);
        let mut slower = (*snapshot.servers[0]).clone();
        slower.latency_ms = Some(9.0);
        let same = Snapshot::new(vec![
            Arc::new(slower),
            snapshot.servers[1].clone(),
            snapshot.servers[2].clone(),
        ]);
        assert_eq!(Fingerprint::of(&same), before);
        let down = Snapshot::new(vec![
            status("a", HealthState::Unhealthy, &["open", "secret"]),
            snapshot.servers[1].clone(),
            snapshot.servers[2].clone(),
        ]);
        assert_ne!(Fingerprint::of(&down), before);
    }
}
