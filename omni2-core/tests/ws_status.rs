//! `/ws/mcp-status` with a real WebSocket client (tokio-tungstenite) against the real binary.

use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
const WAIT: Duration = Duration::from_secs(20);

fn request(
    o: &Omni2,
    headers: &[(String, String)],
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = o.ws_url().into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::try_from(k.as_str()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    req
}

pub(crate) async fn connect(o: &Omni2, headers: &[(String, String)]) -> Ws {
    tokio_tungstenite::connect_async(request(o, headers))
        .await
        .expect("upgrade")
        .0
}

/// Next text message as JSON, or `{"close": code}`; skips pings. Bounded by WAIT.
pub(crate) async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message within the deadline");
        match m {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON message"),
            Some(Ok(Message::Close(frame))) => {
                return json!({"close": frame.map(|f| u16::from(f.code)), "reason": ""});
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return json!({"close": null, "error": e.to_string()}),
            None => return json!({"close": null}),
        }
    }
}

pub(crate) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// Reads until `pred` matches, checking that `seq` never skips. Returns the match.
pub(crate) async fn until(ws: &mut Ws, last_seq: &mut u64, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let m = next(ws).await;
        assert!(m.get("close").is_none(), "closed early: {m}");
        let seq = m["seq"].as_u64().expect("seq");
        assert_eq!(seq, *last_seq + 1, "contiguous seq: {m}");
        *last_seq = seq;
        if pred(&m) {
            return m;
        }
    }
}

