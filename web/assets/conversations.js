// Conversations: both ends' attribution on every row, a c→s / s→c bar,
// sortable, paginated, the filtered totals, CSV export; auto-refreshing while
// the range ends at now.
'use strict';

const SORTS = ['bytes', 'bytes_c2s', 'bytes_s2c', 'packets', 'packets_c2s', 'packets_s2c', 'duration', 'first_seen', 'last_seen', 'records',
  'rtt', 'rtt_max', 'connect', 'retransmits', 'resets', 'errors', 'dns_latency'];
const SIZES = [25, 50, 100, 250, 1000];

function end(e) {
  const who = [];
  if (e.user !== null || e.uid !== null) who.push(FL.link('user', e.user !== null ? e.user : String(e.uid)));
  if (e.process) who.push(FL.link('process', e.process), e.pid !== null ? ' (' + e.pid + ')' : '');
  if (e.container) who.push(FL.link('container', e.container));
  const parts = [];
  for (const w of who) {
    if (parts.length && typeof w !== 'string') parts.push(' · ');
    parts.push(w);
  }
  const nat = e.nat_addr ? ' (NAT ' + e.nat_addr + (e.nat_port !== null && e.nat_port !== undefined ? ':' + e.nat_port : '') + ')' : '';
  return FL.el('div', { class: 'end' },
    FL.endpoint(e), nat,
    parts.length ? FL.el('div', { class: 'who' }, parts) : null);
}

// RTT: the mean over the range, min–max on hover.
function rtt(r) {
  if (r.rtt_avg_us === null) return '—';
  return FL.el('span', { class: 'rtt', title: 'min ' + FL.micros(r.rtt_min_us) + ' · max ' + FL.micros(r.rtt_max_us), dataset: { v: r.rtt_avg_us } },
    FL.micros(r.rtt_avg_us));
}

// Connect: the latency, or the failure (refused, timeout, unreachable, reset).
function connect(r) {
  if (r.connect_error) return FL.el('span', { class: 'bad connect-error' }, r.connect_error);
  return r.connect_us === null ? '—' : FL.el('span', { class: 'connect', dataset: { v: r.connect_us } }, FL.micros(r.connect_us));
}

function count(cls, v, title) {
  return FL.el('span', { class: cls + (v > 0 ? ' bad' : ''), title, dataset: { v } }, FL.num(v));
}

function split(r) {
  const t = r.bytes_c2s + r.bytes_s2c;
  const c = t ? (100 * r.bytes_c2s) / t : 50;
  const a = FL.el('span', { class: 'c2s' });
  const b = FL.el('span', { class: 's2c' });
  a.style.width = c + '%';
  b.style.width = 100 - c + '%';
  return FL.el('div', { class: 'split', title: 'client→server ' + c.toFixed(0) + '%', role: 'img', 'aria-label': 'client to server ' + c.toFixed(0) + '%' }, a, b);
}

