# Augur's set-up and everyday commands. The README names two: `make demo` and `make test`.
# Everything they need is installed here, on a fresh machine with rustup and cargo.

PLUGINS      := risk-cpu risk-memory risk-node scale restart cordon
WASM_TARGET  := wasm32-wasip2
WASM_DIR     := target/$(WASM_TARGET)/plugin
DIST         := plugins/dist
CARGO        ?= cargo
PYTHON       ?= python3

# ONNX Runtime for the host (ort's load-dynamic): the shared library inside the PyPI
# `onnxruntime` wheel, fetched once into a cache outside the repository.
ORT_VERSION  := 1.32.0
ORT_DIR      := $(HOME)/.cache/augur/onnxruntime-$(ORT_VERSION)
ORT_LIB      := $(ORT_DIR)/libonnxruntime.so.$(ORT_VERSION)
export ORT_DYLIB_PATH := $(ORT_LIB)

# The training environment (PyTorch: 5.5 GB with its CUDA wheels), cached by the hash of
# models/requirements.txt so that it is built once per machine and rebuilt when pins change.
TRAIN_VENV   := $(HOME)/.cache/augur/train-venv-$(shell sha256sum models/requirements.txt | cut -c1-12)
TRAIN_PY     := $(TRAIN_VENV)/bin/python

.PHONY: test-plugins python-plugin all setup onnxruntime train-env models tiny-model k8s node helm prometheus grafana-schema demo-prometheus build plugins host demo demo-node test bench clean results

all: build

# One-time set-up: the WebAssembly target for the plugins and ONNX Runtime for the models.
setup: onnxruntime
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

onnxruntime: $(ORT_LIB)

$(ORT_LIB):
	@mkdir -p $(ORT_DIR)/wheel
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: onnxruntime==$(ORT_VERSION) -d $(ORT_DIR)/wheel
	$(PYTHON) -c "import glob, sys, zipfile; w = zipfile.ZipFile(glob.glob('$(ORT_DIR)/wheel/onnxruntime-*.whl')[0]); \
	  open('$@.part', 'wb').write(w.read('onnxruntime/capi/libonnxruntime.so.$(ORT_VERSION)'))"
	mv $@.part $@
	rm -rf $(ORT_DIR)/wheel

train-env: $(TRAIN_PY)

