// nearchat dashboard: renders Central's snapshot and follows /api/events.
"use strict";

const reasonColor = {
  better_server: "#3b6fd8", server_down: "#d64545", server_draining: "#d98b12",
  server_unknown: "#8a5cd1", server_unmeasured: "#6b7385", server_full: "#2f9e8f", other: "#6b7385",
};

function ms(ns) {
  if (!ns) return "–";
  const v = ns / 1e6;
  return (v < 10 ? v.toFixed(1) : v.toFixed(0)) + " ms";
}

function dur(ns) {
  if (!ns) return "–";
  const v = ns / 1e6;
  if (v < 1) return "< 1 ms";
  if (v < 1000) return v.toFixed(0) + " ms";
  return (v / 1000).toFixed(2) + " s";
}

function ago(t, now) {
  const d = (Date.parse(now) - Date.parse(t)) / 1000;
  if (!isFinite(d) || Date.parse(t) <= 0) return "–";
  if (d < 1) return "just now";
  if (d < 120) return d.toFixed(0) + " s ago";
  return (d / 60).toFixed(0) + " min ago";
}

function clock(t) {
  const d = new Date(t);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", String(c)));
  return tr;
}

function td(child, cls) {
  const e = el("td", undefined, cls);
  if (child instanceof Node) e.appendChild(child); else e.textContent = child;
  return e;
}

// heatColor maps an RTT to a colour from green (best) to red (worst) over
// the range seen in this snapshot.
function heatColor(v, lo, hi) {
  const f = hi > lo ? (v - lo) / (hi - lo) : 0;
  const hue = 130 - 130 * f;
  return "hsl(" + hue.toFixed(0) + ", 70%, 72%)";
}

function renderServers(s) {
  const body = document.querySelector("#servers tbody");
  body.replaceChildren();
  for (const v of s.servers || []) {
    const state = !v.up ? "down" : v.draining ? "draining" : "up";
    const addr = el("td", v.addr);
    if (v.addr_error) {
      // Central's check of the advertised address failed: clients are
      // unlikely to reach the server there.
      addr.append(" ", el("span", "unreachable", "badge unreachable"));
      addr.title = v.addr_error;
    }
    const tr = row([el("td", v.id), addr, td(el("span", state, "badge " + state)),
      td(String(v.rooms) + (v.max_rooms ? " / " + v.max_rooms : ""), "num"),
      td(String(v.conns) + (v.max_conns ? " / " + v.max_conns : ""), "num"),
      el("td", ago(v.last_seen, s.at))]);
    tr.dataset.server = v.id;
    tr.dataset.state = state;
    if (v.addr_error) tr.dataset.addrError = v.addr_error;
    body.appendChild(tr);
  }
}

