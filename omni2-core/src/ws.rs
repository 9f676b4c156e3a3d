//! `/ws/mcp-status`: a snapshot, then deltas, each message with the connection's next `seq`.
//!
//! Every connection runs its own task reading the coordinator's broadcast, so a slow client
//! only slows itself. Its queue is bounded (the broadcast capacity, `websocket.queue`): a
//! client that falls behind loses its backlog, which is counted, and gets a fresh snapshot;
//! a frame the client does not take within `send_timeout` counts as lag too; after
//! `max_lag_strikes` lag episodes it is closed with 1013. Events are serialised once for all
//! connections; each connection only prepends its `seq`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Session};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, interval_at, sleep_until, timeout};

use crate::Shared;
use crate::coordinator::{Event, EventKind, Snapshot, now_rfc3339};
use crate::identity::{Identity, IdentityError, unix_now};

/// Open-connection accounting, shared by all workers.
#[derive(Debug, Default)]
pub struct Hub {
    connections: AtomicUsize,
}

impl Hub {
    /// Open connections now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

struct Slot {
    shared: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.hub.connections.fetch_sub(1, Ordering::Relaxed);
        self.shared.metrics.ws_connections.dec();
    }
}

/// The upgrade handler: identity and role first (401/403, no upgrade), then the socket.
pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    identity: Result<Identity, IdentityError>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, actix_web::Error> {
    let identity = identity?;
    identity.require_any(&shared.config.roles.ws_status)?;
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let shared = shared.get_ref().clone();
    let max = shared.config.websocket.max_connections;
    let previous = shared.hub.connections.fetch_add(1, Ordering::Relaxed);
    shared.metrics.ws_connections.inc();
    let slot = Slot {
        shared: shared.clone(),
    };
    if previous >= max {
        actix_web::rt::spawn(async move {
            let _slot = slot;
            let reason = CloseReason {
                code: CloseCode::Again,
                description: Some("too many connections".to_owned()),
            };
            let _ = session.close(Some(reason)).await;
        });
        return Ok(response);
    }
    let stream = stream.max_frame_size(64 * 1024).aggregate_continuations();
    actix_web::rt::spawn(async move {
        let _slot = slot;
        Connection::new(shared, session, identity).run(stream).await;
    });
    Ok(response)
}

/// A client message.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Subscribe {
        servers: Option<Vec<String>>,
        events: Option<Vec<String>>,
    },
    Unsubscribe {
        servers: Option<Vec<String>>,
        events: Option<Vec<String>>,
    },
    Resync,
    Ping,
}

/// What one connection wants to receive. `None` = everything.
#[derive(Debug, Default)]
struct Filter {
    servers: Option<HashSet<String>>,
    events: Option<HashSet<EventKind>>,
    /// `unsubscribe` without arguments: no deltas until the next `subscribe`.
    is_paused: bool,
}

impl Filter {
    fn accepts(&self, event: &Event) -> bool {
        !self.is_paused
            && self.events.as_ref().is_none_or(|e| e.contains(&event.kind))
            && match (&self.servers, &event.server) {
                (Some(set), Some(server)) => set.contains(&**server),
                _ => true,
            }
    }
}

enum Flow {
    Continue,
    Close(CloseCode, &'static str),
}

struct Connection {
    shared: Arc<Shared>,
    session: Session,
    identity: Identity,
    seq: u64,
    filter: Filter,
    lag_strikes: u32,
}

impl Connection {
    fn new(shared: Arc<Shared>, session: Session, identity: Identity) -> Self {
        Self {
            shared,
            session,
            identity,
            seq: 0,
            filter: Filter::default(),
            lag_strikes: 0,
        }
    }

