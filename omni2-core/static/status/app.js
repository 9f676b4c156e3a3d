// omni2 status page. Holds no data of its own: everything comes from /ws/mcp-status
// (docs/websocket.md). No framework, no build step; DOM text only (never innerHTML).
"use strict";

(function () {
  const LOG_LIMIT = 500;        // entries kept in the event log
  const AUDIT_LIMIT = 200;      // entries kept in the audit stream
  const HELD_LIMIT = 500;       // entries held back while paused
  const SPARK_POINTS = 40;      // latency samples per server
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const PING_EVERY_MS = 20000;  // app-level ping: a dead connection must not look live
  const PONG_WITHIN_MS = 10000;
  const ACTION_LABELS = {
    probe: "Probe now",
    reset_breaker: "Reset breaker",
    half_open: "Half-open",
    invalidate_cache: "Clear cache",
    disable: "Disable",
    enable: "Enable",
  };
  const CLOSE_REASONS = {
    1000: "closed",
    1001: "server restarting or shutting down",
    1005: "closed without a code",
    1006: "connection lost or refused (server down, or token refused)",
    1008: "token expired or refused",
    1011: "server error",
    1013: "server busy (too many connections, or this page fell behind)",
  };

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  const SVG = "http://www.w3.org/2000/svg";

  const servers = new Map();  // name -> {status, latencies: [], row, cells}
  let you = { user: "", roles: [], actions: [] };
  let ws = null;
  let lastSeq = 0;
  let attempt = 0;
  let retryTimer = null;
  let pingTimer = null;
  let pongTimer = null;
  let live = false;
  let paused = false;
  let held = [];
  let nextId = 1;
  let shownCount = 0;           // visible entries in #log, kept current (no O(n) recount)
  let auditOn = false;          // this socket is subscribed to the audit topic
  let callTools = [];           // tools of the server picked in the call form

  // ---- connection -------------------------------------------------------------------

  function token() {
    try { return localStorage.getItem("access_token") || ""; } catch (_) { return ""; }
  }

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const t = token();
    // Browsers cannot set Authorization on a WebSocket: the gateway accepts the query
    // token on this path only. Without one, the session cookie (if any) is sent.
    const q = t ? "?access_token=" + encodeURIComponent(t) : "";
    return scheme + "//" + location.host + "/ws/mcp-status" + q;
  }

  function setConn(state, reason) {
    const c = $("conn");
    c.dataset.state = state;
    $("conn-text").textContent = state;
    $("conn-reason").textContent = reason ? "(" + reason + ")" : "";
  }

  function connect() {
    clearTimeout(retryTimer);
    if (ws) {
      // A new token or a manual reconnect: what the old socket showed is not live any more.
      ws.onclose = null;
      ws.close();
      stopPings();
      markStale(true);
      setConn("reconnecting", "connecting");
    }
    lastSeq = 0;
    let socket;
    try {
      socket = new WebSocket(socketUrl());
    } catch (e) {
      scheduleReconnect("cannot open: " + e.message);
      return;
    }
    ws = socket;
    socket.onmessage = (ev) => onMessage(socket, ev);
    socket.onclose = (ev) => {
      if (ws !== socket) return;
      const why = CLOSE_REASONS[ev.code] || "code " + ev.code;
      const reason = ev.code + " " + (ev.reason || why);
      logEntry("connection", "", "closed: " + reason);
      scheduleReconnect(reason);
    };
  }

  function scheduleReconnect(reason) {
    live = false;
    stopPings();
    markStale(true);
    ws = null;
    // Exponential backoff with jitter: many pages must not come back in lockstep.
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(attempt, 10));
    const delay = cap / 2 + Math.random() * cap / 2;
    attempt += 1;
    setConn(navigator.onLine === false ? "offline" : "reconnecting", reason);
    retryTimer = setTimeout(connect, delay);
  }

  function startPings(socket) {
    stopPings();
    pingTimer = setInterval(() => {
      if (socket.readyState !== WebSocket.OPEN) return;
      socket.send(JSON.stringify({ action: "ping" }));
      clearTimeout(pongTimer);
      pongTimer = setTimeout(() => socket.close(4000, "no pong"), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  function stopPings() {
    clearInterval(pingTimer);
    clearTimeout(pongTimer);
  }

  function send(message) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(message));
    return true;
  }

  function resync(why) {
    logEntry("connection", "", "resync: " + why);
    send({ action: "resync" });
  }

  // ---- messages ---------------------------------------------------------------------

  function onMessage(socket, ev) {
    if (ws !== socket) return;
    let m;
    try { m = JSON.parse(ev.data); } catch (_) { return; }
    if (typeof m.seq === "number") {
      const gap = lastSeq !== 0 && m.seq !== lastSeq + 1;
      lastSeq = m.seq;
      if (gap && m.type !== "snapshot") {
        resync("sequence gap");
      }
    }
    switch (m.type) {
      case "snapshot": return onSnapshot(socket, m);
      case "server_status": return onStatus(m);
      case "circuit_state": return onCircuit(m);
      case "tools_changed": return onTools(m);
      case "cache_stats":
        return logEntry("cache_stats", "", statsText(m.stats || {}));
      case "server_added": return onAdded(m);
      case "server_removed": return onRemoved(m);
      case "audit": return onAudit(m.event || {});
      case "audit_subscribed":
        auditOn = true;
        $("audit-status").textContent = "live: tool calls, cache invalidations and control actions";
        return;
      case "audit_unsubscribed":
        auditOn = false;
        return;
      case "audit_lagged":
        return auditEntry({ event: "lagged" }, m.missed + " events missed (this page fell behind)");
      case "result": return onResult(m);
      case "error": return onError(m);
      case "pong":
        clearTimeout(pongTimer);
        return;
      default:
        return;
    }
  }

  function onSnapshot(socket, m) {
    you = m.you || you;
    live = true;
    const seen = new Set();
    for (const s of m.servers || []) {
      seen.add(s.name);
      const entry = ensureServer(s.name);
      entry.status = Object.assign({}, entry.status, s);
      sample(entry, s.latency_ms);
      render(entry);
    }
    for (const [name, entry] of servers) {
      if (!seen.has(name)) {
        entry.row.remove();
        servers.delete(name);
      }
    }
    const empty = document.querySelector("#server-rows tr.empty");
    if (empty && servers.size > 0) empty.remove();
    refreshServerFilter();
    showYou();
    refreshCallServers();
    // Admins watch the audit topic; each new socket subscribes again.
    auditOn = false;
    if (isAdmin()) send({ action: "subscribe_audit" });
    else $("audit-status").textContent = "";
    markStale(false);
    attempt = 0;
    setConn("connected", "");
    startPings(socket);
    logEntry("connection", "", "snapshot: " + servers.size + " servers");
  }

  function onStatus(m) {
    const entry = ensureServer(m.server);
    const before = entry.status.state;
    entry.status = Object.assign({}, entry.status, {
      state: m.state, circuit: m.circuit, latency_ms: m.latency_ms,
      last_error: m.last_error, last_change: m.last_change, tool_count: m.tool_count,
    });
    sample(entry, m.latency_ms);
    render(entry);
    logEntry("server_status", m.server,
      m.state + (m.last_error ? " — " + m.last_error : "") + latencyText(m.latency_ms));
    if (m.state === "unhealthy" && before !== "unhealthy") {
      notify(m.server + " is unhealthy", m.last_error || "probe failed");
    }
  }

  function onCircuit(m) {
    const entry = ensureServer(m.server);
    entry.status = Object.assign({}, entry.status, { circuit: m.to });
    render(entry);
    logEntry("circuit_state", m.server, m.from + " → " + m.to);
    if (m.to === "open") notify(m.server + ": circuit open", "calls fail fast until it recovers");
  }

  function onTools(m) {
    const entry = ensureServer(m.server);
    entry.status = Object.assign({}, entry.status, { tool_count: m.tool_count });
    render(entry);
    logEntry("tools_changed", m.server, m.tool_count + " tools");
  }

  function onAdded(m) {
    const entry = ensureServer(m.server);
    entry.status = { name: m.server, state: m.state, circuit: m.circuit, latency_ms: m.latency_ms,
      last_error: m.last_error, last_change: m.last_change, tool_count: m.tool_count };
    entry.latencies = [];
    entry.actionsKey = null;
    entry.cells.actions.hidden = !isAdmin();
    render(entry);
    const empty = document.querySelector("#server-rows tr.empty");
    if (empty) empty.remove();
    refreshServerFilter();
    refreshCallServers();
    logEntry("server_added", m.server, m.replaced ? "configuration changed: replaced" : "added by a reload");
  }

  function onRemoved(m) {
    const entry = servers.get(m.server);
    if (entry) {
      entry.row.remove();
      servers.delete(m.server);
    }
    refreshServerFilter();
    refreshCallServers();
    logEntry("server_removed", m.server, "removed by a reload");
  }

  // ---- audit stream (admins) --------------------------------------------------------

  function onAudit(e) {
    let text;
    if (e.event === "tool_call") {
      text = e.user + " called " + e.server + "/" + e.tool + ": " + e.result +
        (e.cached ? " (cached)" : "") + " in " + (e.latency_us / 1000).toFixed(1) + " ms";
    } else if (e.event === "control_action") {
      text = e.user + " " + e.action + " " + e.target + ": " + e.result;
    } else if (e.event === "cache_invalidation") {
      text = e.user + " cleared the cache of " + (e.server || "every server") +
        (e.tool ? "/" + e.tool : "") + ": " + e.result;
    } else {
      text = JSON.stringify(e);
    }
    auditEntry(e, text);
  }

  function auditEntry(e, text) {
    const log = $("audit-log");
    const li = el("li", { "data-event": e.event || "", "data-server": e.server || "" });
    li.appendChild(el("span", { class: "t" }, e.time ? new Date(e.time).toLocaleTimeString() : new Date().toLocaleTimeString()));
    li.appendChild(el("span", { class: "k" }, e.event || "audit"));
    li.appendChild(document.createTextNode(text));
    log.appendChild(li);
    while (log.children.length > AUDIT_LIMIT) log.firstElementChild.remove();
    log.scrollTop = log.scrollHeight;
  }

  // ---- tool-call form (admins; the call goes through the REST route) ---------------

  function authHeaders() {
    const t = token();
    // Without a pasted token the gateway's session cookie (same origin) authenticates.
    return t ? { Authorization: "Bearer " + t } : {};
  }

  function refreshCallServers() {
    const select = $("call-server");
    const current = select.value;
    const names = [...servers.keys()].sort();
    select.replaceChildren(el("option", { value: "" }, "Pick a server"),
      ...names.map((n) => el("option", { value: n }, n)));
    select.value = names.includes(current) ? current : "";
  }

  async function loadTools() {
    const name = $("call-server").value;
    callTools = [];
    $("call-tool").replaceChildren();
    $("call-fields").replaceChildren(el("legend", {}, "Arguments"));
    $("call-description").textContent = "";
    if (!name) return;
    try {
      const r = await fetch("/api/v1/mcp/servers/" + encodeURIComponent(name),
        { headers: authHeaders(), credentials: "same-origin", cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const body = await r.json();
      callTools = Array.isArray(body.tools) ? body.tools : [];
    } catch (e) {
      callStatus("cannot list tools of " + name + ": " + e.message, true);
      return;
    }
    $("call-tool").replaceChildren(el("option", { value: "" }, "Pick a tool"),
      ...callTools.map((t) => el("option", { value: t.name }, t.name)));
    callStatus(callTools.length + " tools", false);
  }

  const SIMPLE = ["string", "integer", "number", "boolean"];

  // Fields for a schema of simple properties; null when it needs the raw JSON editor.
  function simpleProperties(schema) {
    if (!schema || schema.type !== "object") return null;
    const props = schema.properties || {};
    const list = Object.entries(props).map(([key, p]) => ({ key, p: p || {} }));
    if (!list.every(({ p }) => SIMPLE.includes(p.type) || Array.isArray(p.enum))) return null;
    const required = new Set(schema.required || []);
    return list.map(({ key, p }) => ({ key, p, required: required.has(key) }));
  }

  function buildForm() {
    const fields = $("call-fields");
    fields.replaceChildren(el("legend", {}, "Arguments"));
    const tool = callTools.find((t) => t.name === $("call-tool").value);
    $("call-description").textContent = tool ? (tool.description || "") : "";
    if (!tool) return;
    const simple = simpleProperties(tool.inputSchema);
    fields.dataset.mode = simple ? "fields" : "raw";
    if (!simple) {
      const id = "arg-raw";
      const wrap = el("div", { class: "field" });
      wrap.appendChild(el("label", { for: id }, "Arguments (JSON object)"));
      const area = el("textarea", { id, "data-raw": "1", spellcheck: "false" });
      area.value = "{}";
      wrap.appendChild(area);
      fields.appendChild(wrap);
      return;
    }
    for (const { key, p, required } of simple) {
      const id = "arg-" + key;
      const wrap = el("div", { class: "field" });
      wrap.appendChild(el("label", { for: id }, key + (required ? " *" : "")));
      let input;
      if (Array.isArray(p.enum)) {
        input = el("select", { id });
        if (!required) input.appendChild(el("option", { value: "" }, ""));
        for (const v of p.enum) input.appendChild(el("option", { value: JSON.stringify(v) }, String(v)));
      } else if (p.type === "boolean") {
        input = el("input", { id, type: "checkbox" });
        if (p.default === true) input.checked = true;
      } else {
        input = el("input", { id, type: p.type === "string" ? "text" : "number" });
        if (p.type === "integer") input.setAttribute("step", "1");
        if (p.type === "number") input.setAttribute("step", "any");
        if (p.default !== undefined) input.value = String(p.default);
        if (required) input.required = true;
      }
      input.dataset.key = key;
      input.dataset.type = Array.isArray(p.enum) ? "enum" : p.type;
      if (p.description) input.setAttribute("aria-description", p.description);
      wrap.appendChild(input);
      fields.appendChild(wrap);
    }
  }

  function collectArguments() {
    const fields = $("call-fields");
    const raw = fields.querySelector("textarea[data-raw]");
    if (raw) {
      const v = JSON.parse(raw.value || "{}");
      if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("arguments must be a JSON object");
      return v;
    }
    const args = {};
    for (const input of fields.querySelectorAll("[data-key]")) {
      const key = input.dataset.key, type = input.dataset.type;
      if (type === "boolean") { args[key] = input.checked; continue; }
      if (input.value === "") continue;  // optional and left empty: not sent
      if (type === "enum") args[key] = JSON.parse(input.value);
      else if (type === "integer") args[key] = parseInt(input.value, 10);
      else if (type === "number") args[key] = parseFloat(input.value);
      else args[key] = input.value;
    }
    return args;
  }

  async function callTool(ev) {
    ev.preventDefault();
    const server = $("call-server").value, tool = $("call-tool").value;
    if (!server || !tool) { callStatus("pick a server and a tool", true); return; }
    let args;
    try { args = collectArguments(); } catch (e) { callStatus("arguments: " + e.message, true); return; }
    callStatus("calling " + server + "/" + tool + "…", false);
    $("call-result").textContent = "";
    try {
      const r = await fetch("/api/v1/mcp/servers/" + encodeURIComponent(server) + "/tools/" +
        encodeURIComponent(tool) + "/call", {
        method: "POST", credentials: "same-origin", cache: "no-store",
        headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
        body: JSON.stringify(args),
      });
      const text = await r.text();
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
      $("call-result").textContent = shown;
      callStatus(server + "/" + tool + ": HTTP " + r.status, !r.ok);
    } catch (e) {
      callStatus(server + "/" + tool + ": " + e.message, true);
    }
  }

  function callStatus(text, isError) {
    const p = $("call-status");
    p.textContent = text;
    p.classList.toggle("error", isError);
  }

  function onResult(m) {
    let text = m.action + " " + m.server + ": ok";
    if (m.action === "probe") text += " — " + m.state + latencyText(m.latency_ms);
    if (m.action === "reset_breaker") text += " — " + m.from + " → " + m.to;
    if (m.action === "disable" || m.action === "enable") text += " — " + m.state;
    if (m.action === "probe" && m.server && servers.has(m.server)) {
      sample(servers.get(m.server), m.latency_ms);
      render(servers.get(m.server));
    }
    actionStatus(text, false);
    logEntry("result", m.server || "", text);
  }

  function onError(m) {
    const text = (m.action ? m.action + " " + (m.server || "") + ": " : "") +
      (m.error ? m.error + " — " : "") + (m.message || "error");
    if (m.action === "subscribe_audit") $("audit-status").textContent = text;
    else if (m.action) actionStatus(text, true);
    logEntry("error", m.server || "", text);
  }

  // ---- servers table ----------------------------------------------------------------

  function ensureServer(name) {
    let entry = servers.get(name);
    if (entry) return entry;
    const row = el("tr", { "data-server": name });
    const cells = {};
    for (const key of ["name", "state", "circuit", "latency", "trend", "error", "change", "tools", "actions"]) {
      cells[key] = el(key === "name" ? "th" : "td", key === "name" ? { scope: "row" } : {});
      row.appendChild(cells[key]);
    }
    cells.latency.className = "num";
    cells.tools.className = "num";
    cells.error.className = "err";
    cells.actions.className = "admin-only";
    cells.name.textContent = name;
    entry = { status: { name }, latencies: [], row, cells };
    servers.set(name, entry);
    $("server-rows").appendChild(row);
    return entry;
  }

  function sample(entry, latency) {
    if (typeof latency !== "number") return;
    entry.latencies.push(latency);
    if (entry.latencies.length > SPARK_POINTS) entry.latencies.shift();
  }

  function badge(text, cls) {
    return el("span", { class: "badge " + cls }, text.replace("_", "-"));
  }

  function render(entry) {
    const s = entry.status;
    const c = entry.cells;
    entry.row.dataset.state = s.state || "";
    entry.row.dataset.circuit = s.circuit || "";
    c.state.replaceChildren(badge(s.state || "?", s.state || ""));
    if (!live) c.state.appendChild(el("span", { class: "stale-note" }, "stale"));
    c.circuit.replaceChildren(badge(s.circuit || "?", s.circuit || ""));
    c.latency.textContent = typeof s.latency_ms === "number" ? s.latency_ms.toFixed(1) + " ms" : "—";
    c.trend.replaceChildren(sparkline(entry));
    c.error.replaceChildren(el("span", {}, s.last_error || ""));
    c.error.title = s.last_error || "";
    c.change.textContent = s.last_change ? new Date(s.last_change).toLocaleTimeString() : "";
    c.change.title = s.last_change || "";
    c.tools.textContent = s.tool_count === undefined ? "" : String(s.tool_count);
    renderActions(entry);
  }

  function sparkline(entry) {
    const w = 100, h = 24, pts = entry.latencies;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", w);
    svg.setAttribute("height", h);
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("role", "img");
    if (pts.length === 0) {
      svg.setAttribute("aria-label", "no latency samples yet");
      return svg;
    }
    const max = Math.max(...pts), min = Math.min(...pts);
    const span = max - min || 1;
    const step = pts.length > 1 ? w / (pts.length - 1) : 0;
    const coords = pts.map((v, i) =>
      (i * step).toFixed(1) + "," + (h - 2 - ((v - min) / span) * (h - 4)).toFixed(1));
    if (pts.length === 1) coords.push(w + "," + coords[0].split(",")[1]);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", coords.join(" "));
    svg.appendChild(line);
    svg.setAttribute("aria-label", "latency, last " + pts.length + " samples: " +
      min.toFixed(1) + " to " + max.toFixed(1) + " ms");
    return svg;
  }

  function can(action) {
    return (you.actions || []).includes(action);
  }

  function renderActions(entry) {
    const name = entry.status.name;
    // Rebuilt only when what they depend on changed: a delta a second must not churn
    // buttons and listeners.
    const key = [live, entry.status.state, (you.actions || []).join()].join("|");
    if (entry.actionsKey === key) return;
    entry.actionsKey = key;
    const wrap = el("div", { class: "actions" });
    const add = (label, message, action) => {
      if (!can(action)) return;
      const b = el("button", { type: "button", "data-action": message.action + (message.to ? ":" + message.to : ""),
        "aria-label": label + " " + name }, label);
      b.disabled = !live;
      b.addEventListener("click", () => control(Object.assign({ server: name }, message)));
      wrap.appendChild(b);
    };
    const disabled = entry.status.state === "disabled";
    if (!disabled) add(ACTION_LABELS.probe, { action: "probe" }, "probe");
    add(ACTION_LABELS.reset_breaker, { action: "reset_breaker", to: "closed" }, "reset_breaker");
    add(ACTION_LABELS.half_open, { action: "reset_breaker", to: "half_open" }, "reset_breaker");
    add(ACTION_LABELS.invalidate_cache, { action: "invalidate_cache" }, "invalidate_cache");
    if (disabled) add(ACTION_LABELS.enable, { action: "enable" }, "enable");
    else add(ACTION_LABELS.disable, { action: "disable" }, "disable");
    entry.cells.actions.replaceChildren(wrap);
  }

  function control(message) {
    message.id = "c" + nextId++;
    if (send(message)) actionStatus(message.action + " " + message.server + "…", false);
    else actionStatus("not connected", true);
  }

  function actionStatus(text, isError) {
    const p = $("action-status");
    p.textContent = text;
    p.classList.toggle("error", isError);
  }

  function markStale(stale) {
    if (stale) live = false;
    for (const entry of servers.values()) {
      entry.row.classList.toggle("stale", stale);
      render(entry);
    }
  }

  function isAdmin() {
    return (you.actions || []).length > 0;
  }

  function showYou() {
    const admin = isAdmin();
    for (const th of document.querySelectorAll("th.admin-only")) th.hidden = !admin;
    $("call-panel").hidden = !admin;
    $("audit-panel").hidden = !admin;
    for (const entry of servers.values()) entry.cells.actions.hidden = !admin;
    $("you").textContent = you.user ? "signed in as " + you.user +
      (you.roles && you.roles.length ? " (" + you.roles.join(", ") + ")" : "") : "";
  }

  // ---- event log --------------------------------------------------------------------

  function refreshServerFilter() {
    const select = $("filter-server");
    const current = select.value;
    const names = [...servers.keys()].sort();
    select.replaceChildren(el("option", { value: "" }, "All servers"),
      ...names.map((n) => el("option", { value: n }, n)));
    select.value = names.includes(current) ? current : "";
  }

  function logEntry(type, server, text) {
    const li = el("li", { "data-type": type, "data-server": server || "", class: type });
    li.appendChild(el("span", { class: "t" }, new Date().toLocaleTimeString()));
    li.appendChild(el("span", { class: "k" }, type + (server ? " " + server : "")));
    li.appendChild(document.createTextNode(text));
    if (paused) {
      held.push(li);
      if (held.length > HELD_LIMIT) held.shift();
      countText();
      return;
    }
    append(li);
  }

  function append(li) {
    const log = $("log");
    li.hidden = !matches(li);
    log.appendChild(li);
    if (!li.hidden) shownCount += 1;
    while (log.children.length > LOG_LIMIT) {
      if (!log.firstElementChild.hidden) shownCount -= 1;
      log.firstElementChild.remove();
    }
    if (!li.hidden) log.scrollTop = log.scrollHeight;
    countText();
  }

  function matches(li) {
    const s = $("filter-server").value, t = $("filter-type").value;
    // Connection events concern every server.
    const serverOk = !s || li.dataset.server === s || li.dataset.type === "connection";
    return serverOk && (!t || li.dataset.type === t);
  }

  function applyFilter() {
    // The one full pass: a filter change, not every event.
    shownCount = 0;
    for (const li of $("log").children) {
      li.hidden = !matches(li);
      if (!li.hidden) shownCount += 1;
    }
    countText();
  }

  // O(1) per event: `shownCount` is kept by append/applyFilter/clear, and
  // `children.length` is a live count. (It was a filter over every entry per event.)
  function countText() {
    $("log-count").textContent = shownCount + " of " + $("log").children.length + " shown" +
      (paused ? ", " + held.length + " held while paused" : "");
  }

  function statsText(s) {
    return "hits " + s.hits + ", misses " + s.misses + ", entries " + s.entries + ", bytes " + s.bytes;
  }

  function latencyText(ms) {
    return typeof ms === "number" ? " (" + ms.toFixed(1) + " ms)" : "";
  }

  // ---- notifications ----------------------------------------------------------------

  function notificationsOn() {
    return $("notify").checked && "Notification" in window && Notification.permission === "granted";
  }

  function notify(title, body) {
    if (!notificationsOn()) return;
    try {
      new Notification("omni2: " + title, { body: body, tag: "omni2-" + title });
    } catch (_) { /* some browsers only allow service-worker notifications */ }
  }

  async function onNotifyToggle() {
    const box = $("notify");
    if (box.checked && "Notification" in window && Notification.permission !== "granted") {
      const answer = await Notification.requestPermission();
      box.checked = answer === "granted";
    }
    try { localStorage.setItem("notify", box.checked ? "1" : "0"); } catch (_) { /* private mode */ }
  }

  // ---- wiring -----------------------------------------------------------------------

  function init() {
    $("token").value = token() ? "••••••••" : "";
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("token").value.trim();
      if (t && t !== "••••••••") {
        try { localStorage.setItem("access_token", t); } catch (_) { /* private mode */ }
      }
      attempt = 0;
      connect();
    });
    $("forget").addEventListener("click", () => {
      try { localStorage.removeItem("access_token"); } catch (_) { /* private mode */ }
      $("token").value = "";
      attempt = 0;
      connect();
    });
    try { $("notify").checked = localStorage.getItem("notify") === "1"; } catch (_) { /* private mode */ }
    $("notify").addEventListener("change", onNotifyToggle);
    $("filter-server").addEventListener("change", applyFilter);
    $("filter-type").addEventListener("change", applyFilter);
    $("pause").addEventListener("click", () => {
      paused = !paused;
      $("pause").setAttribute("aria-pressed", String(paused));
      $("pause").textContent = paused ? "Resume" : "Pause";
      if (!paused) {
        const flush = held;
        held = [];
        flush.forEach(append);
      }
      countText();
    });
    $("clear").addEventListener("click", () => {
      $("log").replaceChildren();
      held = [];
      shownCount = 0;
      countText();
    });
    $("call-server").addEventListener("change", loadTools);
    $("call-tool").addEventListener("change", buildForm);
    $("call-form").addEventListener("submit", callTool);
    window.addEventListener("online", () => { if (!live) { attempt = 0; connect(); } });
    window.addEventListener("offline", () => setConn("offline", "browser is offline"));
    setConn("reconnecting", "connecting");
    connect();
  }

  document.addEventListener("DOMContentLoaded", init);
})();
