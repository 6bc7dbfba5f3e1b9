#!/usr/bin/env node
// A bst-rt bundle from Node.js: onnxruntime-node + tokenizer.json + manifest.json, nothing else (docs/portable.md).
//
//   node clients/node/predict.mjs BUNDLE EVAL_DIR OUT.csv [--system N] [--batch-size B]
//
// EVAL_DIR is an evaluation package (a metadata CSV with anonymous_id,title,tags,description and
// audio/<anonymous_id>.<wav|flac|mp3|ogg|...>) at any sample rate: decode.mjs decodes and mixes to mono, the
// bundle's resample graph brings it to 48 kHz. Every row gets a prediction: missing, empty or undecodable audio
// falls back to the bundle's text-only path (a warning names the file), empty metadata to the audio-only path, and
// the fallback counts are printed, as the Python runtime does.
import fs from "node:fs";
import path from "node:path";
import ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import { parse as parseCsv } from "csv-parse/sync";
import { AUDIO_SUFFIXES, decodeAudio } from "./decode.mjs";
import { maskClassWords, metadataText } from "./text.mjs";

const CONTRACT = "bst-portable-v2";

function fail(msg) {
  process.stderr.write(`error: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const pos = [];
  const opts = { system: "1", batchSize: 4 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--system") opts.system = String(argv[++i]);
    else if (argv[i] === "--batch-size") opts.batchSize = Number(argv[++i]);
    else pos.push(argv[i]);
  }
  if (pos.length !== 3) fail("usage: node predict.mjs BUNDLE EVAL_DIR OUT.csv [--system N] [--batch-size B]");
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

// the clip's audio as the resample graph's feeds, or the fallback reason (the Python runtime's reasons)
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

function makeTokenizer(file, spec) {
  const tok = new Tokenizer(JSON.parse(fs.readFileSync(file, "utf8")), {});
  const padId = tok.token_to_id ? tok.token_to_id("<pad>") : undefined;
  const pad = padId ?? 1;
  return (texts) => {
    const encs = texts.map((t) => {
      let ids = Array.from(tok.encode(Array.from(t).slice(0, spec.truncate_chars).join("")).ids, Number);
      if (ids.length > spec.max_tokens) ids = ids.slice(0, spec.max_tokens - 1).concat([ids[ids.length - 1]]);
      return ids;
    });
    const longest = Math.max(...encs.map((e) => e.length));
    const ids = new BigInt64Array(texts.length * longest).fill(BigInt(pad));
    const mask = new BigInt64Array(texts.length * longest);
    encs.forEach((e, i) => e.forEach((v, j) => { ids[i * longest + j] = BigInt(v); mask[i * longest + j] = 1n; }));
    return { input_ids: new ort.Tensor("int64", ids, [texts.length, longest]),
             attention_mask: new ort.Tensor("int64", mask, [texts.length, longest]) };
  };
}

// ---- the chain -----------------------------------------------------------------------------------------------------
async function main() {
  const args = parseArgs(process.argv.slice(2));
  const manifest = JSON.parse(fs.readFileSync(path.join(args.bundle, "manifest.json"), "utf8"));
  const portable = manifest.portable;
  if (!portable || portable.contract !== CONTRACT) fail(`${args.bundle}: no ${CONTRACT} section in manifest.json (re-export the bundle)`);
  const decisionName = portable.decision_graphs[args.system];
  if (!decisionName) fail(`${args.bundle}: no system ${args.system}`);
  const opts = { executionProviders: ["cpu"], intraOpNumThreads: 1, interOpNumThreads: 1 };
  const open = (name) => ort.InferenceSession.create(path.join(args.bundle, manifest.graphs[name].file), opts);
  const [resample, frontend, audioEnc, textEnc, heads, decision] = await Promise.all(
    ["resample", "frontend", "audio_encoder", "text_encoder", "heads", decisionName].map(open));
  const tokenize = makeTokenizer(path.join(args.bundle, manifest.text.tokenizer_file), portable.caller_text);
  const classWords = new Set(portable.caller_text.masked_text.class_words);
  const strip = portable.caller_text.masked_text.strip_chars;
  const fallbacks = new Map();
  const clips = readPackage(args.evalDir);
  const lines = ["id,predicted_bst_second_level_class,prediction_score"];
  const started = Date.now();
  for (let s = 0; s < clips.length; s += args.batchSize) {
    const batch = clips.slice(s, s + args.batchSize);
    const n = batch.length;
    const mels = [], reasons = [];
    for (const clip of batch) {
      let mel = null;
      const got = await readAudio(clip.audio);
      if (got.reason) {
        if (got.reason !== "missing audio") process.stderr.write(`warning: ${got.reason}; text-only fallback\n`);
      } else {
        const w48 = (await resample.run({ waveform: new ort.Tensor("float32", got.wave, [got.wave.length]),
          sample_rate: new ort.Tensor("int64", BigInt64Array.from([BigInt(got.sampleRate)]), []) })).waveform_48k;
        mel = await frontend.run({ waveform: w48,
                                   length: new ort.Tensor("int64", BigInt64Array.from([BigInt(w48.dims[0])]), []) });
      }
      mels.push(mel);
      reasons.push(got.reason ?? null);
    }
    const audio = new Float32Array(n * 512);
    const have = mels.map((m, i) => (m ? i : -1)).filter((i) => i >= 0);
    if (have.length) {
      const melData = new Float32Array(have.length * 4 * 1001 * 64);
      const longer = new Uint8Array(have.length);
      have.forEach((i, k) => { melData.set(mels[i].mel_fusion.data, k * 4 * 1001 * 64); longer[k] = mels[i].longer.data[0] ? 1 : 0; });
      const out = await audioEnc.run({ mel_fusion: new ort.Tensor("float32", melData, [have.length, 4, 1001, 64]),
                                       longer: new ort.Tensor("bool", longer, [have.length]) });
      have.forEach((i, k) => audio.set(out.audio_embedding.data.subarray(k * 512, (k + 1) * 512), i * 512));
    }
    const texts = batch.map((c) => metadataText(c.title, c.tags, c.description));
    reasons.forEach((r, i) => {
      const key = r ? r.split(":")[0] : (texts[i] ? null : "empty metadata");
      if (key) fallbacks.set(key, (fallbacks.get(key) ?? 0) + 1);
    });
    const text = new Float32Array(n * 512), masked = new Float32Array(n * 512);
    const idx = texts.map((t, i) => (t ? i : -1)).filter((i) => i >= 0);
    if (idx.length) {
      const all = idx.map((i) => texts[i]).concat(idx.map((i) => maskClassWords(texts[i], classWords, strip)));
      const emb = (await textEnc.run(tokenize(all))).text_embedding.data;
      idx.forEach((i, k) => {
        text.set(emb.subarray(k * 512, (k + 1) * 512), i * 512);
        masked.set(emb.subarray((idx.length + k) * 512, (idx.length + k + 1) * 512), i * 512);
      });
    }
    const feeds = { audio_embedding: audio, text_embedding: text, masked_text_embedding: masked };
    const headFeeds = {};
    for (const name of heads.inputNames) headFeeds[name] = new ort.Tensor("float32", feeds[name], [n, 512]);
    const h = await heads.run(headFeeds);
    const all = {
      family_probs: h.family_probs, pool_probs: h.pool_probs, text_embedding: new ort.Tensor("float32", text, [n, 512]),
      audio_present: new ort.Tensor("bool", Uint8Array.from(mels.map((m) => (m ? 1 : 0))), [n]),
      text_present: new ort.Tensor("bool", Uint8Array.from(texts.map((t) => (t ? 1 : 0))), [n]),
    };
    const decFeeds = {};
    for (const name of decision.inputNames) decFeeds[name] = all[name];
    const d = await decision.run(decFeeds);
    batch.forEach((clip, i) => {
      const code = manifest.classes[Number(d.label.data[i])];
      const id = /[",\n\r]/.test(clip.id) ? `"${clip.id.replaceAll('"', '""')}"` : clip.id;
      lines.push(`${id},${code},${Number(d.score.data[i]).toFixed(6)}`);
    });
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