    async fn run(mut self, mut stream: actix_ws::AggregatedMessageStream) {
        let ws = self.shared.config.websocket.clone();
        // Subscribe before reading the snapshot: nothing published in between is missed.
        let mut events = self.shared.published.events.subscribe();
        let mut shutdown = self.shared.shutdown.subscribe();
        let far = Duration::from_secs(365 * 24 * 3600);
        let expires_at = match self.identity.expires {
            Some(exp) => Instant::now() + Duration::from_secs(exp.saturating_sub(unix_now())),
            None => Instant::now() + far,
        };
        let mut heartbeat = interval_at(
            Instant::now() + ws.heartbeat_interval,
            ws.heartbeat_interval,
        );
        let mut last_heard = Instant::now();
        tracing::debug!(user = %self.identity.id, "Status WebSocket opened.");

        // Created once, not per loop turn: 10 000 connections re-arming a timer and a watch
        // waiter for every message was a measurable part of the fan-out time.
        let stop = shutdown.wait_for(|stop| *stop);
        let expiry = sleep_until(expires_at);
        tokio::pin!(stop, expiry);

        let mut flow = self.send_snapshot().await;
        while let Flow::Continue = flow {
            flow = tokio::select! {
                biased;
                _ = &mut stop => Flow::Close(CloseCode::Away, "server shutting down"),
                _ = &mut expiry => Flow::Close(CloseCode::Policy, "token expired"),
                message = stream.recv() => {
                    last_heard = Instant::now();
                    match message {
                        Some(Ok(m)) => self.on_message(m).await,
                        // Closed by the client, or a protocol error: nothing more to say.
                        Some(Err(_)) | None => break,
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > ws.client_timeout {
                        Flow::Close(CloseCode::Normal, "idle timeout")
                    } else {
                        // A client that does not read cannot take pings either: bounded.
                        match timeout(ws.send_timeout, self.session.ping(b"")).await {
                            Ok(Ok(())) => Flow::Continue,
                            Ok(Err(_)) => break,
                            Err(_) => self.lagged_without_resync(),
                        }
                    }
                }
                event = events.recv() => match event {
                    Ok(event) if self.filter.accepts(&event) => {
                        let text = format!("{{\"seq\":{},{}", self.seq + 1, event.json_tail);
                        self.send(text).await
                    }
                    Ok(_) => Flow::Continue,
                    Err(RecvError::Lagged(n)) => {
                        self.shared.metrics.ws_dropped.inc_by(n);
                        self.lagged().await
                    }
                    Err(RecvError::Closed) => Flow::Close(CloseCode::Away, "server shutting down"),
                },
            };
        }
        if let Flow::Close(code, why) = flow {
            let reason = CloseReason {
                code,
                description: Some(why.to_owned()),
            };
            // A lagging client's close frame queues behind what it has not read yet: give it
            // until the idle limit to read up to it, then just drop the connection.
            let _ = timeout(ws.client_timeout, self.session.close(Some(reason))).await;
        }
        tracing::debug!(user = %self.identity.id, "Status WebSocket closed.");
    }

    /// One lag episode: drop the backlog (already done by the broadcast), strike, resync.
    async fn lagged(&mut self) -> Flow {
        self.lag_strikes += 1;
        if self.lag_strikes >= self.shared.config.websocket.max_lag_strikes {
            return Flow::Close(CloseCode::Again, "client too slow");
        }
        self.send_snapshot().await
    }

    /// Sends one text frame with the next `seq`; a frame not taken in time is lag.
    async fn send(&mut self, text: String) -> Flow {
        let limit = self.shared.config.websocket.send_timeout;
        match timeout(limit, self.session.text(text)).await {
            Ok(Ok(())) => {
                self.seq += 1;
                self.shared.metrics.ws_messages.inc();
                Flow::Continue
            }
            Ok(Err(_)) => Flow::Close(CloseCode::Normal, "closed"),
            Err(_) => {
                self.shared.metrics.ws_dropped.inc();
                self.lagged_without_resync()
            }
        }
    }

    fn lagged_without_resync(&mut self) -> Flow {
        self.lag_strikes += 1;
        if self.lag_strikes >= self.shared.config.websocket.max_lag_strikes {
            Flow::Close(CloseCode::Again, "client too slow")
        } else {
            Flow::Continue
        }
    }

    fn snapshot_text(&self, snapshot: &Snapshot) -> String {
        let servers = match &self.filter.servers {
            None => snapshot.summary_json(None),
            Some(set) => snapshot.summary_json(Some(&|name: &str| set.contains(name))),
        };
        format!(
            "{{\"seq\":{},\"type\":\"snapshot\",\"ts\":\"{}\",\"servers\":{}}}",
            self.seq + 1,
            now_rfc3339(),
            servers
        )
    }

    async fn send_snapshot(&mut self) -> Flow {
        let snapshot = self.shared.published.snapshot.borrow().clone();
        let text = self.snapshot_text(&snapshot);
        self.send(text).await
    }

    async fn reply(&mut self, body: serde_json::Value) -> Flow {
        // `{"seq":N,` + the body object without its `{`.
        let body = body.to_string();
        let text = format!("{{\"seq\":{},{}", self.seq + 1, &body[1..]);
        self.send(text).await
    }

    async fn on_message(&mut self, message: actix_ws::AggregatedMessage) -> Flow {
        use actix_ws::AggregatedMessage as M;
        match message {
            M::Text(text) => self.on_text(&text).await,
            M::Binary(_) => {
                self.reply(json!({"type": "error", "message": "binary frames are not supported"}))
                    .await
            }
            M::Ping(bytes) => {
                let limit = self.shared.config.websocket.send_timeout;
                match timeout(limit, self.session.pong(&bytes)).await {
                    Ok(Ok(())) => Flow::Continue,
                    Ok(Err(_)) => Flow::Close(CloseCode::Normal, "closed"),
                    Err(_) => self.lagged_without_resync(),
                }
            }
            M::Pong(_) => Flow::Continue,
            M::Close(_) => Flow::Close(CloseCode::Normal, "bye"),
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let message: ClientMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                return self
                    .reply(json!({"type": "error", "message": format!("invalid message: {e}")}))
                    .await;
            }
        };
        match message {
            ClientMessage::Ping => self.reply(json!({"type": "pong"})).await,
            ClientMessage::Resync => self.send_snapshot().await,
            ClientMessage::Subscribe { servers, events } => {
                let events = match parse_kinds(events) {
                    Ok(e) => e,
                    Err(m) => return self.reply(json!({"type": "error", "message": m})).await,
                };
                self.filter = Filter {
                    servers: servers.map(|s| s.into_iter().collect()),
                    events,
                    is_paused: false,
                };
                self.ack("subscribed").await
            }
            ClientMessage::Unsubscribe { servers, events } => {
                if servers.is_none() && events.is_none() {
                    self.filter.is_paused = true;
                    return self.ack("unsubscribed").await;
                }
                let events = match parse_kinds(events) {
                    Ok(e) => e,
                    Err(m) => return self.reply(json!({"type": "error", "message": m})).await,
                };
                let snapshot = self.shared.published.snapshot.borrow().clone();
                if let Some(remove) = servers {
                    let set = self.filter.servers.get_or_insert_with(|| {
                        snapshot
                            .servers
                            .iter()
                            .map(|s| s.name.to_string())
                            .collect()
                    });
                    for s in remove {
                        set.remove(&s);
                    }
                }
                if let Some(remove) = events {
                    let set = self.filter.events.get_or_insert_with(all_kinds);
                    for k in remove {
                        set.remove(&k);
                    }
                }
                self.ack("unsubscribed").await
            }
        }
    }

    async fn ack(&mut self, kind: &str) -> Flow {
        let mut servers: Option<Vec<&String>> =
            self.filter.servers.as_ref().map(|s| s.iter().collect());
        if let Some(s) = servers.as_mut() {
            s.sort();
        }
        let mut events: Option<Vec<&str>> = self
            .filter
            .events
            .as_ref()
            .map(|e| e.iter().map(|k| k.as_str()).collect());
        if let Some(e) = events.as_mut() {
            e.sort_unstable();
        }
        let body = json!({"type": kind, "servers": servers, "events": events, "paused": self.filter.is_paused});
        self.reply(body).await
    }
}

fn all_kinds() -> HashSet<EventKind> {
    [
        EventKind::ServerStatus,
        EventKind::CircuitState,
        EventKind::ToolsChanged,
        EventKind::CacheStats,
    ]
    .into_iter()
    .collect()
}

fn parse_kinds(names: Option<Vec<String>>) -> Result<Option<HashSet<EventKind>>, String> {
    let Some(names) = names else {
        return Ok(None);
    };
    names
        .iter()
        .map(|n| EventKind::parse(n).ok_or_else(|| format!("unknown event type {n:?}")))
        .collect::<Result<HashSet<_>, _>>()
        .map(Some)
}
