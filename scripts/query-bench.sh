#!/usr/bin/env bash
# Queries per tick against a real Prometheus (make bench): N copies of policies/nginx.yaml, each
# on its own simulated Deployment with its own PromQL (its pods, its Deployment), read through
# Prometheus (Debian's package), which scrapes the simulated cluster (`--expose-sim`), as a
# user's cluster would be scraped. Prints, per N, the instant queries Prometheus answered per
# tick (from its own prometheus_http_requests_total) and what the reads cost it. Arguments: N
# each (default 1 100 1000). Runs at 4x real time for 8 simulated minutes (2 minutes each).
set -euo pipefail
HOST=$(realpath "${HOST:-./target/release/host}")
. "$(dirname "$0")/nginx-copies.sh"
dir=$(mktemp -d)
prom=
trap '[ -n "$prom" ] && kill $prom 2>/dev/null; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
answered() {
  curl -sf "http://127.0.0.1:$1/metrics" | awk -v h="handler=\"$2\"" '/^prometheus_http_requests_total\{/ && index($0, h) { n += $NF } END { print n + 0 }'
}

for count in ${@:-1 100 1000}; do
  sim=$(free_port)
  port=$(free_port)
  rm -rf "$dir/policies" "$dir/var" "$dir/data"
  mkdir -p "$dir/policies" "$dir/var"
  cat >"$dir/prometheus.yml" <<CFG
global:
  scrape_interval: 2s
scrape_configs:
  - job_name: simulator
    static_configs: [{ targets: ['127.0.0.1:$sim'] }]
CFG
  prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" --web.listen-address="127.0.0.1:$port" >"$dir/prometheus.log" 2>&1 &
  prom=$!
  until curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null; do sleep 0.2; done
  nginx_copies "$count" "$dir/policies" \
    -e "s/^interval: 15s$/interval: 15s\nsource: { kind: prometheus, url: \"http:\/\/127.0.0.1:$port\" }/" \
    -e 's/pod=~"nginx-\.\*"/pod=~"nginx-$i-.*"/g' -e 's/deployment="nginx"/deployment="nginx-$i"/'
  before=$(answered "$port" /api/v1/query)
  ranges=$(answered "$port" /api/v1/query_range)
  out=$(RUST_LOG=${RUST_LOG:-warn} "$HOST" run --simulate --speed 4 --for 8m --quiet --expose-sim "127.0.0.1:$sim" --sim-via-prometheus --policy "$dir/policies" 2>"$dir/host.log" | grep '^augur: [0-9]* ticks' || true)
  after=$(answered "$port" /api/v1/query)
  ranges=$(( $(answered "$port" /api/v1/query_range) - ranges ))
  ticks=$(echo "$out" | awk '{print $2}')
  if [ -z "$ticks" ] || [ "$ticks" = 0 ]; then
    echo "query bench: host run with $count workloads did not finish:" >&2
    tail -20 "$dir/host.log" >&2
    exit 1
  fi
  # The warm start's range queries, once at start, are counted apart.
  awk -v n="$count" -v t="$ticks" -v q="$((after - before))" -v r="$ranges" 'BEGIN {
    printf "query bench: %d workloads, %d ticks: %d instant queries, %.1f per tick (%.3f per workload-tick); the warm start: %d range queries\n", n, t, q, q / t, q / (n * t), r }'
  echo "query bench: $(grep -c 'stale\|failed' "$dir/host.log" || true) lines of the host's log say stale or failed"
  [ -n "${KEEP_LOG:-}" ] && cp "$dir/host.log" "$KEEP_LOG.$count"
  kill $prom; wait $prom 2>/dev/null || true
  prom=
done
