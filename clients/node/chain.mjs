// The portable chain (docs/portable.md), THE one JavaScript copy: the Node client (predict.mjs) and the browser page
// (clients/web) both run it. No Node-only or DOM-only API (tests/test_portable_audio.py checks): the caller hands in
// the onnxruntime module (onnxruntime-node or onnxruntime-web), a reader of bundle files and the manifest. One clip
// per graph call: a clip's label depends on that clip and the bundle only, and the bundle's int8 encoders are built
// for one item per call.
import { Tokenizer } from "@huggingface/tokenizers";
import { maskClassWords, metadataText } from "./text.mjs";

/** Contracts this chain runs: v2 (schema 1.2+) starts with the `resample` graph, fed the file's own rate. */
export const CONTRACTS = ["bst-portable-v2"];
export const TOP_K = 5;
const DIM = 512;

/** A defect of the whole bundle: the client shows its message on one line and classifies nothing. */
export class BundleRefused extends Error {}

/** The manifest's graph for `name`, its int8 variant when asked and present (as the Python runtime's Bundle.graph). */
export function graphSpec(manifest, name, int8) {
  const spec = (int8 && manifest.graphs[`${name}_int8`]) || manifest.graphs[name];
  if (!spec) throw new BundleRefused(`manifest.json: no graph ${JSON.stringify(name)} in this bundle`);
  return spec;
}

export function hasInt8(manifest) {
  return Object.values(manifest.graphs || {}).some((g) => g.precision === "int8");
}

/** The weights file(s) of a graph saved with external data (`<file>.data`, listed in `manifest.files`). */
export function externalFiles(manifest, spec) {
  return Object.values(manifest.files || {}).filter((f) => f.file === `${spec.file}.data`);
}

/** Bytes a choice downloads (from the manifest's recorded sizes): the graphs of one system at that precision, the
 *  tokenizer and the encoders' external weights. */
export function downloadBytes(manifest, system, int8) {
  const p = manifest.portable;
  const graphs = ["resample", "frontend", "heads", p.decision_graphs[system]]
    .map((n) => graphSpec(manifest, n, false))
    .concat(["audio_encoder", "text_encoder"].map((n) => graphSpec(manifest, n, int8)));
  const files = graphs.flatMap((g) => [g, ...externalFiles(manifest, g)]);
  const tok = Object.values(manifest.files || {}).find((f) => f.file === manifest.text.tokenizer_file);
  return files.concat(tok ? [tok] : []).reduce((n, f) => n + (f.size || 0), 0);
}

/** Refuse a manifest this client cannot run, in one line (contract, systems, graphs it names). */
export function checkManifest(manifest) {
  if (!manifest || typeof manifest !== "object" || !manifest.schema_version) {
    throw new BundleRefused("manifest.json: not a bst-rt bundle manifest (no schema_version)");
  }
  const p = manifest.portable;
  if (!p || !p.contract) throw new BundleRefused("manifest.json: no portable section (re-export the bundle with bst-train export)");
  if (!CONTRACTS.includes(p.contract)) {
    throw new BundleRefused(`manifest.json: portable contract ${p.contract}, this client runs ${CONTRACTS.join(" or ")}`);
  }
  for (const name of ["resample", "frontend", "audio_encoder", "text_encoder", "heads", ...Object.values(p.decision_graphs)]) {
    graphSpec(manifest, name, false);
  }
  return manifest;
}

export function systems(manifest) {
  return Object.keys(manifest.portable.decision_graphs).sort();
}

/** Hex sha256 of bytes (WebCrypto: in browsers on 127.0.0.1 and in Node 20 as globalThis.crypto). */
export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function checkHash(file, got, want) {
  if (got !== want) throw new BundleRefused(`${file}: sha256 ${got.slice(0, 12)}... is not the manifest's ${String(want).slice(0, 12)}... (tampered or incomplete bundle)`);
}

