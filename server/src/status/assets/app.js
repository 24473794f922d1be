// quotad's status page: polls /status.json every second and redraws. No framework; uPlot draws the charts.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = { after: "", nextAfter: "", charts: new Map(), rulesShown: "" };

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  // A gauge of `value` out of `of`; `left` says whether value is what is left (tokens) or what is used
  // (in flight), so the warning colours mean "running out" either way.
  function gauge(value, of, left, suffix) {
    if (of == null || of === 0) return el("span", { class: "none" }, "–");
    const f = Math.max(0, Math.min(1, value / of));
    const spare = left ? f : 1 - f;
    const b = el("span", { class: "bar" + (spare === 0 ? " empty" : spare < 0.2 ? " low" : "") }, el("i"));
    b.firstChild.style.width = (f * 100).toFixed(0) + "%";
    return el("span", {}, b, `${value} / ${of}${suffix || ""}`);
  }

  function rate(r) {
    if (!r.configured_rate_per_second) return el("span", { class: "none" }, "–");
    const eff = r.effective_rate_per_second, conf = r.configured_rate_per_second;
    const text = `${fmt(eff)} of ${fmt(conf)}`;
    return eff < conf ? el("span", { class: "pause" }, text + " (lowered)") : el("span", {}, text);
  }

  // A window's algorithm, under its gauge (the token bucket, the default, says nothing).
  function algorithm(r) {
    return r.algorithm && r.algorithm !== "token_bucket"
      ? el("span", { class: "muted algorithm" }, " " + r.algorithm.replace("_", " ")) : "";
  }

  function fmt(x) { return x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toFixed(3); }

  function row(r) {
    const paused = r.pause_left_ms != null && r.pause_left_ms > 0;
    const tr = el("tr", { class: paused ? "paused" : r.breaker === "OPEN" ? "open" : "" , "data-resource": r.resource });
    const breaker = r.breaker_configured ? el("span", { class: "badge " + r.breaker }, r.breaker)
                                         : el("span", { class: "none" }, "none");
    const pause = paused ? el("span", { class: "pause" }, `paused ${(r.pause_left_ms / 1000).toFixed(1)} s`) : "";
    const bypassed = new Set(r.bypassed || []);
    const overrides = r.overrides && r.overrides.length
      ? el("div", { class: "muted overrides" }, "overrides: "
           + r.overrides.map((o) => bypassed.has(o) ? o + " (bypass)" : o).join(", ")) : "";
    const reserve = (c) => c.reserve ? ` ${Math.round(c.reserve * 100)}% reserved` : "";
    const priority = r.priority && r.priority.length
      ? el("div", { class: "muted priority" }, "priority: " + r.priority.map((c) =>
          c.class + reserve(c) + (c.default ? " (default)" : "")).join(" > ")) : "";
    tr.append(el("td", {}, r.resource, overrides, priority), el("td", { class: "muted" }, r.rule),
              el("td", {}, gauge(r.tokens_available ?? 0, r.burst, true), algorithm(r)),
              el("td", {}, gauge(r.in_flight, r.max_concurrent, false)),
              el("td", {}, r.live_leases), el("td", {}, breaker), el("td", {}, rate(r)), el("td", {}, pause));
    return tr;
  }

  function chart(c) {
    const s = c.samples;
    const data = [s.at, s.granted, s.denied, s.throttles];
    let entry = state.charts.get(c.rule);
    if (!entry) {
      const box = el("div", { class: "chart", "data-rule": c.rule }, el("h3", {}, c.rule));
      $("charts").append(box);
      box.append(el("div", { class: "top muted" }));
      const opts = {
        width: Math.max(380, box.clientWidth - 20), height: 150,
        scales: { x: { time: true } }, legend: { live: false },
        axes: [{ stroke: "#7d8a9c", grid: { stroke: "#263040" } }, { stroke: "#7d8a9c", grid: { stroke: "#263040" } }],
        series: [{}, { label: "granted", stroke: "#3fb950", width: 1.5 },
                 { label: "denied", stroke: "#f85149", width: 1.5 },
                 { label: "throttles", stroke: "#d29922", width: 1.5 }],
      };
      entry = { plot: new uPlot(opts, data, box), top: box.querySelector(".top") };
      box.append(entry.top);
      state.charts.set(c.rule, entry);
    } else {
      entry.plot.setData(data);
    }
    const top = c.top_denied || [], shadow = c.shadow_denied || [];
    const list = (rows) => rows.map((t) => `${t.by} (${t.denials})`).join(", ");
    entry.top.textContent = [top.length ? "most denied: " + list(top) : "",
                             shadow.length ? "shadow would deny: " + list(shadow) : "",
                             c.bypassed ? `bypassed: ${c.bypassed}` : ""].filter(Boolean).join("; ");
  }

  // A shared store (Redis): whether it answers, the nodes sharing it, and what makes its limits inexact.
  function store(s) {
    if (!s) return [];
    const parts = [" · Redis ", s.up ? el("b", { class: "ok" }, "up")
                                    : el("b", { class: "warn" }, "DOWN (each resource's on_store_error applies)"),
                   ` · ${s.nodes} node${s.nodes === 1 ? "" : "s"}`];
    if (s.errors.full > 0) parts.push(" · ", el("span", { class: "warn" }, `${s.errors.full} refused at maxmemory`));
    if (s.evicting) parts.push(" · ", el("span", { class: "warn", id: "evicting" },
      "maxmemory-policy evicts: limits are not exact (set noeviction)"));
    return parts;
  }

  function render(d) {
    const caps = d.store ? [" · live leases ", el("b", {}, d.live_leases)]
      : [" · live keys ", el("b", {}, d.live_keys), ` of ${d.max_live_keys} · live leases `, el("b", {}, d.live_leases),
         ` of ${d.max_leases}`];
    $("summary").replaceChildren("config version ", el("b", {}, d.config_version), ...caps, ...store(d.store));
    const rules = d.rules.join("\n");
    if (rules !== state.rulesShown) {
      const sel = $("rule"), keep = sel.value;
      sel.replaceChildren(el("option", { value: "" }, "every rule"), ...d.rules.map((r) => el("option", { value: r }, r)));
      sel.value = keep;
      state.rulesShown = rules;
    }
    $("resources").tBodies[0].replaceChildren(...d.resources.map(row));
    state.nextAfter = d.next_after;
    $("next").disabled = !d.next_after;
    $("prev").disabled = !state.after;
    $("count").textContent = `${d.resources.length} shown` + (d.next_after ? ", more on the next page" : "");
    d.charts.forEach(chart);
    const list = d.transitions.map((t) => el("li", {}, new Date(t.at_ms).toLocaleTimeString(), "  ",
      el("b", {}, t.resource), "  ", el("span", { class: "badge " + t.from }, t.from), " → ",
      el("span", { class: "badge " + t.to }, t.to), "  ", el("span", { class: "muted" }, t.reason)));
    $("transitions").replaceChildren(...(list.length ? list : [el("li", { class: "muted" }, "none yet")]));
    const sh = d.store && d.store.shares;
    $("shares").hidden = !(sh && (sh.keys > 0 || sh.slices_taken > 0));
    if (sh) {
      $("shares-summary").textContent = `${sh.live} live of ${sh.keys} keys · ${sh.slices_taken} slices taken · ` +
        `${sh.permits_taken} permits taken, ${sh.given_back} given back · ${sh.local_decisions} acquires answered here`;
      const held = sh.held.map((h) => el("tr", {}, el("td", {}, h.resource), el("td", {}, h.levels || "—"),
        el("td", {}, h.permits), el("td", {}, `${h.ttl_left_ms} ms`), el("td", {}, h.next_ask)));
      $("shares-held").tBodies[0].replaceChildren(...(held.length ? held
        : [el("tr", {}, el("td", { class: "muted", colspan: "5" }, "no live slice now"))]));
    }
    $("rls").hidden = !d.rls;
    if (d.rls) {
      $("rls-domains").tBodies[0].replaceChildren(...d.rls.domains.map((r) =>
        el("tr", {}, el("td", {}, r.domain), el("td", {}, r.ok), el("td", {}, r.over_limit))));
      const limits = d.rls.limits.map((r) =>
        el("tr", {}, el("td", {}, r.limit), el("td", {}, r.ok), el("td", {}, r.over_limit),
          el("td", {}, r.shadow_over_limit)));
      $("rls-limits").tBodies[0].replaceChildren(...(limits.length ? limits
        : [el("tr", {}, el("td", { class: "muted", colspan: "4" }, "no descriptor matched a limit yet"))]));
    }
  }

  async function refresh() {
    const q = new URLSearchParams({ prefix: $("prefix").value, rule: $("rule").value, after: state.after, page_size: "50" });
    try {
      const r = await fetch("/status.json?" + q, { cache: "no-store" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      render(await r.json());
      $("live").className = "live on";
      document.body.dataset.updated = String(Date.now());
    } catch (e) {
      $("live").className = "live off";
      $("live").title = "cannot reach quotad: " + e.message;
    }
  }

  $("prefix").addEventListener("input", () => { state.after = ""; refresh(); });
  $("rule").addEventListener("change", () => { state.after = ""; refresh(); });
  $("next").addEventListener("click", () => { state.after = state.nextAfter; refresh(); });
  $("prev").addEventListener("click", () => { state.after = ""; refresh(); });
  refresh();
  setInterval(refresh, 1000);
})();
