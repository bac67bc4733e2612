// Annals console: the browser side of /console. Plain ES2020, no framework, no build step.
// Hash routes (#/overview, #/aggregates/{route}/{id}?version=N, #/live?after=P&type=&event=,
// #/read-side, #/read-side/{name}); every API call goes through api(), which adds the bearer
// token kept in sessionStorage and asks for one when the server answers 401 or 403.
'use strict';

// ---------------------------------------------------------------- utilities

const $ = (selector, root = document) => root.querySelector(selector);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const enc = encodeURIComponent;
const isDigits = (s) => typeof s === 'string' && /^\d+$/.test(s);
const FALLBACK_ROUTES = ['orders', 'customers', 'accounts'];
const SERIES_MAX = 8; // chart series colours: classes s0…s7 of console.css

/** An element: h('a', {href: '#', onclick: fn, 'data-test': 'x'}, 'text', child, [more]). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child != null && child !== false) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const num0 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const fmtInt = (n) => (n == null || !Number.isFinite(n) ? '–' : num0.format(n));
const fmtNum = (n, digits = 1) =>
  n == null || !Number.isFinite(n) ? '–' : n.toLocaleString(undefined, { maximumFractionDigits: digits });

function fmtBytes(n) {
  if (n == null || !Number.isFinite(n)) return 'n/a';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function fmtSeconds(s) {
  if (s == null || !Number.isFinite(s)) return '–';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** An RFC 3339 time of the API (microseconds, Z) shown to the millisecond. */
const fmtTime = (s) => (typeof s === 'string' ? s.replace('T', ' ').replace(/(\.\d{3})\d*Z$/, '$1Z') : '–');

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

/** A route hash: hashOf(['aggregates', 'orders', 'o-1'], {version: 3}). */
function hashOf(parts, query = {}) {
  const q = new URLSearchParams(Object.entries(query).filter(([, v]) => v != null && v !== '')).toString();
  return `#/${parts.map(enc).join('/')}${q ? `?${q}` : ''}`;
}

