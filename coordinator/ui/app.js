// Tributary dashboard: vanilla JS, no build step. Served by the coordinator
// at /ui/ (coordinator/src/api/ui.rs); talks only to the public API.
//
// Pages (hash routes, so any job is reachable by URL):
//   #/jobs?status=&kind=&cursor=   roots, filters, keyset paging
//   #/job/<id>                     one job: tree counts, fan-out bars,
//                                  why-waiting, phases, children, logs, chart
//   #/fleet                        workers, queues, backlog, throughput (/v1/fleet)
//
// The job page follows GET /v1/jobs/{id}/events with fetch() streaming (so
// the bearer token travels in a header, which EventSource cannot send) and
// resumes a dropped stream with Last-Event-ID. The DOM is built from text
// nodes only: nothing from the API is ever parsed as HTML.
'use strict';

const TOKEN_KEY = 'tributary.token';
const STATUSES = ['completed', 'failed', 'cancelled', 'running', 'waiting', 'paused', 'pending'];
// A fan-out's counters tell ended children apart, not the open ones' states.
const BAR_KEYS = [...STATUSES, 'open'];
const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
const COLORS = {
  completed: '#1a7f37', failed: '#cf222e', running: '#0969da', pending: '#6e7781',
  waiting: '#8250df', paused: '#9a6700', cancelled: '#424a53', open: '#57606a',
};
const LABELS = { pending: 'queued' };

let token = sessionStorage.getItem(TOKEN_KEY);
let page = null; // the current page: { stop() }

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    // Through the CSSOM: the page's CSP refuses style attributes.
    else if (k === 'style') el.style.cssText = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// replaceChildren, leaving out null, undefined and false (the DOM would
// insert them as the text "null").
function fill(el, ...kids) {
  el.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
  return el;
}

function fmtNum(n) { return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'); }

function fmtMs(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

function fmtTime(ms) { return ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '–'; }

function shortId(id) { return id ? `${id.slice(0, 8)}…${id.slice(-4)}` : ''; }

function statusBadge(status) {
  return h('span', { class: `status s-${status}`, dataset: { status } }, status);
}

function jobLink(id, text) { return h('a', { href: `#/job/${id}`, class: 'mono' }, text || shortId(id)); }

function setLive(text) { document.getElementById('live').textContent = text; }

function main() { return document.getElementById('main'); }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

// One API call: JSON in, JSON out; a 401 asks for a token and retries the
// page once one is given.
async function api(path, opts) {
  const o = opts || {};
  // A request that has not answered in 15 s is given up (the caller's
  // next read tries again), so one stuck connection never stalls a page.
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(new Error(`${path} did not answer within 15 s`)), 15000);
  const onAbort = () => timeout.abort(o.signal.reason);
  if (o.signal) {
    if (o.signal.aborted) timeout.abort(o.signal.reason);
    else o.signal.addEventListener('abort', onAbort, { once: true });
  }
  try {
    return await request(path, o, timeout.signal);
  } finally {
    clearTimeout(timer);
    if (o.signal) o.signal.removeEventListener('abort', onAbort);
  }
}

async function request(path, o, signal) {
  const init = { method: o.method || 'GET', headers: authHeaders(), signal, cache: 'no-store' };
  if (o.body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(o.body);
  }
  const res = await fetch(path, init);
  let body = null;
  try { body = await res.json(); } catch (_) { body = null; }
  if (res.status === 401) {
    askToken(token ? 'That token was refused. Enter another.' : 'This coordinator asks for a bearer token.');
    throw new ApiError(401, (body && body.error) || 'unauthorized');
  }
  if (!res.ok) throw new ApiError(res.status, (body && body.error) || `HTTP ${res.status}`);
  return body;
}

function quiet(e) { return e && (e.name === 'AbortError' || e.status === 401); }

function showError(where, e) {
  if (quiet(e)) return;
  fill(where, h('div', { class: 'notice bad', role: 'alert' }, e.message || String(e)));
}

// --------------------------------------------------------------- dialogs

function askToken(why) {
  const d = document.getElementById('token-dialog');
  document.getElementById('token-why').textContent = why;
  if (!d.open) d.showModal();
  document.getElementById('token-input').focus();
}

function setupDialogs() {
  const form = document.getElementById('token-form');
  form.addEventListener('submit', () => {
    const v = document.getElementById('token-input').value.trim();
    if (!v) return;
    token = v;
    sessionStorage.setItem(TOKEN_KEY, v);
    document.getElementById('token-input').value = '';
    document.getElementById('signout').hidden = false;
    route();
  });
  const out = document.getElementById('signout');
  out.hidden = !token;
  out.addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    out.hidden = true;
    route();
  });
}

// Resolves true when the operator confirms.
function confirmAction(text, label, danger) {
  const d = document.getElementById('confirm-dialog');
  document.getElementById('confirm-text').textContent = text;
  const yes = document.getElementById('confirm-yes');
  yes.textContent = label;
  yes.className = danger ? 'danger' : 'primary';
  d.returnValue = '';
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.showModal();
    document.getElementById('confirm-no').focus();
  });
}