function makeTokenizer(json, spec, ort) {
  const tok = new Tokenizer(json, {});
  const padId = tok.token_to_id ? tok.token_to_id("<pad>") : undefined;
  const pad = BigInt(padId ?? 1);
  return (texts) => {
    const encs = texts.map((t) => {
      let ids = Array.from(tok.encode(Array.from(t).slice(0, spec.truncate_chars).join("")).ids, Number);
      if (ids.length > spec.max_tokens) ids = ids.slice(0, spec.max_tokens - 1).concat([ids[ids.length - 1]]);
      return ids;
    });
    const longest = Math.max(...encs.map((e) => e.length));
    const ids = new BigInt64Array(texts.length * longest).fill(pad);
    const mask = new BigInt64Array(texts.length * longest);
    encs.forEach((e, i) => e.forEach((v, j) => { ids[i * longest + j] = BigInt(v); mask[i * longest + j] = 1n; }));
    return { input_ids: new ort.Tensor("int64", ids, [texts.length, longest]),
             attention_mask: new ort.Tensor("int64", mask, [texts.length, longest]) };
  };
}

/**
 * The bundle's graphs, opened once per (graph, precision) and verified against the manifest's sha256 first.
 * `readFile(name)` resolves to a Uint8Array of a bundle file (the page fetches it, reporting progress). A caller
 * with a file system (Node) also passes `onDisk = { path(name), sha256(name) }`: the graphs are then hashed as
 * streams and onnxruntime opens them and their external weights from disk, so no copy of the 600 MB of encoder
 * weights is held in JavaScript as well.
 */
export class Chain {
  constructor(ort, manifest, readFile, { sessionOptions = {}, onStatus = () => {}, onDisk = null } = {}) {
    this.ort = ort;
    this.manifest = checkManifest(manifest);
    this.readFile = readFile;
    this.onDisk = onDisk;
    this.sessionOptions = { executionProviders: ["wasm"], ...sessionOptions };
    this.onStatus = onStatus;
    this.sessions = new Map();
    this.tokenizer = null;
    const ct = manifest.portable.caller_text;
    this.classWords = new Set(ct.masked_text.class_words);
    this.strip = ct.masked_text.strip_chars;
  }

  async verified(file, sha) {
    const bytes = await this.readFile(file);
    checkHash(file, await sha256Hex(bytes), sha);
    return bytes;
  }

  async session(name, int8 = false) {
    const spec = graphSpec(this.manifest, name, int8);
    if (!this.sessions.has(spec.file)) {
      this.sessions.set(spec.file, (async () => {
        this.onStatus(`loading ${spec.file}`);
        if (this.onDisk) {
          for (const f of [spec, ...externalFiles(this.manifest, spec)]) checkHash(f.file, await this.onDisk.sha256(f.file), f.sha256);
          return this.ort.InferenceSession.create(this.onDisk.path(spec.file), this.sessionOptions);
        }
        const bytes = await this.verified(spec.file, spec.sha256);
        const externalData = await Promise.all(externalFiles(this.manifest, spec).map(async (f) => (
          { path: f.file, data: await this.verified(f.file, f.sha256) })));
        return this.ort.InferenceSession.create(bytes, { ...this.sessionOptions, ...(externalData.length ? { externalData } : {}) });
      })());
    }
    return this.sessions.get(spec.file);
  }

  async tokenize(texts) {
    if (!this.tokenizer) {
      const file = this.manifest.text.tokenizer_file;
      const spec = this.manifest.files[file] || Object.values(this.manifest.files).find((f) => f.file === file);
      const bytes = spec ? await this.verified(file, spec.sha256) : await this.readFile(file);
      this.tokenizer = makeTokenizer(JSON.parse(new TextDecoder().decode(bytes)), this.manifest.portable.caller_text, this.ort);
    }
    return this.tokenizer(texts);
  }

  /** Open every graph a system needs (the page's load step; timed by the bench). */
  async load(system, int8) {
    const names = ["resample", "frontend", "audio_encoder", "text_encoder", "heads", this.manifest.portable.decision_graphs[system]];
    await Promise.all(names.map((n) => this.session(n, int8 && (n === "audio_encoder" || n === "text_encoder"))));
    await this.tokenize(["warm"]);
  }

