// Build the static page into dist/: one ES-module bundle (esbuild) + onnxruntime-web's WASM files, nothing from a CDN.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, "dist");
fs.rmSync(dist, { recursive: true, force: true });
fs.mkdirSync(dist);
await esbuild.build({
  entryPoints: [path.join(here, "src", "main.mjs")], bundle: true, format: "esm", outfile: path.join(dist, "main.js"),
  minify: true, sourcemap: true, target: "es2022", logLevel: "warning",
  // the Node client's node_modules must not shadow ours when a shared module (../node/text.mjs) is bundled
  nodePaths: [path.join(here, "node_modules")],
});
const ortDist = path.join(here, "node_modules", "onnxruntime-web", "dist");
for (const f of ["ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"]) fs.copyFileSync(path.join(ortDist, f), path.join(dist, f));
for (const f of ["index.html", "style.css"]) fs.copyFileSync(path.join(here, f), path.join(dist, f));
const size = fs.readdirSync(dist).reduce((n, f) => n + fs.statSync(path.join(dist, f)).size, 0);
console.log(`clients/web/dist: ${fs.readdirSync(dist).length} files, ${(size / 1e6).toFixed(1)} MB`);