// ------------------------------------------------------------ event stream

// Follows an SSE route with fetch(): the token in a header, the position in
// Last-Event-ID on every reconnect (backoff up to 15 s; a stream silent for
// 45 s, three missed keep-alives, counts as dropped).
function openStream(path, on) {
  let lastId = null;
  let ctrl = null;
  let stopped = false;
  let tries = 0;
  let timer = null;
  let silence = null;

  function dispatch(block) {
    let event = 'message';
    let id = null;
    const data = [];
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id') id = value;
    }
    if (id !== null) lastId = id;
    if (!data.length) return;
    let parsed;
    try { parsed = JSON.parse(data.join('\n')); } catch (_) { return; }
    on.event(event, parsed, id);
  }

  async function connect() {
    ctrl = new AbortController();
    const headers = authHeaders({ Accept: 'text/event-stream' });
    if (lastId !== null) headers['Last-Event-ID'] = lastId;
    const arm = () => {
      clearTimeout(silence);
      silence = setTimeout(() => ctrl.abort(), 45000);
    };
    try {
      arm();
      const res = await fetch(path, { headers, signal: ctrl.signal, cache: 'no-store' });
      if (res.status === 401) {
        askToken('This coordinator asks for a bearer token.');
        return;
      }
      if (!res.ok) {
        let reason = `HTTP ${res.status}`;
        try { reason = (await res.json()).error || reason; } catch (_) { /* not JSON */ }
        if (res.status < 500) { on.fatal(reason); return; }
        throw new Error(reason);
      }
      tries = 0;
      on.state('live');
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        buf += value.replace(/\r\n?/g, '\n');
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          dispatch(block);
        }
      }
    } catch (_) {
      // Dropped or aborted: reconnect below unless stopped.
    } finally {
      clearTimeout(silence);
    }
    if (stopped) return;
    tries += 1;
    const wait = Math.min(15000, 500 * 2 ** Math.min(tries, 5));
    on.state(`reconnecting in ${Math.round(wait / 1000)} s`);
    timer = setTimeout(connect, wait);
  }

  connect();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      clearTimeout(silence);
      if (ctrl) ctrl.abort();
    },
    lastId() { return lastId; },
  };
}

// ------------------------------------------------------------- components

// A stacked bar of counts by status, with a legend in words.
function countsBar(counts, total, opts) {
  const o = opts || {};
  const sum = total || BAR_KEYS.reduce((a, s) => a + (counts[s] || 0), 0);
  const bar = h('div', { class: `bar${o.big ? ' big' : ''}`, role: 'img' });
  const words = [];
  for (const s of BAR_KEYS) {
    const n = counts[s] || 0;
    if (!n) continue;
    words.push(`${fmtNum(n)} ${LABELS[s] || s}`);
    bar.append(h('span', { style: `width:${(100 * n) / Math.max(sum, 1)}%;background:${COLORS[s]}` }));
  }
  bar.setAttribute('aria-label', words.length ? words.join(', ') : 'none yet');
  const legend = h('div', { class: 'legend' });
  for (const s of BAR_KEYS) {
    const n = counts[s] || 0;
    if (!n && !(o.always || []).includes(s)) continue;
    legend.append(h('span', { dataset: { count: s } },
      h('span', { class: 'sw', style: `background:${COLORS[s]}`, 'aria-hidden': 'true' }),
      `${fmtNum(n)} ${LABELS[s] || s}`));
  }
  return h('div', {}, bar, legend);
}

function childrenCounts(c) {
  const open = Math.max(0, (c.total || 0) - (c.completed || 0) - (c.failed || 0) - (c.cancelled || 0));
  return { completed: c.completed || 0, failed: c.failed || 0, cancelled: c.cancelled || 0, open };
}

// ---------------------------------------------------------------- jobs page

