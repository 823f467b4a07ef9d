// Replay player for mettagrid replays (format version 4, the `.json.z` files our runs write), in plain
// ES2020 with no dependencies: it fetches nothing but a replay given as a URL, and logs nothing.
//
// Format, as mettagrid's writer makes it (mettagrid/simulator/replay_log_writer.py and
// util/grid_object_formatter.py): zlib-compressed JSON (gzip and plain JSON are read too) holding
// `version`, `map_size` [width, height], `num_agents`, `max_steps` (the number of steps recorded),
// `type_names`, `item_names`, `action_names`, `infos.episode_rewards` and `objects`, one dict per grid
// object. Step k of a replay is the state after the agents' (k+1)-th action. Every field of an object is
// either a plain value (it never changed) or a list of `[step, value]` pairs: the value holds from that
// step until the next pair's step. A field whose plain value is itself a list needs care: `location` is
// [x, y], `inventory` is a list of [item_id, count] pairs, so `inventory: [[0, 1]]` is a plain value,
// while `inventory: [[0, []], [108, [[0, 1]]]]` is a series (its values are lists). Objects that appear
// late start with `alive: [[0, false], ...]`; removed ones get `[step, false]`. Agents carry `agent_id`,
// `action_id` (into `action_names`), `current_reward` and `total_reward` (cumulative, per agent).
// `orientation` (0 N, 1 S, 2 W, 3 E, 4 NW, 5 NE, 6 SW, 7 SE) is always 0 in mettagrid 0.26 ("orientation
// no longer exists"), so an agent faces the direction of its last `move_<dir>` action instead, unless
// the replay's orientation actually changes.
//
// Drawn: the grid, walls, other objects (a coloured square per type with a 1-2 letter label and their
// inventory count), agents (a coloured circle per agent, a pointer to where it faces, a badge of what
// it holds), the step, the reward so far per agent and in total. Not drawn yet: vibes, action
// animations (bumps) and success, talk text and policy infos, converter recipes, cooldowns and
// capacities, tags and the `color` field, agents' vision range, teams (`group_id`), and there is no
// zoom, pan or per-object tooltip.
(() => {
  "use strict";

  const FORMAT_VERSION = 4;
  const METTASCOPE = "https://metta-ai.github.io/metta/mettascope/mettascope.html";
  const MAX_WIDTH = 720; // CSS px of the canvas at most; the cell size follows from the map's width
  const MAX_HEIGHT = 560;
  const BASE_RATE = 10; // steps per second at 1x
  const SPEEDS = [1, 2, 4, 8, 16];
  const LIST_FIELDS = new Set(["location", "inventory", "tag_ids", "inventory_capacities", "input_resources", "output_resources"]);
  const DIRECTIONS = { north: [0, -1], south: [0, 1], west: [-1, 0], east: [1, 0],
    northwest: [-1, -1], northeast: [1, -1], southwest: [-1, 1], southeast: [1, 1] };
  const ORIENTATIONS = ["north", "south", "west", "east", "northwest", "northeast", "southwest", "southeast"];
  const AGENT_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#17becf", "#e377c2", "#bcbd22", "#8c564b"];
  const TYPE_COLOURS = { wall: "#3b3f46", generator_red: "#d64541", mine_red: "#9c4a2f", hub: "#d4a017", altar: "#8e44ad" };
  const ITEM_SYMBOLS = { heart: "\u2665" };
  const CSS = `
.rp{font:13px/1.4 system-ui,sans-serif;color:#222;display:block;max-width:${MAX_WIDTH + 4}px;outline:none}
.rp:focus-visible{outline:2px solid #4a90d9;outline-offset:2px}
.rp-title{font-weight:600}.rp-meta,.rp-inventory,.rp-players{color:#666;font-size:12px}
.rp canvas{display:block;max-width:100%;height:auto;margin:4px 0;background:#f3f2ee;border-radius:3px}
.rp-controls{display:flex;gap:8px;align-items:center;flex-wrap:wrap;margin:4px 0}
.rp-controls input[type=range]{flex:1;min-width:120px}.rp-controls button{min-width:4.5em}
.rp-step{font-variant-numeric:tabular-nums;min-width:7em}.rp-error{color:#b00020;font-weight:600}
.rp-reward{font-variant-numeric:tabular-nums}`;

  // ---- decoding -------------------------------------------------------------------------------------

  /** Whether `value` of field `key` is a list of [step, value] pairs rather than a plain value. */
  function isSeries(key, value) {
    if (!Array.isArray(value) || value.length === 0) return false;
    for (const e of value) if (!Array.isArray(e) || e.length !== 2 || typeof e[0] !== "number") return false;
    return LIST_FIELDS.has(key) ? Array.isArray(value[0][1]) : true;
  }

  /** Every field as a series: plain values become [[0, value]]. */
  function decodeObject(raw) {
    const fields = {};
    for (const [key, value] of Object.entries(raw)) fields[key] = isSeries(key, value) ? value : [[0, value]];
    return fields;
  }

  /** The value of a series at `step` (undefined before its first pair); binary search. */
  function at(series, step) {
    if (!series || series.length === 0 || series[0][0] > step) return undefined;
    let lo = 0, hi = series.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (series[mid][0] <= step) lo = mid; else hi = mid - 1;
    }
    return series[lo][1];
  }

  async function readBytes(source) {
    if (source instanceof Uint8Array) return source;
    if (source instanceof ArrayBuffer) return new Uint8Array(source);
    if (typeof source !== "string") throw new Error("unsupported replay source (give bytes, base64:..., or a URL)");
    if (source.startsWith("base64:")) {
      const text = atob(source.slice(7));
      const bytes = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
      return bytes;
    }
    let response;
    try { response = await fetch(source); } catch (e) { throw new Error(`could not fetch ${source} (${e.message})`); }
    if (!response.ok) throw new Error(`could not fetch ${source}: HTTP ${response.status}`);
    return new Uint8Array(await response.arrayBuffer());
  }

  async function decodeReplay(bytes) {
    let text;
    if (bytes[0] === 0x7b) { // "{": not compressed
      text = new TextDecoder().decode(bytes);
    } else {
      const format = bytes[0] === 0x1f && bytes[1] === 0x8b ? "gzip" : "deflate";
      try {
        const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream(format));
        text = await new Response(stream).text();
      } catch (e) { throw new Error(`not a compressed replay (${e.message})`); }
    }
    let data;
    try { data = JSON.parse(text); } catch (e) { throw new Error(`replay is not valid JSON (${e.message})`); }
    if (!data || typeof data !== "object" || data.version !== FORMAT_VERSION) {
      throw new Error(`unsupported replay format version ${data && data.version} (this player reads version ${FORMAT_VERSION})`);
    }
    return prepare(data);
  }

  /** Everything drawing needs, computed once: objects, per-agent cumulative rewards and facing per step. */
  function prepare(data) {
    const [width, height] = data.map_size;
    const maxStep = Math.max(0, (data.max_steps || 1) - 1);
    const typeNames = data.type_names || [];
    const objects = (data.objects || []).map(decodeObject).map((f) => {
      const typeName = at(f.type_name, 0) !== undefined ? at(f.type_name, 0) : typeNames[at(f.type_id, 0)] || "?";
      const agentId = at(f.agent_id, 0);
      const isStatic = ["alive", "location", "inventory"].every((k) => !f[k] || f[k].length === 1);
      return { f, typeName, agentId, isAgent: agentId !== undefined, isStatic };
    });
    const agents = objects.filter((o) => o.isAgent).sort((a, b) => a.agentId - b.agentId);
    for (const agent of agents) {
      // Who played it: mettagrid's rollout (and our mixed line-ups) name each agent's policy in `policy_infos`.
      const infos = at(agent.f.policy_infos, 0);
      agent.policy = infos && typeof infos === "object" && typeof infos.policy_name === "string" ? infos.policy_name : "";
      agent.rewards = new Float64Array(maxStep + 1);
      agent.facing = new Array(maxStep + 1);
      const useOrientation = agent.f.orientation && agent.f.orientation.length > 1;
      let sum = 0, facing = ORIENTATIONS[at(agent.f.orientation, 0) || 0] || "north";
      for (let t = 0; t <= maxStep; t++) {
        if (agent.f.total_reward) sum = Number(at(agent.f.total_reward, t)) || 0;
        else sum += Number(at(agent.f.current_reward, t)) || 0;
        agent.rewards[t] = sum;
        const action = (data.action_names || [])[at(agent.f.action_id, t)] || "";
        if (useOrientation) facing = ORIENTATIONS[at(agent.f.orientation, t)] || facing;
        else if (action.startsWith("move_") && DIRECTIONS[action.slice(5)]) facing = action.slice(5);
        agent.facing[t] = facing;
      }
    }
    return { data, width, height, maxStep, objects, agents, itemNames: data.item_names || [] };
  }

  // ---- drawing helpers ------------------------------------------------------------------------------

  function typeColour(name) {
    if (TYPE_COLOURS[name]) return TYPE_COLOURS[name];
    let h = 0;
    for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 360;
    return `hsl(${h},45%,50%)`;
  }
  function agentColour(id) {
    return id < AGENT_COLOURS.length ? AGENT_COLOURS[id] : `hsl(${(id * 137.5) % 360},60%,45%)`;
  }
  function typeLabel(name) {
    const parts = name.split("_").filter(Boolean);
    if (parts.length > 1) return parts[0][0].toUpperCase() + parts[1][0];
    return name.slice(0, 2).replace(/^./, (c) => c.toUpperCase());
  }
  function itemLabel(itemNames, id) {
    const name = itemNames[id] || `item${id}`;
    return ITEM_SYMBOLS[name] || name.slice(0, 1);
  }
  function inventoryCount(inventory) {
    return Array.isArray(inventory) ? inventory.reduce((n, e) => n + (Array.isArray(e) ? e[1] : 0), 0) : 0;
  }
  /** The URL a string source names (resolved against the page), or null for bytes, base64 and bad URLs. */
  function sourceUrl(source) {
    if (typeof source !== "string" || source.startsWith("base64:")) return null;
    try { return new URL(source, document.baseURI); } catch (e) { return null; }
  }
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ---- the player -----------------------------------------------------------------------------------

  function mount(container, options) {
    const opts = options || {};
    if (!document.getElementById("rp-style")) document.head.appendChild(el("style", { id: "rp-style" }, CSS));
    const root = el("div", { class: "rp", tabindex: "0", "data-testid": "replay-player" });
    const title = el("div", { class: "rp-title", "data-testid": "replay-title" }, "no replay loaded");
    const meta = el("div", { class: "rp-meta" });
    const error = el("div", { class: "rp-error", role: "alert", "data-testid": "replay-error", hidden: "" });
    const canvas = el("canvas", { "data-testid": "replay-canvas", width: "1", height: "1" });
    const controls = el("div", { class: "rp-controls" });
    const button = el("button", { type: "button", "data-testid": "replay-play" }, "play");
    const slider = el("input", { type: "range", min: "0", max: "0", value: "0", step: "1", "aria-label": "step" });
    const speed = el("select", { "aria-label": "speed" });
    for (const s of SPEEDS) speed.appendChild(el("option", { value: String(s) }, `${s}x`));
    const stepLabel = el("span", { class: "rp-step", "data-testid": "replay-step" }, "step 0 / 0");
    const reward = el("div", { class: "rp-reward", "data-testid": "replay-reward" });
    const inventory = el("div", { class: "rp-inventory", "data-testid": "replay-inventory" });
    const players = el("div", { class: "rp-players", "data-testid": "replay-players", hidden: "" });
    const link = el("a", { target: "_blank", rel: "noopener", "data-testid": "replay-mettascope", hidden: "" }, "Open in MettaScope");
    controls.append(button, slider, speed, stepLabel);
    root.append(title, meta, error, canvas, controls, reward, inventory, players, link);
    container.appendChild(root);

    const ctx = canvas.getContext("2d");
    let replay = null, step = 0, playing = false, timer = null, loadToken = 0, lastError = null;
    let cell = 0, dpr = 1, background = null;

    function layout() {
      const { width, height } = replay;
      cell = Math.max(3, Math.min(48, Math.floor(Math.min(MAX_WIDTH / width, MAX_HEIGHT / height))));
      dpr = window.devicePixelRatio || 1;
      canvas.width = Math.round(width * cell * dpr);
      canvas.height = Math.round(height * cell * dpr);
      canvas.style.width = `${width * cell}px`;
      background = document.createElement("canvas");
      background.width = canvas.width;
      background.height = canvas.height;
      const bg = background.getContext("2d");
      bg.setTransform(dpr, 0, 0, dpr, 0, 0);
      bg.fillStyle = "#f3f2ee";
      bg.fillRect(0, 0, width * cell, height * cell);
      if (cell >= 8) {
        bg.strokeStyle = "#e2e0d9";
        bg.lineWidth = 1 / dpr;
        bg.beginPath();
        for (let x = 0; x <= width; x++) { bg.moveTo(x * cell, 0); bg.lineTo(x * cell, height * cell); }
        for (let y = 0; y <= height; y++) { bg.moveTo(0, y * cell); bg.lineTo(width * cell, y * cell); }
        bg.stroke();
      }
      for (const o of replay.objects) if (o.typeName === "wall" && o.isStatic) drawObject(bg, o, 0);
    }

    function drawObject(g, o, t) {
      if (at(o.f.alive, t) === false) return;
      const loc = at(o.f.location, t);
      if (!Array.isArray(loc)) return;
      const x = loc[0] * cell, y = loc[1] * cell;
      if (o.typeName === "wall") {
        g.fillStyle = TYPE_COLOURS.wall;
        g.fillRect(x, y, cell, cell);
        return;
      }
      const pad = Math.max(1, cell * 0.1);
      g.fillStyle = typeColour(o.typeName);
      g.fillRect(x + pad, y + pad, cell - 2 * pad, cell - 2 * pad);
      if (cell < 10) return;
      g.fillStyle = "#fff";
      g.textAlign = "center";
      g.textBaseline = "middle";
      g.font = `600 ${Math.round(cell * 0.42)}px system-ui,sans-serif`;
      g.fillText(typeLabel(o.typeName), x + cell / 2, y + cell * 0.45);
      const count = inventoryCount(at(o.f.inventory, t));
      if (count > 0) {
        g.font = `${Math.round(cell * 0.3)}px system-ui,sans-serif`;
        g.textAlign = "right";
        g.textBaseline = "alphabetic";
        g.fillText(String(count), x + cell - pad - 1, y + cell - pad - 1);
      }
    }

    function drawAgent(g, o, t) {
      if (at(o.f.alive, t) === false) return;
      const loc = at(o.f.location, t);
      if (!Array.isArray(loc)) return;
      const cx = (loc[0] + 0.5) * cell, cy = (loc[1] + 0.5) * cell, r = cell * 0.32;
      const colour = agentColour(o.agentId);
      const [dx, dy] = DIRECTIONS[o.facing[t]] || DIRECTIONS.north;
      const norm = Math.hypot(dx, dy), ux = dx / norm, uy = dy / norm, side = cell * 0.24, base = cell * 0.16;
      const pointer = new Path2D(); // a triangle from inside the circle to the cell's edge on the facing side
      pointer.moveTo(cx + ux * cell * 0.52, cy + uy * cell * 0.52);
      pointer.lineTo(cx + ux * base - uy * side, cy + uy * base + ux * side);
      pointer.lineTo(cx + ux * base + uy * side, cy + uy * base - ux * side);
      pointer.closePath();
      const body = new Path2D();
      body.arc(cx, cy, r, 0, 2 * Math.PI);
      g.lineWidth = Math.max(1.5, cell * 0.12); // a white outline around both, then the agent's colour
      g.lineJoin = "round";
      g.strokeStyle = "#fff";
      g.stroke(pointer);
      g.stroke(body);
      g.fillStyle = colour;
      g.fill(pointer);
      g.fill(body);
      if (cell >= 12) {
        g.fillStyle = "#fff";
        g.textAlign = "center";
        g.textBaseline = "middle";
        g.font = `600 ${Math.round(cell * 0.36)}px system-ui,sans-serif`;
        g.fillText(String(o.agentId), cx, cy + 0.5);
      }
      const held = (at(o.f.inventory, t) || []).filter((e) => Array.isArray(e) && e[1] > 0);
      if (held.length === 0 || cell < 8) return;
      const text = held.map(([id, n]) => `${itemLabel(replay.itemNames, id)}${n}`).join(" ");
      g.font = `600 ${Math.max(8, Math.round(cell * 0.32))}px system-ui,sans-serif`;
      const w = g.measureText(text).width + 4, h = Math.max(9, cell * 0.38);
      const bx = Math.min(loc[0] * cell + cell - w / 2, replay.width * cell - w), by = Math.max(0, loc[1] * cell - h / 3);
      g.fillStyle = "#222";
      g.fillRect(bx, by, w, h);
      g.fillStyle = "#ffd24a";
      g.textAlign = "left";
      g.textBaseline = "middle";
      g.fillText(text, bx + 2, by + h / 2 + 0.5);
    }

    function render() {
      if (!replay) return;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.drawImage(background, 0, 0);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      for (const o of replay.objects) if (!o.isAgent && !(o.typeName === "wall" && o.isStatic)) drawObject(ctx, o, step);
      for (const o of replay.agents) drawAgent(ctx, o, step);
      slider.value = String(step);
      stepLabel.textContent = `step ${step} / ${replay.maxStep}`;
      const rewards = agentRewards();
      const total = rewards.reduce((a, b) => a + b, 0);
      reward.textContent = `reward ${total.toFixed(2)} (${rewards.map((r, i) => `agent ${replay.agents[i].agentId}: ${r.toFixed(2)}`).join(", ")})`;
      inventory.textContent = "holds: " + replay.agents.map((o) => {
        const held = (at(o.f.inventory, step) || []).filter((e) => Array.isArray(e) && e[1] > 0);
        return `agent ${o.agentId}: ` + (held.map(([id, n]) => `${replay.itemNames[id] || id} ${n}`).join(", ") || "-");
      }).join(" · ");
    }

    function agentRewards() {
      return replay ? replay.agents.map((o) => o.rewards[step]) : [];
    }

    function seek(target) {
      if (!replay) return;
      step = Math.max(0, Math.min(replay.maxStep, Math.round(Number(target) || 0)));
      render();
    }

    function startTimer() {
      clearInterval(timer);
      const rate = BASE_RATE * Number(speed.value);
      const interval = Math.max(16, 1000 / rate);
      const stride = Math.max(1, Math.round((rate * interval) / 1000));
      timer = setInterval(() => {
        seek(step + stride);
        if (step >= replay.maxStep) pause();
      }, interval);
    }

    function play() {
      if (!replay || playing) return;
      if (step >= replay.maxStep) seek(0);
      playing = true;
      button.textContent = "pause";
      startTimer();
    }

    function pause() {
      playing = false;
      clearInterval(timer);
      timer = null;
      button.textContent = "play";
    }

    function showError(message) {
      error.textContent = `cannot show this replay: ${message}`;
      error.hidden = false;
    }

    async function load(source, metaInfo) {
      const token = ++loadToken;
      pause();
      replay = null;
      lastError = null;
      error.hidden = true;
      link.hidden = true;
      const url = sourceUrl(source);
      title.textContent = (metaInfo && metaInfo.title) || (url ? url.pathname.split("/").pop() : "") || "replay";
      meta.textContent = "loading...";
      if (url && (url.protocol === "http:" || url.protocol === "https:")) {
        const base = opts.mettascopeBase || METTASCOPE;
        link.href = `${base}${base.includes("?") ? "&" : "?"}replay=${encodeURIComponent(url.href)}`;
        link.hidden = false;
      }
      try {
        const decoded = await decodeReplay(await readBytes(source));
        if (token !== loadToken) return;
        replay = decoded;
      } catch (e) {
        if (token !== loadToken) return;
        lastError = e.message || String(e);
        meta.textContent = "";
        showError(lastError);
        return;
      }
      const { width, height, agents, maxStep } = replay;
      meta.textContent = `${width}x${height} map · ${agents.length} agent${agents.length === 1 ? "" : "s"} · ${maxStep + 1} steps`;
      const named = agents.some((a) => a.policy);
      players.textContent = named ? "players: " + agents.map((a) => `agent ${a.agentId}: ${a.policy || "?"}`).join(" · ") : "";
      players.hidden = !named;
      slider.max = String(maxStep);
      step = 0;
      layout();
      render();
    }

    function onKey(event) {
      if (!replay || event.target === speed || (event.target === slider && event.key !== " ")) return;
      if (event.key === " " && event.target === button) return; // the button's own click toggles
      const moves = { ArrowRight: step + 1, ArrowLeft: step - 1, Home: 0, End: replay.maxStep };
      if (event.key in moves) {
        pause();
        seek(moves[event.key]);
      } else if (event.key === " ") {
        if (playing) pause(); else play();
      } else {
        return;
      }
      event.preventDefault();
    }

    button.addEventListener("click", () => (playing ? pause() : play()));
    slider.addEventListener("input", () => seek(slider.value));
    speed.addEventListener("change", () => { if (playing) startTimer(); });
    root.addEventListener("keydown", onKey);

    return {
      load,
      seek: (target) => { pause(); seek(target); },
      play,
      pause,
      state: () => ({
        step, maxStep: replay ? replay.maxStep : 0, playing, totalReward: agentRewards().reduce((a, b) => a + b, 0),
        agentRewards: agentRewards(), ready: replay !== null, error: lastError,
      }),
      close() {
        pause();
        loadToken++;
        replay = null;
        root.remove();
      },
    };
  }

  window.ReplayPlayer = { mount };
})();
