//! The configured servers and the breakers tool calls share with the coordinator task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
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
    /// Unique in this process: a server replaced by a reload gets a new entry and id, so
    /// late news about the old one (a probe, a call's breaker move) is recognised and dropped.
    pub(crate) id: u64,
}

impl std::fmt::Debug for ServerEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerEntry")
            .field("name", &self.config.name)
            .finish()
    }
}

impl ServerEntry {
    pub(crate) fn new(config: ServerConfig, client: Arc<dyn McpClient>) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            breaker: Mutex::new(Breaker::new(config.breaker.clone())),
            config,
            client,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// The servers configured now, in order, and their index by name.
#[derive(Debug, Default)]
struct Servers {
    list: Arc<Vec<Arc<ServerEntry>>>,
    by_name: HashMap<String, usize>,
}

impl Servers {
    fn new(list: Vec<Arc<ServerEntry>>) -> Self {
        let by_name = list
            .iter()
            .enumerate()
            .map(|(i, e)| (e.config.name.clone(), i))
            .collect();
        Self {
            list: Arc::new(list),
            by_name,
        }
    }
}

/// The configured servers, by index and by name. A configuration reload swaps the whole
/// list at once (only the coordinator task does, see [`Registry::reload`]); readers see the
/// old list or the new one. Indexes are positions in the list current when read: code that
/// keeps a server across an await keeps its [`ServerEntry`] ([`Registry::entry`]).
#[derive(Debug)]
pub struct Registry {
    current: ArcSwap<Servers>,
    commands: mpsc::UnboundedSender<Command>,
}

/// A permit to call a server, from [`Registry::admit`]. Report with [`CallPermit::finish`];
/// dropping it unreported (e.g. the client went away) gives a half-open trial back.
#[derive(Debug)]
pub struct CallPermit {
    entry: Arc<ServerEntry>,
    registry: Arc<Registry>,
    is_done: bool,
}

impl CallPermit {
    /// Records the call's outcome (`ok` = no outage).
    pub fn finish(mut self, ok: bool) {
        self.is_done = true;
        let transition = lock(&self.entry.breaker).on_result(ok, Instant::now());
        self.registry.notify(&self.entry, transition);
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        if !self.is_done {
            lock(&self.entry.breaker).abandon();
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

/// What a configuration reload changed, by server name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// New servers.
    pub added: Vec<String>,
    /// Servers no longer configured.
    pub removed: Vec<String>,
    /// Servers whose configuration changed: replaced, with fresh health and breaker.
    pub changed: Vec<String>,
    /// Servers left as they were.
    pub unchanged: Vec<String>,
}

impl ReloadSummary {
    /// Whether any server was added, removed or changed.
    pub fn is_change(&self) -> bool {
        !(self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty())
    }
}

impl Registry {
    /// The servers, each with a closed breaker; breaker transitions of calls go to
    /// `commands`.
    pub(crate) fn new(
        servers: Vec<(ServerConfig, Arc<dyn McpClient>)>,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Self {
        let list = servers
            .into_iter()
            .map(|(config, client)| Arc::new(ServerEntry::new(config, client)))
            .collect();
        Self {
            current: ArcSwap::from_pointee(Servers::new(list)),
            commands,
        }
    }

    /// Index of the server named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.current.load().by_name.get(name).copied()
    }

    /// The server named `name`.
    pub fn entry(&self, name: &str) -> Option<Arc<ServerEntry>> {
        let current = self.current.load();
        current.by_name.get(name).map(|&i| current.list[i].clone())
    }

    /// The server at `index`.
    ///
    /// # Panics
    /// When `index` is out of range (a stale index kept across a reload: use
    /// [`Registry::entry`] instead).
    pub fn get(&self, index: usize) -> Arc<ServerEntry> {
        self.current.load().list[index].clone()
    }

    /// Every server, in configured order.
    pub fn servers(&self) -> Arc<Vec<Arc<ServerEntry>>> {
        self.current.load().list.clone()
    }

    /// Asks the server's breaker for a call; `Err(retry_after)` when open.
    pub fn admit(self: &Arc<Self>, index: usize) -> Result<CallPermit, Duration> {
        let entry = self.get(index);
        self.admit_entry(&entry)
    }

    /// [`Registry::admit`] for an entry already looked up (calls keep their entry: a reload
    /// while they run changes nothing for them).
    pub fn admit_entry(self: &Arc<Self>, entry: &Arc<ServerEntry>) -> Result<CallPermit, Duration> {
        let admission = lock(&entry.breaker).admit(Instant::now());
        match admission {
            Admission::Allowed(transition) => {
                self.notify(entry, transition);
                Ok(CallPermit {
                    entry: entry.clone(),
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
        let id = self.get(index).id;
        self.control_id(id, op).await
    }

    /// [`Registry::control`] by name; `None` for a server not configured.
    pub async fn control_named(
        &self,
        name: &str,
        op: ServerOp,
    ) -> Option<Result<OpOutcome, OpError>> {
        let id = self.entry(name)?.id;
        Some(self.control_id(id, op).await)
    }

    async fn control_id(&self, id: u64, op: ServerOp) -> Result<OpOutcome, OpError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Control(id, op, reply))
            .map_err(|_| OpError::Unavailable)?;
        answer.await.unwrap_or(Err(OpError::Unavailable))
    }

    /// Has the coordinator task replace the servers with `servers` (in this order): same
    /// name and configuration: kept as is; otherwise added, replaced or removed, announced
    /// to status clients as `server_added` / `server_removed` events. `client` makes the
    /// MCP client of a new or changed server.
    pub async fn reload(
        &self,
        servers: Vec<ServerConfig>,
        client: MakeClient,
    ) -> Result<ReloadSummary, OpError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Reload(servers, client, reply))
            .map_err(|_| OpError::Unavailable)?;
        answer.await.map_err(|_| OpError::Unavailable)
    }

    /// Installs a new list (the coordinator task only).
    pub(crate) fn install(&self, list: Vec<Arc<ServerEntry>>) {
        self.current.store(Arc::new(Servers::new(list)));
    }

    fn notify(&self, entry: &ServerEntry, transition: Option<Transition>) {
        if let Some(t) = transition {
            // The coordinator is gone only at shutdown: nothing left to publish to.
            let _ = self.commands.send(Command::Circuit(entry.id, t));
        }
    }
}

/// Where the coordinator task answers an operator action.
pub(crate) type OpReply = oneshot::Sender<Result<OpOutcome, OpError>>;

/// Makes the MCP client of a server a reload adds or changes.
pub type MakeClient = Box<dyn Fn(&ServerConfig) -> Arc<dyn McpClient> + Send>;

/// What calls and operators tell the coordinator task; servers by [`ServerEntry::id`].
pub(crate) enum Command {
    /// A tool call moved a breaker.
    Circuit(u64, Transition),
    /// An operator action on a server, with where to answer.
    Control(u64, ServerOp, OpReply),
    /// A configuration reload: the new server list, how to make clients, where to answer.
    Reload(
        Vec<ServerConfig>,
        MakeClient,
        oneshot::Sender<ReloadSummary>,
    ),
}
