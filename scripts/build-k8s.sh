#!/usr/bin/env bash
# Builds a real control plane for the tests from Go modules (no binary downloads here):
# kube-apiserver and kube-controller-manager from k8s.io/kubernetes, etcd from go.etcd.io.
# The binaries are cached in ~/.cache/augur/k8s-<version>/bin and reused; prints that folder.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
OUT="${AUGUR_K8S_CACHE:-$HOME/.cache/augur/k8s-$K8S_VERSION}"
BIN="$OUT/bin"
if [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" && -x "$BIN/etcd" ]]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$OUT/src" "$BIN"
cd "$OUT/src"

# k8s.io/kubernetes lists its staging modules at v0.0.0 with local replaces; a wrapper module
# replaces each with its published v0.Y.Z instead.
STAGING="v0.${K8S_VERSION#v1.}"
go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
MOD="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod"
{
  echo "module augur.local/k8s-testenv"
  echo
  echo "go $(awk '/^go /{print $2}' "$MOD")"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  awk '/=> \.\/staging\/src\//{print "\t" $1 " => " $1 " '"$STAGING"'"}' "$MOD"
  echo ")"
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
go mod tidy >/dev/null 2>&1 || true
go build -o "$BIN/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -o "$BIN/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager

# etcd in its own module.
mkdir -p "$OUT/etcd" && cd "$OUT/etcd"
[[ -f go.mod ]] || go mod init augur.local/etcd >/dev/null 2>&1
go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
GOFLAGS=-mod=mod go build -o "$BIN/etcd" go.etcd.io/etcd/server/v3
echo "$BIN"
