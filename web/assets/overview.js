// Overview: traffic over time stacked by container / process / user / host,
// top talkers, protocol mix, the live rate and the collector's health.
'use strict';

const BY = ['container', 'process', 'user', 'host'];

function topTable(kind, ans, id) {
  return FL.table({
    id,
    cols: [
      { title: kind, cell: r => FL.link(kind, r.dims[kind], r.name) },
      { title: 'bytes', num: true, cell: r => FL.bytes(r.total) },
      { title: 'avg', num: true, cell: r => FL.rate(r.avg, 'bytes/s') },
      { title: '%', num: true, cell: r => r.percent.toFixed(1) },
    ],
    rows: ans.rows,
  });
}

// The conversations that go worst: slowest by mean RTT, most errors (retransmits, resets, failed
// connects, DNS errors); each end named as in the conversation list.
function worstTable(id, ans, keep, value) {
  const end = e => FL.el('div', { class: 'end' }, FL.endpoint(e),
    e.process ? FL.el('div', { class: 'who' }, FL.link('process', e.process)) : null);
  return FL.table({
    id,
    cols: [
      { title: 'client', cell: r => end(r.client) },
      { title: 'server', cell: r => end(r.server) },
      value,
    ],
    rows: ans.rows.filter(keep),
    empty: 'Nothing in this range.',
  });
}

function health(h) {
  const lost = h.losses.filter(l => l.value > 0);
  const total = h.losses.reduce((a, l) => a + (Number(l.value) || 0), 0);
  const metric = name => (h.metrics.find(m => m.name === name) || {}).value;
  return FL.el('div', { id: 'health' },
    FL.el('p', {}, FL.el('span', { class: total > 0 ? 'bad' : 'lossok' },
      total > 0 ? FL.num(total) + ' lost' : 'nothing lost'),
      ' · records exported ', FL.num(metric('flowlens_records_exported') || 0),
      ' · store ', h.store.kind),
    lost.length ? FL.table({
      cols: [
        { title: 'loss counter', cell: l => l.metric },
        { title: 'count', num: true, cell: l => FL.num(l.value) },
        { title: 'meaning', cell: l => l.help || '' },
      ],
      rows: lost,
    }) : null);
}

FL.start('overview', async () => {
  const by = BY.includes(FL.get('by')) ? FL.get('by') : 'container';
  const [series, containers, processes, users, protos, h] = await Promise.all([
    FL.api('series', { dims: by, top: 10, points: 120 }),
    FL.api('top', { dims: 'container', top: 10 }),
    FL.api('top', { dims: 'process', top: 10 }),
    FL.api('top', { dims: 'user', top: 10 }),
    FL.api('top', { dims: 'proto', top: 10 }),
    FL.api('health', Object.assign(FL.range(), { points: 2 }), true).catch(e => ({ error: e })),
  ]);
  const [slowest, failing] = await Promise.all([
    FL.api('conversations', { sort: 'rtt', order: 'desc', limit: 10 }),
    FL.api('conversations', { sort: 'errors', order: 'desc', limit: 10 }),
  ]);
  // The live rate: the last complete bucket of the whole.
  const n = series.times.length;
  const i = Math.max(0, n - 2);
  const now = series.series.reduce((a, s) => a + (s.data[i] ? s.data[i][1] : 0), 0);
  const seg = FL.el('div', { class: 'seg', role: 'group', 'aria-label': 'Stack by' },
    BY.map(b => FL.el('button', { type: 'button', 'aria-pressed': b === by ? 'true' : 'false', onclick: () => FL.set({ by: b }) }, b)));
  const main = document.getElementById('main');
  const chartNode = FL.slot('traffic');
  const protoNode = FL.slot('protocols', 'small');
  const top = containers.rows[0];
  const topProc = processes.rows[0];
  main.replaceChildren(
    FL.el('h1', {}, 'Overview'),
    FL.el('div', { class: 'cards' },
      FL.el('div', { class: 'card stat', id: 'rate' }, FL.rate(now, series.unit), FL.el('small', {}, 'live rate (last ' + series.query.step_s + ' s)')),
      FL.el('div', { class: 'card stat' }, FL.bytes(series.totals.total), FL.el('small', {}, 'in this range (' + FL.bytes(series.totals.out) + ' sent, ' + FL.bytes(series.totals.in) + ' received)')),
      FL.el('div', { class: 'card stat', id: 'top-container' }, top ? FL.link('container', top.dims.container, top.name) : '—', FL.el('small', {}, 'top container')),
      FL.el('div', { class: 'card stat', id: 'top-process' }, topProc ? FL.link('process', topProc.dims.process, topProc.name) : '—', FL.el('small', {}, 'top process'))),
    FL.el('div', { class: 'controls' }, FL.el('h2', {}, 'Traffic by ' + by), seg),
    chartNode,
    FL.el('div', { class: 'grid' },
      FL.el('section', { class: 'card' }, FL.el('h2', {}, 'Top containers'), topTable('container', containers, 'top-containers')),
      FL.el('section', { class: 'card' }, FL.el('h2', {}, 'Top processes'), topTable('process', processes, 'top-processes')),
      FL.el('section', { class: 'card' }, FL.el('h2', {}, 'Top users'), topTable('user', users, 'top-users')),
      FL.el('section', { class: 'card' }, FL.el('h2', {}, 'Protocols'), protoNode, topTable('proto', protos, 'protocols-table')),
      FL.el('section', { class: 'card' }, FL.el('h2', {}, 'Slowest'),
        worstTable('slowest', slowest, r => r.rtt_avg_us !== null,
          { title: 'RTT', num: true, cell: r => FL.el('span', { class: 'rtt', title: 'max ' + FL.micros(r.rtt_max_us), dataset: { v: r.rtt_avg_us } }, FL.micros(r.rtt_avg_us)) })),
      FL.el('section', { class: 'card' }, FL.el('h2', {}, 'Most errors'),
        worstTable('most-errors', failing, r => r.errors > 0,
          { title: 'errors', num: true, cell: r => FL.el('span', { class: 'errors', dataset: { v: r.errors } }, FL.num(r.errors), r.connect_error ? ' (' + r.connect_error + ')' : '') })),
      FL.el('section', { class: 'card' }, FL.el('h2', {}, 'Collector health'),
        h.error ? FL.fail('health', h.error) : health(h))));
  chartNode.setAttribute('aria-label', 'Traffic over time by ' + by);
  FL.chart(chartNode, FL.timeSeriesOption(series));
  protoNode.setAttribute('aria-label', 'Protocol mix');
  FL.chart(protoNode, {
    tooltip: { trigger: 'item', valueFormatter: v => FL.bytes(v) },
    series: [{ type: 'pie', radius: ['40%', '70%'], data: protos.rows.map(r => ({ name: r.name, value: r.total })) }],
  });
  FL.notices(series.notices);
});
