//! The status page in a real browser (headless Chromium over WebDriver), served by the
//! release omni2 behind real Traefik and the release sidecar with the shipped configs,
//! watching real Python MCP servers. The page holds no data: everything it shows came over
//! `/ws/mcp-status`. Each test saves screenshots under `target/screenshots/`.

use std::time::Duration;

use e2e::browser::Browser;
use e2e::process::eventually;
use e2e::status::StatusStack;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// What the page shows, read from its DOM.
const READ_PAGE: &str = r#"
const rows = {};
for (const r of document.querySelectorAll('#server-rows tr[data-server]')) {
  rows[r.dataset.server] = {
    state: r.dataset.state,
    circuit: r.dataset.circuit,
    stale: r.classList.contains('stale'),
    buttons: [...r.querySelectorAll('button')].map((b) => b.dataset.action),
  };
}
const log = [...document.querySelectorAll('#log li')].map((li) => ({
  type: li.dataset.type, server: li.dataset.server, hidden: li.hidden, text: li.textContent,
}));
return {
  conn: document.getElementById('conn').dataset.state,
  reason: document.getElementById('conn-reason').textContent,
  you: document.getElementById('you').textContent,
  action: document.getElementById('action-status').textContent,
  rows, log,
};
"#;

async fn page(b: &Browser) -> Value {
    b.js(READ_PAGE, vec![]).await
}

/// Polls the page until `pred` holds (bounded by WAIT); returns that reading.
async fn until(b: &Browser, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let pred = &pred;
    eventually(what, WAIT, || async move {
        let p = page(b).await;
        if pred(&p) {
            Ok(p)
        } else {
            Err(format!("page: {p}"))
        }
    })
    .await
}

fn row<'a>(p: &'a Value, server: &str) -> &'a Value {
    &p["rows"][server]
}

fn live_row(p: &Value, server: &str, state: &str) -> bool {
    p["conn"] == "connected" && row(p, server)["state"] == state && row(p, server)["stale"] == false
}

/// Opens the page and connects with `token` pasted into the form.
async fn open(stack: &StatusStack, token: &str) -> Browser {
    let b = Browser::start(stack.dir.path()).await;
    b.goto(&stack.page_url()).await;
    b.type_into("#token", token).await;
    b.click("#token-form button[type=submit]").await;
    b
}

