// coldtail live page: routes, tail and cold traces, pipelines. Plain ES2020, no dependencies.
'use strict';
(() => {
  const SVGNS = 'http://www.w3.org/2000/svg';
  const DASH = '–';
  const POLL_MS = 2000;
  const REASONS = ['cold', 'p95', 'p99', 'error'];
  const $ = (id) => document.getElementById(id);

  // --- DOM helpers

  function el(ns, tag, attrs, kids) {
    const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat(4)) {
      if (kid != null && kid !== false) e.append(kid instanceof Node ? kid : String(kid));
    }
    return e;
  }
  const h = (tag, attrs, ...kids) => el(null, tag, attrs, kids);
  const s = (tag, attrs, ...kids) => el(SVGNS, tag, attrs, kids);

  // Rebuilding a container loses keyboard focus; put it back on the element with the same key.
  function keepFocus(render) {
    const key = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.focus : null;
    render();
    if (key) {
      const again = document.querySelector(`[data-focus="${CSS.escape(key)}"]`);
      if (again && again !== document.activeElement) again.focus({ preventScroll: true });
    }
  }

  // --- formatting

  // Three significant digits, never an exponent: 12.1, 88.0, 1320, 12300.
  function fmtMs(v) {
    if (v == null || !Number.isFinite(v)) return DASH;
    const p = Number(v.toPrecision(3));
    return Math.abs(p) >= 1000 ? String(p) : v.toPrecision(3);
  }
  function fmtDur(ms) {
    if (ms == null || !Number.isFinite(ms)) return DASH;
    return ms < 1000 ? `${fmtMs(ms)} ms` : `${fmtMs(ms / 1000)} s`;
  }
  const fmtRate = (r) => (r == null || !Number.isFinite(r) ? DASH : `${(r * 100).toFixed(1)}%`);
  const fmtInt = (n) => (n == null ? DASH : String(n));
  const fmtCount = (n) => (n == null ? DASH : Number(n).toLocaleString('en-US'));
  function fmtWindow(sec) {
    if (!sec) return '';
    if (sec % 3600 === 0) return `${sec / 3600} h`;
    if (sec % 60 === 0) return `${sec / 60} min`;
    return `${Math.round(sec)} s`;
  }
  // Server time now: the browser's clock corrected by the last summary's generated_at_ms.
  let skewMs = 0;
  function fmtAgo(unixMs) {
    const sec = Math.max(0, (Date.now() + skewMs - unixMs) / 1000);
    if (sec < 60) return `${Math.floor(sec)} s ago`;
    if (sec < 3600) return `${Math.floor(sec / 60)} min ago`;
    return `${Math.floor(sec / 3600)} h ago`;
  }
  const fmtClock = (unixMs) => new Date(unixMs).toLocaleTimeString([], { hour12: false });
  // Axis labels: 500 -> "500", 2000 -> "2 s".
  const fmtAxis = (ms) => (ms >= 1000 ? `${+(ms / 1000).toPrecision(3)} s` : `${+ms.toPrecision(3)}`);

  // A "nice" step (1, 2 or 5 times a power of ten) giving about `n` ticks over `span`.
  function niceStep(span, n) {
    const raw = span / Math.max(1, n);
    const mag = 10 ** Math.floor(Math.log10(raw || 1));
    const f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  }

  // Ticks for a square-root axis up to at least `max`: 0, then squares of a nice step.
  function sqrtTicks(max) {
    const root = Math.sqrt(max);
    const step = niceStep(root, 5);
    const top = Math.max(1, Math.ceil(root / step)) * step;
    const out = [0];
    for (let r = step; r <= top + 1e-9; r += step) {
      const v = Math.round(r * r);
      if (v > out[out.length - 1]) out.push(v);
    }
    return out;
  }

  function badge(reason) {
    return h('span', { class: `badge r-${reason}` }, reason);
  }
  const byReason = (a, b) => REASONS.indexOf(a) - REASONS.indexOf(b);

  // --- state

  const S = {
    summary: null,
    summarySig: '',
    sort: { key: 'requests', dir: -1 },
    expanded: new Set(),
    charts: new Map(), // expanded row key -> {sig, svg}
    services: new Map(), // service -> {root, head, tbody, wrap}
    traces: [],
    tracesSig: '',
    selected: null, // trace id
    selectedTrace: null, // its last known content, kept when it leaves the list
    autoSelected: false,
    detailSig: '',
    filter: 'all',
    pipesSig: '',
    lastSse: 0,
    lastOk: 0,
    started: Date.now(),
  };
  const rowKey = (service, route) => `${service}\u241f${route}`;

  // --- routes

  const q = (obj, k) => (obj ? obj[k] : null);
  const COLS = [
    { key: 'route', label: 'Route', get: (r) => r.route, text: true },
    { key: 'requests', label: 'Requests', get: (r) => r.requests, fmt: fmtInt },
    { key: 'cold_rate', label: 'Cold rate', get: (r) => r.cold_rate, fmt: fmtRate },
    { key: 'errors', label: 'Errors', get: (r) => r.errors, fmt: fmtInt },
    { key: 'warm_p50', group: 'warm', label: 'p50', get: (r) => q(r.warm, 'p50'), sep: 1 },
    { key: 'warm_p95', group: 'warm', label: 'p95', get: (r) => q(r.warm, 'p95'), tail: 1 },
    { key: 'warm_p99', group: 'warm', label: 'p99', get: (r) => q(r.warm, 'p99'), tail: 2 },
    { key: 'cold_p50', group: 'cold', label: 'p50', get: (r) => q(r.cold_latency, 'p50'), sep: 1 },
    { key: 'cold_p95', group: 'cold', label: 'p95', get: (r) => q(r.cold_latency, 'p95'), tail: 1 },
    { key: 'cold_p99', group: 'cold', label: 'p99', get: (r) => q(r.cold_latency, 'p99'), tail: 2 },
    { key: 'init_p50', group: 'init', label: 'p50', get: (r) => q(r.init_ms, 'p50'), sep: 1 },
    { key: 'init_max', group: 'init', label: 'max', get: (r) => q(r.init_ms, 'max') },
  ];
  const GROUPS = { warm: 'Warm latency (ms)', cold: 'Cold-start latency (ms)', init: 'Init (ms)' };

  function sortButton(col) {
    const long = col.group ? `${GROUPS[col.group].replace(' (ms)', '')} ${col.label}` : col.label;
    return h('button', {
      class: 'sort', type: 'button', 'data-sort': col.key, 'data-focus': `sort:${col.key}`,
      title: `Sort by ${long}`, onclick: () => setSort(col.key),
    }, col.label, h('span', { class: 'arrow', 'aria-hidden': 'true' }));
  }

  function tableHead() {
    const top = h('tr');
    const sub = h('tr', { class: 'sub' });
    const seen = new Set();
    for (const col of COLS) {
      const cls = `${col.text ? 'left' : 'num'} ${col.group ? `g-${col.group}` : ''}${col.sep ? ' sep' : ''}`;
      if (!col.group) {
        top.append(h('th', { scope: 'col', rowspan: 2, class: cls, 'data-col': col.key }, sortButton(col)));
        continue;
      }
      if (!seen.has(col.group)) {
        seen.add(col.group);
        const span = COLS.filter((c) => c.group === col.group).length;
        top.append(h('th', { scope: 'colgroup', colspan: span, class: `group sep g-${col.group}` }, GROUPS[col.group]));
      }
      sub.append(h('th', { scope: 'col', class: cls, 'data-col': col.key }, sortButton(col)));
    }
    return h('thead', null, top, sub);
  }

  function setSort(key) {
    const cur = S.sort;
    S.sort = cur.key === key ? { key, dir: -cur.dir } : { key, dir: key === 'route' ? 1 : -1 };
    renderRoutes(true);
  }

  function sortRoutes(routes) {
    const col = COLS.find((c) => c.key === S.sort.key) || COLS[1];
    const dir = S.sort.dir;
    return routes.slice().sort((a, b) => {
      const x = col.get(a);
      const y = col.get(b);
      if (x == null || y == null) return x == null ? (y == null ? 0 : 1) : -1; // nulls last
      if (col.text) return dir * String(x).localeCompare(String(y));
      return dir * (x - y) || a.route.localeCompare(b.route);
    });
  }

  function coldLevel(rate) {
    if (!rate) return 'none';
    if (rate < 0.05) return 'low';
    if (rate < 0.15) return 'mid';
    return 'high';
  }

  function routeRow(service, r) {
    const key = rowKey(service, r.route);
    const open = S.expanded.has(key);
    const id = `d-${hash(key)}`;
    const cells = [
      h('th', { scope: 'row', class: 'left route' },
        h('button', {
          class: 'expand', type: 'button', 'aria-expanded': String(open), 'aria-controls': open ? id : null,
          'data-focus': `row:${key}`, title: open ? 'Hide latency histogram' : 'Show latency histogram',
        }, h('span', { class: 'chev', 'aria-hidden': 'true' }), h('span', { class: 'rname' }, r.route))),
    ];
    for (const col of COLS.slice(1)) {
      const v = col.get(r);
      const cls = ['num'];
      if (col.group) cls.push(`g-${col.group}`);
      if (col.sep) cls.push('sep');
      if (col.tail) cls.push(`tail${col.tail}`);
      if (v == null) cls.push('nil');
      let content;
      let title = null;
      if (col.key === 'cold_rate') {
        content = h('span', { class: `crate c-${coldLevel(v)}` }, fmtRate(v));
        title = `${r.cold} of ${r.requests} requests were cold starts`;
      } else if (col.key === 'errors') {
        if (v > 0) cls.push('err');
        content = fmtInt(v);
        if (r.requests) title = `${fmtRate(v / r.requests)} of requests failed`;
      } else {
        content = col.fmt ? col.fmt(v) : fmtMs(v);
      }
      cells.push(h('td', { class: cls.join(' '), 'data-field': col.key, title }, content));
    }
    return h('tr', {
      class: `route-row${open ? ' open' : ''}`, 'data-route': r.route, 'data-service': service,
      onclick: (e) => {
        if (getSelection().toString()) return; // selecting text is not a click
        toggleRow(key);
      },
    }, cells);
  }

  function hash(str) {
    let x = 5381;
    for (let i = 0; i < str.length; i++) x = ((x << 5) + x + str.charCodeAt(i)) >>> 0;
    return x.toString(36);
  }

  function toggleRow(key) {
    S.charts.delete(key);
    if (S.expanded.has(key)) S.expanded.delete(key);
    else S.expanded.add(key);
    renderRoutes(true);
  }

  function detailRow(service, r, wrap) {
    const key = rowKey(service, r.route);
    const holder = h('div', { class: 'chart' });
    const inner = h('div', { class: 'detail-in' }, holder, routeFacts(r));
    const tr = h('tr', { class: 'detail', id: `d-${hash(key)}`, 'data-detail-for': r.route, 'data-detail-service': service },
      h('td', { colspan: COLS.length }, inner));
    tr._draw = () => {
      inner.style.width = `${Math.max(280, wrap.clientWidth - 2)}px`;
      const width = Math.max(260, holder.clientWidth);
      // Reuse an unchanged chart so a hovered bar keeps its tooltip across updates.
      const sig = JSON.stringify([r.histogram, r.all, r.requests, r.cold, width]);
      const old = S.charts.get(key);
      const svg = old && old.sig === sig ? old.svg : histogram(r, width);
      S.charts.set(key, { sig, svg });
      holder.replaceChildren(svg);
    };
    return tr;
  }

  // Share of cold starts among requests in the bucket holding all.p95 and above.
  function coldTail(r) {
    const hist = r.histogram;
    const p95 = q(r.all, 'p95');
    if (!hist || p95 == null) return null;
    let k = hist.bounds_ms.findIndex((b) => p95 <= b);
    if (k < 0) k = hist.bounds_ms.length;
    let warm = 0;
    let cold = 0;
    for (let i = k; i < hist.warm.length; i++) {
      warm += hist.warm[i] || 0;
      cold += hist.cold[i] || 0;
    }
    return { from: k > 0 ? hist.bounds_ms[k - 1] : 0, cold, total: warm + cold };
  }

  function routeFacts(r) {
    const items = [];
    const fact = (label, value, cls) =>
      items.push(h('div', { class: `fact ${cls || ''}` }, h('dt', null, label), h('dd', null, value)));
    fact('All requests p50 / p95 / p99',
      `${fmtMs(q(r.all, 'p50'))} / ${fmtMs(q(r.all, 'p95'))} / ${fmtMs(q(r.all, 'p99'))} ms`);
    fact('Cold starts', `${r.cold} of ${r.requests} (${fmtRate(r.cold_rate)})`, r.cold ? 'cold' : '');
    const tail = coldTail(r);
    if (tail && tail.total) {
      fact(`Cold share of the tail (> ${fmtAxis(tail.from)}${tail.from < 1000 ? ' ms' : ''})`,
        `${tail.cold} of ${tail.total} (${fmtRate(tail.cold / tail.total)})`, tail.cold ? 'cold' : '');
    }
    const w50 = q(r.warm, 'p50');
    const c50 = q(r.cold_latency, 'p50');
    if (w50 && c50) fact('Cold p50 vs warm p50', `${fmtMs(c50 / w50)}× slower`);
    if (r.init_ms) fact('Init p50 / max', `${fmtDur(r.init_ms.p50)} / ${fmtDur(r.init_ms.max)}`);
    fact('Errors', `${r.errors} (${fmtRate(r.requests ? r.errors / r.requests : null)})`, r.errors ? 'err' : '');
    return h('dl', { class: 'facts' }, items);
  }

  function ensureService(name) {
    let sv = S.services.get(name);
    if (sv) return sv;
    const title = h('h3', null, name);
    const stats = h('p', { class: 'svc-stats muted' });
    const tbody = h('tbody');
    const table = h('table', { class: 'routes' },
      h('caption', { class: 'sr' }, `Routes of ${name}; select a route to see its latency histogram`),
      tableHead(), tbody);
    const wrap = h('div', { class: 'scroll' }, table);
    const root = h('section', { class: 'card svc', 'data-service-section': name, 'aria-label': `Service ${name}` },
      h('div', { class: 'svc-head' }, title, stats), wrap);
    sv = { root, tbody, table, wrap, stats };
    S.services.set(name, sv);
    return sv;
  }

  function renderRoutes(force) {
    const sum = S.summary;
    if (!sum) return;
    const services = (sum.services || []).filter((x) => x.routes && x.routes.length);
    const container = $('services');
    const sig = JSON.stringify([services, S.sort, [...S.expanded]]);
    if (!force && sig === S.summarySig) return;
    S.summarySig = sig;

    const names = new Set(services.map((x) => x.service));
    for (const [name, sv] of S.services) {
      if (!names.has(name)) {
        sv.root.remove();
        S.services.delete(name);
      }
    }
    keepFocus(() => {
      services.forEach((svc, i) => {
        const sv = ensureService(svc.service);
        if (container.children[i] !== sv.root) container.insertBefore(sv.root, container.children[i] || null);
        renderService(svc, sv);
      });
    });
    for (const th of container.querySelectorAll('th[data-col]')) {
      const on = th.dataset.col === S.sort.key;
      if (on) th.setAttribute('aria-sort', S.sort.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
  }

  function renderService(svc, sv) {
    let req = 0;
    let cold = 0;
    let errs = 0;
    for (const r of svc.routes) {
      req += r.requests || 0;
      cold += r.cold || 0;
      errs += r.errors || 0;
    }
    sv.stats.replaceChildren(
      `${fmtCount(req)} requests · `, h('span', { class: cold ? 'cold-t' : '' }, `${fmtRate(req ? cold / req : null)} cold`),
      ' · ', h('span', { class: errs ? 'err-t' : '' }, `${fmtCount(errs)} errors`),
      ` · ${svc.routes.length} route${svc.routes.length === 1 ? '' : 's'}`);
    const rows = [];
    const draws = [];
    for (const r of sortRoutes(svc.routes)) {
      rows.push(routeRow(svc.service, r));
      if (S.expanded.has(rowKey(svc.service, r.route))) {
        const d = detailRow(svc.service, r, sv.wrap);
        rows.push(d);
        draws.push(d);
      }
    }
    const left = sv.wrap.scrollLeft;
    sv.tbody.replaceChildren(...rows);
    for (const d of draws) d._draw();
    sv.wrap.scrollLeft = left;
  }

  // --- histogram

  function histogram(r, W) {
    const hist = r.histogram || { bounds_ms: [], warm: [], cold: [] };
    const b = hist.bounds_ms;
    const n = b.length;
    const warm = hist.warm || [];
    const cold = hist.cold || [];
    const total = (i) => (warm[i] || 0) + (cold[i] || 0);
    const H = 244;
    const M = { t: 52, r: 14, b: 36, l: 44 };
    const label = `Latency histogram of ${r.route}: ${r.requests} requests, ${r.cold} cold starts`;
    const svg = s('svg', {
      width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label':
        `${label}; p95 ${fmtDur(q(r.all, 'p95'))}, p99 ${fmtDur(q(r.all, 'p99'))}`,
      'data-chart': 'histogram', 'data-for-route': r.route, class: 'hist',
    }, s('title', null, label));
    if (n < 2) return svg;

    // Bucket edges: bucket 0 is [b0/ratio, b0], the last one (b[n-1], b[n-1]*ratio].
    const edge = (i) => (i === 0 ? b[0] * b[0] / b[1] : i <= n ? b[i - 1] : b[n - 1] * b[n - 1] / b[n - 2]);
    // Show the buckets holding requests (and the marks) with one empty bucket either side.
    const marks = [['p95', q(r.all, 'p95')], ['p99', q(r.all, 'p99')]].filter((m) => m[1] != null && m[1] > 0);
    let first = n;
    let last = 0;
    for (let i = 0; i <= n; i++) {
      if (total(i)) {
        first = Math.min(first, i);
        last = Math.max(last, i);
      }
    }
    for (const [, v] of marks) {
      const k = b.findIndex((x) => v <= x);
      const i = k < 0 ? n : k;
      first = Math.min(first, i);
      last = Math.max(last, i);
    }
    if (first > last) [first, last] = [Math.max(0, n - 8), n];
    first = Math.max(0, first - 1);
    last = Math.min(n, last + 1);
    while (last - first < 5) {
      if (first > 0) first--;
      if (last - first < 5 && last < n) last++;
      if (first === 0 && last === n) break;
    }

    const lo = Math.log10(edge(first));
    const hi = Math.log10(edge(last + 1));
    const pw = W - M.l - M.r;
    const ph = H - M.t - M.b;
    const x = (v) => M.l + ((Math.log10(Math.max(v, 1e-9)) - lo) / (hi - lo)) * pw;
    // Square-root counts: the tail's few requests stay visible next to the warm bulk.
    let ymax = 1;
    for (let i = first; i <= last; i++) ymax = Math.max(ymax, total(i));
    const ticks = sqrtTicks(ymax);
    ymax = ticks[ticks.length - 1];
    const y = (v) => M.t + ph - Math.sqrt(v / ymax) * ph;

    // legend
    const lg = s('g', { class: 'legend', 'aria-hidden': 'true' });
    let lx = M.l;
    for (const [cls, text, line] of [['warm', 'warm', 0], ['cold', 'cold start', 0], ['p95', 'p95', 1], ['p99', 'p99', 1]]) {
      lg.append(line
        ? s('line', { class: `mark ${cls}`, x1: lx + 5, x2: lx + 5, y1: 7, y2: 21 })
        : s('rect', { class: `bar ${cls}`, x: lx, y: 8, width: 12, height: 12, rx: 2 }));
      lg.append(s('text', { x: lx + 17, y: 18 }, text));
      lx += 17 + text.length * 7 + 16;
    }
    svg.append(lg);

    // grid and y axis
    const grid = s('g', { class: 'grid' });
    for (const v of ticks) {
      grid.append(s('line', { x1: M.l, x2: W - M.r, y1: y(v), y2: y(v) }));
      grid.append(s('text', { class: 'ylab', x: M.l - 6, y: y(v) + 4, 'text-anchor': 'end' },
        v >= 10000 ? `${+(v / 1000).toPrecision(3)}k` : v));
    }
    svg.append(grid);

    // bars: warm below, cold stacked on top; a non-zero segment is at least 2 px tall
    const bars = s('g', { class: 'bars' });
    for (let i = first; i <= last; i++) {
      const x0 = x(edge(i)) + 1;
      const x1 = x(edge(i + 1)) - 1;
      const w = (warm[i] || 0);
      const c = (cold[i] || 0);
      const g = s('g', { class: 'bucket' });
      const range = i === 0 ? `≤ ${fmtAxis(b[0])} ms` : i === n ? `> ${fmtAxis(b[n - 1])}` : `${fmtAxis(b[i - 1])}–${fmtAxis(b[i])}`;
      const unit = i === 0 || i === n || b[i] >= 1000 ? '' : ' ms';
      g.append(s('title', null, `${range}${unit}: ${w} warm, ${c} cold`));
      g.append(s('rect', { class: 'hit', x: x0 - 1, y: M.t, width: Math.max(1, x1 - x0 + 2), height: ph }));
      const hw = w ? Math.max(2, y(0) - y(w)) : 0;
      const hc = c ? Math.max(2, y(0) - y(w + c) - hw) : 0;
      if (hw) g.append(s('rect', { class: 'bar warm', x: x0, y: y(0) - hw, width: Math.max(1, x1 - x0), height: hw }));
      if (hc) g.append(s('rect', { class: 'bar cold', x: x0, y: y(0) - hw - hc, width: Math.max(1, x1 - x0), height: hc }));
      bars.append(g);
    }
    svg.append(bars);

    // x axis: bucket bounds, skipping labels that would overlap
    const ax = s('g', { class: 'axis' });
    ax.append(s('line', { x1: M.l, x2: W - M.r, y1: y(0), y2: y(0) }));
    let prev = -Infinity;
    for (let i = first; i <= Math.min(last + 1, n); i++) {
      const v = edge(i);
      if (i === 0 && first === 0) continue;
      const px = x(v);
      const text = fmtAxis(v);
      const half = text.length * 3.4;
      if (px - half < prev + 6 || px + half > W) continue;
      prev = px + half;
      ax.append(s('line', { x1: px, x2: px, y1: y(0), y2: y(0) + 4 }));
      ax.append(s('text', { x: px, y: y(0) + 17, 'text-anchor': 'middle' }, text));
    }
    ax.append(s('text', { class: 'atitle', x: W - M.r, y: H - 3, 'text-anchor': 'end' }, 'latency, ms (log scale)'));
    ax.append(s('text', { class: 'atitle', x: M.l, y: H - 3 }, 'requests per bucket (√ scale)'));
    svg.append(ax);

    // p95 / p99 marks: p95 labelled left of its line, p99 right of it, on a second row if
    // the two labels would overlap or run off the chart.
    let taken = null;
    for (const [name, v] of marks) {
      const px = x(v);
      const text = `${name} ${fmtDur(v)}`;
      const tw = text.length * 6.6;
      let left = name === 'p95' ? px - 4 - tw >= M.l : px + 4 + tw > W - M.r;
      if (!left && px + 4 + tw > W - M.r) left = true;
      if (left && px - 4 - tw < M.l) left = false;
      const box = left ? [px - 4 - tw, px - 4] : [px + 4, px + 4 + tw];
      const row = taken && box[0] < taken[1] + 6 && box[1] > taken[0] - 6 ? 1 : 0;
      taken = box;
      const ty = 34 + row * 13;
      svg.append(s('g', { class: `markg ${name}` },
        s('line', { class: `mark ${name}`, x1: px, x2: px, y1: ty - 9, y2: y(0) }),
        s('text', { x: left ? px - 4 : px + 4, y: ty, 'text-anchor': left ? 'end' : 'start' }, text)));
    }
    return svg;
  }

  // --- summary

  function onSummary(sum) {
    if (!sum || !Array.isArray(sum.services)) return;
    S.summary = sum;
    if (sum.generated_at_ms) skewMs = sum.generated_at_ms - Date.now();
    const hasRoutes = sum.services.some((x) => x.routes && x.routes.length);
    const win = fmtWindow(sum.window_s);
    $('window').replaceChildren(
      win ? h('span', null, 'Window: last ', h('strong', null, win)) : '',
      sum.generated_at_ms ? ` · updated ${fmtClock(sum.generated_at_ms)}` : '');
    const notes = [];
    if (sum.routes_dropped) notes.push(`${fmtCount(sum.routes_dropped)} routes forgotten to stay within the route bound.`);
    notes.push('Select a route for its latency histogram; click a header to sort.');
    $('routes-note').textContent = notes.join(' ');
    $('empty-h').textContent = document.body.dataset.state === 'live'
      ? `No requests in the last ${win || 'window'}` : 'Waiting for spans';
    // `recording` (when sent) tells whether any pipeline feeds this page at all.
    const warn = sum.recording === false;
    $('empty').classList.toggle('warn', warn);
    $('empty-warn').hidden = !warn;
    $('empty').hidden = hasRoutes;
    $('routes').hidden = !hasRoutes;
    renderRoutes(false);
    if (hasRoutes) document.body.dataset.state = 'live';
  }

  // --- traces

  function onTraces(data) {
    const traces = (data && Array.isArray(data.traces)) ? data.traces : [];
    S.traces = traces;
    if (S.selected) {
      const t = traces.find((x) => x.trace_id === S.selected);
      if (t) S.selectedTrace = t;
    } else if (traces.length && !S.autoSelected) {
      S.autoSelected = true; // show the newest once, then leave the choice to the user
      S.selected = traces[0].trace_id;
      S.selectedTrace = traces[0];
    }
    renderTraceList();
    renderTraceDetail(false);
  }

  function renderFilters() {
    const counts = { all: S.traces.length };
    for (const r of REASONS) counts[r] = S.traces.filter((t) => (t.reasons || []).includes(r)).length;
    const box = $('trace-filters');
    keepFocus(() => box.replaceChildren(...['all', ...REASONS].map((f) => h('button', {
      type: 'button', class: `chip f-${f}`, 'aria-pressed': String(S.filter === f), 'data-focus': `filter:${f}`,
      onclick: () => { S.filter = f; S.tracesSig = ''; renderTraceList(); },
    }, f === 'all' ? 'all' : f, h('span', { class: 'n' }, counts[f])))));
  }

  function renderTraceList() {
    const list = $('trace-list');
    const shown = S.traces.filter((t) => S.filter === 'all' || (t.reasons || []).includes(S.filter));
    const sig = JSON.stringify([S.filter, S.selected, shown.map((t) => [t.trace_id, t.reasons, t.duration_ms])]);
    if (sig === S.tracesSig) return updateAgo();
    S.tracesSig = sig;
    renderFilters();
    const top = list.scrollTop;
    $('traces').classList.toggle('none', !S.traces.length);
    keepFocus(() => {
      if (!shown.length) {
        list.replaceChildren(h('li', { class: 'none muted' }, S.traces.length
          ? `No ${S.filter} traces among the latest ${S.traces.length}.`
          : 'No cold, tail or failed traces yet. Traces of cold starts, p95/p99 requests and errors show up here.'));
        return;
      }
      list.replaceChildren(...shown.map((t) => {
        const sel = t.trace_id === S.selected;
        return h('li', { 'data-trace-id': t.trace_id, class: sel ? 'sel' : '' },
          h('button', {
            type: 'button', class: 'trace', 'aria-pressed': String(sel), 'data-focus': `trace:${t.trace_id}`,
            onclick: () => selectTrace(t.trace_id),
          },
          h('span', { class: 't-line' },
            h('span', { class: 't-route' }, t.route || DASH),
            h('span', { class: 't-dur' }, fmtDur(t.duration_ms))),
          h('span', { class: 't-line' },
            h('span', { class: 't-meta muted' }, t.service, ' · ',
              h('span', { 'data-ago': t.start_unix_ms + (t.duration_ms || 0) }, fmtAgo(t.start_unix_ms + (t.duration_ms || 0)))),
            h('span', { class: 't-reasons' }, (t.reasons || []).slice().sort(byReason).map(badge)))));
      }));
    });
    list.scrollTop = top;
  }

  function updateAgo() {
    for (const e of document.querySelectorAll('[data-ago]')) e.textContent = fmtAgo(Number(e.dataset.ago));
  }

  function selectTrace(id) {
    S.selected = id;
    S.selectedTrace = S.traces.find((x) => x.trace_id === id) || S.selectedTrace;
    S.tracesSig = '';
    renderTraceList();
    renderTraceDetail(true);
  }

  // Spans in tree order (init segments first, then by start), with their depth.
  function spanTree(spans) {
    const ids = new Set(spans.map((x) => x.span_id));
    const kids = new Map();
    const roots = [];
    for (const sp of spans) {
      const p = sp.parent_span_id;
      if (p && ids.has(p) && p !== sp.span_id) {
        if (!kids.has(p)) kids.set(p, []);
        kids.get(p).push(sp);
      } else roots.push(sp);
    }
    const order = (a, b) => (b.init ? 1 : 0) - (a.init ? 1 : 0) || a.start_ms - b.start_ms;
    const out = [];
    const seen = new Set();
    const walk = (sp, depth) => {
      if (seen.has(sp.span_id)) return;
      seen.add(sp.span_id);
      out.push({ sp, depth });
      for (const c of (kids.get(sp.span_id) || []).sort(order)) walk(c, depth + 1);
    };
    for (const r of roots.sort(order)) walk(r, 0);
    for (const sp of spans) if (!seen.has(sp.span_id)) walk(sp, 0); // cycles
    return out;
  }

  // Self time: a span's duration not covered by its children.
  function selfTimes(spans) {
    const kids = new Map();
    for (const sp of spans) {
      if (!kids.has(sp.parent_span_id)) kids.set(sp.parent_span_id, []);
      kids.get(sp.parent_span_id).push(sp);
    }
    const out = new Map();
    for (const sp of spans) {
      const start = sp.start_ms;
      const end = sp.start_ms + sp.duration_ms;
      const iv = (kids.get(sp.span_id) || [])
        .map((c) => [Math.max(start, c.start_ms), Math.min(end, c.start_ms + c.duration_ms)])
        .filter(([a, b]) => b > a).sort((a, b) => a[0] - b[0]);
      let covered = 0;
      let cur = start;
      for (const [a, b] of iv) {
        if (b <= cur) continue;
        covered += b - Math.max(a, cur);
        cur = b;
      }
      out.set(sp.span_id, Math.max(0, sp.duration_ms - covered));
    }
    return out;
  }

  function renderTraceDetail(force) {
    const box = $('trace-detail');
    const t = S.selectedTrace;
    const inList = t && S.traces.some((x) => x.trace_id === t.trace_id);
    const sig = t ? JSON.stringify([t.trace_id, (t.spans || []).length, t.duration_ms, t.reasons, inList, box.clientWidth]) : '';
    if (!force && sig === S.detailSig) return;
    S.detailSig = sig;
    if (!t) {
      box.replaceChildren(h('p', { class: 'muted pad' }, S.traces.length ? 'Select a trace to see its spans.' : ''));
      return;
    }
    const spans = (t.spans || []).filter((x) => x && x.span_id);
    const self = selfTimes(spans);
    let slow = null;
    for (const sp of spans) if (!slow || self.get(sp.span_id) > self.get(slow.span_id)) slow = sp;
    const inits = spans.filter((x) => x.init);
    const errors = spans.filter((x) => x.status === 'error');
    const total = t.duration_ms || Math.max(0, ...spans.map((x) => x.start_ms + x.duration_ms));

    const head = h('div', { class: 'td-head' },
      h('h3', null, t.route || DASH),
      h('p', { class: 'muted' }, `${t.service} · `, h('strong', null, fmtDur(total)), ' · ',
        h('span', { 'data-ago': t.start_unix_ms + (t.duration_ms || 0) }, fmtAgo(t.start_unix_ms + (t.duration_ms || 0))),
        ` · ${spans.length} span${spans.length === 1 ? '' : 's'} · `,
        h('code', { class: 'tid', title: 'trace id' }, t.trace_id)),
      h('p', { class: 't-reasons' }, (t.reasons || []).slice().sort(byReason).map(badge)));
    const notes = h('ul', { class: 'callouts' });
    if (slow) {
      const st = self.get(slow.span_id);
      notes.append(h('li', { class: 'slow' }, h('span', { class: 'key k-slow', 'aria-hidden': 'true' }),
        'Slowest: ', h('strong', null, slow.name), ` — ${fmtDur(st)} self time`,
        total ? ` (${fmtRate(st / total)} of the trace)` : ''));
    }
    if (inits.length) {
      const initMs = inits.reduce((a, x) => a + (x.duration_ms || 0), 0);
      notes.append(h('li', { class: 'init' }, h('span', { class: 'key k-init', 'aria-hidden': 'true' }),
        'Cold start init: ', h('strong', null, fmtDur(initMs)), total ? ` (${fmtRate(initMs / total)} of the trace)` : ''));
    }
    if (errors.length) {
      notes.append(h('li', { class: 'errn' }, h('span', { class: 'key k-err', 'aria-hidden': 'true' }),
        `${errors.length} span${errors.length === 1 ? '' : 's'} with error status`));
    }
    if (!inList) notes.append(h('li', { class: 'muted' }, 'No longer among the latest traces; shown as last seen.'));
    const holder = h('div', { class: 'wf-holder' });
    box.replaceChildren(head, notes, holder);
    holder.append(waterfall(t, spans, self, slow, Math.max(300, holder.clientWidth)));
  }

  // --- waterfall

  function waterfall(t, spans, self, slow, W) {
    const rows = spanTree(spans);
    const RH = rows.length > 60 ? 19 : 24;
    const top = 26;
    const H = top + rows.length * RH + 6;
    const LW = Math.round(Math.min(300, Math.max(120, W * 0.34)));
    const bx = LW + 8;
    const bw = W - bx - 12;
    const end = Math.max(t.duration_ms || 0, ...spans.map((x) => x.start_ms + x.duration_ms), 0.001);
    const x = (ms) => bx + (ms / end) * bw;
    const svg = s('svg', {
      width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'wf', 'data-chart': 'waterfall',
      'data-for-trace': t.trace_id,
      'aria-label': `Span waterfall of trace ${t.trace_id}: ${rows.length} spans over ${fmtDur(end)}` +
        (slow ? `; slowest ${slow.name}` : ''),
    }, s('defs', null, s('pattern', { id: 'hatch', width: 6, height: 6, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' },
      s('rect', { class: 'hatch-bg', width: 6, height: 6 }), s('line', { class: 'hatch-ln', x1: 0, y1: 0, x2: 0, y2: 6 }))));

    // time axis
    const ax = s('g', { class: 'axis' });
    const step = niceStep(end, Math.max(2, Math.floor(bw / 90)));
    for (let v = 0; v <= end + 1e-9; v += step) {
      ax.append(s('line', { class: 'gl', x1: x(v), x2: x(v), y1: top - 4, y2: H }));
      const anchor = x(v) + 30 > W ? 'end' : v === 0 ? 'start' : 'middle';
      ax.append(s('text', { x: x(v), y: top - 9, 'text-anchor': anchor }, v === 0 ? '0' : fmtAxis(v) + (v < 1000 ? ' ms' : '')));
    }
    svg.append(ax);

    rows.forEach(({ sp, depth }, i) => {
      const y0 = top + i * RH;
      const cls = ['row'];
      if (sp.init) cls.push('init');
      if (sp.status === 'error') cls.push('error');
      if (slow && sp.span_id === slow.span_id) cls.push('slow');
      const g = s('g', {
        class: cls.join(' '), 'data-span-id': sp.span_id, 'data-init': sp.init ? 'true' : null,
        'data-error': sp.status === 'error' ? 'true' : null, 'data-slowest': cls.includes('slow') ? 'true' : null,
      });
      const svcNote = sp.service && sp.service !== t.service ? ` · ${sp.service}` : '';
      g.append(s('title', null, `${sp.name}${svcNote}\n${sp.kind || 'span'} · start ${fmtDur(sp.start_ms)} · ` +
        `duration ${fmtDur(sp.duration_ms)} · self ${fmtDur(self.get(sp.span_id))}` +
        `${sp.init ? ' · cold start init' : ''}${sp.status === 'error' ? ' · error' : ''}`));
      g.append(s('rect', { class: 'bg', x: 0, y: y0, width: W, height: RH }));
      if (sp.init) g.append(s('rect', { class: 'stripe', x: 0, y: y0 + 2, width: 3, height: RH - 4 }));
      const ind = 8 + Math.min(depth, 8) * 12;
      let tx = ind;
      if (sp.status === 'error') {
        g.append(s('circle', { class: 'errdot', cx: tx + 5, cy: y0 + RH / 2, r: 5 }));
        g.append(s('text', { class: 'errx', x: tx + 5, y: y0 + RH / 2 + 3.5, 'text-anchor': 'middle' }, '!'));
        tx += 14;
      }
      let name = sp.name || '(unnamed)';
      if (sp.init) name = name === 'init' ? 'init (cold start)' : `${name} (init)`;
      const room = Math.floor((LW - tx) / 6.8);
      if (name.length > room) name = `${name.slice(0, Math.max(1, room - 1))}…`;
      g.append(s('text', { class: 'name', x: tx, y: y0 + RH / 2 + 4 }, name));

      const x0 = x(sp.start_ms);
      const w = Math.max(2, x(sp.start_ms + sp.duration_ms) - x0);
      g.append(s('rect', { class: `bar k-${sp.kind || 'internal'}`, x: x0, y: y0 + 5, width: w, height: RH - 10, rx: 2 }));
      const label = fmtDur(sp.duration_ms) + (cls.includes('slow') ? '  ◀ slowest' : '');
      const lw = label.length * 6.6;
      if (x0 + w + 6 + lw <= W) {
        g.append(s('text', { class: 'dur', x: x0 + w + 5, y: y0 + RH / 2 + 4 }, label));
      } else if (x0 - 6 - lw >= bx) {
        g.append(s('text', { class: 'dur', x: x0 - 5, y: y0 + RH / 2 + 4, 'text-anchor': 'end' }, label));
      } else {
        g.append(s('text', { class: 'dur in', x: x0 + w - 5, y: y0 + RH / 2 + 4, 'text-anchor': 'end' }, label));
      }
      svg.append(g);
    });
    return svg;
  }

  // --- pipelines

  const COUNTERS = {
    receiver: [['accepted', ''], ['refused', 'bad']],
    processor: [['incoming', ''], ['outgoing', '']],
    exporter: [['sent', ''], ['failed', 'bad'], ['enqueue_failed', 'bad']],
  };
  const SKIP = new Set(['kind', 'id', 'signal', 'pipeline', 'queue_size', 'queue_capacity']);

  function onPipelines(data) {
    const sig = JSON.stringify(data);
    if (sig === S.pipesSig) return;
    S.pipesSig = sig;
    const pipes = (data && data.pipelines) || [];
    const comps = (data && data.components) || [];
    const chip = (kind, id) => h('li', { class: `pchip ${kind}${id.split('/')[0] === 'coldtail_ui' ? ' ui' : ''}` },
      h('span', { class: 'pk' }, kind[0]), id);
    const arrow = () => h('li', { class: 'arrow', 'aria-hidden': 'true' }, '→');
    $('pipeline-chips').replaceChildren(...(pipes.length ? pipes.map((p) => h('div', { class: 'pipe', 'data-pipeline': p.id },
      h('span', { class: 'pid' }, p.id),
      h('ol', { class: 'flow', 'aria-label': `Pipeline ${p.id}` },
        (p.receivers || []).map((r) => chip('receiver', r)), arrow(),
        (p.processors || []).length ? [(p.processors || []).map((r) => chip('processor', r)), arrow()] : null,
        (p.exporters || []).map((r) => chip('exporter', r)))))
      : [h('p', { class: 'muted' }, 'No pipelines reported.')]));

    const rows = comps.map((c) => {
      const known = COUNTERS[c.kind] || [];
      const names = [...known.map((k) => k[0]), ...Object.keys(c).filter((k) => !SKIP.has(k) && !known.some((x) => x[0] === k) && typeof c[k] === 'number')];
      const counters = names.filter((k) => c[k] != null).map((k) => {
        const bad = (known.find((x) => x[0] === k) || [])[1] === 'bad' && c[k] > 0;
        return h('span', { class: `ctr${bad ? ' bad' : ''}`, 'data-counter': k },
          h('span', { class: 'cl' }, k.replace('_', ' ')), ' ', h('span', { class: 'cv' }, fmtCount(c[k])));
      });
      let queue = h('span', { class: 'muted' }, DASH);
      if (c.queue_capacity) {
        const fill = Math.min(1, (c.queue_size || 0) / c.queue_capacity);
        queue = h('span', { class: `queue${fill > 0.8 ? ' hot' : fill > 0.5 ? ' warm' : ''}` },
          h('span', {
            class: 'qbar', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': c.queue_capacity,
            'aria-valuenow': c.queue_size || 0, 'aria-label': `Queue of ${c.id}`,
          }, h('span', { style: `width:${(fill * 100).toFixed(1)}%` })),
          h('span', { class: 'qt' }, `${fmtCount(c.queue_size || 0)} / ${fmtCount(c.queue_capacity)}`));
      } else if (c.queue_size != null) {
        queue = h('span', { class: 'qt' }, fmtCount(c.queue_size));
      }
      return h('tr', { 'data-component': `${c.kind}/${c.id}`, 'data-kind': c.kind },
        h('td', { class: 'left' }, h('span', { class: `kind ${c.kind}` }, c.kind)),
        h('th', { scope: 'row', class: 'left cid' }, c.id),
        h('td', { class: 'left muted' }, c.signal || c.pipeline || ''),
        h('td', { class: 'left' }, h('div', { class: 'ctrs' }, counters)),
        h('td', { class: 'left' }, queue));
    });
    $('components-wrap').replaceChildren(comps.length ? h('table', { class: 'comps' },
      h('caption', { class: 'sr' }, 'Components and their counters'),
      h('thead', null, h('tr', null, ['Kind', 'Component', 'Signal / pipeline', 'Counters', 'Queue']
        .map((x) => h('th', { scope: 'col', class: 'left' }, x)))),
      h('tbody', null, rows)) : '');
  }

  // --- connection

  function setConn() {
    const now = Date.now();
    const box = $('conn');
    let state;
    let text;
    if (now - S.lastSse < 3500) [state, text] = ['connected', 'Live'];
    else if (now - S.lastOk < 5000) [state, text] = ['connected', 'Connected · polling'];
    else if (!S.lastOk && now - S.started < 4000) [state, text] = ['connecting', 'Connecting…'];
    else [state, text] = ['reconnecting', 'Reconnecting…'];
    if (box.dataset.conn !== state || $('conn-text').textContent !== text) {
      box.dataset.conn = state;
      $('conn-text').textContent = text;
    }
  }

  async function getJSON(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 5000);
    try {
      const res = await fetch(path, { signal: ctl.signal, cache: 'no-store', headers: { Accept: 'application/json' } });
      if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
      const data = await res.json();
      S.lastOk = Date.now();
      return data;
    } finally {
      clearTimeout(timer);
    }
  }

  // `?poll` in the address polls the summary instead of streaming it (for proxies that buffer
  // event streams, and for headless browsers whose virtual time waits for open requests).
  const POLL_ONLY = new URLSearchParams(location.search).has('poll');

  function startEvents() {
    if (!window.EventSource || POLL_ONLY) return;
    let es;
    try {
      es = new EventSource('api/events');
    } catch (e) {
      return;
    }
    es.addEventListener('summary', (ev) => {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      S.lastSse = S.lastOk = Date.now();
      onSummary(data);
      setConn();
    });
    es.onerror = () => {
      // The browser retries by itself unless the stream was refused; then try again later.
      if (es.readyState === EventSource.CLOSED) setTimeout(startEvents, 15000);
      setConn();
    };
  }

  async function poll(first) {
    if (!document.hidden || first) {
      const jobs = [
        getJSON('api/traces?limit=20').then(onTraces),
        getJSON('api/pipelines').then(onPipelines),
      ];
      // The event stream carries the summary; poll it only while the stream is silent.
      if (Date.now() - S.lastSse > 3000) jobs.push(getJSON('api/summary').then(onSummary));
      await Promise.allSettled(jobs);
    }
    setConn();
    setTimeout(poll, POLL_MS);
  }

  // Charts are drawn to the pixel width of their box: redraw when the page's width changes
  // (window resized, rotated, or a scrollbar appeared).
  let lastWidth = 0;
  let resizeTimer = 0;
  new ResizeObserver((entries) => {
    const width = Math.round(entries[0].contentRect.width);
    if (width === lastWidth) return;
    const first = !lastWidth;
    lastWidth = width;
    clearTimeout(resizeTimer);
    if (!first) {
      resizeTimer = setTimeout(() => {
        renderRoutes(true);
        renderTraceDetail(true);
      }, 100);
    }
  }).observe(document.querySelector('main'));
  setInterval(() => {
    updateAgo();
    setConn();
  }, 1000);

  renderTraceList();
  startEvents();
  poll(true);
})();
