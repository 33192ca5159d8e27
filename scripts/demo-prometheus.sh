#!/usr/bin/env bash
# The simulator -> Prometheus -> Augur -> simulator loop on one machine: a real Prometheus
# (Debian's package) on 127.0.0.1:9090 scrapes the simulated cluster (127.0.0.1:9101) and
# Augur's own /metrics (127.0.0.1:9464); Augur reads the prototype's PromQL back from it and
# acts on the simulation. Runs in real time (Prometheus' clock) until Ctrl-C; open
# http://127.0.0.1:9090 to query augur_* and the simulated series.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d -t augur-demo-XXXXXX)
cat >"$dir/prometheus.yml" <<CFG
global:
  scrape_interval: 5s
scrape_configs:
  - job_name: simulator
    static_configs: [{ targets: ['127.0.0.1:9101'] }]
  - job_name: augur
    static_configs: [{ targets: ['127.0.0.1:9464'] }]
CFG
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
  --web.listen-address=127.0.0.1:9090 >"$dir/prometheus.log" 2>&1 &
prom=$!
trap 'kill $prom 2>/dev/null; wait $prom 2>/dev/null; rm -rf "$dir"' EXIT
until curl -sf http://127.0.0.1:9090/-/ready >/dev/null; do sleep 0.2; done
echo "Prometheus on http://127.0.0.1:9090 (log: $dir/prometheus.log)"
"$root/target/release/host" run --policy "$root/policies/sim-prometheus.yaml" --simulate --speed 1 \
  --expose-sim 127.0.0.1:9101 --sim-via-prometheus --metrics-addr 127.0.0.1:9464 "$@"