function parseHash(hash) {
  const raw = hash.replace(/^#\/?/, '');
  const cut = raw.indexOf('?');
  const path = cut < 0 ? raw : raw.slice(0, cut);
  const decode = (s) => { try { return decodeURIComponent(s); } catch { return s; } };
  const parts = path.split('/').filter(Boolean).map(decode);
  const query = Object.fromEntries(new URLSearchParams(cut < 0 ? '' : raw.slice(cut + 1)));
  return { parts, query };
}

/** Runs fn over items, at most `limit` at once. */
async function eachLimit(items, limit, fn) {
  let next = 0;
  const worker = async () => { while (next < items.length) { const i = next++; await fn(items[i], i); } };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

// ---------------------------------------------------------------- API and auth

const TOKEN_KEY = 'annals.console.token';
const auth = { prompt: null, declined: false };
const getToken = () => sessionStorage.getItem(TOKEN_KEY);

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function readProblem(res) {
  const text = await res.text().catch(() => '');
  try {
    const problem = JSON.parse(text);
    if (problem && typeof problem === 'object') return problem;
  } catch { /* not JSON: a proxy's page, say */ }
  return { title: res.statusText || 'Error', status: res.status, detail: text.trim().slice(0, 300) || `HTTP ${res.status}` };
}

/**
 * Calls the API: JSON back (or the Response itself with {raw: true}), an ApiError carrying the
 * problem details otherwise. On 401/403 it asks for a token and tries again.
 */
async function api(path, options = {}) {
  const { raw = false, ...init } = options;
  for (;;) {
    const token = getToken();
    const headers = new Headers(init.headers || {});
    if (token) headers.set('Authorization', `Bearer ${token}`);
    if (!headers.has('Accept')) headers.set('Accept', 'application/json');
    let res;
    try {
      res = await fetch(path, { cache: 'no-store', ...init, headers });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, { title: 'Network error', detail: `the server could not be reached (${e.message})` });
    }
    if (res.status === 401 || res.status === 403) {
      const problem = await readProblem(res);
      if (getToken() !== token) continue; // signed in meanwhile: try the new token
      if (auth.declined) throw new ApiError(res.status, problem);
      try {
        await askToken(problem.detail);
      } catch {
        throw new ApiError(res.status, problem);
      }
      continue;
    }
    if (!res.ok) throw new ApiError(res.status, await readProblem(res));
    if (raw) return res;
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }
}

/** Shows the token dialog (one at a time); resolves once a token is stored, rejects on cancel. */
function askToken(message, explicit = false) {
  if (explicit) auth.declined = false;
  if (auth.prompt) return auth.prompt;
  auth.prompt = new Promise((resolve, reject) => {
    const dialog = $('#token-dialog');
    const input = $('#token-input');
    $('#token-message').textContent = message || 'This server needs an access token.';
    input.value = '';
    const done = (ok) => {
      $('#token-form').onsubmit = null;
      $('#token-cancel').onclick = null;
      dialog.oncancel = null;
      if (dialog.open) dialog.close();
      auth.prompt = null;
      if (ok) resolve(); else { auth.declined = true; reject(new Error('no token given')); }
    };
    $('#token-form').onsubmit = (e) => {
      e.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      updateSignOut();
      done(true);
    };
    $('#token-cancel').onclick = () => done(false);
    dialog.oncancel = (e) => { e.preventDefault(); done(false); };
    dialog.showModal();
    input.focus();
  });
  return auth.prompt;
}

function updateSignOut() {
  $('#sign-out').hidden = !getToken();
}

function signOut(e) {
  e.preventDefault();
  sessionStorage.removeItem(TOKEN_KEY);
  auth.declined = false;
  updateSignOut();
  route();
}

/** Resolves true when the user confirms. */
function confirmDialog(title, text, yes) {
  return new Promise((resolve) => {
    const dialog = $('#confirm-dialog');
    $('#confirm-title').textContent = title;
    $('#confirm-text').textContent = text;
    $('#confirm-yes').textContent = yes;
    const done = (ok) => {
      $('#confirm-yes').onclick = null;
      $('#confirm-no').onclick = null;
      dialog.oncancel = null;
      if (dialog.open) dialog.close();
      resolve(ok);
    };
    $('#confirm-yes').onclick = () => done(true);
    $('#confirm-no').onclick = () => done(false);
    dialog.oncancel = (e) => { e.preventDefault(); done(false); };
    dialog.showModal();
    $('#confirm-no').focus();
  });
}

function errorBox(e) {
  const problem = e.problem || {};
  const box = h('div', { class: 'error', role: 'alert', 'data-test': 'error' },
    h('strong', problem.title || 'Error', e.status ? ` (${e.status})` : ''), ' ',
    h('span', { class: 'detail' }, problem.detail || e.message));
  if (e.status === 401 || e.status === 403) {
    box.append(' ', h('button', { type: 'button', class: 'link', onclick: () => askToken(problem.detail, true).then(route, () => {}) }, 'Sign in'));
  }
  return box;
}

const emptyState = (title, detail) => h('div', { class: 'empty', 'data-test': 'empty' }, h('strong', title), detail ? h('p', detail) : null);

/** A JSON payload folded to one line; unfolds to the pretty form, rendered when first opened. */
function payloadView(data) {
  const line = JSON.stringify(data) ?? 'null';
  const pre = h('pre', { class: 'json' });
  const details = h('details', { class: 'payload' }, h('summary', { title: line.slice(0, 2000) }, line.length > 140 ? `${line.slice(0, 140)}…` : line), pre);
  details.addEventListener('toggle', () => { if (details.open && !pre.textContent) pre.textContent = JSON.stringify(data, null, 2); });
  return details;
}

function metaView(ev) {
  const line = (label, value) => (value == null ? null : h('div', h('span', { class: 'muted' }, `${label} `), h('code', value)));
  const lines = [line('command', ev.command_id), line('correlation', ev.correlation_id), line('causation', ev.causation_id)].filter(Boolean);
  const chain = h('div', h('a', { href: hashOf(['chain', ev.event_id]), 'data-test': 'chain-link', title: 'What caused this event and what it caused' }, 'chain →'));
  return lines.length ? [...lines, chain] : [h('span', { class: 'muted' }, '–'), chain];
}

// ---------------------------------------------------------------- chain (sagas and causation)

/** #/chain/{event_id}: the events that caused this one and those it caused, as a timeline. */
async function chainPage(page, [eventId]) {
  main.append(h('h1', 'Chain'), h('p', { class: 'muted' }, 'What caused this event, and what it caused: commands a saga sent because of an event carry that event as their causation and the business transaction as their correlation.'));
  if (!eventId) { main.append(emptyState('No event chosen', 'Open a chain from an event\'s “chain →” link in a history or the live feed.')); page.ready(); return; }
  const box = h('div', { class: 'card' }, h('span', { class: 'muted' }, 'loading…'));
  main.append(box);
  try {
    // The index trails the log by a moment: a fresh event may need a second look.
    let reply = null;
    for (let attempt = 0; reply === null; attempt += 1) {
      try {
        reply = await api(`/v1/console/chain/${enc(eventId)}`);
      } catch (e) {
        if (e.status !== 404 || attempt >= 5 || !page.alive()) throw e;
        await new Promise((resolve) => { page.timeout(resolve, 1000); });
      }
    }
    if (!page.alive()) return;
    const byId = new Map();
    const depth = (ev) => { let d = 0; let at = ev; while (at && at.causation_id && byId.has(at.causation_id) && d < 64) { at = byId.get(at.causation_id); d += 1; } return d; };
    const eventItem = (ev) => {
      const r = routeOfType(ev.aggregate);
      const who = r ? h('a', { href: hashOf(['aggregates', r, ev.id], { version: ev.version }) }, `${ev.aggregate} ${ev.id}`) : `${ev.aggregate} ${ev.id}`;
      return h('li', { 'data-test': 'chain-event', 'data-position': ev.position, 'data-event-type': ev.type, class: ev.event_id === eventId ? 'at' : null },
        h('div', { class: 'chain-step', 'data-depth': Math.min(depth(ev), 8) },
          h('span', { class: 'num muted' }, `#${ev.position}`), ' ',
          h('span', { class: 'etype' }, ev.type), ' · ', who, h('span', { class: 'muted' }, ` v${ev.version} · ${fmtTime(ev.recorded_at)}`),
          ev.command_id && ev.command_id.startsWith('pm:') ? h('div', { class: 'muted' }, `sent by the process manager ${ev.command_id.split(':')[1]}`) : null,
          payloadView(ev.data)));
    };
    const deadlineItem = (d) => {
      const r = routeOfType(d.aggregate);
      const target = r ? h('a', { href: hashOf(['aggregates', r, d.id]) }, `${d.aggregate} ${d.id}`) : `${d.aggregate} ${d.id}`;
      const cause = byId.get(d.causation_id);
      return h('li', { 'data-test': 'chain-deadline' },
        h('span', { class: 'muted' }, `due ${fmtTime(d.due)} · `), 'to ', target,
        cause ? h('span', { class: 'muted' }, ` · set by #${cause.position} ${cause.type}`) : null,
        payloadView(d.command));
    };
    const list = h('ol', { class: 'chain', 'data-test': 'chain' });
    const deadlineList = h('ul', { class: 'deadlines' });
    const none = h('p', { class: 'muted', 'data-test': 'no-deadlines' }, 'None: no process manager waits on a deadline for this chain.');
    const more = h('div', { class: 'pager' });
    const show = (r) => {
      for (const ev of r.events) byId.set(ev.event_id, ev);
      list.append(...r.events.map(eventItem));
      deadlineList.append(...(r.deadlines || []).map(deadlineItem));
      none.hidden = deadlineList.children.length > 0;
      more.replaceChildren(r.next_after == null ? '' : h('button', { type: 'button', 'data-test': 'chain-more', onclick: async (e) => {
        e.currentTarget.disabled = true;
        try { show(await api(`/v1/console/chain/${enc(eventId)}?after=${r.next_after}`)); } catch (err) { more.replaceChildren(errorBox(err)); }
      } }, 'More →'));
    };
    box.replaceChildren(list, more,
      reply.truncated ? h('div', { class: 'notice' }, 'This chain is longer than the index walks (10,000 events): the rest is not shown.') : '',
      h('h2', 'Pending deadlines'), deadlineList, none);
    show(reply);
  } catch (e) {
    if (!page.alive()) return;
    box.replaceChildren(e.status === 404 ? emptyState('Not in the index yet', 'The causation index has not reached this event, or does not index its aggregate type. Try again in a moment.') : errorBox(e));
  }
  page.ready();
}

// ---------------------------------------------------------------- routing

let main = null;
let scope = null;
let routeGen = 0;
const routes = { list: FALLBACK_ROUTES.slice() }; // aggregate routes served
const PAGES = { overview: overviewPage, aggregates: aggregatesPage, live: livePage, 'read-side': readSidePage, chain: chainPage };
const TITLES = { overview: 'Overview', aggregates: 'Aggregates', live: 'Live feed', 'read-side': 'Read side', chain: 'Chain' };

/** What a page may hold on to: timers and clean-ups, ended when the route changes. */
function makeScope(gen) {
  const timers = new Set();
  const cleanups = [];
  return {
    alive: () => gen === routeGen,
    ready() {
      if (gen !== routeGen || document.body.dataset.ready === 'true') return;
      document.body.dataset.ready = 'true';
      main.append(h('span', { class: 'ready-mark', 'data-test': 'ready' }));
    },
    timeout(fn, ms) {
      const id = setTimeout(() => { timers.delete(id); if (gen === routeGen) fn(); }, ms);
      timers.add(id);
      return id;
    },
    clear(id) { clearTimeout(id); timers.delete(id); },
    onLeave(fn) { cleanups.push(fn); },
    leave() { timers.forEach(clearTimeout); timers.clear(); cleanups.forEach((fn) => fn()); },
  };
}

function route() {
  if (scope) scope.leave();
  routeGen += 1;
  scope = makeScope(routeGen);
  document.body.dataset.ready = 'false';
  main.replaceChildren();
  const { parts, query } = parseHash(location.hash);
  const page = Object.prototype.hasOwnProperty.call(PAGES, parts[0]) ? parts[0] : 'overview';
  if (page !== parts[0]) history.replaceState(null, '', '#/overview');
  for (const link of document.querySelectorAll('[data-nav]')) {
    const active = link.dataset.nav === page;
    link.classList.toggle('active', active);
    if (active) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  document.title = `${TITLES[page]} · Annals console`;
  const here = scope;
  Promise.resolve(PAGES[page](here, page === parts[0] ? parts.slice(1) : [], query)).catch((e) => {
    if (!here.alive() || e.name === 'AbortError') return;
    main.append(errorBox(e));
    here.ready();
  });
}

// ---------------------------------------------------------------- search (top bar)

const search = { items: [], active: -1, req: 0 };

function setupSearch() {
  const form = $('#search');
  const type = $('#search-type');
  const input = $('#search-id');
  const list = $('#suggestions');
  fillRoutes();
  const hide = () => { list.hidden = true; search.items = []; search.active = -1; };
  const open = (id) => {
    hide();
    input.value = id;
    input.blur();
    const target = hashOf(['aggregates', type.value, id]);
    if (location.hash === target) route(); else location.hash = target;
  };
  const mark = () => [...list.children].forEach((li, i) => li.classList.toggle('active', i === search.active));
  const suggest = async () => {
    const my = ++search.req;
    const prefix = input.value.trim();
    try {
      const q = new URLSearchParams({ prefix, limit: '20' });
      const { ids } = await api(`/v1/console/aggregates/${enc(type.value)}?${q}`);
      if (my !== search.req || document.activeElement !== input) return;
      search.items = ids;
      search.active = -1;
      list.replaceChildren(...ids.map((id) => h('li', { role: 'option', 'data-test': 'suggestion', onmousedown: (e) => { e.preventDefault(); open(id); } }, id)));
      if (!ids.length) list.append(h('li', { class: 'muted' }, prefix ? `no ${type.value} id starts with “${prefix}”` : `no ${type.value} yet`));
      list.hidden = false;
    } catch {
      if (my === search.req) hide();
    }
  };
  const later = debounce(suggest, 200);
  input.addEventListener('input', later);
  input.addEventListener('focus', later);
  input.addEventListener('blur', () => setTimeout(hide, 150));
  type.addEventListener('change', () => { if (document.activeElement === input) later(); });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { hide(); return; }
    if ((e.key !== 'ArrowDown' && e.key !== 'ArrowUp') || !search.items.length) return;
    e.preventDefault();
    const n = search.items.length;
    search.active = e.key === 'ArrowDown' ? (search.active + 1) % n : (search.active - 1 + n) % n;
    mark();
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const id = search.active >= 0 ? search.items[search.active] : input.value.trim();
    if (id) open(id); else input.focus();
  });
}