  /**
   * One clip: `wave` (mono Float32Array at the file's own `sampleRate`) or null with `audioReason` (why not),
   * and its metadata. Returns label index and code, score, the top-5 of the distribution the decision came from
   * (the system's pool, or the fallback family's, as the Python runtime's Prediction.top_k) and the fallback reason.
   */
  async classify({ wave, sampleRate, audioReason = null, title = "", tags = "", description = "" }, system, int8) {
    const ort = this.ort, m = this.manifest;
    const haveAudio = !!(wave && wave.length > 0);
    const audio = new Float32Array(DIM);
    if (haveAudio) {
      wave = await this.to48k(wave, sampleRate);
      const frontend = await this.session("frontend");
      const mel = await frontend.run({ waveform: new ort.Tensor("float32", wave, [wave.length]),
                                       length: new ort.Tensor("int64", BigInt64Array.from([BigInt(wave.length)]), []) });
      const enc = await this.session("audio_encoder", int8);
      const out = await enc.run({ mel_fusion: mel.mel_fusion,
                                  longer: new ort.Tensor("bool", Uint8Array.from([mel.longer.data[0] ? 1 : 0]), [1]) });
      audio.set(out.audio_embedding.data.subarray(0, DIM));
    }
    const text = metadataText(title, tags, description);
    const textEmb = new Float32Array(DIM), masked = new Float32Array(DIM);
    if (text) {
      const enc = await this.session("text_encoder", int8);
      // one item per call (the int8 encoders' activation scales are per call): text, then its masked form
      textEmb.set((await enc.run(await this.tokenize([text]))).text_embedding.data.subarray(0, DIM));
      masked.set((await enc.run(await this.tokenize([maskClassWords(text, this.classWords, this.strip)]))).text_embedding.data.subarray(0, DIM));
    }
    const heads = await this.session("heads");
    const embeddings = { audio_embedding: audio, text_embedding: textEmb, masked_text_embedding: masked };
    const headFeeds = {};
    for (const name of heads.inputNames) headFeeds[name] = new ort.Tensor("float32", embeddings[name], [1, DIM]);
    const h = await heads.run(headFeeds);
    const decision = await this.session(m.portable.decision_graphs[system]);
    const all = {
      family_probs: h.family_probs, pool_probs: h.pool_probs,
      text_embedding: new ort.Tensor("float32", textEmb, [1, DIM]),
      audio_present: new ort.Tensor("bool", Uint8Array.from([haveAudio ? 1 : 0]), [1]),
      text_present: new ort.Tensor("bool", Uint8Array.from([text ? 1 : 0]), [1]),
    };
    const feeds = {};
    for (const name of decision.inputNames) feeds[name] = all[name];
    const d = await decision.run(feeds);
    const label = Number(d.label.data[0]);
    const fallback = !haveAudio ? (audioReason || "missing audio") : (!text ? "empty metadata" : null);
    const probs = this.distribution(h, system, haveAudio, !!text);
    return { label, code: m.classes[label], score: Math.min(1, Math.max(0, Number(d.score.data[0]))),
             top: topK(probs, m.classes, TOP_K), fallback };
  }

  /** The bundle's `resample` graph takes the file's own rate to the front end's 48 kHz (48 kHz passes through). */
  async to48k(wave, sampleRate) {
    const g = await this.session("resample");
    const out = await g.run({ waveform: new this.ort.Tensor("float32", wave, [wave.length]),
                              sample_rate: new this.ort.Tensor("int64", BigInt64Array.from([BigInt(sampleRate)]), []) });
    return out[g.outputNames[0]].data;
  }

  /** The 23-class distribution the decision started from: the system's pool row, or the fallback family's. */
  distribution(h, system, haveAudio, haveText) {
    const m = this.manifest, policy = m.systems[system], n = m.classes.length;
    if (haveAudio && haveText) {
      const p = m.heads.pools.indexOf(policy.pool);
      return h.pool_probs.data.subarray(p * n, (p + 1) * n);
    }
    const family = !haveAudio ? policy.fallback_audio_missing : policy.fallback_text_missing;
    const f = m.heads.families.indexOf(family);
    return h.family_probs.data.subarray(f * n, (f + 1) * n);
  }
}

/** The k most probable classes, ties in class order (numpy's stable argsort of -p). */
export function topK(probs, classes, k) {
  const order = Array.from(probs, (p, i) => i).sort((a, b) => (probs[b] - probs[a]) || (a - b));
  return order.slice(0, k).map((i) => ({ code: classes[i], probability: Number(probs[i]) }));
}
