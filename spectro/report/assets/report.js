// spectro report: draws the page from the JSON in <script id="data">. No network, no libraries.
"use strict";
(function () {
  const t0 = performance.now();
  const D = JSON.parse(document.getElementById("data").textContent);
  const $ = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null) continue;
      if (k === "text") e.textContent = v; else if (k === "html") e.innerHTML = v; else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  };
  const main = document.querySelector("main");
  const tip = document.getElementById("tip");
  const fmt = (x, d = 4) => (x == null || !isFinite(x)) ? "—" : (Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(d - 1) : x.toPrecision(d));
  const FT = D.flag_text || (D.a && D.a.flag_text) || {};
  const reasons = (f) => {
    if (!f) return [];
    const out = Object.keys(FT).filter((b) => f & Number(b)).map((b) => FT[b]);
    return out.length ? out : ["flagged by the job (reason not recorded)"];
  };
  const whyText = (f) => reasons(f).map((r) => "⚠ " + r).join("\n");

  // ---------------------------------------------------------------- tooltip
  document.addEventListener("mousemove", (ev) => {
    let el = ev.target, text = null;  // the nearest element with a tip (attribute) or a tip function
    while (el && el.getAttribute && !el.tipAt && !el.getAttribute("data-tip")) el = el.parentElement;
    if (el && el.tipAt) text = el.tipAt(ev);
    else if (el && el.getAttribute) text = el.getAttribute("data-tip");
    if (!text) { tip.style.display = "none"; return; }
    tip.textContent = text;
    tip.style.display = "block";
    const x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    const y = ev.clientY + 16 + tip.offsetHeight > window.innerHeight ? ev.clientY - tip.offsetHeight - 10 : ev.clientY + 16;
    tip.style.left = x + "px"; tip.style.top = y + "px";
  });

  // ---------------------------------------------------------------- colours
  const lerp = (a, b, t) => a.map((v, i) => Math.round(v + (b[i] - v) * t));
  const ramp = (stops, t) => {
    t = Math.max(0, Math.min(1, t));
    const n = stops.length - 1, i = Math.min(n - 1, Math.floor(t * n));
    const c = lerp(stops[i], stops[i + 1], t * n - i);
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  };
  const DIV = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]];
  const SEQ = [[252, 253, 191], [254, 176, 120], [241, 96, 93], [183, 55, 121], [114, 31, 129], [44, 17, 95]];
  const colourFor = (scale) => (v) => v == null ? "rgb(225,225,225)" :
    scale.signed ? ramp(DIV, 0.5 + 0.5 * v / scale.max) : ramp(SEQ, (v - scale.min) / ((scale.max - scale.min) || 1));
  function scaleOf(values, signed) {
    const a = values.filter((v) => v != null && isFinite(v));
    if (!a.length) return { signed, min: 0, max: 1 };
    if (signed) {
      const s = a.map(Math.abs).sort((x, y) => x - y);
      return { signed, pct: true, min: 0, max: s[Math.floor(0.98 * (s.length - 1))] || s[s.length - 1] || 1 };
    }
    return { signed, min: Math.min(...a), max: Math.max(...a) };
  }
  function legend(scale, label) {
    const stops = (scale.signed ? DIV : SEQ).map((c, i, arr) => `rgb(${c}) ${(100 * i / (arr.length - 1)).toFixed(0)}%`);
    const lo = scale.signed ? -scale.max : scale.min;
    return $("span", { class: "legend" }, $("span", { text: fmt(lo, 4) }),
      $("span", { class: "bar", style: `background: linear-gradient(90deg, ${stops.join(",")})` }),
      $("span", { text: fmt(scale.max, 4) + (scale.pct ? " (98th pct of |value|; beyond: saturated)" : "") }),
      label ? $("span", { text: "  " + label }) : null);
  }

  // ---------------------------------------------------------------- svg
  const SVG = "http://www.w3.org/2000/svg";
  const S = (tag, attrs) => { const e = document.createElementNS(SVG, tag); for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v); return e; };
  function errorbars(items, opts) {  // items: {label, v, lo, hi, flagged, tip}
    const w = opts.width || 520, rowH = 22, h = items.length * rowH + 30, left = 90, right = 20;
    const vals = items.flatMap((it) => [it.v, it.lo, it.hi]).filter((x) => x != null && isFinite(x));
    let lo = Math.min(0, ...vals), hi = Math.max(0, ...vals);
    if (lo === hi) { lo -= 1; hi += 1; }
    const X = (v) => left + (w - left - right) * (v - lo) / (hi - lo);
    const svg = S("svg", { width: w, height: h, role: "img" });
    svg.append(S("line", { x1: X(0), x2: X(0), y1: 4, y2: h - 22, stroke: "#bbb" }));
    items.forEach((it, i) => {
      const y = 14 + i * rowH, g = S("g", { "data-tip": it.tip, class: it.flagged ? "flagged-svg" : "" });
      const t = S("text", { x: left - 6, y: y + 4, "text-anchor": "end" }); t.textContent = it.label + (it.flagged ? " ⚠" : ""); g.append(t);
      const col = it.flagged ? "#999" : "#1f4e9c";
      if (it.lo != null && it.hi != null) g.append(S("line", { x1: X(it.lo), x2: X(it.hi), y1: y, y2: y, stroke: col, "stroke-width": 2, "stroke-dasharray": it.flagged ? "3 2" : "" }));
      if (it.v != null) g.append(S("circle", { cx: X(it.v), cy: y, r: 4, fill: it.flagged ? "#fff" : col, stroke: col }));
      g.append(S("rect", { x: 0, y: y - rowH / 2, width: w, height: rowH, fill: "transparent" }));
      svg.append(g);
    });
    for (const v of [lo, 0, hi]) { const t = S("text", { x: X(v), y: h - 6, "text-anchor": "middle" }); t.textContent = fmt(v, 3); svg.append(t); }
    return svg;
  }
  function traceplot(steps, trace, opts) {
    const w = 250, h = 120, l = 44, b = 18;
    const all = trace.flat().filter((x) => x != null);
    if (opts.ref != null) all.push(opts.ref);
    const lo = Math.min(...all), hi = Math.max(...all), s0 = steps[0], s1 = steps[steps.length - 1];
    const X = (s) => l + (w - l - 4) * (s - s0) / ((s1 - s0) || 1), Y = (v) => 4 + (h - b - 8) * (1 - (v - lo) / ((hi - lo) || 1));
    const svg = S("svg", { width: w, height: h });
    const cols = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
    trace.forEach((row, c) => svg.append(S("polyline", { fill: "none", stroke: cols[c % 8], "stroke-width": 1, points: row.map((v, i) => v == null ? "" : `${X(steps[i]).toFixed(1)},${Y(v).toFixed(1)}`).join(" ") })));
    if (opts.ref != null) svg.append(S("line", { x1: l, x2: w - 4, y1: Y(opts.ref), y2: Y(opts.ref), stroke: "#333", "stroke-dasharray": "4 3" }));
    for (const [v, y] of [[hi, 12], [lo, h - b]]) { const t = S("text", { x: l - 3, y, "text-anchor": "end" }); t.textContent = fmt(v, 4); svg.append(t); }
    const t = S("text", { x: w / 2, y: h - 3, "text-anchor": "middle" }); t.textContent = `SGLD step ${s0}–${s1}`; svg.append(t);
    return svg;
  }
  function bars(values, opts) {  // explained-variance bars with bands: opts.bands = [{lo, hi, colour, label}]
    const w = 300, h = 150, l = 34, b = 20, n = values.length, bw = (w - l - 10) / n;
    const Y = (v) => 6 + (h - b - 6) * (1 - v);
    const svg = S("svg", { width: w, height: h });
    for (const v of [0, 0.5, 1]) { svg.append(S("line", { x1: l, x2: w, y1: Y(v), y2: Y(v), stroke: "#eee" })); const t = S("text", { x: l - 4, y: Y(v) + 4, "text-anchor": "end" }); t.textContent = v; svg.append(t); }
    values.forEach((v, i) => {
      const g = S("g", { "data-tip": `${opts.labels[i]}: ${fmt(v, 3)} of the variance` });
      g.append(S("rect", { x: l + i * bw + 3, y: Y(v), width: bw - 6, height: Y(0) - Y(v), fill: "#4a78c2" }));
      const t = S("text", { x: l + i * bw + bw / 2, y: h - 5, "text-anchor": "middle" }); t.textContent = opts.labels[i]; g.append(t);
      svg.append(g);
    });
    for (const band of opts.bands || []) {
      if (band.lo == null) continue;
      const g = S("g", { "data-tip": band.label });
      g.append(S("rect", { x: l + 1, y: Y(band.hi), width: bw - 2, height: Math.max(2, Y(band.lo) - Y(band.hi)), fill: band.colour, opacity: 0.45 }));
      svg.append(g);
    }
    return svg;
  }

  // ---------------------------------------------------------------- tables
  function table(head, rows, cls) {
    const t = $("table", { class: "grid " + (cls || "") });
    t.append($("tr", {}, ...head.map((h, i) => $("th", { class: i ? "" : "l", text: h }))));
    for (const r of rows) t.append($("tr", {}, ...r.map((c, i) => c instanceof Node ? c : $("td", { class: i ? "" : "l", text: c }))));
    return t;
  }
  function cell(e, extra) {  // e: {chi, ci95, stderr, flag, ...}
    const f = e.flag || 0;
    const tipText = `χ = ${fmt(e.chi)}  95% interval [${fmt(e.ci95 && e.ci95[0])}, ${fmt(e.ci95 && e.ci95[1])}]  stderr ${fmt(e.stderr)}` +
      (e.rhat != null ? `\nR-hat ${fmt(e.rhat, 3)}  ESS ${fmt(e.ess, 3)}` : "") + (extra ? "\n" + extra : "") + (f ? "\n" + whyText(f) : "");
    const td = $("td", { "data-tip": tipText, class: f ? "flagged" : "", "data-flag": f, "data-why": reasons(f).join("; ") },
      `${fmt(e.chi, 3)} [${fmt(e.ci95 && e.ci95[0], 2)}, ${fmt(e.ci95 && e.ci95[1], 2)}]`, f ? $("span", { class: "flag-mark", text: " ⚠" }) : null);
    return td;
  }
  const section = (id, title, ...kids) => { const s = $("section", { id }, $("h2", { text: title }), ...kids); main.append(s); return s; };
  const jsonBlock = (obj) => $("pre", { class: "json", text: JSON.stringify(obj, null, 2) });

  // ---------------------------------------------------------------- banner
  function banner(fl, label) {
    if (!fl) return null;
    const frac = fl.total ? fl.entries / fl.total : 0;
    const cls = frac >= 0.1 ? "bad" : fl.entries ? "warn" : "ok";
    const msg = fl.entries === 0 ? `${label}all ${fl.total} χ entries have trustworthy error bars (no flags).` :
      `${label}${fl.entries} of ${fl.total} χ entries (${(100 * frac).toFixed(1)} %) are flagged unreliable: their error bars cannot be trusted. ` +
      `They are hatched and grey on this page; hover for the reason and what to change.` + (frac >= 0.1 ? " Treat this run's conclusions with care." : "");
    const b = $("div", { class: "banner " + cls, id: label ? null : "banner", text: msg });
    const ws = Object.entries(fl.warnings || {});
    if (ws.length) b.append($("details", {}, $("summary", { text: "details" }), ...ws.map(([k, v]) => $("div", { class: "note", text: `${k}: ${v}` }))));
    return b;
  }

  // ---------------------------------------------------------------- networks: text view
  function seriesList(R, prefix) {  // [{key, label, group, values[T], lo, hi, flag, signed, what}]
    const T = R.tokens, out = [];
    R.components.forEach((c, k) => out.push({ key: prefix + "chi:" + c, group: "χ per component", label: c, values: T.chi[k], lo: T.lo[k], hi: T.hi[k], se: T.stderr[k], flag: T.flag[k], what: `χ[${R.observable}] of ${c}` }));
    if (T.offset) R.components.forEach((c, k) => {
      if (T.offset[k].every((v) => v === 0)) return;
      const cov = T.chi[k].map((v, t) => v == null || T.offset[k][t] == null ? null : v - T.offset[k][t]);
      out.push({ key: prefix + "cov:" + c, group: "covariance part −Cov_C(φ,ψ)", label: c, values: cov, se: null, flag: T.flag[k], what: `covariance part of ${c}` });
      out.push({ key: prefix + "off:" + c, group: "offset term −E_C[φ](E_C[ψ]−E_full[ψ])", label: c, values: T.offset[k], se: T.offset_stderr[k], flag: T.flag[k], what: `offset term of ${c}` });
    });
    if (R.pca && R.pca.available) for (const [g, L] of Object.entries(R.pca.layers)) L.scores.forEach((sc, j) => {
      const fl = sc.map((_, t) => L.heads.reduce((a, h) => a | T.flag[R.components.indexOf(h)][t], 0));
      out.push({ key: prefix + "pc:" + g + ":" + j, group: "principal modes (z-scored heads)", label: `${g} PC${j + 1} (${(100 * L.explained_ratio[j]).toFixed(1)} %)`, values: sc, se: L.score_stderr[j], flag: fl, what: `${g} PC${j + 1} score`, pc: true });
    });
    return out;
  }
  function tokenView(R, series, host, title) {
    const T = R.tokens, box = $("div", { class: "texts" }), spans = [];
    if (title) host.append($("h3", { text: title }));
    for (const s of T.sequences) {
      const div = $("div", { class: "seq" }, $("span", { class: "lab", text: `${s.domain} #${s.sample}` }));
      for (const t of s.tokens) {
        const txt = T.text[t].replace(/\n/g, "↵\n");
        const sp = $("span", { class: "tok", "data-t": t, text: txt || "∅" });
        spans.push(sp); div.append(sp);
      }
      box.append(div);
    }
    const leg = $("div", { class: "controls" });
    host.append(leg, box);
    if (T.shown < T.n_tokens) host.append($("p", { class: "note", text: `${T.shown} of ${T.n_tokens} probe tokens shown.` }));
    let current = null;
    box.tipAt = (ev) => {  // built on hover, for the token under the pointer
      const sp = ev.target.closest(".tok");
      if (!sp || !current) return null;
      const se = current, t = +sp.dataset.t, v = se.values[t], f = se.flag[t] || 0;
      const iv = se.lo ? `95% interval [${fmt(se.lo[t])}, ${fmt(se.hi[t])}]` : se.se ? `± ${fmt(se.se[t], 3)} stderr${se.pc ? " (propagated, independent errors)" : ""}` : "";
      return `${JSON.stringify(T.text[t])}  (${T.cls[t]}; position ${T.position[t] + 1})\n${se.what} = ${fmt(v)}  ${iv}` + (f ? "\n" + whyText(f) : "");
    };
    return {
      paint(se) {
        current = se;
        const sc = scaleOf(se.values, true), col = colourFor(sc);
        leg.replaceChildren(legend(sc, se.what));
        for (const sp of spans) {
          const t = +sp.dataset.t, f = se.flag[t] || 0;
          sp.style.backgroundColor = col(se.values[t]);
          if (f) { sp.classList.add("flagged"); sp.dataset.why = reasons(f).join("; "); }
          else if (sp.dataset.why !== undefined) { sp.classList.remove("flagged"); delete sp.dataset.why; }
        }
      },
    };
  }
  function selector(options, onChange) {
    const sel = $("select", { id: "selector" });
    const groups = {};
    for (const o of options) {
      if (!groups[o.group]) { groups[o.group] = $("optgroup", { label: o.group }); sel.append(groups[o.group]); }
      groups[o.group].append($("option", { value: o.key, text: o.label }));
    }
    sel.addEventListener("change", () => onChange(sel.value));
    return sel;
  }

  function nnRun(R, label) {
    if (R.tokens) {
      const series = seriesList(R, "");
      const s = section("text", "χ over the probe text", $("p", { class: "note", text: `Each predicted token is coloured by the chosen quantity (blue < 0 < red). Hover for the value and its 95 % interval. Hatched grey: flagged unreliable.` }));
      const view = tokenView(R, series, s);
      const sel = selector(series, (k) => view.paint(series.find((x) => x.key === k)));
      s.insertBefore($("div", { class: "controls" }, $("label", { text: "colour by: " }), sel), s.children[2]);
      view.paint(series[0]);
    }
    for (const n of R.notes || []) main.append($("p", { class: "note", text: n }));
    domainTable(R.domains);
    pcaSection(R);
    llcSection(R);
    settingsSection(R);
  }
  function domainTable(dt) {
    if (!dt || !dt.rows.length) return;
    const comps = D.kind === "nn" ? D.components : dt.components;
    section("domains", "Components × domains", $("p", { class: "note", text: dt.note }),
      table(["component", ...dt.domains], dt.rows.map((row, k) => [comps[k], ...row.map((e) => cell(e, e.n_tokens ? `${e.n_tokens} tokens, ${e.n_flagged} flagged` : ""))])));
  }
  function pcaSection(R) {
    const P = R.pca;
    const s = section("pca", "Principal modes per layer");
    if (!P || !P.available) { s.append($("p", { class: "note", text: P ? P.reason : "not available" })); return; }
    s.append($("p", { class: "note", text: "PCA of the z-scored head columns of per-token χ (Baker et al.). Bars: explained variance. Grey band on PC1: its noise floor (2.5–97.5 % of PC1 for pure Monte Carlo noise); orange band: token-bootstrap 95 % range of PC1. PC1 means shared structure only where it clears the floor." }));
    const cols = $("div", { class: "cols" });
    for (const [g, L] of Object.entries(P.layers)) {
      const nf = L.noise_floor, bt = L.pc1_bootstrap;
      const above = bt.q025 != null && nf.q975 != null && bt.q025 > nf.q975;
      const d = $("div", {}, $("h3", { text: `${g}: PC1 ${(100 * L.explained_ratio[0]).toFixed(1)} % ${above ? "(above the noise floor)" : "(NOT above the noise floor)"}` }),
        bars(L.explained_ratio, { labels: L.explained_ratio.map((_, i) => "PC" + (i + 1)), bands: [
          { lo: nf.q025, hi: nf.q975, colour: "#777", label: `noise floor of PC1: ${fmt(nf.q025, 3)}–${fmt(nf.q975, 3)} (${L.noise_floor_kind})` },
          { lo: bt.q025, hi: bt.q975, colour: "#f0a030", label: `PC1 token bootstrap 95 %: ${fmt(bt.q025, 3)}–${fmt(bt.q975, 3)}` }] }),
        table(["head", ...L.loadings.map((_, i) => "PC" + (i + 1))], L.heads.map((h, k) => [h, ...L.loadings.map((row) => {
          const v = row[k]; return $("td", { style: `background:${colourFor({ signed: true, max: 1 })(v)}`, text: fmt(v, 2) });
        })])));
      if (L.cov_part_explained_ratio) d.append($("p", { class: "note", text: `covariance part only: PC1 ${(100 * L.cov_part_explained_ratio[0]).toFixed(1)} % (noise floor ${fmt(L.cov_part_noise_floor.q025, 3)}–${fmt(L.cov_part_noise_floor.q975, 3)})` }));
      cols.append(d);
    }
    s.append(cols);
    const dec = R.decomposition;
    if (dec && dec.available) {
      s.append($("h3", { text: "Offset term vs covariance part" }), $("p", { class: "note", text: "Baker's χ^C = −Cov_C(φ,ψ) − E_C[φ]·(E_C[ψ] − E_full[ψ]). Shares of the across-token variance of χ (they need not sum to 1)." }),
        table(["component", "E_C[φ]", "var(offset)/var(χ)", "var(cov)/var(χ)", "r(χ, offset)", "median stderr χ"],
          Object.entries(dec.components).map(([c, e]) => [c, fmt(e.e_phi, 3), fmt(e.var_offset_over_var_chi, 3), fmt(e.var_cov_over_var_chi, 3), fmt(e.r_chi_offset, 3), fmt(e.median_stderr_chi, 3)])));
    } else if (dec) s.append($("p", { class: "note", text: "offset/covariance split: " + dec.reason }));
  }
  function llcItems(R) {
    return R.llc.map((e) => ({ label: e.component, v: e.llc, lo: e.ci95 && e.ci95[0], hi: e.ci95 && e.ci95[1], flagged: e.why.length > 0,
      tip: `LLC ${e.component} = ${fmt(e.llc)} ± ${fmt(e.stderr, 3)} (95% [${fmt(e.ci95 && e.ci95[0])}, ${fmt(e.ci95 && e.ci95[1])}])\nloss-trace R-hat ${fmt(e.rhat, 3)}, ESS bulk ${fmt(e.ess_bulk, 3)}` + (e.why.length ? "\n⚠ " + e.why.join("\n⚠ ") : "") }));
  }
  function llcSection(R) {
    const s = section("llc", "Local learning coefficients and loss traces",
      $("p", { class: "note", text: "LLC per component with its 95 % t interval; below, the minibatch loss of every chain against the SGLD step (dashed: L(w*)). Healthy traces level off and overlap." }),
      errorbars(llcItems(R), {}));
    const cols = $("div", { class: "maps" });
    for (const e of R.llc) {
      if (!e.trace) continue;
      cols.append($("figure", { "data-tip": e.why.join("\n") || null, class: e.why.length ? "flagged" : "" }, traceplot(e.steps, e.trace, { ref: e.init_loss }),
        $("figcaption", { text: `${e.component}: R-hat ${fmt(e.rhat, 3)}, ESS ${fmt(e.ess_bulk, 3)}${e.why.length ? " ⚠" : ""}` })));
    }
    s.append(cols);
  }
  function settingsSection(R) {
    section("settings", "Run settings and machine",
      $("p", { class: "note", text: `folder ${R.folder}; summary format ${R.format}; ${R.seconds != null ? fmt(R.seconds, 3) + " s" : ""}` }),
      $("div", { class: "cols" }, $("div", {}, $("h3", { text: "settings (config.json)" }), jsonBlock(R.settings)),
        $("div", {}, $("h3", { text: "machine and versions" }), jsonBlock(R.machine), $("h3", { text: "estimator" }), jsonBlock(R.estimator))));
  }

  // ---------------------------------------------------------------- Ising
  const CHAMBER = [[230, 120, 110], [120, 190, 120], [120, 150, 230]];
  function mapCanvas(lat, probes, values, flags, scale, tipFn, px) {
    const H = lat.height, W = lat.width;
    px = px || Math.max(3, Math.floor(220 / Math.max(H, W)));
    const c = $("canvas", { class: "map", width: W * px, height: H * px });
    const g = c.getContext("2d"), col = colourFor(scale);
    g.fillStyle = "#eee"; g.fillRect(0, 0, W * px, H * px);
    probes.forEach(([r0, r1, c0, c1], a) => {
      g.fillStyle = col(values[a]); g.fillRect(c0 * px, r0 * px, (c1 - c0) * px, (r1 - r0) * px);
      if (flags && flags[a]) {  // hatch flagged probes
        g.save(); g.beginPath(); g.rect(c0 * px, r0 * px, (c1 - c0) * px, (r1 - r0) * px); g.clip();
        g.strokeStyle = "rgba(60,60,60,.8)"; g.lineWidth = 1;
        for (let k = -(r1 - r0) * px; k < (c1 - c0) * px; k += 4) { g.beginPath(); g.moveTo(c0 * px + k, r1 * px); g.lineTo(c0 * px + k + (r1 - r0) * px, r0 * px); g.stroke(); }
        g.restore();
      }
    });
    drawWalls(g, lat, px, "#fff", 2.5);
    c.tipAt = (ev) => {
      const b = c.getBoundingClientRect(), x = (ev.clientX - b.left) / px, y = (ev.clientY - b.top) / px;
      let hit = -1;
      probes.forEach(([r0, r1, c0, c1], a) => { if (y >= r0 && y < r1 && x >= c0 && x < c1) hit = a; });
      return hit < 0 ? null : tipFn(hit);
    };
    c.dataset.flagged = flags ? flags.filter((f) => f).length : 0;
    return c;
  }
  function drawWalls(g, lat, px, colour, lw) {
    g.strokeStyle = colour; g.lineWidth = lw;
    for (const [r0, c0, r1, c1] of lat.walls) { g.beginPath(); g.moveTo(c0 * px, r0 * px); g.lineTo(c1 * px, r1 * px); g.stroke(); }
  }
  function latticePicture(lat, probes) {
    const px = Math.max(3, Math.floor(260 / Math.max(lat.height, lat.width)));
    const c = $("canvas", { class: "map", width: lat.width * px, height: lat.height * px }), g = c.getContext("2d");
    lat.region.forEach((row, r) => row.forEach((k, q) => { g.fillStyle = k < 0 ? "#ddd" : `rgb(${CHAMBER[k]})`; g.fillRect(q * px, r * px, px, px); }));
    g.strokeStyle = "rgba(0,0,0,.35)"; g.lineWidth = 1;
    for (const [r0, r1, c0, c1] of probes) g.strokeRect(c0 * px + 0.5, r0 * px + 0.5, (c1 - c0) * px - 1, (r1 - r0) * px - 1);
    drawWalls(g, lat, px, "#000", 3);
    return c;
  }
  function isingTip(R, i) {
    return (a) => {
      const f = R.flag[i][a];
      return `probe ${R.fields[a]} → chamber ${R.chambers[i]}\nχ = ${fmt(R.chi[i][a])}  95% interval [${fmt(R.lo[i][a])}, ${fmt(R.hi[i][a])}]\nstderr ${fmt(R.stderr[i][a], 3)}  R-hat ${fmt(R.rhat[i][a], 3)}  ESS ${fmt(R.ess[i][a], 3)}` + (f ? "\n" + whyText(f) : "");
    };
  }
  function isingRun(R) {
    section("lattice", "The lattice",
      $("p", { class: "note", text: `${R.lattice.height}×${R.lattice.width} walled Ising lattice, β = ${R.beta}; chambers: left (red), right (green), lower (blue); the wall in black; ${R.probes.length} probe squares outlined. ${R.chains} chains × ${R.draws} draws.` }),
      latticePicture(R.lattice, R.probes));
    const s = section("maps", "χ maps per chamber", $("p", { class: "note", text: "χ[chamber, probe] = β·Cov(M_chamber, M_probe): how strongly a field on the probe moves each chamber's magnetisation. Rows: χ, its stderr, its R-hat. Hatched: flagged unreliable (hover for why)." }));
    const chiScale = scaleOf(R.chi.flat(), false), seScale = scaleOf(R.stderr.flat(), false), rhScale = scaleOf(R.rhat.flat(), false);
    for (const [what, arr, sc] of [["χ", R.chi, chiScale], ["stderr", R.stderr, seScale], ["R-hat", R.rhat, rhScale]]) {
      const row = $("div", { class: "maps" });
      R.chambers.forEach((ch, i) => row.append($("figure", {}, mapCanvas(R.lattice, R.probes, arr[i], R.flag[i], sc, isingTip(R, i)), $("figcaption", { text: `${what}: ${ch}` }))));
      s.append($("h3", { text: what }), legend(sc, ""), row);
    }
    if (R.exact) exactSection(R.exact);
    else main.append($("p", { class: "note", text: "No exact comparison for this run (the lattice is too large for the transfer matrix, or the job computed none)." }));
    settingsSection(R);
  }
  function exactSection(E) {
    const s = section("exact", "Exact comparison",
      $("p", { class: "note", text: `${E.lattice_label}, β = ${E.beta}: z = (Monte Carlo − exact) / stderr per probe and chamber. ${E.covered} of ${E.n} exact values inside their 95 % interval (expected ≈ ${Math.round(0.95 * E.n)}); rms z = ${fmt(E.rms_z, 3)} (expected ≈ 1), max |z| = ${fmt(E.max_abs_z, 3)}.` }));
    const row = $("div", { class: "maps" }), sc = { signed: true, min: 0, max: 3 };
    D.chambers.forEach((ch, i) => row.append($("figure", {}, mapCanvas(E.lattice, E.probes, E.z[i], E.flag[i], sc,
      (a) => `probe ${E.fields[a]} → ${ch}\nMC ${fmt(E.mc[i][a])} ± ${fmt(E.stderr[i][a], 3)}, exact ${fmt(E.exact[i][a])}\nz = ${fmt(E.z[i][a], 3)}` + (E.flag[i][a] ? "\n" + whyText(E.flag[i][a]) : ""), 14),
      $("figcaption", { text: `z: ${ch}` }))));
    s.append(legend(sc, "z (saturates at ±3)"), row);
  }

  // ---------------------------------------------------------------- compare
  function compareRuns() {
    const A = D.a, B = D.b, C = D.compare;
    main.append(banner(A.flagged, "A: "), banner(B.flagged, "B: "));
    section("runs", "The two runs", table(["", "name", "folder", "format"], [["A", A.name, A.folder, A.format], ["B", B.name, B.folder, B.format]]),
      ...C.notes.map((n) => $("p", { class: "note", text: n })));
    if (C.stats) section("stability", "Agreement", $("p", { class: "note", text: "From spectro.analysis.compare_runs: per-token χ correlation across runs, and the stderr calibration mean((χ_A − χ_B)² / (se_A² + se_B²)) — ≈ 1 when the error bars describe the run-to-run spread (same checkpoint); > 1: the error bars are too small or the runs differ." }), jsonBlock(C.stats));
    if (A.kind === "nn") {
      if (C.tokens) {
        const sa = seriesList(A, "a:"), sb = seriesList(B, "b:");
        const sd = C.components.map((c, k) => ({ key: "d:" + c, label: c, values: C.tokens.diff[k], lo: C.tokens.lo[k], hi: C.tokens.hi[k], flag: C.tokens.flag[k], what: `χ_A − χ_B of ${c}` }));
        const s = section("text", "χ over the probe text: A, B and A − B");
        const ctl = $("div", { class: "controls" }); s.append(ctl);
        const cols = $("div", { class: "cols" }), ha = $("div", {}), hb = $("div", {}); cols.append(ha, hb); s.append(cols);
        const va = tokenView(A, sa, ha, "A: " + A.name), vb = tokenView(B, sb, hb, "B: " + B.name);
        const hd = $("div", {}); s.append(hd);
        const vd = tokenView(A, sd, hd, "A − B (interval: ±1.96·√(se_A² + se_B²))");
        const show = (c) => { va.paint(sa.find((x) => x.key === "a:chi:" + c)); vb.paint(sb.find((x) => x.key === "b:chi:" + c)); vd.paint(sd.find((x) => x.key === "d:" + c)); };
        ctl.append($("label", { text: "component: " }), selector(C.components.map((c) => ({ key: c, label: c, group: "component" })), show));
        show(C.components[0]);
      }
      if (C.domains) section("domains", "Components × domains: A, B and A − B", $("p", { class: "note", text: C.domains.note }),
        table(["component", ...C.domains.domains.flatMap((d) => [`${d}: A`, `${d}: B`, `${d}: A − B`])],
          C.domains.rows.map((row, k) => [C.domains.components[k], ...row.flatMap((t) => [cell(t.a), cell(t.b), cell(t.d)])])));
      if (C.llc) section("llc", "LLC: A, B and A − B", errorbars(C.llc.map((e) => ({ label: e.label, v: e.v, lo: e.lo, hi: e.hi, flagged: e.flagged, tip: e.tip })), { width: 620 }));
    } else {
      const s = section("maps", "χ maps: A, B and the difference", $("p", { class: "note", text: "z = (χ_A − χ_B) / √(se_A² + se_B²) per probe and chamber; hatched: flagged in A or B." }));
      const sc = scaleOf(A.chi.flat().concat(B.chi.flat()), false), zs = { signed: true, min: 0, max: 3 };
      A.chambers.forEach((ch, i) => {
        const row = $("div", { class: "maps" });
        row.append($("figure", {}, mapCanvas(A.lattice, A.probes, A.chi[i], A.flag[i], sc, isingTip(A, i)), $("figcaption", { text: `A: ${ch}` })));
        row.append($("figure", {}, mapCanvas(B.lattice, B.probes, B.chi[i], B.flag[i], sc, isingTip(B, i)), $("figcaption", { text: `B: ${ch}` })));
        row.append($("figure", {}, mapCanvas(A.lattice, A.probes, C.z[i], C.flag[i], zs, (a) => `probe ${A.fields[a]} → ${ch}\nχ_A − χ_B = ${fmt(C.diff[i][a])} ± ${fmt(C.se[i][a], 3)} (combined stderr)\nz = ${fmt(C.z[i][a], 3)}` + (C.flag[i][a] ? "\n" + whyText(C.flag[i][a]) : "")), $("figcaption", { text: `z of A − B: ${ch}` })));
        s.append($("h3", { text: ch }), row);
      });
      s.prepend(legend(zs, "z of the difference (saturates at ±3)"));
    }
  }

  // ---------------------------------------------------------------- page
  if (D.kind === "compare") compareRuns();
  else {
    main.append(banner(D.flagged, ""));
    if (D.kind === "nn") nnRun(D); else isingRun(D);
  }
  document.body.dataset.readyMs = performance.now().toFixed(0);  // from navigation start to the drawn page
  document.body.dataset.scriptMs = (performance.now() - t0).toFixed(0);  // of which this script
  document.body.dataset.ready = "1";
})();
