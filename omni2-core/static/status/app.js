// omni2 status page. Holds no data of its own: everything comes from /ws/mcp-status
// (docs/websocket.md). No framework, no build step; DOM text only (never innerHTML).
"use strict";

(function () {
  const LOG_LIMIT = 500;        // entries kept in the event log
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
    if (m.action) actionStatus(text, true);
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

  function showYou() {
    const admin = (you.actions || []).length > 0;
    for (const th of document.querySelectorAll("th.admin-only")) th.hidden = !admin;
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
    while (log.children.length > LOG_LIMIT) log.firstElementChild.remove();
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
    for (const li of $("log").children) li.hidden = !matches(li);
    countText();
  }

  function countText() {
    const log = $("log");
    const shown = [...log.children].filter((li) => !li.hidden).length;
    $("log-count").textContent = shown + " of " + log.children.length + " shown" +
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
      countText();
    });
    window.addEventListener("online", () => { if (!live) { attempt = 0; connect(); } });
    window.addEventListener("offline", () => setConn("offline", "browser is offline"));
    setConn("reconnecting", "connecting");
    connect();
  }

  document.addEventListener("DOMContentLoaded", init);
})();
