#!/usr/bin/env bash
# Checks a Grafana dashboard JSON against Grafana's own dashboard model: the TypeScript types
# of @grafana/schema (generated from Grafana's schema), with tsc in strict mode, so a field of
# the wrong type or a field the model does not have is an error. Both are pinned and installed
# from the npm registry once, into ~/.cache/augur/grafana-schema-<version>.
set -euo pipefail
dashboard=$(realpath "${1:?usage: check-dashboard.sh DASHBOARD.json}")
schema=13.2.3
typescript=5.9.3
dir=$HOME/.cache/augur/grafana-schema-$schema
if [ ! -x "$dir/node_modules/.bin/tsc" ]; then
  mkdir -p "$dir"
  npm install --no-audit --no-fund --silent --prefix "$dir" "typescript@$typescript" "@grafana/schema@$schema" >/dev/null 2>&1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$dir/node_modules" "$work/node_modules"
{
  echo "import type { Dashboard } from '@grafana/schema/dist/types/raw/dashboard/x/types.gen';"
  echo "// Grafana's schema types annotation targets for its own datasource only (a TODO there);"
  echo "// the annotations' Prometheus queries are checked by host/tests/all/prometheus.rs instead."
  echo "type Checked = Omit<Dashboard, 'annotations'> & { annotations?: { list?: Array<Record<string, unknown>> } };"
  echo "export const dashboard = "
  cat "$dashboard"
  echo " satisfies Checked;"
} >"$work/check.ts"
"$dir/node_modules/.bin/tsc" --noEmit --strict --skipLibCheck --moduleResolution node "$work/check.ts"
echo "$dashboard: fits Grafana's dashboard model (@grafana/schema $schema)"
