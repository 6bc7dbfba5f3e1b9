// The page: load the bundle served beside it (`bst-rt web`), take dropped files / a folder / a sidecar CSV, run the
// portable chain on each file in this browser (nothing is uploaded) and show the `bst-rt classify` columns.
import * as ort from "onnxruntime-web/wasm";
import { BundleRefused, Chain, checkManifest, downloadBytes, hasInt8, systems } from "../../node/chain.mjs";
import { AUDIO_SUFFIXES, readSidecar, stemOf, suffixOf, toCsv } from "./csv.mjs";
import { decodeAudio } from "../../node/decode.mjs";

const BUNDLE = "bundle/";
const $ = (id) => document.getElementById(id);
/** What the page did, for the browser test and the bench: rows as shown, load and per-clip times. */
const state = (window.bst = { ready: false, refused: null, rows: [], timings: { loadMs: null, clips: [] }, busy: false });

ort.env.wasm.wasmPaths = new URL("./", document.baseURI).href;
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

function refuse(message) {
  state.refused = message;
  const el = $("status");
  el.textContent = message;
  el.className = "refused";
  for (const id of ["drop", "files", "folder", "sidecar", "system", "precision"]) $(id).disabled = true;
  $("drop").classList.add("disabled");
}

function say(message) {
  if (state.refused) return;  // downloads still running in parallel must not overwrite the refusal
  const el = $("status");
  el.textContent = message;
  el.className = "";
}

async function fetchOk(url, what) {
  let res;
  try {
    res = await fetch(url, { cache: "no-cache" });
  } catch (err) {
    throw new BundleRefused(`${what}: cannot be fetched (${err.message}); is \`bst-rt web BUNDLE\` running?`);
  }
  if (!res.ok) throw new BundleRefused(`${what}: HTTP ${res.status} (missing from the bundle?)`);
  return res;
}

/** One bundle file, with a progress line while it downloads. */
async function readBundleFile(name) {
  const res = await fetchOk(BUNDLE + name, name);
  const total = Number(res.headers.get("Content-Length")) || 0;
  if (!res.body || !total) return new Uint8Array(await res.arrayBuffer());
  const out = new Uint8Array(total);
  const reader = res.body.getReader();
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    out.set(value, got);
    got += value.length;
    say(`downloading ${name}: ${mb(got)} of ${mb(total)}`);
  }
  return got === total ? out : out.subarray(0, got);
}

const mb = (n) => `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)} MB`;

let chain = null, taxonomy = null;

async function init() {
  try {
    const manifest = checkManifest(await (await fetchOk(BUNDLE + "manifest.json", "manifest.json")).json().catch(() => {
      throw new BundleRefused("manifest.json: not valid JSON");
    }));
    taxonomy = await (await fetchOk("taxonomy.json", "taxonomy.json")).json();
    if (manifest.classes.join() !== taxonomy.map((c) => c.code).join()) {
      throw new BundleRefused("manifest.json: its class list differs from this bst-rt's taxonomy (re-export the bundle)");
    }
    chain = new Chain(ort, manifest, readBundleFile, { onStatus: say });
    for (const s of systems(manifest)) $("system").add(new Option(`system ${s}: ${manifest.systems[s]?.name ?? ""}`, s));
    const first = systems(manifest)[0];
    $("precision").innerHTML = "";
    if (hasInt8(manifest)) $("precision").add(new Option(`int8 (download ${mb(downloadBytes(manifest, first, true))})`, "int8"));
    $("precision").add(new Option(`fp32 (download ${mb(downloadBytes(manifest, first, false))})`, "fp32"));
    $("bundle").textContent = `bundle ${manifest.bundle_id} · ${ort.env.wasm.numThreads} WASM thread(s)` +
      (self.crossOriginIsolated ? "" : " (page not cross-origin isolated)");
    await loadChoice();
  } catch (err) {
    refuse(err instanceof BundleRefused ? err.message : `bundle cannot be used: ${err.message}`);
  }
}

async function loadChoice() {
  const t0 = performance.now();
  state.ready = false;
  await chain.load($("system").value, $("precision").value === "int8");
  // the first load (graphs downloaded, hash checked, sessions made) is the page's load time; later choices add theirs
  if (state.timings.loadMs === null) state.timings.loadMs = performance.now() - t0;
  state.ready = true;
  say(`ready (graphs loaded in ${(state.timings.loadMs / 1000).toFixed(1)} s): drop sound files or a folder`);
}

// ---- input -------------------------------------------------------------------------------------------------------
let sidecar = null;

function metadataFor(id) {
  return (sidecar && sidecar.get(id)) || { title: $("title").value, tags: $("tags").value, description: $("description").value };
}

async function decode(file) {
  if (file.size === 0) return { wave: null, reason: "zero-byte audio" };
  try {
    const { sampleRate, wave } = await decodeAudio(new Uint8Array(await file.arrayBuffer()), file.name);
    return { wave, sampleRate, reason: null };
  } catch (err) {
    return { wave: null, reason: `undecodable audio: ${err.message}` };
  }
}

