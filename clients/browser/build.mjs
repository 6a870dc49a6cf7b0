// Bundles app.js (+ hydrogen-view-sdk and its deps) into dist/ and copies the static assets
// the app loads at runtime (theme CSS, fonts, icons, olm). Output: dist/ (git-ignored).
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync, copyFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "olm"), { recursive: true });

// hydrogen.es.js has a side-effect `import "@matrix-org/olm/olm.js"` meant for its vite build;
// at runtime Hydrogen loads olm itself with a <script> tag from assetPaths.olm, so the
// import is replaced by an empty module here.
const emptyOlmImport = {
  name: "empty-olm-import",
  setup(b) {
    b.onResolve({ filter: /^@matrix-org\/olm\/olm\.js$/ }, () => ({ path: "olm-stub", namespace: "stub" }));
    b.onLoad({ filter: /.*/, namespace: "stub" }, () => ({ contents: "", loader: "js" }));
  },
};

await build({
  entryPoints: [join(here, "app.js")],
  outfile: join(dist, "app.bundle.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2020",
  logLevel: "warning",
  plugins: [emptyOlmImport],
});
copyFileSync(join(here, "index.html"), join(dist, "index.html"));
cpSync(join(here, "node_modules/hydrogen-view-sdk/asset-build/assets"), join(dist, "assets"), { recursive: true });
copyFileSync(join(here, "node_modules/hydrogen-view-sdk/lib-build/sw.js"), join(dist, "sw.js"));
for (const f of ["olm.js", "olm.wasm", "olm_legacy.js"]) {
  copyFileSync(join(here, "node_modules/@matrix-org/olm", f), join(dist, "olm", f));
}
console.log("built", dist);
