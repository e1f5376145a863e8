// app.js - the driftd dashboard (docs/operations.md, "Dashboard").
//
// Design in a few lines:
// - Every second the browser asks each member of the cluster for its
//   GET /cluster/status and GET /metrics, at the HTTP address the node
//   directory gives for it (src/net/ui.c says why the browser asks each
//   node rather than the serving node aggregating). A node that does not
//   answer within TIMEOUT_MS is shown down. Roles, term and indexes come
//   from each node itself; match index and lag from the leader.
// - Rates are computed here from the counters of /metrics: per node, the
//   difference between two answers over the time between them; summed over
//   the nodes that answered. p99 push->ack comes from the summed
//   differences of the histogram's buckets, interpolated within a bucket
//   like Prometheus' histogram_quantile. HISTORY samples are kept (5 min).
// - The admin token is kept in sessionStorage (this tab only) and sent as
//   "Authorization: Bearer" to /admin/* only; never in a URL. Rooms are
//   listed by the serving node (the state is replicated); membership
//   changes go to the leader (a 421 answer names it; followed once more).
// - The room inspector is a debug=true WebSocket to the serving node: an
//   init for every key, then every push of the room.
// - Everything that came from the network is put in the page as text
//   (textContent), never as markup.
//
// Not here: history across page loads, alerting, per-node plots.
'use strict';

const POLL_MS = 1000;
const TIMEOUT_MS = 1500;
const HISTORY = 300; // samples at POLL_MS: 5 minutes
const ROOMS_MS = 3000;
const ROOMS_SHOWN = 200;
const LOG_LINES = 200;
const CHANGE_TIMEOUT_MS = 40000; // a voter's catch-up happens in the call
const TOKEN_KEY = 'driftd.adminToken';

const $ = (sel) => document.querySelector(sel);

// ---- small DOM helpers ----------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, String(v));
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? '' : String(c)));
  return e;
}

function setText(sel, text) { $(sel).textContent = text; }

function ago(ms) {
  if (ms == null) return 'never';
  const s = Math.round((Date.now() - ms) / 1000);
  return s <= 1 ? 'now' : `${s} s ago`;
}

async function fetchT(url, opts = {}, ms = TIMEOUT_MS) {
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(), ms);
  try {
    return await fetch(url, { cache: 'no-store', ...opts, signal: ac.signal });
  } finally {
    clearTimeout(t);
  }
}

function originOf(httpAddr) { return `${location.protocol}//${httpAddr}`; }

// ---- the admin token --------------------------------------------------------

function getToken() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

function authHeaders() {
  const t = getToken();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

function showTokenState(extra) {
  setText('#token-state', extra || (getToken() ? 'token set (this tab only)' : 'no token'));
}

// ---- /metrics ---------------------------------------------------------------

// The few series the dashboard plots, from the text format 0.0.4.
function parseMetrics(text) {
  const m = { pushes: 0, deliveries: 0, buckets: [], linkUp: null, clients: 0 };
  for (const line of text.split('\n')) {
    if (line === '' || line[0] === '#') continue;
    const sp = line.lastIndexOf(' ');
    const key = line.slice(0, sp);
    const v = Number(line.slice(sp + 1));
    const brace = key.indexOf('{');
    const name = brace < 0 ? key : key.slice(0, brace);
    switch (name) {
      case 'driftd_pushes_total': m.pushes += v; break;
      case 'driftd_deliveries_total': m.deliveries += v; break;
      case 'driftd_forward_link_up': m.linkUp = v; break;
      case 'driftd_connections':
        if (!key.includes('kind="forward"')) m.clients += v;
        break;
      case 'driftd_push_ack_seconds_bucket': {
        const le = /le="([^"]+)"/.exec(key);
        if (le) m.buckets.push([le[1] === '+Inf' ? Infinity : Number(le[1]), v]);
        break;
      }
      default: break;
    }
  }
  m.buckets.sort((a, b) => a[0] - b[0]);
  return m;
}