function jobsPage(params) {
  const root = main();
  const status = params.get('status') || '';
  const kind = params.get('kind') || '';
  const cursor = params.get('cursor') || '';
  const back = params.get('back') || '';
  let timer = null;
  let ctrl = null;
  let stopped = false;

  const statusSel = h('select', { id: 'filter-status', name: 'status' },
    h('option', { value: '' }, 'any'),
    ['pending', 'running', 'waiting', 'paused', 'completed', 'failed', 'cancelled'].map((s) =>
      h('option', { value: s, selected: s === status }, s)));
  const kindIn = h('input', { id: 'filter-kind', name: 'kind', value: kind, placeholder: 'e.g. demo.wordcount', size: 22 });
  const form = h('form', { class: 'filters', role: 'search', onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (statusSel.value) q.set('status', statusSel.value);
    if (kindIn.value.trim()) q.set('kind', kindIn.value.trim());
    location.hash = `#/jobs${q.toString() ? `?${q}` : ''}`;
  } },
  h('label', { for: 'filter-status' }, 'Status'), statusSel,
  h('label', { for: 'filter-kind' }, 'Kind'), kindIn,
  h('button', { type: 'submit' }, 'Filter'));
  const body = h('tbody', { id: 'jobs-body' });
  const table = h('div', { class: 'table-wrap' }, h('table', { id: 'jobs' },
    h('caption', { class: 'muted', style: 'text-align:left' }, 'Root jobs, newest first'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Job'), h('th', { scope: 'col' }, 'Kind'), h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col' }, 'Children'), h('th', { scope: 'col', class: 'num' }, 'Age'),
      h('th', { scope: 'col', class: 'num' }, 'Duration'), h('th', { scope: 'col', class: 'hide-narrow' }, 'Phase'))),
    body));
  const pager = h('div', { class: 'pager' });
  const msg = h('div', { 'aria-live': 'polite' });
  fill(root, h('h1', {}, 'Jobs'), form, msg, table, pager);

  // Rows are kept by job and updated in place, so a refresh never takes
  // the keyboard focus (or a click target) away from a row's link.
  const rowsById = new Map();
  function row(j) {
    const c = j.children || {};
    const total = c.expected || c.total || 0;
    const done = (c.completed || 0) + (c.failed || 0) + (c.cancelled || 0);
    const now = Date.now();
    const finished = j.finished_at ? Date.parse(j.finished_at) : null;
    let tr = rowsById.get(j.id);
    if (!tr) {
      tr = h('tr', { dataset: { job: j.id } }, h('td', {}, jobLink(j.id)),
        h('td', {}), h('td', {}), h('td', {}), h('td', { class: 'num' }), h('td', { class: 'num' }), h('td', { class: 'hide-narrow' }));
      rowsById.set(j.id, tr);
    }
    tr.dataset.status = j.status;
    const cells = tr.children;
    cells[1].textContent = j.kind;
    cells[2].replaceChildren(statusBadge(j.status));
    cells[3].replaceChildren(total ? h('div', {}, countsBar(childrenCounts(c), total), h('span', { class: 'muted' }, `${fmtNum(done)} of ${fmtNum(total)}`)) : h('span', { class: 'muted' }, '–'));
    cells[4].textContent = fmtMs(now - j.created_ms);
    cells[5].textContent = fmtMs((finished || now) - j.created_ms);
    cells[6].textContent = `${j.phase} (${j.phase_status})`;
    return tr;
  }

  function showRows(rows) {
    rows.forEach((tr, i) => {
      if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
    });
    while (body.children.length > rows.length) body.lastElementChild.remove();
    const keep = new Set(rows);
    for (const [id, tr] of rowsById) if (!keep.has(tr)) rowsById.delete(id);
  }

  async function load() {
    if (stopped) return;
    ctrl = new AbortController();
    const q = new URLSearchParams({ limit: '50' });
    if (status) q.set('status', status);
    if (kind) q.set('kind', kind);
    if (cursor) q.set('cursor', cursor);
    try {
      const page = await api(`/v1/jobs?${q}`, { signal: ctrl.signal });
      msg.replaceChildren();
      showRows(page.jobs.length ? page.jobs.map(row) : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No jobs match.'))]);
      const links = [];
      if (cursor) {
        const prev = new URLSearchParams(params);
        const stack = back ? back.split(',') : [];
        const to = stack.pop() || '';
        if (to) prev.set('cursor', to); else prev.delete('cursor');
        if (stack.length) prev.set('back', stack.join(',')); else prev.delete('back');
        links.push(h('a', { href: `#/jobs?${prev}` }, '← Newer'));
      }
      if (page.next_cursor) {
        const next = new URLSearchParams(params);
        next.set('cursor', page.next_cursor);
        next.set('back', (back ? `${back},` : '') + cursor);
        links.push(h('a', { href: `#/jobs?${next}`, id: 'older' }, 'Older →'));
      }
      fill(pager, ...links);
      setLive(cursor ? 'page loaded' : `live · updated ${new Date().toLocaleTimeString('en-GB')}`);
    } catch (e) {
      showError(msg, e);
    }
    // The first page follows new submissions; older pages hold still.
    if (!cursor && !stopped) timer = setTimeout(load, document.hidden ? 10000 : 2000);
  }
  load();
  return { stop() { stopped = true; clearTimeout(timer); if (ctrl) ctrl.abort(); } };
}

// ----------------------------------------------------------------- job page

