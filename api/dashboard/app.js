// cvops dashboard: the fleet by site, one camera's signals over time, incidents across cameras, and the live
// alert feed with each alert's evidence. Plain JavaScript on the API's JSON routes (/api/v1/...) and its
// Server-Sent Events stream; charts by the vendored uPlot. Views are picked by the URL's hash: #/ (fleet),
// #/camera/ID, #/alert/CAMERA/ALERT_ID/STATUS, #/incidents, #/incident/ID, #/edge-cases.
'use strict';

(() => {
  // The dashboard lives at <root>/dashboard/, the API at <root>/api/v1/: relative, so a path prefix works too.
  const API = new URL('../api/v1/', document.baseURI);
  const TOKEN_KEY = 'cvops.apiToken';
  const SORT_KEY = 'cvops.fleetSort';
  const GROUP_KEY = 'cvops.fleetGroup';
  const ACTOR_KEY = 'cvops.actor'; // the name people act under (not a secret)
  // A token typed where someone acknowledges or silences: sessionStorage, so it goes with the tab.
  const ACTION_TOKEN_KEY = 'cvops.actionToken';
  const FLEET_REFRESH_MS = 5000;
  const CAMERA_REFRESH_MS = 15000;
  const INCIDENTS_REFRESH_MS = 15000;
  const KINDS = ['environment', 'upstream', 'model', 'device'];
  const SILENCE_FOR = [[3600, '1 h'], [4 * 3600, '4 h'], [86400, '24 h'], [7 * 86400, '7 days']];
  const MAX_PLOTTED_CAMERAS = 12; // an incident's plots draw a line for each of its first cameras
  const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#65a30d', '#9333ea',
    '#0d9488', '#ea580c', '#4b5563'];
  const FEED_MAX = 200;
  const STORED_ALERTS = 50;
  const STATUS_RANK = { alert: 0, warning: 1, offline: 2, ok: 3 };
  // Signals plotted first, in this order; any other signal the series route offers follows.
  const PREFERRED = ['brightness', 'blur', 'frames', 'inference_ms', 'detections'];
  const SIGNAL_LABELS = {
    brightness: 'brightness (mean luma, 0-255)',
    blur: 'blur (variance of the Laplacian; lower is blurrier)',
    frames: 'frames per second',
    inference_ms: 'inference (ms per frame)',
    detections: 'detections per frame',
    bytes: 'frame size (KB)',
  };
  // Captions of the sampled drift statistics (/cameras/{id}/drift/history), by detector.
  const DRIFT_LABELS = {
    ks_holm: (signal) => `${signal.replace(/_distribution$/, '')} distribution: KS test (−log10 p)`,
    chi_square: () => 'class mix: chi-square test (−log10 p)',
    z_test: () => 'mean detection score: |z| against the reference',
    autoencoder: () => 'outlier score (autoencoder reconstruction error)',
    ks: () => 'outlier scores: KS test against the reference (−log10 p)',
    adwin: () => 'error rate on labelled frames',
    cbpe: () => 'expected precision from the scores (down is toward drift; dashed: the floor)',
    orb_affine: (signal) => (signal === 'rotation_deg' ? 'camera turned against its reference view (°)' : 'camera shifted against its reference view (px)'),
  };
  const RANGES = [
    { label: '15 min', s: 900, step: 60 },
    { label: '1 h', s: 3600, step: 60 },
    { label: '6 h', s: 21600, step: 300 },
    { label: '24 h', s: 86400, step: 1200 },
  ];

  const $ = (sel, root = document) => root.querySelector(sel);
  const view = $('#view');

  // ---------------------------------------------------------------- formatting

  const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
  const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ESC[c]);
  const enc = encodeURIComponent;

  function fmtNum(v, digits = 1) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '–';
    if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString();
    // a p-value of 2e-5 is not 0: small numbers keep two significant digits
    if (v !== 0 && Math.abs(v) < 0.5 * 10 ** -digits) return v.toExponential(1);
    return Number(v.toFixed(digits)).toString();
  }
  function fmtFps(v) {
    return v > 0 && v < 0.1 ? '<0.1' : fmtNum(v);
  }
  function fmtTime(unix) {
    if (!unix) return '–';
    const d = new Date(unix * 1000);
    const today = new Date().toDateString() === d.toDateString();
    const time = d.toLocaleTimeString([], { hour12: false });
    return today ? time : `${d.toLocaleDateString()} ${time}`;
  }
  function fmtAgo(unix) {
    if (!unix) return '–';
    const s = Math.max(0, Date.now() / 1000 - unix);
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 172800) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }
  const naturally = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

  // ---------------------------------------------------------------- the API

  class ApiError extends Error {
    constructor(status, detail) {
      super(`${status}: ${detail}`);
      this.status = status;
      this.detail = detail;
    }
  }

  function token() {
    return localStorage.getItem(TOKEN_KEY) || '';
  }
  function headers(extra = {}) {
    const t = token();
    return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
  }
  function apiUrl(path, params = {}) {
    const url = new URL(path, API);
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== '') url.searchParams.set(k, v);
    }
    return url;
  }
  async function errorDetail(r) {
    try {
      const body = await r.json();
      return typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
    } catch (_) {
      return r.statusText; // not JSON
    }
  }
  async function api(path, params = {}, init = {}) {
    const r = await fetch(apiUrl(path, params), { ...init, headers: headers({ Accept: 'application/json' }) });
    if (!r.ok) {
      const detail = await errorDetail(r);
      const err = new ApiError(r.status, detail);
      if (r.status === 401 || (r.status === 503 && /token/i.test(detail))) showAuthProblem(err);
      throw err;
    }
    hideBanner('auth');
    return r.json();
  }

  // A change (acknowledge, silence, lift one): sent with the token typed for changes in this tab, else the saved
  // one, always in the Authorization header, never in the URL. Its refusals are the caller's to show.
  function actionToken() {
    return sessionStorage.getItem(ACTION_TOKEN_KEY) || token();
  }
  async function change(method, path, body = null, params = {}) {
    const t = actionToken();
    const h = { Accept: 'application/json', ...(body ? { 'Content-Type': 'application/json' } : {}) };
    if (t) h.Authorization = `Bearer ${t}`;
    const r = await fetch(apiUrl(path, params), { method, headers: h, body: body ? JSON.stringify(body) : undefined });
    if (!r.ok) throw new ApiError(r.status, await errorDetail(r));
    return r.json();
  }

  // ---------------------------------------------------------------- banner and token

  const banner = $('#banner');
  function showBanner(kind, text) {
    banner.dataset.kind = kind;
    banner.textContent = text;
    banner.hidden = false;
  }
  function hideBanner(kind) {
    if (banner.dataset.kind === kind) banner.hidden = true;
  }
  function showAuthProblem(err) {
    const what = token() ? 'The API refused the token' : 'The API needs a token for reads';
    showBanner('auth', `${what} (${err.status}: ${err.detail}). Paste a token in "API token" and press Save.`);
  }

  const tokenInput = $('#token');
  tokenInput.value = token();
  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = tokenInput.value.trim();
    if (t) localStorage.setItem(TOKEN_KEY, t);
    else localStorage.removeItem(TOKEN_KEY);
    restartEverything();
  });
  $('#token-clear').addEventListener('click', () => {
    tokenInput.value = '';
    localStorage.removeItem(TOKEN_KEY);
    restartEverything();
  });

  // ---------------------------------------------------------------- shared state

  const state = {
    cameras: [], // the latest /cameras answer
    camerasAt: 0,
    fleetError: null,
    filter: '',
    sort: localStorage.getItem(SORT_KEY) || 'status',
    feed: new Map(), // alert_id:status -> {alert, source: 'live' | 'stored', seen: arrival order}
    arrivals: 0,
    signals: null, // the series route's signal names, once known
    views: new Map(), // camera id -> {at, src}: the object URL of its latest view, fetched once per capture
    inventory: new Map(), // camera id -> its inventory (site, tags, notes, gateway, acknowledged, silenced)
    site: '', // the fleet's filters by site and by tag (key=value), and its grouping: site, none or tag:KEY
    tag: '',
    group: localStorage.getItem(GROUP_KEY) || 'site',
    incidentFilters: { status: '', kind: '', site: '' },
    openIncidents: null, // how many, from the latest read
  };
  const alertKey = (a) => `${a.alert_id}:${a.status}`;
  const alertHref = (a) => `#/alert/${enc(a.camera_id)}/${enc(a.alert_id)}/${enc(a.status)}`;

  // ---------------------------------------------------------------- the fleet (polled for every view)

  let fleetTimer = null;
  let fleetInFlight = null;
  function refreshFleet() {
    if (fleetInFlight) return fleetInFlight;
    clearTimeout(fleetTimer);
    // The inventory is held in the API's memory: a cheap read beside the cameras' one.
    fleetInFlight = Promise.all([api('cameras'), api('inventory').catch(() => null)])
      .then(([cams, inventory]) => {
        state.cameras = cams;
        if (inventory) state.inventory = new Map(inventory.map((c) => [c.camera_id, c]));
        state.camerasAt = Date.now() / 1000;
        state.fleetError = null;
      })
      .catch((err) => {
        state.fleetError = err;
      })
      .finally(() => {
        fleetInFlight = null;
        currentView?.onFleet?.();
        fleetTimer = setTimeout(refreshFleet, document.hidden ? FLEET_REFRESH_MS * 4 : FLEET_REFRESH_MS);
      });
    return fleetInFlight;
  }
  let fleetSoon = null;
  function refreshFleetSoon() {
    clearTimeout(fleetSoon);
    fleetSoon = setTimeout(refreshFleet, 1000); // a burst of alerts costs one request
  }

  // How many incidents are open, shown beside the header's link to them.
  let incidentsTimer = null;
  function refreshOpenIncidents() {
    clearTimeout(incidentsTimer);
    api('incidents', { status: 'open', limit: 1000 })
      .then((list) => {
        state.openIncidents = list.length;
      })
      .catch(() => {
        state.openIncidents = null;
      })
      .finally(() => {
        const n = state.openIncidents;
        const count = $('#open-incidents');
        count.textContent = n ? `${n >= 1000 ? '1000+' : n} open` : '';
        count.dataset.open = String(n ?? '');
        incidentsTimer = setTimeout(refreshOpenIncidents, document.hidden ? INCIDENTS_REFRESH_MS * 4 : INCIDENTS_REFRESH_MS);
      });
  }

  // ---------------------------------------------------------------- views

  let currentView = null;

  function route() {
    const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
    currentView?.unmount?.();
    currentView = null;
    view.replaceChildren();
    if (parts[0] === 'camera' && parts[1]) currentView = cameraView(parts[1]);
    else if (parts[0] === 'alert' && parts[3]) currentView = evidenceView(parts[1], parts[2], parts[3]);
    else if (parts[0] === 'edge-cases') currentView = edgeCasesView();
    else if (parts[0] === 'incidents') currentView = incidentsView();
    else if (parts[0] === 'incident' && parts[1]) currentView = incidentView(parts[1]);
    else currentView = fleetView();
    renderFeed();
  }

  function crumbs(items) {
    $('#crumbs').innerHTML = items
      .map(([label, href]) => (href ? `<a href="${esc(href)}">${esc(label)}</a>` : `<span>${esc(label)}</span>`))
      .join(' › ');
  }

  // ------------------------------------------------ fleet view: a tile per camera, filtered, grouped and sorted

  const FLEET_HTML = `
    <section id="fleet" class="fleet">
      <div class="toolbar">
        <input id="filter" type="search" placeholder="Filter: camera id, status, site or tag" aria-label="filter cameras"
               spellcheck="false">
        <label>Site <select id="site-filter" aria-label="cameras of site"><option value="">all</option></select></label>
        <label>Tag <select id="tag-filter" aria-label="cameras with tag"><option value="">any</option></select></label>
        <label>Group
          <select id="group" aria-label="group cameras">
            <option value="site">by site</option><option value="none">none</option>
          </select>
        </label>
        <label>Sort
          <select id="sort" aria-label="sort cameras">
            <option value="status">status (worst first)</option>
            <option value="name">name</option>
            <option value="fps">fps (lowest first)</option>
            <option value="fps-desc">fps (highest first)</option>
            <option value="alerts">active alerts (most first)</option>
          </select>
        </label>
        <span id="fleet-summary" class="summary"></span>
      </div>
      <div id="tiles"></div>
    </section>`;

  function fleetView() {
    crumbs([['Fleet']]);
    view.innerHTML = FLEET_HTML;
    const filter = $('#filter');
    const sort = $('#sort');
    filter.value = state.filter;
    sort.value = state.sort;
    let pending = 0;
    filter.addEventListener('input', () => {
      cancelAnimationFrame(pending);
      pending = requestAnimationFrame(() => {
        state.filter = filter.value;
        render();
      });
    });
    sort.addEventListener('change', () => {
      state.sort = sort.value;
      localStorage.setItem(SORT_KEY, state.sort);
      render();
    });
    for (const [id, key] of [['#site-filter', 'site'], ['#tag-filter', 'tag'], ['#group', 'group']]) {
      $(id).addEventListener('change', (ev) => {
        state[key] = ev.target.value;
        if (key === 'group') localStorage.setItem(GROUP_KEY, state.group);
        render();
      });
    }
    let lastHtml = '';
    // The tiles' thumbnails: each camera's latest view, fetched (with the token) when its capture time changes,
    // a few at a time, worst cameras first; a tile shows what has arrived and the grid re-renders as more do.
    const wanted = [];
    const queued = new Set(); // camera ids waiting or being fetched
    let fetching = 0;
    function fetchViews(cams) {
      for (const c of cams) {
        const have = state.views.get(c.camera_id);
        if (c.view_at && (!have || have.at !== c.view_at) && !queued.has(c.camera_id)) {
          wanted.push(c);
          queued.add(c.camera_id);
        }
      }
      while (fetching < 6 && wanted.length) {
        const c = wanted.shift();
        fetching += 1;
        imageUrl(`/api/v1/cameras/${enc(c.camera_id)}/view.jpg?boxes=false&at=${c.view_at}`)
          .catch(() => null) // the tile keeps its text; tried again when a newer view is stored
          .then((src) => {
            const old = state.views.get(c.camera_id);
            state.views.set(c.camera_id, { at: c.view_at, src: src || old?.src || null });
            if (src && old?.src) URL.revokeObjectURL(old.src);
          })
          .finally(() => {
            fetching -= 1;
            queued.delete(c.camera_id);
            render();
          });
      }
    }
    function render() {
      const tiles = $('#tiles');
      if (!tiles) return;
      renderInventoryChoices();
      const shown = shownCameras();
      const counts = { ok: 0, warning: 0, alert: 0, offline: 0 };
      for (const c of state.cameras) counts[c.status] = (counts[c.status] || 0) + 1;
      $('#fleet-summary').innerHTML =
        `<b>${shown.length}</b> of ${state.cameras.length} cameras · ` +
        Object.entries(counts)
          .map(([s, n]) => `<span class="dot status-${s}"></span>${n} ${s}`)
          .join(' · ') +
        (state.fleetError ? ` · <span class="error">${esc(state.fleetError.message)}</span>` : '');
      const html = tilesHtml(shown);
      if (html !== lastHtml) {
        tiles.innerHTML = html;
        lastHtml = html;
      }
      fetchViews(shown);
    }
    render();
    return { onFleet: render };
  }

  // The cameras that the filters let through, sorted.
  function shownCameras() {
    const words = state.filter.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = state.cameras.filter((c) => {
      const inv = state.inventory.get(c.camera_id);
      if (state.site && (inv?.site || '') !== state.site) return false;
      if (state.tag && !tagsOf(inv).includes(state.tag)) return false;
      const hay = `${c.camera_id} ${c.status} ${inv?.site || ''} ${tagsOf(inv).join(' ')}`.toLowerCase();
      return words.every((w) => hay.includes(w));
    });
    return shown.sort(comparator(state.sort));
  }

  // One string, one innerHTML assignment for the whole grid (500 tiles render in a few ms).
  function tilesHtml(shown) {
    if (!shown.length) return `<p class="empty">${state.cameras.length ? 'No camera matches the filter.' : emptyFleetText()}</p>`;
    const groups = groupCameras(shown, state.group);
    if (!groups) return `<div class="tiles">${shown.map(tileHtml).join('')}</div>`;
    return groups.map(([key, cams]) => groupHtml(key, cams)).join('');
  }

  // The site, tag and grouping choices that the inventory offers; a choice that it no longer offers is dropped.
  function renderInventoryChoices() {
    const sites = new Set();
    const tags = new Set();
    const keys = new Set();
    for (const inv of state.inventory.values()) {
      if (inv.site) sites.add(inv.site);
      for (const t of tagsOf(inv)) tags.add(t);
      for (const k of Object.keys(inv.tags)) keys.add(k);
    }
    const sorted = (set) => [...set].sort(naturally.compare);
    const options = (values, label = (v) => v) => values.map((v) => `<option value="${esc(v)}">${esc(label(v))}</option>`).join('');
    fillSelect($('#site-filter'), `<option value="">all</option>${options(sorted(sites))}`, state, 'site');
    fillSelect($('#tag-filter'), `<option value="">any</option>${options(sorted(tags))}`, state, 'tag');
    const groups = `<option value="site">by site</option><option value="none">none</option>${options(
      sorted(keys).map((k) => `tag:${k}`),
      (g) => `by ${g.slice(4)}`,
    )}`;
    fillSelect($('#group'), groups, state, 'group', 'site');
  }

  // A select's options, rewritten only when they change; holder[key] is its value, reset to fallback when the
  // options no longer hold it.
  function fillSelect(select, html, holder, key, fallback = '') {
    if (!select) return;
    if (select.dataset.html !== html) {
      select.innerHTML = html;
      select.dataset.html = html;
    }
    if (![...select.options].some((o) => o.value === holder[key])) holder[key] = fallback;
    select.value = holder[key];
  }

  const tagsOf = (inv) => Object.entries(inv?.tags || {}).map(([k, v]) => `${k}=${v}`);

  // [[group, cameras]] by site or by a tag's value, named groups first; null when there is nothing to group by.
  function groupCameras(cams, group) {
    if (group === 'none') return null;
    const key = (c) => {
      const inv = state.inventory.get(c.camera_id);
      return (group === 'site' ? inv?.site : inv?.tags[group.slice(4)]) || '';
    };
    const groups = new Map();
    for (const c of cams) {
      const k = key(c);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(c);
    }
    if (groups.size === 1 && groups.has('')) return null; // nobody described these cameras
    return [...groups.entries()].sort(([a], [b]) => (a === '') - (b === '') || naturally.compare(a, b));
  }

  function groupHtml(key, cams) {
    const label = key || (state.group === 'site' ? 'no site' : `no ${state.group.slice(4)}`);
    const counts = {};
    for (const c of cams) counts[c.status] = (counts[c.status] || 0) + 1;
    const worst = ['alert', 'warning', 'offline'].filter((s) => counts[s]);
    return `<section class="tile-group" data-group="${esc(key)}"><h2 class="group-head">${esc(label)} <span class="muted">${
      cams.length
    } camera${cams.length === 1 ? '' : 's'}${worst.map((s) => ` · <span class="dot status-${s}"></span>${counts[s]} ${s}`).join('')}</span></h2>
      <div class="tiles">${cams.map(tileHtml).join('')}</div></section>`;
  }

  function emptyFleetText() {
    if (state.fleetError) return `Cameras could not be read: ${esc(state.fleetError.message)}`;
    return state.camerasAt ? 'No camera has sent a frame yet.' : 'Loading cameras…';
  }

  function comparator(sort) {
    const byName = (a, b) => naturally.compare(a.camera_id, b.camera_id);
    switch (sort) {
      case 'name':
        return byName;
      case 'fps':
        return (a, b) => a.fps - b.fps || byName(a, b);
      case 'fps-desc':
        return (a, b) => b.fps - a.fps || byName(a, b);
      case 'alerts':
        return (a, b) => b.active_alerts - a.active_alerts || STATUS_RANK[a.status] - STATUS_RANK[b.status] || byName(a, b);
      default:
        return (a, b) => STATUS_RANK[a.status] - STATUS_RANK[b.status] || b.active_alerts - a.active_alerts || byName(a, b);
    }
  }

  function tileHtml(c) {
    const inv = state.inventory.get(c.camera_id);
    const where = [state.group === 'site' ? '' : inv?.site, ...tagsOf(inv)].filter(Boolean).join(' · ');
    const held = [inv?.silenced ? 'silenced' : '', inv?.acknowledged ? 'acknowledged' : ''].filter(Boolean).join(' · ');
    const invHtml = where || held ? `<span class="tile-inv">${esc(where)}${held ? ` <b>${esc(held)}</b>` : ''}</span>` : '';
    const seen = state.views.get(c.camera_id);
    const img = seen?.src ? `<img class="tile-view" src="${seen.src}" alt="${esc(c.camera_id)} now" title="${esc(fmtTime(seen.at))}">` : '';
    return `<a class="tile status-${esc(c.status)}" href="#/camera/${enc(c.camera_id)}" data-camera="${esc(c.camera_id)}"
      data-status="${esc(c.status)}">${img}<span class="tile-name">${esc(c.camera_id)}</span><span class="badge status-${esc(
        c.status,
      )}">${esc(c.status)}</span><span class="tile-fps"><b>${fmtFps(c.fps)}</b> fps</span><span class="tile-last"
      title="last frame ${esc(fmtTime(c.last_frame_at))}">${esc(fmtAgo(c.last_frame_at))}</span><span
      class="tile-alerts${c.active_alerts ? ' has-alerts' : ''}">${c.active_alerts} active alert${
        c.active_alerts === 1 ? '' : 's'
      }</span>${invHtml}</a>`;
  }

  // ------------------------------------------------ camera view: summary, plots, active and recent alerts

  function cameraHtml(cameraId, range) {
    return `
    <section id="camera" class="camera" data-camera="${esc(cameraId)}">
      <div class="heading"><h1>${esc(cameraId)}</h1><span id="cam-status"></span></div>
      <div id="cam-facts" class="facts"></div>
      <div id="cam-inventory" class="facts"></div>
      <div id="cam-actions" class="actions"></div>
      <div id="cam-views" class="thumbs"></div>
      <div class="toolbar">
        <span>Signals over the last</span>
        <span class="ranges">${RANGES.map(
          (r, i) => `<button type="button" data-range="${i}"${r === range ? ' aria-pressed="true"' : ''}>${r.label}</button>`,
        ).join('')}</span>
        <span id="plots-note" class="muted"></span>
      </div>
      <div id="plots" class="plots"></div>
      <div class="toolbar"><h2>Drift statistics</h2><span id="drift-note" class="muted"></span></div>
      <div id="drift-plots" class="plots"></div>
      <div class="toolbar"><h2>Champion and challenger</h2><span id="agreement-note" class="muted"></span></div>
      <div id="agreement-totals"></div>
      <div id="agreement-plots" class="plots"></div>
      <div class="columns">
        <section><h2>Active alerts</h2><ol id="cam-active" class="alerts"><li class="muted">Loading…</li></ol></section>
        <section><h2>Recent alerts</h2><ol id="cam-recent" class="alerts"><li class="muted">Loading…</li></ol></section>
      </div>
    </section>`;
  }

  function cameraView(cameraId) {
    crumbs([['Fleet', '#/'], [cameraId]]);
    let range = RANGES[1];
    view.innerHTML = cameraHtml(cameraId, range);
    const plots = new PlotSet($('#plots'), cameraId);
    const driftPlots = new PlotSet($('#drift-plots'), cameraId);
    const agreementPlots = new PlotSet($('#agreement-plots'), cameraId);
    const actions = actionPanel($('#cam-actions'), 'camera', cameraId, () => refresh());
    let timer = null;
    let gone = false;
    let detail = null;
    const shownViews = new Map(); // role -> {at, src}

    view.querySelector('.ranges').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-range]');
      if (!b) return;
      range = RANGES[Number(b.dataset.range)];
      for (const other of view.querySelectorAll('.ranges button')) other.removeAttribute('aria-pressed');
      b.setAttribute('aria-pressed', 'true');
      refresh();
    });

    async function refresh() {
      clearTimeout(timer);
      try {
        let inventory, performance;
        [detail, inventory, performance] = await Promise.all([
          api(`cameras/${enc(cameraId)}`),
          api(`cameras/${enc(cameraId)}/inventory`).catch(() => null),
          api(`cameras/${enc(cameraId)}/performance`).catch(() => []),
        ]);
        if (gone) return;
        renderDetail(detail, performance);
        $('#cam-inventory').innerHTML = inventoryHtml(inventory);
        actions.update(inventory?.acknowledged, inventory?.silenced);
        renderViews(cameraId, detail, shownViews, () => gone);
        const until = Math.ceil(Date.now() / 1000 / 60) * 60;
        const since = Math.max(until - range.s, Math.floor(detail.first_seen_at / 60) * 60 - 60);
        const alerts = await api('alerts', { camera_id: cameraId, since, until, limit: 1000 }).catch(() => []);
        if (gone) return;
        await plots.show({ since, until: Math.max(until, since + 300), step: range.step, alerts, firstSeen: detail.first_seen_at });
        $('#plots-note').textContent = `${range.step / 60}-minute points; lines mark alerts (red raised, green resolved)`;
        await plots.showClasses({ since, until: Math.max(until, since + 300), step: range.step, alerts });
        if (gone) return;
        const drift = await driftPlots.showDrift({ since, until: Math.max(until, since + 300), step: range.step, alerts });
        if (gone || !drift) return;
        $('#drift-note').textContent = drift.err
          ? `could not read them: ${drift.err.message}`
          : drift.series.length
            ? 'each point: the step\'s most drifted sample; dashed red: the threshold; up is toward drift'
            : 'none sampled in this range yet (the detectors are still learning their references)';
        const agreement = await agreementPlots.showAgreement({ since, until: Math.max(until, since + 300), step: range.step });
        if (gone || !agreement) return;
        renderAgreement(agreement);
      } catch (err) {
        if (gone) return;
        $('#cam-facts').innerHTML = `<p class="error">${esc(err.status === 404 ? `Unknown camera ${cameraId}.` : err.message)}</p>`;
      }
      if (!gone) timer = setTimeout(refresh, CAMERA_REFRESH_MS);
    }

    function renderDetail(d, performance) {
      const lf = d.last_frame;
      $('#cam-status').innerHTML = `<span class="badge status-${esc(d.status)}" data-status="${esc(d.status)}">${esc(d.status)}</span>`;
      $('#cam-facts').innerHTML = `<dl>
        ${fact('fps', fmtFps(d.fps))}
        ${fact('last frame', `${fmtTime(d.last_frame_at)} (${fmtAgo(d.last_frame_at)})`)}
        ${fact('frames stored', d.frames.toLocaleString())}
        ${fact('first seen', fmtTime(d.first_seen_at))}
        ${fact('model', lf.model_version)}
        ${fact('resolution', `${lf.width}×${lf.height}`)}
        ${fact('brightness', fmtNum(lf.brightness))}
        ${fact('blur', fmtNum(lf.blur))}
        ${fact('inference', `${fmtNum(lf.inference_ms)} ms`)}
        ${fact('detections', lf.detections)}
        ${performance?.length ? fact('expected precision', performanceText(performance[0])) : ''}
      </dl>`;
      $('#cam-active').innerHTML = alertListHtml(d.active, 'No active alert.');
      $('#cam-recent').innerHTML = alertListHtml(d.recent_alerts, 'No alert yet.');
    }

    refresh();
    return {
      unmount() {
        gone = true;
        clearTimeout(timer);
        plots.destroy();
        driftPlots.destroy();
        agreementPlots.destroy();
        for (const v of shownViews.values()) URL.revokeObjectURL(v.src);
      },
      onLiveAlert(a) {
        if (a.camera_id === cameraId) refresh();
      },
    };
  }

  // The newest model's expected precision (from its scores, calibrated on labelled frames) beside what labels measured.
  function performanceText(p) {
    const est = `${fmtNum(p.expected_precision, 2)} (${fmtNum(p.low, 2)}–${fmtNum(p.high, 2)}), floor ${fmtNum(p.floor, 2)}`;
    const measured = p.measured_precision === null
      ? 'no labels yet'
      : `measured ${fmtNum(p.measured_precision, 2)} (expected ${fmtNum(p.expected_on_labelled, 2)}), F1 ${fmtNum(p.measured_f1, 2)} on ${p.labelled_frames} labelled frames`;
    return `${est}; ${measured} · ${p.model_name}`;
  }

  // The challenger in shadow against the champion over the range: one row per pair and one per class.
  function renderAgreement(answer) {
    $('#agreement-note').textContent = answer.err
      ? `could not read them: ${answer.err.message}`
      : answer.totals.length
        ? "the challenger's boxes against the champion's on the frames it saw in shadow, matched at IoU 0.5"
        : 'no challenger saw frames of this camera in this range';
    const rows = answer.totals.flatMap((t) => [
      ['all classes', t.all, t],
      ...Object.entries(t.classes).map(([label, f]) => [label, f, t]),
    ]);
    $('#agreement-totals').innerHTML = rows.length
      ? `<table class="incident-table agreement"><thead><tr><th>champion</th><th>challenger</th><th>class</th>
          <th class="num">frames</th><th class="num">precision</th><th class="num">recall</th><th class="num">F1</th>
          <th class="num">boxes Δ per frame</th><th class="num">confidence Δ</th></tr></thead><tbody>${rows
            .map(([label, f, t]) => `<tr data-pair="${esc(`${t.champion} ${t.challenger}`)}" data-class="${esc(label)}"
              data-f1="${f.f1}"><td>${esc(t.champion)}</td><td>${esc(t.challenger)}</td><td>${esc(label)}</td>
              <td class="num">${t.frames.toLocaleString()}</td><td class="num">${fmtNum(f.precision, 2)}</td>
              <td class="num">${fmtNum(f.recall, 2)}</td><td class="num">${fmtNum(f.f1, 2)}</td>
              <td class="num">${fmtNum(f.count_delta, 2)}</td><td class="num">${fmtNum(f.confidence_delta, 2)}</td></tr>`)
            .join('')}</tbody></table>`
      : '';
  }

  // What the camera sees now, and beside it the reference view its moved-camera check compares with.
  async function renderViews(cameraId, d, shownViews, gone) {
    const roles = [
      ['latest', d.view_at, 'now'],
      ['reference', d.reference_view_at, 'reference view'],
    ].filter(([, at]) => at);
    for (const [role, at] of roles) {
      if (shownViews.get(role)?.at === at) continue;
      const src = await imageUrl(`/api/v1/cameras/${enc(cameraId)}/view.jpg?role=${role}&at=${at}`).catch(() => null);
      if (gone() || !src) return;
      const old = shownViews.get(role);
      shownViews.set(role, { at, src });
      if (old) URL.revokeObjectURL(old.src);
    }
    $('#cam-views').innerHTML = roles
      .map(([role, , label]) => {
        const v = shownViews.get(role);
        return v ? `<figure class="thumb view-${role}" data-role="${role}"><img src="${v.src}" alt="${esc(label)}"><figcaption>${esc(label)}, ${esc(fmtTime(v.at))}</figcaption></figure>` : '';
      })
      .join('');
  }

  // A camera's site, tags, gateway and notes; '' when the API has none.
  function inventoryHtml(inv) {
    if (!inv) return '';
    const notes = inv.notes ? `<div class="wide"><dt>notes</dt><dd>${esc(inv.notes)}</dd></div>` : '';
    return `<dl>${fact('site', inv.site || '–')}${fact('tags', tagsOf(inv).join(', ') || '–')}${fact('gateway', inv.gateway || '–')}${notes}</dl>`;
  }

  function fact(label, value) {
    return `<div><dt>${esc(label)}</dt><dd>${esc(value)}</dd></div>`;
  }

  function alertListHtml(alerts, empty) {
    if (!alerts.length) return `<li class="muted">${esc(empty)}</li>`;
    return foldSymptoms(alerts)
      .map(({ item, symptoms }) => `<li>${alertRowHtml(item)}${symptomsHtml(symptoms.map(alertRowHtml))}</li>`)
      .join('');
  }

  function alertRowHtml(a) {
    return `<a class="alert-row sev-${esc(a.severity)} st-${esc(a.status)}${a.caused_by ? ' symptom' : ''}" href="${alertHref(a)}"
      data-alert-id="${esc(a.alert_id)}" data-status="${esc(a.status)}" data-caused-by="${esc(a.caused_by || '')}">
      <span class="when" title="${esc(fmtTime(a.raised_at))}">${esc(fmtTime(a.raised_at))}</span>
      <span class="kind">${esc(a.type)} · ${esc(a.signal)}</span><span class="badge st-${esc(a.status)}">${esc(
        a.status,
      )}</span><span class="msg">${esc(a.message)}</span></a>`;
  }

  // A cause's symptoms (docs/alerts.md: status suppressed, or their resolves, naming the cause in caused_by)
  // folded under the cause where the list holds it: [{item, symptoms}] in the list's order. A symptom whose
  // cause is not in the list stands on its own.
  function foldSymptoms(items, alertOf = (x) => x) {
    const heads = new Map(); // the cause's alert id -> its entry: its raised record where the list has it
    for (const item of items) {
      const a = alertOf(item);
      const have = heads.get(a.alert_id);
      if (!a.caused_by && (!have || (a.status === 'raised' && alertOf(have.item).status !== 'raised'))) {
        heads.set(a.alert_id, { item, symptoms: [] });
      }
    }
    const out = [];
    for (const item of items) {
      const a = alertOf(item);
      const head = heads.get(a.caused_by || a.alert_id);
      if (a.caused_by && head) head.symptoms.push(item);
      else out.push(head?.item === item ? head : { item, symptoms: [] });
    }
    return out;
  }

  function symptomsHtml(rows) {
    if (!rows.length) return '';
    return `<ol class="symptoms" aria-label="its symptoms">${rows.map((r) => `<li>${r}</li>`).join('')}</ol>`;
  }

  // ------------------------------------------------ evidence view: what one alert carries, and the plots around it

  function evidenceView(cameraId, alertId, status) {
    crumbs([['Fleet', '#/'], [cameraId, `#/camera/${enc(cameraId)}`], [`alert ${alertId.slice(0, 8)}`]]);
    view.innerHTML = `
      <section id="evidence" class="evidence" data-alert-id="${esc(alertId)}" data-status="${esc(status)}">
        <div class="heading"><h1>Alert evidence</h1></div>
        <div id="evidence-details"><p class="muted">Loading the alert…</p></div>
        <h2>${esc(cameraId)} around the alert <span id="plots-note" class="muted"></span></h2>
        <div id="plots" class="plots"></div>
      </section>`;
    const plots = new PlotSet($('#plots'), cameraId);
    let gone = false;
    let images = null; // the evidence thumbnails, fetched once (with the token, hence as blobs)

    async function load() {
      let alert = state.feed.get(`${alertId}:${status}`)?.alert;
      let records = [];
      try {
        records = (await api('alerts', { camera_id: cameraId, limit: 1000 })).filter((a) => a.alert_id === alertId);
      } catch (err) {
        if (!alert) throw err;
      }
      alert = alert || records.find((a) => a.status === status);
      if (gone) return;
      if (!alert) {
        $('#evidence-details').innerHTML = `<p class="error">No ${esc(status)} record of alert ${esc(alertId)} on ${esc(
          cameraId,
        )} is stored (yet).</p>`;
        return;
      }
      const other = records.find((a) => a.status !== alert.status);
      $('#evidence-details').innerHTML = detailsHtml(alert, other);
      if (!images || !images.length) images = await evidenceImages(alertId).catch(() => null);
      if (gone) return;
      if (images && images.length) {
        $('#evidence-frames').innerHTML = `<div class="thumbs">${images
          .map((e) => `<figure class="thumb ${esc(e.role)}"><img src="${e.src}" width="${esc(e.width)}"
            height="${esc(e.height)}" alt="${esc(e.frame_id)}"><figcaption>${
              e.role === 'reference' ? 'reference view' : `<code>${esc(e.frame_id)}</code>`
            }</figcaption></figure>`)
          .join('')}</div>`;
      }
      const detail = await api(`cameras/${enc(cameraId)}`).catch(() => null);
      if (gone) return;
      const now = Date.now() / 1000;
      const first = detail ? Math.floor(detail.first_seen_at / 60) * 60 - 60 : alert.raised_at - 1800;
      const until = Math.ceil(Math.min(alert.raised_at + 1800, now + 60) / 60) * 60;
      let since = Math.max(alert.raised_at - 1800, first);
      if (until - since < 600) since = until - 600;
      const around = await api('alerts', { camera_id: cameraId, since, until, limit: 1000 }).catch(() => []);
      if (gone) return;
      const markers = around.some((a) => alertKey(a) === alertKey(alert)) ? around : [alert, ...around];
      await plots.show({ since, until, step: 60, alerts: markers, focus: alert, firstSeen: detail?.first_seen_at });
      $('#plots-note').textContent = `(${fmtTime(since)} to ${fmtTime(until)}; the thick line is this alert${
        plots.signals.includes(alert.signal) ? `, the dashed line its threshold on ${alert.signal}` : ''
      })`;
    }

    // Read again while the view is open: the store catches up with a fresh alert, and its "after" fills in.
    let timer = null;
    function refresh() {
      load()
        .catch((err) => {
          if (!gone) $('#evidence-details').innerHTML = `<p class="error">${esc(err.message)}</p>`;
        })
        .finally(() => {
          if (!gone) timer = setTimeout(refresh, CAMERA_REFRESH_MS);
        });
    }
    refresh();
    return {
      unmount() {
        gone = true;
        clearTimeout(timer);
        plots.destroy();
        for (const e of images || []) URL.revokeObjectURL(e.src);
      },
    };
  }

  // ------------------------------------------------ incidents: alerts of many cameras with one cause

  function incidentsView() {
    crumbs([['Fleet', '#/'], ['Incidents']]);
    const f = state.incidentFilters;
    view.innerHTML = `
      <section id="incidents" class="incidents">
        <div class="toolbar">
          <label>Status
            <select id="inc-status" aria-label="incident status">
              <option value="">open first, then resolved</option><option value="open">open</option>
              <option value="resolved">resolved</option>
            </select>
          </label>
          <label>Kind
            <select id="inc-kind" aria-label="incident kind"><option value="">any</option>${KINDS.map(
              (k) => `<option value="${k}">${k}</option>`,
            ).join('')}</select>
          </label>
          <label>Site <select id="inc-site" aria-label="incident site"><option value="">any</option></select></label>
          <span id="inc-summary" class="summary"></span>
        </div>
        <table class="incident-table">
          <thead><tr><th>state</th><th>kind</th><th>scope</th><th>cause</th><th>cameras</th><th>opened</th>
            <th>resolved</th><th>people</th></tr></thead>
          <tbody id="incident-rows"><tr><td colspan="8" class="muted">Loading incidents…</td></tr></tbody>
        </table>
      </section>`;
    let gone = false;
    let timer = null;
    const sites = new Set();
    $('#inc-status').value = f.status;
    $('#inc-kind').value = f.kind;
    for (const [id, key] of [['#inc-status', 'status'], ['#inc-kind', 'kind'], ['#inc-site', 'site']]) {
      $(id).addEventListener('change', (ev) => {
        f[key] = ev.target.value;
        load();
      });
    }
    // A click anywhere on a row opens the incident (its kind is the row's link, for the keyboard).
    $('#incident-rows').addEventListener('click', (ev) => {
      const row = ev.target.closest('tr[data-incident]');
      if (row && !ev.target.closest('a')) location.hash = `#/incident/${enc(row.dataset.incident)}`;
    });

    async function load() {
      clearTimeout(timer);
      try {
        const list = await api('incidents', { status: f.status, kind: f.kind, site: f.site, limit: 200 });
        if (gone) return;
        for (const inv of state.inventory.values()) if (inv.site) sites.add(inv.site);
        for (const i of list) if (i.site) sites.add(i.site);
        const options = [...sites].sort(naturally.compare).map((s) => `<option value="${esc(s)}">${esc(s)}</option>`);
        fillSelect($('#inc-site'), `<option value="">any</option>${options.join('')}`, f, 'site');
        const open = list.filter((i) => i.open).length;
        $('#inc-summary').textContent = `${list.length} incident${list.length === 1 ? '' : 's'}, ${open} open${
          list.length === 200 ? ' (the newest 200)' : ''
        }`;
        $('#incident-rows').innerHTML = list.length
          ? list.map(incidentRowHtml).join('')
          : `<tr><td colspan="8" class="empty">${f.status || f.kind || f.site ? 'No incident matches.' : 'No incident yet.'}</td></tr>`;
      } catch (err) {
        if (!gone) $('#incident-rows').innerHTML = `<tr><td colspan="8" class="error">${esc(err.message)}</td></tr>`;
      }
      if (!gone) timer = setTimeout(load, INCIDENTS_REFRESH_MS);
    }
    load();
    return {
      unmount() {
        gone = true;
        clearTimeout(timer);
      },
    };
  }

  function incidentRowHtml(i) {
    return `<tr class="incident-row ${i.open ? 'open' : 'resolved'}" data-incident="${esc(i.incident_id)}"
      data-kind="${esc(i.kind)}" data-open="${i.open}" data-site="${esc(i.site)}" data-cameras="${i.cameras.length}">
      <td><span class="badge ${i.open ? 'st-raised' : 'st-resolved'}">${i.open ? 'open' : 'resolved'}</span></td>
      <td><a href="#/incident/${enc(i.incident_id)}">${esc(i.kind)}</a></td>
      <td>${esc(i.scope)}${i.site && i.scope !== `site:${i.site}` ? ` <span class="muted">(site ${esc(i.site)})</span>` : ''}</td>
      <td>${esc(i.type)} · ${esc(i.signal)} <span class="muted">${esc(i.direction)}</span></td>
      <td class="num">${i.cameras.length}</td>
      <td><span class="when">${esc(fmtTime(i.opened_at))}</span> <span class="muted">${esc(fmtAgo(i.opened_at))}</span></td>
      <td><span class="when">${i.resolved_at ? esc(fmtTime(i.resolved_at)) : '–'}</span></td>
      <td class="people">${heldHtml(i.acknowledged, i.silenced) || '<span class="muted">–</span>'}</td></tr>`;
  }

  // Who acknowledged or silenced something, when, and until when.
  function heldHtml(ack, silence) {
    const one = (what, r) => `<span class="held ${what}" data-by="${esc(r.by)}" data-at="${esc(r.at)}">${what} by <b>${esc(
      r.by,
    )}</b> at <span class="when">${esc(fmtTime(r.at))}</span>${r.until ? ` until <span class="when">${esc(fmtTime(r.until))}</span>` : ''}${
      r.comment ? `: “${esc(r.comment)}”` : ''
    }</span>`;
    return [ack && one('acknowledged', ack), silence && one('silenced', silence)].filter(Boolean).join(' ');
  }

  function incidentView(incidentId) {
    crumbs([['Fleet', '#/'], ['Incidents', '#/incidents'], [incidentId]]);
    view.innerHTML = `
      <section id="incident" class="incident" data-incident="${esc(incidentId)}">
        <div class="heading"><h1 id="inc-title">Incident</h1><span id="inc-state"></span></div>
        <div id="inc-details"><p class="muted">Loading the incident…</p></div>
        <div id="inc-actions" class="actions"></div>
        <h2>Member cameras <span class="muted">each with the evidence its alert kept</span></h2>
        <div id="inc-members" class="members"></div>
        <div class="toolbar"><h2>The shared signal</h2><span id="inc-plots-note" class="muted"></span></div>
        <div id="inc-plots" class="plots"></div>
        <h2>Records</h2>
        <ol id="inc-history" class="history"></ol>
      </section>`;
    const plots = new PlotSet($('#inc-plots'), `incident-${incidentId}`);
    const actions = actionPanel($('#inc-actions'), 'incident', incidentId, () => refresh());
    const images = new Map(); // alert id -> its thumbnail ({src, ...}), or {none} / {error} to try again
    let gone = false;
    let timer = null;
    let incident = null;
    let membersHtml = '';

    async function refresh() {
      clearTimeout(timer);
      try {
        incident = await api(`incidents/${enc(incidentId)}`);
        if (gone) return;
        renderIncident(incident);
        actions.update(incident.acknowledged, incident.silenced);
        renderMembers();
        await Promise.all([loadThumbs(), showPlots(incident)]);
      } catch (err) {
        if (gone) return;
        const text = err.status === 404 ? `Unknown incident ${incidentId}.` : err.message;
        $('#inc-details').innerHTML = `<p class="error">${esc(text)}</p>`;
      }
      if (!gone) timer = setTimeout(refresh, INCIDENTS_REFRESH_MS);
    }

    function renderMembers() {
      const html = incident.member_cameras.map((m) => memberHtml(m, images.get(evidenceAlert(m)?.alert_id))).join('');
      if (html !== membersHtml) $('#inc-members').innerHTML = membersHtml = html;
    }

    // Each member's thumbnail, four at a time; one that is not stored yet is asked for again next time.
    async function loadThumbs() {
      const todo = incident.member_cameras.map(evidenceAlert).filter((a) => {
        const have = a && images.get(a.alert_id);
        return a && (!have || have.none || have.error);
      });
      const next = async () => {
        for (let a = todo.shift(); a && !gone; a = todo.shift()) {
          images.set(a.alert_id, await memberThumb(a.alert_id));
          if (!gone) renderMembers();
        }
      };
      await Promise.all([next(), next(), next(), next()]);
    }

    async function showPlots(inc) {
      const now = Date.now() / 1000;
      const since = Math.floor((inc.opened_at - 1800) / 60) * 60;
      const until = Math.ceil(Math.min(inc.resolved_at ? inc.resolved_at + 900 : now + 60, now + 60) / 60) * 60;
      const step = Math.max(60, Math.ceil((until - since) / 360 / 60) * 60);
      const cameras = [...inc.cameras].sort(naturally.compare).slice(0, MAX_PLOTTED_CAMERAS);
      const alerts = inc.member_cameras.flatMap((m) => m.alerts);
      const drawn = await plots.showShared({ signal: inc.signal, cameras, since, until, step, alerts });
      if (gone || !drawn) return;
      const some = inc.cameras.length > cameras.length ? `the first ${cameras.length} of ${inc.cameras.length} cameras; ` : '';
      $('#inc-plots-note').textContent = drawn.length
        ? `${some}${step / 60}-minute points, ${fmtTime(since)} to ${fmtTime(until)}; lines mark the member alerts`
        : `no plot of ${inc.signal} is stored for these cameras`;
    }

    refresh();
    return {
      unmount() {
        gone = true;
        clearTimeout(timer);
        plots.destroy();
        for (const img of images.values()) if (img.src) URL.revokeObjectURL(img.src);
      },
      onLiveAlert(a) {
        if (incident?.cameras.includes(a.camera_id)) refresh();
      },
    };
  }

  function renderIncident(inc) {
    crumbs([['Fleet', '#/'], ['Incidents', '#/incidents'], [`${inc.kind} on ${inc.scope}`]]);
    $('#inc-title').textContent = `${inc.kind[0].toUpperCase()}${inc.kind.slice(1)} incident`;
    $('#inc-state').innerHTML = `<span class="badge ${inc.open ? 'st-raised' : 'st-resolved'}" data-open="${inc.open}">${
      inc.open ? 'open' : 'resolved'
    }</span>`;
    $('#inc-details').innerHTML = `<p class="message">${esc(inc.summary)}</p>
      <dl class="details">
        ${fact('kind', inc.kind)}
        ${fact('scope', inc.scope)}
        ${fact('site', inc.site || '–')}
        ${fact('cause', `${inc.type} · ${inc.signal} ${inc.direction}`)}
        <div><dt>cameras</dt><dd data-cameras="${inc.cameras.length}">${inc.cameras.length}</dd></div>
        ${fact('opened', `${fmtTime(inc.opened_at)} (${fmtAgo(inc.opened_at)})`)}
        ${fact('resolved', inc.resolved_at ? `${fmtTime(inc.resolved_at)} (${fmtAgo(inc.resolved_at)})` : 'not yet')}
        <div><dt>incident id</dt><dd><code>${esc(inc.incident_id)}</code></dd></div>
      </dl>`;
    $('#inc-history').innerHTML = inc.history
      .map((h) => `<li data-status="${esc(h.status)}"><span class="when">${esc(fmtTime(h.changed_at))}</span> <span
        class="badge st-${h.status === 'resolved' ? 'resolved' : 'raised'}">${esc(h.status)}</span> ${h.alert_ids.length} alert${
          h.alert_ids.length === 1 ? '' : 's'
        }</li>`)
      .join('');
  }

  // The member alert whose evidence a camera's card shows: its first raised one.
  function evidenceAlert(m) {
    return m.alerts.find((a) => a.status === 'raised') || m.alerts[0] || null;
  }

  // The newest evidence frame of an alert, the one nearest its raise, as an object URL.
  async function memberThumb(alertId) {
    try {
      const frames = await api(`alerts/${enc(alertId)}/evidence`);
      const shots = frames.filter((f) => f.role !== 'reference');
      const f = shots[shots.length - 1] || frames[0];
      if (!f) return { none: true };
      return { ...f, count: frames.length, src: await imageUrl(f.url) };
    } catch (err) {
      return { error: err.message };
    }
  }

  function memberHtml(m, img) {
    const inv = m.inventory;
    const where = [inv?.site, ...tagsOf(inv)].filter(Boolean).join(' · ');
    const first = evidenceAlert(m);
    let shot = '<p class="muted">Loading its evidence…</p>';
    if (img?.src) {
      const more = img.count > 1 && first ? ` · <a href="${alertHref(first)}">all ${img.count} frames</a>` : '';
      shot = `<figure class="thumb"><img src="${img.src}" width="${esc(img.width)}" height="${esc(img.height)}"
        alt="${esc(img.frame_id)}"><figcaption>${esc(fmtTime(img.captured_at))}${more}</figcaption></figure>`;
    } else if (img?.none) shot = '<p class="muted">No evidence frame stored for its alert.</p>';
    else if (img?.error) shot = `<p class="error">${esc(img.error)}</p>`;
    else if (!first) shot = '';
    const rows = foldSymptoms(m.alerts).map(({ item, symptoms }) => `<li>${alertRowHtml(item)}${symptomsHtml(symptoms.map(alertRowHtml))}</li>`);
    return `<article class="member" data-camera="${esc(m.camera_id)}">
      <header><a href="#/camera/${enc(m.camera_id)}"><b>${esc(m.camera_id)}</b></a> <span class="muted">${esc(where)}</span>
        ${heldHtml(inv?.acknowledged, inv?.silenced)}</header>
      <div class="member-evidence">${shot}</div>
      <ol class="alerts">${rows.join('')}</ol></article>`;
  }

  // ------------------------------------------------ acknowledge and silence (an incident or a camera)

  // Buttons to acknowledge or silence, and to lift either, with who and when shown. A change needs an API token:
  // the one saved in the header, else one typed here, kept in sessionStorage for this tab only; the name of who
  // acts is asked each time, remembered as the default.
  function actionPanel(box, target, targetId, changed) {
    box.innerHTML = `<div class="act-state"></div>
      <div class="act-buttons">
        <button type="button" data-act="acknowledge">Acknowledge</button>
        <button type="button" data-act="unacknowledge" hidden>Take back acknowledgement</button>
        <button type="button" data-act="silence">Silence…</button>
        <button type="button" data-act="unsilence" hidden>End silence</button>
      </div>
      <form class="act-form" autocomplete="off" hidden>
        <label>Your name <input name="by" maxlength="100" spellcheck="false"></label>
        <label class="act-for">for <select name="for_s">${SILENCE_FOR.map(([s, l]) => `<option value="${s}">${l}</option>`).join('')}</select></label>
        <label class="act-comment">Comment <input name="comment" maxlength="1000"></label>
        <label class="act-token">API token <input name="token" type="password" spellcheck="false" autocomplete="off"></label>
        <button type="submit" class="act-go"></button>
        <button type="button" class="act-cancel">Cancel</button>
        <span class="act-error error" role="alert"></span>
      </form>`;
    const form = $('.act-form', box);
    const field = (name) => form.elements.namedItem(name);
    const label = { acknowledge: 'Acknowledge', unacknowledge: 'Take it back', silence: 'Silence', unsilence: 'End silence' };
    let action = null;
    let askToken = false;

    function open(act) {
      action = act;
      $('.act-go', form).textContent = label[act];
      $('.act-for', form).hidden = act !== 'silence';
      $('.act-comment', form).hidden = act.startsWith('un');
      $('.act-token', form).hidden = !(askToken || !actionToken());
      $('.act-error', form).textContent = '';
      field('by').value = field('by').value || localStorage.getItem(ACTOR_KEY) || '';
      form.hidden = false;
      form.dataset.action = act;
      (field('by').value ? $('.act-go', form) : field('by')).focus();
    }
    $('.act-buttons', box).addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-act]');
      if (b) open(b.dataset.act);
    });
    $('.act-cancel', form).addEventListener('click', () => {
      form.hidden = true;
    });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const by = field('by').value.trim();
      const typed = field('token').value.trim();
      if (!by) {
        $('.act-error', form).textContent = 'Say who you are: your name is recorded with it.';
        return;
      }
      localStorage.setItem(ACTOR_KEY, by);
      if (typed) sessionStorage.setItem(ACTION_TOKEN_KEY, typed);
      const kind = action.replace(/^un/, '');
      const path = `${target === 'incident' ? 'incidents' : 'cameras'}/${enc(targetId)}/${kind}`;
      try {
        if (action.startsWith('un')) await change('DELETE', path, null, { by });
        else {
          const body = { by, comment: field('comment').value.trim() };
          if (kind === 'silence') body.for_s = Number(field('for_s').value);
          await change('POST', path, body);
        }
        form.hidden = true;
        field('token').value = '';
        field('comment').value = '';
        askToken = false;
        changed();
      } catch (err) {
        if (err.status === 401) {
          sessionStorage.removeItem(ACTION_TOKEN_KEY);
          askToken = true;
          $('.act-token', form).hidden = false;
          field('token').value = '';
        }
        $('.act-error', form).textContent = err.status === 401 ? `The API refused the token (${err.detail}): paste a valid one.` : err.message;
      }
    });
    return {
      update(ack, silence) {
        const held = heldHtml(ack, silence);
        $('.act-state', box).innerHTML = held || `<span class="muted">Nobody has acknowledged or silenced this ${target}.</span>`;
        box.dataset.acknowledged = ack ? ack.by : '';
        box.dataset.silenced = silence ? silence.by : '';
        box.querySelector('[data-act="acknowledge"]').hidden = Boolean(ack);
        box.querySelector('[data-act="unacknowledge"]').hidden = !ack;
        box.querySelector('[data-act="silence"]').hidden = Boolean(silence);
        box.querySelector('[data-act="unsilence"]').hidden = !silence;
      },
    };
  }

  // ------------------------------------------------ edge cases: frames worth a human look, selected and exported

  function edgeCasesView() {
    crumbs([['Fleet', '#/'], ['Edge cases']]);
    view.innerHTML = `
      <section id="edge-cases" class="edge-cases">
        <div class="toolbar">
          <input id="edge-camera" type="search" placeholder="camera id (all when empty)" aria-label="camera"
                 spellcheck="false">
          <label>Reason
            <select id="edge-reason" aria-label="reason">
              <option value="">any</option><option value="outlier">outlier</option>
              <option value="low_confidence">low confidence</option>
            </select>
          </label>
          <button type="button" id="edge-export">Export selected</button>
          <button type="button" id="edge-export-all">Export all shown</button>
          <span id="edge-summary" class="summary"></span>
        </div>
        <div id="edge-grid" class="thumbs"></div>
      </section>`;
    let gone = false;
    let shown = [];
    const urls = [];

    async function load() {
      const params = { camera_id: $('#edge-camera').value.trim(), reason: $('#edge-reason').value, limit: 200 };
      const list = await api('edge-cases', params);
      if (gone) return;
      shown = list;
      $('#edge-summary').textContent = `${list.length} edge case${list.length === 1 ? '' : 's'}`;
      $('#edge-grid').innerHTML = list
        .map(
          (e) => `<figure class="thumb edge" data-id="${esc(e.edge_case_id)}"><label><input type="checkbox"
            class="pick" value="${esc(e.edge_case_id)}"> <img width="${esc(e.width)}" height="${esc(e.height)}"
            alt="${esc(e.frame_id)}"></label><figcaption>${esc(e.reason)} ${esc(fmtNum(e.score, 2))} ·
            <a href="#/camera/${enc(e.camera_id)}">${esc(e.camera_id)}</a> · ${esc(fmtTime(e.captured_at))}
            </figcaption></figure>`,
        )
        .join('');
      for (const e of list) {
        const src = await imageUrl(e.url).catch(() => null);
        if (src) urls.push(src);
        if (gone) return;
        if (!src) continue;
        const img = document.querySelector(`#edge-grid [data-id="${CSS.escape(e.edge_case_id)}"] img`);
        if (img) img.src = src;
      }
    }

    async function exportSet(ids) {
      const params = new URLSearchParams();
      const camera = $('#edge-camera').value.trim();
      if (camera) params.set('camera_id', camera);
      if ($('#edge-reason').value) params.set('reason', $('#edge-reason').value);
      for (const id of ids) params.append('edge_case_id', id);
      const r = await fetch(new URL(`edge-cases/export?${params}`, API), { headers: headers() });
      if (!r.ok) throw new ApiError(r.status, r.statusText);
      const a = document.createElement('a');
      a.href = URL.createObjectURL(await r.blob());
      a.download = 'cvops-edge-cases.zip';
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    }

    const reload = () => load().catch((err) => !gone && ($('#edge-grid').innerHTML = `<p class="error">${esc(err.message)}</p>`));
    $('#edge-camera').addEventListener('change', reload);
    $('#edge-reason').addEventListener('change', reload);
    $('#edge-export').addEventListener('click', () => {
      const ids = [...document.querySelectorAll('#edge-grid .pick:checked')].map((c) => c.value);
      if (ids.length) exportSet(ids).catch((err) => alert(err.message));
    });
    $('#edge-export-all').addEventListener('click', () => exportSet(shown.map((e) => e.edge_case_id)).catch((err) => alert(err.message)));
    reload();
    return {
      unmount() {
        gone = true;
        for (const u of urls) URL.revokeObjectURL(u);
      },
    };
  }

  // An image route of the API (a url it gave, /api/v1/...) as an object URL: an <img src> cannot send the
  // bearer token that a private dashboard needs. The caller revokes it.
  async function imageUrl(url) {
    const r = await fetch(new URL(url.replace(/^\/api\/v1\//, ''), API), { headers: headers() });
    if (!r.ok) throw new ApiError(r.status, r.statusText);
    return URL.createObjectURL(await r.blob());
  }

  // The alert's evidence thumbnails, boxes drawn in by the API.
  async function evidenceImages(alertId) {
    const frames = await api(`alerts/${enc(alertId)}/evidence`);
    return Promise.all(frames.map(async (f) => ({ ...f, src: await imageUrl(f.url) })));
  }

  function detailsHtml(a, other) {
    const side = a.value < a.threshold ? 'below' : a.value > a.threshold ? 'above' : 'at';
    const frames = a.evidence_frame_ids.length
      ? `<ol class="frame-ids">${a.evidence_frame_ids.map((f) => `<li><code>${esc(f)}</code></li>`).join('')}</ol>`
      : '<span class="muted">none carried by this alert</span>';
    const pair = other
      ? `<a href="${alertHref(other)}">${esc(other.status)} at ${esc(fmtTime(other.raised_at))}</a>`
      : `<span class="muted">${a.status === 'raised' ? 'not resolved yet' : 'not stored'}</span>`;
    return `<p class="message sev-${esc(a.severity)}">${esc(a.message)}</p>
      <dl class="details">
        ${fact('type', a.type)}
        ${fact('severity', a.severity)}
        <div><dt>status</dt><dd><span class="badge st-${esc(a.status)}">${esc(a.status)}</span></dd></div>
        <div><dt>camera</dt><dd><a href="#/camera/${enc(a.camera_id)}">${esc(a.camera_id)}</a></dd></div>
        ${fact('signal', a.signal)}
        <div><dt>value</dt><dd class="value" data-value="${esc(a.value)}">${esc(fmtNum(a.value, 3))} <span
          class="muted">${side} the threshold</span></dd></div>
        <div><dt>threshold</dt><dd data-threshold="${esc(a.threshold)}">${esc(fmtNum(a.threshold, 3))} <span
          class="muted">(the edge of the expected range it crossed)</span></dd></div>
        ${fact('window', `${a.window} frames`)}
        ${fact('model', a.model_name ? `${a.model_name}@${a.model_version}` : '–')}
        ${fact('raised at', `${fmtTime(a.raised_at)} (${fmtAgo(a.raised_at)})`)}
        <div><dt>${a.status === 'raised' ? 'resolved' : 'raised'}</dt><dd>${pair}</dd></div>
        <div><dt>alert id</dt><dd><code>${esc(a.alert_id)}</code></dd></div>
        <div class="wide"><dt>evidence frames</dt><dd id="evidence-frames">${frames}</dd></div>
      </dl>`;
  }

  // ---------------------------------------------------------------- plots (uPlot), shared by camera and evidence

  async function seriesSignals(cameraId) {
    if (state.signals) return state.signals;
    // The series route names its signals when asked for one it does not know (400 "... known: a, b, c").
    let known = null;
    try {
      await api(`cameras/${enc(cameraId)}/series`, { signal: '?' });
    } catch (err) {
      const m = err.status === 400 && /known: (.+)$/.exec(err.detail);
      if (m) known = m[1].split(',').map((s) => s.trim()).filter(Boolean);
    }
    const names = known || PREFERRED;
    const ordered = [...PREFERRED.filter((s) => names.includes(s)), ...names.filter((s) => !PREFERRED.includes(s)).sort()];
    if (known) state.signals = ordered;
    return ordered;
  }

  class PlotSet {
    constructor(container, cameraId) {
      this.container = container;
      this.cameraId = cameraId;
      this.plots = new Map(); // signal -> {u, box}
      this.signals = [];
      this.sync = uPlot.sync(`cvops-${cameraId}`);
      this.resize = new ResizeObserver(() => this.fit());
      this.resize.observe(container);
    }

    async show({ since, until, step, alerts, focus = null, firstSeen = null }) {
      this.signals = await seriesSignals(this.cameraId);
      const answers = await Promise.all(
        this.signals.map((signal) =>
          api(`cameras/${enc(this.cameraId)}/series`, { signal, since, until, step }).catch((err) => ({ err })),
        ),
      );
      if (this.destroyed) return; // the view was left meanwhile
      this.signals.forEach((signal, i) => {
        const answer = answers[i];
        const data = answer.err ? [[], []] : toColumns(signal, answer, { until, step, firstSeen });
        this.draw(signal, data, { since, until, alerts, focus, error: answer.err });
      });
    }

    // Detections per class and minute (the most detected classes), one line each, in one plot.
    async showClasses({ since, until, step, alerts }) {
      const answer = await api(`cameras/${enc(this.cameraId)}/classes`, { since, until, step, top: 6 }).catch((err) => ({ err, classes: [] }));
      if (this.destroyed) return;
      const labels = answer.classes.map((c) => c.label);
      const old = this.plots.get('classes');
      if (old && old.labels.join('\n') !== labels.join('\n')) {
        old.u.destroy();
        old.box.remove();
        this.plots.delete('classes');
      }
      const ts = [...new Set(answer.classes.flatMap((c) => c.points.map(([t]) => t)))].sort((a, b) => a - b);
      const index = new Map(ts.map((t, i) => [t, i]));
      const columns = answer.classes.map((c) => {
        const col = ts.map(() => 0);
        for (const [t, n] of c.points) col[index.get(t)] = n;
        return col;
      });
      const data = [ts.map((t) => t + step / 2), ...(columns.length ? columns : [[]])];
      const caption = `detections per class and ${step / 60}-minute step${answer.other ? ` (${answer.other} of other classes left out)` : ''}`;
      this.draw('classes', data, { since, until, alerts, focus: null, classes: labels, caption, error: answer.err });
      const entry = this.plots.get('classes');
      entry.labels = labels;
    }

    // The camera's sampled drift statistics, a plot per detector and signal; returns the route's answer.
    async showDrift({ since, until, step, alerts }) {
      const answer = await api(`cameras/${enc(this.cameraId)}/drift/history`, { since, until, step }).catch((err) => ({ err, series: [] }));
      if (this.destroyed) return null;
      const keys = new Set();
      for (const series of answer.series) {
        const key = `${series.detector}:${series.signal}`;
        if (series.detector === 'cbpe' && series.signal !== 'expected_precision') continue; // in the camera's facts
        keys.add(key);
        const marked = alerts.filter((a) => a.signal === series.signal || (series.detector === 'orb_affine' && a.signal === 'camera_moved'));
        const caption = (DRIFT_LABELS[series.detector] || (() => `${series.detector}: ${series.signal}`))(series.signal);
        this.draw(key, driftColumns(series, step), { since, until, alerts: marked, focus: null, drift: series, caption });
      }
      this.prune(keys);
      return answer;
    }

    // The challenger against the champion over time, a plot per pair: precision, recall and F1 of its boxes.
    async showAgreement({ since, until, step }) {
      const answer = await api(`cameras/${enc(this.cameraId)}/agreement`, { since, until, step }).catch((err) => ({ err, totals: [], points: [] }));
      if (this.destroyed) return null;
      const keys = new Set();
      for (const total of answer.totals) {
        const key = `${total.champion} ${total.challenger}`;
        keys.add(key);
        const points = answer.points.filter((p) => p.champion === total.champion && p.challenger === total.challenger);
        const data = [points.map((p) => p.start + step / 2), ...['precision', 'recall', 'f1'].map((k) => points.map((p) => p.all[k]))];
        const caption = `${total.challenger} against ${total.champion}, per ${step / 60}-minute step`;
        this.draw(key, data, { since, until, alerts: [], focus: null, classes: ['precision', 'recall', 'F1'], digits: 2, caption });
      }
      this.prune(keys);
      return answer;
    }

    prune(keys) {
      for (const [key, entry] of this.plots) {
        if (keys.has(key)) continue;
        entry.u.destroy();
        entry.box.remove();
        this.plots.delete(key);
      }
    }

    draw(signal, data, opts) {
      let entry = this.plots.get(signal);
      let old = null;
      if (entry && (entry.columns !== data.length || String(entry.opts.cameras) !== String(opts.cameras))) {
        // a signal's shape (with or without min and max) is only known once it has points
        entry.u.destroy();
        old = entry.box;
        entry = null;
      }
      if (!entry) {
        const box = document.createElement('figure');
        box.className = 'plot';
        box.dataset.signal = signal;
        box.innerHTML = `<figcaption>${esc(opts.caption || SIGNAL_LABELS[signal] || signal)}</figcaption>`;
        if (old) old.replaceWith(box);
        else this.container.append(box);
        entry = { box, opts, columns: data.length };
        entry.u = new uPlot(this.options(signal, entry), data, box);
        this.plots.set(signal, entry);
      } else {
        entry.opts = opts; // read by the scales' range functions and the marker hook while setData redraws
        entry.u.setData(data);
      }
      const inRange = opts.alerts.filter((a) => a.raised_at >= opts.since && a.raised_at <= opts.until);
      const has = (v) => v !== null && v !== undefined;
      entry.box.dataset.points = String(data[0].filter((_, i) => data.slice(1).some((col) => has(col[i]))).length);
      if (opts.cameras) entry.box.dataset.cameras = String(opts.cameras.length);
      entry.box.dataset.markers = String(inRange.length);
      entry.box.classList.toggle('failed', Boolean(opts.error));
      entry.box.title = opts.error ? `could not read ${signal}: ${opts.error.message}` : '';
    }

    options(signal, entry) {
      if (entry.opts.cameras) return this.acrossOptions(entry);
      if (entry.opts.drift) return this.driftOptions(entry);
      if (entry.opts.classes) return this.classOptions(entry);
      const threshold = () => {
        const f = entry.opts.focus;
        return f && f.signal === signal && Number.isFinite(f.threshold) ? f : null;
      };
      const yRange = (u, min, max) => {
        const f = threshold();
        let lo = min ?? 0;
        let hi = max ?? 1;
        if (f) {
          lo = Math.min(lo, f.threshold, f.value);
          hi = Math.max(hi, f.threshold, f.value);
        }
        return uPlot.rangeNum(lo, hi === lo ? lo + 1 : hi, 0.1, true);
      };
      const series = [
        { label: entry.columns > 2 ? 'mean' : 'value', stroke: '#2563eb', width: 1.5, points: { show: true, size: 5 }, value: (u, v) => fmtNum(v, 2) },
        ...(entry.columns > 2 ? ['min', 'max'] : []).map((label) => ({
          label,
          stroke: 'rgba(37,99,235,0.35)',
          width: 1,
          dash: [3, 3],
          value: (u, v) => fmtNum(v, 2),
        })),
      ];
      return this.baseOptions(entry, yRange, series, threshold);
    }

    // What every plot of the set shares: size, the synced cursor, the time axis over the range, alert markers.
    baseOptions(entry, yRange, series, focus = () => null) {
      return {
        width: this.width(),
        height: 150,
        cursor: { sync: { key: this.sync.key }, drag: { x: false, y: false } },
        legend: { show: true, live: true },
        scales: { x: { time: true, range: () => [entry.opts.since, entry.opts.until] }, y: { range: yRange } },
        axes: [{}, { size: 56 }],
        series: [{}, ...series],
        hooks: { draw: [(u) => drawMarkers(u, entry.opts, focus())] },
      };
    }

    classOptions(entry) {
      const labels = entry.opts.classes.length ? entry.opts.classes : ['no detections'];
      const digits = entry.opts.digits ?? 0;
      const series = labels.map((label, i) => ({ label, stroke: PALETTE[i % PALETTE.length], width: 1.5, value: (u, v) => fmtNum(v, digits) }));
      return this.baseOptions(entry, (u, min, max) => uPlot.rangeNum(0, max || 1, 0.1, true), series);
    }

    // One signal of several cameras, a line each (and a drift statistic's threshold, dashed).
    acrossOptions(entry) {
      const { cameras, drift } = entry.opts;
      const below = drift?.p_value;
      const shown = (u, v) => (v === null || v === undefined ? '–' : below ? `p=${(10 ** -v).toExponential(1)}` : fmtNum(v, 2));
      const series = cameras.map((label, i) => ({
        label,
        stroke: PALETTE[i % PALETTE.length],
        width: 1.5,
        points: { show: true, size: 4 },
        value: shown,
      }));
      if (drift) series.push({ label: 'threshold', stroke: '#dc2626', width: 1, dash: [6, 4], spanGaps: true, value: shown });
      const yRange = (u, min, max) => {
        const lo = Math.min(min ?? 0, drift ? 0 : Infinity);
        const hi = max ?? 1;
        return uPlot.rangeNum(lo, hi === lo ? lo + 1 : hi, 0.1, true);
      };
      return this.baseOptions(entry, yRange, series);
    }

    driftOptions(entry) {
      const below = entry.opts.drift.p_value;
      const shown = (u, v) => (v === null || v === undefined ? '–' : below ? `p=${(10 ** -v).toExponential(1)}` : fmtNum(v, 2));
      return this.baseOptions(entry, (u, min, max) => uPlot.rangeNum(Math.min(min ?? 0, 0), max ?? 1, 0.1, true), [
        { label: 'statistic', stroke: '#2563eb', width: 1.5, points: { show: true, size: 5 }, value: shown },
        { label: 'threshold', stroke: '#dc2626', width: 1, dash: [6, 4], value: shown },
      ]);
    }

    // One signal across several cameras (an incident's members), a line per camera: the signal's own series where
    // the series route has it (brightness for brightness_distribution too), and the drift statistic of the signal
    // where a detector samples it. Returns what it drew ([] for nothing), null when the view was left.
    async showShared({ signal, cameras, since, until, step, alerts }) {
      if (!cameras.length) return [];
      const known = await seriesSignals(cameras[0]);
      const base = signal.replace(/_distribution$/, '');
      const each = (path, params, fallback) => Promise.all(cameras.map((c) => api(`cameras/${enc(c)}/${path}`, params).catch((err) => ({ err, ...fallback }))));
      const [series, drift] = await Promise.all([
        known.includes(base) ? each('series', { signal: base, since, until, step }, { points: [] }) : null,
        each('drift/history', { since, until, step }, { series: [] }),
      ]);
      if (this.destroyed) return null;
      const drawn = [];
      const common = { since, until, alerts, focus: null, cameras };
      if (series) {
        const parts = series.map((a) => (a.err ? null : toColumns(base, a, { until, step, firstSeen: null }).slice(0, 2)));
        const caption = `${SIGNAL_LABELS[base] || base}: each member camera`;
        this.draw(`shared:${base}`, mergeColumns(parts), { ...common, caption, error: series.find((a) => a.err)?.err });
        drawn.push(`shared:${base}`);
      }
      const picked = drift.map((a) => a.series.find((x) => x.signal === signal) || null);
      const first = picked.find(Boolean);
      if (first) {
        const parts = picked.map((x) => x && driftColumns(x, step).slice(0, 2));
        const [xs, , th] = driftColumns(first, step);
        const caption = `${(DRIFT_LABELS[first.detector] || (() => `${first.detector}: ${signal}`))(signal)}: each member camera`;
        this.draw(`shared-drift:${signal}`, mergeColumns([...parts, [xs, th]]), { ...common, drift: first, caption });
        drawn.push(`shared-drift:${signal}`);
      }
      for (const [key, entry] of this.plots) {
        if (drawn.includes(key)) continue;
        entry.u.destroy();
        entry.box.remove();
        this.plots.delete(key);
      }
      return drawn;
    }

    width() {
      // two plots a row where there is room (the container is a grid of one or two columns, 16 px apart)
      const w = this.container.clientWidth;
      const two = w >= 760;
      this.container.classList.toggle('two', two);
      return Math.max(240, Math.floor(two ? (w - 16) / 2 : w) - 14); // less the figure's padding and border
    }

    fit() {
      const width = this.width();
      for (const { u } of this.plots.values()) if (Math.abs(u.width - width) > 4) u.setSize({ width, height: 150 });
    }

    destroy() {
      this.destroyed = true;
      this.resize.disconnect();
      for (const { u } of this.plots.values()) u.destroy();
      this.plots.clear();
    }
  }

  // One point per step that holds frames, with a gap where a step has none, at the middle of the part of
  // the step that can hold frames (the camera's first step and the current one are partial).
  // Totals (frames, detections, bytes) become rates: frames per second, and detections or KB per frame.
  // Columns: [x, value] or, for a mean that has them, [x, mean, min, max].
  function toColumns(signal, series, { until, step, firstSeen }) {
    const xs = [];
    const cols = [[], [], []];
    let prev = null;
    for (const p of series.points) {
      if (prev !== null && p.t - prev > step) {
        xs.push(prev + step);
        for (const c of cols) c.push(null);
      }
      prev = p.t;
      const from = Math.max(p.t, firstSeen || p.t);
      const to = Math.max(from, Math.min(p.t + step, until, Date.now() / 1000));
      let { value, min, max } = p;
      if (series.kind === 'total' && value !== null) {
        if (signal === 'frames') value /= Math.max(to - from, 1);
        else value = p.frames ? value / p.frames : null;
        if (signal === 'bytes' && value !== null) value /= 1024;
        min = max = null;
      }
      xs.push((from + to) / 2);
      cols[0].push(value);
      cols[1].push(min);
      cols[2].push(max);
    }
    const ranged = series.kind === 'mean' && series.points.some((p) => p.min !== null || p.max !== null);
    return ranged ? [xs, ...cols] : [xs, cols[0]];
  }

  // [xs, ...columns] of several [xs, ys] on one time axis, the union of their xs; a missing part is a column of gaps.
  function mergeColumns(parts) {
    const xs = [...new Set(parts.flatMap((p) => (p ? p[0] : [])))].sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const columns = parts.map((p) => {
      const col = xs.map(() => null);
      if (p) p[0].forEach((x, i) => (col[index.get(x)] = p[1][i]));
      return col;
    });
    return [xs, ...columns];
  }

  // [x, statistic, threshold] of a drift series, a gap where a step has no sample. Up is toward drift on every
  // plot but the expected precision's: p-values as −log10 p (its smallest in the step), |z| for the confidence
  // test, the step's smallest for a statistic that drifts below its threshold, else the step's largest.
  function driftColumns(series, step) {
    const below = series.p_value;
    const up = (v) => (below ? -Math.log10(Math.max(v, 1e-300)) : v);
    const xs = [];
    const ys = [];
    const th = [];
    let prev = null;
    for (const p of series.points) {
      if (prev !== null && p.t - prev > step) {
        xs.push(prev + step);
        ys.push(null);
        th.push(null);
      }
      prev = p.t;
      xs.push(p.t + step / 2);
      if (below || series.drift_when === 'below') ys.push(up(p.min));
      else if (series.detector === 'z_test') ys.push(Math.max(Math.abs(p.min), Math.abs(p.max)));
      else ys.push(p.max);
      th.push(up(p.threshold));
    }
    return [xs, ys, th];
  }

  function drawMarkers(u, opts, focus) {
    const { ctx } = u;
    const { top, height, left, width } = u.bbox;
    const dpr = window.devicePixelRatio || 1;
    ctx.save();
    for (const a of opts.alerts) {
      if (a.raised_at < opts.since || a.raised_at > opts.until) continue;
      const x = Math.round(u.valToPos(a.raised_at, 'x', true));
      if (x < left || x > left + width) continue;
      const isFocus = opts.focus && alertKey(a) === alertKey(opts.focus);
      ctx.strokeStyle = a.status === 'resolved' ? '#16a34a' : '#dc2626';
      ctx.lineWidth = (isFocus ? 3 : 1.5) * dpr;
      ctx.setLineDash(a.status === 'resolved' ? [4 * dpr, 3 * dpr] : []);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
      ctx.fillStyle = ctx.strokeStyle;
      ctx.beginPath();
      ctx.moveTo(x - 5 * dpr, top);
      ctx.lineTo(x + 5 * dpr, top);
      ctx.lineTo(x, top + 7 * dpr);
      ctx.fill();
    }
    if (focus) {
      const y = Math.round(u.valToPos(focus.threshold, 'y', true));
      ctx.strokeStyle = '#b45309';
      ctx.lineWidth = 1.5 * dpr;
      ctx.setLineDash([6 * dpr, 4 * dpr]);
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + width, y);
      ctx.stroke();
      const x = u.valToPos(focus.raised_at, 'x', true);
      const vy = u.valToPos(focus.value, 'y', true);
      ctx.setLineDash([]);
      ctx.fillStyle = '#dc2626';
      ctx.beginPath();
      ctx.arc(x, vy, 4.5 * dpr, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.restore();
  }

  // ---------------------------------------------------------------- the alert feed: stored, then live (SSE)

  function addAlert(alert, source) {
    const key = alertKey(alert);
    if (state.feed.has(key)) return false;
    state.feed.set(key, { alert, source, seen: ++state.arrivals });
    if (state.feed.size > FEED_MAX) {
      const oldest = [...state.feed.entries()].sort((a, b) => a[1].alert.raised_at - b[1].alert.raised_at);
      for (const [k] of oldest.slice(0, state.feed.size - FEED_MAX)) state.feed.delete(k);
    }
    return true;
  }

  async function loadStoredAlerts() {
    try {
      const stored = await api('alerts', { limit: STORED_ALERTS });
      for (const a of stored) addAlert(a, 'stored');
      renderFeed();
    } catch (err) {
      $('#feed-note').textContent = `(stored alerts: ${err.message})`;
    }
  }

  let feedFrame = 0;
  function renderFeed() {
    cancelAnimationFrame(feedFrame);
    feedFrame = requestAnimationFrame(() => {
      const selected = location.hash.startsWith('#/alert/') ? location.hash : '';
      const items = [...state.feed.values()].sort((a, b) => b.alert.raised_at - a.alert.raised_at || b.seen - a.seen);
      $('#feed').innerHTML = items.length
        ? foldSymptoms(items, (item) => item.alert)
            .map(({ item, symptoms }) => `<li class="feed-entry">${feedItemHtml(item, selected)}${symptomsHtml(
              symptoms.map((s) => feedItemHtml(s, selected)),
            )}</li>`)
            .join('')
        : '<li class="muted">No alert yet. New ones appear here as they are raised.</li>';
    });
  }

  function feedItemHtml({ alert: a, source }, selected) {
    const href = alertHref(a);
    return `<a class="feed-item sev-${esc(a.severity)} st-${esc(a.status)}${source === 'live' ? ' fresh' : ''}${
      href === selected ? ' selected' : ''
    }${a.caused_by ? ' symptom' : ''}" href="${href}" data-alert-id="${esc(a.alert_id)}" data-status="${esc(a.status)}"
      data-source="${source}" data-camera="${esc(a.camera_id)}" data-type="${esc(a.type)}" data-signal="${esc(a.signal)}"
      data-caused-by="${esc(a.caused_by || '')}">
      <span class="feed-top"><span class="when">${esc(fmtTime(a.raised_at))}</span><b>${esc(a.camera_id)}</b><span
        class="badge st-${esc(a.status)}">${esc(a.status)}</span>${source === 'live' ? '<span class="badge new">live</span>' : ''}</span>
      <span class="kind">${esc(a.type)} · ${esc(a.signal)} ${esc(fmtNum(a.value, 2))} (threshold ${esc(
        fmtNum(a.threshold, 2),
      )})</span></a>`;
  }

  // The stream is read with fetch, not EventSource, so that it can carry the Authorization header.
  const live = $('#live');
  let liveAbort = null;
  function setLive(s, text) {
    live.dataset.state = s;
    live.textContent = `live: ${text}`;
  }

  async function runLiveFeed() {
    liveAbort?.abort();
    const abort = new AbortController();
    liveAbort = abort;
    let delay = 1000;
    while (!abort.signal.aborted) {
      try {
        setLive('connecting', 'connecting');
        const r = await fetch(apiUrl('alerts/stream'), {
          headers: headers({ Accept: 'text/event-stream' }),
          signal: abort.signal,
          cache: 'no-store',
        });
        if (!r.ok) {
          let detail = r.statusText;
          try {
            detail = (await r.json()).detail;
          } catch (_) {
            /* keep the status text */
          }
          const err = new ApiError(r.status, detail);
          if (r.status === 401 || (r.status === 503 && /token/i.test(detail))) {
            showAuthProblem(err);
            setLive('auth', 'needs a token');
            return; // saving a token starts it again
          }
          throw err;
        }
        setLive('open', 'connected');
        delay = 1000;
        // Subscribed from here on: what was stored before now is read once, so nothing falls in between.
        loadStoredAlerts();
        await readEvents(r.body, abort.signal);
        if (!abort.signal.aborted) throw new Error('the stream ended');
      } catch (err) {
        if (abort.signal.aborted) return;
        setLive('error', `reconnecting (${err.message})`);
        await new Promise((ok) => setTimeout(ok, delay));
        delay = Math.min(delay * 2, 30000);
      }
    }
  }

  async function readEvents(body, signal) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, '\n');
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (!line || line.startsWith(':')) continue; // comments: subscribed, keepalive
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') event = val;
          else if (field === 'data') data.push(val);
        }
        if (data.length) onEvent(event, data.join('\n'));
      }
    }
  }

  function onEvent(event, data) {
    if (event === 'alert') {
      const a = JSON.parse(data);
      if (addAlert(a, 'live')) {
        renderFeed();
        refreshFleetSoon();
        currentView?.onLiveAlert?.(a);
      }
    } else if (event === 'dropped') {
      const { count } = JSON.parse(data);
      $('#feed-note').textContent = `(${count} live alert${count === 1 ? '' : 's'} dropped; reloaded from the store)`;
      loadStoredAlerts();
    }
  }

  // ---------------------------------------------------------------- start

  function restartEverything() {
    hideBanner('auth');
    state.feed.clear();
    state.signals = null;
    renderFeed();
    runLiveFeed();
    refreshFleet();
    refreshOpenIncidents();
    route();
  }

  window.addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) {
      refreshFleet();
      refreshOpenIncidents();
    }
  });
  route();
  refreshFleet();
  refreshOpenIncidents();
  runLiveFeed();
})();
