// proxbox live status page: recent runs from GET /runs, the current run live over /ws/runs/{id}?since=N.
// No framework, no build step. Every value from the server is inserted as text, never as HTML.
"use strict";

(function () {
  const POLL_MS = 2000;
  const COUNT_KEYS = ["created", "updated", "unchanged", "deleted", "orphaned", "failed"];
  const FINAL = new Set(["succeeded", "partial", "failed", "cancelled"]);
  const $ = (id) => document.getElementById(id);

  // ---- API key: #key=... (removed from the address bar), else this tab's sessionStorage, else the form
  let apiKey = null;
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (hash.get("key")) {
    apiKey = hash.get("key");
    sessionStorage.setItem("proxbox-api-key", apiKey);
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    apiKey = sessionStorage.getItem("proxbox-api-key");
  }

  function headers() {
    return apiKey ? { Authorization: "Bearer " + apiKey } : {};
  }

  function api(path) {
    return new URL(path, location.href).toString(); // relative: works behind a path prefix
  }

  function setConnection(state, text) {
    const el = $("connection");
    el.dataset.state = state;
    el.textContent = text;
  }

  function askForKey(message) {
    setConnection("unauthorized", "API key required");
    $("auth").hidden = false;
    $("auth-error").textContent = message || "";
    $("api-key").focus();
  }

  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    apiKey = $("api-key").value.trim();
    sessionStorage.setItem("proxbox-api-key", apiKey);
    $("auth").hidden = true;
    poll();
  });

  // ---- formatting
  function formatCounts(counts) {
    const parts = COUNT_KEYS.filter((k) => counts && counts[k]).map((k) => k + " " + counts[k]);
    return parts.length ? parts.join(", ") : "no changes";
  }

  function formatTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  function formatDuration(s) {
    if (s === null || s === undefined) return "";
    return s < 90 ? s.toFixed(1) + " s" : (s / 60).toFixed(1) + " min";
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  // ---- recent runs
  function renderRuns(runs) {
    const body = $("runs").tBodies[0];
    body.replaceChildren();
    for (const run of runs) {
      const tr = document.createElement("tr");
      tr.id = "run-" + run.id;
      tr.dataset.state = run.state;
      tr.dataset.status = run.status || "";
      cell(tr, run.id, "id");
      cell(tr, run.kind);
      cell(tr, run.trigger);
      cell(tr, run.state);
      const status = cell(tr, run.status || run.state, "status");
      status.dataset.status = run.status || run.state;
      cell(tr, formatCounts(run.counts));
      cell(tr, formatTime(run.started_at || run.created_at));
      cell(tr, formatDuration(run.duration_s));
      body.appendChild(tr);
    }
  }

  // ---- the live run
  let live = null; // {id, lastSeq, phases: Map, errors, final, ws, retries}

  function newLive(summary) {
    return {
      id: summary.id,
      kind: summary.kind,
      summary: summary,
      lastSeq: 0,
      phases: new Map(),
      errors: 0,
      final: null,
      ws: null,
      retries: 0,
      timer: null,
    };
  }

  function showLive(summary) {
    $("live-empty").hidden = true;
    $("live-run").hidden = false;
    $("live").dataset.state = "run";
    $("live").dataset.runId = live.id;
    $("live-title").textContent = live.kind + " sync " + live.id;
    $("phases").replaceChildren();
    $("errors").replaceChildren();
    $("errors-title").hidden = true;
    $("live-summary").textContent = "";
    setLiveStatus(summary.state === "finished" ? summary.status : summary.state);
  }

  function setLiveStatus(status) {
    const el = $("live-status");
    el.dataset.status = status || "";
    el.textContent = status || "";
    $("live").dataset.status = status || "";
  }

  function phaseRow(name) {
    let p = live.phases.get(name);
    if (p) return p;
    const row = document.createElement("div");
    row.className = "phase";
    row.dataset.phase = name;
    row.dataset.finished = "false";
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    const nums = document.createElement("span");
    nums.className = "numbers";
    const counts = document.createElement("span");
    counts.className = "counts muted";
    row.append(label, bar, nums, counts);
    $("phases").appendChild(row);
    p = { row, bar, nums, counts, done: 0, total: 0 };
    live.phases.set(name, p);
    return p;
  }

  function updatePhase(p, done, total) {
    p.done = done;
    p.total = Math.max(p.total, total || 0);
    p.bar.max = Math.max(p.total, 1);
    p.bar.value = Math.min(p.done, p.bar.max);
    p.nums.textContent = p.total ? p.done + " / " + p.total : String(p.done);
    p.row.dataset.done = String(p.done);
    p.row.dataset.total = String(p.total);
  }

  function onFrame(f) {
    if (!live || f.run_id !== live.id || typeof f.seq !== "number" || f.seq <= live.lastSeq) return;
    live.lastSeq = f.seq;
    $("live").dataset.lastSeq = String(f.seq);
    if (f.type === "complete") {
      live.final = f;
      for (const p of live.phases.values()) p.row.dataset.finished = "true";
      setLiveStatus(f.status);
      $("live-summary").textContent =
        f.status + " in " + formatDuration(f.duration_s) + ": " + formatCounts(f.counts) +
        (f.message ? " — " + f.message : "");
      poll();
      return;
    }
    if (f.type === "error") {
      live.errors += 1;
      $("errors-title").hidden = false;
      const li = document.createElement("li");
      const item = f.item ? " " + f.item.kind + " " + f.item.name + (f.item.cluster ? " (" + f.item.cluster + ")" : "") : "";
      li.textContent = "[" + f.phase + "] " + f.error + item + ": " + f.detail;
      $("errors").appendChild(li);
      return;
    }
    setLiveStatus("running");
    if (f.phase === "start" || f.phase === "finish") return;
    const p = phaseRow(f.phase);
    const prog = f.progress;
    if (f.status === "started" && prog) {
      p.total = 0;
      updatePhase(p, 0, prog.total);
    } else if (f.status === "completed") {
      p.row.dataset.finished = "true";
      updatePhase(p, Math.max(p.done, p.total), p.total);
      p.counts.textContent = formatCounts(f.counts);
    } else if (prog) {
      updatePhase(p, prog.done, prog.total);
    }
  }

  function wsUrl(id, since) {
    const url = new URL("ws/runs/" + encodeURIComponent(id), location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("since", String(since));
    return url.toString();
  }

  function follow(summary) {
    if (live && live.ws) live.ws.close(1000);
    if (live && live.timer) clearTimeout(live.timer);
    live = newLive(summary);
    showLive(summary);
    connect(live);
  }

  function connect(run) {
    const ws = new WebSocket(wsUrl(run.id, run.lastSeq));
    run.ws = ws;
    ws.onopen = () => {
      if (apiKey) ws.send(JSON.stringify({ api_key: apiKey }));
      setConnection("live", "live");
    };
    ws.onmessage = (ev) => {
      let obj;
      try {
        obj = JSON.parse(ev.data);
      } catch (e) {
        return; // plain text: not a frame
      }
      if (obj && (obj.type === "step" || obj.type === "error" || obj.type === "complete")) {
        run.retries = 0;
        onFrame(obj);
      }
    };
    ws.onclose = (ev) => {
      if (run !== live || run.final) return;
      if (ev.code === 4001) {
        askForKey("The server refused the API key.");
        return;
      }
      if (ev.code === 4004) return; // the run is gone: the next poll shows what there is
      if (ev.code === 1000) {
        // a finished run whose frames are gone (interrupted by a restart): its summary is all there is
        setLiveStatus(run.summary.status || run.summary.state);
        $("live-summary").textContent = formatCounts(run.summary.counts) + (run.summary.message ? " — " + run.summary.message : "");
        return;
      }
      // dropped (network, restart, 1013 too slow): resume after the last frame we have
      setConnection("offline", "reconnecting…");
      const delay = Math.min(10000, 500 * 2 ** run.retries) * (0.5 + Math.random() / 2);
      run.retries += 1;
      run.timer = setTimeout(() => {
        if (run === live && !run.final) connect(run);
      }, delay);
    };
  }

  // ---- polling the run list
  let polling = false;

  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const resp = await fetch(api("runs?limit=20"), { headers: headers(), cache: "no-store" });
      if (resp.status === 401) {
        askForKey(apiKey ? "The server refused the API key." : "");
        return;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const body = await resp.json();
      const runs = body.runs || [];
      renderRuns(runs);
      $("auth").hidden = true;
      if (!live || live.final || (live.ws && live.ws.readyState === WebSocket.OPEN)) setConnection("live", "connected");
      const active = runs.find((r) => r.state === "running") || runs.find((r) => r.state === "queued");
      if (active && (!live || (live.id !== active.id && (live.final || !live.ws)))) {
        follow(active);
      } else if (!live && runs.length) {
        follow(runs[0]); // nothing running: show the last run (its complete frame, from history if needed)
      }
    } catch (e) {
      setConnection("offline", "server unreachable");
    } finally {
      polling = false;
    }
  }

  async function version() {
    try {
      const resp = await fetch(api("version"), { headers: headers() });
      if (resp.ok) $("version").textContent = "v" + (await resp.json()).version;
    } catch (e) {
      /* shown by the poll */
    }
  }

  version();
  poll();
  setInterval(poll, POLL_MS);
})();