function fillRoutes() {
  const type = $('#search-type');
  const keep = type.value;
  type.replaceChildren(...routes.list.map((r) => h('option', { value: r }, r)));
  type.value = routes.list.includes(keep) ? keep : (routes.list.includes('orders') ? 'orders' : routes.list[0]);
}

/** The aggregate routes served, from the API description (each has /v1/{route}/{id}/commands). */
async function loadRoutes() {
  try {
    const doc = await api('/openapi.json');
    const found = Object.keys(doc.paths || {})
      .map((p) => /^\/v1\/([^/{}]+)\/\{id\}\/commands$/.exec(p))
      .filter(Boolean).map((m) => m[1]).sort();
    if (found.length) { routes.list = found; fillRoutes(); }
  } catch { /* keep the fallback list */ }
}

/** The route of an aggregate type name (`Order` → `orders`), if served. */
function routeOfType(type) {
  const guess = `${String(type).toLowerCase()}s`;
  return routes.list.includes(guess) ? guess : null;
}

// ---------------------------------------------------------------- overview

const WINDOW_MS = 5 * 60 * 1000;
const overview = { samples: [], error: null, view: null };

/** Polls /v1/console/overview every second, whatever the page, keeping 5 minutes of samples. */
async function pollOverview() {
  try {
    const o = await api('/v1/console/overview');
    overview.error = null;
    overview.samples.push({ at: Date.now(), st: Date.parse(o.time), o });
  } catch (e) {
    overview.error = e;
    overview.samples.push({ at: Date.now(), gap: true });
  }
  const cutoff = Date.now() - WINDOW_MS;
  while (overview.samples.length && overview.samples[0].at < cutoff) overview.samples.shift();
  if (overview.view) overview.view();
  setTimeout(pollOverview, 1000);
}

/** Series of {t, v} (v null: a gap) from the samples: rates from differences of counters. */
function deriveSeries(samples) {
  const s = { commands: [], p50: [], p99: [], perFsync: [], actors: [], lag: new Map() };
  let prev = null;
  for (const x of samples) {
    const t = x.at;
    if (x.gap) {
      for (const key of ['commands', 'p50', 'p99', 'perFsync', 'actors']) s[key].push({ t, v: null });
      for (const points of s.lag.values()) points.push({ t, v: null });
      prev = null;
      continue;
    }
    const { o } = x;
    let rate = null;
    let perFsync = null;
    if (prev) {
      const serverTime = Number.isFinite(x.st) && Number.isFinite(prev.st);
      const dt = (serverTime ? x.st - prev.st : x.at - prev.at) / 1000;
      const commands = o.commands_total - prev.o.commands_total;
      if (dt > 0 && commands >= 0) rate = commands / dt;
      const events = o.journal.events_total - prev.o.journal.events_total;
      const fsyncs = o.journal.fsyncs_total - prev.o.journal.fsyncs_total;
      if (fsyncs > 0 && events >= 0) perFsync = events / fsyncs;
    }
    const latency = o.command_latency_ms || {};
    s.commands.push({ t, v: rate });
    s.p50.push({ t, v: latency.p50 ?? null });
    s.p99.push({ t, v: latency.p99 ?? null });
    s.perFsync.push({ t, v: perFsync });
    s.actors.push({ t, v: o.live_actors ?? null });
    for (const sub of o.subscribers || []) {
      if (!s.lag.has(sub.name)) s.lag.set(sub.name, []);
      s.lag.get(sub.name).push({ t, v: sub.lag_events });
    }
    prev = x;
  }
  return s;
}

