// kettle's web page: the build form, a job's live page, and the in-browser
// verifier (docs/web.md). Plain DOM, no dependencies; every request goes
// to this origin.
"use strict";

const $ = (id) => document.getElementById(id);
const PHASES = ["init", "detect", "build", "provenance", "attest"];
const TOKEN_KEY = "kettle-token";

function randomNonce() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// Drop zones: dragover must preventDefault for drop to fire.
function dropZone(zone, input, onFile) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (f) onFile(f);
  });
  input.addEventListener("change", () => { if (input.files[0]) onFile(input.files[0]); });
}

function base64(buf) {
  // Chunked: String.fromCharCode takes a bounded number of arguments.
  const u = new Uint8Array(buf);
  let s = "";
  for (let i = 0; i < u.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, u.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

// ---- Build form ----

function setupBuild() {
  const form = $("build-form");
  const nonce = $("build-nonce");
  const token = $("build-token");
  const msg = $("build-message");
  let file = null;
  nonce.value = randomNonce();
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  const showFile = () => {
    $("source-name").textContent = file ? file.name + " (" + file.size + " bytes)" : "";
    $("source-clear").hidden = !file;
  };
  dropZone($("source-drop"), $("source-file"), (f) => { file = f; showFile(); });
  $("source-clear").addEventListener("click", () => { file = null; $("source-file").value = ""; showFile(); });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    msg.textContent = "";
    const n = nonce.value.trim().toLowerCase();
    if (!/^([0-9a-f]{2}){1,16}$/.test(n)) {
      msg.textContent = "The nonce must be 1 to 16 bytes of hex.";
      return;
    }
    const url = $("repo-url").value.trim();
    const ref = $("repo-ref").value.trim();
    const body = { nonce: n };
    if (url === "" && file) {
      body.source_data = base64(await file.arrayBuffer());
      body.source_name = file.name;
    } else if (url !== "") {
      body.repo_url = url;
      if (ref !== "") body.repo_ref = ref;
    } else {
      msg.textContent = "Give a repository URL or choose a source archive.";
      return;
    }
    const headers = { "Content-Type": "application/json" };
    const t = token.value.trim();
    if (t !== "") {
      sessionStorage.setItem(TOKEN_KEY, t);
      headers.Authorization = "Bearer " + t;
    } else {
      sessionStorage.removeItem(TOKEN_KEY);
    }
    $("build-button").disabled = true;
    try {
      const resp = await fetch("/build", { method: "POST", headers, body: JSON.stringify(body) });
      const text = await resp.text();
      if (!resp.ok) {
        msg.textContent = "The server refused the build (" + resp.status + "): " + text.trim();
        return;
      }
      const id = JSON.parse(text).job_id;
      sessionStorage.setItem("kettle-nonce-" + id, n);
      location.assign("/b/" + encodeURIComponent(id));
    } catch (err) {
      msg.textContent = "Could not submit: " + err.message;
    } finally {
      $("build-button").disabled = false;
    }
  });
}

// ---- Job page ----

