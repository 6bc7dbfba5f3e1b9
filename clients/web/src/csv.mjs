// CSV in and out, no Node-only API: the sidecar reader (as `bst-rt classify --sidecar`) and the `--csv` writer.
import { AUDIO_SUFFIXES } from "../../node/decode.mjs";  // the Python runtime's suffixes: one list, the decoder's

export { AUDIO_SUFFIXES };

/** RFC 4180 rows: quoted fields, doubled quotes, newlines inside quotes; a UTF-8 BOM is dropped. */
export function parseCsv(text) {
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

export const SIDECAR_ID_COLUMNS = ["id", "file", "filename", "anonymous_id", "sound_id"];

export function suffixOf(name) {
  const base = name.split("/").pop();
  const dot = base.lastIndexOf(".");
  return dot > 0 ? base.slice(dot).toLowerCase() : "";
}

/** A file's id: its name without the suffix (as `bst-rt classify`). */
export function stemOf(name) {
  const base = name.split("/").pop();
  const dot = base.lastIndexOf(".");
  return dot > 0 ? base.slice(0, dot) : base;
}

/** id -> {title, tags, description}; an id column is required, a file name's audio suffix is dropped. */
export function readSidecar(text, name = "sidecar.csv") {
  const rows = parseCsv(text);
  const header = rows[0] || [];
  const idCol = SIDECAR_ID_COLUMNS.find((c) => header.includes(c));
  if (!idCol) throw new Error(`${name}: no id column (one of ${SIDECAR_ID_COLUMNS.join(", ")}); found ${header.join(", ")}`);
  const at = (r, c) => (header.includes(c) ? r[header.indexOf(c)] ?? "" : "");
  const out = new Map();
  rows.slice(1).forEach((r, k) => {
    const raw = at(r, idCol).trim();
    const key = AUDIO_SUFFIXES.includes(suffixOf(raw)) ? stemOf(raw) : raw;
    if (out.has(key)) throw new Error(`${name}: row ${k + 1}: id ${JSON.stringify(key)} given twice`);
    out.set(key, { title: at(r, "title"), tags: at(r, "tags"), description: at(r, "description") });
  });
  return out;
}

export const CSV_COLUMNS = ["file", "id", "label", "class_name", "parent", "parent_name", "score", "top_3", "fallback"];

function quote(v) {
  const s = String(v ?? "");
  return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** The `bst-rt classify --csv` table of result rows (score 6 decimals, top_3 as "code:0.1234 ..."). */
export function toCsv(rows) {
  const lines = [CSV_COLUMNS.join(",")];
  for (const r of rows) {
    const top = r.top.slice(0, 3).map((t) => `${t.code}:${t.probability.toFixed(4)}`).join(" ");
    lines.push([r.file, r.id, r.label, r.class_name, r.parent, r.parent_name, r.score.toFixed(6), top, r.fallback || ""]
      .map(quote).join(","));
  }
  return lines.join("\n") + "\n";
}