// q-quantile in ms of cumulative bucket counts [[le seconds, count]...],
// linear within the bucket; null without observations.
function quantileMs(buckets, q) {
  if (buckets.length === 0) return null;
  const total = buckets[buckets.length - 1][1];
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe * 1000;
      const inBucket = count - prevCount;
      const f = inBucket > 0 ? (rank - prevCount) / inBucket : 1;
      return (prevLe + (le - prevLe) * f) * 1000;
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe * 1000;
}

// ---- polling the nodes ------------------------------------------------------

// id -> {id, origin, status, metrics, lastOk, down, error, busy, rate}
const nodes = new Map();
let selfId = null;
let members = []; // the latest authoritative member list
let view = null; // the status the cluster table trusts (the leader's)
const hist = { pushes: [], deliveries: [], p99: [] };

function nodeState(id) {
  let n = nodes.get(id);
  if (!n) {
    n = { id, origin: null, status: null, metrics: null, lastOk: null, down: false, error: null, busy: false, rate: null };
    nodes.set(id, n);
  }
  return n;
}

async function pollOne(origin, knownId) {
  const started = Date.now();
  let st, text;
  try {
    const [rs, rm] = await Promise.all([
      fetchT(`${origin}/cluster/status`),
      fetchT(`${origin}/metrics`),
    ]);
    if (!rs.ok) throw new Error(`status ${rs.status}`);
    st = await rs.json();
    text = rm.ok ? await rm.text() : '';
  } catch (e) {
    if (knownId != null) {
      const n = nodeState(knownId);
      n.down = true;
      n.error = e.name === 'AbortError' ? `no answer in ${TIMEOUT_MS} ms` : 'unreachable';
      n.rate = null;
      n.metrics = null;
    }
    return;
  }
  const n = nodeState(st.id);
  if (origin === location.origin) selfId = st.id;
  n.origin = origin;
  n.status = st;
  n.lastOk = Date.now();
  n.down = false;
  n.error = null;
  const m = text ? parseMetrics(text) : null;
  const prev = n.metrics;
  if (m && prev && m.pushes >= prev.pushes && m.deliveries >= prev.deliveries) {
    const dt = (started - prev.at) / 1000;
    if (dt > 0.2) {
      n.rate = {
        at: Date.now(),
        pushes: (m.pushes - prev.pushes) / dt,
        deliveries: (m.deliveries - prev.deliveries) / dt,
        buckets: m.buckets.map(([le, c], i) => [le, c - (prev.buckets[i] ? prev.buckets[i][1] : 0)]),
      };
    }
  } else {
    n.rate = null; // first answer, or the node restarted (counters reset)
  }
  if (m) { m.at = started; n.metrics = m; }
}

function pollAll() {
  const targets = [[location.origin, selfId]];
  for (const mem of members) {
    if (mem.id === selfId || !mem.http) continue;
    targets.push([originOf(mem.http), mem.id]);
  }
  return Promise.all(targets.map(async ([origin, id]) => {
    const key = id == null ? origin : id;
    const n = id == null ? null : nodeState(id);
    if (busy.has(key)) return;
    busy.add(key);
    try { await pollOne(origin, n ? n.id : null); } finally { busy.delete(key); }
  }));
}
const busy = new Set();

// The status to trust for membership, match indexes and the leader: the
// highest term's leader among the nodes that answer, else the highest term.
function chooseView() {
  let best = null;
  for (const n of nodes.values()) {
    if (n.down || !n.status) continue;
    const s = n.status;
    const score = [s.role === 'leader' ? 1 : 0, s.term];
    if (!best || score[0] > best.score[0] || (score[0] === best.score[0] && score[1] > best.score[1])) {
      best = { s, score };
    }
  }
  view = best ? best.s : null;
  if (view && Array.isArray(view.nodes)) members = view.nodes;
}

