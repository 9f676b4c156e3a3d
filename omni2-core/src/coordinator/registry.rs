//! The configured servers and the breakers tool calls share with the coordinator task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::breaker::{Admission, Breaker, Transition};
use crate::config::ServerConfig;
use crate::coordinator::ops::{OpError, OpOutcome, ServerOp};
use crate::mcp::McpClient;

/// One configured server and what calls share with the coordinator.
pub struct ServerEntry {
    /// Its configuration.
    pub config: ServerConfig,
    /// The MCP client.
    pub client: Arc<dyn McpClient>,
    /// The breaker, shared by probes and tool calls (short critical sections, no await).
    breaker: Mutex<Breaker>,
}

impl std::fmt::Debug for ServerEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerEntry")
            .field("name", &self.config.name)
            .finish()
    }
}

/// The configured servers, by index and by name.
#[derive(Debug)]
pub struct Registry {
    servers: Vec<Arc<ServerEntry>>,
    by_name: HashMap<String, usize>,
    commands: mpsc::UnboundedSender<Command>,
}

/// A permit to call a server, from [`Registry::admit`]. Report with [`CallPermit::finish`];
/// dropping it unreported (e.g. the client went away) gives a half-open trial back.
#[derive(Debug)]
pub struct CallPermit {
    index: usize,
    registry: Arc<Registry>,
    is_done: bool,
}

impl CallPermit {
    /// Records the call's outcome (`ok` = no outage).
    pub fn finish(mut self, ok: bool) {
        self.is_done = true;
        let entry = &self.registry.servers[self.index];
        let transition = lock(&entry.breaker).on_result(ok, Instant::now());
        self.registry.notify(self.index, transition);
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        if !self.is_done {
            let entry = &self.registry.servers[self.index];
            lock(&entry.breaker).abandon();
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the breaker lock cannot leave it half-updated in a way that
    // matters more than losing breaker protection: keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ServerEntry {
    /// The breaker, locked (short critical sections, no await).
    pub(crate) fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        lock(&self.breaker)
    }
}

impl Registry {
    /// The servers, each with a closed breaker; breaker transitions of calls go to
    /// `commands`.
    pub(crate) fn new(
        servers: Vec<(ServerConfig, Arc<dyn McpClient>)>,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Self {
        let servers: Vec<Arc<ServerEntry>> = servers
            .into_iter()
            .map(|(config, client)| {
                Arc::new(ServerEntry {
                    breaker: Mutex::new(Breaker::new(config.breaker.clone())),
                    config,
                    client,
                })
            })
            .collect();
        let by_name = servers
            .iter()
            .enumerate()
            .map(|(i, e)| (e.config.name.clone(), i))
            .collect();
        Self {
            servers,
            by_name,
            commands,
        }
    }

    /// Index of the server named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The server at `index`.
    pub fn get(&self, index: usize) -> &Arc<ServerEntry> {
        &self.servers[index]
    }

    /// Every server, in configured order.
    pub fn servers(&self) -> &[Arc<ServerEntry>] {
        &self.servers
    }

    /// Asks the server's breaker for a call; `Err(retry_after)` when open.
    pub fn admit(self: &Arc<Self>, index: usize) -> Result<CallPermit, Duration> {
        let admission = lock(&self.servers[index].breaker).admit(Instant::now());
        match admission {
            Admission::Allowed(transition) => {
                self.notify(index, transition);
                Ok(CallPermit {
                    index,
                    registry: self.clone(),
                    is_done: false,
                })
            }
            Admission::Rejected { retry_after } => Err(retry_after),
        }
    }

    /// Has the coordinator task carry out `op` on server `index`; waits for its answer
    /// (a probe: until it has finished).
    pub async fn control(&self, index: usize, op: ServerOp) -> Result<OpOutcome, OpError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Control(index, op, reply))
            .map_err(|_| OpError::Unavailable)?;
        answer.await.unwrap_or(Err(OpError::Unavailable))
    }

    fn notify(&self, index: usize, transition: Option<Transition>) {
        if let Some(t) = transition {
            // The coordinator is gone only at shutdown: nothing left to publish to.
            let _ = self.commands.send(Command::Circuit(index, t));
        }
    }
}

/// Where the coordinator task answers an operator action.
pub(crate) type OpReply = oneshot::Sender<Result<OpOutcome, OpError>>;

/// What calls and operators tell the coordinator task.
pub(crate) enum Command {
    /// A tool call moved a breaker.
    Circuit(usize, Transition),
    /// An operator action on a server, with where to answer.
    Control(usize, ServerOp, OpReply),
}