#[tokio::test]
async fn the_page_follows_servers_and_reconnects_without_a_reload() {
    let mut stack = StatusStack::start().await;
    let admin = stack.sidecar.token("root", "admin");
    let b = open(&stack, &admin).await;

    // The snapshot: both servers, live.
    let p = until(&b, "the snapshot shows both servers healthy", |p| {
        live_row(p, "fast", "healthy") && live_row(p, "slow", "healthy")
    })
    .await;
    assert!(p["you"].as_str().is_some_and(|y| y.contains("root")), "{p}");
    let stored = b
        .js("return localStorage.getItem('access_token');", vec![])
        .await;
    assert_eq!(
        stored,
        json!(admin),
        "the pasted token is kept in localStorage"
    );
    println!(
        "screenshot: {}",
        b.screenshot("status-snapshot").await.display()
    );

    // Opt in to notifications (granted by the profile); record what the page raises.
    assert_eq!(b.record_notifications().await, "granted");
    b.click("#notify").await;

    // Filter the log to `slow`, then make `fast` produce events.
    b.js(
        "const s = document.getElementById('filter-server');
         s.value = 'slow'; s.dispatchEvent(new Event('change'));",
        vec![],
    )
    .await;
    stack.stop_fast();
    let p = until(
        &b,
        "fast turns unhealthy, circuit open, without a reload",
        |p| live_row(p, "fast", "unhealthy") && row(p, "fast")["circuit"] == "open",
    )
    .await;
    let log = p["log"].as_array().expect("log");
    let fast_events: Vec<&Value> = log.iter().filter(|e| e["server"] == "fast").collect();
    assert!(!fast_events.is_empty(), "fast's events are in the log: {p}");
    assert!(
        fast_events.iter().all(|e| e["hidden"] == true),
        "the filter hides other servers' events: {p}"
    );
    assert!(
        log.iter()
            .filter(|e| e["hidden"] == false)
            .all(|e| e["server"] == "slow" || e["type"] == "connection"),
        "{p}"
    );
    // Notifications: one for unhealthy, one for the open circuit.
    let notes = eventually("notifications raised", WAIT, || async {
        let n = b.notifications().await;
        let titles: Vec<String> = n
            .iter()
            .filter_map(|x| x["title"].as_str().map(str::to_owned))
            .collect();
        let ok = titles.iter().any(|t| t.contains("fast is unhealthy"))
            && titles.iter().any(|t| t.contains("fast: circuit open"));
        if ok {
            Ok(titles)
        } else {
            Err(format!("{titles:?}"))
        }
    })
    .await;
    println!("notifications: {notes:?}");

    // Clearing the filter shows them again.
    b.js(
        "const s = document.getElementById('filter-server');
         s.value = ''; s.dispatchEvent(new Event('change'));",
        vec![],
    )
    .await;
    let p = page(&b).await;
    assert!(
        p["log"]
            .as_array()
            .expect("log")
            .iter()
            .any(|e| e["server"] == "fast" && e["hidden"] == false),
        "{p}"
    );

    println!(
        "screenshot: {}",
        b.screenshot("status-unhealthy").await.display()
    );

    // Back up: the row turns healthy again (the breaker stays open for an hour).
    stack.start_fast_again().await;
    until(&b, "fast healthy again", |p| live_row(p, "fast", "healthy")).await;

    // omni2 restarts: reconnecting (rows marked stale), then live again.
    stack.stop_omni2();
    let p = until(&b, "reconnecting, rows stale", |p| {
        p["conn"] == "reconnecting"
            && row(p, "fast")["stale"] == true
            && row(p, "slow")["stale"] == true
    })
    .await;
    assert!(
        p["reason"].as_str().is_some_and(|r| r.contains("10")),
        "a close code is shown: {p}"
    );
    println!(
        "screenshot: {}",
        b.screenshot("status-reconnecting").await.display()
    );
    stack.start_omni2_again().await;
    until(&b, "live again after the restart", |p| {
        live_row(p, "fast", "healthy") && live_row(p, "slow", "healthy")
    })
    .await;
    println!(
        "screenshot: {}",
        b.screenshot("status-reconnected").await.display()
    );
    b.close().await;
}

/// Sends one control message from the page's origin on a socket of its own with `token`,
/// and returns the answer (through Traefik and the sidecar, like the page's own).
async fn control_as(b: &Browser, token: &str, message: Value) -> Value {
    b.js(
        "const [token, message] = [arguments[0], arguments[1]];
         const url = 'ws://' + location.host + '/ws/mcp-status?access_token=' + encodeURIComponent(token);
         // WebDriver waits for a returned promise.
         return new Promise((resolve) => {
           const ws = new WebSocket(url);
           const timer = setTimeout(() => resolve({timeout: true}), 20000);
           ws.onmessage = (ev) => {
             const m = JSON.parse(ev.data);
             if (m.type === 'snapshot') ws.send(JSON.stringify(message));
             else if (m.type === 'result' || m.type === 'error') {
               clearTimeout(timer); ws.close(); resolve(m);
             }
           };
           ws.onclose = (ev) => { clearTimeout(timer); resolve({closed: ev.code}); };
         });",
        vec![json!(token), message],
    )
    .await
}