FL.start('conversations', async () => {
  const sort = SORTS.includes(FL.get('sort')) ? FL.get('sort') : 'bytes';
  const order = FL.get('order') === 'asc' ? 'asc' : 'desc';
  const limit = SIZES.includes(Number(FL.get('limit'))) ? Number(FL.get('limit')) : 100;
  const offset = Math.max(0, Number(FL.get('offset', 0)) || 0);
  const c = await FL.api('conversations', { sort, order, limit, offset });
  const onSort = key => FL.set({ sort: key, order: key === sort && order === 'desc' ? 'asc' : 'desc', offset: null });
  const t = c.totals;
  const last = Math.min(offset + c.rows.length, c.total_rows);
  const pager = FL.el('div', { class: 'pager' },
    FL.el('button', { type: 'button', disabled: offset === 0, onclick: () => FL.set({ offset: Math.max(0, offset - limit) || null }) }, '← Previous'),
    FL.el('span', { id: 'range-of' }, c.total_rows ? (offset + 1) + '–' + last + ' of ' + FL.num(c.total_rows) : '0 conversations'),
    FL.el('button', { type: 'button', disabled: last >= c.total_rows, onclick: () => FL.set({ offset: offset + limit }) }, 'Next →'),
    FL.el('label', {}, 'Rows ', FL.el('select', { id: 'limit', onchange: ev => FL.set({ limit: ev.target.value, offset: null }) },
      SIZES.map(s => FL.el('option', { value: s, selected: s === limit }, s)))),
    FL.el('a', { href: FL.csvUrl('conversations', { sort, order }), download: 'flowlens-conversations.csv', id: 'csv' }, 'Export CSV'));
  document.getElementById('main').replaceChildren(
    FL.el('h1', {}, 'Conversations'),
    pager,
    FL.table({
      id: 'conversations',
      sort: { key: sort, order },
      onSort,
      cols: [
        { title: 'proto', cell: r => r.proto },
        { title: 'client', cell: r => end(r.client) },
        { title: 'server', cell: r => end(r.server) },
        { title: 'c→s / s→c', cell: r => split(r) },
        { title: 'bytes', num: true, sort: 'bytes', cell: r => FL.bytes(r.bytes_c2s + r.bytes_s2c) },
        { title: 'c→s', num: true, sort: 'bytes_c2s', cell: r => FL.el('span', { class: 'c2s-bytes', dataset: { v: r.bytes_c2s } }, FL.bytes(r.bytes_c2s)) },
        { title: 's→c', num: true, sort: 'bytes_s2c', cell: r => FL.el('span', { class: 's2c-bytes', dataset: { v: r.bytes_s2c } }, FL.bytes(r.bytes_s2c)) },
        { title: 'packets', num: true, sort: 'packets', cell: r => FL.num(r.packets_c2s + r.packets_s2c) },
        { title: 'duration', num: true, sort: 'duration', cell: r => FL.duration(r.duration_ms) },
        { title: 'RTT', num: true, sort: 'rtt', cell: rtt },
        { title: 'connect', num: true, sort: 'connect', cell: connect },
        { title: 'retrans', num: true, sort: 'retransmits', cell: r => count('retransmits', r.retransmits_c2s + r.retransmits_s2c, 'c→s ' + r.retransmits_c2s + ' · s→c ' + r.retransmits_s2c) },
        { title: 'resets', num: true, sort: 'resets', cell: r => count('resets', r.resets_c2s + r.resets_s2c, 'c→s ' + r.resets_c2s + ' · s→c ' + r.resets_s2c) },
        { title: 'errors', num: true, sort: 'errors', cell: r => count('errors', r.errors, r.dns_errors ? 'DNS errors ' + r.dns_errors : null) },
        { title: 'last seen', sort: 'last_seen', cell: r => r.last_seen.replace('T', ' ').replace(/\.\d+Z$/, 'Z') },
      ],
      rows: c.rows,
      foot: ['total', FL.num(t.conversations) + ' conversations', FL.num(t.records) + ' records', '',
        FL.el('span', { id: 'total-bytes', dataset: { v: t.bytes_c2s + t.bytes_s2c } }, FL.bytes(t.bytes_c2s + t.bytes_s2c)),
        FL.el('span', { id: 'total-c2s', dataset: { v: t.bytes_c2s } }, FL.bytes(t.bytes_c2s)),
        FL.el('span', { id: 'total-s2c', dataset: { v: t.bytes_s2c } }, FL.bytes(t.bytes_s2c)),
        FL.num(t.packets_c2s + t.packets_s2c), '', '', '',
        FL.el('span', { id: 'total-connect-errors' }, FL.num(t.connect_errors) + ' failed'),
        FL.el('span', { id: 'total-retransmits' }, FL.num(t.retransmits)),
        FL.el('span', { id: 'total-resets' }, FL.num(t.resets)), '', ''],
      empty: 'No conversations match.',
    }));
  FL.notices(c.notices);
});