function niceCeil(v) {
  if (!(v > 0)) return 1;
  const e = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * e).find((c) => c >= v);
}

const lastValue = (points) => { for (let i = points.length - 1; i >= 0; i--) if (points[i].v != null) return points[i].v; return null; };

/** A small line chart of the last 5 minutes, as HTML (figcaption) around an inline SVG. */
function chartHtml(title, series, fmt, end) {
  const W = 300;
  const H = 80;
  const start = end - WINDOW_MS;
  let max = 0;
  for (const s of series) for (const p of s.points) if (p.v != null && p.t >= start && p.v > max) max = p.v;
  const top = niceCeil(max);
  const x = (t) => (((t - start) / WINDOW_MS) * W).toFixed(1);
  const y = (v) => (H - 2 - (v / top) * (H - 4)).toFixed(1);
  const paths = series.map((s, i) => {
    let d = '';
    let pen = false;
    for (const p of s.points) {
      if (p.t < start || p.v == null) { pen = false; continue; }
      d += `${pen ? 'L' : 'M'}${x(p.t)} ${y(p.v)}`;
      pen = true;
    }
    return d ? `<path class="s${i % SERIES_MAX}" d="${d}"/>` : '';
  }).join('');
  const grid = [0.5, 1].map((f) => `<line x1="0" x2="${W}" y1="${y(top * f)}" y2="${y(top * f)}"/>`).join('');
  const legend = series.length > 1
    ? `<ul class="legend">${series.map((s, i) => `<li><i class="s${i % SERIES_MAX}"></i>${esc(s.name)} <b>${esc(fmt(lastValue(s.points)))}</b></li>`).join('')}</ul>`
    : '';
  const now = series.length === 1 ? fmt(lastValue(series[0].points)) : '';
  return `<figure class="chart"><figcaption><span>${esc(title)}</span><b>${esc(now)}</b><small>max ${esc(fmt(top))}</small></figcaption>`
    + `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="${esc(title)}"><g class="grid">${grid}<line x1="0" x2="${W}" y1="${H - 1}" y2="${H - 1}"/></g>${paths}</svg>${legend}</figure>`;
}

const tileHtml = (test, label, value, sub, cls = '') =>
  `<div class="tile ${cls}" data-test="${test}"><span class="label">${esc(label)}</span><span class="value">${esc(value)}</span><span class="sub">${esc(sub)}</span></div>`;

function overviewPage(page) {
  const banner = h('div');
  const tiles = h('div', { class: 'tiles' });
  const charts = h('div', { class: 'charts' });
  main.append(h('h1', 'Overview'), banner, tiles, charts);
  const render = () => {
    const said = overview.error ? `${overview.error.status}:${overview.error.message}` : '';
    if (banner.dataset.said !== said) {
      banner.dataset.said = said; // re-drawn only when it changes, so its Sign in button stays put
      banner.replaceChildren(overview.error ? errorBox(overview.error) : '');
    }
    const good = overview.samples.filter((x) => !x.gap);
    if (!good.length) {
      tiles.replaceChildren(overview.error ? '' : emptyState('Waiting for the first sample…'));
      charts.replaceChildren();
    } else {
      const { o } = good[good.length - 1];
      const s = deriveSeries(overview.samples);
      const journal = o.journal || {};
      const healthy = String(journal.health).toLowerCase() === 'ok';
      const ms = (v) => (v == null ? '–' : `${fmtNum(v, 2)} ms`);
      tiles.innerHTML = [
        tileHtml('tile-commands', 'Commands/s', fmtNum(lastValue(s.commands), 0), `${fmtInt(o.commands_total)} in total`),
        tileHtml('tile-p99', 'Latency p99', ms(o.command_latency_ms?.p99), `p50 ${ms(o.command_latency_ms?.p50)}`),
        tileHtml('tile-health', 'Journal', journal.health ?? '–', `${fmtInt(journal.appends_total)} appends · ${fmtInt(journal.fsyncs_total)} fsyncs`, healthy ? 'ok' : 'bad'),
        tileHtml('tile-disk', 'Disk free', fmtBytes(o.disk_free_bytes), o.disk_free_bytes == null ? 'not measured on this backend' : 'on the store’s file system'),
        tileHtml('tile-actors', 'Live actors', fmtInt(o.live_actors), `${fmtInt(journal.events_total)} events recorded`),
        tileHtml('tile-fsync', 'Events per fsync', fmtNum(lastValue(s.perFsync), 1), 'over the last second'),
      ].join('');
      const end = overview.samples[overview.samples.length - 1].at;
      const lag = [...s.lag.entries()].slice(0, SERIES_MAX).map(([name, points]) => ({ name, points }));
      charts.innerHTML = [
        chartHtml('Commands/s', [{ name: 'commands/s', points: s.commands }], (v) => fmtNum(v, 0), end),
        chartHtml('Latency (ms)', [{ name: 'p50', points: s.p50 }, { name: 'p99', points: s.p99 }], (v) => fmtNum(v, 2), end),
        chartHtml('Events per fsync', [{ name: 'events/fsync', points: s.perFsync }], (v) => fmtNum(v, 1), end),
        chartHtml('Live actors', [{ name: 'actors', points: s.actors }], fmtInt, end),
        lag.length ? chartHtml('Subscriber lag (events)', lag, fmtInt, end) : '',
        subscribersHtml(o.subscribers || []),
      ].join('');
    }
    if (overview.samples.length) page.ready();
  };
  overview.view = render;
  page.onLeave(() => { overview.view = null; });
  render();
}

function subscribersHtml(subs) {
  if (!subs.length) return '';
  const rows = subs.map((s) => `<tr><td><a href="${esc(hashOf(['read-side', s.name]))}">${esc(s.name)}</a></td><td><span class="status ${esc(s.status)}">${esc(s.status)}</span></td><td class="num">${fmtInt(s.checkpoint)}</td><td class="num">${fmtInt(s.lag_events)}</td><td class="num">${esc(fmtSeconds(s.lag_seconds))}</td></tr>`);
  return `<figure class="chart wide"><figcaption><span>Subscribers</span></figcaption><table class="compact"><thead><tr><th>Name</th><th>Status</th><th class="num">Checkpoint</th><th class="num">Lag</th><th class="num">Lag time</th></tr></thead><tbody>${rows.join('')}</tbody></table></figure>`;
}

