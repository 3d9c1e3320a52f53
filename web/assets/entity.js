// An entity's page: /container/<name>, /process/<name>, /user/<name>,
// /remote/<address>, /host/<name> — its traffic in and out, peers, ports,
// processes, users and largest conversations; every name links on.
'use strict';

function endCell(e) {
  if (!e) return '—';
  const who = [];
  if (e.user !== null || e.uid !== null) who.push(FL.link('user', e.user !== null ? e.user : String(e.uid)));
  if (e.process) who.push(FL.link('process', e.process));
  if (e.container) who.push(FL.link('container', e.container));
  const parts = [];
  who.forEach((w, i) => { if (i) parts.push(' · '); parts.push(w); });
  return FL.el('div', { class: 'end' },
    FL.endpoint(e),
    parts.length ? FL.el('div', { class: 'who' }, parts) : null);
}

const TABLES = { peers: 'peer', ports: 'server_port', processes: 'process', users: 'user', containers: 'container', hosts: 'host' };

FL.start('entity', async () => {
  const m = location.pathname.match(/^\/(container|process|user|remote|host)\/(.+)$/);
  if (!m) throw new Error('no such page');
  const kind = m[1];
  const name = decodeURIComponent(m[2]);
  document.title = 'flowlens: ' + kind + ' ' + name;
  const e = await FL.api('entity', { kind, name, points: 120, top: 10 });
  const node = FL.slot('entity-traffic');
  node.setAttribute('aria-label', 'Traffic of ' + name);
  const tables = Object.entries(e.tables || {}).map(([t, v]) => {
    const dim = TABLES[t] || t;
    return FL.el('section', { class: 'card' }, FL.el('h2', {}, t),
      FL.table({
        id: 'entity-' + t,
        cols: [
          { title: dim, cell: r => FL.link(dim, r.dims[dim], r.name) },
          { title: 'bytes', num: true, cell: r => FL.bytes(r.total) },
          { title: '%', num: true, cell: r => r.percent.toFixed(1) },
        ],
        rows: v.rows,
      }));
  });
  const filterKey = { container: 'container', process: 'process', user: 'user', host: 'host', remote: 'peer' }[kind];
  const convFilter = kind === 'remote' ? 'addr = "' + name + '"' : filterKey + ' = "' + name.replace(/["\\]/g, '\\$&') + '"';
  const r = FL.range();
  const convLink = '/conversations?' + new URLSearchParams({ from: r.from, to: r.to, filter: convFilter });
  const topoLink = '/topology?' + new URLSearchParams({ from: r.from, to: r.to, filter: convFilter });
  document.getElementById('main').replaceChildren(
    FL.el('h1', {}, kind + ' ', FL.el('span', { id: 'entity-name' }, name)),
    FL.el('div', { class: 'cards' },
      FL.el('div', { class: 'card stat' }, FL.bytes(e.totals.bytes), FL.el('small', {}, 'total')),
      FL.el('div', { class: 'card stat' }, FL.bytes(e.totals.bytes_out), FL.el('small', {}, 'sent')),
      FL.el('div', { class: 'card stat' }, FL.bytes(e.totals.bytes_in), FL.el('small', {}, 'received'))),
    FL.el('p', {}, FL.el('a', { href: convLink }, 'All its conversations'), ' · ', FL.el('a', { href: topoLink }, 'Its topology')),
    node,
    FL.el('div', { class: 'grid' }, tables),
    FL.el('h2', {}, 'Largest conversations'),
    FL.table({
      id: 'entity-conversations',
      cols: [
        { title: 'proto', cell: c => c.proto },
        { title: 'client', cell: c => endCell(c.client) },
        { title: 'server', cell: c => endCell(c.server) },
        { title: 'bytes c→s', num: true, cell: c => FL.bytes(c.bytes_c2s) },
        { title: 'bytes s→c', num: true, cell: c => FL.bytes(c.bytes_s2c) },
        { title: 'RTT', num: true, cell: c => FL.micros(c.rtt_avg_us) },
        { title: 'errors', num: true, cell: c => c.connect_error ? FL.el('span', { class: 'bad' }, c.connect_error) : FL.num(c.errors) },
        { title: 'last seen', cell: c => c.last_seen },
      ],
      rows: (e.conversations && e.conversations.rows) || [],
    }));
  FL.chart(node, FL.timeSeriesOption(e, { stacked: false }));
  FL.notices(e.notices);
});
