#!/usr/bin/env bash
# Builds helm from Go modules (no binary downloads here) for the chart's tests, and fetches the
# Prometheus Operator's ServiceMonitor and PrometheusRule CRDs (from its module, as released)
# so that the rendered chart can be checked against a real API server. Cached in
# ~/.cache/augur/helm-<version>; prints that folder.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v4.3.2}"
OPERATOR_VERSION="${OPERATOR_VERSION:-v0.85.0}"
OUT="${AUGUR_HELM_CACHE:-$HOME/.cache/augur/helm-$HELM_VERSION}"
if [[ -x "$OUT/bin/helm" && -f "$OUT/crds/servicemonitors.yaml" && -f "$OUT/crds/prometheusrules.yaml" ]]; then
  echo "$OUT"
  exit 0
fi
mkdir -p "$OUT/bin" "$OUT/crds"
GOBIN="$OUT/bin" go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
DIR="$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$OPERATOR_VERSION" | awk -F'"' '/"Dir"/{print $4}')"
for kind in servicemonitors prometheusrules; do
  cp "$DIR/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$OUT/crds/$kind.yaml"
  chmod 644 "$OUT/crds/$kind.yaml"
done
echo "$OUT"
