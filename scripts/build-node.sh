#!/usr/bin/env bash
# The real node for the tests: kubelet and kube-scheduler built from the control plane's Go
# module set (scripts/build-k8s.sh), containerd and runc from Debian, and the node's two images
# made locally (no registry): augur.local/busybox:1 (the workload) and augur.local/pause:1 (the
# pod sandbox, a static pause binary); kube-state-metrics and metrics-server, each from its own
# module at a pinned release. Cached beside the control plane in
# ~/.cache/augur/k8s-<version>/{bin,images}; prints the cache folder.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
K8S_VERSION="${K8S_VERSION:-v1.35.4}"
OUT="${AUGUR_K8S_CACHE:-$HOME/.cache/augur/k8s-$K8S_VERSION}"
BIN="$OUT/bin"
IMAGES="$OUT/images"

bash "$HERE/build-k8s.sh" >/dev/null

for tool in containerd runc ctr busybox /usr/lib/cni/loopback; do
  if ! command -v "$tool" >/dev/null 2>&1 && [[ ! -x "$tool" ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd runc busybox-static containernetworking-plugins iptables >/dev/null
    break
  fi
done

if [[ ! -x "$BIN/kubelet" || ! -x "$BIN/kube-scheduler" ]]; then
  cd "$OUT/src"
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  go mod tidy >/dev/null 2>&1 || true
  go build -o "$BIN/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler
  CGO_ENABLED=0 go build -o "$BIN/kubelet" k8s.io/kubernetes/cmd/kubelet
fi

# The monitoring the prototype read: kube-state-metrics (replicas) and metrics-server, each
# built from its own Go module at a pinned release.
KSM_VERSION="${KSM_VERSION:-v2.19.1}"
METRICS_SERVER_VERSION="${METRICS_SERVER_VERSION:-v0.8.0}"
if [[ ! -x "$BIN/kube-state-metrics-$KSM_VERSION" ]]; then
  GOBIN="$OUT/ksm" go install "k8s.io/kube-state-metrics/v2@$KSM_VERSION"
  mv "$OUT/ksm/kube-state-metrics" "$BIN/kube-state-metrics-$KSM_VERSION"
  rmdir "$OUT/ksm"
fi
ln -sf "kube-state-metrics-$KSM_VERSION" "$BIN/kube-state-metrics"
if [[ ! -x "$BIN/metrics-server-$METRICS_SERVER_VERSION" ]]; then
  GOBIN="$OUT/ms" go install "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"
  mv "$OUT/ms/metrics-server" "$BIN/metrics-server-$METRICS_SERVER_VERSION"
  rmdir "$OUT/ms"
fi
ln -sf "metrics-server-$METRICS_SERVER_VERSION" "$BIN/metrics-server"

if [[ ! -f "$IMAGES/busybox.tar" || ! -f "$IMAGES/pause.tar" ]]; then
  mkdir -p "$IMAGES"
  cat > "$IMAGES/pause.c" <<'C'
/* The pod sandbox's process: sleeps until told to stop, reaps what it inherits. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, stop);
  signal(SIGTERM, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
C
  if [[ ! -f /usr/lib/x86_64-linux-gnu/libc.a ]] || ! command -v gcc >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
  fi
  gcc -static -O2 -o "$IMAGES/pause" "$IMAGES/pause.c"
  python3 "$HERE/node-images.py" "$IMAGES" "$IMAGES/pause" >/dev/null
fi
echo "$OUT"
