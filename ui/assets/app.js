// netshape dashboard: polls the JSON API and draws with SVG. No libraries.
"use strict";
(function () {
  const token = document.querySelector('meta[name="netshape-token"]').content;
  const SVGNS = "http://www.w3.org/2000/svg";
  const palette = ["#2a7ab0", "#d9822b", "#2e8540", "#8e44ad", "#c23b22", "#16a085", "#7f8c8d"];
  const colors = {};
  let colorNext = 0;
  function colorOf(name) {
    if (!(name in colors)) colors[name] = palette[colorNext++ % palette.length];
    return colors[name];
  }

  function size(n) {
    if (n == null || isNaN(n)) return "-";
    const u = ["B", "KB", "MB", "GB", "TB", "PB"];
    let i = 0;
    while (Math.abs(n) >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + u[i];
  }
  const rate = (n) => size(n) + "/s";

  async function api(path, opts) {
    opts = opts || {};
    opts.headers = Object.assign({ "X-Netshape-Token": token }, opts.headers || {});
    opts.credentials = "same-origin";
    const r = await fetch(path, opts);
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
    return body;
  }

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "class") e.className = attrs[k];
      else if (k === "style") {
        // The CSP forbids style attributes; the CSSOM is allowed.
        for (const decl of attrs[k].split(";")) {
          const i = decl.indexOf(":");
          if (i > 0) e.style.setProperty(decl.slice(0, i).trim(), decl.slice(i + 1).trim());
        }
      }
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
    for (const c of kids) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function fillTable(id, rows, empty, cols) {
    const tb = document.querySelector("#" + id + " tbody");
    tb.replaceChildren();
    if (!rows.length) {
      tb.append(el("tr", {}, el("td", { class: "empty", colspan: cols }, empty)));
      return;
    }
    for (const r of rows) tb.append(r);
  }
  const td = (v, cls) => el("td", cls ? { class: cls } : {}, v);

  function setConn(ok, msg) {
    const c = document.getElementById("conn");
    c.className = "conn " + (ok ? "ok" : "bad");
    c.textContent = msg;
  }

  // --- throughput chart -------------------------------------------------
  function drawChart(hist) {
    const s = document.getElementById("chart");
    const W = s.clientWidth || 800, H = s.clientHeight || 200, pad = 40;
    s.setAttribute("viewBox", `0 0 ${W} ${H}`);
    s.replaceChildren();
    const n = 120;
    const apps = new Set();
    let max = 1;
    for (const p of hist) {
      max = Math.max(max, p.in, p.out);
      for (const a in p.apps || {}) { apps.add(a); max = Math.max(max, p.apps[a]); }
    }
    const g = svg("g", { class: "grid" });
    for (let i = 0; i <= 4; i++) {
      const y = 8 + (H - 24) * i / 4;
      g.append(svg("line", { x1: pad, x2: W, y1: y, y2: y }));
      const t = svg("text", { x: 2, y: y + 4, class: "axis" });
      t.textContent = size(max * (4 - i) / 4).replace(" ", "") + "/s";
      s.append(t);
    }
    s.append(g);
    const x = (i) => pad + (W - pad) * (n - hist.length + i) / (n - 1);
    const y = (v) => 8 + (H - 24) * (1 - v / max);
    function line(get, color, dash) {
      if (hist.length < 2) return;
      const pts = hist.map((p, i) => x(i).toFixed(1) + "," + y(get(p)).toFixed(1)).join(" ");
      const a = { points: pts, fill: "none", stroke: color, "stroke-width": 2, "stroke-linejoin": "round" };
      if (dash) a["stroke-dasharray"] = "4 3";
      s.append(svg("polyline", a));
    }
    line((p) => p.in, "#1d1f21", true);
    line((p) => p.out, "#9aa0a6", true);
    const leg = document.getElementById("legend");
    leg.replaceChildren(
      el("span", {}, el("i", { style: "background:#1d1f21" }), "all in"),
      el("span", {}, el("i", { style: "background:#9aa0a6" }), "all out"));
    for (const a of apps) {
      line((p) => (p.apps && p.apps[a]) || 0, colorOf(a));
      leg.append(el("span", {}, el("i", { style: "background:" + colorOf(a) }), a));
    }
    const t = svg("text", { x: W - 4, y: H - 4, class: "axis", "text-anchor": "end" });
    t.textContent = "last " + n + " s";
    s.append(t);
  }

  function rateRows(list) {
    return list.slice(0, 15).map((r) => el("tr", { "data-name": r.name },
      td(r.name), td(rate(r.in), "n"), td(rate(r.out), "n"), td(size(r.bytes_in + r.bytes_out), "n"), td(r.open, "n")));
  }

  async function pollLive() {
    const [live, st] = await Promise.all([api("/api/live?history=1"), api("/api/status")]);
    setConn(true, "live");
    document.getElementById("rates").textContent = "in " + rate(live.in) + " · out " + rate(live.out);
    document.getElementById("summary").textContent =
      `${st.version} · ${st.backend} · ${st.active_flows} open, ${st.total_flows} total, ${st.denied_flows} denied · ` +
      `${size(st.bytes_in)} in, ${size(st.bytes_out)} out since start`;
    drawChart(live.history || []);
    fillTable("apps", rateRows(live.apps || []), "no traffic yet", 5);
    fillTable("hosts", rateRows(live.hosts || []), "no traffic yet", 5);
  }

  // --- pending ----------------------------------------------------------
  async function answer(id, action, always) {
    const msg = document.getElementById("answer-msg");
    try {
      const body = { action: action };
      if (always) { body.always = true; body.scope = "host"; }
      const res = await api("/api/pending/" + id, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      msg.textContent = `#${id}: ${action}${always ? " always" : ""}, released ${res.released} connection(s)` +
        (res.rule_id ? `, rule ${res.rule_id} written` : "");
    } catch (e) {
      msg.textContent = `#${id}: ${e.message}`;
    }
    pollPending().catch(() => {});
  }
  async function pollPending() {
    const ps = await api("/api/pending");
    document.getElementById("pending-count").textContent = ps.length ? ps.length + " waiting" : "";
    const now = Date.now();
    fillTable("pending", ps.map((p) => {
      const host = (p.host || p.dst) + ":" + p.port;
      const left = Math.max(0, Math.round((Date.parse(p.deadline) - now) / 1000));
      return el("tr", { id: "pending-" + p.id },
        td(p.id), td(p.app), td(host), td(p.user || "uid " + p.uid), td(p.count, "n"), td(left + " s", "n"),
        el("td", {},
          el("button", { class: "allow", "data-action": "allow", onclick: () => answer(p.id, "allow", false) }, "Allow"),
          el("button", { class: "allow", "data-action": "allow-always", onclick: () => answer(p.id, "allow", true) }, "Always"),
          el("button", { class: "deny", "data-action": "deny", onclick: () => answer(p.id, "deny", false) }, "Deny"),
          el("button", { class: "deny", "data-action": "deny-always", onclick: () => answer(p.id, "deny", true) }, "Never")));
    }), "nothing is waiting", 7);
  }

  // --- interfaces, quotas, rules ---------------------------------------
  async function pollSlow() {
    const [ifr, qs, rules] = await Promise.all([api("/api/iface").catch(() => ({ ifaces: [] })), api("/api/quotas"), api("/api/rules")]);
    fillTable("ifaces", (ifr.ifaces || []).map((i) => el("tr", {},
      td(i.name + (i.up ? "" : " (down)")), td(size(i.kernel_in), "n"), td(size(i.kernel_out), "n"),
      td(size(i.proxied_in + i.proxied_out), "n"), td(i.capture_drops, "n"), td(i.blocked ? "blocked" : ""))), "none", 6);

    const q = document.getElementById("quotas");
    q.replaceChildren();
    if (!qs.length) q.append(el("p", { class: "empty" }, "no quotas (add one with netshape rule add … --quota)"));
    for (const x of qs) {
      const pct = x.limit > 0 ? Math.min(100, 100 * x.used / x.limit) : 0;
      const fc = x.limit > 0 ? Math.min(100, 100 * x.forecast / x.limit) : 0;
      const cls = x.exhausted ? "used over" : pct >= 80 ? "used warn" : "used";
      const bar = el("div", { class: "bar", title: `forecast ${size(x.forecast)} at period end` },
        el("div", { class: cls, style: `width:${pct.toFixed(1)}%` }));
      if (x.period_end) bar.append(el("div", { class: "fc", style: `left:${fc.toFixed(1)}%` }));
      const end = x.period_end ? "resets " + new Date(x.period_end).toLocaleString() : "no period";
      q.append(el("div", { class: "quota" },
        el("div", {}, `#${x.quota.id} ${x.scope_text}: ${size(x.used)} of ${size(x.limit)} (${pct.toFixed(0)}%)` +
          (x.exhausted ? (x.throttled ? " — throttled" : " — used up") : "")),
        bar,
        el("div", { class: "meta" }, `${end} · forecast ${x.period_end ? size(x.forecast) : "-"} · ${rate(x.rate)}`)));
    }

    fillTable("rules", rules.map((r) => {
      const lim = [];
      if (r.rate) lim.push(rate(r.rate));
      if (r.rate_in) lim.push("in " + rate(r.rate_in));
      if (r.rate_out) lim.push("out " + rate(r.rate_out));
      if (r.quota) lim.push(size(r.quota) + (r.period ? "/" + r.period : ""));
      return el("tr", {}, td(r.id), td(r.action), td(r.app || "*"), td(r.user || "*"), td(r.host || "*"),
        td(r.port || "*"), td(r.iface || "*"), td(lim.join(", ")), td(r.expires ? new Date(r.expires).toLocaleString() : ""), td(r.note || ""));
    }), "no rules: everything gets the default action", 10);
  }

  // --- usage by day -----------------------------------------------------
  async function pollUsage() {
    const from = new Date(Date.now() - 29 * 86400e3);
    from.setUTCHours(0, 0, 0, 0);
    const q = "by=day&from=" + encodeURIComponent(from.toISOString().replace(/\.\d+Z$/, "Z"));
    document.getElementById("csv").href = "/api/usage.csv?" + q;
    const days = await api("/api/usage?" + q);
    const s = document.getElementById("usage");
    const W = s.clientWidth || 800, H = s.clientHeight || 160, pad = 40;
    s.setAttribute("viewBox", `0 0 ${W} ${H}`);
    s.replaceChildren();
    let max = 1;
    for (const d of days) max = Math.max(max, d.bytes_in + d.bytes_out);
    const g = svg("g", { class: "grid" });
    for (let i = 0; i <= 2; i++) {
      const y = 6 + (H - 26) * i / 2;
      g.append(svg("line", { x1: pad, x2: W, y1: y, y2: y }));
      const t = svg("text", { x: 2, y: y + 4, class: "axis" });
      t.textContent = size(max * (2 - i) / 2).replace(" ", "");
      s.append(t);
    }
    s.append(g);
    const slot = (W - pad) / 30;
    days.forEach((d, i) => {
      const x = pad + slot * (30 - days.length + i) + 1;
      const hIn = (H - 26) * d.bytes_in / max, hOut = (H - 26) * d.bytes_out / max;
      const base = H - 20;
      const r1 = svg("rect", { x: x, y: base - hIn, width: Math.max(1, slot - 2), height: hIn, fill: "#2a7ab0" });
      const r2 = svg("rect", { x: x, y: base - hIn - hOut, width: Math.max(1, slot - 2), height: hOut, fill: "#d9822b" });
      const title = svg("title", {});
      title.textContent = `${d.key}: ${size(d.bytes_in)} in, ${size(d.bytes_out)} out`;
      r1.append(title);
      s.append(r1, r2);
      if (i === days.length - 1 || i % 7 === 0) {
        const t = svg("text", { x: x, y: H - 6, class: "axis" });
        t.textContent = String(d.key).slice(5);
        s.append(t);
      }
    });
    document.getElementById("usage-legend").replaceChildren(
      el("span", {}, el("i", { style: "background:#2a7ab0" }), "in"),
      el("span", {}, el("i", { style: "background:#d9822b" }), "out"),
      el("span", {}, days.length ? "" : "no history yet"));
  }

  function every(ms, fn) {
    const run = () => fn().catch((e) => setConn(false, "netshape not answering: " + e.message));
    run();
    setInterval(run, ms);
  }
  every(1000, pollLive);
  every(1000, pollPending);
  every(5000, pollSlow);
  every(30000, pollUsage);
})();
