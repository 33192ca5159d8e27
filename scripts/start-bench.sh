#!/usr/bin/env bash
# Cold start to the first decision (make bench): `host run --simulate` on N copies of
# policies/nginx.yaml (the shipped model, all six plugins, the warm start as always), timed from
# the process' start to its first decision line on stdout: once with an empty compile cache
# (every plugin compiled) and once with the cache the first run filled (nothing compiled).
# Arguments: N each (default 1 1000).
set -euo pipefail
HOST=$(realpath "${HOST:-./target/release/host}")
. "$(dirname "$0")/nginx-copies.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

for count in ${@:-1 1000}; do
  rm -rf "$dir/policies" "$dir/var" "$dir/cache"
  mkdir -p "$dir/policies" "$dir/var"
  nginx_copies "$count" "$dir/policies"
  for cache in empty filled; do
    RUST_LOG=augur=info AUGUR_COMPILE_CACHE="$dir/cache" python3 - "$HOST" "$dir/policies" "$count" "$cache" <<'PY'
import subprocess, sys, tempfile, time
host, policies, count, cache = sys.argv[1:]
log = tempfile.TemporaryFile(mode="w+")
start = time.monotonic()
run = subprocess.Popen([host, "run", "--simulate", "--speed", "3600", "--for", "1m", "--policy", policies],
                       stdout=subprocess.PIPE, stderr=log, text=True)
first = run.stdout.readline()
took = time.monotonic() - start
run.kill()
run.wait()
log.seek(0)
err = log.read()
if not first:
    sys.exit(f"start bench: host run with {count} workloads printed no decision:\n{err[-2000:]}")
said = next((l.split("plugins: ", 1)[1] for l in err.splitlines() if "plugins: " in l and "compiled" in l), "")
print(f"start bench: {count} workloads, compile cache {cache}: first decision after {took:.2f} s ({said.strip()[:120]})")
PY
  done
done