async function takeFiles(list) {
  const files = [...list];
  const csvs = files.filter((f) => suffixOf(f.name) === ".csv");
  try {
    if (csvs.length) {
      sidecar = readSidecar(await csvs[0].text(), csvs[0].name);
      $("sidecar-name").textContent = `sidecar: ${csvs[0].name} (${sidecar.size} rows)`;
    }
    const audio = files.filter((f) => AUDIO_SUFFIXES.includes(suffixOf(f.name)) && !f.name.startsWith("."))
      .sort((a, b) => pathOf(a).localeCompare(pathOf(b)));
    const seen = new Map();
    for (const f of audio) {
      const id = stemOf(f.name);
      if (seen.has(id)) throw new Error(`two audio files for id ${JSON.stringify(id)}: ${pathOf(seen.get(id))} and ${pathOf(f)}; rename one`);
      seen.set(id, f);
    }
    if (audio.length) await classifyAll(audio);
  } catch (err) {
    say(`error: ${err.message}`);
  }
}

const pathOf = (f) => f.webkitRelativePath || f.name;

async function classifyAll(files) {
  if (state.busy || !state.ready) return say("busy: wait for the current files to finish");
  state.busy = true;
  const system = $("system").value, int8 = $("precision").value === "int8";
  const bar = $("progress");
  bar.max = files.length;
  bar.value = 0;
  bar.hidden = false;
  const rows = [];
  try {
    for (const [k, file] of files.entries()) {
      say(`classifying ${k + 1} of ${files.length}: ${pathOf(file)}`);
      const t0 = performance.now();
      const { wave, sampleRate, reason } = await decode(file);
      const id = stemOf(file.name);
      const r = await chain.classify({ wave, sampleRate, audioReason: reason, ...metadataFor(id) }, system, int8);
      state.timings.clips.push({ file: pathOf(file), ms: performance.now() - t0, seconds: wave ? wave.length / sampleRate : 0 });
      const cls = taxonomy[r.label];
      rows.push({ file: pathOf(file), id, label: r.code, class_name: cls.name, parent: cls.parent,
                  parent_name: cls.parent_name, score: r.score, top: r.top, fallback: r.fallback });
      bar.value = k + 1;
      render(rows);
    }
    state.rows = rows;
    say(`${rows.length} file(s) classified with system ${system} (${int8 ? "int8" : "fp32"}), in this browser`);
  } catch (err) {
    say(`error: ${err.message}`);
  } finally {
    state.busy = false;
  }
}

// ---- output ------------------------------------------------------------------------------------------------------
function cell(tr, text, cls) {
  const td = tr.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function render(rows) {
  const body = $("results").tBodies[0];
  body.innerHTML = "";
  for (const r of rows) {
    const tr = body.insertRow();
    tr.dataset.id = r.id;
    cell(tr, r.file, "file");
    cell(tr, r.label, "label");
    cell(tr, r.class_name);
    cell(tr, r.parent_name);
    cell(tr, r.score.toFixed(3), "score");
    const bars = cell(tr, "", "top");
    for (const t of r.top) {
      const row = document.createElement("div");
      row.className = "bar";
      row.title = `${t.code} ${taxonomy.find((c) => c.code === t.code).name}: ${t.probability.toFixed(4)}`;
      row.innerHTML = `<span class="code"></span><span class="track"><span class="fill"></span></span><span class="p"></span>`;
      row.querySelector(".code").textContent = t.code;
      row.querySelector(".fill").style.width = `${(100 * t.probability).toFixed(1)}%`;
      row.querySelector(".p").textContent = t.probability.toFixed(2);
      bars.append(row);
    }
    cell(tr, r.fallback || "", "fallback");
  }
  $("results").hidden = rows.length === 0;
  $("download").disabled = rows.length === 0;
}

function download() {
  const blob = new Blob([toCsv(state.rows)], { type: "text/csv" });
  const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: "bst-classify.csv" });
  a.click();
  URL.revokeObjectURL(a.href);
}

async function entriesOf(items) {
  // a dropped folder: walk it (webkitGetAsEntry), keeping each file's relative path for the table
  const out = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const f = await new Promise((ok, bad) => entry.file(ok, bad));
      Object.defineProperty(f, "webkitRelativePath", { value: prefix + f.name });
      out.push(f);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, bad) => reader.readEntries(ok, bad));
        if (!batch.length) break;
        for (const e of batch) await walk(e, `${prefix}${entry.name}/`);
      }
    }
  };
  for (const item of items) {
    const entry = item.webkitGetAsEntry && item.webkitGetAsEntry();
    if (entry) await walk(entry, "");
  }
  return out;
}

function wire() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (state.refused) return;
    const items = [...(e.dataTransfer.items || [])];
    takeFiles(items.length && items[0].webkitGetAsEntry ? await entriesOf(items) : e.dataTransfer.files);
  });
  $("files").addEventListener("change", (e) => takeFiles(e.target.files));
  $("folder").addEventListener("change", (e) => takeFiles(e.target.files));
  $("sidecar").addEventListener("change", (e) => takeFiles(e.target.files));
  $("download").addEventListener("click", download);
  for (const id of ["system", "precision"]) {
    $(id).addEventListener("change", () => loadChoice().catch((err) => refuse(err.message)));
  }
}

wire();
init();