function renderHeat(s) {
  const servers = (s.servers || []).map(v => v.id);
  const head = document.querySelector("#heat thead");
  const body = document.querySelector("#heat tbody");
  const hr = document.createElement("tr");
  hr.appendChild(el("th", "client"));
  for (const id of servers) hr.appendChild(el("th", id));
  head.replaceChildren(hr);
  body.replaceChildren();
  let lo = Infinity, hi = 0;
  for (const c of s.clients || []) for (const id of servers) {
    const v = c.rtt[id];
    if (v) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  for (const c of s.clients || []) {
    const tr = document.createElement("tr");
    tr.appendChild(el("td", c.name + (c.online ? "" : " (offline)")));
    for (const id of servers) {
      const v = c.rtt[id];
      if (!v) { tr.appendChild(el("td", "–", "none")); continue; }
      const cell = el("td", ms(v), "cell");
      cell.style.background = heatColor(v, lo, hi);
      tr.appendChild(cell);
    }
    body.appendChild(tr);
  }
}

function renderRooms(s) {
  const body = document.querySelector("#rooms tbody");
  body.replaceChildren();
  for (const r of s.rooms || []) {
    const alt = r.best ? r.best + " (" + ms(r.best_rtt) + ")" : "–";
    const tr = row([el("td", r.id), el("td", r.server || "–"), el("td", (r.members || []).join(", ")),
      td(String(r.epoch), "num"), td(ms(r.worst), "num"), el("td", alt), el("td", ago(r.last_move, s.at))]);
    tr.dataset.room = r.id;
    tr.dataset.server = r.server;
    body.appendChild(tr);
  }
  const total = s.counts ? s.counts.rooms : 0;
  document.getElementById("rooms-note").textContent =
    total > (s.rooms || []).length ? "showing " + s.rooms.length + " of " + total + " rooms" : "";
}

let seenMoves = null;

function renderMoves(s) {
  const moves = s.moves || [];
  const body = document.querySelector("#moves tbody");
  body.replaceChildren();
  const key = m => m.at + m.room + m.to;
  const fresh = seenMoves === null ? new Set() : new Set(moves.map(key).filter(k => !seenMoves.has(k)));
  seenMoves = new Set(moves.map(key));
  for (const m of moves.slice().reverse()) {
    const reason = el("td", m.reason.replace("_", " "), "r-" + m.reason);
    reason.title = m.detail;
    const tr = row([el("td", clock(m.at)), el("td", m.room), el("td", (m.from || "–") + " → " + m.to), reason,
      td(ms(m.prev_rtt) + " → " + ms(m.rtt), "num"), td(dur(m.bad_for), "num")]);
    tr.dataset.to = m.to;
    tr.dataset.from = m.from || "";
    tr.dataset.reason = m.reason;
    if (fresh.has(key(m))) tr.className = "fresh";
    body.appendChild(tr);
  }
  renderTimeline(moves, s.at);
}

function renderTimeline(moves, at) {
  const svg = document.getElementById("timeline");
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const end = Date.parse(at);
  const start = moves.length ? Math.min(Date.parse(moves[0].at), end - 60000) : end - 60000;
  const x = t => 20 + 960 * (t - start) / Math.max(end - start, 1);
  const axis = document.createElementNS(ns, "line");
  axis.setAttribute("x1", 20); axis.setAttribute("x2", 980);
  axis.setAttribute("y1", 45); axis.setAttribute("y2", 45);
  axis.setAttribute("class", "axis");
  svg.appendChild(axis);
  for (const [t, label] of [[start, clock(start)], [end, "now"]]) {
    const tx = document.createElementNS(ns, "text");
    tx.setAttribute("x", x(t)); tx.setAttribute("y", 64);
    tx.setAttribute("text-anchor", t === start ? "start" : "end");
    tx.textContent = label;
    svg.appendChild(tx);
  }
  for (const m of moves) {
    const t = Date.parse(m.at);
    if (m.bad_for) {
      const bar = document.createElementNS(ns, "rect");
      const x0 = x(t - m.bad_for / 1e6);
      bar.setAttribute("x", x0); bar.setAttribute("y", 38);
      bar.setAttribute("width", Math.max(x(t) - x0, 1)); bar.setAttribute("height", 14);
      bar.setAttribute("fill", reasonColor[m.reason] || "#999"); bar.setAttribute("opacity", "0.3");
      svg.appendChild(bar);
    }
    const dot = document.createElementNS(ns, "circle");
    dot.setAttribute("cx", x(t)); dot.setAttribute("cy", 45); dot.setAttribute("r", 6);
    dot.setAttribute("fill", reasonColor[m.reason] || "#999");
    const title = document.createElementNS(ns, "title");
    title.textContent = clock(m.at) + " " + m.room + ": " + (m.from || "–") + " → " + m.to + " (" + m.detail + ")";
    dot.appendChild(title);
    svg.appendChild(dot);
    const tx = document.createElementNS(ns, "text");
    tx.setAttribute("x", x(t)); tx.setAttribute("y", 24); tx.setAttribute("text-anchor", "middle");
    tx.textContent = m.to;
    svg.appendChild(tx);
  }
}

function renderCounts(s) {
  const c = s.counts || {};
  const box = document.getElementById("counts");
  box.replaceChildren();
  const up = (s.servers || []).filter(v => v.up && !v.draining).length;
  for (const [label, v] of [["servers up", up], ["clients online", c.online], ["rooms", c.rooms],
    ["pending pushes", c.pushes], ["moves", (s.moves || []).length]]) {
    box.appendChild(el("b", String(v || 0)));
    box.appendChild(document.createTextNode(" " + label + "   "));
  }
}

let renders = 0;

function render(s) {
  renderCounts(s);
  renderServers(s);
  renderHeat(s);
  renderRooms(s);
  renderMoves(s);
  renders++;
  document.body.dataset.renders = String(renders);
}

function setLive(on) {
  const b = document.getElementById("live");
  b.className = "state " + (on ? "on" : "off");
  b.textContent = on ? "live" : "reconnecting…";
}

function start() {
  fetch("api/snapshot").then(r => r.json()).then(render).catch(() => setLive(false));
  const es = new EventSource("api/events");
  es.addEventListener("open", () => setLive(true));
  es.addEventListener("error", () => {
    setLive(false);
    // A refused stream (the dashboard has too many open) is not retried
    // by the browser: try again in a few seconds.
    if (es.readyState === EventSource.CLOSED) setTimeout(start, 5000);
  });
  es.addEventListener("snapshot", ev => { setLive(true); render(JSON.parse(ev.data)); });
}

start();
