// Stock Bazaar dashboard: listens to the front-end's server-sent events and renders each
// section in place (rows are updated, not rebuilt, so focus and scroll positions survive).
// Every value goes into the page as text, never as HTML. Trades and lookups use the public API.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';

  // ---- small helpers ---------------------------------------------------------------------

  function setText(node, text) {
    const value = text === undefined || text === null ? '-' : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function setClass(node, className) {
    if (node.className !== className) node.className = className;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function num(value) {
    return typeof value === 'number' && Number.isFinite(value) ? value : null;
  }

  function count(value) {
    const n = num(value);
    return n === null ? '-' : n.toLocaleString('en-US');
  }

  function price(value) {
    const n = num(value);
    return n === null ? '-' : n.toFixed(2);
  }

  function micros(value) {
    const n = num(value);
    if (n === null) return '-';
    if (n < 1000) return n + ' \u00b5s';
    if (n < 1e6) return (n / 1000).toFixed(n < 1e4 ? 2 : 1) + ' ms';
    return (n / 1e6).toFixed(2) + ' s';
  }

  function clock(ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString('en-GB', { hour12: false });
  }

  function replicaName(id) {
    return id === null || id === undefined ? 'none' : 'order-' + id;
  }

  // Keeps the rows of a table body keyed by `key`, in the order given, creating a row with
  // `cells` cells when it is new and removing rows whose key is gone.
  function syncRows(tbody, items, key, cells, fill) {
    const existing = new Map();
    for (const row of Array.from(tbody.rows)) existing.set(row.dataset.key, row);
    let previous = null;
    for (const item of items) {
      const k = key(item);
      let row = existing.get(k);
      if (row) {
        existing.delete(k);
      } else {
        row = document.createElement('tr');
        row.dataset.key = k;
        for (const spec of cells) {
          const cell = el(spec.tag || 'td', spec.className || '');
          if (spec.label) cell.dataset.label = spec.label;
          row.appendChild(cell);
        }
      }
      const wanted = previous ? previous.nextSibling : tbody.firstChild;
      if (row !== wanted) tbody.insertBefore(row, wanted);
      fill(row, item);
      previous = row;
    }
    for (const row of existing.values()) row.remove();
  }

  // ---- charts ----------------------------------------------------------------------------

  // An area chart of `values` (oldest first) in an SVG whose viewBox is `values.length` wide.
  function area(svg, values) {
    const path = svg.querySelector('path');
    const width = values.length;
    const [, , boxWidth, height] = svg.getAttribute('viewBox').split(' ').map(Number);
    const max = Math.max(1, ...values);
    const step = boxWidth / Math.max(1, width);
    let d = 'M0 ' + height;
    values.forEach((v, i) => {
      const y = height - (v / max) * (height - 2);
      d += ' L' + (i * step).toFixed(2) + ' ' + y.toFixed(2) + ' L' + ((i + 1) * step).toFixed(2) + ' ' + y.toFixed(2);
    });
    d += ' L' + boxWidth + ' ' + height + ' Z';
    path.setAttribute('d', d);
    return max;
  }

  // Lines for several series with gaps where a value is null, on one shared scale.
  function lines(svg, seriesList) {
    const [, , boxWidth, height] = svg.getAttribute('viewBox').split(' ').map(Number);
    const all = seriesList.flat().filter((v) => v !== null);
    const max = Math.max(1, ...all);
    const paths = svg.querySelectorAll('path');
    seriesList.forEach((values, s) => {
      const step = boxWidth / Math.max(1, values.length);
      let d = '';
      let drawing = false;
      values.forEach((v, i) => {
        if (v === null) { drawing = false; return; }
        const y = height - (v / max) * (height - 2);
        d += (drawing ? ' L' : ' M') + (i * step).toFixed(2) + ' ' + y.toFixed(2) + ' L' + ((i + 1) * step).toFixed(2) + ' ' + y.toFixed(2);
        drawing = true;
      });
      paths[s].setAttribute('d', d.trim());
    });
    return max;
  }

  function spark(id, values, unit) {
    const row = $(id);
    const values_ = Array.isArray(values) ? values.map((v) => num(v) || 0) : [];
    const max = area(row.querySelector('svg'), values_);
    const last = values_.length ? values_[values_.length - 1] : 0;
    const text = count(last) + ' now, max ' + count(values_.some((v) => v > 0) ? max : 0);
    setText(row.querySelector('.spark-value'), text);
    row.querySelector('svg').setAttribute('aria-label', row.querySelector('.spark-label').textContent + ' ' + unit + ': ' + text);
  }

  // ---- market ----------------------------------------------------------------------------

  const knownStocks = new Set();

  function renderMarket(market) {
    const stocks = Array.isArray(market.stocks) ? market.stocks : [];
    const tbody = $('stocks').tBodies[0];
    syncRows(tbody, stocks, (s) => String(s.name), [
      { tag: 'th', className: '' }, { className: 'num' }, { className: 'num' }, { className: 'num' },
    ], (row, s) => {
      row.cells[0].setAttribute('scope', 'row');
      setText(row.cells[0], s.name);
      setText(row.cells[1], price(s.price));
      const quantity = count(s.quantity);
      if (row.cells[2].textContent !== quantity) {
        const wasSet = row.cells[2].textContent !== '';
        setText(row.cells[2], quantity);
        if (wasSet) flash(row.cells[2]);
      }
      const volume = s.volume === undefined ? '-' : count(s.volume);
      if (row.cells[3].textContent !== volume) {
        const wasSet = row.cells[3].textContent !== '';
        setText(row.cells[3], volume);
        if (wasSet) flash(row.cells[3]);
      }
    });
    const names = $('stock-names');
    for (const s of stocks) {
      if (!knownStocks.has(s.name)) {
        knownStocks.add(s.name);
        const option = document.createElement('option');
        option.value = s.name;
        names.appendChild(option);
      }
    }
    let note = market.error ? market.error : (market.source ? 'From ' + market.source + '.' : '');
    setText($('market-note'), note);
    if (!renderMarket.marked && stocks.length) {
      renderMarket.marked = true;
      performance.mark('bazaar-first-market');
    }
  }

  function flash(cell) {
    cell.classList.remove('changed');
    void cell.offsetWidth; // restart the animation
    cell.classList.add('changed');
  }

  // ---- trade and lookup forms -------------------------------------------------------------

  function show(output, text, kind) {
    setText(output, text);
    setClass(output, 'result' + (kind ? ' ' + kind : ''));
  }

  async function callApi(method, path, body) {
    const init = { method, headers: { accept: 'application/json' } };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      return { ok: false, status: 0, message: 'the front-end did not answer (' + e.message + ')' };
    }
    let json = null;
    try { json = await response.json(); } catch (e) { json = null; }
    if (response.ok && json && 'data' in json) return { ok: true, status: response.status, data: json.data };
    const message = json && json.error && json.error.message ? json.error.message : 'HTTP ' + response.status;
    return { ok: false, status: response.status, message };
  }

  async function submitTrade(event) {
    event.preventDefault();
    const output = $('trade-result');
    const name = $('trade-stock').value.trim();
    const type = $('trade-type').value;
    const quantityText = $('trade-quantity').value.trim();
    if (!name) {
      show(output, 'Choose a stock.', 'error');
      $('trade-stock').focus();
      return;
    }
    if (!/^[1-9][0-9]{0,8}$/.test(quantityText)) {
      show(output, 'Quantity must be a whole number from 1 to 999999999.', 'error');
      $('trade-quantity').focus();
      return;
    }
    const quantity = Number(quantityText);
    const button = $('trade-submit');
    button.disabled = true;
    show(output, 'Placing the order\u2026', '');
    const reply = await callApi('POST', '/orders', { name, type, quantity });
    button.disabled = false;
    if (reply.ok) {
      const n = reply.data.transaction_number;
      show(output, (type === 'buy' ? 'Bought ' : 'Sold ') + quantity + ' ' + name + ': transaction number ' + n + '.', 'ok');
      $('lookup-number').value = String(n);
    } else {
      show(output, 'Refused' + (reply.status ? ' (' + reply.status + ')' : '') + ': ' + reply.message, 'error');
    }
  }

  async function submitLookup(event) {
    event.preventDefault();
    const output = $('lookup-result');
    const text = $('lookup-number').value.trim();
    if (!/^[0-9]{1,19}$/.test(text)) {
      show(output, 'A transaction number is a whole number from 0.', 'error');
      $('lookup-number').focus();
      return;
    }
    const button = $('lookup-submit');
    button.disabled = true;
    show(output, 'Looking up\u2026', '');
    const reply = await callApi('GET', '/orders/' + text);
    button.disabled = false;
    if (reply.ok) {
      const o = reply.data;
      show(output, 'Order ' + o.number + ': ' + o.type + ' ' + o.quantity + ' ' + o.name + '.', 'ok');
    } else {
      show(output, 'Not found' + (reply.status ? ' (' + reply.status + ')' : '') + ': ' + reply.message, 'error');
    }
  }

  // ---- cluster ---------------------------------------------------------------------------

  let demoServices = new Map(); // url -> {name, running}
  let lastCluster = null;

  function stateText(row) {
    if (row.state === 'up') return '\u2713 up';
    if (row.state === 'recovering') return '\u2026 recovering';
    return '\u2717 down';
  }

  function serviceRows(view) {
    const rows = [];
    for (const f of view.frontends || []) {
      rows.push({
        key: 'fe ' + f.url, name: f.name || 'frontend', url: f.url,
        role: 'front-end',
        epoch: null, last: null, lag: null, state: f.state, error: f.error, health: f.health,
      });
    }
    for (const r of view.replicas || []) {
      rows.push({
        key: 'order ' + r.url, name: r.name || 'order-' + r.id, url: r.url,
        role: r.state === 'down' ? '-' : (r.role || '-'), leader: r.role === 'leader',
        epoch: r.epoch, last: r.position, lag: r.lag, state: r.state, error: r.error, health: r.health,
      });
    }
    for (const c of view.catalogs || []) {
      rows.push({
        key: 'catalog ' + c.url, name: c.name || 'catalog', url: c.url,
        role: 'catalog', epoch: null, last: c.position, lag: null, state: c.state, error: c.error,
        health: c.health,
      });
    }
    return rows;
  }

  function renderCluster(cluster) {
    lastCluster = cluster;
    const view = cluster.view || {};
    const tbody = $('services').tBodies[0];
    syncRows(tbody, serviceRows(view), (r) => r.key, [
      { tag: 'th' }, { className: 'address' }, {}, { className: 'num', label: 'epoch' },
      { className: 'num', label: 'last' }, { className: 'num', label: 'lag' }, {},
      { className: 'demo-only' },
    ], (row, r) => {
      row.cells[0].setAttribute('scope', 'row');
      setText(row.cells[0], r.name);
      setText(row.cells[1], String(r.url).replace(/^https?:\/\//, ''));
      setText(row.cells[2], r.role);
      setClass(row.cells[2], r.leader ? 'role-leader' : '');
      setText(row.cells[3], r.epoch);
      setText(row.cells[4], r.last);
      setText(row.cells[5], r.lag);
      setText(row.cells[6], stateText(r));
      setClass(row.cells[6], 'state-' + r.state);
      // The reason stays out of the cell so a row keeps its height; it shows on hover and
      // in `bazaar status`.
      row.cells[6].title = r.error ? 'down: ' + r.error : '';
      row.title = r.url + (r.health ? '\n' + JSON.stringify(r.health) : '');
      demoCell(row.cells[7], r);
    });
    const leader = view.leader;
    const leaderRow = (view.replicas || []).find((r) => r.id === leader);
    let summary = 'leader: ' + replicaName(leader);
    if (leaderRow && leaderRow.epoch !== null && leaderRow.epoch !== undefined) summary += ' (epoch ' + leaderRow.epoch + ')';
    if (leaderRow && leaderRow.state === 'down') summary += ', down';
    setText($('leader-summary'), summary);
    setText($('mode'), 'mode: ' + (view.mode || 'unknown'));
    const list = $('leader-changes');
    const changes = (cluster.leader_changes || []).slice().reverse();
    renderLeaderChanges(list, changes);
  }

  // The leader change list, newest first; items never change once shown.
  function renderLeaderChanges(list, changes) {
    const keys = changes.map((c) => c.at_ms + ' ' + c.from + ' ' + c.to);
    if (list.dataset.keys === keys.join('|')) return;
    list.dataset.keys = keys.join('|');
    list.replaceChildren(...changes.map((c) => {
      const item = el('li');
      item.appendChild(el('time', '', clock(c.at_ms)));
      let text;
      if (c.from === null && c.to !== null) text = 'leader is ' + replicaName(c.to);
      else if (c.to === null) text = replicaName(c.from) + ' \u2192 no leader';
      else text = replicaName(c.from) + ' \u2192 ' + replicaName(c.to);
      if (c.epoch !== null && c.epoch !== undefined) text += ' (epoch ' + c.epoch + ')';
      item.appendChild(document.createTextNode(text));
      return item;
    }));
  }

  // ---- demonstration controls ------------------------------------------------------------

  function demoCell(cell, r) {
    const service = demoServices.get(r.url);
    let button = cell.querySelector('button');
    if (!service) {
      if (button) button.remove();
      return;
    }
    if (!button) {
      button = el('button', 'small');
      button.type = 'button';
      button.addEventListener('click', () => demoAct(button));
      cell.appendChild(button);
    }
    if (button.dataset.busy === '1') return;
    const action = service.running ? 'kill' : 'restart';
    button.dataset.service = service.name;
    button.dataset.action = action;
    setText(button, service.running ? 'Kill' : 'Restart');
    button.setAttribute('aria-label', (service.running ? 'Kill ' : 'Restart ') + service.name);
  }

  async function demoAct(button) {
    const service = button.dataset.service;
    const action = button.dataset.action;
    button.dataset.busy = '1';
    button.disabled = true;
    setText(button, action === 'kill' ? 'Killing\u2026' : 'Starting\u2026');
    const output = $('demo-result');
    show(output, (action === 'kill' ? 'Killing ' : 'Starting ') + service + '\u2026', '');
    const reply = await callApi('POST', '/dashboard/demo/' + encodeURIComponent(service) + '/' + action);
    button.dataset.busy = '';
    button.disabled = false;
    if (reply.ok) {
      show(output, service + (action === 'kill' ? ' was killed (SIGKILL).' : ' was started again and serves.'), 'ok');
    } else {
      show(output, 'Could not ' + action + ' ' + service + ': ' + reply.message, 'error');
    }
    if (lastCluster) renderCluster(lastCluster);
  }

  function renderDemo(demo) {
    demoServices = new Map();
    // The front-end serves this page: it is never offered for stopping.
    for (const s of demo.services || []) if (s.role !== 'frontend') demoServices.set(s.url, s);
    if (demo.error) show($('demo-result'), 'Demonstration controls unavailable: ' + demo.error, 'error');
    if (lastCluster) renderCluster(lastCluster);
  }

  // ---- cache -----------------------------------------------------------------------------

  function renderCache(cache) {
    const view = cache.view;
    if (view) {
      const state = view.capacity === 0 ? 'off (--no-cache)' : view.enabled ? 'serving' : 'not serving (feed down)';
      setText($('cache-state'), state);
      setText($('cache-size'), (view.entries || []).length + ' of ' + view.capacity);
      setText($('cache-hits'), count(view.hits));
      setText($('cache-misses'), count(view.misses));
      const lookups = (num(view.hits) || 0) + (num(view.misses) || 0);
      setText($('cache-ratio'), lookups ? Math.round((100 * view.hits) / lookups) + ' %' : '-');
      setText($('cache-evictions'), count(view.evictions));
      setText($('cache-invalidations'), count(view.invalidations));
      const list = $('cache-entries');
      const entries = view.entries || [];
      const key = entries.map((e) => e.name + '@' + e.version).join('|');
      if (list.dataset.key !== key) {
        list.dataset.key = key;
        list.replaceChildren(...entries.map((e, i) => {
          const item = el('li');
          item.appendChild(el('span', 'rank', String(i + 1) + '.'));
          item.appendChild(document.createTextNode(e.name));
          item.appendChild(el('span', 'version', 'v' + e.version));
          return item;
        }));
      }
    } else {
      setText($('cache-state'), 'unknown: ' + (cache.error || 'no answer'));
    }
    const t = cache.timeline || {};
    spark('spark-hits', t.hits, 'per second');
    spark('spark-misses', t.misses, 'per second');
    spark('spark-evictions', t.evictions, 'per second');
    spark('spark-invalidations', t.invalidations, 'per second');
  }

  // ---- traffic ---------------------------------------------------------------------------

  function renderTraffic(traffic) {
    const per = traffic.per_second || {};
    spark('spark-trades', per.trade, 'per second');
    spark('spark-lookups', per.lookup, 'per second');
    spark('spark-queries', per.order_query, 'per second');
    spark('spark-failed', traffic.failed_per_second, 'per second');
    const latency = traffic.latency || {};
    for (const kind of ['trade', 'lookup', 'order_query']) {
      const row = $('latency-' + kind);
      const l = latency[kind] || {};
      setText(row.cells[1], count(l.count));
      setText(row.cells[2], micros(l.p50_us));
      setText(row.cells[3], micros(l.p90_us));
      setText(row.cells[4], micros(l.p99_us));
      setText(row.cells[5], micros(l.max_us));
    }
    const bins = traffic.latency_bins || {};
    for (const kind of ['trade', 'lookup']) {
      const row = $('lat-' + kind);
      const series = bins[kind] || [];
      const p50 = series.map((b) => (b ? b.p50_us : null));
      const p99 = series.map((b) => (b ? b.p99_us : null));
      const max = lines(row.querySelector('svg'), [p50, p99]);
      const last = series.filter((b) => b).pop();
      const text = last ? 'p99 ' + micros(last.p99_us) : 'no requests';
      setText(row.querySelector('.spark-value'), text);
      row.querySelector('svg').setAttribute('aria-label', row.querySelector('.spark-label').textContent + ' latency, scale to ' + micros(max) + ', latest ' + text);
    }
  }

  // ---- the event stream ------------------------------------------------------------------

  function setConnection(text, className) {
    const node = $('connection');
    setText(node, text);
    setClass(node, className);
  }

  function start() {
    $('trade-form').addEventListener('submit', submitTrade);
    $('lookup-form').addEventListener('submit', submitLookup);
    const source = new EventSource('/dashboard/events');
    source.addEventListener('open', () => setConnection('live', 'live'));
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CLOSED) setConnection('disconnected: reload the page', 'down');
      else setConnection('reconnecting', 'down');
    });
    source.addEventListener('hello', (e) => {
      const hello = JSON.parse(e.data);
      document.body.classList.toggle('demo', hello.demo === true);
    });
    const handlers = { market: renderMarket, cluster: renderCluster, cache: renderCache, traffic: renderTraffic, demo: renderDemo };
    for (const [name, render] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => render(JSON.parse(e.data)));
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
