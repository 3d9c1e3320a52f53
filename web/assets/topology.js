// Topology: hosts, containers, processes and remote ends with the bytes
// between them. Expand a host into containers and a container into
// processes; click a node to select it (expand, filter to it, open its page).
// Readable at 200 nodes: force layout computed before drawing, labels on the
// heaviest nodes only, top-N edges, colours by kind.
'use strict';

const KIND_ORDER = ['host', 'container', 'process', 'remote'];
const EDGE_CHOICES = [25, 50, 100, 200, 500];

const q = s => '"' + String(s).replace(/["\\]/g, '\\$&') + '"';

// The filter that selects a node's traffic.
function nodeFilter(n) {
  const id = n.id;
  const body = id.slice(id.indexOf(':') + 1);
  if (n.kind === 'host') return 'host = ' + q(body);
  if (n.kind === 'remote') return 'addr = ' + q(body);
  const parts = body.split('/');
  if (n.kind === 'container') return 'host = ' + q(parts[0]) + ' AND container = ' + q(parts.slice(1).join('/'));
  if (n.kind === 'process') return 'host = ' + q(parts[0]) + ' AND container = ' + q(parts[1]) + ' AND process = ' + q(parts.slice(2).join('/'));
  return '';
}

function nodePage(n) {
  const body = n.id.slice(n.id.indexOf(':') + 1);
  const parts = body.split('/');
  const name = n.kind === 'container' ? parts.slice(1).join('/') : n.kind === 'process' ? parts.slice(2).join('/') : body;
  return FL.link(n.kind, name, 'page');
}

function expanded() {
  return FL.get('expand', '').split(',').filter(Boolean);
}

function toggle(id) {
  const e = expanded();
  const i = e.indexOf(id);
  if (i >= 0) e.splice(i, 1);
  else e.push(id);
  FL.set({ expand: e.join(',') || null });
}

function addFilter(f) {
  const cur = FL.get('filter', '');
  FL.set({ filter: cur ? '(' + cur + ') AND ' + f : f, expand: FL.get('expand', null) });
}

FL.start('topology', async () => {
  const edges = EDGE_CHOICES.includes(Number(FL.get('edges'))) ? Number(FL.get('edges')) : 100;
  const g = await FL.api('topology', { expand: FL.get('expand', ''), edges });
  const byId = new Map(g.nodes.map(n => [n.id, n]));
  const max = Math.max(1, ...g.nodes.map(n => n.value));
  const labelled = new Set([...g.nodes].sort((a, b) => b.value - a.value).slice(0, 40).map(n => n.id));
  const node = FL.slot('graph', 'tall');
  node.setAttribute('aria-label', 'Topology graph; the lists beside it hold the same nodes and edges');
  const selected = FL.get('node', '');
  const sel = byId.get(selected);
  const nodeRow = n => FL.el('tr', { dataset: { id: n.id } },
    FL.el('td', {}, FL.el('button', { type: 'button', class: 'pick', onclick: () => FL.set({ node: n.id }, false) }, n.label),
      FL.el('div', { class: 'muted' }, n.kind + (n.expanded ? ' (expanded)' : ''))),
    FL.el('td', { class: 'num' }, FL.bytes(n.value)),
    FL.el('td', {}, n.expandable ? FL.el('button', { type: 'button', class: 'expand', dataset: { id: n.id }, onclick: () => toggle(n.id) }, n.expanded ? 'Collapse' : 'Expand') : null,
      ' ', FL.el('button', { type: 'button', class: 'filter', onclick: () => addFilter(nodeFilter(n)) }, 'Filter'),
      ' ', nodePage(n)));
  const label = id => (byId.get(id) ? byId.get(id).label : id);
  const edgeRows = [...g.edges].sort((a, b) => b.value - a.value);
  document.getElementById('main').replaceChildren(
    FL.el('h1', {}, 'Topology'),
    FL.el('div', { class: 'controls' },
      FL.el('label', {}, 'Edges ', FL.el('select', { id: 'edges', onchange: ev => FL.set({ edges: ev.target.value }) },
        EDGE_CHOICES.map(c => FL.el('option', { value: c, selected: c === edges }, 'top ' + c)))),
      FL.el('span', { class: 'muted' }, g.nodes.length + ' nodes, ' + g.edges.length + ' of ' + g.edges_total + ' edges'),
      expanded().length ? FL.el('button', { type: 'button', onclick: () => FL.set({ expand: null }) }, 'Collapse all') : null),
    FL.el('div', { class: 'topo' },
      node,
      FL.el('div', { class: 'side' },
        sel ? FL.el('section', { class: 'card', id: 'selected' }, FL.el('h2', {}, sel.kind + ' ' + sel.label),
          FL.el('p', {}, FL.bytes(sel.value), ' · ', nodePage(sel))) : null,
        FL.el('h2', {}, 'Nodes'),
        FL.el('table', { id: 'nodes' }, FL.el('tbody', {}, [...g.nodes].sort((a, b) =>
          KIND_ORDER.indexOf(a.kind) - KIND_ORDER.indexOf(b.kind) || b.value - a.value).map(nodeRow))),
        FL.el('h2', {}, 'Edges'),
        FL.table({
          id: 'edge-list',
          cols: [
            { title: 'between', cell: e => FL.el('span', { class: 'edge', dataset: { source: e.source, target: e.target, forward: e.forward, backward: e.backward } }, label(e.source) + ' ↔ ' + label(e.target)) },
            { title: '→', num: true, cell: e => FL.bytes(e.forward) },
            { title: '←', num: true, cell: e => FL.bytes(e.backward) },
          ],
          rows: edgeRows.slice(0, 100),
        }))));
  const emax = Math.max(1, ...g.edges.map(e => e.value));
  const big = g.nodes.length > 80;
  const c = FL.chart(node, {
    tooltip: { trigger: 'item', formatter: p => p.dataType === 'edge'
      ? label(p.data.source) + ' → ' + label(p.data.target) + ': ' + FL.bytes(p.data.forward) + '\n' + label(p.data.target) + ' → ' + label(p.data.source) + ': ' + FL.bytes(p.data.backward)
      : p.data.kind + ' ' + p.data.name + ': ' + FL.bytes(p.data.value) },
    legend: { data: KIND_ORDER, bottom: 0 },
    series: [{
      type: 'graph', layout: 'force', roam: true, draggable: true,
      categories: KIND_ORDER.map(k => ({ name: k })),
      force: { repulsion: big ? 60 : 220, edgeLength: big ? [20, 80] : [60, 180], gravity: big ? 0.15 : 0.08, layoutAnimation: false, friction: 0.2 },
      labelLayout: { hideOverlap: true },
      emphasis: { focus: 'adjacency' },
      lineStyle: { color: 'source', curveness: 0.08, opacity: 0.6 },
      data: g.nodes.map(n => ({
        id: n.id, name: n.label, kind: n.kind, value: n.value,
        category: KIND_ORDER.indexOf(n.kind),
        symbolSize: 8 + 30 * Math.sqrt(n.value / max),
        label: { show: labelled.has(n.id) || n.id === selected, position: 'right' },
        itemStyle: n.id === selected ? { borderColor: '#000', borderWidth: 2 } : undefined,
      })),
      links: g.edges.map(e => ({ source: e.source, target: e.target, value: e.value, forward: e.forward, backward: e.backward,
        lineStyle: { width: 1 + 6 * Math.sqrt(e.value / emax) } })),
    }],
  });
  c.off('click');
  c.on('click', p => {
    if (p.dataType !== 'node') return;
    const n = byId.get(p.data.id);
    if (n && n.expandable) toggle(n.id);
    else if (n) FL.set({ node: n.id }, false);
  });
  FL.notices(g.notices);
});