function leaderId() {
  if (view && view.role === 'leader') return view.id;
  return null;
}

// ---- rendering: cluster ------------------------------------------------------

function renderCluster() {
  const lead = leaderId();
  const tbody = $('#nodes tbody');
  const ids = new Set(members.map((m) => m.id));
  if (selfId != null) ids.add(selfId);
  const rows = [];
  let up = 0;
  for (const id of [...ids].sort((a, b) => a - b)) {
    const mem = members.find((m) => m.id === id) || null;
    const n = nodes.get(id) || null;
    const s = n && n.status;
    let state;
    if (mem && !mem.http && id !== selfId) state = 'unknown';
    else if (!n || (n.lastOk == null && !n.down)) state = 'polling';
    else if (n.down) state = 'down';
    else state = s.role;
    if (state !== 'down' && state !== 'unknown' && state !== 'polling') up++;
    const live = state !== 'down' && s;
    let match = '', lag = '';
    if (view && view.role === 'leader' && mem && mem.match_index != null) {
      match = mem.match_index;
      lag = Math.max(0, view.last_index - mem.match_index);
    }
    let link = '';
    if (live) {
      if (s.role === 'leader') link = '(leader)';
      // driftd_forward_link_up: a follower opens its link to the leader on
      // its first write after a leader change, so 0 is "not open", not a fault.
      else if (n.metrics && n.metrics.linkUp != null) link = n.metrics.linkUp ? 'open' : 'not open';
    }
    const tr = el('tr', { 'data-node': id, 'data-state': state, class: `state-${state}` },
      el('td', {}, `${id}${id === selfId ? ' (this page)' : ''}`),
      el('td', {}, mem ? mem.role : 'not a member'),
      el('td', { class: 'state' }, state === 'down' ? `down (${n.error})` : state),
      el('td', {}, mem && mem.http ? mem.http : '?'),
      el('td', {}, live ? s.term : ''),
      el('td', {}, live ? s.commit_index : ''),
      el('td', {}, live ? s.applied_index : ''),
      el('td', {}, match),
      el('td', { class: lag !== '' && lag > 100 ? 'warn' : '' }, lag),
      el('td', {}, link),
      el('td', {}, live ? (s.ready ? 'yes' : (s.not_ready || 'no')) : ''),
      el('td', {}, n ? ago(n.lastOk) : 'never'));
    rows.push(tr);
  }
  tbody.replaceChildren(...rows);
  const badge = $('#leader');
  badge.setAttribute('data-leader', lead == null ? '' : String(lead));
  badge.textContent = lead == null ? 'no leader' : `leader: node ${lead}`;
  badge.className = lead == null ? 'badge bad' : 'badge good';
  setText('#term', view ? `term ${view.term}` : '');
  setText('#summary', `${ids.size} nodes, ${up} answering`);
  setText('#served-by', selfId != null ? `dashboard of node ${selfId}` : '');
}

// ---- rendering: rates ---------------------------------------------------------

function sampleRates() {
  let pushes = 0, deliveries = 0, any = false;
  let buckets = null;
  const fresh = Date.now() - 2.5 * POLL_MS;
  for (const n of nodes.values()) {
    const r = n.rate;
    if (n.down || !r || r.at < fresh) continue;
    any = true;
    pushes += r.pushes;
    deliveries += r.deliveries;
    if (!buckets) buckets = r.buckets.map(([le, c]) => [le, c]);
    else r.buckets.forEach(([, c], i) => { if (buckets[i]) buckets[i][1] += c; });
  }
  const push = (arr, v) => { arr.push(v); if (arr.length > HISTORY) arr.shift(); };
  push(hist.pushes, any ? pushes : null);
  push(hist.deliveries, any ? deliveries : null);
  push(hist.p99, buckets ? quantileMs(buckets, 0.99) : null);
}

