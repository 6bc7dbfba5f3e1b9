// Drive the page in the system Chromium (playwright-core, never a downloaded browser): open URL, wait for the bundle,
// optionally pick a system / precision, hand it files as a drop would, wait for the table and print what the page
// did (rows, load and per-clip times, or its refusal) as one JSON object on stdout.
//
//   node test/drive.mjs URL [--files F ...] [--system N] [--precision int8|fp32] [--download CSV] [--screenshot PNG]
//                           [--timeout S]
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const CHROMIUM = process.env.BST_CHROMIUM || "/usr/bin/chromium";
// without the background-networking flags Chromium keeps trying hosts a closed network refuses
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"];

function args(argv) {
  const o = { url: argv[0], files: [], system: null, precision: null, screenshot: null, download: null, timeout: 600 };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--files") { while (argv[i + 1] && !argv[i + 1].startsWith("--")) o.files.push(argv[++i]); }
    else if (a === "--system") o.system = argv[++i];
    else if (a === "--precision") o.precision = argv[++i];
    else if (a === "--screenshot") o.screenshot = argv[++i];
    else if (a === "--download") o.download = argv[++i];
    else if (a === "--timeout") o.timeout = Number(argv[++i]);
    else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

const o = args(process.argv.slice(2));
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "bst-web-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1280, height: 900 },
});
const t0 = Date.now();
const log = [];
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => log.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
  await page.goto(o.url);
  const ms = o.timeout * 1000;
  const settled = () => page.waitForFunction(() => window.bst && (window.bst.ready || window.bst.refused), null, { timeout: ms });
  await settled();
  for (const [id, value] of [["system", o.system], ["precision", o.precision]]) {
    if (value && !(await page.evaluate(() => window.bst.refused)) && (await page.inputValue(`#${id}`)) !== value) {
      await page.selectOption(`#${id}`, value);
      await page.waitForFunction(() => !window.bst.ready || window.bst.refused, null, { timeout: 5000 }).catch(() => {});
      await settled();
    }
  }
  const refused = await page.evaluate(() => window.bst.refused);
  if (!refused && o.files.length) {
    await page.setInputFiles("#files", o.files);
    const audio = o.files.filter((f) => !f.toLowerCase().endsWith(".csv")).length;
    await page.waitForFunction((n) => window.bst.rows.length === n && !window.bst.busy, audio, { timeout: ms });
  }
  if (o.download && !refused) {
    const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#download")]);
    await dl.saveAs(o.download);
  }
  if (o.screenshot) await page.screenshot({ path: o.screenshot, fullPage: true });
  const result = await page.evaluate(() => ({
    refused: window.bst.refused, rows: window.bst.rows, timings: window.bst.timings,
    status: document.getElementById("status").textContent, isolated: self.crossOriginIsolated,
    precisions: [...document.querySelectorAll("#precision option")].map((x) => x.textContent),
    userAgent: navigator.userAgent, threads: navigator.hardwareConcurrency,
  }));
  process.stdout.write(JSON.stringify({ ...result, wallMs: Date.now() - t0, log }) + "\n");
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
