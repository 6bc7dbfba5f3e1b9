#!/usr/bin/env node
// A bst-rt bundle from Node.js: onnxruntime-node + tokenizer.json + manifest.json, nothing else (docs/portable.md).
//
//   node clients/node/predict.mjs BUNDLE EVAL_DIR OUT.csv [--system N]
//
// EVAL_DIR is an evaluation package (a metadata CSV with anonymous_id,title,tags,description and
// audio/<anonymous_id>.<wav|flac|mp3|ogg|...>) at any sample rate: decode.mjs decodes and mixes to mono, the
// bundle's resample graph brings it to 48 kHz; chain.mjs (shared with the browser page) runs the graphs, one clip
// per call, each graph checked against the manifest's sha256 first. Every row gets a prediction: missing, empty or
// undecodable audio falls back to the bundle's text-only path (a warning names the file), empty metadata to the
// audio-only path, and the fallback counts are printed, as the Python runtime does.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import ort from "onnxruntime-node";
import { parse as parseCsv } from "csv-parse/sync";
import { AUDIO_SUFFIXES, decodeAudio } from "./decode.mjs";
import { BundleRefused, Chain, systems } from "./chain.mjs";

function fail(msg) {
  process.stderr.write(`error: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const pos = [];
  const opts = { system: "1" };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--system") opts.system = String(argv[++i]);
    else pos.push(argv[i]);
  }
  if (pos.length !== 3) fail("usage: node predict.mjs BUNDLE EVAL_DIR OUT.csv [--system N]");
  return { bundle: pos[0], evalDir: pos[1], out: pos[2], ...opts };
}

// ---- the package: metadata CSV (csv-parse) + audio/<id>.<any suffix the Python runtime accepts> ----------------
function readCsv(file) {
  try {
    return parseCsv(fs.readFileSync(file), { bom: true, relax_column_count: true, relax_quotes: true, skip_empty_lines: true });
  } catch (err) {
    fail(`${file}: not a readable CSV (${err.message})`);
  }
}

function findMetadata(root) {
  const found = [];
  for (const dir of [root, path.join(root, "metadata")]) {
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) continue;
    for (const name of fs.readdirSync(dir).sort()) {
      if (!name.endsWith(".csv")) continue;
      const header = readCsv(path.join(dir, name))[0] || [];
      if (header.includes("anonymous_id") && !header.includes("class")) found.push(path.join(dir, name));
    }
  }
  if (found.length !== 1) fail(`${root}: expected one metadata CSV with an anonymous_id column, found ${found.length}`);
  return found[0];
}

// id -> its one audio file (any suffix of AUDIO_SUFFIXES, any case), as bst_rt.runtime.datasets.audio_files_by_id
function audioFilesById(folder) {
  const found = new Map();
  if (!fs.existsSync(folder) || !fs.statSync(folder).isDirectory()) return found;
  for (const name of fs.readdirSync(folder).sort()) {
    const ext = path.extname(name);
    if (!AUDIO_SUFFIXES.includes(ext.toLowerCase()) || name.startsWith(".")) continue;
    const id = name.slice(0, name.length - ext.length);
    if (found.has(id)) fail(`${folder}: two audio files for id '${id}': ${path.basename(found.get(id))} and ${name}; keep one`);
    found.set(id, path.join(folder, name));
  }
  return found;
}

function readPackage(root) {
  const rows = readCsv(findMetadata(root));
  const header = rows[0];
  const col = (name) => {
    const i = header.indexOf(name);
    if (i < 0) fail(`metadata CSV has no ${name} column`);
    return i;
  };
  const [id, title, tags, desc] = ["anonymous_id", "title", "tags", "description"].map(col);
  const files = audioFilesById(path.join(root, "audio"));
  return rows.slice(1).map((r) => {
    const clipId = (r[id] ?? "").trim();
    return { id: clipId, title: r[title] ?? "", tags: r[tags] ?? "", description: r[desc] ?? "",
             audio: files.get(clipId) ?? null };
  });
}

// the clip's decoded audio ({ wave, sampleRate }), or the fallback reason (the Python runtime's reasons)
async function readAudio(file) {
  if (file === null) return { reason: "missing audio" };
  let bytes;
  try {
    if (!fs.statSync(file).isFile()) return { reason: "missing audio" };
    bytes = new Uint8Array(fs.readFileSync(file));
  } catch (err) {
    return { reason: err.code === "ENOENT" ? "missing audio" : `undecodable audio: ${err.message}` };
  }
  if (bytes.length === 0) return { reason: "zero-byte audio" };
  try {
    return await decodeAudio(bytes, file);
  } catch (err) {
    return { reason: `undecodable audio: ${file}: ${err.message}` };
  }
}

// a bundle file's sha256, streamed (the text encoder's weights are 500 MB)
function sha256File(file) {
  return new Promise((resolve, reject) => {
    const hash = crypto.createHash("sha256");
    fs.createReadStream(file).on("error", reject).on("data", (b) => hash.update(b)).on("end", () => resolve(hash.digest("hex")));
  });
}

// ---- the chain: chain.mjs, the one the browser page runs too --------------------------------------------------------
async function main() {
  const args = parseArgs(process.argv.slice(2));
  let manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(args.bundle, "manifest.json"), "utf8"));
  } catch (err) {
    fail(`${args.bundle}: no readable manifest.json (${err.message})`);
  }
  const file = (name) => path.join(args.bundle, name);
  const readFile = async (name) => new Uint8Array(fs.readFileSync(file(name)));
  const onDisk = { path: file, sha256: (name) => sha256File(file(name)) };
  const sessionOptions = { executionProviders: ["cpu"], intraOpNumThreads: 1, interOpNumThreads: 1 };
  let chain;
  try {
    chain = new Chain(ort, manifest, readFile, { sessionOptions, onDisk });
    if (!systems(manifest).includes(args.system)) throw new BundleRefused(`no system ${args.system} (it has ${systems(manifest).join(", ")})`);
    await chain.load(args.system, false);
  } catch (err) {
    fail(`${args.bundle}: ${err.message}`);
  }
  const fallbacks = new Map();
  const clips = readPackage(args.evalDir);
  const lines = ["id,predicted_bst_second_level_class,prediction_score"];
  const started = Date.now();
  for (const clip of clips) {
    const got = await readAudio(clip.audio);
    if (got.reason && got.reason !== "missing audio") process.stderr.write(`warning: ${got.reason}; text-only fallback\n`);
    const r = await chain.classify({ wave: got.wave ?? null, sampleRate: got.sampleRate, audioReason: got.reason ?? null,
                                     title: clip.title, tags: clip.tags, description: clip.description }, args.system, false);
    if (r.fallback) {
      const key = r.fallback.split(":")[0];
      fallbacks.set(key, (fallbacks.get(key) ?? 0) + 1);
    }
    const id = /[",\n\r]/.test(clip.id) ? `"${clip.id.replaceAll('"', '""')}"` : clip.id;
    lines.push(`${id},${r.code},${r.score.toFixed(6)}`);
  }
  const tmp = `${args.out}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, lines.join("\n") + "\n");
  fs.renameSync(tmp, args.out);
  const secs = (Date.now() - started) / 1000;
  process.stderr.write(`${clips.length} predictions (system ${args.system}) written to ${args.out} in ${secs.toFixed(1)} s\n`);
  const counts = [...fallbacks].map(([k, v]) => `${k}: ${v}`).join(", ");
  process.stderr.write(`fallbacks: ${counts || "none"}\n`);
}

main().catch((err) => fail(err.message));
