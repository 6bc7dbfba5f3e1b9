#!/usr/bin/env node
// A bst-rt bundle from Node.js: onnxruntime-node + tokenizer.json + manifest.json, nothing else (docs/portable.md).
//
//   node clients/node/predict.mjs BUNDLE EVAL_DIR OUT.csv [--system N] [--batch-size B]
//
// EVAL_DIR is an evaluation package (a metadata CSV with anonymous_id,title,tags,description and
// audio/<anonymous_id>.wav) whose audio is already 48 kHz WAV: this client does not resample. Every row gets a
// prediction: missing, empty, unreadable or non-48 kHz audio falls back to the bundle's text-only path (a warning
// names the file), empty metadata to the audio-only path, as the Python runtime does.
import fs from "node:fs";
import path from "node:path";
import ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import { maskClassWords, metadataText } from "./text.mjs";

const CONTRACT = "bst-portable-v1";

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

// ---- CSV (RFC 4180: quoted fields, doubled quotes, newlines inside quotes; UTF-8 with or without BOM) ----------
function parseCsv(text) {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const rows = [];
  let row = [], field = "", quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') { field += '"'; i++; } else quoted = false;
      } else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field); field = "";
      if (!(row.length === 1 && row[0] === "")) rows.push(row);
      row = [];
    } else field += c;
  }
  if (field !== "" || row.length) { row.push(field); if (!(row.length === 1 && row[0] === "")) rows.push(row); }
  return rows;
}

function findMetadata(root) {
  const found = [];
  for (const dir of [root, path.join(root, "metadata")]) {
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) continue;
    for (const name of fs.readdirSync(dir).sort()) {
      if (!name.endsWith(".csv")) continue;
      const header = parseCsv(fs.readFileSync(path.join(dir, name), "utf8"))[0] || [];
      if (header.includes("anonymous_id") && !header.includes("class")) found.push(path.join(dir, name));
    }
  }
  if (found.length !== 1) fail(`${root}: expected one metadata CSV with an anonymous_id column, found ${found.length}`);
  return found[0];
}

function readPackage(root) {
  const rows = parseCsv(fs.readFileSync(findMetadata(root), "utf8"));
  const header = rows[0];
  const col = (name) => {
    const i = header.indexOf(name);
    if (i < 0) fail(`metadata CSV has no ${name} column`);
    return i;
  };
  const [id, title, tags, desc] = ["anonymous_id", "title", "tags", "description"].map(col);
  return rows.slice(1).map((r) => ({
    id: (r[id] ?? "").trim(), title: r[title] ?? "", tags: r[tags] ?? "", description: r[desc] ?? "",
    audio: path.join(root, "audio", `${(r[id] ?? "").trim()}.wav`),
  }));
}

// ---- WAV: PCM 8/16/24/32-bit and IEEE float 32/64 (also WAVE_FORMAT_EXTENSIBLE), as libsndfile scales them -----
function decodeWav(file) {
  const buf = fs.readFileSync(file);
  if (buf.length === 0) throw new Error("file is empty (0 bytes)");
  if (buf.toString("ascii", 0, 4) !== "RIFF" || buf.toString("ascii", 8, 12) !== "WAVE") throw new Error("not a RIFF/WAVE file");
  let fmt = null, data = null;
  for (let off = 12; off + 8 <= buf.length;) {
    const id = buf.toString("ascii", off, off + 4);
    const size = buf.readUInt32LE(off + 4);
    const body = buf.subarray(off + 8, Math.min(buf.length, off + 8 + size));
    if (id === "fmt ") fmt = body;
    else if (id === "data") data = body;
    off += 8 + size + (size % 2);
  }
  if (!fmt || !data) throw new Error("no fmt or data chunk");
  let format = fmt.readUInt16LE(0);
  const channels = fmt.readUInt16LE(2), rate = fmt.readUInt32LE(4), bits = fmt.readUInt16LE(14);
  if (format === 0xfffe) format = fmt.readUInt16LE(24);
  const width = bits / 8, frames = Math.floor(data.length / (width * channels));
  if (frames === 0) throw new Error("no audio samples");
  const read = {
    "1:8": (o) => (data.readUInt8(o) - 128) / 128, "1:16": (o) => data.readInt16LE(o) / 32768,
    "1:24": (o) => data.readIntLE(o, 3) / 8388608, "1:32": (o) => data.readInt32LE(o) / 2147483648,
    "3:32": (o) => data.readFloatLE(o), "3:64": (o) => data.readDoubleLE(o),
  }[`${format}:${bits}`];
  if (!read) throw new Error(`unsupported WAV encoding (format ${format}, ${bits} bits)`);
  const mono = new Float32Array(frames);
  const ch = new Float32Array(channels);
  for (let t = 0; t < frames; t++) {
    for (let c = 0; c < channels; c++) {
      let v = Math.fround(read((t * channels + c) * width));
      if (Number.isNaN(v)) v = 0; else if (v === Infinity) v = 1; else if (v === -Infinity) v = -1;
      ch[c] = v;
    }
    if (channels === 1) mono[t] = ch[0];
    else { let s = 0; for (let c = 0; c < channels; c++) s = Math.fround(s + ch[c]); mono[t] = Math.fround(s / channels); }
  }
  return { rate, wave: mono };
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
  const [frontend, audioEnc, textEnc, heads, decision] = await Promise.all(
    ["frontend", "audio_encoder", "text_encoder", "heads", decisionName].map(open));
  const tokenize = makeTokenizer(path.join(args.bundle, manifest.text.tokenizer_file), portable.caller_text);
  const classWords = new Set(portable.caller_text.masked_text.class_words);
  const strip = portable.caller_text.masked_text.strip_chars;
  const rate = portable.caller_audio.sample_rate_hz;
  const clips = readPackage(args.evalDir);
  const lines = ["id,predicted_bst_second_level_class,prediction_score"];
  const started = Date.now();
  for (let s = 0; s < clips.length; s += args.batchSize) {
    const batch = clips.slice(s, s + args.batchSize);
    const n = batch.length;
    const mels = [];
    for (const clip of batch) {
      let mel = null;
      try {
        if (fs.existsSync(clip.audio)) {
          const { rate: r, wave } = decodeWav(clip.audio);
          if (r !== rate) throw new Error(`sample rate ${r} Hz; this client needs ${rate} Hz (resample first)`);
          mel = await frontend.run({ waveform: new ort.Tensor("float32", wave, [wave.length]),
                                     length: new ort.Tensor("int64", BigInt64Array.from([BigInt(wave.length)]), []) });
        }
      } catch (err) {
        process.stderr.write(`warning: ${clip.audio}: ${err.message}; text-only fallback\n`);
      }
      mels.push(mel);
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
}

main().catch((err) => fail(err.message));