function renderRates() {
  const last = (a) => a[a.length - 1];
  drawPlot($('#plot-pushes'), hist.pushes, HISTORY, '/s');
  drawPlot($('#plot-deliveries'), hist.deliveries, HISTORY, '/s');
  drawPlot($('#plot-p99'), hist.p99, HISTORY, 'ms');
  setText('#v-pushes', fmtNum(last(hist.pushes)));
  setText('#v-deliveries', fmtNum(last(hist.deliveries)));
  setText('#v-p99', last(hist.p99) == null ? '-' : `${fmtNum(last(hist.p99))} ms`);
}

// ---- rooms --------------------------------------------------------------------

const roomPrev = new Map(); // id -> {seq, at}
let roomsBusy = false;

async function pollRooms() {
  if (roomsBusy) return;
  if (!getToken()) {
    setText('#rooms-state', '(enter the admin token to list rooms)');
    $('#room-table tbody').replaceChildren();
    return;
  }
  roomsBusy = true;
  try {
    const r = await fetchT(`${location.origin}/admin/rooms`, { headers: authHeaders() }, 5000);
    const j = await r.json().catch(() => null);
    if (!r.ok) {
      setText('#rooms-state', `(${r.status} ${j && j.code ? j.code : ''}: ${j && j.error ? j.error : 'refused'})`);
      if (r.status === 401) showTokenState('token refused');
      $('#room-table tbody').replaceChildren();
      return;
    }
    showTokenState();
    renderRooms(j.rooms || []);
  } catch (e) {
    setText('#rooms-state', `(rooms: ${e.name === 'AbortError' ? 'no answer' : 'unreachable'})`);
  } finally {
    roomsBusy = false;
  }
}

function renderRooms(rooms) {
  const now = Date.now();
  const seen = new Set();
  for (const r of rooms) {
    const p = roomPrev.get(r.id);
    r.rate = p && now > p.at && r.last_seq >= p.seq ? ((r.last_seq - p.seq) * 1000) / (now - p.at) : 0;
    roomPrev.set(r.id, { seq: r.last_seq, at: now });
    seen.add(r.id);
  }
  for (const id of roomPrev.keys()) if (!seen.has(id)) roomPrev.delete(id);
  rooms.sort((a, b) => b.rate - a.rate || b.last_seq - a.last_seq);
  const shown = rooms.slice(0, ROOMS_SHOWN);
  setText('#rooms-state', rooms.length > shown.length
    ? `(${rooms.length} rooms, the ${shown.length} most active shown)`
    : `(${rooms.length} room${rooms.length === 1 ? '' : 's'})`);
  $('#room-table tbody').replaceChildren(...shown.map((r) => {
    const b = el('button', { type: 'button' }, 'inspect');
    b.addEventListener('click', () => { $('#inspect-room').value = r.id; startTail(r.id); });
    return el('tr', { 'data-room': r.id },
      el('td', { class: 'mono' }, r.id), el('td', {}, r.keys), el('td', {}, r.entries),
      el('td', {}, fmtNum(r.bytes)), el('td', {}, r.last_seq), el('td', {}, fmtNum(r.rate)), el('td', {}, b));
  }));
}

// ---- room inspector -------------------------------------------------------------

let ws = null;
const keyRows = new Map(); // key -> tr

function preview(v) {
  let s;
  try { s = JSON.stringify(v); } catch (e) { s = String(v); }
  if (s === undefined) s = 'undefined';
  return s.length > 200 ? `${s.slice(0, 200)}...` : s;
}

function logLine(cls, text, attrs = {}) {
  const ol = $('#inspect-log');
  ol.prepend(el('li', { class: cls, ...attrs }, `${new Date().toLocaleTimeString()}  ${text}`));
  while (ol.children.length > LOG_LINES) ol.lastChild.remove();
}

