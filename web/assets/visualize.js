// Visualize: the API's time series and sankey with dimension pickers, top N,
// unit, graph type (stacked, lines, sankey), bidirectional view and the
// previous period as an overlay; the top table below.
'use strict';

const DIMS = ['container', 'process', 'user', 'host', 'peer', 'proto', 'server_port', 'direction', 'role'];
const CHARTS = ['stacked', 'lines', 'sankey'];
const UNITS = ['bytes', 'packets', 'conversations'];
const TOPS = [5, 10, 20, 50];

// The previous period: the same length, just before.
function previous(q) {
  const len = q.to_ms - q.from_ms;
  return { from: new Date(q.from_ms - len).toISOString(), to: new Date(q.from_ms).toISOString() };
}

function picker(id, label, value, options, onchange) {
  return FL.el('label', {}, label + ' ', FL.el('select', { id, onchange: ev => onchange(ev.target.value) },
    options.map(o => FL.el('option', { value: o, selected: String(o) === String(value) }, o === '' ? '—' : o))));
}

FL.start('visualize', async () => {
  const chart = CHARTS.includes(FL.get('chart')) ? FL.get('chart') : 'stacked';
  const sankey = chart === 'sankey';
  let dims = FL.get('dims', sankey ? 'container,peer' : 'container').split(',').filter(d => DIMS.includes(d)).slice(0, 3);
  if (sankey && dims.length < 2) dims = dims.concat(['peer', 'container'].filter(d => !dims.includes(d))).slice(0, 2);
  const top = TOPS.includes(Number(FL.get('top'))) ? Number(FL.get('top')) : 10;
  const unit = UNITS.includes(FL.get('unit')) ? FL.get('unit') : 'bytes';
  const bidi = FL.get('bidi') === '1' && !dims.includes('direction');
  const prev = FL.get('prev') === '1' && !sankey;
  const setDim = (i, v) => {
    const d = dims.slice();
    if (v) d[i] = v;
    else d.splice(i, 1);
    FL.set({ dims: d.filter((x, j) => x && d.indexOf(x) === j).join(',') });
  };
  const controls = FL.el('div', { class: 'controls' },
    [0, 1, 2].map(i => picker('dim' + i, 'Dimension ' + (i + 1), dims[i] || '', (i === 0 ? [] : ['']).concat(DIMS), v => setDim(i, v))),
    picker('top', 'Top', top, TOPS, v => FL.set({ top: v })),
    picker('unit', 'Unit', unit, UNITS, v => FL.set({ unit: v })),
    picker('chart', 'Graph', chart, CHARTS, v => FL.set({ chart: v })),
    FL.el('label', {}, FL.el('input', { type: 'checkbox', id: 'bidi', checked: bidi, disabled: sankey, onchange: ev => FL.set({ bidi: ev.target.checked ? 1 : null }) }), ' bidirectional'),
    FL.el('label', {}, FL.el('input', { type: 'checkbox', id: 'prev', checked: prev, disabled: sankey, onchange: ev => FL.set({ prev: ev.target.checked ? 1 : null }) }), ' previous period'));
  const node = FL.slot('visual', 'tall');
  const main = document.getElementById('main');
  const topAns = await FL.api('top', { dims: dims.join(','), top, unit });
  const tableNode = FL.table({
    id: 'top-table',
    cols: dims.map(d => ({ title: d, cell: r => FL.link(d, r.dims[d], r.dims[d] === null ? '(none)' : String(r.dims[d])) })).concat([
      { title: 'direction', cell: r => r.direction || '' },
      { title: 'total', num: true, cell: r => FL.total(r.total, topAns.total_unit || unit) },
      { title: 'avg', num: true, cell: r => FL.rate(r.avg, topAns.unit) },
      { title: 'p95', num: true, cell: r => FL.rate(r.p95, topAns.unit) },
      { title: 'max', num: true, cell: r => FL.rate(r.max, topAns.unit) },
      { title: '%', num: true, cell: r => r.percent.toFixed(1) },
    ]),
    rows: topAns.rows,
    foot: dims.map((d, i) => (i === 0 ? 'total' : '')).concat(['', FL.total(topAns.totals.total, topAns.total_unit || unit), '', '', '', '100']),
  });
  main.replaceChildren(FL.el('h1', {}, 'Visualize'), controls, node, FL.el('h2', {}, 'Top ' + top), tableNode);
  node.setAttribute('aria-label', (sankey ? 'Sankey of ' : 'Traffic over time by ') + dims.join(', '));
  if (sankey) {
    const s = await FL.api('sankey', { dims: dims.join(','), top, unit });
    FL.chart(node, {
      tooltip: { trigger: 'item', valueFormatter: v => FL.total(v, unit === 'bytes' ? 'bytes' : unit) },
      series: [{ type: 'sankey', emphasis: { focus: 'adjacency' }, nodeGap: 6, layoutIterations: 16,
        data: s.nodes.map(n => ({ name: n.name, depth: n.depth })), links: s.links,
        label: { formatter: p => p.name.replace(/^[a-z_]+: /, '') } }],
    });
    FL.notices(s.notices);
    return;
  }
  const s = await FL.api('series', { dims: dims.join(','), top, unit, points: 200, bidirectional: bidi ? 'true' : null });
  const extra = [];
  if (prev) {
    const p = previous(s.query);
    const ps = await FL.api('series', { dims: '', unit, points: 200, from: p.from, to: p.to, bidirectional: bidi ? 'true' : null });
    const shift = s.query.from_ms - ps.query.from_ms;
    for (const x of ps.series) {
      extra.push({ name: 'previous period' + (x.direction ? ' (' + x.direction + ')' : ''), type: 'line', showSymbol: false,
        lineStyle: { type: 'dashed', width: 1.5, color: '#555' }, itemStyle: { color: '#555' },
        data: x.data.map(([t, v]) => [t + shift, v]) });
    }
  }
  FL.chart(node, FL.timeSeriesOption(s, { stacked: chart === 'stacked', extra }));
  FL.notices(s.notices);
});
