// logsvc console: search, histogram, live tail, context and facets over /api/ (docs/console.md).
//
// Rules this file keeps (issue 12, "Security"):
//   - Log data reaches the page only as text: el() and text nodes, textContent. Nothing here
//     uses innerHTML, insertAdjacentHTML, document.write or eval; the page's CSP forbids inline
//     script, so even markup that slipped through would not run.
//   - The only links built from data are our own "?q=field:value" links, made with
//     URLSearchParams: a value can change the query, never the scheme or the origin.
//   - Control characters (ANSI escapes) and bidi overrides are shown as visible symbols, and long
//     fields are cut in the list (the expanded row has "show all").
//
// The view (q, since, until, paused, selected id, context) lives in the URL; every change
// writes it back (pushState for a new search or range, replaceState for the rest), and
// loading the URL rebuilds the same view.

"use strict";

(function () {
  const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];
  const LEVEL_COLORS = {
    DEBUG: "#9aa0a6",
    INFO: "#3b82f6",
    WARNING: "#f59e0b",
    ERROR: "#ef4444",
    CRITICAL: "#9333ea",
  };
  const DEFAULT_SINCE = "1h";
  const PAGE = 100;
  const BUCKETS = 60;
  const LIST_CUT = 400; // characters of a message in the list
  const DETAIL_CUT = 10000; // characters of one field in the expanded row before "show all"
  const MAX_ROWS = 2000; // rows kept in the list while tailing (oldest dropped)
  const MAX_PENDING = 10000; // records held while paused (beyond this only counted)
  const MAX_SEEN = 20000; // ids remembered to drop duplicates between search and tail
  const HISTOGRAM_REFRESH_MS = 10000;
  // Detail table order; any other field the API returns follows, then extra.
  const FIELD_ORDER = [
    "id", "created", "received", "stored", "levelname", "levelno", "logger", "message",
    "pathname", "lineno", "func", "module", "process", "process_name", "thread",
    "thread_name", "peer", "seq",
  ];
  const PRE_FIELDS = new Set(["message", "exc_text", "stack_info"]);
  // Shown in their own rows below the fields, or not a field ("truncated": the list cut it).
  const NOT_IN_TABLE = new Set(["extra", "exc_text", "stack_info", "truncated"]);
  // extra keys whose values are ids to filter on (trace_id, spanId, request-id, correlation_id...).
  const ID_KEY = /(^|[_.-])(trace|span|request|req|correlation|transaction)[_.-]?id$|^(trace|span|request)(id)?$/i;
  const ID_VALUE = /^(?:[0-9a-f]{16}|[0-9a-f]{32})$/i;
  // C0 controls but tab and newline, DEL, C1 controls, and the bidi embedding/override/isolate marks.
  const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- state and URL

  const state = { q: "", since: DEFAULT_SINCE, until: "", paused: false, id: "", ctx: "", n: 20 };

  function readUrl() {
    const p = new URLSearchParams(location.search);
    state.q = p.get("q") || "";
    state.since = p.get("since") || DEFAULT_SINCE;
    state.until = p.get("until") || "";
    state.paused = p.get("paused") === "1";
    state.id = p.get("id") || "";
    const ctx = p.get("ctx") || "";
    state.ctx = ctx === "process" || ctx === "trace" ? ctx : "";
    const n = parseInt(p.get("n") || "20", 10);
    state.n = n > 0 && n <= 1000 ? n : 20;
  }

  function viewParams(over) {
    const s = Object.assign({}, state, over || {});
    const p = new URLSearchParams();
    if (s.q) p.set("q", s.q);
    p.set("since", s.since || DEFAULT_SINCE);
    if (s.until) p.set("until", s.until);
    if (s.paused) p.set("paused", "1");
    if (s.id) p.set("id", s.id);
    if (s.ctx) p.set("ctx", s.ctx);
    if (s.ctx && s.n !== 20) p.set("n", String(s.n));
    return p;
  }

  function writeUrl(push) {
    const url = "?" + viewParams().toString();
    if (url === location.search) return;
    if (push) history.pushState(null, "", url);
    else history.replaceState(null, "", url);
  }

  // ---------------------------------------------------------------- small helpers

  // An element with properties (never raw HTML) and children (strings become text nodes).
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (k === "class") e.className = v;
        else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
        else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
        else if (k === "hidden" || k === "disabled") e[k] = Boolean(v);
        else e.setAttribute(k, v);
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return e;
  }

  function controlName(c) {
    const n = c.charCodeAt(0);
    return n < 0x100 ? "\\x" + n.toString(16).padStart(2, "0") : "\\u" + n.toString(16).padStart(4, "0");
  }

  // Text for places that are plain strings (titles, names): controls as Unicode control pictures.
  function visible(s) {
    return s.replace(CONTROL, (c) => {
      const n = c.charCodeAt(0);
      if (n < 0x20) return String.fromCharCode(0x2400 + n); // ␛ for ESC, ␀ for NUL...
      if (n === 0x7f) return "\u2421";
      return "<" + controlName(c) + ">";
    });
  }

  // Text as nodes: each control character (an ANSI escape's ESC, a bidi override) becomes a
  // marked "\x1b" so it is seen and does nothing. Past MAX_CONTROL_SPANS of them, plain text.
  const MAX_CONTROL_SPANS = 2000;
  function textFrag(s) {
    const frag = document.createDocumentFragment();
    let last = 0;
    let spans = 0;
    CONTROL.lastIndex = 0;
    for (let m = CONTROL.exec(s); m !== null; m = CONTROL.exec(s)) {
      if (++spans > MAX_CONTROL_SPANS) break;
      if (m.index > last) frag.append(s.slice(last, m.index));
      frag.append(el("span", { class: "ctl", title: "control character" }, controlName(m[0])));
      last = m.index + 1;
    }
    CONTROL.lastIndex = 0;
    if (last < s.length) frag.append(spans > MAX_CONTROL_SPANS ? visible(s.slice(last)) : s.slice(last));
    return frag;
  }

  function asText(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "string") return v;
    return JSON.stringify(v);
  }

  function cut(s, n) {
    return s.length > n ? s.slice(0, n) + "…" : s;
  }

  function pad(n, w) {
    return String(n).padStart(w || 2, "0");
  }

  function localTime(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return asText(iso);
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
    );
  }

  function isoUtc(epochSeconds) {
    return new Date(Math.round(epochSeconds * 1000)).toISOString().replace(/\.000Z$/, "Z");
  }

  // A value as the query language (docs/query.md) reads it. A bare value matches a string
  // and, when it reads as one, the JSON number/true/false/null; a "phrase" only the string.
  // So: numbers and booleans of a record's extra stay bare (trace_id:17), its strings are bare
  // unless they would read as something else; a facet's value (text, its JSON type unknown)
  // is bare whenever it can be, matching either.
  const NUMBER_LIKE = /^(?:true|false|null|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$/;
  function quoteValue(v, typed) {
    if (v === null) return "null";
    if (typeof v === "number" || typeof v === "boolean") return String(v);
    const s = asText(v);
    const bare = s !== "" && s !== "*" && s.length <= 200 && !/[\s()"\\]/.test(s) && !CONTROL.test(s);
    CONTROL.lastIndex = 0;
    if (bare && !(typed && NUMBER_LIKE.test(s))) return s;
    return '"' + s.replace(/["\\]/g, "\\$&") + '"';
  }

  // Names the query language takes as columns (query_lang.COLUMN_FIELDS); an extra key of the
  // same name is written extra.<key>.
  const COLUMN_NAMES = new Set([
    "message", "msg", "logger", "name", "level", "levelno", "levelname", "host", "peer",
    "process", "pid", "thread", "lineno", "seq", "module", "func", "funcName", "pathname",
    "filename", "process_name", "processName", "thread_name", "threadName", "exc_text", "stack_info",
  ]);
  const FIELD_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

  // A field:value term, or null when the name cannot be written in a query.
  function term(field, value, typed) {
    if (!FIELD_NAME.test(field.startsWith("extra.") ? field.slice(6) : field)) return null;
    return `${field}:${quoteValue(value, typed)}`;
  }

  function extraTerm(key, value) {
    const name = COLUMN_NAMES.has(key) || key.startsWith("extra.") ? `extra.${key}` : key;
    return term(name, value, true);
  }

  function addTerm(t) {
    const q = state.q.trim();
    return q ? `${q} ${t}` : t;
  }

  // Our own link to a view filtering on `t` (added to the query, or replacing it: an id link
  // shows the whole trace); href built only by URLSearchParams.
  function queryLink(t, text, replace) {
    const q = replace ? t : addTerm(t);
    const href = "?" + viewParams({ q, id: "", ctx: "", paused: state.paused }).toString();
    return el(
      "a",
      {
        href,
        class: "qlink",
        title: `Filter on ${t}`,
        onclick: (ev) => {
          if (ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
          ev.preventDefault();
          ev.stopPropagation();
          newSearch({ q, id: "", ctx: "" });
        },
      },
      text,
    );
  }

  function looksLikeId(key, value) {
    if (value === null || typeof value === "object") return false;
    const s = String(value);
    if (!s || s.length > 200) return false;
    return ID_KEY.test(key) || (typeof value === "string" && ID_VALUE.test(s));
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(message, status, position) {
      super(message);
      this.status = status;
      this.position = position;
    }
  }

  async function api(path, params, signal) {
    const url = path + "?" + new URLSearchParams(params).toString();
    let resp;
    try {
      resp = await fetch(url, { signal, headers: { Accept: "application/json" }, cache: "no-store" });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(`cannot reach the service: ${e.message}`, 0, null);
    }
    let body = null;
    try {
      body = await resp.json();
    } catch (e) {
      body = null;
    }
    if (!resp.ok) {
      const msg = body && typeof body.error === "string" ? body.error : `HTTP ${resp.status}`;
      const pos = body && Number.isInteger(body.position) ? body.position : null;
      throw new ApiError(msg, resp.status, pos);
    }
    return body;
  }

  function rangeParams() {
    const p = { q: state.q, since: state.since || DEFAULT_SINCE };
    if (state.until) p.until = state.until;
    return p;
  }

  // ---------------------------------------------------------------- rows

  // One record as a row: a summary line; clicking it expands every field below it.
  function renderRow(rec, opts) {
    const level = asText(rec.levelname) || "NOTSET";
    const row = el("div", { class: `row lvl-${LEVELS.includes(level) ? level : "OTHER"}`, data: { id: asText(rec.id) } });
    row._rec = rec;
    const msg = textFrag(cut(asText(rec.message), LIST_CUT).replace(/\r?\n/g, " \u23ce "));
    const ids = el("span", { class: "ids" });
    const extra = rec.extra && typeof rec.extra === "object" && !Array.isArray(rec.extra) ? rec.extra : {};
    for (const [k, v] of Object.entries(extra)) {
      const t = looksLikeId(k, v) && extraTerm(k, v);
      if (t) ids.append(queryLink(t, visible(`${k}=${cut(asText(v), 64)}`), true));
    }
    const line = el(
      "div",
      {
        class: "line",
        tabindex: "0",
        role: "button",
        "aria-expanded": "false",
        onclick: (ev) => {
          if (ev.target.closest("a, button")) return;
          // A drag that selected text is not a click on the row.
          const sel = window.getSelection();
          if (sel && !sel.isCollapsed && line.contains(sel.anchorNode)) return;
          opts.onToggle(row);
        },
        onkeydown: (ev) => {
          if (ev.key === "Enter" || ev.key === " ") {
            ev.preventDefault();
            opts.onToggle(row);
          }
        },
      },
      el("time", { class: "t", datetime: asText(rec.created), title: asText(rec.created) }, localTime(rec.created)),
      el("span", { class: "lvl" }, visible(level)),
      el("span", { class: "logger", title: visible(asText(rec.logger)) }, visible(cut(asText(rec.logger), 80))),
      el("span", { class: "msg" }, msg),
      ids,
    );
    row.append(line);
    return row;
  }

  function setExpanded(row, on, opts) {
    const line = row.firstChild;
    line.setAttribute("aria-expanded", on ? "true" : "false");
    row.classList.toggle("selected", on);
    const old = row.querySelector(":scope > .detail");
    if (old) old.remove();
    if (!on) return;
    const detail = renderDetail(row._rec, opts);
    row.append(detail);
    // Lists carry long fields cut (the record says "truncated"); /api/record has it whole.
    if (row._rec.truncated && !row._loading) {
      row._loading = true;
      const note = el("div", { class: "sub" }, "Loading the whole record…");
      detail.prepend(note);
      api("/api/record", { id: asText(row._rec.id) })
        .then((full) => {
          row._rec = full;
          if (row.classList.contains("selected") && row.querySelector(":scope > .detail") === detail) {
            detail.replaceWith(renderDetail(full, opts));
          }
        })
        .catch((e) => {
          note.textContent = `Only the start of the long fields is shown: ${e.message}`;
        })
        .finally(() => {
          row._loading = false;
        });
    }
  }

  // A long value: the first DETAIL_CUT characters and a button that shows the rest.
  function longText(tag, s) {
    const e = el(tag, { class: "val" });
    if (s.length <= DETAIL_CUT) {
      e.append(textFrag(s));
      return e;
    }
    e.append(textFrag(s.slice(0, DETAIL_CUT)), "…");
    const btn = el(
      "button",
      {
        type: "button",
        class: "showall",
        onclick: () => {
          e.textContent = "";
          e.append(textFrag(s));
          btn.remove();
        },
      },
      `show all (${s.length.toLocaleString()} characters)`,
    );
    return el("div", null, e, btn);
  }

  function renderDetail(rec, opts) {
    const table = el("table", { class: "fields" });
    const keys = FIELD_ORDER.filter((k) => k in rec).concat(
      Object.keys(rec).filter((k) => !FIELD_ORDER.includes(k) && !NOT_IN_TABLE.has(k)),
    );
    const empty = [];
    for (const k of keys) {
      if (rec[k] === null || rec[k] === undefined || rec[k] === "") {
        empty.push(k);
        continue;
      }
      const v = asText(rec[k]);
      const cell = PRE_FIELDS.has(k) && v.includes("\n") ? longText("pre", v) : longText("span", v);
      table.append(el("tr", null, el("th", null, visible(k)), el("td", null, cell)));
    }
    const extra = rec.extra && typeof rec.extra === "object" ? rec.extra : null;
    if (extra && !Array.isArray(extra)) {
      for (const [k, v] of Object.entries(extra)) {
        const td = el("td", null);
        const t = looksLikeId(k, v) && extraTerm(k, v);
        if (t) td.append(queryLink(t, visible(asText(v)), true));
        else td.append(longText("span", asText(v)));
        table.append(el("tr", { class: "extra" }, el("th", null, visible(`extra.${k}`)), td));
      }
    }
    for (const k of ["exc_text", "stack_info"]) {
      if (rec[k]) table.append(el("tr", null, el("th", null, k), el("td", null, longText("pre", asText(rec[k])))));
    }
    for (const k of ["exc_text", "stack_info"]) if (!rec[k]) empty.push(k);
    if (empty.length) {
      table.append(el("tr", { class: "empty" }, el("th", null, "(no value)"), el("td", null, empty.map(visible).join(", "))));
    }
    const box = el("div", { class: "detail" }, table);
    if (rec.extra !== undefined && rec.extra !== null) {
      box.append(el("div", { class: "sub" }, "extra as JSON"), longText("pre", JSON.stringify(rec.extra, null, 2)));
    }
    const actions = el(
      "div",
      { class: "actions" },
      el("button", { type: "button", class: "ctx-process", onclick: () => openContext(rec, "process") }, "Context: same process"),
      el("button", { type: "button", class: "ctx-trace", onclick: () => openContext(rec, "trace") }, "Context: same trace"),
    );
    if (opts && opts.linkable) {
      actions.append(el("a", { class: "permalink", href: "?" + viewParams({ id: asText(rec.id) }).toString() }, "Link to this view"));
    }
    box.append(actions);
    return box;
  }

  // ---------------------------------------------------------------- the result list

  const results = () => $("results");
  const pane = () => $("results-pane");
  let seen = new Set();
  let nextCursor = null;
  let trimmed = false;
  let lastTook = null;

  function mainToggle(row) {
    const on = !row.classList.contains("selected");
    for (const r of results().querySelectorAll(":scope > .row.selected")) if (r !== row) setExpanded(r, false);
    setExpanded(row, on, { linkable: true });
    state.id = on ? row.dataset.id : "";
    if (!on && state.ctx) closeContext(false);
    writeUrl(false);
  }

  function remember(id) {
    seen.add(id);
    if (seen.size > MAX_SEEN) seen = new Set(Array.from(seen).slice(-MAX_SEEN / 2));
  }

  function appendRows(records) {
    const frag = document.createDocumentFragment();
    for (const rec of records) {
      const id = asText(rec.id);
      if (seen.has(id)) continue;
      remember(id);
      frag.append(renderRow(rec, { onToggle: mainToggle }));
    }
    results().append(frag);
  }

  // Tail records (oldest first) go on top, newest first, without moving what the reader sees:
  // when the pane is scrolled down, it scrolls by exactly the height added above.
  function prependRows(records) {
    const frag = document.createDocumentFragment();
    let added = 0;
    for (let i = records.length - 1; i >= 0; i--) {
      const rec = records[i];
      const id = asText(rec.id);
      if (seen.has(id)) continue;
      remember(id);
      frag.append(renderRow(rec, { onToggle: mainToggle }));
      added++;
    }
    if (!added) return;
    const p = pane();
    const top = p.scrollTop;
    const before = p.scrollHeight;
    results().prepend(frag);
    if (top > 0) p.scrollTop = top + (p.scrollHeight - before);
    const rows = results().children;
    if (rows.length > MAX_ROWS) {
      for (let i = rows.length - 1; i >= MAX_ROWS; i--) {
        if (!rows[i].classList.contains("selected")) rows[i].remove();
      }
      trimmed = true;
      nextCursor = null;
    }
    updateStatus();
  }

  function updateStatus() {
    const n = results().children.length;
    const parts = [`${n.toLocaleString()} record${n === 1 ? "" : "s"}, newest first`];
    if (lastTook !== null) parts.push(`search took ${lastTook} ms`);
    if (trimmed) parts.push(`only the newest ${MAX_ROWS} kept while tailing; search again to page back`);
    $("status").textContent = parts.join(" · ");
    $("more").hidden = !nextCursor;
  }

  function showQueryError(err) {
    const box = $("qerror");
    $("qerror-msg").textContent = err.message;
    const at = $("qerror-at");
    at.textContent = "";
    if (err.position !== null && err.position !== undefined) {
      const q = state.q;
      const p = Math.max(0, Math.min(err.position, q.length));
      at.append(
        document.createTextNode(visible(q.slice(0, p))),
        el("mark", null, visible(q.slice(p, p + 1)) || " "),
        document.createTextNode(visible(q.slice(p + 1))),
        document.createTextNode("\n" + " ".repeat(visible(q.slice(0, p)).length) + "^ position " + p),
      );
      at.hidden = false;
      $("q").classList.add("invalid");
      $("q").setAttribute("aria-invalid", "true");
    } else {
      at.hidden = true;
    }
    box.hidden = false;
  }

  function clearQueryError() {
    $("qerror").hidden = true;
    $("q").classList.remove("invalid");
    $("q").removeAttribute("aria-invalid");
  }

  let searchCtl = null;
  let searching = false;
  let heldTail = [];

  async function search() {
    if (searchCtl) searchCtl.abort();
    const ctl = (searchCtl = new AbortController());
    searching = true;
    heldTail = [];
    $("status").textContent = "searching…";
    try {
      const body = await api("/api/search", Object.assign(rangeParams(), { limit: PAGE }), ctl.signal);
      if (ctl.signal.aborted) return;
      clearQueryError();
      results().textContent = "";
      $("selected-out") && $("selected-out").remove();
      seen = new Set();
      trimmed = false;
      nextCursor = body.next || null;
      lastTook = body.took_ms ?? null;
      appendRows(body.records || []);
      searching = false;
      if (heldTail.length) prependRows(heldTail);
      heldTail = [];
      updateStatus();
      await restoreSelection();
    } catch (e) {
      if (e.name === "AbortError") return;
      searching = false;
      results().textContent = "";
      nextCursor = null;
      lastTook = null;
      updateStatus();
      $("status").textContent = "no results: " + e.message;
      showQueryError(e);
      if (e.status === 400 && source) {
        source.close(); // it was refused for the same reason
        source = null;
        setLiveState("live tail off until the query is fixed", "bad");
      }
    }
  }

  async function loadOlder() {
    if (!nextCursor) return;
    const btn = $("more");
    btn.disabled = true;
    try {
      const body = await api("/api/search", Object.assign(rangeParams(), { limit: PAGE, cursor: nextCursor }));
      nextCursor = body.next || null;
      appendRows(body.records || []);
      updateStatus();
    } catch (e) {
      $("status").textContent = "could not load more: " + e.message;
    } finally {
      btn.disabled = false;
    }
  }

  // The record named in the URL: expanded in the list, or shown above it when it is not in this page.
  async function restoreSelection() {
    if (!state.id) return;
    const row = Array.from(results().children).find((r) => r.dataset.id === state.id);
    let rec = row ? row._rec : null;
    if (row) {
      setExpanded(row, true, { linkable: true });
      row.scrollIntoView({ block: "nearest" });
    } else {
      try {
        rec = await api("/api/record", { id: state.id });
      } catch (e) {
        $("status").textContent += ` · selected record ${state.id}: ${e.message}`;
        return;
      }
      const out = el("div", { id: "selected-out" }, el("div", { class: "sub" }, "Selected record (not in this page of results)"));
      const r = renderRow(rec, {
        onToggle: (x) => setExpanded(x, !x.classList.contains("selected"), { linkable: true }),
      });
      setExpanded(r, true, { linkable: true });
      out.append(r);
      pane().insertBefore(out, results());
    }
    if (state.ctx && rec) openContext(rec, state.ctx, true);
  }

  // ---------------------------------------------------------------- live tail

  let source = null;
  let sourceKey = null;
  let pending = [];
  let pendingCount = 0;
  let skipped = 0;

  function setLiveState(text, cls) {
    const e = $("live-state");
    e.textContent = text;
    e.className = cls || "muted";
  }

  function updateTail(force) {
    const want = !state.until;
    const key = want ? state.q : null;
    if (!force && key === sourceKey && (source || !want)) return;
    if (source) source.close();
    source = null;
    sourceKey = key;
    skipped = 0;
    showSkipped();
    if (!want) {
      setLiveState("live tail off: the range has an end");
      $("pause").disabled = true;
      return;
    }
    $("pause").disabled = false;
    const es = new EventSource("/api/tail?" + new URLSearchParams({ q: state.q }).toString());
    source = es;
    setLiveState("connecting…");
    es.addEventListener("open", () => source === es && setLiveState(state.paused ? "paused" : "live", "ok"));
    es.addEventListener("error", () => {
      if (source !== es) return;
      if (es.readyState === EventSource.CLOSED) setLiveState("live tail stopped (the service refused it)", "bad");
      else setLiveState("reconnecting…", "bad");
    });
    es.addEventListener("records", (ev) => {
      if (source !== es) return;
      let recs;
      try {
        recs = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (Array.isArray(recs) && recs.length) onTail(recs);
    });
    es.addEventListener("skipped", (ev) => {
      if (source !== es) return;
      try {
        skipped += Number(JSON.parse(ev.data).count) || 0;
      } catch (e) {
        return;
      }
      showSkipped();
    });
  }

  function onTail(recs) {
    if (state.paused) {
      pendingCount += recs.length;
      for (const r of recs) if (pending.length < MAX_PENDING) pending.push(r);
      showPending();
    } else if (searching) {
      heldTail.push(...recs);
    } else {
      prependRows(recs);
    }
  }

  function showPending() {
    const b = $("pending");
    b.hidden = !state.paused;
    b.textContent = `${pendingCount.toLocaleString()} new while paused`;
    b.title = pendingCount > pending.length ? `only the newest… the first ${MAX_PENDING} are kept; search again for the rest` : "";
  }

  function showSkipped() {
    const b = $("skipped");
    b.hidden = skipped === 0;
    b.textContent = `${skipped.toLocaleString()} skipped`;
    b.title = "The service samples the tail above a few hundred records per second; these were not sent. Search to see them all.";
  }

  function setPaused(p) {
    state.paused = p;
    const btn = $("pause");
    btn.textContent = p ? "Resume" : "Pause";
    btn.setAttribute("aria-pressed", p ? "true" : "false");
    if (!p && pending.length) {
      const recs = pending;
      pending = [];
      prependRows(recs);
    }
    if (!p) pendingCount = 0;
    showPending();
    if (source && source.readyState === EventSource.OPEN) setLiveState(p ? "paused" : "live", "ok");
    writeUrl(false);
  }

  // ---------------------------------------------------------------- histogram

  let plot = null;
  let plotLevels = "";
  let histCtl = null;
  let histTimer = null;
  let histPressed = false; // a drag may be under way: a refresh must not replace the plot
  // What the plot's range and legend read; replaced by each draw, so a refresh is a setData.
  let hist = { since: 0, until: 1, raw: [], totals: [] };

  function stackedBars(color) {
    return {
      stroke: color,
      fill: color,
      width: 0,
      paths: uPlot.paths.bars({ size: [0.9, 64] }),
      points: { show: false },
    };
  }

  async function loadHistogram() {
    if (histCtl) histCtl.abort();
    const ctl = (histCtl = new AbortController());
    const note = $("histogram-note");
    let body;
    try {
      body = await api("/api/histogram", Object.assign(rangeParams(), { buckets: BUCKETS }), ctl.signal);
    } catch (e) {
      if (e.name === "AbortError") return;
      if (plot) plot.destroy(); // the bars of another query would mislead
      plot = null;
      note.textContent = e.position == null ? "histogram: " + e.message : ""; // a query error is shown above
      return;
    }
    if (ctl.signal.aborted) return;
    drawHistogram(body);
  }

  function formatStep(s) {
    if (s >= 86400 && s % 86400 === 0) return `${s / 86400} d`;
    if (s >= 3600 && s % 3600 === 0) return `${s / 3600} h`;
    if (s >= 60 && s % 60 === 0) return `${s / 60} min`;
    return s >= 10 ? `${Math.round(s)} s` : `${Number(s.toPrecision(3))} s`;
  }

  function drawHistogram(body) {
    const levels = (body.levels || LEVELS).slice();
    const buckets = body.buckets || [];
    const step = Number(body.step_s) || 60;
    const xs = buckets.map((b) => Date.parse(b.t) / 1000 + step / 2);
    const raw = levels.map((l) => buckets.map((b) => (b.counts && b.counts[l]) || 0));
    // Stack: series i shows the sum of levels 0..i; drawn from the top level down, so each
    // lower sum paints over the bar of the one above it.
    const sums = [];
    let acc = xs.map(() => 0);
    for (const r of raw) {
      acc = acc.map((v, j) => v + r[j]);
      sums.push(acc);
    }
    const order = levels.map((_, i) => i).reverse();
    const totals = raw.map((r) => r.reduce((a, b) => a + b, 0));
    const all = totals.reduce((a, b) => a + b, 0);
    hist = { since: Date.parse(body.since) / 1000, until: Date.parse(body.until) / 1000, raw, totals };
    $("histogram-note").textContent =
      `${all.toLocaleString()} records from ${localTime(body.since)} to ${localTime(body.until)}, ` +
      `${formatStep(step)} per bar · drag across the bars to zoom`;
    const data = [xs, ...order.map((i) => sums[i])];
    if (plot && plotLevels === levels.join()) {
      plot.setData(data); // same series: new bars, range and legend figures in place
      return;
    }
    const series = [
      {},
      ...order.map((i) => {
        const s = stackedBars(LEVEL_COLORS[levels[i]] || "#64748b");
        s.label = levels[i];
        s.value = (u, v, si, idx) =>
          idx === null || idx === undefined ? (hist.totals[i] || 0).toLocaleString() : String(hist.raw[i][idx] ?? "");
        return s;
      }),
    ];
    const wrap = $("histogram");
    if (plot) plot.destroy();
    plotLevels = levels.join();
    plot = new uPlot(
      {
        width: Math.max(300, wrap.clientWidth),
        height: 150,
        series,
        scales: {
          x: { time: true, range: () => [hist.since, hist.until] },
          y: { range: (u, lo, hi) => [0, Math.max(1, Math.ceil(hi * 1.1))] },
        },
        axes: [{ stroke: "#475569" }, { stroke: "#475569", size: 50 }],
        legend: { show: true, live: true },
        cursor: { drag: { x: true, y: false, setScale: false }, points: { show: false } },
        hooks: {
          setSelect: [
            (u) => {
              if (u.select.width < 3) return;
              const a = u.posToVal(u.select.left, "x");
              const b = u.posToVal(u.select.left + u.select.width, "x");
              u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
              zoomTo(Math.max(a, hist.since), Math.min(b, hist.until));
            },
          ],
        },
      },
      data,
      wrap,
    );
  }

  function zoomTo(a, b) {
    if (!(b > a)) return;
    newSearch({ since: isoUtc(a), until: isoUtc(b) });
  }

  function scheduleHistogramRefresh() {
    clearInterval(histTimer);
    histTimer = null;
    if (state.until) return;
    histTimer = setInterval(() => {
      if (!state.paused && !document.hidden && !state.until && !histPressed) loadHistogram();
    }, HISTOGRAM_REFRESH_MS);
  }

  // ---------------------------------------------------------------- facets

  let facetCtl = null;

  async function loadFacets() {
    if (facetCtl) facetCtl.abort();
    const ctl = (facetCtl = new AbortController());
    const box = $("facets");
    let body;
    try {
      body = await api("/api/facets", rangeParams(), ctl.signal);
    } catch (e) {
      if (e.name === "AbortError") return;
      box.textContent = "";
      if (e.position == null) box.append(el("div", { class: "muted" }, "fields: " + e.message));
      return;
    }
    if (ctl.signal.aborted) return;
    box.textContent = "";
    for (const f of body.fields || []) {
      const name = asText(f.name);
      const head = el("div", { class: "fname" }, visible(name));
      if (f.high_cardinality) head.append(el("span", { class: "badge hc", title: "Many distinct values: only the top ones are listed" }, "high cardinality"));
      if (f.distinct !== undefined) head.append(el("span", { class: "muted" }, ` ${Number(f.distinct).toLocaleString()} distinct`));
      const list = el("ul");
      for (const v of f.values || []) {
        const t = term(name, v.value);
        const label = visible(cut(asText(v.value), 60)) || "(empty)";
        const a = t ? queryLink(t, label) : el("span", null, label);
        a.classList.add("facet-value");
        list.append(el("li", null, a, el("span", { class: "count" }, Number(v.count).toLocaleString())));
      }
      box.append(el("section", { class: f.high_cardinality ? "facet hc" : "facet", data: { field: name } }, head, list));
    }
  }

  // ---------------------------------------------------------------- context

  let ctxAnchor = null;
  let ctxNewer = null;
  let ctxOlder = null;
  let ctxSeen = new Set();

  function ctxToggle(row) {
    setExpanded(row, !row.classList.contains("selected"), {});
  }

  function ctxRows(records) {
    const frag = document.createDocumentFragment();
    for (const rec of records) {
      const id = asText(rec.id);
      if (ctxSeen.has(id)) continue;
      ctxSeen.add(id);
      frag.append(renderRow(rec, { onToggle: ctxToggle }));
    }
    return frag;
  }

  async function openContext(rec, by, fromUrl) {
    ctxAnchor = rec;
    state.ctx = by;
    state.id = asText(rec.id);
    $("ctx-by").value = by;
    $("ctx-n").value = String(state.n);
    if (!fromUrl) writeUrl(false);
    const box = $("context");
    box.hidden = false;
    document.body.classList.add("with-context");
    const list = $("ctx-list");
    list.textContent = "";
    $("ctx-error").hidden = true;
    $("ctx-newer").hidden = $("ctx-older").hidden = true;
    ctxSeen = new Set();
    let body;
    try {
      body = await api("/api/context", { id: state.id, by, n: state.n });
    } catch (e) {
      $("ctx-error").textContent = e.message;
      $("ctx-error").hidden = false;
      return;
    }
    if (ctxAnchor !== rec) return;
    // Newest first, like the list: the newer ones (given nearest first) reversed, the anchor, the
    // older ones (given nearest last) reversed.
    list.append(ctxRows((body.after || []).slice().reverse()));
    const anchor = ctxRows([body.anchor || rec]);
    if (anchor.firstChild) anchor.firstChild.classList.add("anchor");
    list.append(anchor);
    list.append(ctxRows((body.before || []).slice().reverse()));
    ctxNewer = body.after_next || null;
    ctxOlder = body.before_next || null;
    $("ctx-newer").hidden = !ctxNewer;
    $("ctx-older").hidden = !ctxOlder;
    const a = list.querySelector(".anchor");
    if (a) a.scrollIntoView({ block: "center" });
  }

  async function ctxMore(newer) {
    const cursor = newer ? ctxNewer : ctxOlder;
    if (!cursor || !ctxAnchor) return;
    const btn = newer ? $("ctx-newer") : $("ctx-older");
    btn.disabled = true;
    const params = { id: state.id, by: state.ctx, n: state.n };
    params[newer ? "after" : "before"] = cursor;
    try {
      const body = await api("/api/context", params);
      const list = $("ctx-list");
      if (newer) {
        const p = list;
        const before = p.scrollHeight;
        const top = p.scrollTop;
        list.prepend(ctxRows((body.after || []).slice().reverse()));
        p.scrollTop = top + (p.scrollHeight - before);
        ctxNewer = body.after_next || null;
      } else {
        list.append(ctxRows((body.before || []).slice().reverse()));
        ctxOlder = body.before_next || null;
      }
    } catch (e) {
      $("ctx-error").textContent = e.message;
      $("ctx-error").hidden = false;
    } finally {
      btn.disabled = false;
      $("ctx-newer").hidden = !ctxNewer;
      $("ctx-older").hidden = !ctxOlder;
    }
  }

  function closeContext(write) {
    ctxAnchor = null;
    state.ctx = "";
    $("context").hidden = true;
    document.body.classList.remove("with-context");
    $("ctx-list").textContent = "";
    if (write) writeUrl(false);
  }

  // ---------------------------------------------------------------- the view

  function fillInputs() {
    $("q").value = state.q;
    $("since").value = state.since;
    $("until").value = state.until;
    $("preset").value = "";
    setPaused(state.paused);
  }

  function loadView() {
    fillInputs();
    if (!state.ctx) closeContext(false);
    search();
    loadHistogram();
    loadFacets();
    updateTail(false);
    scheduleHistogramRefresh();
  }

  // A new query or range: a new history entry (Back returns to the previous view).
  function newSearch(over) {
    Object.assign(state, { id: "", ctx: "" }, over);
    if (!state.since) state.since = DEFAULT_SINCE;
    pending = [];
    pendingCount = 0;
    writeUrl(true);
    loadView();
  }

  function init() {
    readUrl();
    $("search").addEventListener("submit", (ev) => {
      ev.preventDefault();
      newSearch({ q: $("q").value.trim(), since: $("since").value.trim() || DEFAULT_SINCE, until: $("until").value.trim() });
    });
    $("preset").addEventListener("change", () => {
      const v = $("preset").value;
      if (v) newSearch({ q: $("q").value.trim(), since: v, until: "" });
    });
    $("pause").addEventListener("click", () => setPaused(!state.paused));
    $("pending").addEventListener("click", () => setPaused(false));
    $("more").addEventListener("click", loadOlder);
    $("ctx-close").addEventListener("click", () => closeContext(true));
    $("ctx-newer").addEventListener("click", () => ctxMore(true));
    $("ctx-older").addEventListener("click", () => ctxMore(false));
    const reanchor = () => {
      state.n = parseInt($("ctx-n").value, 10) || 20;
      if (ctxAnchor) openContext(ctxAnchor, $("ctx-by").value);
    };
    $("ctx-by").addEventListener("change", reanchor);
    $("ctx-n").addEventListener("change", reanchor);
    document.addEventListener("keydown", (ev) => {
      const t = ev.target;
      const typing = t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA");
      if (ev.key === "/" && !typing) {
        ev.preventDefault();
        $("q").focus();
      }
    });
    window.addEventListener("popstate", () => {
      readUrl();
      pending = [];
      pendingCount = 0;
      loadView();
    });
    // Leaving the page (or the browser keeping it in its back/forward cache) must give the
    // stream's connection back: browsers allow six per host, and a frozen page's open
    // EventSource held one each, so the seventh page load waited for a minute.
    window.addEventListener("pagehide", () => {
      if (source) source.close();
      source = null;
      sourceKey = null;
    });
    window.addEventListener("pageshow", (ev) => {
      if (ev.persisted) updateTail(true);
    });
    $("histogram").addEventListener("mousedown", () => (histPressed = true));
    document.addEventListener("mouseup", () => (histPressed = false));
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => plot && plot.setSize({ width: Math.max(300, $("histogram").clientWidth), height: 150 }), 150);
    });
    writeUrl(false);
    loadView();
  }

  document.addEventListener("DOMContentLoaded", init);
})();