function setKey(key, seq, value) {
  let tr = keyRows.get(key);
  if (!tr) {
    tr = el('tr', { 'data-key': key }, el('td', { class: 'mono' }, key), el('td'), el('td', { class: 'mono' }));
    keyRows.set(key, tr);
    $('#inspect-keys tbody').append(tr);
  }
  tr.children[1].textContent = seq;
  tr.children[2].textContent = preview(value);
}

function stopTail() {
  if (ws) {
    const w = ws;
    ws = null;
    w.close(1000);
  }
}

function startTail(room) {
  stopTail();
  keyRows.clear();
  $('#inspect-keys tbody').replaceChildren();
  $('#inspect-log').replaceChildren();
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(room)) {
    setText('#inspect-state', 'a room id is letters, digits, - and _');
    return;
  }
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const w = new WebSocket(`${scheme}//${location.host}/room/${room}/connect?debug=true`);
  ws = w;
  setText('#inspect-state', `connecting to room ${room}...`);
  $('#inspector').setAttribute('data-tailing', '');
  w.addEventListener('open', () => {
    if (ws !== w) return;
    setText('#inspect-state', `tailing ${room} (debug connection to node ${selfId ?? '?'})`);
    $('#inspector').setAttribute('data-tailing', room);
  });
  w.addEventListener('message', (ev) => {
    if (ws !== w || typeof ev.data !== 'string') return;
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { logLine('error', 'undecodable frame'); return; }
    if (msg.type === 'init') {
      const data = Array.isArray(msg.data) ? msg.data : [];
      const lastE = data[data.length - 1];
      if (lastE) setKey(msg.key, lastE.seq, lastE.value);
      logLine('init', `init ${preview(msg.key)}: ${data.length} retained`, { 'data-key': msg.key });
    } else if (msg.type === 'push') {
      setKey(msg.key, msg.seq, msg.value);
      logLine('push', `#${msg.seq} ${preview(msg.key)} = ${preview(msg.value)}`,
        { 'data-seq': msg.seq, 'data-key': msg.key });
    } else if (msg.type === 'error') {
      logLine('error', `error: ${msg.message}`);
    }
  });
  w.addEventListener('close', (ev) => {
    if (ws !== w && ws !== null) return;
    if (ws === w) ws = null;
    $('#inspector').setAttribute('data-tailing', '');
    setText('#inspect-state', `closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ''})`);
  });
}

// ---- membership changes ------------------------------------------------------

