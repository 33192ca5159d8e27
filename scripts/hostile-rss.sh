#!/usr/bin/env bash
# The host's peak memory through every hostile plugin case at once (make bench): one
# `host run --simulate` of a good policy beside a policy per misbehaviour of the hostile
# fixture (plugins/fixtures/hostile), an hour of simulated time at full speed. Prints the
# peak RSS (GNU time's maximum resident set size) and fails above 300 MiB.
set -euo pipefail
HOST=${HOST:-./target/release/host}
HOSTILE=$(realpath var/test-plugins/hostile.wasm)
DIST=$(realpath plugins/dist)
LIMIT_KIB=$((300 * 1024))
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

policy() { # name plugin settings capabilities limits
  cat >"$dir/$1.yaml" <<YAML
name: $1
target: { kind: Deployment, namespace: default, name: $1 }
interval: 60s
metrics: [{ name: cpu, query: cpu, unit: cores }]
forecast: { baseline: last-value, horizon: 5, step: 60s }
risks:
  - { name: cpu, metric: cpu, plugin: $DIST/risk-cpu.wasm, settings: { capacity-per-pod: 0.05 } }
remediations:
  - { name: act, risk: cpu, trigger: high, plugin: $2, settings: $3, capabilities: $4$5 }
guard: { remediate: true, min_replicas: 3, max_replicas: 20, max_step: 10, cooldown: 0s, min_history: 1, max_actions_per_hour: 3600, allowed_actions: [scale, restart-pod, cordon-node] }
audit: { path: $1.jsonl }
YAML
}
policy good "$DIST/scale.wasm" "{ step: 10 }" "{ actions: [scale] }" ""
for mode in ${MODES:-loop panic flood verbose recurse sleep poll log-flood forge restart-all cordon-all huge-scale}; do
  policy "$mode" "$HOSTILE" "{ mode: $mode }" "{ actions: [scale, restart-pod, cordon-node] }" ""
done
# The most memory any rule may have, spent by guests that allocate without end: three of them,
# so that deciding policies at once must not hold their memory at once.
for n in 1 2 3; do
  policy "alloc-$n" "$HOSTILE" "{ mode: alloc }" "{ actions: [scale] }" ", limits: { memory: 128Mi }"
done
policy flood-roomy "$HOSTILE" "{ mode: flood }" "{ actions: [scale] }" ", limits: { memory: 128Mi, deadline: 5s }"

args=()
for f in "$dir"/*.yaml; do args+=(--policy "$f"); done
/usr/bin/time -f '%M' -o "$dir/rss" "$HOST" run --simulate --speed 1000000 --for 1h --quiet --no-watch "${args[@]}" >/dev/null 2>"$dir/stderr" || {
  echo "host run failed:" >&2; tail -20 "$dir/stderr" >&2; exit 1; }
rss=$(tail -1 "$dir/rss")
executed=$(cat "$dir/good.jsonl" | grep -c '"verdict":"executed"' || true)
echo "hostile cases (${#args[@]} args): peak RSS $((rss / 1024)) MiB (limit 300 MiB); the good policy executed $executed actions"
[ "$executed" -gt 0 ] || { echo "the good policy never acted" >&2; exit 1; }
[ "$rss" -le "$LIMIT_KIB" ] || { echo "peak RSS $((rss / 1024)) MiB is over 300 MiB" >&2; exit 1; }