#[tokio::test]
async fn snapshot_then_deltas_with_sequence_numbers_and_filters() {
    let mut a = McpServer::start(&["--json"]);
    let mut b = McpServer::start(&["--json"]);
    let o = Omni2::start(&config(&[("a", &a.url()), ("b", &b.url())], ""), None);
    let http = http_client();
    for s in ["a", "b"] {
        eventually("healthy", WAIT, || async {
            (server_status(&http, &o, s).await["state"] == "healthy").then_some(())
        })
        .await;
    }

    let mut all = connect(&o, &user()).await;
    let snap = next(&mut all).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["seq"], 1);
    let servers = snap["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0]["state"], "healthy");
    assert_eq!(servers[0]["circuit"], "closed");
    assert!(servers[0]["tool_count"].as_u64().is_some_and(|n| n >= 5));
    let mut seq_all = 1;

    let mut only_b = connect(&o, &user()).await;
    assert_eq!(next(&mut only_b).await["type"], "snapshot");
    let mut seq_b = 1;
    send(
        &mut only_b,
        json!({"action": "subscribe", "servers": ["b"], "events": ["server_status"]}),
    )
    .await;
    let ack = until(&mut only_b, &mut seq_b, |m| m["type"] == "subscribed").await;
    assert_eq!(ack["servers"], json!(["b"]));

    // Ping, malformed input (connection stays open), resync.
    send(&mut only_b, json!({"action": "ping"})).await;
    until(&mut only_b, &mut seq_b, |m| m["type"] == "pong").await;
    only_b
        .send(Message::Text("{not json".into()))
        .await
        .expect("send");
    until(&mut only_b, &mut seq_b, |m| m["type"] == "error").await;
    send(&mut only_b, json!({"action": "dance"})).await;
    until(&mut only_b, &mut seq_b, |m| m["type"] == "error").await;
    send(&mut only_b, json!({"action": "resync"})).await;
    let resync = until(&mut only_b, &mut seq_b, |m| m["type"] == "snapshot").await;
    assert_eq!(
        resync["servers"].as_array().expect("servers").len(),
        1,
        "filtered snapshot"
    );

    // A status change of `a` reaches the unfiltered client as the next sequence number...
    a.kill();
    let delta = until(&mut all, &mut seq_all, |m| {
        m["type"] == "server_status" && m["server"] == "a" && m["state"] == "unhealthy"
    })
    .await;
    assert!(delta["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
    until(&mut all, &mut seq_all, |m| {
        m["type"] == "circuit_state" && m["server"] == "a" && m["to"] == "open"
    })
    .await;
    // ...but not the client subscribed to `b` only: its next message is about b.
    b.kill();
    let m = until(&mut only_b, &mut seq_b, |m| {
        assert_eq!(m["type"], "server_status", "event filter: {m}");
        assert_eq!(m["server"], "b", "server filter: {m}");
        m["state"] == "unhealthy"
    })
    .await;
    assert!(
        m["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{m}"
    );
}

#[tokio::test]
async fn refused_upgrades_expiry_limits_and_shutdown() {
    let extra = "roles: {ws_status: [ops]}\nwebsocket: {max_connections: 2}\n";
    let mut o = Omni2::start(&config(&[], extra), None);

    // No identity: 401, no upgrade. Wrong role: 403.
    match tokio_tungstenite::connect_async(request(&o, &[])).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected a refused upgrade, got {other:?}"),
    }
    match tokio_tungstenite::connect_async(request(&o, &user())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected a refused upgrade, got {other:?}"),
    }

    // Expiring identity: closed with 1008 once X-Auth-Expires passes.
    let ops = |exp| identity("op", "ops", exp, None);
    let mut expiring = connect(&o, &ops(unix_now() + 2)).await;
    assert_eq!(next(&mut expiring).await["type"], "snapshot");
    let mut keep = connect(&o, &ops(unix_now() + 3600)).await;
    assert_eq!(next(&mut keep).await["type"], "snapshot");
    // Over the limit of 2: accepted, then closed with 1013.
    let mut extra_conn = connect(&o, &ops(unix_now() + 3600)).await;
    assert_eq!(next(&mut extra_conn).await["close"], 1013);
    let closed = next(&mut expiring).await;
    assert_eq!(closed["close"], 1008, "{closed}");

    // SIGTERM: open sockets are closed with 1001 and the process exits.
    o.sigterm();
    assert_eq!(next(&mut keep).await["close"], 1001);
    assert!(o.wait_exit(Duration::from_secs(15)), "clean exit");
}

#[tokio::test]
async fn a_client_that_does_not_read_does_not_delay_one_that_does() {
    // 200 (disabled) servers make each snapshot ~30 KB; cache stats every 5 ms keep the
    // reader busy; a small per-connection queue and send timeout.
    let mut extra = String::from(
        "websocket: {queue: 16, send_timeout: 200ms, max_lag_strikes: 3, cache_stats_interval: 5ms}\nservers:\n",
    );
    for i in 0..200 {
        extra.push_str(&format!(
            "  - {{name: server-{i:03}-with-a-rather-long-name-to-make-snapshots-big, url: http://127.0.0.1:9/mcp, enabled: false}}\n"
        ));
    }
    let o = Omni2::start(&extra, None);
    let http = http_client();

    // The stalled client: a 4 KiB receive buffer; it asks for 2000 snapshots (~60 MB) and
    // never reads.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket
        .connect(o.addr.parse().expect("addr"))
        .await
        .expect("connect");
    let (mut stalled, _) =
        tokio_tungstenite::client_async(request(&o, &user()), MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade");
    for _ in 0..2000 {
        stalled
            .feed(Message::Text(r#"{"action":"resync"}"#.into()))
            .await
            .expect("feed");
    }
    stalled.flush().await.expect("flush");

    // The reader keeps getting every message, in order, while the other one is stuck.
    let mut reader = connect(&o, &user()).await;
    let mut seq = 0;
    for _ in 0..300 {
        until(&mut reader, &mut seq, |_| true).await;
    }
    // The stalled client's lag is counted...
    eventually("drops counted", WAIT, || async {
        let text = http
            .get(o.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let dropped: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("omni2_ws_dropped_total "))?
            .parse()
            .ok()?;
        (dropped > 0.0).then_some(())
    })
    .await;
    // ...and it is closed with 1013 (reading now drains what was buffered, then the close).
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stalled.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("stalled connection ends");
    assert_eq!(end, Some(1013));
    // The reader is still fine.
    until(&mut reader, &mut seq, |_| true).await;
}

#[tokio::test]
async fn heartbeat_keeps_readers_and_closes_silent_clients() {
    let extra = "websocket: {heartbeat_interval: 100ms, client_timeout: 400ms}\n";
    let o = Omni2::start(&config(&[], extra), None);
    let mut reader = connect(&o, &user()).await;
    let mut silent = connect(&o, &user()).await;
    // The reader polls its socket, so tungstenite answers every server ping with a pong.
    let mut pings = 0;
    let read_for = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(m) = tokio::time::timeout_at(read_for, reader.next()).await {
        match m {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(f))) => panic!("reader closed: {f:?}"),
            Some(Ok(_)) => {}
            other => panic!("reader ended: {other:?}"),
        }
    }
    assert!(pings >= 3, "server pings every heartbeat_interval: {pings}");
    // The silent one never polled, so never answered: it was closed for idling. Read its
    // raw bytes (tungstenite would try to answer the queued pings first and hit the closed
    // socket) and look for the close frame: FIN+close opcode, length, 1000, reason.
    use tokio::io::AsyncReadExt;
    let MaybeTlsStream::Plain(tcp) = silent.get_mut() else {
        panic!("plain TCP")
    };
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .expect("closed in time")
        .expect("read");
    let mut frame = vec![0x88, 14, 0x03, 0xE8];
    frame.extend_from_slice(b"idle timeout");
    assert!(
        raw.windows(frame.len()).any(|w| w == frame.as_slice()),
        "no 1000 \"idle timeout\" close frame in {raw:?}"
    );
}

#[tokio::test]
async fn every_client_of_a_busy_worker_gets_every_delta() {
    // 400 clients over the 2 workers: each worker's fan-out serves more connections per
    // event than tokio's cooperative budget (128) and than one fan-out chunk, so a send
    // refused for budget reasons would show up here as a gap or a counted drop.
    let extra = "websocket: {cache_stats_interval: 50ms, max_connections: 1000}\n";
    let o = Omni2::start(&config(&[], extra), None);
    let mut clients = Vec::new();
    for _ in 0..400 {
        let mut ws = connect(&o, &user()).await;
        assert_eq!(next(&mut ws).await["type"], "snapshot");
        clients.push(ws);
    }
    // Each client sees three `cache_stats` deltas with contiguous `seq`.
    let reads = clients.iter_mut().map(|ws| async move {
        let mut seq = 1;
        for _ in 0..3 {
            until(ws, &mut seq, |m| m["type"] == "cache_stats").await;
        }
        seq
    });
    let seqs = futures_util::future::join_all(reads).await;
    assert!(seqs.iter().all(|&s| s >= 4), "{seqs:?}");
    let metrics = reqwest::get(o.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    assert_eq!(
        value("omni2_ws_dropped_total"),
        0.0,
        "no client missed a delta"
    );
    assert!(value("omni2_ws_messages_total") >= 400.0 * 4.0);
}

#[tokio::test]
async fn origin_allow_list_refuses_other_browser_origins_at_the_handshake() {
    let extra = "websocket: {allowed_origins: [\"https://App.Example.com\"]}\n";
    let o = Omni2::start(&config(&[], extra), None);
    let origin = |o: &str| ("origin".to_owned(), o.to_owned());
    let http = http_client();

    // Listed (case-insensitively), and absent (a non-browser client): both upgrade.
    for extra in [vec![origin("https://app.example.com")], vec![]] {
        let mut ws = connect(&o, &[user(), extra].concat()).await;
        assert_eq!(next(&mut ws).await["type"], "snapshot");
    }
    // Another site, a look-alike, another port, the opaque `null`: 403 before identity is
    // even read, with a body that says why; counted.
    for bad in [
        "https://evil.example.com",
        "https://app.example.com.evil.test",
        "https://app.example.com:8443",
        "null",
    ] {
        match tokio_tungstenite::connect_async(request(&o, &[user(), vec![origin(bad)]].concat()))
            .await
        {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 403, "{bad}");
                let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default());
                assert!(body.contains("origin_not_allowed"), "{bad}: {body}");
            }
            other => panic!("{bad}: expected a refused upgrade, got {other:?}"),
        }
    }
    let metrics = o.metrics(&http).await;
    assert!(
        metrics.contains("omni2_ws_origin_refused_total 4"),
        "{metrics}"
    );
}