// POSTs one admin call to origin, following a 421 to the leader it names
// (twice at most). Resolves {r, j, origin}; rejects when nobody answers.
async function postAdmin(origin, path, body) {
  let r = null, j = null;
  for (let hop = 0; hop < 3; hop++) {
    r = await fetchT(`${origin}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...authHeaders() },
      body: JSON.stringify(body),
    }, CHANGE_TIMEOUT_MS);
    j = await r.json().catch(() => null);
    if (r.status === 421 && j && j.leader && j.leader.http) {
      origin = originOf(j.leader.http);
      continue;
    }
    break;
  }
  return { r, j, origin };
}

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

// The leader as this page sees it, once it is another node than `old`
// (the polls update the view every second); null after timeoutMs.
async function waitOtherLeader(old, timeoutMs) {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(250)) {
    const lead = leaderId();
    if (lead != null && lead !== old && nodes.get(lead) && nodes.get(lead).origin) return lead;
  }
  return null;
}

function leaderOrigin() {
  const lead = leaderId();
  const n = lead != null ? nodes.get(lead) : null;
  return n && n.origin ? n.origin : location.origin;
}

// Sends a membership change to the leader. Like driftctl, removing or
// demoting the leader (answered 400 is_leader) first moves leadership
// away (POST /admin/transfer {}), then sends the change to the new leader,
// retrying for up to 5 s while it settles.
async function adminChange(path, body) {
  const out = $('#m-result');
  const show = (cls, ok, text, status) => {
    out.className = `result ${cls}`;
    out.setAttribute('data-ok', ok);
    out.setAttribute('data-status', status == null ? '' : String(status));
    out.textContent = text;
  };
  show('', '', `${path}: sending...`);
  let origin = leaderOrigin();
  let res, moved = '';
  try {
    res = await postAdmin(origin, path, body);
    if (res.r.status === 400 && res.j && res.j.code === 'is_leader') {
      const old = leaderId();
      show('', '', `${path}: the target leads; moving leadership first...`);
      const t = await postAdmin(res.origin, '/admin/transfer', {});
      if (!(t.r.ok && t.j && t.j.ok)) {
        res = t;
      } else {
        moved = `${t.j.message}; `;
        const lead = await waitOtherLeader(old, 15000);
        origin = lead != null ? nodes.get(lead).origin : location.origin;
        for (const deadline = Date.now() + 5000; ;) {
          res = await postAdmin(origin, path, body);
          const code = res.j && res.j.code;
          if (!['settling', 'busy', 'quorum', 'not_leader'].includes(code) || Date.now() > deadline) break;
          await sleep(250);
        }
      }
    }
  } catch (e) {
    show('bad', 'false', `${path}: no answer from ${origin} (${e.name === 'AbortError' ? 'timed out' : 'unreachable or refused by CORS'})`);
    return;
  }
  const { r, j } = res;
  const ok = r.ok && j && j.ok;
  show(ok ? 'good' : 'bad', ok ? 'true' : 'false', ok ? `done: ${moved}${j.message}`
    : `refused: ${r.status} ${j && j.code ? j.code : ''}: ${j && j.error ? j.error : ''}`, r.status);
  if (r.status === 401) showTokenState('token refused');
}

function formId(form) {
  const v = form.elements.id.value.trim();
  return /^[1-9][0-9]{0,9}$/.test(v) ? Number(v) : null;
}

function bindForms() {
  const bad = (msg) => {
    const out = $('#m-result');
    out.className = 'result bad';
    out.setAttribute('data-ok', 'false');
    out.textContent = msg;
  };
  $('#m-add').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = ev.target, id = formId(f), raft = f.elements.raft.value.trim();
    if (id == null || !raft) return bad('add: an id and a raft host:port');
    adminChange('/admin/members', { id, raft, role: f.elements.role.value });
  });
  $('#m-role').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = ev.target, id = formId(f);
    if (id == null) return bad('role: a node id');
    adminChange(`/admin/members/${id}/role`, { role: f.elements.role.value, force: f.elements.force.checked });
  });
  $('#m-remove').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = ev.target, id = formId(f);
    if (id == null) return bad('remove: a node id');
    adminChange(`/admin/members/${id}/remove`, { force: f.elements.force.checked });
  });
  $('#m-transfer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = ev.target, v = f.elements.id.value.trim();
    const id = formId(f);
    if (v && id == null) return bad('transfer: a node id, or empty');
    adminChange('/admin/transfer', id == null ? {} : { id });
  });
  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('#token').value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    $('#token').value = '';
    showTokenState();
    pollRooms();
  });
  $('#token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
    pollRooms();
  });
  $('#inspect-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    startTail($('#inspect-room').value.trim());
  });
  $('#inspect-stop').addEventListener('click', () => stopTail());
}

// ---- the loop ---------------------------------------------------------------------

async function tick() {
  await pollAll();
  chooseView();
  sampleRates();
  renderCluster();
  renderRates();
}

function schedule() {
  // Not setInterval: a slow round never overlaps the next, and a node that
  // does not answer delays nobody else (each has its own busy flag).
  const t0 = Date.now();
  Promise.race([tick(), new Promise((r) => setTimeout(r, TIMEOUT_MS + 100))])
    .catch(() => {})
    .finally(() => setTimeout(schedule, Math.max(0, POLL_MS - (Date.now() - t0))));
}

bindForms();
showTokenState();
schedule();
pollRooms();
setInterval(pollRooms, ROOMS_MS);