function showJob(id) {
  $("submit").hidden = true;
  $("verify").hidden = true;
  $("job").hidden = false;
  $("job-id").textContent = id;
  document.title = "kettle build " + id;
  const state = $("job-state");
  const log = $("log");
  const base = "/build/" + encodeURIComponent(id);
  const seen = new Set(); // phase types that sent events
  let lastId = -1;
  let current = null;
  let finished = false;
  const n = sessionStorage.getItem("kettle-nonce-" + id);
  if (n) { $("job-nonce").hidden = false; $("job-nonce-value").textContent = n; }

  const setState = (s) => { state.textContent = s; state.dataset.state = s; };
  const phaseItems = () => document.querySelectorAll("#phases li");
  const markPhase = (type) => {
    if (!PHASES.includes(type)) return;
    seen.add(type);
    current = type;
    for (const li of phaseItems()) {
      const p = li.dataset.phase;
      if (p === type) li.setAttribute("aria-current", "step");
      else li.removeAttribute("aria-current");
      li.classList.toggle("done", seen.has(p) && p !== type);
    }
  };
  const endPhases = (ok) => {
    for (const li of phaseItems()) {
      li.removeAttribute("aria-current");
      const p = li.dataset.phase;
      li.classList.toggle("done", seen.has(p) && (ok || p !== current));
      li.classList.toggle("failed", !ok && p === current);
      if (!seen.has(p)) li.classList.add("skipped");
    }
  };
  const addLine = (type, text) => {
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const div = document.createElement("div");
    const t = document.createElement("span");
    t.className = "t";
    t.textContent = type;
    const m = document.createElement("span");
    m.textContent = text;
    div.append(t, m);
    log.append(div);
    if (stick) log.scrollTop = log.scrollHeight;
  };

  // The job's JSON fills in what the stream does not carry (the exact
  // error and the result digest) and the state before the first event.
  const refresh = async () => {
    try {
      const r = await fetch(base, { headers: { Accept: "application/json" } });
      if (r.status === 404) { setState("unknown build"); return null; }
      if (!r.ok) return null;
      const j = await r.json();
      if (!finished || j.status === "succeeded" || j.status === "failed") setState(j.status);
      showTimings(j.phases);
      if (j.status === "failed") {
        $("job-error").hidden = false;
        $("job-error-type").textContent = j.error_type || "";
        $("job-error-msg").textContent = j.error || "";
      }
      if (j.status === "succeeded") {
        $("job-download").hidden = false;
        $("job-download-link").href = base + "/result";
        $("job-sha").textContent = j.result_sha256 ? "sha256 " + j.result_sha256 : "";
      }
      return j;
    } catch (err) {
      return null;
    }
  };

  const finish = (result) => {
    finished = true;
    const ok = result && result.status === "ok";
    setState(ok ? "succeeded" : "failed");
    endPhases(ok);
    if (!ok && result) {
      $("job-error").hidden = false;
      $("job-error-type").textContent = result.error_type || "";
      $("job-error-msg").textContent = result.error || "";
    }
    refresh();
  };

  refresh().then((j) => {
    if (j === null && state.textContent === "unknown build") return;
    const es = new EventSource(base + "/events");
    es.onmessage = (e) => {
      // Reconnects resume after Last-Event-ID; anything at or before the
      // last id shown is a repeat.
      const eid = e.lastEventId === "" ? NaN : Number(e.lastEventId);
      if (!Number.isNaN(eid)) {
        if (eid <= lastId) return;
        lastId = eid;
      }
      let ev;
      try { ev = JSON.parse(e.data); } catch { return; }
      if (ev.type === "complete") {
        es.close();
        finish(ev.result);
        return;
      }
      if (ev.type === "queued") {
        setState("queued (position " + ev.position + ")");
        state.dataset.state = "queued";
        return;
      }
      if (!finished && state.dataset.state !== "running") setState("running");
      markPhase(ev.type);
      if (typeof ev.msg === "string" && ev.msg !== "") addLine(ev.type, ev.msg);
    };
    es.onerror = () => {
      // The browser reconnects by itself unless the stream is CLOSED
      // (an HTTP error): then the job's JSON says what happened.
      if (es.readyState === EventSource.CLOSED && !finished) refresh();
    };
  });
}

// showTimings lists the phase timings GET /build/{id} may carry
// ([{name, start, duration}], duration in seconds as events.Phase encodes
// it, or a string). Servers without them leave the list hidden.
function showTimings(phases) {
  if (!Array.isArray(phases)) return;
  const ul = $("timings");
  const items = [];
  for (const p of phases) {
    if (!p || typeof p.name !== "string") continue;
    let d = "";
    if (typeof p.duration === "number" && Number.isFinite(p.duration)) d = p.duration.toFixed(3) + " s";
    else if (typeof p.duration === "string") d = p.duration;
    const li = document.createElement("li");
    li.textContent = d ? p.name + " " + d : p.name;
    items.push(li);
  }
  if (items.length === 0) return;
  ul.replaceChildren(...items);
  ul.hidden = false;
}