function jobPage(id) {
  const root = main();
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  let stream = null;
  let job = null;
  let treeCounts = {};
  let lastMove = Date.now();
  const samples = []; // [ms, ended jobs]
  const timers = new Set();
  const later = (fn, ms) => { const t = setTimeout(() => { timers.delete(t); fn(); }, ms); timers.add(t); return t; };

  const head = h('div', { id: 'job-head' }, h('h1', {}, 'Job ', h('span', { class: 'mono' }, id)));
  const why = h('div', { id: 'why', class: 'why', hidden: true, role: 'status' });
  const note = h('div', { 'aria-live': 'polite' });
  const buttons = h('div', { class: 'actions', id: 'controls' });
  const treeBox = h('section', { class: 'panel', id: 'tree', 'aria-labelledby': 'tree-h' }, h('h2', { id: 'tree-h' }, 'Tree'));
  const chartBox = h('section', { class: 'panel', id: 'rate', 'aria-labelledby': 'rate-h' }, h('h2', { id: 'rate-h' }, 'Throughput and ETA'));
  const canvas = h('canvas', { class: 'chart', width: 560, height: 160, role: 'img', 'aria-label': 'Jobs ended per second' });
  const rateText = h('div', { class: 'stats', id: 'rate-stats' });
  chartBox.append(rateText, canvas);
  const failBox = h('section', { class: 'panel', id: 'failures', hidden: true, 'aria-labelledby': 'fail-h' }, h('h2', { id: 'fail-h' }, 'Failed children'));
  const failList = h('div', {});
  failBox.append(failList);
  const phaseBox = h('section', { class: 'panel', id: 'phases', 'aria-labelledby': 'phases-h' }, h('h2', { id: 'phases-h' }, 'Phases'));
  const kidsBox = h('section', { class: 'panel', id: 'children', 'aria-labelledby': 'kids-h' }, h('h2', { id: 'kids-h' }, 'Children'));
  const logBox = h('section', { class: 'panel', id: 'logs', 'aria-labelledby': 'logs-h' }, h('h2', { id: 'logs-h' }, 'Log'));
  const logPre = h('pre', { class: 'logs', tabindex: 0, 'aria-label': 'Log lines' });
  logBox.append(logPre);
  fill(root, head, why, note, buttons, h('div', { class: 'grid' }, treeBox, chartBox), failBox,
    h('div', { class: 'grid' }, phaseBox, logBox), kidsBox);

  // -- the job itself
  function renderHead() {
    const j = job;
    const meta = h('div', { class: 'meta' },
      h('span', {}, 'kind ', h('b', {}, j.kind)),
      h('span', {}, 'phase ', h('b', {}, `${j.phase} (${j.phase_status})`), ` attempt ${j.attempt}`),
      h('span', {}, 'created ', h('b', {}, fmtTime(j.created_ms))),
      h('span', {}, 'duration ', h('b', {}, fmtMs((j.finished_ms || Date.now()) - j.created_ms))),
      j.parent_id ? h('span', {}, 'parent ', jobLink(j.parent_id), ` · child #${j.child_index}`) : null,
      j.root_id !== j.id ? h('span', {}, 'root ', jobLink(j.root_id)) : null);
    const prog = j.progress ? h('div', { class: 'muted' }, `progress ${fmtNum(j.progress.done)} / ${fmtNum(j.progress.total)}${j.progress.message ? ` · ${j.progress.message}` : ''}`) : null;
    fill(head, 
      h('h1', {}, `${j.kind} `, h('span', { id: 'job-status' }, statusBadge(j.status))),
      h('div', { class: 'mono muted' }, j.id), meta, prog,
      j.error ? h('div', { class: 'error-text', id: 'job-error' }, `Error: ${j.error}`) : null,
      j.warning ? h('div', { class: 'notice' }, `Warning: ${j.warning}`) : null,
      j.control_pending && j.control_pending.length ? h('div', { class: 'notice' }, `Carrying ${j.control_pending.join(', ')} down the subtree…`) : null);
    document.title = `${j.kind} ${j.status} · Tributary`;
    renderButtons();
    renderPhases();
  }

  function renderButtons() {
    const s = job.status;
    const make = (action, label, enabled, text, danger) => h('button', {
      type: 'button', id: `btn-${action}`, class: danger ? 'danger' : '', disabled: !enabled,
      onclick: () => steer(action, label, text, danger),
    }, label);
    fill(buttons, 
      make('pause', 'Pause', ['pending', 'running', 'waiting'].includes(s), 'Pause this job and its whole subtree? Running phases finish; nothing new starts until you resume.'),
      make('resume', 'Resume', s === 'paused' || (job.control_pending || []).includes('pause'), 'Resume this job and release everything the pause held?'),
      make('cancel', 'Cancel', !TERMINAL.has(s), 'Cancel this job and every open job below it? This cannot be undone (retry runs it again).', true),
      make('retry', 'Retry', s === 'failed' || s === 'cancelled', 'Run this job again from the phase it ended in?'));
  }

  async function steer(action, label, text, danger) {
    if (!(await confirmAction(text, label, danger))) return;
    try {
      const body = action === 'cancel' ? { reason: 'cancelled from the dashboard' } : undefined;
      const r = await api(`/v1/jobs/${id}/${action}`, { method: 'POST', body, signal });
      fill(note, h('div', { class: 'notice', id: 'steered' }, `${action}: the job is now ${r.status}.`));
      refreshJob();
    } catch (e) {
      showError(note, e);
    }
  }

  function renderPhases() {
    const list = h('ol', { class: 'timeline' });
    for (const p of job.phases) {
      list.append(h('li', { dataset: { phase: p.name, status: p.status } },
        h('b', {}, p.name), ` attempt ${p.attempt} · `, h('span', {}, p.status),
        p.finished_ms ? h('span', { class: 'muted' }, ` · ended ${fmtTime(p.finished_ms)}`) : null,
        p.error ? h('div', { class: 'error-text' }, p.error) : null));
    }
    fill(phaseBox, h('h2', { id: 'phases-h' }, 'Phases'), list);
  }

  // Reads of the job and of /tree run one at a time, each kind on its own:
  // an answer never lands after a newer one, and a read asked for while one
  // is under way runs once it is done (never dropped).
  function refresher(read) {
    let running = false;
    let again = false;
    let timer = null;
    async function now() {
      if (running) { again = true; return; }
      running = true;
      try { await read(); } finally {
        running = false;
        if (again) { again = false; soon(); }
      }
    }
    // At most one read a second, however many events ask for one.
    function soon() { if (!timer) timer = later(() => { timer = null; now(); }, 1000); }
    return { now, soon };
  }

  const jobReads = refresher(async () => {
    try {
      job = await api(`/v1/jobs/${id}`, { signal });
      renderHead();
      renderKidsHead();
      renderTree();
      refreshWhy();
      if (job.children.failed > 0) loadFailures();
    } catch (e) {
      showError(note, e);
    }
  });
  const refreshJob = jobReads.now;
  const soonJob = jobReads.soon;

  // -- why it is still waiting
  let whyTimer = null;
  async function refreshWhy() {
    if (!job || TERMINAL.has(job.status)) { why.hidden = true; return; }
    const stalled = Date.now() - lastMove > 3000;
    if (!stalled && !['paused', 'pending'].includes(job.status)) { why.hidden = true; return; }
    try {
      const w = await api(`/v1/jobs/${id}/waiting`, { signal });
      if (TERMINAL.has(w.status)) { why.hidden = true; return; }
      const lines = [h('strong', {}, `Why is it still ${w.status}? ${w.reason}`)];
      if (w.children && w.children.open) {
        const by = Object.entries(w.children.open_by_stage).map(([k, v]) => `${fmtNum(v)} ${k}`).join(', ');
        lines.push(h('div', {}, `${fmtNum(w.children.open)} children open${by ? `: ${by}` : ''}`));
      }
      for (const q of w.queues || []) {
        if (q.state === 'found') lines.push(h('div', { class: 'muted' }, `queue ${q.kind}: ${fmtNum(q.messages)} ready, ${fmtNum(q.consumers)} consumers`));
        else lines.push(h('div', { class: 'muted' }, `queue ${q.kind}: ${q.state}`));
      }
      if (w.last_error) lines.push(h('div', { class: 'error-text' }, `last error: ${w.last_error}`));
      fill(why, ...lines);
      why.hidden = false;
    } catch (e) {
      if (!quiet(e)) why.hidden = true;
    }
  }
  // A tree that stops moving gets its answer without anyone asking.
  function watchStall() {
    whyTimer = later(() => { refreshWhy(); watchStall(); }, 3000);
  }

  // -- the tree: counts by status, and a bar per phase (per fan-out level)
  let tree = null;
  function renderTree() {
    const total = STATUSES.reduce((a, s) => a + (treeCounts[s] || 0), 0);
    const ended = (treeCounts.completed || 0) + (treeCounts.failed || 0) + (treeCounts.cancelled || 0);
    const parts = [h('h2', { id: 'tree-h' }, job && job.root_id !== id ? 'Tree of its root' : 'Tree')];
    const summary = h('div', { id: 'tree-counts', class: 'fanout' },
      h('div', { class: 'fanout-head' }, h('span', {}, `${fmtNum(total)} jobs`), h('span', {}, `${fmtNum(ended)} ended · ${total ? Math.floor((100 * ended) / total) : 0}%`)),
      countsBar(treeCounts, total, { big: true, always: ['completed', 'failed'] }));
    for (const s of STATUSES) summary.dataset[s] = String(treeCounts[s] || 0);
    summary.dataset.total = String(total);
    // When the first counts showed, for load-time measurements (ms since
    // the page's navigation began).
    if (total && !performance.getEntriesByName('tributary:tree').length) performance.mark('tributary:tree');
    parts.push(summary);
    if (job && job.children && job.children.total) {
      const c = job.children;
      const of = c.expected || c.total;
      parts.push(h('div', { class: 'fanout', id: 'own-fanout' },
        h('div', { class: 'fanout-head' }, h('span', {}, `This job's fan-out (phase ${job.phase_seq})`),
          h('span', {}, `${fmtNum(c.completed + c.failed + c.cancelled)} of ${fmtNum(of)}${c.expected === null ? ' spawned so far' : ''}`)),
        countsBar(childrenCounts(c), of)));
    }
    if (tree && tree.phases) {
      for (const [phase, byStatus] of Object.entries(tree.phases)) {
        const n = Object.values(byStatus).reduce((a, b) => a + b, 0);
        parts.push(h('div', { class: 'fanout', dataset: { phase } },
          h('div', { class: 'fanout-head' }, h('span', {}, `phase ${phase}`), h('span', { class: 'muted' }, `${fmtNum(n)} jobs`)),
          countsBar(byStatus, n)));
      }
    }
    fill(treeBox, ...parts);
  }

  const treeReads = refresher(async () => {
    try {
      tree = await api(`/v1/jobs/${id}/tree`, { signal });
      treeCounts = tree.counts;
      samples.push([Date.now(), tree.jobs - tree.remaining]);
      while (samples.length > 600) samples.shift();
      renderTree();
      renderRate();
    } catch (e) {
      if (!quiet(e)) showError(note, e);
    }
  });
  const refreshTree = treeReads.now;
  const soonTree = treeReads.soon;

  function renderRate() {
    if (!tree) return;
    const stat = (k, v, idAttr) => h('div', { id: idAttr }, h('div', { class: 'v' }, v), h('div', { class: 'k' }, k));
    fill(rateText, 
      stat('jobs / s', tree.rate_per_s === null ? '–' : tree.rate_per_s.toFixed(1), 'rate-value'),
      stat('remaining', fmtNum(tree.remaining)),
      stat('ETA', tree.eta_ms === null ? (tree.remaining ? 'unknown' : 'done') : fmtMs(tree.eta_ms), 'eta-value'),
      stat('elapsed', fmtMs(tree.elapsed_ms)));
    drawChart();
  }

  // Jobs ended per second between samples, drawn on a canvas (no library).
  function drawChart() {
    const ctx = canvas.getContext('2d');
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 560;
    const hgt = canvas.clientHeight || 160;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(hgt * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, hgt);
    const pts = [];
    for (let i = 1; i < samples.length; i++) {
      const dt = (samples[i][0] - samples[i - 1][0]) / 1000;
      if (dt > 0) pts.push([samples[i][0], Math.max(0, (samples[i][1] - samples[i - 1][1]) / dt)]);
    }
    ctx.fillStyle = '#57606a';
    ctx.font = '12px system-ui, sans-serif';
    if (pts.length < 2) {
      ctx.fillText('Collecting samples…', 10, 20);
      return;
    }
    const max = Math.max(1, ...pts.map((p) => p[1]));
    const t0 = pts[0][0];
    const t1 = pts[pts.length - 1][0];
    const x = (t) => 40 + ((w - 50) * (t - t0)) / Math.max(1, t1 - t0);
    const y = (v) => hgt - 20 - ((hgt - 30) * v) / max;
    ctx.strokeStyle = '#d0d7de';
    ctx.beginPath(); ctx.moveTo(40, y(0)); ctx.lineTo(w - 10, y(0)); ctx.stroke();
    ctx.fillText(`${max.toFixed(0)}/s`, 4, y(max) + 4);
    ctx.fillText('0', 26, y(0) + 4);
    ctx.fillText(`last ${fmtMs(t1 - t0)}`, w - 110, hgt - 4);
    ctx.strokeStyle = '#0969da';
    ctx.lineWidth = 2;
    ctx.beginPath();
    pts.forEach((p, i) => (i ? ctx.lineTo(x(p[0]), y(p[1])) : ctx.moveTo(x(p[0]), y(p[1]))));
    ctx.stroke();
  }

  // -- failed children, with their errors
  const failures = new Map();
  function renderFailures() {
    failBox.hidden = failures.size === 0;
    const rows = [...failures.values()].slice(-20).map((f) => h('tr', { dataset: { failed: f.id } },
      h('td', {}, jobLink(f.id)), h('td', { class: 'num' }, f.index === undefined || f.index === null ? '' : `#${f.index}`),
      h('td', {}, f.kind || ''), h('td', { class: 'error-text' }, f.error || '(no error text)')));
    fill(failList, h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Child'), h('th', { scope: 'col', class: 'num' }, 'Index'), h('th', { scope: 'col' }, 'Kind'), h('th', { scope: 'col' }, 'Error'))),
      h('tbody', { id: 'failures-body' }, rows))),
    job && job.children.failed > failures.size ? h('div', { class: 'muted' }, `${fmtNum(job.children.failed)} failed in all: filter the children below by status to page through them.`) : null);
  }
  let failuresLoaded = false;
  async function loadFailures() {
    if (failuresLoaded) return;
    failuresLoaded = true;
    try {
      const r = await api(`/v1/jobs?parent=${id}&status=failed&limit=20`, { signal });
      for (const j of r.jobs) failures.set(j.id, { id: j.id, index: j.child_index, kind: j.kind, error: j.error });
      renderFailures();
    } catch (e) {
      failuresLoaded = false;
      if (!quiet(e)) showError(note, e);
    }
  }

  // -- children, 100 at a time
  let kidsOpen = false;
  let kidsStatus = '';
  const kidsStack = [];
  let kidsCursor = '';
  const kidsBody = h('div', { id: 'children-page' });
  function renderKidsHead() {
    const c = job.children;
    const toggle = h('button', { type: 'button', id: 'children-toggle', 'aria-expanded': String(kidsOpen), onclick: () => {
      kidsOpen = !kidsOpen;
      renderKidsHead();
      if (kidsOpen) loadKids(); else kidsBody.replaceChildren();
    } }, kidsOpen ? 'Hide children' : `Show children (${fmtNum(c.total)})`);
    const sel = h('select', { id: 'children-status', 'aria-label': 'Children with status', onchange: (e) => {
      kidsStatus = e.target.value; kidsCursor = ''; kidsStack.length = 0; loadKids();
    } }, h('option', { value: '' }, 'any status'),
    ['pending', 'running', 'waiting', 'paused', 'completed', 'failed', 'cancelled'].map((s) => h('option', { value: s, selected: s === kidsStatus }, s)));
    fill(kidsBox, h('h2', { id: 'kids-h' }, 'Children'),
      c.total ? h('div', { class: 'filters' }, toggle, kidsOpen ? sel : null) : h('p', { class: 'muted' }, 'No children in its current fan-out.'),
      kidsBody);
  }
  async function loadKids() {
    const q = new URLSearchParams({ parent: id, limit: '100' });
    if (kidsStatus) q.set('status', kidsStatus);
    if (kidsCursor) q.set('cursor', kidsCursor);
    try {
      const r = await api(`/v1/jobs?${q}`, { signal });
      const rows = r.jobs.map((j) => h('tr', { dataset: { child: j.id, status: j.status } },
        h('td', { class: 'num' }, `#${j.child_index}`), h('td', {}, jobLink(j.id)), h('td', {}, j.kind),
        h('td', {}, statusBadge(j.status)), h('td', { class: 'num' }, j.attempt),
        h('td', { class: 'error-text' }, j.error || '')));
      const pager = h('div', { class: 'pager' },
        kidsStack.length ? h('button', { type: 'button', onclick: () => { kidsCursor = kidsStack.pop(); loadKids(); } }, '← Previous 100') : null,
        r.next_cursor ? h('button', { type: 'button', id: 'children-next', onclick: () => { kidsStack.push(kidsCursor); kidsCursor = r.next_cursor; loadKids(); } }, 'Next 100 →') : null);
      fill(kidsBody, h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Index', 'Child', 'Kind', 'Status', 'Attempt', 'Error'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'None.'))))), pager);
    } catch (e) {
      showError(kidsBody, e);
    }
  }

  // -- log tail
  const MAX_LOG = 500;
  function logLine(level, message, at) {
    logPre.append(h('span', { class: `lvl-${level}` }, `${fmtTime(at)} ${level.padEnd(5)} ${message}\n`));
    while (logPre.childNodes.length > MAX_LOG) logPre.firstChild.remove();
    logPre.scrollTop = logPre.scrollHeight;
  }
  async function loadLogs() {
    let after = 0;
    try {
      for (let i = 0; i < 20; i++) {
        const r = await api(`/v1/jobs/${id}/logs?after=${after}&limit=1000`, { signal });
        for (const l of r.logs) logLine(l.level, l.message, l.at_ms);
        if (r.logs.length < 1000) break;
        after = r.logs[r.logs.length - 1].id;
      }
      if (!logPre.childNodes.length) logPre.append(h('span', { class: 'muted' }, 'No log lines yet.\n'));
    } catch (e) {
      if (!quiet(e)) logPre.textContent = e.message;
    }
  }

  // -- events
  function onEvent(kind, data) {
    if (kind === 'snapshot') {
      treeCounts = data.counts || {};
      lastMove = Date.now();
      renderTree();
      if (data.reset) refreshJob();
      return;
    }
    if (kind === 'counts') {
      treeCounts = data.counts;
      lastMove = Date.now();
      renderTree();
      soonTree();
      // A child's own fan-out is not in its tree's events: read it again.
      if (job && (job.root_id !== id || job.children.total)) soonJob();
      return;
    }
    if (kind === 'status') {
      lastMove = Date.now();
      const d = data.data || {};
      if (data.job_id === id) soonJob();
      else if (d.status === 'failed' && job && data.job_id) {
        soonJob();
        if (!failures.has(data.job_id) && failures.size < 200) {
          failures.set(data.job_id, { id: data.job_id, error: d.error });
          renderFailures();
        }
      }
      return;
    }
    if (kind === 'progress' && data.job_id === id) { soonJob(); return; }
    if (kind === 'log' && data.job_id === id) {
      const d = data.data || {};
      if (logPre.firstChild && logPre.firstChild.classList && logPre.firstChild.classList.contains('muted')) logPre.replaceChildren();
      logLine(d.level || 'info', d.message || '', data.at_ms);
    }
  }

  (async () => {
    await refreshJob();
    if (!job) return;
    renderTree();
    refreshTree();
    loadLogs();
    watchStall();
    stream = openStream(`/v1/jobs/${id}/events`, {
      event: onEvent,
      state: (s) => setLive(`events ${s}`),
      fatal: (reason) => showError(note, new Error(reason)),
    });
  })();

  return {
    stop() {
      ctrl.abort();
      if (stream) stream.stop();
      for (const t of timers) clearTimeout(t);
      clearTimeout(whyTimer);
    },
  };
}