// ---------------------------------------------------------------- aggregates

async function aggregatesPage(page, [aggRoute, id], query) {
  if (aggRoute && routes.list.includes(aggRoute)) { $('#search-type').value = aggRoute; }
  if (!aggRoute || id == null) {
    main.append(h('h1', 'Aggregates'), emptyState('Open an aggregate', 'Choose its type in the search bar above and type the start of its id (press / to get there); suggestions follow as you type, Enter opens it.'));
    page.ready();
    return;
  }
  const base = `/v1/${enc(aggRoute)}/${enc(id)}`;
  const agg = { current: 0, shown: 0, req: 0 };
  const badge = h('span', { class: 'badge' });
  const slider = h('input', { type: 'range', min: 1, max: 1, step: 1, value: 1, 'data-test': 'version-slider', 'aria-label': 'Version' });
  const sliderLabel = h('output', { class: 'mono' });
  const asOf = h('input', { type: 'datetime-local', step: 1, 'data-test': 'as-of', 'aria-label': 'As of (local time)' });
  const stateError = h('div');
  const statePre = h('pre', { class: 'json state', 'data-test': 'aggregate-state' });
  const historyBox = h('div');
  const travel = h('section', { class: 'card travel' },
    h('label', { class: 'slider' }, 'Version ', slider, sliderLabel),
    h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); if (asOf.value) loadAt({ as_of: new Date(asOf.value).toISOString() }); } },
      h('label', 'As of ', asOf), h('button', { type: 'submit' }, 'Show')),
    h('button', { type: 'button', onclick: () => loadAt({}) }, 'Latest'));
  const body = h('div', travel,
    h('section', { class: 'card' }, h('h2', 'State'), stateError, statePre),
    h('section', { class: 'card' }, h('h2', 'History'), historyBox));
  main.append(h('h1', h('a', { href: hashOf(['aggregates', aggRoute]) }, aggRoute), ' / ', h('code', id), ' ', badge), body);

  const show = (reply) => {
    if (reply.version > agg.current) { agg.current = reply.version; slider.max = String(agg.current); }
    agg.shown = reply.version;
    stateError.replaceChildren();
    statePre.hidden = false;
    statePre.dataset.version = String(reply.version);
    statePre.textContent = JSON.stringify(reply.state, null, 2);
    badge.textContent = `version ${reply.version} of ${agg.current}`;
    badge.classList.toggle('past', reply.version < agg.current);
    slider.value = String(reply.version);
    sliderLabel.textContent = `${reply.version} / ${agg.current}`;
    for (const tr of historyBox.querySelectorAll('tr[data-version]')) tr.classList.toggle('at', Number(tr.dataset.version) === reply.version);
    history.replaceState(null, '', hashOf(['aggregates', aggRoute, id], { version: reply.version < agg.current ? reply.version : null }));
  };
  /** Loads the state: {} the head, {version} or {as_of}. */
  const loadAt = async (params) => {
    const my = ++agg.req;
    statePre.classList.add('loading');
    try {
      const q = new URLSearchParams(params).toString();
      const reply = await api(q ? `${base}?${q}` : base);
      if (my === agg.req && page.alive()) show(reply);
    } catch (e) {
      if (my !== agg.req || !page.alive()) return;
      stateError.replaceChildren(errorBox(e));
      statePre.hidden = true;
    } finally {
      statePre.classList.remove('loading');
    }
  };
  const toVersion = debounce((v) => { if (page.alive() && v !== agg.shown) loadAt({ version: v }); }, 200);
  slider.addEventListener('input', () => { sliderLabel.textContent = `${slider.value} / ${agg.current}`; toVersion(Number(slider.value)); });
  slider.addEventListener('change', () => toVersion(Number(slider.value)));

  const pages = { from: 1, back: [], next: null };
  const loadHistory = async (from) => {
    historyBox.classList.add('loading');
    try {
      const reply = await api(`${base}/events?from=${from}`);
      if (!page.alive()) return;
      pages.from = from;
      pages.next = reply.next_from;
      if (!reply.events.length) { historyBox.replaceChildren(emptyState('no events yet')); return; }
      const rows = reply.events.map((ev) => h('tr', { 'data-test': 'history-row', 'data-version': ev.version, 'data-position': ev.position, class: ev.version === agg.shown ? 'at' : null },
        h('td', { class: 'num' }, h('button', { type: 'button', class: 'link', title: 'Show the state at this version', onclick: () => loadAt({ version: ev.version }) }, ev.version)),
        h('td', { class: 'num' }, ev.position),
        h('td', h('span', { class: 'etype' }, ev.type), ev.schema_version > 1 ? h('span', { class: 'muted' }, ` v${ev.schema_version}`) : null),
        h('td', { class: 'time' }, fmtTime(ev.recorded_at)),
        h('td', { class: 'meta' }, metaView(ev)),
        h('td', payloadView(ev.data))));
      const first = reply.events[0].version;
      const last = reply.events[reply.events.length - 1].version;
      historyBox.replaceChildren(
        h('table', h('thead', h('tr', h('th', { class: 'num' }, 'Version'), h('th', { class: 'num' }, 'Position'), h('th', 'Type'), h('th', 'Recorded (UTC)'), h('th', 'Command, correlation, causation'), h('th', 'Payload'))), h('tbody', rows)),
        h('div', { class: 'pager' },
          h('button', { type: 'button', disabled: !pages.back.length, onclick: () => loadHistory(pages.back.pop()) }, '← Earlier'),
          h('span', { class: 'muted' }, `versions ${first}–${last}`),
          h('button', { type: 'button', disabled: pages.next == null, onclick: () => { pages.back.push(pages.from); loadHistory(pages.next); } }, 'Later →')));
    } catch (e) {
      if (page.alive()) historyBox.replaceChildren(errorBox(e));
    } finally {
      historyBox.classList.remove('loading');
    }
  };

  let head;
  try {
    head = await api(base);
  } catch (e) {
    if (!page.alive()) return;
    body.replaceChildren(e.status === 404 ? emptyState('no events yet', e.message) : errorBox(e));
    page.ready();
    return;
  }
  if (!page.alive()) return;
  agg.current = head.version;
  slider.max = String(head.version);
  const wanted = isDigits(query.version) ? Number(query.version) : null;
  if (wanted != null && wanted !== head.version) await loadAt({ version: wanted }); else show(head);
  await loadHistory(1);
  page.ready();
}

// ---------------------------------------------------------------- live feed

const KEEP = 1000;
const BUFFER_MAX = 10000;

