// lbproxy's dashboard: polls /status on the admin listener once a second and draws it.
// Everything is built with DOM calls (no innerHTML of what the server says: hostnames and
// event details are text, never markup).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 1000;
const state = { ringKey: "", rows: new Map(), lastEvent: 0, busy: false };

function $(id) { return document.getElementById(id); }

function el(name, attrs = {}, text) {
  const node = name.startsWith("svg:")
    ? document.createElementNS(SVG, name.slice(4))
    : document.createElement(name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// One colour per slot, far apart for neighbouring slots (golden-angle hues), so 32
// replicas stay told apart; the same slot keeps its colour across replacements.
function colour(slot) {
  const hue = Math.round(((slot - 1) * 137.508) % 360);
  const light = slot % 3 === 0 ? 38 : slot % 3 === 1 ? 48 : 60;
  return `hsl(${hue}, 68%, ${light}%)`;
}

function fmtDuration(s) {
  if (s === null || s === undefined) return "–";
  return s < 1 ? `${(s * 1000).toFixed(1)} ms` : `${s.toFixed(2)} s`;
}

function fmtUptime(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

function fmtTime(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
}

// -- the ring ---------------------------------------------------------------------------

function point(frac, r) {
  const a = frac * 2 * Math.PI - Math.PI / 2;  // clockwise from the top
  return `${(r * Math.cos(a)).toFixed(3)} ${(r * Math.sin(a)).toFixed(3)}`;
}

function arcPath(a, b, outer, inner) {
  const large = b - a > 0.5 ? 1 : 0;
  return `M ${point(a, outer)} A ${outer} ${outer} 0 ${large} 1 ${point(b, outer)} ` +
    `L ${point(b, inner)} A ${inner} ${inner} 0 ${large} 0 ${point(a, inner)} Z`;
}

function drawRing(report, names) {
  const ring = report.ring;
  const key = JSON.stringify([ring.arcs, [...names]]);
  if (key === state.ringKey) return;
  state.ringKey = key;
  const svg = $("ring");
  svg.replaceChildren();
  svg.appendChild(el("svg:circle", { r: 85, fill: "none", stroke: "#dcdcd6", "stroke-width": 30 }));
  for (const [a, b, slot] of ring.arcs) {
    const name = names.get(slot) || `slot ${slot}`;
    // A whole circle is drawn as two halves (an SVG arc cannot end where it starts).
    const pieces = b - a > 0.5 ? [[a, (a + b) / 2], [(a + b) / 2, b]] : [[a, b]];
    for (const [x, y] of pieces) {
      const path = el("svg:path", {
        d: arcPath(x, y, 100, 70), fill: colour(slot), class: "arc",
        "data-slot": slot, "data-hostname": name,
      });
      path.appendChild(el("svg:title", {}, `${name} (slot ${slot})`));
      svg.appendChild(path);
    }
  }
  const up = new Set(ring.arcs.map((a) => a[2])).size;
  svg.appendChild(el("svg:text", { x: 0, y: -4, "text-anchor": "middle" }, `${up} in the ring`));
  svg.appendChild(el("svg:text", { x: 0, y: 10, "text-anchor": "middle" },
    `${ring.slots.toLocaleString()} positions`));
}

function drawLegend(report) {
  const shares = report.ring.shares;
  const legend = $("legend");
  legend.replaceChildren();
  for (const r of report.replicas) {
    if (r.state === "draining") continue;
    const share = shares[String(r.slot)];
    const li = el("li", { "data-hostname": r.hostname, "data-slot": r.slot });
    const sw = el("span", { class: "swatch" });
    sw.style.background = colour(r.slot);
    li.append(sw, el("span", { class: "name" }, r.hostname),
      ` ${share === undefined ? "–" : (share * 100).toFixed(1) + "%"}`);
    legend.appendChild(li);
  }
  $("ring-info").textContent = `${report.hashing} hashing`;
}

// -- the table --------------------------------------------------------------------------

const CELLS = ["swatch", "hostname", "slot", "state", "address", "rate", "in_flight",
  "requests", "errors", "p50", "p99", "restarts", "share", "actions"];
const NUMERIC = new Set(["rate", "in_flight", "requests", "errors", "p50", "p99", "restarts",
  "share"]);

function row(hostname) {
  let tr = state.rows.get(hostname);
  if (tr) return tr;
  tr = el("tr", { "data-hostname": hostname });
  for (const c of CELLS) tr.appendChild(el("td", { class: `${c}${NUMERIC.has(c) ? " num" : ""}` }));
  const actions = tr.querySelector(".actions");
  const rm = el("button", { type: "button", class: "rm", title: `/rm ${hostname}` }, "remove");
  rm.addEventListener("click", () =>
    act("DELETE", "/rm", { n: 1, hostnames: [hostname] }, `/rm ${hostname}`));
  const kill = el("button", { type: "button", class: "kill", title: `kill ${hostname}` }, "kill");
  kill.addEventListener("click", () =>
    act("POST", "/kill", { n: 1, hostnames: [hostname] }, `kill ${hostname}`));
  actions.append(rm, " ", kill);
  state.rows.set(hostname, tr);
  return tr;
}

function drawTable(report) {
  const tbody = $("replicas").tBodies[0];
  const seen = new Set();
  const shares = report.ring.shares;
  report.replicas.forEach((r, i) => {
    seen.add(r.hostname);
    const tr = row(r.hostname);
    tr.dataset.slot = r.slot;
    tr.dataset.state = r.state;
    const cells = tr.children;
    cells[0].replaceChildren(el("span", { class: "swatch" }));
    cells[0].firstChild.style.background = colour(r.slot);
    const share = r.state === "up" ? shares[String(r.slot)] : undefined;
    const errors = r.error_rate === null || r.error_rate === undefined
      ? (r.errors ? `${r.errors}` : "–")
      : `${(r.error_rate * 100).toFixed(1)}%`;
    const values = [null, r.hostname, r.slot, r.state + (r.ejected ? " (ejected)" : ""),
      r.address || "–", r.rate === null || r.rate === undefined ? "–" : r.rate.toFixed(1),
      r.in_flight, r.requests, errors, fmtDuration(r.p50), fmtDuration(r.p99), r.restarts,
      share === undefined ? "–" : `${(share * 100).toFixed(1)}%`];
    for (let c = 1; c < values.length; c++) {
      const text = String(values[c]);
      if (cells[c].textContent !== text) cells[c].textContent = text;
    }
    cells[3].className = `state state-${r.state}`;
    tr.querySelector(".kill").disabled = !report.can_scale || r.state === "draining";
    tr.querySelector(".rm").disabled = !report.can_scale || r.state === "draining";
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
  });
  for (const [name, tr] of state.rows) {
    if (!seen.has(name)) { tr.remove(); state.rows.delete(name); }
  }
}

// -- requests/s over time ---------------------------------------------------------------

function drawChart(report) {
  const h = report.history;
  const svg = $("chart");
  svg.replaceChildren();
  const W = 600, H = 200, n = Math.max(h.times.length, 2);
  let top = 1;
  for (const s of h.slots) for (const v of s.rates) if (v !== null && v > top) top = v;
  const step = 10 ** Math.floor(Math.log10(top));
  top = Math.ceil(top / step) * step;
  for (const f of [0.25, 0.5, 0.75, 1]) {
    const y = H - f * H;
    svg.appendChild(el("svg:line", { x1: 0, x2: W, y1: y, y2: y, class: "grid" }));
    svg.appendChild(el("svg:text", { x: 2, y: y + 10 }, `${+(top * f).toPrecision(3)}/s`));
  }
  for (const s of h.slots) {
    let d = "", pen = false;
    const offset = n - s.rates.length;
    s.rates.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      const x = ((offset + i) / (n - 1)) * W, y = H - (v / top) * H;
      d += `${pen ? "L" : "M"} ${x.toFixed(1)} ${y.toFixed(1)} `;
      pen = true;
    });
    if (!d) continue;
    const path = el("svg:path", { d, stroke: colour(s.slot), fill: "none", "data-slot": s.slot,
      "stroke-width": 1.5, "vector-effect": "non-scaling-stroke" });
    path.appendChild(el("svg:title", {}, s.hostname));
    svg.appendChild(path);
  }
  $("chart-info").textContent = `last ${Math.round(h.times.length * h.step / 60 * 10) / 10} min`;
}

// -- the timeline -----------------------------------------------------------------------

function drawTimeline(report) {
  const list = $("timeline");
  for (const e of report.events) {
    if (e.seq <= state.lastEvent) continue;
    state.lastEvent = e.seq;
    const li = el("li", { "data-kind": e.kind, "data-replica": e.replica });
    li.append(el("time", {}, fmtTime(e.time)), el("span", { class: `kind kind-${e.kind}` }, e.kind),
      `${e.replica}${e.slot !== null ? ` (slot ${e.slot})` : ""}${e.detail ? `: ${e.detail}` : ""}`);
    list.insertBefore(li, list.firstChild);
  }
  while (list.children.length > 200) list.lastChild.remove();
}

// -- polling and actions ----------------------------------------------------------------

function draw(report) {
  const names = new Map(report.replicas.filter((r) => r.state !== "draining")
    .map((r) => [r.slot, r.hostname]));
  $("summary").textContent = `${report.N} replicas · ${report.backend} backend · ` +
    `${report.hashing} hashing · up ${fmtUptime(report.uptime_s)} · ` +
    `${report.config_reloads} reloads · v${report.version}`;
  $("token").placeholder = report.token_required ? "required for changes" : "(none set)";
  drawRing(report, names);
  drawLegend(report);
  drawTable(report);
  drawChart(report);
  drawTimeline(report);
}

async function poll() {
  try {
    const r = await fetch("/status", { cache: "no-store" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.message || r.statusText);
    draw(body.message);
    $("live").className = "online";
    $("live").textContent = "live";
  } catch (e) {
    $("live").className = "offline";
    $("live").textContent = "offline";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function notice(text, error = false) {
  const p = $("notice");
  p.textContent = text;
  p.className = error ? "error" : "";
}

async function act(method, path, body, what) {
  const token = $("token").value.trim();
  sessionStorage.setItem("lbproxy-token", token);
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  notice(`${what}…`);
  try {
    const r = await fetch(path, { method, headers, body: JSON.stringify(body) });
    const answer = await r.json();
    if (r.ok && answer.message.killed) {
      notice(`${what}: killed ${answer.message.killed.join(", ") || "none"}; watch it be replaced`);
    } else if (r.ok) {
      notice(`${what}: done; replicas now ${answer.message.replicas.join(", ")}`);
    } else {
      notice(`${what}: ${r.status} ${answer.message}`, true);
    }
  } catch (e) {
    notice(`${what}: ${e}`, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("lbproxy-token") || "";
  $("add").addEventListener("click", () => {
    const n = Math.max(1, parseInt($("add-n").value, 10) || 1);
    act("POST", "/add", { n }, `/add ${n}`);
  });
  $("rm-any").addEventListener("click", () => act("DELETE", "/rm", { n: 1 }, "/rm 1"));
  poll();
});