// ---- Verify area ----

let verifierLoading = null;

// The verifier is fetched only when first needed: /ui/wasm_exec.js and
// /ui/verify.wasm, both from this origin.
function loadVerifier() {
  if (verifierLoading) return verifierLoading;
  verifierLoading = new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = "/ui/wasm_exec.js";
    s.onerror = () => reject(new Error("this kettle was built without the WebAssembly verifier (go generate ./web)"));
    s.onload = async () => {
      try {
        const go = new Go();
        const ready = new Promise((r) => window.addEventListener("kettle-verify-ready", r, { once: true }));
        const resp = fetch("/ui/verify.wasm");
        let inst;
        try {
          inst = await WebAssembly.instantiateStreaming(resp, go.importObject);
        } catch (err) {
          const r = await resp;
          if (!r.ok) throw new Error("this kettle was built without the WebAssembly verifier (go generate ./web)");
          throw err;
        }
        go.run(inst.instance);
        await ready;
        resolve(window.kettleVerify);
      } catch (err) {
        reject(err);
      }
    };
    document.head.append(s);
  });
  verifierLoading.catch(() => { verifierLoading = null; });
  return verifierLoading;
}

function setupVerify() {
  const form = $("verify-form");
  const msg = $("verify-message");
  let file = null;
  dropZone($("verify-drop"), $("verify-file"), (f) => {
    file = f;
    $("verify-name").textContent = f.name + " (" + f.size + " bytes)";
    loadVerifier().catch(() => {}); // warm up while the nonce is typed
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!file) { msg.textContent = "Choose or drop a result tarball first."; return; }
    $("verify-button").disabled = true;
    $("verify-result").hidden = true;
    msg.textContent = "Verifying " + file.name + "…";
    try {
      const fn = await loadVerifier();
      const bytes = new Uint8Array(await file.arrayBuffer());
      const rep = JSON.parse(await fn(bytes, file.name, $("verify-nonce").value, $("verify-insecure").checked));
      showReport(rep);
      msg.textContent = "";
    } catch (err) {
      msg.textContent = "Could not verify: " + err.message;
    } finally {
      $("verify-button").disabled = false;
    }
  });
}

function showReport(rep) {
  const rows = $("verify-rows");
  rows.replaceChildren();
  for (const c of rep.checks) {
    const tr = document.createElement("tr");
    const v = document.createElement("td");
    v.className = "verdict " + (c.ok ? (c.warning ? "warn" : "ok") : "bad");
    v.textContent = c.ok ? (c.warning ? "⚠ PASSED" : "✓ PASSED") : "✗ FAILED";
    const name = document.createElement("td");
    name.textContent = c.name.replaceAll("`", "");
    const d = document.createElement("td");
    d.className = "detail";
    d.textContent = (c.skipped ? "(skipped) " : "") + (c.detail || "");
    tr.append(v, name, d);
    rows.append(tr);
  }
  const sum = $("verify-summary");
  const passed = rep.passed;
  sum.className = "summary " + (passed ? "ok" : "bad");
  sum.textContent = (passed ? "Verified" : "Not verified") + ": " + rep.checks.filter((c) => c.ok).length + " of " +
    rep.checks.length + " checks passed" + (rep.build_id ? " — build " + rep.build_id : "") +
    (rep.platform ? ", platform " + rep.platform : "");
  const warn = $("verify-warnings");
  warn.replaceChildren();
  for (const w of rep.warnings || []) {
    const li = document.createElement("p");
    li.textContent = "Warning: " + w;
    warn.append(li);
  }
  $("verify-result").hidden = false;
}

function main() {
  const m = location.pathname.match(/^\/b\/([^/]+)$/) || location.hash.match(/^#\/build\/([^/]+)$/);
  setupBuild();
  setupVerify();
  if (m) showJob(decodeURIComponent(m[1]));
}

main();