/** Reads Server-Sent Events from a response body, calling onEvent({id, event, data}) per event. */
async function readSse(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let id = null;
  let event = null;
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let start = 0;
      let nl;
      while ((nl = buf.indexOf('\n', start)) !== -1) {
        const line = buf.slice(start, nl > start && buf[nl - 1] === '\r' ? nl - 1 : nl);
        start = nl + 1;
        if (line === '') {
          if (data.length) onEvent({ id, event: event || 'message', data: data.join('\n') });
          event = null;
          data = [];
          continue;
        }
        if (line[0] === ':') continue; // a comment: the keep-alive
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value[0] === ' ') value = value.slice(1);
        if (field === 'data') data.push(value);
        else if (field === 'id') id = value;
        else if (field === 'event') event = value;
      }
      buf = buf.slice(start);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

async function livePage(page, _parts, query) {
  const L = {
    kept: [], pending: [], buffer: [], paused: false, overflowed: false,
    lastSeen: null, lastShown: null, startAfter: null, sgen: 0, ctrl: null, backoff: 1000, flushTimer: null,
    filters: { type: query.type || '', event: query.event || '' }, types: new Set(), events: new Set(),
  };
  const pauseBtn = h('button', { type: 'button', 'data-test': 'live-pause', onclick: () => togglePause() }, 'Pause');
  const typeInput = h('input', { type: 'search', list: 'live-types', placeholder: 'any', value: L.filters.type, 'data-test': 'live-filter-type', 'aria-label': 'Aggregate type' });
  const eventInput = h('input', { type: 'search', list: 'live-events', placeholder: 'any', value: L.filters.event, 'data-test': 'live-filter-event', 'aria-label': 'Event type' });
  const typeList = h('datalist', { id: 'live-types' });
  const eventList = h('datalist', { id: 'live-events' });
  const jumpInput = h('input', { type: 'number', min: 0, step: 1, placeholder: 'position', value: query.after || null, 'data-test': 'live-after', 'aria-label': 'Position to start after' });
  const status = h('span', { class: 'live-status', 'data-test': 'live-status' });
  const count = h('span', { class: 'muted' });
  const problem = h('div');
  const notice = h('div', { class: 'notice', hidden: true, 'data-test': 'live-notice' });
  const tbody = h('tbody');
  const empty = emptyState('no events yet', 'New events appear here as they are recorded.');
  const filterForm = h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); applyFilters(); } },
    h('label', 'Type ', typeInput), h('label', 'Event ', eventInput), h('button', { type: 'submit' }, 'Filter'), typeList, eventList);
  const jumpForm = h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); jump(); } },
    h('label', 'After position ', jumpInput), h('button', { type: 'submit' }, 'Jump'));
  main.append(h('h1', 'Live feed'),
    h('div', { class: 'toolbar' }, pauseBtn, filterForm, jumpForm, status),
    problem, notice,
    h('table', { class: 'live' }, h('thead', h('tr', h('th', { class: 'num' }, 'Position'), h('th', 'Recorded (UTC)'), h('th', 'Aggregate'), h('th', 'Id'), h('th', 'Event'), h('th', 'Payload'))), tbody),
    empty, h('p', { class: 'foot' }, count));

  const setStatus = (text, cls, error) => {
    status.textContent = text;
    status.className = `live-status ${cls || ''}`;
    problem.replaceChildren(error ? errorBox(error) : '');
  };
  const matches = (ev) => (!L.filters.type || String(ev.aggregate).toLowerCase() === L.filters.type.toLowerCase())
    && (!L.filters.event || String(ev.type).toLowerCase() === L.filters.event.toLowerCase());
  const row = (ev) => {
    const r = routeOfType(ev.aggregate);
    return h('tr', { 'data-test': 'live-row', 'data-position': ev.position, 'data-type': ev.aggregate, 'data-event-type': ev.type },
      h('td', { class: 'num' }, ev.position),
      h('td', { class: 'time' }, fmtTime(ev.recorded_at)),
      h('td', ev.aggregate),
      h('td', r ? h('a', { href: hashOf(['aggregates', r, ev.id], { version: ev.version }) }, ev.id) : h('code', ev.id), h('span', { class: 'muted' }, ` v${ev.version}`)),
      h('td', h('span', { class: 'etype' }, ev.type)),
      h('td', payloadView(ev.data)));
  };
  const updateCount = () => {
    const shown = tbody.rows.length;
    count.textContent = `${fmtInt(shown)} shown · ${fmtInt(L.kept.length)} kept (at most ${fmtInt(KEEP)})`;
    empty.hidden = shown > 0;
    empty.querySelector('strong').textContent = L.kept.length ? 'no events match the filters' : 'no events yet';
  };
  const rerender = () => {
    tbody.replaceChildren(...L.kept.filter(matches).reverse().map(row));
    updateCount();
  };
  const liveHash = (after) => hashOf(['live'], { after, type: L.filters.type, event: L.filters.event });
  const applyFilters = () => {
    L.filters = { type: typeInput.value.trim(), event: eventInput.value.trim() };
    history.replaceState(null, '', liveHash(query.after));
    rerender();
  };
  typeInput.addEventListener('input', debounce(() => page.alive() && applyFilters(), 200));
  eventInput.addEventListener('input', debounce(() => page.alive() && applyFilters(), 200));
  const jump = () => {
    const p = jumpInput.value.trim();
    if (p !== '' && !isDigits(p)) { jumpInput.focus(); return; }
    const target = liveHash(p || null);
    if (location.hash === target) route(); else location.hash = target;
  };

  const flush = () => {
    L.flushTimer = null;
    pauseBtn.textContent = L.paused ? `Resume (${fmtInt(L.buffer.length)} waiting)` : 'Pause';
    if (L.paused || !L.pending.length) return;
    let batch = L.pending;
    L.pending = [];
    if (batch.length > KEEP) batch = batch.slice(-KEEP);
    L.kept = L.kept.concat(batch);
    if (L.kept.length > KEEP) L.kept = L.kept.slice(-KEEP);
    L.lastShown = batch[batch.length - 1].position;
    const frag = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) if (matches(batch[i])) frag.append(row(batch[i]));
    tbody.prepend(frag);
    const oldest = L.kept[0].position;
    while (tbody.rows.length > KEEP || (tbody.lastElementChild && Number(tbody.lastElementChild.dataset.position) < oldest)) tbody.lastElementChild.remove();
    updateCount();
  };
  const scheduleFlush = () => { if (!L.flushTimer) L.flushTimer = page.timeout(flush, 100); };
  const remember = (set, list, value) => {
    if (set.size < 100 && !set.has(value)) { set.add(value); list.append(h('option', { value })); }
  };
  const onEvent = (ev) => {
    let env;
    try { env = JSON.parse(ev.data); } catch { return; }
    if (!env || typeof env !== 'object') return;
    env.position = isDigits(ev.id) ? Number(ev.id) : env.position;
    L.lastSeen = env.position;
    remember(L.types, typeList, env.aggregate);
    remember(L.events, eventList, env.type);
    if (L.paused) {
      L.buffer.push(env);
      if (L.buffer.length > BUFFER_MAX) overflow();
    } else {
      L.pending.push(env);
      if (L.pending.length > 2 * KEEP) L.pending = L.pending.slice(-KEEP);
    }
    scheduleFlush();
  };

  const stop = () => { L.sgen += 1; if (L.ctrl) L.ctrl.abort(); L.ctrl = null; };
  const start = (after) => { stop(); run(after, L.sgen); };
  const run = async (after, sgen) => {
    while (sgen === L.sgen) {
      const ctrl = new AbortController();
      L.ctrl = ctrl;
      try {
        setStatus('connecting…', 'warn');
        const res = await api(after == null ? '/v1/events/live' : `/v1/events/live?after=${after}`, { raw: true, signal: ctrl.signal, headers: { Accept: 'text/event-stream' } });
        if (sgen !== L.sgen) { ctrl.abort(); return; }
        L.backoff = 1000;
        setStatus(`live · following after position ${after ?? 'the head'}`, 'ok');
        page.ready();
        await readSse(res.body, (ev) => { if (sgen === L.sgen) onEvent(ev); });
        throw new Error('the server ended the stream');
      } catch (e) {
        if (sgen !== L.sgen) return;
        page.ready();
        after = L.lastSeen ?? after;
        const wait = L.backoff;
        L.backoff = Math.min(L.backoff * 2, 30000);
        setStatus(`disconnected; reconnecting after position ${after ?? 'the head'} in ${wait / 1000} s`, 'bad', e);
        await sleep(wait);
      }
    }
  };
  const overflow = () => {
    stop();
    L.buffer = [];
    L.overflowed = true;
    const from = L.lastShown ?? L.startAfter;
    notice.textContent = `More than ${fmtInt(BUFFER_MAX)} events arrived while paused, so the feed stopped receiving. Resume continues after position ${from ?? 'the head'}, the last one shown: nothing is lost.`;
    notice.hidden = false;
    setStatus('paused · not receiving', 'warn');
  };
  const togglePause = () => {
    if (!L.paused) {
      L.paused = true;
      pauseBtn.classList.add('active');
      pauseBtn.setAttribute('aria-pressed', 'true');
    } else {
      L.paused = false;
      pauseBtn.classList.remove('active');
      pauseBtn.setAttribute('aria-pressed', 'false');
      if (L.overflowed) {
        L.overflowed = false;
        notice.hidden = true;
        const from = L.lastShown ?? L.startAfter;
        L.lastSeen = from;
        start(from);
      } else {
        L.pending = L.pending.concat(L.buffer);
        L.buffer = [];
      }
    }
    flush();
    scheduleFlush();
  };

  page.onLeave(stop);
  updateCount();
  let after = isDigits(query.after) ? Number(query.after) : null;
  if (after == null) {
    // Follow from the head as it is now, so that a reconnect before any event misses nothing.
    try { after = (await api('/v1/events?after=0&limit=1')).head; } catch { /* the stream starts at the head */ }
    if (!page.alive()) return;
  }
  L.startAfter = after;
  start(after);
}

