# Augur's set-up and everyday commands. The README names two: `make demo` and `make test`.
# Everything they need is installed here, on a fresh machine with rustup and cargo.

PLUGINS      := risk-cpu risk-memory risk-node scale restart cordon
WASM_TARGET  := wasm32-wasip2
WASM_DIR     := target/$(WASM_TARGET)/plugin
DIST         := plugins/dist
CARGO        ?= cargo

.PHONY: all setup build plugins host demo test bench clean

all: build

# One-time toolchain set-up: the WebAssembly target for the plugins.
setup:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

# The plugins as components, where the policies find them (plugins/dist/<name>.wasm).
plugins: setup
	$(CARGO) build --profile plugin --target $(WASM_TARGET) $(foreach p,$(PLUGINS),-p $(p))
	@mkdir -p $(DIST)
	@for p in $(PLUGINS); do cp $(WASM_DIR)/$$(echo $$p | tr - _).wasm $(DIST)/$$p.wasm; done
	@ls -l $(DIST)

# The host binary at target/release/host.
host:
	$(CARGO) build --release -p host

build: plugins host

# The whole loop on the built-in simulated cluster, fast: 12 simulated hours in about 90 s.
demo: build
	target/release/host run --policy policies/nginx.yaml --simulate --speed 480 --for 12h --audit-log var/demo-audit.jsonl

# Every test: plugin logic natively, the host's unit tests, the real .wasm plugins, the
# validation table, and end-to-end runs on the simulator. cargo builds the host binary the
# tests run itself (with the test build's features, so nothing is compiled twice).
test: plugins
	$(CARGO) test --release --workspace

# Benchmarks of the decision path (forecast + two plugin calls + guard) and of a plugin call.
bench: build
	$(CARGO) bench -p host --bench decision

clean:
	rm -rf $(DIST) var
