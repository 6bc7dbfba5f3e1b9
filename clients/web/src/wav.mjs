// WAV decoding without Node-only API (DataView over the file's bytes): PCM 8/16/24/32-bit and IEEE float 32/64
// (also WAVE_FORMAT_EXTENSIBLE), scaled as libsndfile scales them; mono = the float32 mean over channels.

/** Interim (until the shared clients/node/decode.mjs lands): the same interface, `{sampleRate, wave}`, WAV only. */
export async function decodeAudio(bytes, name = "audio") {
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (buf.length === 0) throw new Error("file is empty (0 bytes)");
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const tag = (o) => String.fromCharCode(buf[o], buf[o + 1], buf[o + 2], buf[o + 3]);
  if (buf.length < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("not a RIFF/WAVE file");
  let fmt = null, data = null;
  for (let off = 12; off + 8 <= buf.length;) {
    const id = tag(off), size = dv.getUint32(off + 4, true);
    const start = off + 8, end = Math.min(buf.length, start + size);
    if (id === "fmt ") fmt = [start, end];
    else if (id === "data") data = [start, end];
    off = start + size + (size % 2);
  }
  if (!fmt || !data) throw new Error("no fmt or data chunk");
  const f0 = fmt[0];
  let format = dv.getUint16(f0, true);
  const channels = dv.getUint16(f0 + 2, true), rate = dv.getUint32(f0 + 4, true), bits = dv.getUint16(f0 + 14, true);
  if (format === 0xfffe) format = dv.getUint16(f0 + 24, true);
  const width = bits / 8, frames = Math.floor((data[1] - data[0]) / (width * channels));
  if (!channels || frames === 0) throw new Error("no audio samples");
  const d0 = data[0];
  const read = {
    "1:8": (o) => (dv.getUint8(o) - 128) / 128, "1:16": (o) => dv.getInt16(o, true) / 32768,
    "1:24": (o) => (((dv.getUint8(o + 2) << 24) | (dv.getUint8(o + 1) << 16) | (dv.getUint8(o) << 8)) >> 8) / 8388608,
    "1:32": (o) => dv.getInt32(o, true) / 2147483648,
    "3:32": (o) => dv.getFloat32(o, true), "3:64": (o) => dv.getFloat64(o, true),
  }[`${format}:${bits}`];
  if (!read) throw new Error(`unsupported WAV encoding (format ${format}, ${bits} bits)`);
  const mono = new Float32Array(frames);
  for (let t = 0; t < frames; t++) {
    let s = 0;
    for (let c = 0; c < channels; c++) {
      let v = Math.fround(read(d0 + (t * channels + c) * width));
      if (Number.isNaN(v)) v = 0; else if (v === Infinity) v = 1; else if (v === -Infinity) v = -1;
      s = channels === 1 ? v : Math.fround(s + v);
    }
    mono[t] = channels === 1 ? s : Math.fround(s / channels);
  }
  return { sampleRate: rate, wave: mono };
}