// ---------------------------------------------------------------- read side

const rebuilds = new Map(); // name → {seen, at}: rebuilds started here, followed until they end

function readSidePage(page, [name]) {
  return name ? parkedPage(page, name) : subscribersPage(page);
}

function progressView(s) {
  const pct = s.head > 0 ? Math.min(100, (100 * s.checkpoint) / s.head) : 100;
  return h('span', { class: 'progress' }, h('progress', { max: 100, value: pct.toFixed(1) }), ` ${pct.toFixed(0)}%`);
}

function subscribersPage(page) {
  const msg = h('div', { class: 'messages' });
  const tbody = h('tbody');
  const rows = new Map();
  const box = h('div', h('table', h('thead', h('tr', h('th', 'Name'), h('th', 'Status'), h('th', { class: 'num' }, 'Checkpoint'), h('th', { class: 'num' }, 'Head'),
    h('th', { class: 'num' }, 'Lag (events)'), h('th', { class: 'num' }, 'Lag (time)'), h('th', 'Reason / owner'), h('th', ''))), tbody));
  main.append(h('h1', 'Read side'), h('p', { class: 'muted' }, 'Projections and process managers, their progress, and the events they parked.'), msg, box);
  let timer = null;
  let busy = false;
  const say = (node) => { msg.prepend(node); while (msg.children.length > 3) msg.lastElementChild.remove(); };

  const build = (s) => {
    const isRebuild = s.name.includes('#');
    const tr = h('tr', { 'data-test': 'subscriber-row', 'data-name': s.name },
      h('td', isRebuild ? h('code', s.name) : h('a', { href: hashOf(['read-side', s.name]) }, s.name)),
      h('td'), h('td', { class: 'num' }), h('td', { class: 'num' }), h('td', { class: 'num' }), h('td', { class: 'num' }), h('td', { class: 'reason' }),
      h('td', isRebuild ? null : h('button', { type: 'button', 'data-test': 'rebuild', onclick: (e) => rebuild(s.name, e.currentTarget) }, 'Rebuild')));
    rows.set(s.name, tr);
    return tr;
  };
  const update = (tr, s, all) => {
    const c = tr.cells;
    const tracked = rebuilds.has(s.name);
    const copy = all.find((x) => x.name === `${s.name}#rebuild`);
    c[1].replaceChildren(h('span', { class: `status ${s.status}` }, s.status.replace('_', ' ')),
      s.status === 'rebuilding' ? progressView(s) : '',
      tracked || copy ? h('div', { class: 'muted' }, 'rebuild running ', copy ? progressView(copy) : '…') : '');
    c[2].textContent = fmtInt(s.checkpoint);
    c[3].textContent = fmtInt(s.head);
    c[4].textContent = fmtInt(s.lag_events);
    c[5].textContent = fmtSeconds(s.lag_seconds);
    c[6].replaceChildren(s.reason ? h('span', { class: 'bad' }, s.reason) : '', s.owner ? h('div', { class: 'muted' }, `owner ${s.owner} (epoch ${s.owner_epoch})`) : '');
    const button = c[7].querySelector('button');
    if (button && !button.dataset.busy) button.disabled = tracked || Boolean(copy);
  };
  const follow = (subs) => {
    for (const [name, t] of rebuilds) {
      const copy = subs.find((s) => s.name === `${name}#rebuild`);
      if (copy && copy.status === 'rebuilding') { t.seen = true; continue; }
      if (copy) { rebuilds.delete(name); say(h('div', { class: 'notice bad' }, `The rebuild of ${name} is ${copy.status}${copy.reason ? `: ${copy.reason}` : ''}.`)); }
      else if (t.seen || Date.now() - t.at > 15000) { rebuilds.delete(name); say(h('div', { class: 'notice ok' }, `${name} was rebuilt and swapped in.`)); }
    }
  };
  const tick = async () => {
    busy = true;
    try {
      const { subscribers } = await api('/v1/projections');
      if (!page.alive()) return;
      follow(subscribers);
      box.querySelector('.error')?.remove();
      const names = new Set(subscribers.map((s) => s.name));
      for (const [name, tr] of rows) if (!names.has(name)) { tr.remove(); rows.delete(name); }
      for (const s of subscribers) update(rows.get(s.name) || tbody.appendChild(build(s)), s, subscribers);
      box.querySelector('.empty')?.remove();
      if (!subscribers.length) box.append(emptyState('No projections or process managers are registered.'));
    } catch (e) {
      if (!page.alive()) return;
      box.querySelector('.error')?.remove();
      box.prepend(errorBox(e));
    } finally {
      busy = false;
    }
    page.ready();
    timer = page.timeout(tick, rebuilds.size ? 1000 : 3000);
  };
  const rebuild = async (name, button) => {
    const ok = await confirmDialog(`Rebuild ${name}?`, `${name} is rebuilt from position 0 beside the live one and swapped in when it reaches the head; queries are answered by the live one meanwhile.`, 'Rebuild');
    if (!ok || !page.alive()) return;
    button.disabled = true;
    button.dataset.busy = '1';
    try {
      const reply = await api(`/v1/projections/${enc(name)}/rebuild`, { method: 'POST' });
      rebuilds.set(name, { seen: false, at: Date.now() });
      say(h('div', { class: 'notice' }, reply.detail || `${name} is being rebuilt.`));
    } catch (e) {
      say(errorBox(e));
      button.disabled = false;
    } finally {
      delete button.dataset.busy;
    }
    if (page.alive() && !busy) { page.clear(timer); tick(); }
  };
  return tick();
}

