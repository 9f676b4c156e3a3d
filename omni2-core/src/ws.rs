//! `/ws/mcp-status`: a snapshot, then deltas, each message with the connection's next `seq`.
//!
//! Deltas are delivered by the worker's fan-out task ([`WorkerFanout`]) straight into each
//! connection's bounded outgoing channel (actix-ws's, 32 frames), serialised once for all
//! connections; each connection only prepends its `seq`. A client that stops reading fills its channel and
//! socket buffers and only that: it misses deltas (counted), and its own task sends it a fresh
//! snapshot instead; after `max_lag_strikes` such episodes it is closed with 1013. The
//! connection's own task handles everything else: client messages, heartbeat, expiry, close.

mod fanout;

pub use fanout::WorkerFanout;

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, ORIGIN};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Session};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, interval_at, sleep_until, timeout};

use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::FuturesUnordered;

use self::fanout::{Filter, Outbox};
use crate::control;
use crate::coordinator::{EventKind, Snapshot, now_rfc3339};
use crate::identity::{Identity, IdentityError, unix_now};
use crate::metrics::{ws_close, ws_reject};
pub use crate::shared::Hub;
use crate::shared::Shared;

struct Slot {
    shared: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.hub.connections.fetch_sub(1, Ordering::Relaxed);
        self.shared.metrics.ws_connections.dec();
    }
}

/// Whether a handshake's `Origin` may open the socket: absent (a non-browser client, which
/// a cross-site page cannot be) or exactly one of `allowed` (lowercase serialised origins).
/// Several `Origin` headers, or one that is not text, fail closed.
fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    let mut values = req.headers().get_all(ORIGIN);
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(v), None) => v
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o))),
        (Some(_), Some(_)) => false,
    }
}

/// The upgrade handler: the `Origin` first (403: a browser page of another site must not
/// ride on the user's cookie or query token), then identity and role (401/403, no upgrade),
/// then the socket.
pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    identity: Result<Identity, IdentityError>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, actix_web::Error> {
    if !origin_allowed(&req, &shared.config.websocket.allowed_origins) {
        shared.metrics.ws_origin_refused.inc();
        shared
            .metrics
            .ws_rejected
            .with_label_values(&[ws_reject::ORIGIN])
            .inc();
        return Ok(HttpResponse::Forbidden()
            .insert_header((CACHE_CONTROL, "no-store"))
            .json(json!({
                "error": "origin_not_allowed",
                "message": "this Origin may not open /ws/mcp-status (websocket.allowed_origins)",
            })));
    }
    let reject = |reason: &str| {
        shared
            .metrics
            .ws_rejected
            .with_label_values(&[reason])
            .inc()
    };
    let identity = identity.inspect_err(|_| reject(ws_reject::IDENTITY))?;
    identity
        .require_any(&shared.config.roles.ws_status)
        .inspect_err(|_| reject(ws_reject::ROLE))?;
    let Some(fanout) = req.app_data::<WorkerFanout>().cloned() else {
        // Mounted without `Omni2::configure`: a wiring error, not the client's.
        return Err(actix_web::error::ErrorInternalServerError(
            "WebSocket fan-out not mounted",
        ));
    };
    let (response, session, stream) =
        actix_ws::handle(&req, body).inspect_err(|_| reject(ws_reject::BAD_HANDSHAKE))?;
    let shared = shared.get_ref().clone();
    let max = shared.config.websocket.max_connections;
    let previous = shared.hub.connections.fetch_add(1, Ordering::Relaxed);
    shared.metrics.ws_connections.inc();
    let slot = Slot {
        shared: shared.clone(),
    };
    if previous >= max {
        reject(ws_reject::TOO_MANY);
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
        Connection::new(shared, &fanout, session, identity)
            .run(stream)
            .await;
    });
    Ok(response)
}

/// A client message.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Probe {
        server: String,
        id: Option<CorrelationId>,
    },
    ResetBreaker {
        server: String,
        #[serde(default)]
        to: control::ResetTo,
        id: Option<CorrelationId>,
    },
    InvalidateCache {
        server: String,
        tool: Option<String>,
        id: Option<CorrelationId>,
    },
    Disable {
        server: String,
        id: Option<CorrelationId>,
    },
    Enable {
        server: String,
        id: Option<CorrelationId>,
    },
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
    /// Admins only (`roles.control`): every audit event from now on, as `audit` messages.
    SubscribeAudit,
    UnsubscribeAudit,
}

/// The client's tag for a control request, echoed in its `result` or `error`: a string
/// (at most 64 bytes) or a number.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(untagged)]
enum CorrelationId {
    Number(i64),
    Text(String),
}