// --------------------------------------------------------------- fleet page

function fleetPage() {
  const root = main();
  const ctrl = new AbortController();
  const box = h('div', { id: 'fleet' });
  fill(root, h('h1', {}, 'Fleet'), box);
  let timer = null;
  const stat = (k, v, idAttr) => h('div', { id: idAttr }, h('div', { class: 'v' }, v), h('div', { class: 'k' }, k));
  const queueText = (q) => (q.state === 'found' ? `${fmtNum(q.messages)} ready · ${fmtNum(q.consumers)} consumers`
    : q.state === 'missing' ? 'no queue (no worker ever served it)' : `unknown: ${q.error}`);

  function chart(minutes) {
    const canvas = h('canvas', { class: 'chart', width: 560, height: 160, role: 'img',
      'aria-label': `Jobs ended per minute: ${minutes.map((m) => m.ended).join(', ')}` });
    requestAnimationFrame(() => {
      const ctx = canvas.getContext('2d');
      const dpr = window.devicePixelRatio || 1;
      const w = canvas.clientWidth || 560;
      const hgt = canvas.clientHeight || 160;
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(hgt * dpr);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      const max = Math.max(1, ...minutes.map((m) => m.ended));
      const slot = (w - 50) / Math.max(1, minutes.length);
      ctx.font = '12px system-ui, sans-serif';
      ctx.fillStyle = '#57606a';
      ctx.fillText(`${fmtNum(max)}/min`, 4, 14);
      ctx.fillText('-15 min', 40, hgt - 4);
      ctx.fillText('now', w - 30, hgt - 4);
      ctx.fillStyle = '#1a7f37';
      minutes.forEach((m, i) => {
        const bh = ((hgt - 40) * m.ended) / max;
        ctx.fillRect(40 + i * slot + 2, hgt - 20 - bh, Math.max(1, slot - 4), bh);
      });
    });
    return canvas;
  }

  async function load() {
    try {
      const f = await api('/v1/fleet', { signal: ctrl.signal });
      const ended = f.throughput.reduce((a, m) => a + m.ended, 0);
      const workers = f.workers.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'workers' },
        h('thead', {}, h('tr', {}, ['Worker', 'Host', 'Kinds', 'Running', 'Since'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, f.workers.map((w) => h('tr', { dataset: { worker: w.id } },
          h('td', { class: 'mono' }, w.id), h('td', {}, w.host || '–'), h('td', {}, w.kinds.join(', ')),
          h('td', { class: 'num' }, fmtNum(w.running)), h('td', { class: 'num' }, w.since_ms ? fmtMs(f.now_ms - w.since_ms) : '–'))))))
        : h('p', { class: 'muted' }, 'No worker is running a phase now (idle workers count as consumers of their queues).');
      const queues = f.queues.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'queues' },
        h('thead', {}, h('tr', {}, ['Kind', 'Queue'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, f.queues.map((q) => h('tr', { dataset: { queue: q.kind } }, h('td', {}, q.kind), h('td', {}, queueText(q)))))))
        : h('p', { class: 'muted' }, 'No kind has work about.');
      fill(box, 
        h('section', { class: 'panel', id: 'stats' }, h('h2', {}, 'Backlog and health'), h('div', { class: 'stats' },
          stat('outbox: due', `${fmtNum(f.outbox.due)}${f.outbox.capped ? '+' : ''}`, 'outbox-due'),
          stat('outbox: in backoff', fmtNum(f.outbox.delayed)),
          stat('oldest due', f.outbox.oldest_due_ms ? fmtMs(f.now_ms - f.outbox.oldest_due_ms) : '–'),
          stat('dead letters', f.dead_letters.state === 'found' ? fmtNum(f.dead_letters.messages) : f.dead_letters.state, 'dead-letters'),
          stat('fenced reports', fmtNum(f.fenced_reports), 'fenced'),
          stat('ended, 15 min', fmtNum(ended), 'ended-15m'))),
        h('div', { class: 'grid' },
          h('section', { class: 'panel', id: 'throughput' }, h('h2', {}, 'Jobs ended per minute, last 15 minutes'), chart(f.throughput)),
          h('section', { class: 'panel' }, h('h2', {}, 'Queues by kind'), queues)),
        h('section', { class: 'panel' }, h('h2', {}, 'Workers running phases'), workers));
      setLive(`updated ${new Date().toLocaleTimeString('en-GB')}`);
    } catch (e) {
      showError(box, e);
    }
    timer = setTimeout(load, document.hidden ? 15000 : 5000);
  }
  load();
  return { stop() { ctrl.abort(); clearTimeout(timer); } };
}

// ------------------------------------------------------------------ router

function route() {
  if (page) page.stop();
  page = null;
  setLive('');
  const hash = location.hash.replace(/^#/, '') || '/jobs';
  const [path, query] = hash.split('?');
  const params = new URLSearchParams(query || '');
  const parts = path.split('/').filter(Boolean);
  let nav = 'jobs';
  if (parts[0] === 'job' && parts[1]) {
    page = jobPage(decodeURIComponent(parts[1]));
  } else if (parts[0] === 'fleet') {
    nav = 'fleet';
    page = fleetPage();
  } else {
    document.title = 'Jobs · Tributary';
    page = jobsPage(params);
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
}

window.addEventListener('hashchange', () => { route(); main().focus({ preventScroll: true }); });
document.addEventListener('DOMContentLoaded', () => { setupDialogs(); route(); });
