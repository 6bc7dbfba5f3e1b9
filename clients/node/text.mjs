// Text helpers of the portable contract (docs/portable.md, manifest portable.caller_text).
// ---- text: the manifest's template, mask rule and tokenizer (caller_text) -----------------------------------------
const WS = /\s+/gu;
const clean = (v) => { const s = v == null ? "" : String(v); return s.toLowerCase() === "nan" ? "" : s.replace(WS, " ").trim(); };
const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0" };
export function stripHtml(text) {
  const noTags = text.replace(/<!--[\s\S]*?-->/g, "")
    .replace(/<\s*(br|p|div|li|tr)\b[^>]*>/gi, " ")
    .replace(/<\/?[a-zA-Z][^>]*>/g, "");
  const decoded = noTags.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);/g, (m, e) => {
    if (e[0] === "#") { const n = e[1] === "x" || e[1] === "X" ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10); return String.fromCodePoint(n); }
    return ENTITIES[e] ?? m;
  });
  return decoded.replace(WS, " ").trim();
}
export function metadataText(title, tags, description) {
  return [clean(title), clean(clean(tags).replaceAll(",", " ")), stripHtml(clean(description))].filter((p) => p).join(". ");
}
export function maskClassWords(text, words, strip) {
  const strip_ = (w) => { let a = 0, b = w.length; while (a < b && strip.includes(w[a])) a++; while (b > a && strip.includes(w[b - 1])) b--; return w.slice(a, b); };
  const kept = text.split(" ").filter((tok) => !words.has(strip_(tok.toLowerCase())));
  return kept.join(" ").replace(WS, " ").trim();
}

