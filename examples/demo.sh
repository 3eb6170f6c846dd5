#!/bin/sh
# examples/demo.sh — `make demo`: generate one image into out/. With no
# OMIXA_API_KEY, a local stand-in service is started for the run and stopped
# afterwards, so the demo never needs the network or costs anything.
set -eu
cd "$(dirname "$0")/.."
LUA=${LUA:-lua5.4}
export LUA_PATH="./lua/?.lua;./lua/?/init.lua;;"

stop=
if [ -z "${OMIXA_API_KEY:-}" ]; then
  state=$(mktemp -d)
  "$LUA" bin/omixa serve --daemon --port 0 --dir "$state" >"$state/launch.out" ||
    { cat "$state/launch.out" >&2; exit 1; }
  OMIXA_BASE_URL=$(head -n 1 "$state/launch.out")
  export OMIXA_BASE_URL
  echo "no OMIXA_API_KEY: using the local stand-in at $OMIXA_BASE_URL" >&2
  stop="$state"
  trap '"$LUA" bin/omixa serve --stop "$stop" >/dev/null 2>&1; rm -rf "$stop"' EXIT
fi
"$LUA" examples/generate.lua "${PROMPT:-a lighthouse at dusk, watercolor}" "${OUT:-out/lighthouse.png}"
