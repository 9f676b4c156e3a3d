//! Test helpers: a scriptable fake [`McpClient`] and a quick server config.
//! Compiled for unit tests and with the `test-util` feature (benches, other crates).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::config::ServerConfig;
use crate::mcp::{Error, McpClient, ToolInfo, ToolResult};

/// How the fake answers probes and calls.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer after this (tokio) delay.
    Answer(Duration),
    /// Fail with a transport error.
    Down,
    /// Never answer.
    Hang,
}

/// A scriptable MCP server living in memory; uses tokio time (pausable).
#[derive(Debug)]
pub struct FakeMcp {
    behaviour: Mutex<Behaviour>,
    tools: Mutex<Vec<ToolInfo>>,
    /// Upstream `tools/call`s so far.
    pub calls: AtomicUsize,
    /// Probes so far.
    pub probes: AtomicUsize,
    /// `reset` calls so far.
    pub resets: AtomicUsize,
}

impl Default for FakeMcp {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeMcp {
    /// Answers at once; tools `echo` and `add` (`add` is read-only).
    pub fn new() -> Self {
        Self {
            behaviour: Mutex::new(Behaviour::Answer(Duration::ZERO)),
            tools: Mutex::new(vec![tool("add", Some(true)), tool("echo", None)]),
            calls: AtomicUsize::new(0),
            probes: AtomicUsize::new(0),
            resets: AtomicUsize::new(0),
        }
    }

    /// Changes how it answers from now on.
    pub fn set(&self, b: Behaviour) {
        *self.behaviour.lock().expect("lock") = b;
    }

    /// Replaces the advertised tools.
    pub fn set_tools(&self, tools: Vec<ToolInfo>) {
        *self.tools.lock().expect("lock") = tools;
    }

    async fn behave(&self) -> Result<(), Error> {
        let b = self.behaviour.lock().expect("lock").clone();
        match b {
            Behaviour::Answer(d) => {
                if !d.is_zero() {
                    tokio::time::sleep(d).await;
                }
                Ok(())
            }
            Behaviour::Down => Err(Error::transport("connection refused")),
            Behaviour::Hang => std::future::pending().await,
        }
    }
}

/// A `ToolInfo`.
pub fn tool(name: &str, read_only: Option<bool>) -> ToolInfo {
    let mut definition = rmcp::model::Tool::new(
        name.to_owned(),
        format!("{name} (fake)"),
        std::sync::Arc::new(serde_json::Map::from_iter([(
            "type".to_owned(),
            serde_json::Value::from("object"),
        )])),
    );
    if let Some(hint) = read_only {
        definition.annotations = Some(rmcp::model::ToolAnnotations::new().read_only(hint));
    }
    ToolInfo {
        name: name.to_owned(),
        description: None,
        read_only_hint: read_only,
        definition: std::sync::Arc::new(definition),
        input_schema: None,
    }
}

impl McpClient for FakeMcp {
    fn probe(&self) -> BoxFuture<'_, Result<(), Error>> {
        async move {
            self.probes.fetch_add(1, Ordering::SeqCst);
            self.behave().await
        }
        .boxed()
    }

    fn reset(&self) -> BoxFuture<'_, ()> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(()))
    }

    fn list_tools(&self) -> BoxFuture<'_, Result<Vec<ToolInfo>, Error>> {
        async move {
            self.behave().await?;
            Ok(self.tools.lock().expect("lock").clone())
        }
        .boxed()
    }

    fn call_tool<'a>(
        &'a self,
        tool: &'a str,
        arguments: Map<String, Value>,
    ) -> BoxFuture<'a, Result<ToolResult, Error>> {
        async move {
            self.behave().await?;
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if tool == "fail" {
                return Ok(ToolResult {
                    body: json!({"content": [{"type": "text", "text": "boom"}], "isError": true}),
                    is_error: true,
                });
            }
            Ok(ToolResult {
                body: json!({
                    "content": [{"type": "text", "text": format!("{tool} #{n}")}],
                    "structuredContent": {"tool": tool, "arguments": arguments, "call": n},
                    "isError": false
                }),
                is_error: false,
            })
        }
        .boxed()
    }
}

/// A server config with short, test-friendly settings.
pub fn server_config(name: &str) -> ServerConfig {
    let mut c = ServerConfig::new(name, "http://127.0.0.1:9/mcp");
    c.probe_interval = Duration::from_secs(1);
    c.probe_timeout = Duration::from_millis(500);
    c.call_timeout = Duration::from_secs(2);
    c.degraded_latency = Duration::from_millis(200);
    c.unhealthy_after = 2;
    c.healthy_after = 2;
    c.breaker.failure_threshold = 2;
    c.breaker.open_duration = Duration::from_secs(3);
    c
}
