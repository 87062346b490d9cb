#!/usr/bin/env bash
# Builds the web demo page into web-demo/dist/ (esbuild bundle of SIP.js and
# the page's script; index.html, style.css, favicon copied). Runs after
# setup.sh's `npm ci`; does nothing when dist/ is newer than every source.
set -euo pipefail
cd "$(dirname "$0")/../../web-demo"

stamp=dist/app.js
if [ ! -d node_modules/esbuild ]; then
  echo "[setup] web-demo: node_modules missing (npm ci did not run?)" >&2
  exit 1
fi
if [ -f "$stamp" ] && [ -f dist/index.html ] && [ -f dist/style.css ] &&
   [ -z "$(find src build.mjs package-lock.json -newer "$stamp" -print -quit)" ]; then
  echo "[setup] web-demo: dist/ up to date"
  exit 0
fi
node build.mjs
touch "$stamp"
