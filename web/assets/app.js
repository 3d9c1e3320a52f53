// flowlens explorer: what every page shares — the URL as the state, the time
// range and filter bars, API calls, formatting, tables, charts, auto-refresh.
// Plain browser JavaScript, no build step; each page script calls FL.start().
'use strict';

const FL = (() => {
  const REFRESH_MS = 10000;
  const PAGE_KEYS = ['from', 'to', 'filter'];
  let render = null;
  let timer = null;
  let inflight = 0;
  let generation = 0;

  // ---- URL state ----------------------------------------------------------
  const params = () => new URLSearchParams(location.search);
  const get = (k, d) => {
    const v = params().get(k);
    return v === null || v === '' ? d : v;
  };
  // Sets keys (null removes) and re-renders; `push` adds a history entry.
  function set(obj, push = true) {
    const p = params();
    for (const [k, v] of Object.entries(obj)) {
      if (v === null || v === undefined || v === '') p.delete(k);
      else p.set(k, String(v));
    }
    const url = location.pathname + (p.toString() ? '?' + p : '');
    if (push) history.pushState(null, '', url);
    else history.replaceState(null, '', url);
    syncBars();
    refresh();
  }
  const range = () => ({ from: get('from', 'now-1h'), to: get('to', 'now') });
  const endsNow = () => /^now$/i.test(range().to.trim());
  // The shared part of the state (range, filter) as a query string.
  function shared(extra = {}) {
    const p = new URLSearchParams();
    for (const k of PAGE_KEYS) {
      const v = get(k, '');
      if (v) p.set(k, v);
    }
    for (const [k, v] of Object.entries(extra)) if (v !== null && v !== undefined && v !== '') p.set(k, v);
    const s = p.toString();
    return s ? '?' + s : '';
  }

  // ---- API ----------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error && body.error.message) || 'HTTP ' + status);
      this.status = status;
      this.body = body;
    }
  }
  function query(p) {
    const r = range();
    const q = new URLSearchParams({ from: r.from, to: r.to });
    const f = get('filter', '');
    if (f) q.set('filter', f);
    for (const [k, v] of Object.entries(p || {})) {
      if (v === null || v === undefined || v === '') q.delete(k);
      else q.set(k, String(v));
    }
    return q;
  }
  async function api(path, p, raw = false) {
    const q = raw ? new URLSearchParams(p) : query(p);
    inflight++;
    status();
    try {
      // Long filters go as a POST form (URLs are capped by proxies and servers).
      const s = q.toString();
      const opts = { credentials: 'same-origin', headers: { Accept: 'application/json' } };
      let url = '/api/' + path + '?' + s;
      if (s.length > 1800) {
        url = '/api/' + path;
        opts.method = 'POST';
        opts.body = q;
      }
      const r = await fetch(url, opts);
      let body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      if (r.status === 401) {
        location.href = '/login';
        throw new ApiError(401, body);
      }
      if (!r.ok) throw new ApiError(r.status, body);
      return body;
    } finally {
      inflight--;
      status();
    }
  }
  const csvUrl = (path, p) => '/api/' + path + '?' + query(Object.assign({}, p, { format: 'csv' }));

  // ---- formatting ---------------------------------------------------------
  function units(v, base, names) {
    const n = Number(v) || 0;
    let i = 0;
    let x = Math.abs(n);
    while (x >= base && i < names.length - 1) { x /= base; i++; }
    const s = i === 0 ? String(Math.round(x)) : x.toFixed(x < 10 ? 2 : x < 100 ? 1 : 0);
    return (n < 0 ? '-' : '') + s + ' ' + names[i];
  }
  const bytes = v => units(v, 1000, ['B', 'kB', 'MB', 'GB', 'TB', 'PB']);
  const rate = (v, unit) => {
    if (unit === 'packets/s') return units(v, 1000, ['pkt/s', 'kpkt/s', 'Mpkt/s', 'Gpkt/s']);
    if (unit === 'conversations/s' || unit === 'records/s') return units(v, 1000, ['/s', 'k/s', 'M/s']);
    return units(Number(v) * 8, 1000, ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s']);
  };
  const total = (v, unit) => (unit === 'bytes' || !unit ? bytes(v) : num(v) + ' ' + unit);
  const num = v => (Number(v) || 0).toLocaleString('en-US');
  const time = ms => {
    const d = new Date(ms);
    return isNaN(d) ? '' : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  };
  // Microseconds, as latencies are kept: 850 µs, 1.25 ms, 2.00 s; '—' when absent.
  const micros = us => {
    if (us === null || us === undefined) return '—';
    const n = Number(us) || 0;
    if (n < 1000) return n + ' µs';
    if (n < 1e6) return (n / 1000).toFixed(n < 1e4 ? 2 : n < 1e5 ? 1 : 0) + ' ms';
    return (n / 1e6).toFixed(2) + ' s';
  };
  // One end's address as users read it: its DNS name when this host's DNS traffic gave one (the
  // address stays on hover and as a secondary line), else the address; with the port.
  function endpoint(e) {
    const host = e.addr.includes(':') ? '[' + e.addr + ']' : e.addr;
    const port = e.port !== null && e.port !== undefined ? ':' + e.port : '';
    const label = (e.name || host) + port;
    const main = e.local ? el('span', { class: 'addr', title: e.name ? host + port : null }, label)
      : link('remote', e.addr, label);
    if (!e.name) return main;
    if (!e.local) main.setAttribute('title', host + port);
    return el('span', { class: 'named', dataset: { addr: e.addr } }, main, ' ', el('small', { class: 'addr muted' }, host));
  }
  const duration = ms => {
    const s = Math.round((Number(ms) || 0) / 1000);
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  };

  // ---- DOM ----------------------------------------------------------------
  // el('a', {href: x, class: 'y'}, 'text', child): text is never parsed as HTML.
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of kids.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const KINDS = { container: 'container', process: 'process', user: 'user', host: 'host', peer: 'remote', remote: 'remote' };
  // A link to an entity's page (keeps range and filter); plain text for
  // "Other" and absent values.
  function link(kind, name, label) {
    const k = KINDS[kind];
    if (!k || name === null || name === undefined || name === '' || name === 'Other' || name === '(none)') {
      return el('span', {}, label !== undefined ? label : name === null || name === undefined ? '—' : name);
    }
    const r = range();
    const p = new URLSearchParams({ from: r.from, to: r.to });
    return el('a', { href: '/' + k + '/' + encodeURIComponent(name) + '?' + p, dataset: { kind: k, name: String(name) } },
      label !== undefined ? label : String(name));
  }
  // table({cols: [{title, num, cell(row), sort}], rows, foot, caption, sort, onSort, id})
  function table(o) {
    const head = el('tr', {}, o.cols.map(c => {
      const th = el('th', { scope: 'col', class: c.num ? 'num' : null });
      if (c.sort && o.onSort) {
        const active = o.sort && o.sort.key === c.sort;
        th.setAttribute('aria-sort', active ? (o.sort.order === 'asc' ? 'ascending' : 'descending') : 'none');
        th.append(el('button', { type: 'button', onclick: () => o.onSort(c.sort) },
          c.title + (active ? (o.sort.order === 'asc' ? ' ▲' : ' ▼') : '')));
      } else th.append(c.title);
      return th;
    }));
    const body = el('tbody', {}, o.rows.map(r => el('tr', {}, o.cols.map(c =>
      el('td', { class: c.num ? 'num' : null }, c.cell(r))))));
    const t = el('table', { id: o.id || null }, o.caption ? el('caption', { class: 'muted' }, o.caption) : null,
      el('thead', {}, head), body);
    if (o.foot) t.append(el('tfoot', {}, el('tr', {}, o.foot.map((x, i) =>
      el('td', { class: o.cols[i] && o.cols[i].num ? 'num' : null }, x)))));
    if (!o.rows.length) body.append(el('tr', {}, el('td', { colspan: o.cols.length, class: 'muted' }, o.empty || 'No traffic in this range.')));
    return t;
  }
  function notices(list) {
    const n = document.getElementById('notices');
    n.replaceChildren(...(list || []).map(x => el('p', {}, String(x))));
  }
  function fail(where, e) {
    const box = el('div', { class: 'error', role: 'alert' }, where + ': ' + e.message);
    if (e.body && e.body.error && e.body.error.code === 'bad_filter') showFilterError(e.body.error);
    return box;
  }

  // ---- charts -------------------------------------------------------------
  const charts = new Map();
  // One ECharts instance per element; tooltips drawn on the canvas (the CSP
  // forbids inline styles in HTML tooltips).
  function chart(node, option) {
    let c = charts.get(node);
    if (!c || c.isDisposed()) {
      c = echarts.init(node, null, { renderer: 'canvas' });
      charts.set(node, c);
      new ResizeObserver(() => c.resize()).observe(node);
    }
    option.animation = false;
    if (option.tooltip) option.tooltip.renderMode = 'richText';
    c.setOption(option, { notMerge: true });
    return c;
  }
  // A reusable chart container: kept across refreshes so charts do not flash.
  function slot(id, cls) {
    let n = document.getElementById(id);
    if (!n) n = el('div', { id, class: 'chart ' + (cls || ''), role: 'img' });
    return n;
  }
  function timeSeriesOption(s, o = {}) {
    const unit = s.unit;
    const stacked = o.stacked !== false;
    const series = s.series.map(x => ({
      name: x.name, type: 'line', showSymbol: false, sampling: 'lttb',
      stack: stacked ? (x.direction === 'in' && s.bidirectional ? 'in' : 'all') : undefined,
      areaStyle: stacked ? {} : undefined, lineStyle: { width: stacked ? 0.5 : 1.5 },
      emphasis: { focus: 'series' }, data: x.data,
    }));
    for (const extra of o.extra || []) series.push(extra);
    return {
      grid: { left: 70, right: 16, top: 30, bottom: 50 },
      legend: { type: 'scroll', bottom: 0 },
      tooltip: { trigger: 'axis', valueFormatter: v => rate(v, unit) },
      xAxis: { type: 'time' },
      yAxis: { type: 'value', axisLabel: { formatter: v => rate(v, unit) } },
      series,
    };
  }

  // ---- bars ---------------------------------------------------------------
  function syncBars() {
    const r = range();
    const preset = document.getElementById('preset');
    const match = r.to === 'now' && [...preset.options].some(o => o.value === r.from);
    preset.value = match ? r.from : 'custom';
    document.getElementById('from').value = r.from;
    document.getElementById('to').value = r.to;
    const f = document.getElementById('filter');
    if (document.activeElement !== f) f.value = get('filter', '');
    for (const a of document.querySelectorAll('nav a[data-nav]')) {
      a.href = a.getAttribute('href').split('?')[0] + shared();
    }
  }
  function showFilterError(err) {
    const box = document.getElementById('filter-error');
    const text = get('filter', '');
    box.replaceChildren();
    box.hidden = false;
    const s = Number.isInteger(err.start) ? err.start : null;
    const e = Number.isInteger(err.end) ? Math.max(err.end, s + 1) : null;
    if (s !== null && err.param === 'filter') {
      box.append(text.slice(0, s), el('mark', {}, text.slice(s, e) || ' '), text.slice(e), '\n');
    }
    box.append(err.message);
  }
  function clearFilterError() {
    const box = document.getElementById('filter-error');
    box.hidden = true;
    box.replaceChildren();
  }

  // Filter completion from /api/complete: arrows move, Enter/Tab take, Esc closes.
  function completion() {
    const input = document.getElementById('filter');
    const list = document.getElementById('completion');
    let items = [];
    let at = -1;
    let answer = null;
    let t = null;
    const close = () => { list.hidden = true; input.setAttribute('aria-expanded', 'false'); at = -1; };
    const paint = () => {
      list.replaceChildren(...items.map((it, i) => el('li', {
        role: 'option', id: 'cpl-' + i, 'aria-selected': i === at ? 'true' : 'false',
        onmousedown: ev => { ev.preventDefault(); take(i); },
      }, it.text, it.detail ? el('span', { class: 'detail' }, it.detail) : null)));
      list.hidden = !items.length;
      input.setAttribute('aria-expanded', items.length ? 'true' : 'false');
      if (at >= 0) input.setAttribute('aria-activedescendant', 'cpl-' + at);
      else input.removeAttribute('aria-activedescendant');
    };
    const take = i => {
      const it = items[i];
      if (!it || !answer) return;
      const v = input.value;
      let text = it.text;
      if (answer.expect === 'value' && !/^[A-Za-z0-9_.:/@+-]+$/.test(text)) text = '"' + text.replace(/["\\]/g, '\\$&') + '"';
      input.value = v.slice(0, answer.start) + text + ' ' + v.slice(answer.end);
      const c = answer.start + text.length + 1;
      input.setSelectionRange(c, c);
      close();
      ask();
    };
    const ask = () => {
      clearTimeout(t);
      t = setTimeout(async () => {
        const r = range();
        try {
          answer = await api('complete', { filter: input.value, cursor: input.selectionStart, from: r.from, to: r.to, limit: 12 }, true);
          items = answer.items || [];
          at = -1;
          if (document.activeElement === input) paint();
        } catch (e) { items = []; close(); }
      }, 150);
    };
    input.addEventListener('input', ask);
    input.addEventListener('focus', ask);
    input.addEventListener('blur', () => setTimeout(close, 100));
    input.addEventListener('keydown', ev => {
      if (list.hidden) return;
      if (ev.key === 'ArrowDown') { at = Math.min(items.length - 1, at + 1); paint(); ev.preventDefault(); }
      else if (ev.key === 'ArrowUp') { at = Math.max(-1, at - 1); paint(); ev.preventDefault(); }
      else if ((ev.key === 'Enter' || ev.key === 'Tab') && at >= 0) { take(at); ev.preventDefault(); }
      else if (ev.key === 'Escape') { close(); ev.preventDefault(); }
    });
  }

  function bars() {
    const nav = document.querySelector('nav a[data-nav="' + document.body.dataset.page + '"]');
    if (nav) nav.setAttribute('aria-current', 'page');
    document.getElementById('preset').addEventListener('change', ev => {
      if (ev.target.value === 'custom') { document.getElementById('from').focus(); return; }
      set({ from: ev.target.value, to: 'now' });
    });
    document.getElementById('range').addEventListener('submit', ev => {
      ev.preventDefault();
      set({ from: document.getElementById('from').value.trim(), to: document.getElementById('to').value.trim() });
    });
    document.getElementById('filterbar').addEventListener('submit', ev => {
      ev.preventDefault();
      set({ filter: document.getElementById('filter').value.trim() });
    });
    completion();
    window.addEventListener('popstate', () => { syncBars(); refresh(); });
  }

  function status() {
    const live = document.getElementById('live');
    if (!live) return;
    const busy = inflight > 0 ? ' · loading…' : '';
    live.textContent = (endsNow() ? 'auto-refresh every ' + REFRESH_MS / 1000 + ' s' : 'fixed range') + busy;
  }

  // Renders now; again every REFRESH_MS while the range ends at now (a
  // refresh never overlaps the previous one).
  async function refresh() {
    clearTimeout(timer);
    const g = ++generation;
    clearFilterError();
    try {
      await render();
      document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
      // The benchmark reads the time to first render from this mark.
      if (!performance.getEntriesByName('flowlens-rendered').length) performance.mark('flowlens-rendered');
    } catch (e) {
      document.getElementById('main').replaceChildren(fail('Could not load this view', e));
    }
    if (g === generation && endsNow()) timer = setTimeout(refresh, REFRESH_MS);
    status();
  }

  // A page starts here: `name` marks the nav, `fn` draws `main`.
  function start(name, fn) {
    document.body.dataset.page = name;
    render = fn;
    bars();
    syncBars();
    refresh();
  }

  return {
    get, set, range, endsNow, shared, api, csvUrl, bytes, rate, total, num, time, duration, micros,
    el, link, endpoint, table, notices, fail, chart, slot, timeSeriesOption, start, refresh,
  };
})();