async function parkedPage(page, name) {
  const base = `/v1/projections/${enc(name)}`;
  const summary = h('div', { class: 'card summary' }, h('span', { class: 'muted' }, 'loading…'));
  const msg = h('div', { class: 'messages' });
  const box = h('div');
  main.append(h('h1', h('a', { href: '#/read-side' }, 'Read side'), ' / ', h('code', name)), summary, h('h2', 'Parked events'), msg, box);

  api('/v1/projections').then(({ subscribers }) => {
    const s = subscribers.find((x) => x.name === name);
    summary.replaceChildren(...(s
      ? [h('span', { class: `status ${s.status}` }, s.status.replace('_', ' ')), ` checkpoint ${fmtInt(s.checkpoint)} of ${fmtInt(s.head)} · lag ${fmtInt(s.lag_events)} events, ${fmtSeconds(s.lag_seconds)}`, s.reason ? h('div', { class: 'bad' }, s.reason) : '']
      : [h('span', { class: 'muted' }, `${name} is not among the subscribers of this node.`)]));
  }, (e) => { if (page.alive()) summary.replaceChildren(errorBox(e)); });

  const retry = async (p, tr, button) => {
    button.disabled = true;
    button.textContent = 'Retrying…';
    try {
      await api(`${base}/parked/${p.position}/retry`, { method: 'POST' });
      tr.remove();
      msg.replaceChildren(h('div', { class: 'notice ok' }, `The event at position ${p.position} was handled.`));
      if (!box.querySelector('tr[data-test="parked-row"]')) box.replaceChildren(emptyState('No parked events', `${name} has handled every event it was given.`));
    } catch (e) {
      msg.replaceChildren(errorBox(e));
      button.disabled = false;
      button.textContent = 'Retry';
    }
  };
  const eventView = async (p, cell) => {
    try {
      const { events } = await api(`/v1/events?after=${p.position - 1}&limit=1`);
      const found = events.filter((ev) => ev.position === p.position);
      cell.replaceChildren(...(found.length ? found.map((ev) => {
        const r = routeOfType(ev.aggregate);
        return h('div', h('span', { class: 'etype' }, ev.type), ' of ', r ? h('a', { href: hashOf(['aggregates', r, ev.id], { version: ev.version }) }, `${ev.aggregate} ${ev.id}`) : `${ev.aggregate} ${ev.id}`,
          h('span', { class: 'muted' }, ` v${ev.version} · ${fmtTime(ev.recorded_at)}`), payloadView(ev.data));
      }) : [h('span', { class: 'muted' }, 'not in the log')]));
    } catch (e) {
      cell.replaceChildren(h('span', { class: 'bad' }, e.message));
    }
  };

  try {
    const { parked } = await api(`${base}/parked`);
    if (!page.alive()) return;
    if (!parked.length) {
      box.replaceChildren(emptyState('No parked events', `${name} has handled every event it was given.`));
    } else {
      const cells = new Map();
      const rows = parked.map((p) => {
        const cell = h('td', h('span', { class: 'muted' }, 'loading…'));
        cells.set(p, cell);
        const tr = h('tr', { 'data-test': 'parked-row', 'data-position': p.position },
          h('td', { class: 'num' }, p.position), cell,
          h('td', { class: 'reason' }, h('span', { class: 'bad' }, p.reason)),
          h('td', { class: 'num' }, p.attempts),
          h('td', { class: 'time' }, fmtTime(p.parked_at)));
        tr.append(h('td', h('button', { type: 'button', 'data-test': 'retry', onclick: (e) => retry(p, tr, e.currentTarget) }, 'Retry')));
        return tr;
      });
      box.replaceChildren(h('table', h('thead', h('tr', h('th', { class: 'num' }, 'Position'), h('th', 'Event'), h('th', 'Error'), h('th', { class: 'num' }, 'Attempts'), h('th', 'Parked (UTC)'), h('th', ''))), h('tbody', rows)));
      await eachLimit(parked, 4, (p) => (page.alive() ? eventView(p, cells.get(p)) : null));
    }
  } catch (e) {
    if (page.alive()) box.replaceChildren(errorBox(e));
  }
  page.ready();
}

// ---------------------------------------------------------------- start

function boot() {
  main = $('#main');
  $('#sign-out').addEventListener('click', signOut);
  updateSignOut();
  setupSearch();
  document.addEventListener('keydown', (e) => {
    if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey || document.querySelector('dialog[open]')) return;
    const t = e.target;
    if (t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName))) return;
    e.preventDefault();
    $('#search-id').focus();
    $('#search-id').select();
  });
  window.addEventListener('hashchange', route);
  if (!location.hash) history.replaceState(null, '', '#/overview');
  route();
  loadRoutes();
  pollOverview();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot); else boot();
