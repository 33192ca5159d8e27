//! Every integration test of the host, in one binary (one link, not nine), a module per area.
//! Each area starts the real parts it needs: `.wasm` plugins built by `make`, ONNX Runtime,
//! a Prometheus on loopback, a kube-apiserver with etcd and a controller manager.

mod common;

mod api_faults;
mod augur_policies;
mod helm;
mod kubernetes;
mod models;
mod node;
mod plugin_authoring;
mod plugins;
mod prometheus;
mod reload;
mod replay;
mod sandbox;
mod simulate;
mod validation;
