//! A plugin author outside this repository: `host plugin new` scaffolds a crate into a
//! temporary folder, plain `cargo build --target wasm32-wasip2 --release` builds it there,
//! `host plugin check` accepts it and `host plugin run` calls it on its sample. The build is
//! `--offline` (the tests reach no network): it uses the crates `make build` fetched for the
//! workspace, and a target folder of its own under target/ so that a second run is quick.

use crate::common;
use std::path::Path;
use std::process::{Command, Output};

fn host(args: &[&str]) -> Output {
    Command::new(common::host_binary()).args(args).output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Scaffolds `name` of `world`, builds it, checks it and runs it on its sample; returns what
/// `plugin run` printed.
fn scaffold_build_check_run(name: &str, world: &str, sample: &str) -> serde_json::Value {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join(name);
    let printed = ok(host(&["plugin", "new", name, "--world", world, dir.to_str().unwrap()]));
    assert!(printed.contains("cargo build --target wasm32-wasip2 --release"), "{printed}");

    // It stands alone: the host's WIT, its own SDK copy, nothing inherited from a workspace
    // and no path out of its folder.
    assert_eq!(std::fs::read_to_string(dir.join("wit/plugin.wit")).unwrap(), std::fs::read_to_string(common::root().join("wit/plugin.wit")).unwrap());
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(!manifest.contains(".workspace") && !manifest.contains("workspace = true") && !manifest.contains(".."), "{manifest}");
    assert!(manifest.contains("\n[workspace]\n"), "{manifest}");

    let target = common::root().join("target/scaffold");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = Command::new(cargo)
        .args(["build", "--offline", "--target", "wasm32-wasip2", "--release"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    assert!(build.status.success(), "the scaffold does not build:\n{}", String::from_utf8_lossy(&build.stderr));
    let component = target.join(format!("wasm32-wasip2/release/{}.wasm", name.replace('-', "_")));

    let check = ok(host(&["plugin", "check", component.to_str().unwrap()]));
    assert!(check.contains(&format!("world:   augur:plugin/{world}-plugin@")) && check.contains("(loads)"), "{check}");
    assert!(check.contains("check-settings with no settings: ok"), "{check}");

    let run = ok(host(&["plugin", "run", component.to_str().unwrap(), "--input", dir.join(sample).to_str().unwrap()]));
    serde_json::from_str(&run).unwrap_or_else(|e| panic!("{e}: {run}"))
}

#[test]
fn a_new_risk_plugin_builds_outside_the_workspace_passes_check_and_runs_on_its_sample() {
    let out = scaffold_build_check_run("risk-queue", "risk", "samples/forecast.json");
    assert_eq!(out["world"], "augur:plugin/risk-plugin@0.3.0", "{out}");
    assert_eq!(out["settings_problems"], serde_json::json!([]), "{out}");
    // The template's rule on the sample: the p90 crosses `max: 1.0` at the third step.
    assert_eq!(out["risk"]["level"], "high", "{out}");
    assert_eq!(out["risk"]["seconds_to_breach"], 180, "{out}");
    assert!(out["risk"]["reason"].as_str().unwrap().ends_with("predicted breach in 3m"), "{out}");
}

#[test]
fn a_new_remediation_plugin_builds_outside_the_workspace_passes_check_and_runs_on_its_sample() {
    let out = scaffold_build_check_run("restart-heaviest", "remediation", "samples/plan.json");
    assert_eq!(out["world"], "augur:plugin/remediation-plugin@0.3.0", "{out}");
    let proposals = out["proposals"].as_array().unwrap();
    assert_eq!(proposals.len(), 1, "{out}");
    assert_eq!(proposals[0]["action"], "restart-pod");
    assert_eq!(proposals[0]["pod"], "web-2", "the sample's heavier pod");
}

fn sample(dir: &Path, text: &str) -> String {
    let file = dir.join("sample.json");
    std::fs::write(&file, text).unwrap();
    file.display().to_string()
}

/// `plugin run` on the shipped plugins, with samples written here: settings reach the plugin
/// and its own checks come back; a sample that lacks what the world needs, or misspells a
/// field, is refused (exit 2) with the field and the fix.
#[test]
fn host_plugin_run_passes_settings_and_refuses_a_sample_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let risk_cpu = common::plugin("risk-cpu");
    let forecast = r#"{"settings": {"capacity-per-pod": 0.5, "target-utilisation": "lots"},
        "forecast": {"target": {"kind": "Deployment", "namespace": "shop", "name": "web"}, "metric": "cpu", "unit": "cores",
        "step_seconds": 60, "history": [0.8, 0.9], "predicted": [1.4, 1.6], "upper": [1.6, 1.9], "replicas": 2, "ready_replicas": 2, "interval_seconds": 15}}"#;
    let out: serde_json::Value = serde_json::from_str(&ok(host(&["plugin", "run", risk_cpu.to_str().unwrap(), "--input", &sample(dir.path(), forecast)]))).unwrap();
    assert!(out["settings_problems"][0].as_str().unwrap().contains("setting `target-utilisation` is `lots`"), "{out}");
    assert!(out["risk"]["required_replicas"].as_u64().unwrap() >= 4, "1.9 cores at 0.5 a pod: {out}");

    let scale = common::plugin("scale");
    let out = host(&["plugin", "run", scale.to_str().unwrap(), "--input", &sample(dir.path(), forecast)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`risk` is missing: augur:plugin/remediation-plugin@0.3.0 is called with it; fix: add it"), "{err}");

    let out = host(&["plugin", "run", risk_cpu.to_str().unwrap(), "--input", &sample(dir.path(), r#"{"forcast": {}}"#)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a sample input: unknown field `forcast`") && err.contains("fix: write the JSON that `host plugin new` puts in samples/"), "{err}");
}
