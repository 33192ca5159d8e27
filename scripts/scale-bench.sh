#!/usr/bin/env bash
# Many workloads on one host (make bench): N copies of policies/nginx.yaml, each on its own
# simulated Deployment (the shipped model, all six plugins), under
# `host run --simulate --speed 3600 --for 2h --quiet`, as a new user would try it. Prints, per
# N, the ticks, the host's CPU time (user + system, from GNU time) per workload-tick and its
# peak RSS. Arguments: N[:DURATION] each (default 1000:2h 10000:20m).
set -euo pipefail
HOST=$(realpath "${HOST:-./target/release/host}")
. "$(dirname "$0")/nginx-copies.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

for arg in ${@:-1000:2h 10000:20m}; do
  count=${arg%%:*}
  FOR=2h
  [ "$arg" != "$count" ] && FOR=${arg#*:}
  # The copies keep nginx.yaml's audit path (../var/nginx-audit.jsonl), as a user's copies
  # would: one audit log and one guard-state file for all of them.
  rm -rf "$dir/policies" "$dir/var"
  mkdir -p "$dir/policies" "$dir/var"
  nginx_copies "$count" "$dir/policies"
  out=$(/usr/bin/time -f '%U %S %M' "$HOST" run --simulate --speed 3600 --for "$FOR" --quiet --policy "$dir/policies" 2>"$dir/time" | grep '^augur: [0-9]* ticks' || true)
  read -r user sys rss_kib < <(tail -1 "$dir/time")
  ticks=$(echo "$out" | awk '{print $2}')
  if [ -z "$ticks" ] || [ "$ticks" = 0 ]; then
    echo "scale bench: host run with $count workloads did not finish:" >&2
    tail -20 "$dir/time" >&2
    exit 1
  fi
  awk -v f="$FOR" -v n="$count" -v t="$ticks" -v u="$user" -v s="$sys" -v m="$rss_kib" 'BEGIN {
    printf "scale bench: %d workloads, %d ticks (" f "): CPU %.1f s (user %.1f, system %.1f), %.1f us per workload-tick; peak RSS %.1f MiB\n",
      n, t, u + s, u, s, (u + s) * 1e6 / (n * t), m / 1024 }'
done
