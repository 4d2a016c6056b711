// Drover's page: the fleet's view from /api/events (server-sent events; /api/fleet polled where
// EventSource is missing), drawn with DOM nodes (text is never parsed as HTML).
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "onclick") e.addEventListener("click", v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function secs(s) {
  if (s === null || s === undefined || !isFinite(s)) return "?";
  s = Math.max(0, s);
  if (s < 1) return Math.max(1, Math.round(s * 1000)) + " ms";
  if (s < 10) return s.toFixed(1) + " s";
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.floor(s / 60) + "m" + String(Math.round(s % 60)).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
}

function when(ms) {
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function scopeText(scope) {
  if (!scope) return "";
  const [k, v] = Object.entries(scope)[0] || ["", ""];
  return k + " " + v;
}

function instance(unit) {
  const m = /@(.*)\.service$/.exec(unit || "");
  return m ? m[1] : unit;
}

function chip(health) {
  return el("span", { class: "chip h-" + String(health).replace(/[^a-z-]/g, "") }, health);
}

function replace(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

let view = null;

// ---------------------------------------------------------------- the parts --

function renderPower(v) {
  const banners = [];
  for (const p of v.drains) {
    const o = p.order || {};
    if (o.kind !== "drain" || !o.scope || o.scope.host === undefined) continue;
    const host = o.scope.host;
    if (p.safe_to_power_off) {
      banners.push(el("div", { class: "power safe", "data-host": host },
        el("span", { class: "host" }, host),
        el("span", { class: "big" }, "SAFE TO POWER OFF"),
        el("span", { class: "left" }, "drained by " + o.who + ": " + o.reason)));
    } else {
      const running = p.units.filter((u) => u.job);
      const left = Math.max(0, ...running.map((u) => u.expected_left_s || 0));
      const up = p.units.filter((u) => u.state !== "stopped").length;
      const deadline = o.deadline_ms ? " · deadline " + when(o.deadline_ms) : "";
      banners.push(el("div", { class: "power wait", "data-host": host },
        el("span", { class: "host" }, host),
        el("span", { class: "big" }, "DRAINING · NOT YET"),
        el("span", { class: "left" },
          running.length + " job(s) still running" + (left > 0 ? ", about " + secs(left) + " left" : "") +
          ", " + up + " unit(s) up" + deadline + " · " + o.reason)));
    }
  }
  replace($("#power"), banners);
}

function renderAlerts(v) {
  $("#alerts-n").textContent = v.alerts.length ? "(" + v.alerts.length + ")" : "";
  if (!v.alerts.length) return replace($("#alerts"), el("p", { class: "muted" }, "none firing"));
  replace($("#alerts"), v.alerts.map((a) => {
    const labels = Object.entries(a.key.labels).map(([k, val]) => k + "=" + val).join(" ");
    const notes = Object.entries(a.annotations || {}).filter(([k, val]) => val && k !== "runbook_url");
    return el("div", { class: "item " + (a.severity === "critical" ? "bad" : "warn"), "data-alert": a.key.name },
      el("div", { class: "what" },
        el("span", { class: "sev-" + a.severity }, a.severity.toUpperCase()), " ", a.key.name, " ",
        el("span", { class: "kv" }, labels), " ",
        a.runbook ? el("a", { href: a.runbook, target: "_blank", rel: "noopener" }, "runbook") : null),
      el("div", {}, a.summary),
      el("div", { class: "kv" }, "since " + when(a.since_ms)),
      notes.length ? el("details", {}, el("summary", {}, "details"),
        el("ul", { class: "evidence" }, notes.map(([k, val]) => el("li", {}, el("b", {}, k + ": "), val)))) : null);
  }));
}

function renderQuarantines(v) {
  $("#quarantines-n").textContent = v.quarantines.length ? "(" + v.quarantines.length + ")" : "";
  if (!v.quarantines.length) return replace($("#quarantines"), el("p", { class: "muted" }, "none"));
  replace($("#quarantines"), v.quarantines.map((q) => {
    const o = q.order;
    const unit = o.scope.unit ? instance(o.scope.unit) : "";
    return el("div", { class: "item bad quarantine", "data-host": q.host, "data-unit": unit },
      el("div", { class: "what" }, o.kind === "pause" ? "Paused " : "Quarantined ", scopeText(o.scope), " on ", q.host,
        " ", v.actions && o.kind === "quarantine" ? el("button", {
          class: "act", onclick: () => prefill({ verb: "release", host: q.host, unit }),
        }, "release…") : null),
      el("div", { class: "kv" }, "since " + when(o.at_ms) + " by " + o.who + " · " + q.probe),
      el("div", {}, "Evidence:"),
      el("ul", { class: "evidence" }, q.evidence.map((e) => el("li", {}, e))),
      q.units.length ? el("div", { class: "kv" }, q.units.map((u) => instance(u.unit) + ": " + u.state).join(" · ")) : null);
  }));
}

function renderDrains(v) {
  $("#drains-n").textContent = v.drains.length ? "(" + v.drains.length + ")" : "";
  const waves = v.rollouts.length ? el("div", { class: "item rollouts" }, el("div", { class: "what" }, "Rollout waves"),
    el("table", {}, v.rollouts.map((w) => el("tr", { "data-state": w.state },
      el("td", {}, w.label), el("td", { class: w.state === "halted" ? "h-failing" : w.state === "done" ? "h-healthy" : "h-draining" }, w.state),
      el("td", { class: "kv" }, when(w.at_ms) + " · " + w.who + " · " + w.why))))) : null;
  if (!v.drains.length) return replace($("#drains"), waves, el("p", { class: "muted" }, "no drain or cordon in force"));
  replace($("#drains"), waves, v.drains.map((p) => {
    const o = p.order;
    const status = o.kind === "cordon" ? "cordoned" : p.done ? "drained" : "draining";
    return el("div", { class: "item warn drain", "data-host": p.host },
      el("div", { class: "what" }, o.kind, " ", scopeText(o.scope), " on ", p.host, ": ", status,
        p.safe_to_power_off ? el("b", { class: "h-healthy" }, " · safe to power off") : null, " ",
        v.actions ? el("button", {
          class: "act", onclick: () => prefill({ verb: "undrain", host: p.host, unit: o.scope.unit ? instance(o.scope.unit) : "" }),
        }, "undrain…") : null),
      el("div", { class: "kv" }, "by " + o.who + " at " + when(o.at_ms) +
        (o.deadline_ms ? " · deadline " + when(o.deadline_ms) : "") + " · " + o.reason),
      el("table", {}, el("tr", {}, el("th", {}, "unit"), el("th", {}, "state"), el("th", {}, "job"), el("th", {}, "left")),
        p.units.map((u) => el("tr", {}, el("td", {}, instance(u.unit)), el("td", {}, u.state),
          el("td", {}, u.job ? u.job.slice(0, 8) + " (" + secs(u.age_s) + ")" : "-"),
          el("td", {}, u.expected_left_s !== undefined ? "about " + secs(u.expected_left_s) : "-")))),
      p.requeued.length ? el("div", { class: "kv" }, "requeued: " +
        p.requeued.map((m) => m.job.slice(0, 8) + " → " + (m.to || "waiting")).join(", ")) : null);
  }));
}

function renderHosts(v) {
  $("#hosts-n").textContent = "(" + v.hosts.length + (v.broker ? "" : ", broker unreachable: this host only") + ")";
  replace($("#not-answering"), v.not_answering.length
    ? el("p", { class: "item bad" }, "Not answering: " + v.not_answering.join(", ")) : null);
  replace($("#hosts"), v.hosts.map((h) => {
    const rows = h.units.map((u) => {
      const age = h.ages[u.unit];
      const job = u.job ? jobLine(Object.assign({ age }, u.job)) : "-";
      return el("tr", { "data-unit": u.unit },
        el("td", {}, instance(u.unit)), el("td", {}, chip(u.health)),
        el("td", { class: "state" }, u.state), el("td", {}, job));
    });
    const details = h.units.filter((u) => u.detail).map((u) => el("div", { class: "kv" }, instance(u.unit) + ": " + u.detail));
    return el("div", { class: "card host", "data-host": h.host },
      el("h3", {}, h.host,
        h.safe_to_power_off ? el("span", { class: "chip h-healthy" }, "safe to power off")
          : h.draining ? el("span", { class: "chip h-draining" }, "draining") : null,
        h.systemd_connected ? null : el("span", { class: "chip h-failing" }, "systemd unreachable"),
        v.actions ? el("button", { class: "act", onclick: () => prefill({ verb: "drain", host: h.host, unit: "" }) }, "drain…") : null),
      el("table", {}, el("tr", {}, el("th", {}, "unit"), el("th", {}, "health"), el("th", { class: "state" }, "state"), el("th", {}, "job")), rows),
      details);
  }));
}

function jobLine(j) {
  const ratio = j.age && j.age.ratio !== null ? " · " + j.age.ratio.toFixed(1) + "× usual" : "";
  return el("div", {},
    el("span", { class: j.age ? "age-" + j.age.label.replace(" ", "-") : "" }, j.id.slice(0, 8) + " " + secs(j.age_s) + ratio),
    j.progress !== undefined ? el("div", { class: "bar", title: Math.round(j.progress * 100) + "%" },
      el("span", { style: "width:" + Math.round(Math.min(1, Math.max(0, j.progress)) * 100) + "%" })) : null,
    j.note ? el("div", { class: "kv" }, j.note) : null);
}

function histogram(c) {
  const W = 320, H = 90, B = 14;
  const bins = c.histogram;
  if (!bins.length) return el("p", { class: "muted" }, "no run times yet");
  const max = Math.max(1, ...bins.map((b) => b.count));
  const lo = Math.log(bins[0].lo_s), hi = Math.log(bins[bins.length - 1].hi_s);
  const x = (s) => ((Math.log(s) - lo) / (hi - lo)) * W;
  const g = svg("svg", { viewBox: `0 0 ${W} ${H + B}`, role: "img", "aria-label": "run-time distribution of " + c.class });
  bins.forEach((b, i) => {
    const h = (b.count / max) * (H - 4);
    g.append(svg("rect", { class: "bin", x: x(b.lo_s) + 0.5, y: H - h, width: Math.max(1, x(b.hi_s) - x(b.lo_s) - 1), height: h },
      svg("title", {}, `${secs(b.lo_s)}–${secs(b.hi_s)}: ${b.count}`)));
  });
  g.append(svg("line", { class: "grid", x1: 0, y1: H, x2: W, y2: H }));
  if (c.baseline) {
    for (const [cls, s] of [["median", c.baseline.median_s], ["p99", c.baseline.p99_s]]) {
      g.append(svg("line", { class: cls, x1: x(s), y1: 0, x2: x(s), y2: H }, svg("title", {}, `baseline ${cls} ${secs(s)}`)));
    }
  }
  g.append(svg("text", { class: "axis", x: 0, y: H + 11 }, secs(bins[0].lo_s)));
  g.append(svg("text", { class: "axis", x: W, y: H + 11, "text-anchor": "end" }, secs(bins[bins.length - 1].hi_s)));
  return g;
}

const COLOURS = ["#2458a6", "#1f7a3a", "#a86400", "#7b3fa0", "#b3261e", "#0f7c84"];

function driftChart(c) {
  const W = 320, H = 70;
  const lines = Object.entries(c.scores).filter(([, s]) => s.length > 0);
  if (!lines.length) return el("p", { class: "muted" }, "no drift score yet");
  const t0 = Math.min(...lines.map(([, s]) => s[0][0])), t1 = Math.max(...lines.map(([, s]) => s[s.length - 1][0]));
  const x = (t) => (t1 > t0 ? ((t - t0) / (t1 - t0)) * W : W);
  const y = (v) => H - v * (H - 6) - 1;
  const g = svg("svg", { viewBox: `0 0 ${W} ${H + 12}`, role: "img", "aria-label": "drift score of " + c.class });
  g.append(svg("line", { class: "threshold", x1: 0, y1: y(1), x2: W, y2: y(1) }, svg("title", {}, "alarm threshold")));
  g.append(svg("line", { class: "grid", x1: 0, y1: y(0), x2: W, y2: y(0) }));
  lines.forEach(([host, s], i) => {
    const pts = s.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    g.append(svg("polyline", { points: pts, fill: "none", stroke: COLOURS[i % COLOURS.length], "stroke-width": 1.5 },
      svg("title", {}, host)));
  });
  g.append(svg("text", { class: "axis", x: 0, y: H + 11 }, when(t0).slice(11, 16)));
  g.append(svg("text", { class: "axis", x: W, y: H + 11, "text-anchor": "end" }, when(t1).slice(11, 16)));
  const legend = el("div", { class: "legend" }, lines.map(([host], i) =>
    el("span", { style: "color:" + COLOURS[i % COLOURS.length] + ";margin-right:.8rem" }, "— " + host)));
  return el("div", {}, g, legend);
}

function renderClasses(v) {
  replace($("#classes"), v.classes.map((c) => {
    const health = Object.entries(c.units_by_health).map(([h, n]) => el("span", {}, n + " ", chip(h), " "));
    const dead = c.dead ? Object.entries(c.dead) : null;
    return el("div", { class: "card class", "data-class": c.class },
      el("h3", {}, c.class),
      el("div", {}, "queued ", el("b", {}, c.queued === null ? "?" : c.queued), " · running ", el("b", {}, c.running),
        " · usual run time ", el("b", {}, c.usual_s ? secs(c.usual_s) : "learning")),
      el("div", {}, health.length ? health : el("span", { class: "muted" }, "no units")),
      c.jobs.length ? el("table", { class: "jobs" }, el("tr", {}, el("th", {}, "running"), el("th", {}, "age, progress")),
        c.jobs.map((j) => el("tr", {}, el("td", {}, instance(j.unit) + " on " + j.host), el("td", {}, jobLine(j))))) : null,
      el("div", { class: "dead" }, "dead letters: ", dead === null ? "?" : dead.length === 0 ? "none"
        : dead.map(([r, n]) => n + " " + r).join(", "), " ",
        v.actions && dead && dead.length ? el("button", { class: "act", onclick: () => prefill({ verb: "requeue", cls: c.class }) }, "requeue…") : null),
      el("div", { class: "legend" }, "run times (log scale)", c.baseline ? " · baseline median (green) and p99 (red)" : ""),
      histogram(c),
      el("div", { class: "legend" }, "drift score per host (1 = alarm)"),
      driftChart(c));
  }));
}

// Options are rebuilt only when the list changed: a choice being made is not pulled away.
function fillSelect(sel, values, keepFirst) {
  const have = [...sel.options].slice(keepFirst ? 1 : 0).map((o) => o.value);
  if (have.length === values.length && have.every((v, i) => v === values[i])) return;
  const current = sel.value;
  const first = keepFirst ? [sel.options[0]] : [];
  sel.replaceChildren(...first, ...values.map((v) => el("option", { value: v }, v)));
  if ([...sel.options].some((o) => o.value === current)) sel.value = current;
}

function renderForms(v) {
  const hosts = v.hosts.map((h) => h.host);
  const classes = v.classes.map((c) => c.class);
  fillSelect($("#a-host"), hosts, false);
  fillSelect($("#a-class"), classes, false);
  fillSelect($("#a-dead-reason"), v.dead_reasons, true);
  fillSelect($("#t-host"), hosts, true);
  fillSelect($("#t-class"), classes, true);
  $("#actions-off").hidden = v.actions;
  $("#action").hidden = !v.actions;
}

function render() {
  const v = view;
  $("#served").textContent = "served by " + v.served_by + " · " + v.at.slice(11, 19) + "Z";
  renderPower(v);
  renderAlerts(v);
  renderQuarantines(v);
  renderDrains(v);
  renderHosts(v);
  renderClasses(v);
  renderForms(v);
  loadTimeline();
}

// ---------------------------------------------------------------- timeline --

let timelineAsked = 0;
async function loadTimeline() {
  const mine = ++timelineAsked;
  const q = new URLSearchParams({ host: $("#t-host").value, class: $("#t-class").value });
  try {
    const r = await fetch("api/timeline?" + q, { cache: "no-store" });
    const entries = await r.json();
    if (mine !== timelineAsked) return;
    replace($("#timeline"), entries.length ? entries.map((e) => el("li", {},
      el("span", { class: "when" }, when(e.at_ms), " · ", e.host),
      el("span", {}, el("span", { class: "who" }, e.who), " ", el("b", {}, e.what), e.scope ? " · " + e.scope : "",
        e.why ? el("div", { class: "kv" }, e.why) : null))) : el("li", { class: "muted" }, "nothing in this view"));
  } catch (e) { /* the next update tries again */ }
}
$("#t-host").addEventListener("change", loadTimeline);
$("#t-class").addEventListener("change", loadTimeline);

// ---------------------------------------------------------------- actions --

function showFields() {
  const verb = $("#a-verb").value;
  for (const l of document.querySelectorAll(".for-host")) l.hidden = verb === "requeue";
  for (const l of document.querySelectorAll(".for-drain")) l.hidden = verb !== "drain";
  for (const l of document.querySelectorAll(".for-requeue")) l.hidden = verb !== "requeue";
}
$("#a-verb").addEventListener("change", showFields);
showFields();

function prefill(f) {
  $("#a-verb").value = f.verb;
  if (f.host !== undefined) $("#a-host").value = f.host;
  if (f.unit !== undefined) $("#a-unit").value = f.unit;
  if (f.cls !== undefined) $("#a-class").value = f.cls;
  showFields();
  $("#actions-s").scrollIntoView({ behavior: "smooth" });
  $("#a-reason").focus();
}

try { $("#a-token").value = sessionStorage.getItem("drover-token") || ""; } catch (e) { /* private mode */ }

$("#action").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("#action-result");
  const token = $("#a-token").value.trim();
  const verb = $("#a-verb").value;
  const form = {
    verb, host: $("#a-host").value, unit: $("#a-unit").value.trim(), class: $("#a-class").value,
    dead_reason: $("#a-dead-reason").value, deadline: $("#a-deadline").value.trim(), reason: $("#a-reason").value.trim(),
  };
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  $("#a-go").disabled = true;
  out.className = "";
  out.textContent = "sending " + verb + "…";
  try {
    const r = await fetch("api/action", { method: "POST", headers, body: JSON.stringify(form) });
    const body = await r.json().catch(() => ({}));
    if (r.ok && body.ok) {
      out.className = "ok";
      out.textContent = verb + ": " + body.message;
      try { sessionStorage.setItem("drover-token", token); } catch (e) { /* private mode */ }
    } else {
      out.className = "bad";
      const why = (body.problems || ["HTTP " + r.status]).join("; ");
      out.textContent = (r.status === 401 || r.status === 403 ? "refused (" + r.status + "): " : "not done: ") + why;
    }
  } catch (e) {
    out.className = "bad";
    out.textContent = "not sent: " + e;
  } finally {
    $("#a-go").disabled = false;
  }
});

// ---------------------------------------------------------------- updates --

function live(state, text) {
  const l = $("#live");
  l.className = "live " + state;
  l.textContent = text;
}

function take(text) {
  try {
    view = JSON.parse(text);
  } catch (e) {
    return;
  }
  render();
  live(view.broker ? "ok" : "wait", view.broker ? "live" : "live (broker unreachable)");
}

function poll() {
  fetch("api/fleet", { cache: "no-store" })
    .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
    .then(take)
    .catch(() => live("bad", "no answer; retrying"))
    .finally(() => setTimeout(poll, view ? view.refresh_ms : 3000));
}

if (window.EventSource) {
  const events = new EventSource("api/events");
  events.addEventListener("fleet", (e) => take(e.data));
  events.onerror = () => live("bad", "connection lost; reconnecting…");
} else {
  poll();
}