#[tokio::test]
async fn admin_controls_take_effect_and_a_users_are_refused() {
    let mut stack = StatusStack::start().await;
    let admin = stack.sidecar.token("root", "admin");
    let user = stack.sidecar.token("alice", "user");
    let b = open(&stack, &admin).await;
    let p = until(&b, "both healthy, with admin buttons", |p| {
        live_row(p, "fast", "healthy")
            && live_row(p, "slow", "healthy")
            && row(p, "slow")["buttons"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
    })
    .await;
    assert_eq!(
        row(&p, "slow")["buttons"],
        json!([
            "probe",
            "reset_breaker:closed",
            "reset_breaker:half_open",
            "invalidate_cache",
            "disable"
        ])
    );

    // `slow` is probed once an hour: its outage shows only when someone probes.
    stack.stop_slow();
    // A user's probe is refused by omni2 (a clear error), and nothing changes.
    let refused = control_as(
        &b,
        &user,
        json!({"action": "probe", "server": "slow", "id": "u1"}),
    )
    .await;
    assert_eq!(
        (refused["type"].as_str(), refused["error"].as_str()),
        (Some("error"), Some("role_denied")),
        "{refused}"
    );
    assert_eq!(row(&page(&b).await, "slow")["state"], "healthy");
    // The admin's "Probe now": the row turns unhealthy at once.
    b.click("tr[data-server=slow] button[data-action=probe]")
        .await;
    let p = until(&b, "slow unhealthy after probe now", |p| {
        live_row(p, "slow", "unhealthy")
    })
    .await;
    assert!(
        p["action"]
            .as_str()
            .is_some_and(|a| a.contains("probe slow: ok")),
        "{p}"
    );

    // `fast` down: its breaker opens and stays open (1 h); back up, it stays open.
    stack.stop_fast();
    until(&b, "fast's circuit open", |p| {
        row(p, "fast")["circuit"] == "open"
    })
    .await;
    stack.start_fast_again().await;
    until(&b, "fast healthy, circuit still open", |p| {
        live_row(p, "fast", "healthy") && row(p, "fast")["circuit"] == "open"
    })
    .await;
    // A user's reset is refused; the circuit stays open.
    let refused = control_as(
        &b,
        &user,
        json!({"action": "reset_breaker", "server": "fast", "id": "u2"}),
    )
    .await;
    assert_eq!(refused["error"], "role_denied", "{refused}");
    // The sidecar refuses a user's REST control call before omni2 sees it.
    let rest = e2e::http::send(
        &stack.traefik.target(),
        &e2e::http::Request::post_json("/api/v1/mcp/servers/fast/breaker/reset", &json!({}))
            .bearer(&user),
    )
    .await
    .expect("request");
    assert_eq!(rest.status, 403, "{}", rest.text());
    assert_eq!(row(&page(&b).await, "fast")["circuit"], "open");
    // The admin's "Reset breaker": closed.
    b.click("tr[data-server=fast] button[data-action='reset_breaker:closed']")
        .await;
    let p = until(&b, "fast's circuit closed by the reset", |p| {
        live_row(p, "fast", "healthy") && row(p, "fast")["circuit"] == "closed"
    })
    .await;
    assert!(
        p["action"]
            .as_str()
            .is_some_and(|a| a.contains("reset_breaker fast: ok")),
        "{p}"
    );
    println!(
        "screenshot: {}",
        b.screenshot("status-admin").await.display()
    );

    // A user sees no buttons at all.
    b.type_into("#token", &user).await;
    b.click("#token-form button[type=submit]").await;
    let p = until(&b, "connected as alice", |p| {
        p["conn"] == "connected" && p["you"].as_str().is_some_and(|y| y.contains("alice"))
    })
    .await;
    for server in ["fast", "slow"] {
        assert_eq!(row(&p, server)["buttons"], json!([]), "{p}");
    }
    println!(
        "screenshot: {}",
        b.screenshot("status-user").await.display()
    );
    drop(stack);
    b.close().await;
}

#[tokio::test]
async fn without_a_pasted_token_the_page_uses_the_session_cookie() {
    let stack = StatusStack::start_with_cookie(Some("omni2_session")).await;
    let user = stack.sidecar.token("alice", "user");
    let b = Browser::start(stack.dir.path()).await;
    // No token, no cookie: the socket is refused, and nothing is shown as live.
    b.goto(&stack.page_url()).await;
    let p = until(&b, "refused without a token", |p| {
        p["conn"] == "reconnecting" && p["reason"].as_str().is_some_and(|r| r.contains("1006"))
    })
    .await;
    assert_eq!(p["rows"], json!({}), "{p}");
    // The cookie a login flow would set (HttpOnly: the page never sees the token).
    b.add_cookie(&stack.page_url(), "omni2_session", &user)
        .await;
    b.goto(&stack.page_url()).await;
    let p = until(&b, "connected on the cookie", |p| {
        live_row(p, "fast", "healthy") && live_row(p, "slow", "healthy")
    })
    .await;
    assert!(
        p["you"].as_str().is_some_and(|y| y.contains("alice")),
        "{p}"
    );
    let stored = b
        .js("return localStorage.getItem('access_token');", vec![])
        .await;
    assert_eq!(stored, Value::Null, "no token was stored");
    println!(
        "screenshot: {}",
        b.screenshot("status-cookie").await.display()
    );
    b.close().await;
}

/// The call form and the audit stream, read from the DOM.
const READ_ADMIN_PANELS: &str = r#"
const q = (s) => document.querySelector(s);
return {
  call_hidden: q('#call-panel').hidden,
  audit_hidden: q('#audit-panel').hidden,
  audit_status: q('#audit-status').textContent,
  tools: [...document.querySelectorAll('#call-tool option')].map((o) => o.value).filter((v) => v),
  fields: [...document.querySelectorAll('#call-fields [data-key]')].map((i) => [i.dataset.key, i.type, i.required]),
  call_status: q('#call-status').textContent,
  call_result: q('#call-result').textContent,
  audit: [...document.querySelectorAll('#audit-log li')].map((li) => ({event: li.dataset.event, text: li.textContent})),
};
"#;

async fn panels_until(b: &Browser, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let pred = &pred;
    eventually(what, WAIT, || async move {
        let p = b.js(READ_ADMIN_PANELS, vec![]).await;
        if pred(&p) {
            Ok(p)
        } else {
            Err(format!("panels: {p}"))
        }
    })
    .await
}

/// Picks `value` in the `<select>` matching `css`, as a person would (a `change` event).
async fn pick(b: &Browser, css: &str, value: &str) {
    b.js(
        "const s = document.querySelector(arguments[0]);
         s.value = arguments[1]; s.dispatchEvent(new Event('change'));",
        vec![json!(css), json!(value)],
    )
    .await;
}

#[tokio::test]
async fn an_admin_calls_a_tool_from_its_schema_and_watches_the_audit_stream() {
    let stack = StatusStack::start().await;
    let admin = stack.sidecar.token("root", "admin");
    let user = stack.sidecar.token("alice", "user");
    let b = open(&stack, &admin).await;
    until(&b, "both healthy", |p| {
        live_row(p, "fast", "healthy") && live_row(p, "slow", "healthy")
    })
    .await;
    panels_until(&b, "the admin panels, audit live", |p| {
        p["call_hidden"] == false
            && p["audit_hidden"] == false
            && p["audit_status"]
                .as_str()
                .is_some_and(|s| s.contains("live"))
    })
    .await;

    // The form is generated from `add`'s inputSchema (two required integers).
    pick(&b, "#call-server", "fast").await;
    panels_until(&b, "fast's tools listed", |p| {
        p["tools"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("add")))
    })
    .await;
    pick(&b, "#call-tool", "add").await;
    let p = panels_until(&b, "fields for a and b", |p| {
        p["fields"].as_array().is_some_and(|f| f.len() == 2)
    })
    .await;
    assert_eq!(
        p["fields"],
        json!([["a", "number", true], ["b", "number", true]]),
        "{p}"
    );
    b.type_into("#arg-a", "2").await;
    b.type_into("#arg-b", "3").await;
    b.click("#call-submit").await;
    let p = panels_until(&b, "the call answered, and audited live", |p| {
        p["call_status"]
            .as_str()
            .is_some_and(|s| s.contains("HTTP 200"))
            && p["audit"].as_array().is_some_and(|a| {
                a.iter().any(|e| {
                    e["event"] == "tool_call"
                        && e["text"]
                            .as_str()
                            .is_some_and(|t| t.contains("root called fast/add: ok"))
                })
            })
    })
    .await;
    let result: Value =
        serde_json::from_str(p["call_result"].as_str().unwrap_or_default()).expect("JSON result");
    assert_eq!(result["structuredContent"]["result"], 5, "{result}");
    assert_eq!(result["isError"], false, "{result}");
    println!(
        "screenshot: {}",
        b.screenshot("status-tool-call").await.display()
    );

    // A user has neither panel, and omni2 refuses the audit topic to them.
    let refused = control_as(&b, &user, json!({"action": "subscribe_audit"})).await;
    assert_eq!(
        (refused["type"].as_str(), refused["error"].as_str()),
        (Some("error"), Some("role_denied")),
        "{refused}"
    );
    b.type_into("#token", &user).await;
    b.click("#token-form button[type=submit]").await;
    until(&b, "connected as alice", |p| {
        p["conn"] == "connected" && p["you"].as_str().is_some_and(|y| y.contains("alice"))
    })
    .await;
    let p = b.js(READ_ADMIN_PANELS, vec![]).await;
    assert_eq!(
        (&p["call_hidden"], &p["audit_hidden"]),
        (&json!(true), &json!(true)),
        "{p}"
    );
    b.close().await;
}
