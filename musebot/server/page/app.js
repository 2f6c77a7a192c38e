// musebot's page: Web MIDI / on-screen / computer keys in, a live piano roll of both players and of the
// notes musebot plans ahead, settings and telemetry. Plain JavaScript, no build step, talks only to the
// server it came from (GET/PATCH /api/..., the /ws WebSocket; see /openapi.json).
"use strict";

(() => {
  const token = new URLSearchParams(location.search).get("token") || "";
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const WINDOW_PAST_S = 8;   // the roll shows this much of the past...
  const WINDOW_AHEAD_S = 3;  // ...and this much ahead (planned notes)

  // Everything the roll draws, in seconds on the daemon's clock; exposed for tests and curious musicians.
  const state = {
    connected: false, role: "observer", offset: null, settings: null,
    notes: [],                // {who: "musician"|"musebot", pitch, start, end|null}
    planned: [],              // {pitch, start, end}
    drawn: { musician: 0, musebot: 0, planned: 0 },
    received: { input: 0, played: 0, plan: 0, error: 0 },
    errors: [],
  };
  window.musebot = state;

  const $ = (id) => document.getElementById(id);
  const local = () => performance.now() / 1000;
  const serverNow = () => local() - state.offset;
  // offset = page clock - daemon clock. Each stamped message gives it plus the delay it took to arrive,
  // so the smallest value seen is the best estimate (a welcome handled while the page was still busy
  // loading would otherwise draw every note late).
  function sync(serverTime) {
    const sample = local() - serverTime;
    if (state.offset === null || sample < state.offset) state.offset = sample;
  }

  // ---- WebSocket ----------------------------------------------------------------------------------------
  let ws = null;
  let retry = 500;
  let wantPerformer = false;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = token ? `?token=${encodeURIComponent(token)}` : "";
    ws = new WebSocket(`${scheme}://${location.host}/ws${query}`);
    ws.onopen = () => {
      state.connected = true; retry = 500;
      setBadge("connection", "connected", "up");
      if (wantPerformer) send({ type: "hello", role: "performer" });
    };
    ws.onclose = () => {
      state.connected = false; state.role = "observer";
      setBadge("connection", "disconnected: retrying", "down");
      setBadge("role", "observer", "");
      setTimeout(connect, retry); retry = Math.min(retry * 2, 8000);
    };
    ws.onmessage = (event) => receive(JSON.parse(event.data));
  }

  function send(message) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  function receive(m) {
    if (m.type === "welcome") {
      state.offset = null;  // a new connection may be to a restarted daemon: a new clock
      sync(m.clock);
      applySettings(m.settings);
    } else if (m.type === "input") {
      state.received.input++;
      sync(m.t);
      track("musician", m.t, m.data);
    } else if (m.type === "played") {
      state.received.played++;
      sync(m.t);
      track("musebot", m.t, m.data);
      if (isNoteOn(m.data)) unplan(m.data[1], m.due);
      if (isNoteOn(m.data) && state.sound) synth.on(m.data[1], m.data[2]);
      if (isNoteOff(m.data) && state.sound) synth.off(m.data[1]);
      lightKey(m.data);
    } else if (m.type === "plan") {
      state.received.plan++;
      plan(m.action, m.notes);
    } else if (m.type === "pong") {
      sync(m.clock);
    } else if (m.type === "role") {
      state.role = m.role;
      setBadge("role", m.role, m.role === "performer" ? "up" : "");
    } else if (m.type === "error") {
      state.received.error++;
      state.errors.push(m.error);
      if (state.errors.length > 20) state.errors.shift();
      $("settings-error").textContent = m.error;
    }
  }

  // ---- notes --------------------------------------------------------------------------------------------
  const isNoteOn = (d) => (d[0] & 0xf0) === 0x90 && d[2] > 0;
  const isNoteOff = (d) => (d[0] & 0xf0) === 0x80 || ((d[0] & 0xf0) === 0x90 && d[2] === 0);

  function track(who, t, data) {
    if (isNoteOn(data)) {
      state.notes.push({ who, pitch: data[1], start: t, end: null });
    } else if (isNoteOff(data)) {
      for (let i = state.notes.length - 1; i >= 0; i--) {
        const n = state.notes[i];
        if (n.who === who && n.pitch === data[1] && n.end === null) { n.end = t; break; }
      }
    } else if ((data[0] & 0xf0) === 0xb0 && (data[1] === 120 || data[1] === 123)) {
      for (const n of state.notes) if (n.who === who && n.end === null) n.end = t;
    }
    const oldest = serverNow() - WINDOW_PAST_S - 5;
    if (state.notes.length > 2000) state.notes = state.notes.filter((n) => n.end === null || n.end > oldest);
  }

  function plan(action, notes) {
    if (action === "clear") { state.planned = []; return; }
    const ons = notes.filter((n) => isNoteOn(n.data));
    if (action === "add") {
      for (const on of ons) {
        const off = notes.find((n) => isNoteOff(n.data) && n.data[1] === on.data[1] && n.due >= on.due);
        state.planned.push({ pitch: on.data[1], start: on.due, end: off ? off.due : on.due + 0.25 });
      }
    } else if (action === "cancel") {
      for (const on of ons) unplan(on.data[1], on.due);
      if (!ons.length) state.planned = state.planned.filter((p) => p.start > serverNow());
    }
  }

  function unplan(pitch, start) {
    const i = state.planned.findIndex((p) => p.pitch === pitch && Math.abs(p.start - start) < 0.002);
    if (i >= 0) state.planned.splice(i, 1);
  }

  // ---- playing ------------------------------------------------------------------------------------------
  const held = new Set();

  function noteOn(pitch, velocity = 90) {
    if (held.has(pitch)) return;
    held.add(pitch);
    keyElement(pitch)?.classList.add("down");
    if (state.sound) synth.on(pitch, velocity);
    play([0x90, pitch, velocity]);
  }

  function noteOff(pitch) {
    if (!held.delete(pitch)) return;
    keyElement(pitch)?.classList.remove("down");
    if (state.sound) synth.off(pitch);
    play([0x80, pitch, 0]);
  }

  function play(data) {
    if (state.role !== "performer") {
      wantPerformer = true;
      send({ type: "hello", role: "performer" });
    }
    send({ type: "midi", data });
  }

  // ---- on-screen and computer keyboard ------------------------------------------------------------------
  let base = 60;  // the on-screen keyboard's lowest C
  const BLACK = new Set([1, 3, 6, 8, 10]);
  const COMPUTER = "awsedftgyhujk";  // C .. C an octave up, piano layout on a QWERTY row

  function buildKeys() {
    const box = $("keys");
    box.textContent = "";
    const whites = [];
    for (let p = base; p <= base + 24; p++) if (!BLACK.has(p % 12)) whites.push(p);
    const width = 100 / whites.length;
    let w = 0;
    for (let p = base; p <= base + 24; p++) {
      const key = document.createElement("div");
      key.dataset.pitch = String(p);
      if (BLACK.has(p % 12)) {
        key.className = "key black";
        key.style.left = `${(w - 0.3) * width}%`;
        key.style.width = `${width * 0.6}%`;
      } else {
        key.className = "key white";
        key.style.left = `${w * width}%`;
        key.style.width = `${width}%`;
        w++;
      }
      key.addEventListener("pointerdown", (e) => { e.preventDefault(); key.setPointerCapture(e.pointerId); noteOn(p); });
      key.addEventListener("pointerup", () => noteOff(p));
      key.addEventListener("pointercancel", () => noteOff(p));
      box.appendChild(key);
    }
  }

  const keyElement = (pitch) => document.querySelector(`.key[data-pitch="${pitch}"]`);

  function lightKey(data) {
    const key = keyElement(data[1]);
    if (!key) return;
    if (isNoteOn(data)) key.classList.add("answer");
    else if (isNoteOff(data)) key.classList.remove("answer");
  }

  document.addEventListener("keydown", (e) => {
    if (e.repeat || e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    const k = e.key.toLowerCase();
    if (k === "z" || k === "x") {
      base = Math.min(96, Math.max(24, base + (k === "z" ? -12 : 12)));
      buildKeys();
      return;
    }
    const i = COMPUTER.indexOf(k);
    if (i >= 0) noteOn(base + i);
  });
  document.addEventListener("keyup", (e) => {
    const i = COMPUTER.indexOf(e.key.toLowerCase());
    if (i >= 0) noteOff(base + i);
  });

  // ---- Web MIDI -----------------------------------------------------------------------------------------
  function connectMidi() {
    if (!navigator.requestMIDIAccess) { $("midi-inputs").textContent = "Web MIDI: not in this browser"; return; }
    navigator.requestMIDIAccess().then((access) => {
      const attach = () => {
        const names = [];
        for (const input of access.inputs.values()) {
          input.onmidimessage = (e) => {
            const d = Array.from(e.data);
            if (d[0] < 0x80 || d[0] >= 0xf0) return;  // channel messages only
            if (isNoteOn(d)) keyElement(d[1])?.classList.add("down");
            if (isNoteOff(d)) keyElement(d[1])?.classList.remove("down");
            play(d);
          };
          names.push(input.name);
        }
        $("midi-inputs").textContent = names.length ? `Web MIDI: ${names.join(", ")}` : "Web MIDI: no input";
      };
      attach();
      access.onstatechange = attach;
    }, () => { $("midi-inputs").textContent = "Web MIDI: not allowed"; });
  }

  // ---- sound (optional, off by default) -----------------------------------------------------------------
  const synth = {
    ctx: null, voices: new Map(),
    on(pitch, velocity) {
      this.ctx = this.ctx || new AudioContext();
      this.off(pitch);
      const osc = this.ctx.createOscillator(), gain = this.ctx.createGain();
      osc.type = "triangle";
      osc.frequency.value = 440 * 2 ** ((pitch - 69) / 12);
      gain.gain.value = 0.15 * velocity / 127;
      osc.connect(gain).connect(this.ctx.destination);
      osc.start();
      this.voices.set(pitch, { osc, gain });
    },
    off(pitch) {
      const v = this.voices.get(pitch);
      if (!v) return;
      v.gain.gain.setTargetAtTime(0, this.ctx.currentTime, 0.03);
      v.osc.stop(this.ctx.currentTime + 0.2);
      this.voices.delete(pitch);
    },
  };

  // ---- piano roll ---------------------------------------------------------------------------------------
  const canvas = $("roll");
  const ctx2d = canvas.getContext("2d");
  const COLORS = { musician: "#4aa3ff", musebot: "#ff9a3c", planned: "#ffd2a8" };

  function draw() {
    const width = canvas.width = canvas.clientWidth || 1000;
    const height = canvas.height = canvas.clientHeight || 320;
    const t = state.offset === null ? 0 : serverNow();
    const from = t - WINDOW_PAST_S, span = WINDOW_PAST_S + WINDOW_AHEAD_S;
    const visible = state.notes.filter((n) => (n.end === null || n.end >= from));
    const pitches = visible.map((n) => n.pitch).concat(state.planned.map((p) => p.pitch));
    let low = Math.min(base, ...pitches) - 2, high = Math.max(base + 24, ...pitches) + 2;
    const rowH = height / (high - low + 1);
    const x = (time) => (time - from) / span * width;
    const y = (pitch) => height - (pitch - low + 1) * rowH;

    ctx2d.fillStyle = "#0d0f12";
    ctx2d.fillRect(0, 0, width, height);
    for (let p = low; p <= high; p++) {  // black-key rows a shade lighter, C rows marked
      if (BLACK.has(((p % 12) + 12) % 12)) { ctx2d.fillStyle = "#12151a"; ctx2d.fillRect(0, y(p), width, rowH); }
      if (p % 12 === 0) { ctx2d.fillStyle = "#2a2f38"; ctx2d.fillRect(0, y(p) + rowH - 1, width, 1); }
    }
    const drawn = { musician: 0, musebot: 0, planned: 0 };
    if (state.offset !== null) {
      for (const n of visible) {
        const end = n.end === null ? t : n.end;
        ctx2d.fillStyle = COLORS[n.who];
        ctx2d.fillRect(x(n.start), y(n.pitch) + 1, Math.max(2, x(end) - x(n.start)), Math.max(2, rowH - 2));
        drawn[n.who]++;
      }
      state.planned = state.planned.filter((p) => p.end > from);
      ctx2d.strokeStyle = COLORS.planned;
      ctx2d.setLineDash([4, 3]);
      for (const p of state.planned) {
        if (p.start < t) continue;  // its time has come: it is drawn when played
        ctx2d.strokeRect(x(p.start), y(p.pitch) + 1, Math.max(2, x(p.end) - x(p.start)), Math.max(2, rowH - 2));
        drawn.planned++;
      }
      ctx2d.setLineDash([]);
    }
    ctx2d.fillStyle = "#e6e6e6";  // now
    ctx2d.fillRect(x(t), 0, 1, height);
    state.drawn = drawn;
    requestAnimationFrame(draw);
  }

  // ---- settings and telemetry ---------------------------------------------------------------------------
  async function api(method, path, body) {
    const init = { method, headers: { ...headers } };
    if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    const response = await fetch(path, init);
    const data = await response.json();
    if (!response.ok) throw new Error(data.details ? `${data.error}: ${data.details}` : data.error);
    return data;
  }

  async function change(changes) {
    try {
      applySettings(await api("PATCH", "/api/settings", changes));
      $("settings-error").textContent = "";
    } catch (err) {
      $("settings-error").textContent = err.message;
    }
  }

  function applySettings(s) {
    state.settings = s;
    if ($("mode").value !== s.mode) $("mode").value = s.mode;
    if (document.activeElement !== $("bpm")) $("bpm").value = s.bpm;
    $("temperature").value = s.temperature;
    $("temperature-value").textContent = Number(s.temperature).toFixed(2);
    if (document.activeElement !== $("answer_beats")) $("answer_beats").value = s.answer_beats ?? 0;
    $("thru").checked = s.thru;
    if (document.activeElement !== $("channel")) $("channel").value = s.parts.answer.channel + 1;
    showParts(s.parts);
    if (s.harmony) {
      if (document.activeElement !== $("chart")) $("chart").value = s.harmony.chart ?? "";
      $("harmony-mode").value = s.harmony.mode;
    }
  }

  // The chart and where the band is in it (bar, chord, the chord heard from the musician).
  function showHarmony(h) {
    if (!h) return;
    $("chord-now").textContent = `bar ${h.bar ?? "–"}/${h.bars || "–"} · chord ${h.chord ?? "–"}`
      + (h.tracked_chord ? ` · heard ${h.tracked_chord}` : "") + ` · ${h.mode}`;
    const list = $("chart-bars"), bars = h.chart ? h.chart.split("|").map((b) => b.trim()) : [];
    if (list.dataset.chart !== (h.chart ?? "")) {
      list.dataset.chart = h.chart ?? "";
      list.textContent = "";
      for (const bar of bars.slice(0, 256)) {
        const li = document.createElement("li");
        li.textContent = bar;
        list.appendChild(li);
      }
    }
    [...list.children].forEach((li, i) => li.classList.toggle("now", i + 1 === h.bar));
  }

  // The band's parts (accompany, looper): mute, solo and density of each, built when the set changes.
  function showParts(parts) {
    const box = $("parts");
    const names = Object.keys(parts).filter((n) => n !== "answer");
    document.body.classList.toggle("band", names.length > 0);  // the answer's settings do not apply
    if (box.dataset.names !== names.join(",")) {
      box.dataset.names = names.join(",");
      box.textContent = "";
      for (const name of names) {
        const row = document.createElement("div");
        row.className = "part";
        row.dataset.part = name;
        const title = document.createElement("span");
        title.textContent = `${name} (ch ${parts[name].channel + 1})`;
        row.appendChild(title);
        for (const field of ["mute", "solo"]) {
          const label = document.createElement("label");
          const tick = document.createElement("input");
          tick.type = "checkbox"; tick.dataset.field = field;
          tick.onchange = () => change({ parts: { [name]: { [field]: tick.checked } } });
          label.append(tick, ` ${field}`);
          row.appendChild(label);
        }
        const density = document.createElement("input");
        density.type = "range"; density.min = "0"; density.max = "1"; density.step = "0.05";
        density.dataset.field = "density"; density.title = "density";
        density.onchange = () => change({ parts: { [name]: { density: Number(density.value) } } });
        row.appendChild(density);
        box.appendChild(row);
      }
    }
    for (const row of box.children) {
      const part = parts[row.dataset.part];
      for (const input of row.querySelectorAll("input")) {
        if (document.activeElement === input) continue;
        if (input.type === "checkbox") input.checked = part[input.dataset.field];
        else input.value = part[input.dataset.field];
      }
    }
  }

  async function setUp() {
    const doc = await (await fetch("/openapi.json")).json();
    for (const mode of doc.components.schemas.Settings.properties.mode.enum) {
      const option = document.createElement("option");
      option.value = option.textContent = mode;
      $("mode").appendChild(option);
    }
    $("mode").onchange = () => change({ mode: $("mode").value });
    $("bpm").onchange = () => change({ bpm: Number($("bpm").value) });
    $("temperature").oninput = () => { $("temperature-value").textContent = Number($("temperature").value).toFixed(2); };
    $("temperature").onchange = () => change({ temperature: Number($("temperature").value) });
    $("answer_beats").onchange = () => {
      const beats = Number($("answer_beats").value);
      change({ answer_beats: beats > 0 ? Math.max(1, beats) : null });
    };
    $("thru").onchange = () => change({ thru: $("thru").checked });
    $("channel").onchange = () => change({ parts: { answer: { channel: Number($("channel").value) - 1 } } });
    $("sound").onchange = () => { state.sound = $("sound").checked; };
    $("chart").onchange = () => change({ harmony: { chart: $("chart").value.trim() || null } });
    $("harmony-mode").onchange = () => change({ harmony: { mode: $("harmony-mode").value } });
    $("panic").onclick = () => {
      api("POST", "/api/panic").catch((err) => { $("settings-error").textContent = err.message; });
      state.planned = [];
    };
    $("perform").onclick = () => { wantPerformer = true; send({ type: "hello", role: "performer" }); };
    try { applySettings(await api("GET", "/api/settings")); } catch (err) { $("settings-error").textContent = err.message; }
  }

  function fmt(v, unit = "") { return v === null || v === undefined ? "–" : `${v}${unit}`; }

  async function pollStatus() {
    try {
      const s = await api("GET", "/api/status");
      const tm = s.telemetry, g = tm.generation;
      const rows = [
        ["answerer", s.answerer + (s.model ? ` (${s.model})` : "")], ["state", s.state],
        ["tempo", s.tempo && s.tempo.source === "follow"
          ? `${s.tempo.bpm} bpm (following you, confidence ${fmt(s.tempo.confidence)})` : `${s.bpm} bpm`],
        ["sched. error p50", fmt(tm.scheduling_error_ms.p50, " ms")],
        ["sched. error p99", fmt(tm.scheduling_error_ms.p99, " ms")],
        ["late", tm.late], ["dropped late", tm.dropped_late], ["sent", tm.sent],
        // Below 1 the model is slower than the music: the daemon says so and plans with it.
        ["headroom", g ? fmt(g.headroom, "×") + (g.behind ? " (behind: slower than the music)" : "") : "–"],
        ["dropped (too late)", g && g.dropped !== undefined ? g.dropped : "–"],
        ["answers", fmt(tm.counts.answers)], ["barge-ins", fmt(tm.counts.barge_ins)], ["panics", fmt(tm.counts.panics)],
        ["clients", s.clients.observers],
      ];
      if (s.band) {  // accompany, looper: the clock, the key and the band's own timing
        rows.push(["clock", `${s.band.clock}, beat ${s.band.beat}`], ["key", s.band.key],
                  ["band notes", s.band.telemetry.notes], ["within ±2 ms", s.band.telemetry.within_2ms]);
        showHarmony(s.band.harmony);
      }
      const list = $("telemetry-list");
      list.textContent = "";
      for (const [k, v] of rows) {
        const dt = document.createElement("dt"), dd = document.createElement("dd");
        dt.textContent = k; dd.textContent = String(v);
        list.append(dt, dd);
      }
      if (s.settings && !document.activeElement?.matches("input, select")) applySettings(s.settings);
    } catch (err) { /* shown by the connection badge when the server is gone */ }
    setTimeout(pollStatus, 1000);
  }

  function setBadge(id, text, cls) {
    const el = $(id);
    el.textContent = text;
    el.className = `badge ${cls}`;
  }

  buildKeys();
  setUp();
  connect();
  connectMidi();
  pollStatus();
  setInterval(() => send({ type: "ping" }), 2000);  // pongs carry the daemon's clock: a better offset
  requestAnimationFrame(draw);
})();
