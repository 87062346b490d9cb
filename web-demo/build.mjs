// Builds the page into dist/: app.js (SIP.js bundled by esbuild), index.html
// and style.css copied. No network, no CDN: everything comes from
// node_modules. Usage: node build.mjs
import { build } from "esbuild";
import { copyFile, mkdir, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const sipjs = JSON.parse(await readFile(join(here, "node_modules/sip.js/package.json"), "utf8"));

await mkdir(dist, { recursive: true });
await build({
  entryPoints: [join(here, "src/app.js")],
  outfile: join(dist, "app.js"),
  bundle: true,
  format: "esm",
  target: ["chrome100", "firefox100", "safari15"],
  minify: true,
  sourcemap: "linked",
  legalComments: "eof",
  define: { __SIPJS_VERSION__: JSON.stringify(sipjs.version) },
  logLevel: "warning",
});
for (const f of ["index.html", "style.css", "favicon.svg"]) {
  await copyFile(join(here, "src", f), join(dist, f));
}
console.log(`web-demo: built ${dist} (SIP.js ${sipjs.version})`);
