/* gridman serve: the page's script (no framework, no build step, nothing from the network).
 *
 * One shell (index.html) serves every view; the view comes from location.pathname (/, /grid/NAME,
 * /xp/SIG), or is the grid view of a report when a <script id="gridman-data"> holds the data.
 * Sections: basics (DOM, fetch, polling) - formatting (Python format specs) - patterns (the
 * CLI's syntax) - curve chart (canvas) - parallel coordinates (SVG) - views (grids, grid, xp).
 * The hooks the browser tests read (docs/serve.md) live on window.gridman and body.dataset.view.
 */
"use strict";
(() => {
  // ---------------------------------------------------------------- basics
  const gm = (window.gridman = {
    firstTableAt: null, polls: 0, visible: [],
    curves: { metric: null, lines: 0, bands: 0 }, brushes: {},
  });
  let REPORT = false; // set at boot: a report embeds its data in <script id="gridman-data">
  const TOKEN = new URLSearchParams(location.search).get("token");
  const POLL_MS = 2000;
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);
  const $ = (sel, root = document) => root.querySelector(sel);

  /** A URL of this server, with the access token when the page was opened with one. */
  function withToken(url) {
    if (!TOKEN) return url;
    return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
  }

  /** An element: h("div", {class: "x", onclick: f}, child, "text"...). */
  function h(tag, attrs, ...children) {
    const ns = ["svg", "g", "path", "line", "rect", "text"].includes(tag);
    const el = ns ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  const etags = new Map(); // url -> {etag, data}: the last answer, for If-None-Match

  /** GET JSON; {data, changed}: changed is false when the server answered 304. */
  async function getJSON(url) {
    const known = etags.get(url);
    const headers = known ? { "If-None-Match": known.etag } : {};
    // no-store: the browser must not answer from (or revalidate) its own cache behind our back
    const res = await fetch(withToken(url), { headers, cache: "no-store", credentials: "same-origin" });
    if (res.status === 304 && known) return { data: known.data, changed: false };
    let body = null;
    try { body = await res.json(); } catch (e) { /* not JSON: reported below */ }
    if (!res.ok || body === null) {
      const msg = body && body.error ? body.error + (body.hint ? ` (${body.hint})` : "") : `HTTP ${res.status}`;
      throw new Error(`${url}: ${msg}`);
    }
    const etag = res.headers.get("ETag");
    if (etag) etags.set(url, { etag, data: body });
    return { data: body, changed: true };
  }

  /** The live indicator in the header. */
  function setLive(text, stale = false) {
    const el = $("#live");
    el.textContent = text;
    el.classList.toggle("stale", stale);
  }

  /** Live updates: run `update` every 2 s after the last one finished (longer when it was
   * slow: 4x its duration), never two at once, none while the tab is hidden. */
  const poller = { update: null, timer: 0, busy: false };
  function startPolling(update) {
    if (REPORT) return;
    poller.update = update;
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) {
        clearTimeout(poller.timer);
        setLive("paused (tab hidden)");
      } else schedulePoll(0);
    });
    schedulePoll(POLL_MS);
  }
  function schedulePoll(delay) {
    clearTimeout(poller.timer);
    if (!document.hidden) poller.timer = setTimeout(pollOnce, delay);
  }
  async function pollOnce() {
    if (poller.busy) return;
    poller.busy = true;
    const t0 = performance.now();
    try {
      await poller.update();
      setLive("live · " + new Date().toLocaleTimeString());
    } catch (e) {
      setLive("update failed: " + e.message, true);
    } finally {
      poller.busy = false;
    }
    gm.polls += 1;
    const took = performance.now() - t0;
    schedulePoll(Math.min(30000, Math.max(POLL_MS, 4 * took)));
  }

  /** Run fn at most once per animation frame. */
  function throttled(fn) {
    let queued = false;
    return () => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => { queued = false; fn(); });
    };
  }

  function ago(t) {
    if (t === null || t === undefined) return "";
    const s = Math.max(0, Date.now() / 1000 - t);
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }
  const when = (t) => (t === null || t === undefined ? "" : new Date(t * 1000).toLocaleString());

  /** A nested dict as flat dotted keys (histories' and info's metrics). */
  function flatten(obj, prefix = "", out = {}) {
    for (const [k, v] of Object.entries(obj || {})) {
      if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, prefix + k + ".", out);
      else out[prefix + k] = v;
    }
    return out;
  }

  /** The header's breadcrumbs: [text, href or null]... */
  function crumbs(items) {
    const nav = $("#crumbs");
    nav.textContent = "";
    items.forEach(([text, href], i) => {
      if (i) nav.append(h("span", { class: "sep" }, "/"));
      nav.append(href && !REPORT ? h("a", { href: withToken(href) }, text) : h("span", {}, text));
    });
  }

  // ---------------------------------------------------------------- formatting
  // Python's format spec: [[fill]align][sign][z][#][0][width][grouping][.precision][type]
  const SPEC = /^(?:([\s\S])?([<>=^]))?([+\- ])?(z)?(#)?(0)?(\d+)?([,_])?(?:\.(\d+))?([bcdeEfFgGnosxX%])?$/;

  /** Exponent notation as Python writes it: at least two exponent digits (1.5e-05). */
  function expo(x, prec) {
    return x.toExponential(prec).replace(/e([+-])(\d)$/, "e$10$2");
  }

  /** Python's "g": fixed or exponent by the exponent, trailing zeros dropped unless alt. */
  function general(x, prec, alt) {
    const p = prec === 0 ? 1 : prec;
    if (x === 0) return alt ? (0).toFixed(p - 1) : "0";
    const exp = parseInt(x.toExponential(p - 1).split("e")[1], 10);
    let s = exp >= -4 && exp < p ? x.toFixed(Math.max(0, p - 1 - exp)) : expo(x, p - 1);
    if (!alt) s = s.replace(/(\.\d*?)0+(?=e|$)/, "$1").replace(/\.(?=e|$)/, "");
    else if (!s.includes(".")) s = s.replace(/(?=e|$)/, ".");
    return s;
  }

  /** A number's digits for a spec type, or null where Python would raise (str is shown). */
  function digits(x, type, prec, alt) {
    if (!Number.isFinite(x)) {
      const t = Number.isNaN(x) ? "nan" : x > 0 ? "inf" : "-inf";
      return type && "EFG".includes(type) ? t.toUpperCase() : t + (type === "%" ? "%" : "");
    }
    switch (type) {
      case "f": case "F": return x.toFixed(prec ?? 6);
      case "e": return expo(x, prec ?? 6);
      case "E": return expo(x, prec ?? 6).toUpperCase();
      case "g": return general(x, prec ?? 6, alt);
      case "n": return Number.isInteger(x) ? String(x) : general(x, prec ?? 6, alt);
      case "G": return general(x, prec ?? 6, alt).toUpperCase();
      case "%": return (x * 100).toFixed(prec ?? 6) + "%";
      case "d": return Number.isInteger(x) ? String(x) : null;
      case "x": case "X": case "o": case "b": {
        if (!Number.isInteger(x)) return null;
        const s = Math.abs(x).toString({ x: 16, X: 16, o: 8, b: 2 }[type]);
        return (x < 0 ? "-" : "") + (type === "X" ? s.toUpperCase() : s);
      }
      case "c": return Number.isInteger(x) ? String.fromCodePoint(x) : null;
      case "s": return null;
      default: // no type: str() without a precision, else about "g"
        return prec === undefined ? pyStr(x) : general(x, prec, alt);
    }
  }

  function group(s, sep) {
    const m = /^(-?)(\d+)(.*)$/.exec(s);
    if (!m) return s;
    return m[1] + m[2].replace(/\B(?=(\d{3})+(?!\d))/g, sep) + m[3];
  }

  /** A cell's text as the CLI's fmt_value: spec when given, else ~4 significant digits. */
  function fmt(value, spec) {
    if (value === null || value === undefined) return "";
    if (!spec) return plain(value);
    const m = SPEC.exec(spec);
    if (!m) return pyStr(value);
    const [, fill = " ", align, sign = "-", , alt, zero, width, sep, precText, type] = m;
    const prec = precText === undefined ? undefined : parseInt(precText, 10);
    let body;
    const isNum = typeof value === "number";
    if (isNum) {
      body = digits(value, type, prec, Boolean(alt));
      if (body === null) return pyStr(value);
      if (sep) body = group(body, sep);
      if (sign !== "-" && !body.startsWith("-")) body = (sign === "+" ? "+" : " ") + body;
    } else if (typeof value === "string" && (!type || type === "s")) {
      body = prec === undefined ? value : value.slice(0, prec);
    } else return pyStr(value);
    const w = width ? parseInt(width, 10) : 0;
    if (body.length >= w) return body;
    const pad = w - body.length;
    const how = align || (zero && isNum ? "=" : isNum ? ">" : "<");
    const f = zero && !align ? "0" : fill;
    if (how === "<") return body + f.repeat(pad);
    if (how === "^") return f.repeat(Math.floor(pad / 2)) + body + f.repeat(Math.ceil(pad / 2));
    if (how === "=" && /^[+\- ]/.test(body)) return body[0] + f.repeat(pad) + body.slice(1);
    return f.repeat(pad) + body;
  }

  /** Python's str() of a JSON value (what fmt_value shows when a spec does not apply). */
  function pyStr(value) {
    if (typeof value === "number" && Number.isFinite(value) && !Number.isInteger(value) && Math.abs(value) < 1e-4) {
      return expo(value, undefined).replace(/\.?0*e/, "e"); // 1e-05, 2.5e-07 (shortest digits)
    }
    return plain(typeof value === "number" && Number.isFinite(value) ? String(value) : value);
  }

  /** fmt_value without a spec: ints as is, floats with about 4 significant digits. */
  function plain(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "boolean") return value ? "True" : "False";
    if (typeof value === "number") {
      if (Number.isNaN(value)) return "nan";
      if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
      if (Number.isInteger(value) && Math.abs(value) < 1e16) return String(value);
      if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e6)) return expo(value, 3);
      const intDigits = String(Math.trunc(Math.abs(value))).length;
      return value.toFixed(Math.max(0, 4 - intDigits));
    }
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  // ---------------------------------------------------------------- patterns
  // The CLI's selection (core/names.py select, api/patterns.py select_xps): space-separated
  // patterns that must all match; "!" negates; key=value globs match a part (fnmatchcase); a
  // bare word matches a sig prefix, a key or a value; an integer is the XP's grid index.
  const globs = new Map();

  /** fnmatch.translate: * ? [seq] [!seq], the whole text, case-sensitive. */
  function glob(pat) {
    let re = globs.get(pat);
    if (re) return re;
    let src = "";
    for (let i = 0; i < pat.length; ) {
      const c = pat[i++];
      if (c === "*") {
        src += "[\\s\\S]*";
        while (pat[i] === "*") i++;
      } else if (c === "?") src += "[\\s\\S]";
      else if (c === "[") {
        let j = i;
        if (pat[j] === "!") j++;
        if (pat[j] === "]") j++;
        while (j < pat.length && pat[j] !== "]") j++;
        if (j >= pat.length) src += "\\[";
        else {
          let set = pat.slice(i, j).replace(/\\/g, "\\\\");
          i = j + 1;
          if (set[0] === "!") set = "^" + set.slice(1);
          else if (set[0] === "^") set = "\\" + set;
          src += "[" + set + "]";
        }
      } else src += c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
    }
    try { re = new RegExp("^(?:" + src + ")$"); } catch (e) { re = /(?!)/; } // [z-a]: matches nothing
    globs.set(pat, re);
    return re;
  }

  function matchOne(text, parts, sig) {
    if (text.includes("=")) {
      const re = glob(text);
      return parts.some((p) => re.test(p));
    }
    if (sig.startsWith(text)) return true;
    const re = glob(text);
    for (const p of parts) {
      const at = p.indexOf("=");
      const key = at < 0 ? p : p.slice(0, at);
      const value = at < 0 ? "" : p.slice(at + 1);
      if (re.test(key) || (value && re.test(value))) return true;
    }
    return false;
  }

  const isIndex = (p) => /^-?\d+$/.test(p.startsWith("!") ? p.slice(1) : p);
  const quote = (s) => "'" + s.replace(/\\/g, "\\\\").replace(/'/g, "\\'") + "'";

  /** What the CLI's hint says: the grid's keys, or the values of the key a pattern names. */
  function patternHint(body, negate, xps) {
    const list = (items) => (items.length > 8 ? items.slice(0, 8).join(", ") + `, ... (${items.length - 8} more)` : items.join(", "));
    const keys = [...new Set(xps.flatMap((x) => Object.keys((x && x.params) || {})))];
    const eq = body.indexOf("=");
    if (negate || eq < 0) return `keys of the grid: ${list(keys) || "none"}`;
    const key = body.slice(0, eq);
    const values = [...new Set(xps.flatMap((x) => ((x && x.parts) || [])
      .filter((p) => p.startsWith(key + "=")).map((p) => p.slice(key.length + 1))))];
    return values.length ? `values of ${key}: ${list(values)}` : `no key ${quote(key)}; keys of the grid: ${list(keys) || "none"}`;
  }

  /** {mask: Uint8Array (1: the row is selected), error: text or null}. */
  function selectRows(text, rows, xps) {
    const n = rows.length;
    const patterns = text.split(/\s+/).filter(Boolean);
    const mask = new Uint8Array(n).fill(1);
    const test = (p, i) => matchOne(p, (xps[i] && xps[i].parts) || [], rows[i].sig);
    for (const p of patterns) {
      const negate = p.startsWith("!");
      const body = negate ? p.slice(1) : p;
      if (!body) return { mask: mask.fill(0), error: `empty pattern ${quote(p)}` };
      if (isIndex(p)) {
        const index = parseInt(body, 10);
        if (!(index >= 0 && index < n)) return { mask: mask.fill(0), error: `XP index ${index} is out of range` };
        for (let i = 0; i < n; i++) if (mask[i] && (rows[i].index === index) === negate) mask[i] = 0;
        continue;
      }
      for (let i = 0; i < n; i++) if (mask[i] && test(body, i) === negate) mask[i] = 0;
    }
    if (!patterns.length || mask.some((v) => v)) return { mask, error: null };
    for (const p of patterns) { // the first that matches nothing on its own is named
      if (isIndex(p)) continue;
      const negate = p.startsWith("!");
      const body = negate ? p.slice(1) : p;
      let any = false;
      for (let i = 0; i < n && !any; i++) any = test(body, i) !== negate;
      if (!any) return { mask, error: `pattern ${quote(p)} matches no XP; ${patternHint(body, negate, xps)}` };
    }
    return { mask, error: `patterns ${quote(patterns.join(" "))} together match no XP (each matches some)` };
  }

  // ---------------------------------------------------------------- curve chart
  const PALETTE = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6",
    "#dd4477", "#66aa00", "#b82e2e", "#316395", "#994499", "#22aa99"];
  const colorOf = (i) => PALETTE[i % PALETTE.length];

  /** About n round values between lo and hi. */
  function ticks(lo, hi, n) {
    const span = hi - lo;
    if (!(span > 0) || !Number.isFinite(span)) return [lo];
    let step = Math.pow(10, Math.floor(Math.log10(span / n)));
    const err = (n / span) * step;
    if (err <= 0.15) step *= 10;
    else if (err <= 0.35) step *= 5;
    else if (err <= 0.75) step *= 2;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }
  const tickText = (v) => general(v, 4, false);

  /** Index of the point of xs (ascending) nearest to x: the hover lookup, O(log n). */
  function nearest(xs, x) {
    let lo = 0, hi = xs.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (xs[mid] < x) lo = mid; else hi = mid;
    }
    return Math.abs(xs[lo] - x) <= Math.abs(xs[hi] - x) ? lo : hi;
  }

  /** Lines ({x, y, color, label}) and bands ({x, mean, lo, hi, color, label}) on a canvas:
   * one path per curve, no per-point DOM, redrawn at most once a frame; the hovered curve is
   * drawn on an overlay canvas so hovering never redraws the others. */
  class CurveChart {
    constructor(canvas, emptyText) {
      this.canvas = canvas;
      this.emptyText = emptyText;
      this.overlay = h("canvas", { class: "overlay", style: "position:absolute;pointer-events:none" });
      this.tip = h("div", { class: "tooltip" });
      canvas.after(this.overlay, this.tip);
      this.lines = [];
      this.bands = [];
      this.frame = null;
      this.mouse = null;
      this.redraw = throttled(() => this.draw());
      const hover = throttled(() => this.hover());
      canvas.addEventListener("mousemove", (e) => { this.mouse = [e.offsetX, e.offsetY]; hover(); });
      canvas.addEventListener("mouseleave", () => { this.mouse = null; hover(); });
      new ResizeObserver(() => this.redraw()).observe(canvas);
    }

    set(lines, bands) {
      this.lines = lines;
      this.bands = bands;
      this.redraw();
    }

    /** The 2D context of c at the device's pixel ratio, in CSS pixels. */
    context(c, w, hgt) {
      const dpr = window.devicePixelRatio || 1;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(hgt * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(hgt * dpr);
        c.style.width = w + "px";
        c.style.height = hgt + "px";
      }
      const ctx = c.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, hgt);
      return ctx;
    }

    ranges() {
      let xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
      const scan = (xs, ys) => {
        for (let k = 0; k < ys.length; k++) {
          const y = ys[k];
          if (y === null || !Number.isFinite(y)) continue;
          if (y < ymin) ymin = y;
          if (y > ymax) ymax = y;
          if (xs[k] < xmin) xmin = xs[k];
          if (xs[k] > xmax) xmax = xs[k];
        }
      };
      for (const l of this.lines) scan(l.x, l.y);
      for (const b of this.bands) { scan(b.x, b.lo); scan(b.x, b.hi); }
      if (ymin > ymax) return null;
      if (ymin === ymax) { ymin -= Math.abs(ymin) * 0.05 || 1; ymax += Math.abs(ymax) * 0.05 || 1; }
      if (xmin === xmax) { xmin -= 1; xmax += 1; }
      return { xmin, xmax, ymin, ymax };
    }

    draw() {
      const t0 = performance.now();
      this.paint();
      gm.drawMs = performance.now() - t0; // the last chart draw, for the benchmark
    }

    paint() {
      const c = this.canvas, w = c.clientWidth, hgt = c.clientHeight;
      const ov = this.overlay;
      ov.style.left = c.offsetLeft + "px";
      ov.style.top = c.offsetTop + "px";
      this.context(ov, w, hgt);
      const ctx = this.context(c, w, hgt);
      const css = getComputedStyle(document.body);
      const r = this.ranges();
      ctx.font = "11px system-ui, sans-serif";
      ctx.fillStyle = css.getPropertyValue("--muted");
      if (!r || !w) {
        this.frame = null;
        ctx.fillText(this.emptyText(), 12, 20);
        return;
      }
      const f = (this.frame = { ...r, x0: 56, x1: w - 12, y0: 8, y1: hgt - 22 });
      f.X = (v) => f.x0 + ((v - f.xmin) / (f.xmax - f.xmin)) * (f.x1 - f.x0);
      f.Y = (v) => f.y1 - ((v - f.ymin) / (f.ymax - f.ymin)) * (f.y1 - f.y0);
      this.axes(ctx, f, css);
      const many = this.lines.length;
      ctx.lineWidth = many > 200 ? 0.8 : 1.4;
      ctx.lineJoin = ctx.lineCap = "round";
      ctx.globalAlpha = many > 100 ? 0.5 : 0.9;
      for (const l of this.lines) this.path(ctx, f, l.x, l.y, l.color);
      ctx.globalAlpha = 1;
      for (const b of this.bands) this.band(ctx, f, b);
      this.hover();
    }

    axes(ctx, f, css) {
      ctx.strokeStyle = css.getPropertyValue("--line");
      ctx.lineWidth = 1;
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      for (const v of ticks(f.ymin, f.ymax, 5)) {
        const y = Math.round(f.Y(v)) + 0.5;
        ctx.beginPath(); ctx.moveTo(f.x0, y); ctx.lineTo(f.x1, y); ctx.stroke();
        ctx.fillText(tickText(v), f.x0 - 4, y);
      }
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (const v of ticks(f.xmin, f.xmax, 6)) ctx.fillText(tickText(v), f.X(v), f.y1 + 5);
      ctx.beginPath(); ctx.moveTo(f.x0 + 0.5, f.y0); ctx.lineTo(f.x0 + 0.5, f.y1); ctx.lineTo(f.x1, f.y1 + 0.5); ctx.stroke();
    }

    /** One curve as one path; a missing value lifts the pen. */
    path(ctx, f, xs, ys, color) {
      ctx.strokeStyle = color;
      ctx.beginPath();
      let pen = false;
      for (let k = 0; k < ys.length; k++) {
        const y = ys[k];
        if (y === null || !Number.isFinite(y)) { pen = false; continue; }
        const px = f.X(xs[k]), py = f.Y(y);
        if (pen) ctx.lineTo(px, py);
        else { ctx.moveTo(px, py); ctx.lineTo(px + 0.01, py); pen = true; } // a lone point shows as a dot
      }
      ctx.stroke();
    }

    band(ctx, f, b) {
      ctx.fillStyle = b.color;
      ctx.globalAlpha = 0.18;
      ctx.beginPath();
      for (let k = 0; k < b.x.length; k++) ctx.lineTo(f.X(b.x[k]), f.Y(b.hi[k]));
      for (let k = b.x.length - 1; k >= 0; k--) ctx.lineTo(f.X(b.x[k]), f.Y(b.lo[k]));
      ctx.closePath();
      ctx.fill();
      ctx.globalAlpha = 1;
      ctx.lineWidth = 1.6;
      this.path(ctx, f, b.x, b.mean, b.color);
    }

    /** The curve nearest the mouse at its x (a binary search per curve), on the overlay. */
    hover() {
      const f = this.frame, c = this.canvas;
      const ctx = this.context(this.overlay, c.clientWidth, c.clientHeight);
      this.tip.style.display = "none";
      if (!f || !this.mouse) return;
      const [mx, my] = this.mouse;
      const x = f.xmin + ((mx - f.x0) / (f.x1 - f.x0)) * (f.xmax - f.xmin);
      let best = null, dist = 16;
      const look = (item, xs, ys) => {
        if (!xs.length) return;
        const k = nearest(xs, x);
        const y = ys[k];
        if (y === null || !Number.isFinite(y)) return;
        const d = Math.abs(f.Y(y) - my);
        if (d < dist) { dist = d; best = { item, k, y }; }
      };
      for (const l of this.lines) look(l, l.x, l.y);
      for (const b of this.bands) look(b, b.x, b.mean);
      if (!best) return;
      const it = best.item;
      ctx.lineWidth = 2.6;
      ctx.lineJoin = ctx.lineCap = "round";
      this.path(ctx, f, it.x, it.mean || it.y, it.color);
      this.tip.textContent = `${it.label}: ${tickText(best.y)} @ ${it.x[best.k]}`;
      this.tip.style.display = "block";
      this.tip.style.left = c.offsetLeft + Math.min(mx + 12, c.clientWidth - 160) + "px";
      this.tip.style.top = c.offsetTop + my + 12 + "px";
    }
  }

  /** Mean ± std per group of curves, at the x of each group's longest curve. */
  function bandOf(curves) {
    const ref = curves.reduce((a, b) => (b.x.length > a.x.length ? b : a));
    const x = [], mean = [], lo = [], hi = [];
    for (const xv of ref.x) {
      let n = 0, s = 0, s2 = 0;
      for (const c of curves) {
        if (!c.x.length || xv < c.x[0] || xv > c.x[c.x.length - 1]) continue;
        const y = c.y[nearest(c.x, xv)];
        if (y === null || !Number.isFinite(y)) continue;
        n += 1; s += y; s2 += y * y;
      }
      if (!n) continue;
      const m = s / n;
      const sd = n > 1 ? Math.sqrt(Math.max(0, (s2 - n * m * m) / (n - 1))) : 0;
      x.push(xv); mean.push(m); lo.push(m - sd); hi.push(m + sd);
    }
    return { x, mean, lo, hi };
  }

  // ---------------------------------------------------------------- parallel coordinates
  /** An axis of the parallel coordinates. Numeric values map to t in [0, 1] (bottom to top)
   * through knots, piecewise linearly: two knots (min, max) for a linear axis, one per value
   * for a few values placed evenly. Other values are categories, placed evenly. */
  function makeAxis(key, values, linear) {
    const keyOf = (v) => (v !== null && typeof v === "object" ? JSON.stringify(v) : v);
    const present = values.filter((v) => v !== null && v !== undefined);
    const numeric = present.length > 0 && present.every((v) => typeof v === "number" && Number.isFinite(v));
    const distinct = [...new Set(present.map(keyOf))];
    if (numeric) {
      distinct.sort((a, b) => a - b);
      let knots;
      if (linear || distinct.length > 12) {
        let lo = distinct[0], hi = distinct[distinct.length - 1];
        if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 1; hi += Math.abs(hi) * 0.1 || 1; }
        knots = [{ v: lo, t: 0 }, { v: hi, t: 1 }];
      } else knots = distinct.map((v, i) => ({ v, t: distinct.length === 1 ? 0.5 : i / (distinct.length - 1) }));
      return { key, numeric: true, knots, linear: knots.length === 2 && (linear || distinct.length > 12) };
    }
    distinct.sort((a, b) => (String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0));
    return { key, numeric: false, cats: distinct, index: new Map(distinct.map((v, i) => [v, i])), keyOf };
  }

  /** A value's place on the axis (0 bottom, 1 top), NaN when it has none. */
  function axisT(axis, v) {
    if (axis.numeric) {
      if (typeof v !== "number" || !Number.isFinite(v)) return NaN;
      const k = axis.knots;
      if (k.length === 1) return v === k[0].v ? 0.5 : NaN;
      let j = 0;
      while (j < k.length - 2 && v > k[j + 1].v) j++;
      return k[j].t + ((v - k[j].v) / (k[j + 1].v - k[j].v)) * (k[j + 1].t - k[j].t);
    }
    if (v === null || v === undefined) return NaN;
    const i = axis.index.get(axis.keyOf(v));
    if (i === undefined) return NaN;
    return axis.cats.length === 1 ? 0.5 : i / (axis.cats.length - 1);
  }

  /** The brush [lo, hi] in the axis's values for a dragged range of t (null: empty). */
  function brushOf(axis, t0, t1) {
    const [a, b] = t0 < t1 ? [t0, t1] : [t1, t0];
    if (axis.numeric) {
      const k = axis.knots;
      if (k.length === 1) return a <= 0.5 && b >= 0.5 ? [k[0].v, k[0].v] : null;
      const at = (t) => {
        let j = 0;
        while (j < k.length - 2 && t > k[j + 1].t) j++;
        return k[j].v + ((t - k[j].t) / (k[j + 1].t - k[j].t)) * (k[j + 1].v - k[j].v);
      };
      return [at(Math.max(0, a)), at(Math.min(1, b))];
    }
    const inside = axis.cats.filter((v) => { const t = axisT(axis, v); return t >= a && t <= b; });
    return inside.length ? [inside[0], inside[inside.length - 1]] : null;
  }

  /** Whether v is inside the brush ([lo, hi]; null: an empty brush, nothing passes). */
  function inBrush(axis, brush, v) {
    if (!brush) return false;
    if (axis.numeric) return typeof v === "number" && v >= brush[0] && v <= brush[1];
    const t = axisT(axis, v);
    return t >= axisT(axis, brush[0]) && t <= axisT(axis, brush[1]);
  }

  /** The axis's labels: [t, text]. */
  function axisLabels(axis) {
    if (!axis.numeric) {
      const step = Math.ceil(axis.cats.length / 12);
      return axis.cats.filter((_, i) => i % step === 0).map((v) => [axisT(axis, v), plain(v)]);
    }
    if (!axis.linear) return axis.knots.map((k) => [k.t, plain(k.v)]);
    const [lo, hi] = [axis.knots[0].v, axis.knots[1].v];
    return ticks(lo, hi, 5).map((v) => [axisT(axis, v), tickText(v)]);
  }

  /** The SVG: axes with their brushes, faded rows as one path, shown rows as one path each
   * (one path for all past 1,500). rows: {shown, faded: [row index], t(axisIndex, row), label(row)}. */
  function parcoordsSVG(svg, axes, rows, brushes, color) {
    const w = svg.clientWidth || 600, hgt = svg.clientHeight || 300;
    const top = 34, bottom = hgt - 16;
    const xs = axes.map((_, j) => (axes.length === 1 ? w / 2 : 60 + (j * (w - 120)) / (axes.length - 1)));
    const Y = (t) => bottom - t * (bottom - top);
    const d = (i) => {
      let s = "", pen = false;
      for (let j = 0; j < axes.length; j++) {
        const t = rows.t(j, i);
        if (Number.isNaN(t)) { pen = false; continue; }
        s += (pen ? "L" : "M") + xs[j].toFixed(1) + " " + Y(t).toFixed(1);
        pen = true;
      }
      return s;
    };
    const parts = [`<path class="lines-bg" d="${rows.faded.map(d).join("")}"></path>`];
    if (rows.shown.length > 1500) parts.push(`<path class="line" stroke="${PALETTE[0]}" stroke-opacity="0.3" d="${rows.shown.map(d).join("")}"></path>`);
    else {
      const alpha = rows.shown.length > 200 ? 0.3 : rows.shown.length > 50 ? 0.55 : 0.9; // dense: see through
      for (const i of rows.shown) {
        parts.push(`<path class="line" stroke="${color(i)}" stroke-opacity="${alpha}" d="${d(i)}"><title>${esc(rows.label(i))}</title></path>`);
      }
    }
    axes.forEach((axis, j) => {
      const x = xs[j];
      const labels = axisLabels(axis).map(([t, text]) =>
        `<text x="${x + 5}" y="${Y(t) + 3}">${esc(text)}</text>`).join("");
      let sel = "";
      const b = axis.key in brushes ? brushes[axis.key] : undefined;
      if (b !== undefined) {
        const [ya, yb] = b ? [Y(axisT(axis, b[1])), Y(axisT(axis, b[0]))] : [top, top];
        sel = `<rect class="brush-sel" x="${x - 8}" y="${ya - 4}" width="16" height="${Math.max(2, yb - ya + 8)}"></rect>`;
      }
      parts.push(`<g class="axis" data-key="${esc(axis.key)}"><line x1="${x}" x2="${x}" y1="${top}" y2="${bottom}"></line>` +
        `<text class="title" x="${x}" y="${top - 20}" text-anchor="middle">${esc(axis.key)}</text>${labels}${sel}` +
        `<rect class="brush" x="${x - 14}" y="${top - 6}" width="28" height="${bottom - top + 12}"></rect></g>`);
    });
    svg.innerHTML = parts.join("");
    return { top, bottom };
  }

  // ---------------------------------------------------------------- grids view
  function stateChips(states) {
    return h("span", { class: "chips" }, Object.entries(states || {}).map(([st, n]) =>
      h("span", { class: `state st-${st}`, title: st }, `${n} ${st.toLowerCase()}`)));
  }

  function progressBar(frac) {
    const pct = Math.round((frac || 0) * 100);
    return [h("span", { class: "progress" }, h("div", { style: `width:${pct}%` })), h("span", { class: "progress-text" }, `${pct}%`)];
  }

  async function gridsView() {
    crumbs([["grids", null]]);
    const main = $("#app");
    const body = h("tbody");
    const table = h("table", { id: "grids" }, h("thead", {}, h("tr", {},
      ["grid", "XPs", "states", "progress", "main metric", "best", "updated", "error"].map((t, i) =>
        h("th", { class: i === 1 || i === 5 ? "num" : null }, t)))), body);
    const title = h("h1", {}, "Grids");
    const render = (data) => {
      title.textContent = "Grids";
      if (data.project) title.append(h("span", { class: "meta mono" }, "  " + data.project));
      body.textContent = "";
      for (const g of data.grids) {
        body.append(h("tr", { "data-grid": g.name },
          h("td", {}, h("a", { href: withToken("/grid/" + encodeURIComponent(g.name)) }, g.name)),
          h("td", { class: "num" }, g.xps),
          h("td", {}, stateChips(g.states)),
          h("td", {}, progressBar(g.progress)),
          h("td", { class: "mono" }, g.main_metric || ""),
          h("td", { class: "num" }, plain(g.best)),
          h("td", { title: when(g.updated) }, ago(g.updated)),
          h("td", { class: "err", title: g.error || null }, g.error || "")));
      }
      if (!data.grids.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No grids in this project.")));
    };
    const first = await getJSON("/api/grids");
    main.replaceChildren(title, h("div", { class: "table-wrap" }, table));
    render(first.data);
    gm.firstTableAt = performance.now();
    document.body.dataset.view = "grids";
    startPolling(async () => {
      const next = await getJSON("/api/grids");
      if (next.changed) render(next.data);
    });
  }

  // ---------------------------------------------------------------- grid view
  const VIRTUAL_AFTER = 500; // rows: past this many, only rows near the viewport are in the DOM
  const MARGIN = 20; // rows rendered above and below the viewport
  const META = [{ key: "index", title: "#", num: true }, { key: "name", title: "name" },
    { key: "state", title: "state" }, { key: "sig", title: "sig" }];
  const G = {
    name: "", page: null, rows: [], xps: [], cols: [], colSig: "", hasError: false,
    sortKey: "index", dir: 1, sortVals: null, order: [], mask: null, pattern: "",
    brushes: {}, axes: [], axisBy: {}, T: [], varying: [], visible: [], faded: [], best: {},
    metric: null, userMetric: false, groupBy: "", curves: null, bySig: new Map(), curveKeys: [], embedded: null,
    rowH: 0, range: [-1, -1], els: {}, chart: null,
  };

  const pageURL = () => `/api/grid/${encodeURIComponent(G.name)}`;
  const pointsFor = (n) => Math.max(50, Math.min(800, Math.floor(1.5e6 / Math.max(1, n))));
  const curvesURL = () => `${pageURL()}/curves?${G.metric ? "metric=" + encodeURIComponent(G.metric) + "&" : ""}points=${pointsFor(G.rows.length)}`;

  function gridSkeleton() {
    const e = G.els;
    e.title = h("h1", {}, G.name);
    e.meta = h("div", { class: "meta" });
    e.pattern = h("input", { id: "pattern", type: "search", placeholder: "filter: lr=0.1 !seed=3 (Enter)", spellcheck: "false", autocomplete: "off" });
    e.error = h("span", { id: "pattern-error" });
    e.count = h("span", { id: "row-count" });
    e.thead = h("thead");
    e.tbody = h("tbody");
    e.table = h("table", { id: "xp-table" }, e.thead, e.tbody);
    e.wrap = h("div", { class: "table-wrap" }, e.table);
    e.metric = h("select", { id: "metric" });
    e.groupBy = h("select", { id: "group-by" });
    e.canvas = h("canvas", { id: "curves" });
    e.legend = h("div", { class: "legend" });
    e.svg = h("svg", { id: "parcoords" });
    e.clear = h("button", { class: "link", type: "button", title: "clear every brush" }, "clear brushes");
    const curves = h("div", { class: "chart" }, h("h2", {}, "Curves"), e.canvas, e.legend);
    const par = h("div", { class: "chart" }, h("h2", {}, "Parallel coordinates ", e.clear), e.svg);
    $("#app").replaceChildren(e.title, e.meta,
      h("div", { class: "toolbar" }, e.pattern, e.count, e.error), e.wrap,
      h("div", { class: "toolbar" }, h("label", {}, "metric ", e.metric), h("label", {}, "group by ", e.groupBy)),
      h("div", { class: "charts" }, curves, par));
    G.chart = new CurveChart(e.canvas, () => (G.metric ? `no values of ${G.metric} yet` : "no metric yet"));
    gridEvents();
  }

  function gridEvents() {
    const e = G.els;
    let typing = 0;
    const apply = () => { clearTimeout(typing); applyPattern(e.pattern.value); };
    e.pattern.addEventListener("keydown", (ev) => { if (ev.key === "Enter") apply(); });
    e.pattern.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(apply, 400); });
    e.thead.addEventListener("click", (ev) => {
      const th = ev.target.closest("th[data-key]");
      if (!th) return;
      if (G.sortKey === th.dataset.key) G.dir = -G.dir;
      else { G.sortKey = th.dataset.key; G.dir = 1; G.sortVals = null; }
      refresh(true);
    });
    e.wrap.addEventListener("scroll", throttled(() => renderRows(false)));
    e.metric.addEventListener("change", () => {
      G.metric = e.metric.value || null;
      G.userMetric = true;
      setAxes();
      refresh(false);
      loadCurves();
    });
    e.groupBy.addEventListener("change", () => { G.groupBy = e.groupBy.value; drawCurves(); });
    e.clear.addEventListener("click", () => { G.brushes = {}; refresh(false); });
    brushEvents(e.svg);
    new ResizeObserver(throttled(drawParcoords)).observe(e.svg);
  }

  function applyPattern(text) {
    G.pattern = text.trim();
    const { mask, error } = selectRows(G.pattern, G.rows, G.xps);
    G.mask = mask;
    G.els.error.textContent = error || "";
    refresh(false);
  }

  /** A new GridPage (first load or a live update): keep sort, filter, brushes and metric. */
  function setPage(page) {
    G.page = page;
    G.rows = page.rows || [];
    G.xps = page.xps || [];
    G.cols = page.columns || [];
    G.hasError = G.rows.some((r) => r.error);
    const colSig = JSON.stringify([G.cols, G.hasError]);
    if (colSig !== G.colSig) {
      G.colSig = colSig;
      if (!G.cols.some((c) => c.key === G.sortKey) && !META.some((c) => c.key === G.sortKey) && G.sortKey !== "error") {
        G.sortKey = "index"; G.dir = 1;
      }
      buildHead();
    }
    G.sortVals = null;
    const { mask, error } = selectRows(G.pattern, G.rows, G.xps);
    G.mask = mask;
    G.els.error.textContent = error || "";
    if (!G.userMetric) { // the grid's main metric until the user picks one (it may appear late)
      const known = G.cols.some((c) => c.key === G.metric);
      G.metric = page.main_metric || (known ? G.metric : G.cols[0] && G.cols[0].key) || G.metric || null;
    }
    gridMeta(page);
    setAxes();
    fillSelects();
    refresh(true);
  }

  function gridMeta(page) {
    // a report is read later: its time as a date, a live page's as an age
    const stamp = !page.updated ? "" : REPORT ? " · last update " + when(page.updated) : " · updated " + ago(page.updated);
    const parts = [stateChips(page.states), h("span", { title: when(page.updated) }, stamp)];
    if (page.base && (Array.isArray(page.base) ? page.base.length : Object.keys(page.base).length)) {
      parts.push(h("span", { class: "mono" }, " · base: " + (Array.isArray(page.base) ? page.base.join(" ") : JSON.stringify(page.base))));
    }
    G.els.meta.replaceChildren(...parts);
  }

  function buildHead() {
    const all = [...META, ...G.cols];
    let groups = "";
    if (G.cols.some((c) => c.group)) {
      groups = `<tr class="groups"><th colspan="${META.length}"></th>`;
      for (let j = 0; j < G.cols.length; ) {
        let k = j;
        while (k < G.cols.length && (G.cols[k].group || "") === (G.cols[j].group || "")) k++;
        groups += `<th colspan="${k - j}">${esc(G.cols[j].group || "")}</th>`;
        j = k;
      }
      groups += (G.hasError ? "<th></th>" : "") + "</tr>";
    }
    const keys = all.map((c) => `<th data-key="${esc(c.key)}" title="${esc(c.key)}"${c.num || c.fmt !== undefined ? ' class="num"' : ""}>${esc(c.title || c.key)}</th>`);
    if (G.hasError) keys.push('<th data-key="error">error</th>');
    G.els.thead.innerHTML = groups + `<tr class="keys">${keys.join("")}</tr>`;
    G.els.table.classList.toggle("has-groups", Boolean(groups));
  }

  /** Sort keys of a column, computed once per data (numbers as a Float64Array, NaN: none). */
  function sortValues(key) {
    const rows = G.rows, n = rows.length;
    const meta = key === "index" || key === "name" || key === "state" || key === "sig" || key === "error";
    const raw = new Array(n);
    let numeric = true;
    for (let i = 0; i < n; i++) {
      const v = meta ? rows[i][key] : rows[i].metrics ? rows[i].metrics[key] : undefined;
      raw[i] = v;
      if (v !== null && v !== undefined && typeof v !== "number") numeric = false;
    }
    if (numeric) return { numeric, vals: Float64Array.from(raw, (v) => (typeof v === "number" ? v : NaN)) };
    return { numeric, vals: raw.map((v) => (v === null || v === undefined ? null : typeof v === "string" ? v : plain(v))) };
  }

  /** Row indices in the table's order; nulls last whatever the direction, ties by index. */
  function sortOrder() {
    if (!G.sortVals) G.sortVals = sortValues(G.sortKey);
    const { numeric, vals } = G.sortVals, dir = G.dir;
    const idx = Array.from({ length: G.rows.length }, (_, i) => i);
    if (numeric) {
      idx.sort((a, b) => {
        const x = vals[a], y = vals[b];
        if (x !== x || y !== y) return (x !== x) - (y !== y) || a - b; // NaN: no value
        return x < y ? -dir : x > y ? dir : a - b;
      });
    } else {
      idx.sort((a, b) => {
        const x = vals[a], y = vals[b];
        if (x === null || y === null) return (x === null) - (y === null) || a - b;
        return x < y ? -dir : x > y ? dir : a - b;
      });
    }
    return idx;
  }

  function brushOk(i) {
    for (const key in G.brushes) {
      const axis = G.axisBy[key];
      if (axis && !inBrush(axis, G.brushes[key], axisValue(axis, i))) return false;
    }
    return true;
  }

  /** Sort (when asked), filter and brush, then redraw the table and both charts. */
  function refresh(resort) {
    const t0 = performance.now();
    if (resort || G.order.length !== G.rows.length) G.order = sortOrder();
    const t1 = performance.now();
    const mask = G.mask, visible = [], faded = [];
    for (const i of G.order) {
      if (!mask[i]) continue;
      (brushOk(i) ? visible : faded).push(i);
    }
    G.visible = visible;
    G.faded = faded;
    gm.visible = visible.map((i) => G.rows[i].sig);
    gm.brushes = { ...G.brushes };
    G.els.count.textContent = `${visible.length} of ${G.rows.length} XPs`;
    for (const th of G.els.thead.querySelectorAll("th[data-key]")) {
      th.classList.toggle("sorted-asc", th.dataset.key === G.sortKey && G.dir > 0);
      th.classList.toggle("sorted-desc", th.dataset.key === G.sortKey && G.dir < 0);
    }
    computeBest();
    const t2 = performance.now();
    renderRows(true);
    const t3 = performance.now();
    drawCurves();
    drawParcoords();
    gm.timings = { sort: t1 - t0, filter: t2 - t1, rows: t3 - t2, total: performance.now() - t0 };
  }

  function computeBest() {
    G.best = {};
    for (const c of G.cols) {
      if (c.best !== "max" && c.best !== "min") continue;
      let best;
      for (const i of G.visible) {
        const v = G.rows[i].metrics ? G.rows[i].metrics[c.key] : undefined;
        if (typeof v !== "number" || !Number.isFinite(v)) continue;
        if (best === undefined || (c.best === "max" ? v > best : v < best)) best = v;
      }
      if (best !== undefined) G.best[c.key] = best;
    }
  }

  function rowHTML(i) {
    const r = G.rows[i];
    const name = r.name || "";
    const link = REPORT ? esc(name) : `<a href="${esc(withToken("/xp/" + r.sig))}">${esc(name) || "(base)"}</a>`;
    let s = `<tr data-sig="${esc(r.sig)}" data-index="${r.index}"><td class="num">${r.index}</td>` +
      `<td class="name" title="${esc(name)}">${link}</td><td><span class="state st-${esc(r.state)}">${esc(r.state)}</span></td>` +
      `<td class="mono">${esc(r.sig)}</td>`;
    const m = r.metrics || {};
    for (const c of G.cols) {
      const v = m[c.key];
      const cls = (typeof v === "number" ? "num" : "") + (v !== undefined && G.best[c.key] === v ? " best" : "");
      s += `<td class="${cls}">${esc(fmt(v, c.fmt))}</td>`;
    }
    if (G.hasError) s += `<td class="err" title="${esc(r.error || "")}">${esc(r.error || "")}</td>`;
    return s + "</tr>";
  }

  /** The rows in view: all of them up to VIRTUAL_AFTER, else a window of fixed-height rows
   * between two spacers (re-rendered on scroll, at most once a frame). */
  function renderRows(force) {
    const vis = G.visible, n = vis.length, wrap = G.els.wrap;
    const rh = G.rowH || 25;
    let start = 0, end = n;
    if (n > VIRTUAL_AFTER) {
      const first = Math.floor(Math.max(0, wrap.scrollTop - G.els.thead.offsetHeight) / rh);
      start = Math.max(0, first - MARGIN);
      end = Math.min(n, first + Math.ceil((wrap.clientHeight || 600) / rh) + MARGIN);
    }
    if (!force && start === G.range[0] && end === G.range[1]) return;
    G.range = [start, end];
    const span = META.length + G.cols.length + (G.hasError ? 1 : 0);
    const html = [];
    if (start > 0) html.push(`<tr class="spacer"><td colspan="${span}" style="height:${start * rh}px"></td></tr>`);
    for (let k = start; k < end; k++) html.push(rowHTML(vis[k]));
    if (end < n) html.push(`<tr class="spacer"><td colspan="${span}" style="height:${(n - end) * rh}px"></td></tr>`);
    if (!n) html.push(`<tr class="spacer"><td colspan="${span}" class="empty">No XP to show.</td></tr>`);
    G.els.tbody.innerHTML = html.join("");
    if (!G.rowH && n) { // measure the real row height once, and redo the window with it
      const tr = G.els.tbody.querySelector("tr[data-sig]");
      G.rowH = tr ? tr.getBoundingClientRect().height || 25 : 25;
      if (n > VIRTUAL_AFTER && G.rowH !== rh) renderRows(true);
    }
  }

  // ------------------------------------------------ grid view: charts, selects, live updates
  const valueKey = (v) => (v !== null && typeof v === "object" ? JSON.stringify(v) : v);

  function axisValue(axis, i) {
    if (axis.metric) return G.rows[i].metrics ? G.rows[i].metrics[axis.key] : undefined;
    const x = G.xps[i];
    return x && x.params ? x.params[axis.key] : undefined;
  }

  /** One axis per varying parameter and one for the metric; each row's place precomputed. */
  function setAxes() {
    const n = G.rows.length;
    const params = G.page.params || [];
    G.varying = params.filter((k) => new Set(G.xps.map((x) => valueKey(x && x.params ? x.params[k] : undefined))).size > 1);
    const axes = G.varying.map((k) => makeAxis(k, G.xps.map((x) => (x && x.params ? x.params[k] : undefined)), false));
    if (G.metric) {
      const axis = makeAxis(G.metric, G.rows.map((r) => (r.metrics ? r.metrics[G.metric] : undefined)), true);
      axis.metric = true;
      axes.push(axis);
    }
    G.axes = axes;
    G.axisBy = Object.fromEntries(axes.map((a) => [a.key, a]));
    G.T = axes.map((a) => { const t = new Float64Array(n); for (let i = 0; i < n; i++) t[i] = axisT(a, axisValue(a, i)); return t; });
    for (const key of Object.keys(G.brushes)) if (!(key in G.axisBy)) delete G.brushes[key];
  }

  function setOptions(select, options, value) {
    const want = JSON.stringify(options);
    if (select.dataset.options !== want) {
      select.dataset.options = want;
      select.replaceChildren(...options.map(([v, text]) => h("option", { value: v }, text)));
    }
    select.value = value;
  }

  function fillSelects() {
    const keys = [...new Set([...G.cols.map((c) => c.key), ...G.curveKeys, ...(G.embedded ? Object.keys(G.embedded) : [])])];
    if (G.metric && !keys.includes(G.metric)) keys.unshift(G.metric);
    setOptions(G.els.metric, keys.map((k) => [k, k]), G.metric || "");
    const params = G.varying.length ? G.varying : G.page.params || [];
    if (G.groupBy && !params.includes(G.groupBy)) G.groupBy = "";
    setOptions(G.els.groupBy, [["", "none (one line per XP)"], ...params.map((k) => [k, k])], G.groupBy);
  }

  const hasPoint = (c) => c.y.some((y) => y !== null && Number.isFinite(y));

  /** Lines (one per shown XP) or bands (mean ± std over the group-by parameter, one per
   * combination of the other varying parameters), of the rows passing filter and brushes. */
  function drawCurves() {
    const data = G.curves, lines = [], bands = [];
    if (data && data.metric === G.metric) {
      if (!G.groupBy) {
        for (const i of G.visible) {
          const r = G.rows[i], c = G.bySig.get(r.sig);
          if (c && hasPoint(c)) lines.push({ x: c.x, y: c.y, color: colorOf(r.index), label: r.name || r.sig });
        }
      } else {
        const groups = new Map();
        const others = (G.varying.length ? G.varying : G.page.params || []).filter((k) => k !== G.groupBy);
        for (const i of G.visible) {
          const c = G.bySig.get(G.rows[i].sig);
          if (!c || !hasPoint(c)) continue;
          const p = (G.xps[i] && G.xps[i].params) || {};
          const label = others.map((k) => `${k}=${plain(p[k])}`).join(" ") || "all";
          if (!groups.has(label)) groups.set(label, []);
          groups.get(label).push(c);
        }
        let j = 0;
        for (const [label, cs] of groups) {
          const b = bandOf(cs);
          if (b.x.length) bands.push({ ...b, color: colorOf(j++), label: `${label} (${cs.length})` });
        }
      }
    }
    G.chart.set(lines, bands);
    gm.curves = { metric: G.metric, lines: lines.length, bands: bands.length };
    const legend = G.els.legend;
    legend.textContent = "";
    if (bands.length) for (const b of bands.slice(0, 40)) legend.append(h("span", {}, h("i", { style: `background:${b.color}` }), b.label));
    else legend.textContent = lines.length ? `${lines.length} curves` : "";
  }

  const drawParcoords = throttled(() => {
    if (!G.page) return;
    const rows = { shown: G.visible, faded: G.faded, t: (j, i) => G.T[j][i], label: (i) => G.rows[i].name || G.rows[i].sig };
    G.frame = parcoordsSVG(G.els.svg, G.axes, rows, G.brushes, (i) => colorOf(G.rows[i].index));
  });

  /** Vertical drag on an axis: a brush; double-click: none. Pointer capture on the SVG keeps
   * the drag when the pointer leaves the axis; the axes are redrawn under it. */
  function brushEvents(svg) {
    let drag = null, pressed = null;
    const yOf = (ev) => ev.clientY - svg.getBoundingClientRect().top;
    const tOf = (y) => { const f = G.frame; return Math.max(0, Math.min(1, (f.bottom - y) / (f.bottom - f.top))); };
    const update = throttled(() => {
      if (!drag || Math.abs(drag.y1 - drag.y0) < 3) return;
      const axis = G.axisBy[drag.key];
      if (!axis) return;
      G.brushes[drag.key] = brushOf(axis, tOf(drag.y0), tOf(drag.y1));
      refresh(false);
    });
    svg.addEventListener("pointerdown", (ev) => {
      const rect = ev.target.closest && ev.target.closest("rect.brush");
      if (!rect || !G.frame) return;
      ev.preventDefault();
      drag = { key: rect.parentNode.dataset.key, y0: yOf(ev), y1: yOf(ev) };
      pressed = drag.key;
      svg.setPointerCapture(ev.pointerId);
    });
    svg.addEventListener("pointermove", (ev) => { if (drag) { drag.y1 = yOf(ev); update(); } });
    const end = (ev) => {
      if (!drag) return;
      drag.y1 = yOf(ev);
      const done = drag;
      if (Math.abs(done.y1 - done.y0) >= 3 && G.axisBy[done.key]) {
        G.brushes[done.key] = brushOf(G.axisBy[done.key], tOf(done.y0), tOf(done.y1));
        refresh(false);
      }
      drag = null;
    };
    svg.addEventListener("pointerup", end);
    svg.addEventListener("pointercancel", () => { drag = null; });
    svg.addEventListener("dblclick", (ev) => {
      // with the pointer captured, the click's target is the SVG: the axis pressed last counts
      const g = ev.target.closest && ev.target.closest("g.axis");
      const key = g ? g.dataset.key : pressed;
      if (key !== null && key in G.brushes) { delete G.brushes[key]; refresh(false); }
    });
  }

  function setCurves(data) {
    G.curves = data;
    G.bySig = new Map((data ? data.curves || [] : []).map((c) => [c.sig, c]));
    if (data && data.keys) G.curveKeys = data.keys;
  }

  /** Curves of the chosen metric: embedded in a report, else from the server (none to ask
   * before the grid has a metric: the server knows no metric either). */
  async function loadCurves() {
    if (REPORT || !G.metric) {
      setCurves(REPORT && G.metric ? G.embedded[G.metric] || null : null);
    } else {
      const asked = G.metric;
      try {
        const { data } = await getJSON(curvesURL());
        if (asked !== G.metric) return; // the user switched meanwhile: that load draws
        setCurves(data);
      } catch (e) {
        if (asked !== G.metric) return;
        setCurves(null);
        G.els.legend.textContent = e.message;
        return;
      }
    }
    fillSelects();
    drawCurves();
  }

  /** A live update: the page and the curves, each on its own (a curve error keeps the rows). */
  async function pollGrid() {
    const asked = G.metric;
    const curvesP = asked ? getJSON(curvesURL()).catch((e) => e) : Promise.resolve(null);
    const page = await getJSON(pageURL());
    if (page.changed) setPage(page.data);
    const curves = await curvesP;
    if (asked !== G.metric) return loadCurves(); // a metric appeared (or the user chose one)
    if (curves instanceof Error) throw curves;
    if (curves && curves.changed) {
      setCurves(curves.data);
      fillSelects();
      drawCurves();
    }
  }

  async function gridView(name, embedded) {
    G.name = name;
    document.title = `${name} · gridman`;
    crumbs([["grids", "/"], [name, null]]);
    let page;
    if (embedded) {
      G.embedded = embedded.curves || {};
      page = embedded.grid;
    } else page = (await getJSON(pageURL())).data;
    gridSkeleton();
    setPage(page);
    gm.firstTableAt = performance.now();
    document.body.dataset.view = "grid";
    await loadCurves();
    startPolling(pollGrid);
  }

  // ---------------------------------------------------------------- XP view
  const shellQuote = (a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : "'" + String(a).replace(/'/g, "'\"'\"'") + "'");

  function duration(a, b) {
    if (!a) return "";
    const s = Math.max(0, (b || Date.now() / 1000) - a);
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  function renderInfo(info, els) {
    const st = info.state || "NEW";
    els.title.replaceChildren(info.name || info.sig, " ", h("span", { class: `state st-${st}` }, st));
    const kv = [["sig", info.sig], ["folder", info.folder], ["main", info.main], ["history", `${info.history_len} entries`],
      ["attempts", info.attempts], ["log", info.log], ["history error", info.history_error],
      ["warnings", (info.history_warnings || []).join("; ")], ["code", info.code ? JSON.stringify(info.code) : null]];
    els.meta.replaceChildren(...kv.filter(([, v]) => v !== null && v !== undefined && v !== "")
      .flatMap(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, String(v))]));
    els.argv.textContent = (info.argv || []).map(shellQuote).join(" ") || "(no arguments)";
    els.delta.replaceChildren(h("tbody", {}, (info.delta || []).map(([k, v]) =>
      h("tr", {}, h("td", { class: "mono" }, k), h("td", { class: "mono" }, plain(v))))));
    const attempts = info.attempts_list || [];
    els.attempts.replaceChildren(
      h("thead", {}, h("tr", {}, ["#", "backend", "job id", "state", "exit code", "start", "end", "duration"].map((t) => h("th", {}, t)))),
      h("tbody", {}, attempts.length ? attempts.map((a, i) => h("tr", {},
        h("td", { class: "num" }, i + 1), h("td", {}, a.backend || ""), h("td", { class: "mono" }, a.job_id ?? ""),
        h("td", {}, h("span", { class: `state st-${a.state}` }, a.state || "")), h("td", { class: "num" }, a.exit_code ?? ""),
        h("td", {}, when(a.start)), h("td", {}, when(a.end)), h("td", { class: "num" }, duration(a.start, a.end))))
        : h("tr", {}, h("td", { colspan: 8, class: "empty" }, "never ran"))));
    const last = flatten(info.last_metrics);
    els.last.replaceChildren(h("tbody", {}, Object.entries(last).map(([k, v]) =>
      h("tr", {}, h("td", { class: "mono" }, k), h("td", { class: "num" }, plain(v))))));
    return Object.keys(last);
  }

  async function xpView(sig) {
    document.title = `${sig} · gridman`;
    crumbs([["grids", "/"], [sig, null]]);
    const base = `/api/xp/${sig}`;
    const first = await getJSON(base);
    const grid = first.data.grid;  // the opened grid that holds it, when the server knows one
    if (grid) crumbs([["grids", "/"], [grid, `/grid/${encodeURIComponent(grid)}`], [sig, null]]);
    const els = {
      title: h("h1"), meta: h("dl", { class: "kv" }), argv: h("pre", { id: "xp-argv" }),
      delta: h("table", { id: "xp-delta" }), attempts: h("table", { id: "xp-attempts" }),
      last: h("table", { id: "xp-metrics" }), metric: h("select", { id: "metric" }),
      canvas: h("canvas", { id: "curves" }), log: h("pre", { id: "xp-log" }), logPath: h("span", { class: "meta mono" }),
    };
    $("#app").replaceChildren(els.title, els.meta, h("h2", {}, "Arguments"), els.argv,
      h("div", { class: "xp-grid" }, h("div", {}, h("h2", {}, "Delta"), els.delta), h("div", {}, h("h2", {}, "Last metrics"), els.last)),
      h("h2", {}, "Attempts"), els.attempts,
      h("div", { class: "xp-grid" },
        h("div", { class: "chart" }, h("h2", {}, "Curves ", els.metric), els.canvas),
        h("div", {}, h("h2", {}, "Log ", els.logPath), els.log)));
    let metric = null, keys = renderInfo(first.data, els);
    const chart = new CurveChart(els.canvas, () => (metric ? `no values of ${metric} yet` : "no metrics yet"));
    gm.firstTableAt = performance.now();
    const curves = async () => {
      if (!metric) metric = keys[0] || null;
      if (!metric) { chart.set([], []); return; }
      const asked = metric;
      const { data, changed } = await getJSON(`${base}/curves?metric=${encodeURIComponent(metric)}`);
      if (asked !== metric) return;
      setOptions(els.metric, [...new Set([metric, ...(data.keys || []), ...keys])].map((k) => [k, k]), metric);
      if (!changed && chart.lines.length) return;
      const lines = (data.curves || []).filter(hasPoint).map((c) => ({ x: c.x, y: c.y, color: PALETTE[0], label: asked }));
      chart.set(lines, []);
      gm.curves = { metric, lines: lines.length, bands: 0 };
    };
    let logShown = false;
    const log = async () => {
      let data;
      try { ({ data } = await getJSON(`${base}/log?bytes=65536`)); } catch (e) { els.log.textContent = "(no log yet)"; return; }
      const pre = els.log;
      const atEnd = !logShown || pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      if (pre.textContent !== data.text) pre.textContent = data.text;
      els.logPath.textContent = `${data.path} (${data.size} bytes)`;
      if (atEnd) pre.scrollTop = pre.scrollHeight; // follow the tail unless the user scrolled up
      logShown = true;
    };
    els.metric.addEventListener("change", () => { metric = els.metric.value; curves(); });
    await Promise.allSettled([curves(), log()]);
    document.body.dataset.view = "xp";
    startPolling(async () => {
      const next = await getJSON(base);
      if (next.changed) keys = renderInfo(next.data, els);
      const done = await Promise.allSettled([curves(), log()]); // one failing keeps the other
      const failed = done.find((d) => d.status === "rejected");
      if (failed) throw failed.reason;
    });
  }

  // ---------------------------------------------------------------- boot
  function fail(e) {
    $("#app").replaceChildren(h("h1", {}, "Cannot show this page"), h("p", { class: "error-box" }, e.message || String(e)));
    setLive("");
  }

  function boot() {
    const dataEl = document.getElementById("gridman-data");
    if (dataEl) {
      REPORT = true;
      $("#home").removeAttribute("href");
      setLive("report · no live updates");
      let data;
      try { data = JSON.parse(dataEl.textContent); } catch (e) { return fail(e); }
      gridView(data.grid.name, data).catch(fail);
      return;
    }
    $("#home").setAttribute("href", withToken("/"));
    let path = location.pathname, m;
    try { path = decodeURIComponent(path); } catch (e) { /* keep it as is */ }
    const run = (m = /^\/grid\/(.+?)\/?$/.exec(path)) ? gridView(m[1])
      : (m = /^\/xp\/([0-9a-f]{8})\/?$/.exec(path)) ? xpView(m[1]) : gridsView();
    run.catch(fail);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
