// Decode one audio file's bytes to mono float32 samples at the file's own rate: the caller's only audio step in
// the portable contract (docs/portable.md, manifest portable.caller_audio); the bundle's `resample` graph does the
// rest. This module takes bytes (Uint8Array) and a file name and uses no Node-only API (no fs, no Buffer), because
// the browser client (clients/web, issue 23) imports this same module: keep it that way.
//
// Decoders are well-kept npm packages, none hand-written: wavefile (WAV: 8/16/24/32-bit PCM, 32/64-bit float,
// WAVE_FORMAT_EXTENSIBLE, any rate and channel count), @wasm-audio-decoders/flac, mpg123-decoder (MP3),
// @wasm-audio-decoders/ogg-vorbis and @audio/decode-aiff (AIFF and AIFF-C, pure JavaScript). The container is recognised from the bytes, as libsndfile does (an Ogg file
// under a .wav name still decodes); the name only appears in messages. Samples are scaled as libsndfile scales them
// (integer PCM: s / 2^(bits-1), 8-bit unsigned: (s - 128) / 128), NaN -> 0, +-inf -> +-1, and mixed to mono as the
// mean over channels in float32 (sequential sum, then one division, as numpy's mean over a few channels).
import * as wavefilePkg from "wavefile";
import { FLACDecoder } from "@wasm-audio-decoders/flac";
import { MPEGDecoder } from "mpg123-decoder";
import { OggVorbisDecoder } from "@wasm-audio-decoders/ogg-vorbis";
import decodeAiffBytes from "@audio/decode-aiff";

// Node loads wavefile's CommonJS build (its exports under `default`), a bundler its ES module (named exports)
const { WaveFile } = wavefilePkg.WaveFile ? wavefilePkg : wavefilePkg.default;

/** Suffixes the Python runtime accepts (bst_rt.runtime.datasets.AUDIO_SUFFIXES). */
export const AUDIO_SUFFIXES = [".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"];

const ascii = (bytes, start, end) => String.fromCharCode(...bytes.subarray(start, end));

/** The container of `bytes`, from its first bytes: "wav" | "flac" | "ogg" | "mp3" | "aiff" | null. */
export function sniff(bytes) {
  if (bytes.length < 4) return null;
  const magic = ascii(bytes, 0, 4);
  if ((magic === "RIFF" || magic === "RF64") && bytes.length >= 12 && ascii(bytes, 8, 12) === "WAVE") return "wav";
  if (magic === "fLaC") return "flac";
  if (magic === "OggS") return "ogg";
  if (magic === "FORM") return "aiff";
  if (magic.startsWith("ID3") || (bytes[0] === 0xff && (bytes[1] & 0xe0) === 0xe0)) return "mp3";
  return null;
}

function cleanSample(v) {
  if (Number.isNaN(v)) return 0;
  if (v === Infinity) return 1;
  if (v === -Infinity) return -1;
  return v;
}

/** Channel arrays (Float32Array each, already in [-1, 1] scale) -> mono Float32Array. */
export function mixToMono(channels) {
  const n = channels.length ? channels[0].length : 0;
  const out = new Float32Array(n);
  if (channels.length === 1) {
    for (let t = 0; t < n; t++) out[t] = cleanSample(channels[0][t]);
    return out;
  }
  const k = channels.length;
  for (let t = 0; t < n; t++) {
    let s = 0;
    for (let c = 0; c < k; c++) s = Math.fround(s + cleanSample(channels[c][t]));
    out[t] = Math.fround(s / k);
  }
  return out;
}

function decodeWav(bytes) {
  const wav = new WaveFile();
  wav.fromBuffer(bytes);
  const fmt = wav.fmt;
  const format = fmt.audioFormat === 65534 ? parseInt(String(fmt.subformat?.[0] ?? 1), 10) || 1 : fmt.audioFormat;
  const bits = Number(wav.bitDepth === "32f" || wav.bitDepth === "64" ? (wav.bitDepth === "64" ? 64 : 32) : fmt.bitsPerSample);
  const isFloat = format === 3 || wav.bitDepth === "32f" || wav.bitDepth === "64";
  if (!isFloat && ![8, 16, 24, 32].includes(bits)) throw new Error(`unsupported WAV encoding (format ${format}, ${bits} bits)`);
  let raw = wav.getSamples(false, Float64Array);
  if (fmt.numChannels === 1 || !Array.isArray(raw)) raw = [raw];
  const scale = isFloat ? 1 : 2 ** (bits - 1);
  const offset = !isFloat && bits === 8 ? 128 : 0;
  const channels = raw.map((ch) => {
    const out = new Float32Array(ch.length);
    for (let i = 0; i < ch.length; i++) out[i] = (ch[i] - offset) / scale;
    return out;
  });
  return { sampleRate: fmt.sampleRate, channels };
}