/// Control actions one connection may have in flight (a probe waits for its outcome).
const MAX_PENDING_CONTROLS: usize = 8;

type PendingReply = LocalBoxFuture<'static, serde_json::Value>;

enum Flow {
    Continue,
    Close(CloseCode, &'static str),
}

struct Connection {
    shared: Arc<Shared>,
    /// Shared with the worker's fan-out: `seq`, filter, missed deltas.
    out: Rc<Outbox>,
    session: Session,
    identity: Identity,
    lag_strikes: u32,
    /// Control actions running; each yields its `result` or `error` message.
    pending: FuturesUnordered<PendingReply>,
    /// The `audit` topic, when this (admin) connection subscribed to it.
    audit: Option<broadcast::Receiver<Arc<str>>>,
}

/// The next live audit line; never resolves without a subscription.
async fn next_audit(
    audit: &mut Option<broadcast::Receiver<Arc<str>>>,
) -> Result<Arc<str>, RecvError> {
    match audit {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// Registers with the worker's fan-out first: the snapshot is read after that, so no
    /// event falls between the two.
    fn new(
        shared: Arc<Shared>,
        fanout: &WorkerFanout,
        session: Session,
        identity: Identity,
    ) -> Self {
        let out = fanout.register(session.clone(), &shared);
        Self {
            shared,
            out,
            session,
            identity,
            lag_strikes: 0,
            pending: FuturesUnordered::new(),
            audit: None,
        }
    }

    async fn run(mut self, mut stream: actix_ws::AggregatedMessageStream) {
        let ws = self.shared.config.websocket.clone();
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

        // Created once, not per loop turn: cheaper wake-ups.
        let stop = shutdown.wait_for(|stop| *stop);
        let expiry = sleep_until(expires_at);
        tokio::pin!(stop, expiry);

        let mut ended = ws_close::CLIENT;
        let mut flow = self.send_snapshot().await;
        while let Flow::Continue = flow {
            let out = self.out.clone();
            flow = tokio::select! {
                biased;
                _ = &mut stop => Flow::Close(CloseCode::Away, "server shutting down"),
                _ = &mut expiry => Flow::Close(CloseCode::Policy, "token expired"),
                _ = out.missed.notified() => self.resync_after_miss().await,
                Some(answer) = self.pending.next(), if !self.pending.is_empty() => {
                    self.reply(answer).await
                }
                line = next_audit(&mut self.audit) => match line {
                    // One event, as the sink writes it (a JSON object).
                    Ok(line) => self.send(&format!("\"type\":\"audit\",\"event\":{line}}}")).await,
                    // This client reads slower than tool calls happen: say how many it lost.
                    Err(RecvError::Lagged(missed)) => {
                        self.reply(json!({"type": "audit_lagged", "missed": missed})).await
                    }
                    Err(RecvError::Closed) => {
                        self.audit = None;
                        Flow::Continue
                    }
                },
                message = stream.recv() => {
                    last_heard = Instant::now();
                    match message {
                        Some(Ok(m)) => self.on_message(m).await,
                        // Closed by the client, or a protocol error: nothing more to say.
                        Some(Err(_)) | None => {
                            ended = ws_close::CLIENT;
                            break;
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > ws.client_timeout {
                        Flow::Close(CloseCode::Normal, "idle timeout")
                    } else {
                        // A client that does not read cannot take pings either: bounded.
                        match timeout(ws.send_timeout, self.session.ping(b"")).await {
                            Ok(Ok(())) => Flow::Continue,
                            Ok(Err(_)) => {
                                ended = ws_close::SEND_FAILED;
                                break;
                            }
                            Err(_) => self.missed_own_frame(),
                        }
                    }
                }
            };
        }
        self.out.is_closing.set(true);
        if let Flow::Close(_, why) = flow {
            ended = close_label(why);
        }
        self.shared
            .metrics
            .ws_closes
            .with_label_values(&[ended])
            .inc();
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

    /// One lag episode (deltas or own frames missed): strike, then a fresh snapshot.
    async fn resync_after_miss(&mut self) -> Flow {
        if !self.out.needs_resync.get() {
            return Flow::Continue;
        }
        self.lag_strikes += 1;
        if self.lag_strikes >= self.shared.config.websocket.max_lag_strikes {
            return Flow::Close(CloseCode::Again, "client too slow");
        }
        self.out.needs_resync.set(false);
        self.send_snapshot().await
    }

    /// A frame of our own (reply, ping, pong) was not taken in time: the client is lagging.
    fn missed_own_frame(&mut self) -> Flow {
        self.out.miss(1, &self.shared);
        Flow::Continue
    }

    /// Sends `{"seq":N,` + `tail` (a JSON object without its `{`). The fan-out holds off
    /// while this waits, so `seq`s go out in order; a frame not taken in time is a miss.
    async fn send(&mut self, tail: &str) -> Flow {
        let limit = self.shared.config.websocket.send_timeout;
        let text = format!("{{\"seq\":{},{tail}", self.out.seq.get() + 1);
        self.out.is_busy.set(true);
        let sent = timeout(limit, self.session.text(text)).await;
        self.out.is_busy.set(false);
        match sent {
            Ok(Ok(())) => {
                self.out.seq.set(self.out.seq.get() + 1);
                self.shared.metrics.ws_messages.inc();
                Flow::Continue
            }
            Ok(Err(_)) => Flow::Close(CloseCode::Normal, "closed"),
            Err(_) => self.missed_own_frame(),
        }
    }

    fn snapshot_tail(&self, snapshot: &Snapshot) -> String {
        let servers = match &self.out.filter.borrow().servers {
            None => snapshot.summary_json(None),
            Some(set) => snapshot.summary_json(Some(&|name: &str| set.contains(name))),
        };
        let you = json!({
            "user": self.identity.id,
            "roles": self.identity.roles,
            "actions": control::allowed_actions(&self.shared, &self.identity),
        });
        format!(
            "\"type\":\"snapshot\",\"ts\":\"{}\",\"you\":{you},\"servers\":{}}}",
            now_rfc3339(),
            servers
        )
    }

    async fn send_snapshot(&mut self) -> Flow {
        let snapshot = self.shared.published.snapshot.borrow().clone();
        let tail = self.snapshot_tail(&snapshot);
        self.send(&tail).await
    }

    async fn reply(&mut self, body: serde_json::Value) -> Flow {
        let body = body.to_string();
        self.send(&body[1..]).await
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
                    Err(_) => self.missed_own_frame(),
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
        let control = |server: String, action: control::Action, id: Option<CorrelationId>| {
            (control::Request { server, action }, id)
        };
        let (request, id) = match message {
            ClientMessage::Probe { server, id } => control(server, control::Action::Probe, id),
            ClientMessage::ResetBreaker { server, to, id } => {
                control(server, control::Action::ResetBreaker(to), id)
            }
            ClientMessage::InvalidateCache { server, tool, id } => {
                control(server, control::Action::InvalidateCache { tool }, id)
            }
            ClientMessage::Disable { server, id } => control(server, control::Action::Disable, id),
            ClientMessage::Enable { server, id } => control(server, control::Action::Enable, id),
            other => return self.on_stream_message(other).await,
        };
        self.start_control(request, id).await
    }

    /// Starts a control action; its answer is sent when it is done (the loop polls
    /// `pending`), so a probe in flight holds up nothing else.
    async fn start_control(
        &mut self,
        request: control::Request,
        id: Option<CorrelationId>,
    ) -> Flow {
        let action = request.action.as_str();
        let server = request.server.clone();
        if matches!(&id, Some(CorrelationId::Text(t)) if t.len() > 64) {
            let body = json!({"type": "error", "action": action, "server": server,
                "error": "bad_request", "message": "id: at most 64 bytes"});
            return self.reply(body).await;
        }
        if self.pending.len() >= MAX_PENDING_CONTROLS {
            let body = tagged(
                json!({"type": "error", "action": action, "server": server,
                "error": "too_many_pending",
                "message": format!("at most {MAX_PENDING_CONTROLS} control actions in flight per connection")}),
                &id,
            );
            return self.reply(body).await;
        }
        let shared = self.shared.clone();
        let identity = self.identity.clone();
        self.pending.push(Box::pin(async move {
            match control::execute(&shared, &identity, request).await {
                Ok(mut body) => {
                    if let Some(map) = body.as_object_mut() {
                        map.insert("type".to_owned(), json!("result"));
                        map.insert("ok".to_owned(), json!(true));
                    }
                    tagged(body, &id)
                }
                Err(e) => tagged(
                    json!({"type": "error", "action": action, "server": server,
                    "error": e.code(), "message": e.message()}),
                    &id,
                ),
            }
        }));
        Flow::Continue
    }

    /// The stream messages: ping, resync, subscribe, unsubscribe.
    async fn on_stream_message(&mut self, message: ClientMessage) -> Flow {
        match message {
            ClientMessage::Ping => self.reply(json!({"type": "pong"})).await,
            ClientMessage::Resync => self.send_snapshot().await,
            ClientMessage::Subscribe { servers, events } => {
                let events = match parse_kinds(events) {
                    Ok(e) => e,
                    Err(m) => return self.reply(json!({"type": "error", "message": m})).await,
                };
                *self.out.filter.borrow_mut() = Filter {
                    servers: servers.map(|s| s.into_iter().collect()),
                    events,
                    is_paused: false,
                };
                self.ack("subscribed").await
            }
            ClientMessage::Unsubscribe { servers, events } => {
                if servers.is_none() && events.is_none() {
                    self.out.filter.borrow_mut().is_paused = true;
                    return self.ack("unsubscribed").await;
                }
                let events = match parse_kinds(events) {
                    Ok(e) => e,
                    Err(m) => return self.reply(json!({"type": "error", "message": m})).await,
                };
                self.narrow_filter(servers, events);
                self.ack("unsubscribed").await
            }
            ClientMessage::SubscribeAudit => {
                if self
                    .identity
                    .require_any(&self.shared.config.roles.control)
                    .is_err()
                {
                    let body = json!({"type": "error", "action": "subscribe_audit",
                        "error": "role_denied",
                        "message": "the audit topic needs an admin role (roles.control)"});
                    return self.reply(body).await;
                }
                if self.audit.is_none() {
                    self.audit = Some(self.shared.audit.subscribe());
                    tracing::info!(user = %self.identity.id, "Audit topic subscribed.");
                }
                self.reply(json!({"type": "audit_subscribed"})).await
            }
            ClientMessage::UnsubscribeAudit => {
                self.audit = None;
                self.reply(json!({"type": "audit_unsubscribed"})).await
            }
            // Control actions are routed by `on_text`.
            _ => Flow::Continue,
        }
    }

    /// `unsubscribe` with lists: removes them from the filter (from "all" if it had none).
    fn narrow_filter(&self, servers: Option<Vec<String>>, events: Option<HashSet<EventKind>>) {
        let mut filter = self.out.filter.borrow_mut();
        if let Some(remove) = servers {
            let set = filter.servers.get_or_insert_with(|| {
                let snapshot = self.shared.published.snapshot.borrow();
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
            let set = filter.events.get_or_insert_with(all_kinds);
            for k in remove {
                set.remove(&k);
            }
        }
    }

    async fn ack(&mut self, kind: &str) -> Flow {
        let body = {
            let filter = self.out.filter.borrow();
            let mut servers: Option<Vec<&String>> =
                filter.servers.as_ref().map(|s| s.iter().collect());
            if let Some(s) = servers.as_mut() {
                s.sort();
            }
            let mut events: Option<Vec<&str>> = filter
                .events
                .as_ref()
                .map(|e| e.iter().map(|k| k.as_str()).collect());
            if let Some(e) = events.as_mut() {
                e.sort_unstable();
            }
            json!({"type": kind, "servers": servers, "events": events, "paused": filter.is_paused})
        };
        self.reply(body).await
    }
}

/// The `omni2_ws_closes_total` reason of a close we send (by its description).
fn close_label(why: &str) -> &'static str {
    match why {
        "server shutting down" => ws_close::SHUTDOWN,
        "token expired" => ws_close::TOKEN_EXPIRED,
        "client too slow" => ws_close::TOO_SLOW,
        "idle timeout" => ws_close::IDLE,
        "closed" => ws_close::SEND_FAILED,
        _ => ws_close::CLIENT,
    }
}

/// `body` with the client's `id`, if it sent one.
fn tagged(mut body: serde_json::Value, id: &Option<CorrelationId>) -> serde_json::Value {
    if let (Some(map), Some(id)) = (body.as_object_mut(), id) {
        map.insert("id".to_owned(), json!(id));
    }
    body
}

fn all_kinds() -> HashSet<EventKind> {
    EventKind::ALL.into_iter().collect()
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

#[cfg(test)]
mod origin_tests {
    use actix_web::test::TestRequest;

    use super::origin_allowed;

    #[test]
    fn absent_or_listed_origin_passes_anything_else_fails_closed() {
        let allowed = ["https://app.example.com".to_owned()];
        let check = |origins: &[&str]| {
            let mut req = TestRequest::default();
            for o in origins {
                req = req.append_header(("origin", *o));
            }
            origin_allowed(&req.to_http_request(), &allowed)
        };
        assert!(check(&[]), "no Origin: a non-browser client");
        assert!(check(&["https://app.example.com"]));
        assert!(
            check(&["HTTPS://APP.EXAMPLE.COM"]),
            "scheme and host are case-insensitive"
        );
        for bad in ["https://evil.example", "http://app.example.com", "null", ""] {
            assert!(!check(&[bad]), "{bad}");
        }
        assert!(
            !check(&["https://app.example.com", "https://app.example.com"]),
            "two Origins"
        );
        assert!(
            !origin_allowed(
                &TestRequest::default()
                    .append_header(("origin", "https://app.example.com"))
                    .to_http_request(),
                &[]
            ),
            "empty list: every browser origin refused"
        );
    }
}