$(TRAIN_PY):
	rm -rf $(TRAIN_VENV)
	$(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install --quiet -r models/requirements.txt

# Retrains the shipped models from ../shared/data (about 3 minutes per model on 2 cores),
# then scores them and the baselines with `host backtest` into their cards.
MODELS := dlinear lstm transformer prototype lstm-seasonal dlinear-seasonal transformer-seasonal
models: train-env host
	for m in $(MODELS); do $(TRAIN_PY) models/train.py --config models/configs/$$m.yaml --out models/$$m || exit 1; done
	$(TRAIN_PY) models/score.py

# A real control plane for the Kubernetes tests: kube-apiserver, kube-controller-manager and
# etcd built from Go modules (~15 min the first time), cached in ~/.cache/augur/k8s-<version>.
k8s:
	bash scripts/build-k8s.sh

# The real node for the node tests: kubelet and kube-scheduler from the same Go modules,
# containerd and runc from Debian, the busybox and pause images made locally (no registry),
# kube-state-metrics and metrics-server from their modules; cached beside the control plane.
node: k8s
	bash scripts/build-node.sh

# helm for the chart's tests (lint, template, the rendered objects against the API server),
# built from Go modules (a few minutes the first time) with the Prometheus Operator's
# ServiceMonitor and PrometheusRule CRDs, cached in ~/.cache/augur/helm-<version>.
helm:
	bash scripts/build-helm.sh

# A real Prometheus for the tests (Debian's package; nothing starts by itself: the tests
# start their own on loopback). Needs root, as on a fresh machine of this kind.
prometheus:
	@command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@prometheus --version 2>&1 | head -1

# Grafana's dashboard model (@grafana/schema's types, checked with tsc) for the dashboard test;
# installed from npm once into ~/.cache/augur.
grafana-schema:
	bash scripts/check-dashboard.sh deploy/grafana-dashboard.json

# The CI models: the whole training pipeline in seconds, into var/models/tiny and
# var/models/tiny-seasonal (with a day of seasonal context).
tiny-model: train-env
	$(TRAIN_PY) models/train.py --config models/configs/tiny.yaml --out var/models/tiny
	$(TRAIN_PY) models/train.py --config models/configs/tiny-seasonal.yaml --out var/models/tiny-seasonal

# The plugins as components, where the policies find them (plugins/dist/<name>.wasm).
plugins: setup
	$(CARGO) build --profile plugin --target $(WASM_TARGET) $(foreach p,$(PLUGINS),-p $(p))
	@mkdir -p $(DIST)
	@for p in $(PLUGINS); do cp $(WASM_DIR)/$$(echo $$p | tr - _).wasm $(DIST)/$$p.wasm; done
	@ls -l $(DIST)

# Guests that misbehave on purpose, for the sandbox tests, and the plugin template (never
# shipped): var/test-plugins.
FIXTURES := hostile sneaky template
test-plugins: setup
	$(CARGO) build --profile plugin --target $(WASM_TARGET) $(foreach p,$(FIXTURES),-p $(p))
	@mkdir -p var/test-plugins
	@for p in $(FIXTURES); do cp $(WASM_DIR)/$$p.wasm var/test-plugins/$$p.wasm; done

# The template's rule in Python (plugins/python-threshold), built with componentize-py from
# PyPI in a cached virtual environment: proof that the WIT contract is language-neutral.
# --stub-wasi: the Python runtime's WASI imports (sockets among them) become traps, so the
# component imports only augur:plugin, as the host's grant requires.
COMPONENTIZE_PY := 0.25.1
CPY_VENV     := $(HOME)/.cache/augur/componentize-py-$(COMPONENTIZE_PY)
python-plugin: var/test-plugins/python-threshold.wasm

var/test-plugins/python-threshold.wasm: plugins/python-threshold/app.py wit/plugin.wit
	@test -x $(CPY_VENV)/bin/componentize-py || { rm -rf $(CPY_VENV) && $(PYTHON) -m venv $(CPY_VENV) && $(CPY_VENV)/bin/pip install --quiet componentize-py==$(COMPONENTIZE_PY); }
	@mkdir -p var/test-plugins
	cd plugins/python-threshold && $(CPY_VENV)/bin/componentize-py -d ../../wit -w risk-plugin componentize --stub-wasi app -o ../../$@

# The host binary at target/release/host.
host:
	$(CARGO) build --release -p host

build: plugins host

# The whole loop on the built-in simulated cluster, fast: 12 simulated hours in about 90 s.
demo: build
	target/release/host run --policy policies/nginx.yaml --simulate --speed 480 --for 12h --audit-log var/demo-audit.jsonl

# The simulator -> Prometheus -> Augur -> simulator loop on one machine, in real time, until
# Ctrl-C: Prometheus on http://127.0.0.1:9090, Augur's /metrics on 127.0.0.1:9464.
demo-prometheus: build prometheus
	bash scripts/demo-prometheus.sh

# The prototype's demo for real, to watch (about 4 minutes once the node is built): a real
# node (kubelet, containerd, runc), nginx's stand-in under `host stress`, a real Prometheus
# reading the kubelet's cAdvisor and kube-state-metrics, `host run` restarting the leaking pod
# and scaling ahead of the CPU breach, the new pods Ready. It is the node demo test, narrated.
demo-node: plugins onnxruntime prometheus node
	$(CARGO) test --release -p host --test all -- node::the_prototypes_demo_runs_for_real_on_the_node --exact --nocapture

# Every test: plugin logic natively, the host's unit tests, the real .wasm plugins, the
# validation table, and end-to-end runs on the simulator. cargo builds the host binary the
# tests run itself (with the test build's features, so nothing is compiled twice).
test: plugins test-plugins python-plugin onnxruntime tiny-model k8s node helm prometheus grafana-schema
	$(CARGO) test --release --workspace

# Benchmarks of the decision path (forecast + two plugin calls + guard), of a plugin call, of
# the models, of live reload (write -> serving; tick latency while a reload compiles), and of
# replays and the anomaly pass; and the host's peak memory through every hostile plugin case.
# Then many workloads on one host: 1,000 and 10,000 copies of nginx.yaml under the simulator (CPU per
# workload-tick, peak RSS), 1, 100 and 1,000 of them read through a real Prometheus (instant
# queries per tick), and the start to the first decision with an empty and a filled compile cache.
bench: build test-plugins prometheus
	$(CARGO) bench -p host --bench decision --bench models --bench reload --bench replay
	@[ -x /usr/bin/time ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null; }
	bash scripts/hostile-rss.sh
	bash scripts/scale-bench.sh 1000:2h 10000:20m
	bash scripts/query-bench.sh 1 100 1000
	bash scripts/start-bench.sh 1 1000

# docs/results.md: host replay on every request-rate and CPU trace in ../shared/data, and the
# NAB scores (about 15 minutes on 2 cores).
results: build
	bash scripts/results.sh

clean:
	rm -rf $(DIST) var