// The FLAC decoder returns float32(s / (2^(bits-1) - 1)); libsndfile reads s / 2^(bits-1). The integer is recovered
// exactly (the float error is far below half a step) and rescaled, so FLAC gives libsndfile's samples bit for bit.
function flacScale(decoded) {
  const bits = decoded.bitDepth;
  if (!Number.isInteger(bits) || bits < 2 || bits > 32) return decoded;
  const down = 2 ** (bits - 1) - 1, up = 2 ** (bits - 1);
  const channels = decoded.channels.map((ch) => {
    const out = new Float32Array(ch.length);
    for (let i = 0; i < ch.length; i++) out[i] = Math.round(ch[i] * down) / up;
    return out;
  });
  return { ...decoded, channels };
}

// The sample size and compression of an AIFF / AIFF-C file, from its COMM chunk (null if there is none).
function aiffFormat(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const aifc = bytes.length >= 12 && ascii(bytes, 8, 12) === "AIFC";
  for (let pos = 12; pos + 8 <= bytes.length;) {
    const size = view.getUint32(pos + 4, false);
    if (ascii(bytes, pos, pos + 4) === "COMM" && pos + 16 <= bytes.length) {
      const comp = aifc && size >= 22 && pos + 30 <= bytes.length ? ascii(bytes, pos + 26, pos + 30) : "NONE";
      return { bits: view.getUint16(pos + 14, false), comp };
    }
    pos += 8 + size + (size & 1);
  }
  return null;
}

// @audio/decode-aiff 1.3.0 reads 8-bit AIFF PCM as unsigned, (b - 128) / 128; AIFF stores it signed and libsndfile
// reads b / 128 with b two's complement. The byte is recovered exactly (a multiple of 1/128) and read signed, so
// 8-bit AIFF gives libsndfile's samples bit for bit too.
function aiffSigned8(decoded, bytes) {
  const format = aiffFormat(bytes);
  if (!format || format.bits !== 8 || !["NONE", "twos"].includes(format.comp)) return decoded;
  const channels = decoded.channels.map((ch) => ch.map((v) => (v < 0 ? v + 1 : v - 1)));
  return { ...decoded, channels };
}

function decodeAiff(bytes) {
  const r = decodeAiffBytes(bytes);
  return aiffSigned8({ sampleRate: r.sampleRate, channels: r.channelData }, bytes);
}

async function runDecoder(Decoder, bytes) {
  const decoder = new Decoder();
  await decoder.ready;
  try {
    const r = decoder.decodeFile ? await decoder.decodeFile(bytes) : await decoder.decode(bytes);
    return { sampleRate: r.sampleRate, channels: r.channelData, bitDepth: r.bitDepth, errors: r.errors || [] };
  } finally {
    decoder.free();
  }
}

/**
 * Decode `bytes` (the whole file) to `{ sampleRate, wave }` (mono Float32Array at the file's own rate).
 * Throws an Error with a one-line message for an empty or undecodable file; the caller falls back to text-only.
 */
export async function decodeAudio(bytes, name = "audio") {
  if (!(bytes instanceof Uint8Array)) throw new Error(`${name}: expected the file's bytes as a Uint8Array`);
  if (bytes.length === 0) throw new Error("file is empty (0 bytes)");
  const kind = sniff(bytes);
  let decoded;
  if (kind === "wav") decoded = decodeWav(bytes);
  else if (kind === "flac") decoded = flacScale(await runDecoder(FLACDecoder, bytes));
  else if (kind === "mp3") decoded = await runDecoder(MPEGDecoder, bytes);
  else if (kind === "ogg") decoded = await runDecoder(OggVorbisDecoder, bytes);
  else if (kind === "aiff") decoded = decodeAiff(bytes);
  else throw new Error("not a WAV, FLAC, MP3, Ogg Vorbis or AIFF file");
  const { sampleRate, channels } = decoded;
  if (!channels || channels.length === 0 || channels[0].length === 0) throw new Error("no audio samples");
  if (!Number.isInteger(sampleRate) || sampleRate < 1000 || sampleRate > 768000) {
    throw new Error(`sample rate ${sampleRate} Hz is outside the supported 1000-768000 Hz`);
  }
  return { sampleRate, wave: mixToMono(channels) };
}
