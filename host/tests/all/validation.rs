//! Policy validation: the shipped policy is good; each bad file is rejected with a message that
//! names the field path and the fix; every problem of a file is reported at once; and
//! `host validate` exits non-zero naming the field.

use crate::common;

use augur::config;
use rstest::rstest;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A good policy whose plugin paths point at the built plugins.
fn good() -> String {
    let dist = common::root().join("plugins/dist");
    format!(
        r#"
name: web
target: {{ kind: Deployment, namespace: shop, name: web }}
interval: 30s
metrics:
  - {{ name: cpu, query: 'sum(rate(container_cpu_usage_seconds_total[5m]))', unit: cores }}
forecast: {{ baseline: holt-damped, window: 20, horizon: 5, step: 60s }}
risks:
  - {{ name: cpu, metric: cpu, plugin: {dist}/risk-cpu.wasm, settings: {{ ratio: 1.5 }} }}
remediations:
  - {{ name: scale-up, risk: cpu, trigger: high, plugin: {dist}/scale.wasm, settings: {{ step: 2 }}, capabilities: {{ actions: [scale] }} }}
guard:
  dry_run: false
  remediate: true
  min_replicas: 2
  max_replicas: 10
  max_step: 3
  cooldown: 5m
  max_actions_per_hour: 6
  allowed_actions: [scale]
audit: {{ path: audit.jsonl }}
"#,
        dist = dist.display()
    )
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("policy.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

fn problems(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), text);
    match config::load(&file) {
        Ok(_) => Vec::new(),
        Err(e) => {
            assert_eq!(e.file, file, "the error names the file");
            e.problems.iter().map(|p| p.to_string()).collect()
        }
    }
}

#[test]
fn the_shipped_policy_is_valid_with_its_plugins() {
    let file = common::root().join("policies/nginx.yaml");
    common::plugin("risk-cpu");
    let policy = config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.target.to_string(), "Deployment default/nginx");
    assert_eq!(policy.selector, "app=nginx");
    assert_eq!(policy.metrics[0].query, r#"sum(rate(container_cpu_usage_seconds_total{namespace="default",pod=~"nginx-.*",image!=""}[5m]))"#);
    // The model's card sets the window.
    assert_eq!((policy.forecast.window, policy.forecast.horizon), (60, 10));
    let lines = augur::commands::validate(&[file], &augur::config::Catalog::shipped()).unwrap();
    assert!(lines[0].ends_with("plugins load)"), "{lines:?}");
}

/// Every policy shipped in policies/ validates with its plugins and forecaster.
#[test]
fn every_shipped_policy_validates() {
    let files = augur::commands::expand_policy_args(&[common::root().join("policies")]).unwrap();
    assert!(files.len() >= 3, "{files:?}");
    // Each alone: they are alternatives for one workload, and together they are refused.
    for file in &files {
        let lines = augur::commands::validate(std::slice::from_ref(file), &augur::config::Catalog::shipped()).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(lines.len(), 1, "{lines:?}");
    }
    let together = augur::commands::validate(&files, &augur::config::Catalog::shipped()).unwrap_err().to_string();
    assert!(together.contains("is already the name of the policy in") || together.contains("is already the target of policy"), "{together}");
}

/// The cluster policy of the kind walkthrough: Prometheus of kube-prometheus-stack, and each
/// metric also readable from metrics-server.
#[test]
fn the_kind_policy_is_valid_and_reads_prometheus() {
    let file = common::root().join("policies/kind-nginx.yaml");
    let policy = config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.metric_source, config::MetricSourceSpec::Prometheus { url: "http://kube-prometheus-stack-prometheus.monitoring:9090".into(), access: Default::default() });
    assert_eq!(policy.metrics[0].resource, Some(config::Resource::Cpu));
    assert!(policy.guard.remediate && policy.guard.allowed_actions.contains(&augur::domain::ActionKind::Scale));
    let lines = augur::commands::validate(std::slice::from_ref(&file), &augur::config::Catalog::shipped()).unwrap();
    assert!(lines[0].ends_with("plugins load)"), "{lines:?}");
    // One line switches it to metrics-server, minus the metric metrics-server cannot serve.
    let text = std::fs::read_to_string(common::root().join("policies/kind-nginx.yaml")).unwrap();
    let switched = text.replace("  kind: prometheus\n  url: http://kube-prometheus-stack-prometheus.monitoring:9090\n", "  kind: metrics-server\n");
    let found: Vec<String> = config::parse(&switched, &file, &augur::config::Catalog::shipped()).unwrap_err().iter().map(|p| p.to_string()).collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].starts_with("metrics[2].resource: is missing for `replicas`"), "{found:#?}");
}

/// `{ preset: prototype }` is the prototype's seven PromQL expressions for the target.
#[test]
fn the_prototype_preset_expands_to_its_queries_for_the_target() {
    let text = good().replace("{ name: cpu, query: 'sum(rate(container_cpu_usage_seconds_total[5m]))', unit: cores }", "{ preset: prototype }");
    let dir = tempfile::tempdir().unwrap();
    let policy = config::load(&write(dir.path(), &text)).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = policy.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["cpu", "memory", "replicas", "disk_io", "latency_p95", "node_temperature"]);
    let cpu = &policy.metrics[0];
    assert_eq!(cpu.query, r#"sum(rate(container_cpu_usage_seconds_total{namespace="shop",pod=~"web-.*",image!=""}[5m]))"#);
    assert_eq!(cpu.fallback_query.as_deref(), Some(r#"sum(rate(container_cpu_cfs_periods_total{namespace="shop",pod=~"web-.*",image!=""}[5m]))"#));
    assert_eq!(policy.metrics[2].query, r#"kube_deployment_status_replicas{namespace="shop",deployment="web"}"#);
    assert_eq!(policy.metrics[5].query, "avg(node_thermal_zone_temp) * 0.001");
}

#[test]
fn the_good_fixture_is_valid() {
    assert_eq!(problems(&good()), Vec::<String>::new());
}

#[rstest]
#[case::unknown_top_level_field("guard:", "guardd:", "guardd: unknown field; fix: did you mean `guard`?")]
#[case::unknown_guard_field("max_step: 3", "max_stepz: 3", "guard.max_stepz: unknown field; fix: did you mean `max_step`?")]
#[case::min_above_max("max_replicas: 10", "max_replicas: 1", "guard.max_replicas: 1 is below guard.min_replicas (2); fix: raise max_replicas to at least 2, or lower min_replicas")]
#[case::bad_duration("cooldown: 5m", "cooldown: soon", "guard.cooldown: `soon` is not a duration; fix: write a duration such as `60s`, `5m` or `1h`")]
#[case::wrong_type("min_replicas: 2", "min_replicas: two", "guard.min_replicas: `two` is not valid here; fix: write a whole number, e.g. `1`")]
#[case::bad_trigger("trigger: high", "trigger: severe", "remediations[0].trigger: `severe` is not a risk level; fix: use one of none, low, medium, high, critical")]
#[case::unknown_action_kind("allowed_actions: [scale]", "allowed_actions: [scale, evict]", "guard.allowed_actions[1]: `evict` is not an action kind; fix: use any of scale, restart-pod, rollout-restart, cordon-node, uncordon-node")]
#[case::unknown_source("interval: 30s", "interval: 30s\nsource: { kind: graphite }", "source.kind: `graphite` is not a metric source; fix: use `prometheus` (PromQL `query` per metric) or `metrics-server` (`resource` per metric)")]
#[case::source_url_not_http("interval: 30s", "interval: 30s\nsource: { url: prometheus:9090 }", "source.url: `prometheus:9090` is not an http(s) URL")]
#[case::metrics_server_needs_resource("interval: 30s", "interval: 30s\nsource: { kind: metrics-server }", "metrics[0].resource: is missing for `cpu` (the source is metrics-server, which serves only the pods' cpu and memory); fix: add `resource: cpu` or `resource: memory`")]
#[case::prometheus_needs_query("query: 'sum(rate(container_cpu_usage_seconds_total[5m]))'", "resource: cpu", "metrics[0].query: is missing (the source is Prometheus); fix: add `query:` with the PromQL expression")]
#[case::bad_promql("[5m]))'", "[5m])'", "metrics[0].query: is not valid PromQL")]
#[case::unknown_plugin_name("{dist}/risk-cpu.wasm", "risk-cpx", "risks[0].plugin: `risk-cpx` is no plugin in the search path (")]
#[case::unknown_plugin_name_fix("{dist}/risk-cpu.wasm", "risk-cpx", "fix: did you mean `risk-cpu`? the names there: cordon, restart, risk-cpu, risk-memory, risk-node, scale; add a folder with --plugin-dir, or give a path ending in `.wasm`")]
#[case::unknown_model_name("baseline: holt-damped", "model: transformr", "forecast.model: `transformr` is no model in the search path (")]
#[case::unknown_model_name_fix("baseline: holt-damped", "model: transformr", "fix: did you mean `transformer`?")]
#[case::unknown_preset("{ name: cpu, query: 'sum(rate(container_cpu_usage_seconds_total[5m]))', unit: cores }", "{ preset: legacy }", "metrics[0].preset: `legacy` is not a preset; fix: use `prototype`")]
#[case::unknown_resource("unit: cores", "unit: cores, resource: gpu", "metrics[0].resource: `gpu` is not a resource Augur knows")]
#[case::risk_on_unknown_metric("metric: cpu,", "metric: memory,", "risks[0].metric: `memory` is not a metric of this policy; fix: use one of: cpu")]
#[case::remediation_on_unknown_risk("risk: cpu,", "risk: latency,", "remediations[0].risk: `latency` is not a risk of this policy; fix: use one of: cpu")]
#[case::missing_plugin("scale.wasm", "scale-v2.wasm", "scale-v2.wasm does not exist; fix: run `make build` to build the plugins, or fix the path (relative to the policy file)")]
#[case::unscalable_kind("kind: Deployment", "kind: CronJob", "target.kind: `CronJob` cannot be scaled by Augur; fix: use `Deployment` or `StatefulSet`")]
#[case::bad_namespace("namespace: shop", "namespace: Shop_1", "target.namespace: `Shop_1` is not a valid Kubernetes name")]
#[case::bad_startup("name: web }", "name: web, startup: soon }", "target.startup: `soon` is not a duration; fix: write a duration such as `60s`, `5m` or `1h`")]
#[case::interval_longer_than_the_step("interval: 30s", "interval: 2m", "interval: `2m` is longer than forecast.step `1m`, so the history would miss points the forecaster expects; fix: tick at least once a step: set `interval` to the step or less (between steps a tick updates the current reading), or lengthen forecast.step")]
#[case::startup_too_long("name: web }", "name: web, startup: 2h }", "target.startup: is above 1h; fix: write the time a new pod needs from creation to ready, e.g. `45s`, or leave it out to have it measured")]
#[case::unknown_baseline("baseline: holt-damped", "baseline: prophet", "forecast.baseline: `prophet` is not a built-in forecaster; fix: use one of last-value, linear-trend, holt-damped")]
#[case::seasonal_window_too_short("baseline: holt-damped", "baseline: holt-winters", "forecast.window: is 20, but holt-winters with a season of 1440 points needs 2881; fix: set `window` to at least 2881, or shorten `season`")]
#[case::unknown_fallback("baseline: holt-damped,", "baseline: holt-damped, fallback: magic,", "forecast.fallback: `magic` is not a built-in forecaster")]
#[case::missing_model("baseline: holt-damped", "model: ../models/none/model.onnx", "model.onnx does not exist; fix: give a model's name (e.g. `transformer`) or the path of a model.onnx relative to the policy file")]
#[case::window_too_large("window: 20", "window: 200000", "forecast.window: 200000 is out of range; fix: use 3 to 100000 points (the prototype used 20)")]
#[case::missing_required_field("  max_replicas: 10\n", "", "guard.max_replicas: is missing; fix: add `max_replicas:` with a whole number, e.g. `10`")]
#[case::nested_setting("settings: { ratio: 1.5 }", "settings: { ratio: [1, 2] }", "risks[0].settings.ratio: is not a plain value")]
#[case::unknown_mode("  dry_run: false\n  remediate: true\n", "  mode: fix\n", "guard.mode: `fix` is not a mode; fix: use `observe` (assess only), `rehearse` (dry-run every action) or `act`")]
#[case::mode_against_booleans("  dry_run: false\n", "  mode: observe\n", "guard.mode: `observe` disagrees with guard.remediate: true; fix: write only `mode:` (dry_run and remediate are its older spelling)")]
#[case::zero_rate("max_actions_per_hour: 6", "max_actions_per_hour: 0", "guard.max_actions_per_hour: is 0, so no action could ever pass")]
#[case::yaml_syntax("name: web", "name: [web", "(document): is not valid YAML")]
#[case::missing_capabilities(", capabilities: { actions: [scale] }", "", "remediations[0].capabilities: is missing: a remediation plugin may propose nothing it is not granted; fix: add e.g. `capabilities: { actions: [scale] }`")]
#[case::unknown_capability("actions: [scale] }", "actions: [scale, evict] }", "remediations[0].capabilities.actions[1]: `evict` is not an action kind")]
#[case::capability_not_allowed_by_guard("actions: [scale] }", "actions: [scale, cordon-node] }", "remediations[0].capabilities.actions: grants `cordon-node`, which guard.allowed_actions does not allow, so it could never run; fix: add `cordon-node` to guard.allowed_actions, or remove it here")]
#[case::memory_limit_too_large("capabilities: {", "limits: { memory: 1Gi }, capabilities: {", "remediations[0].limits.memory: `1Gi` is not a size in range; fix: write a size from 1048576 to 134217728 bytes")]
#[case::deadline_too_long("capabilities: {", "limits: { deadline: 1h }, capabilities: {", "remediations[0].limits.deadline: 3600s is out of range; fix: use from `1ms` to `10s` (default `250ms`)")]
#[case::unknown_limit("capabilities: {", "limits: { fuel: 10 }, capabilities: {", "remediations[0].limits.fuel: unknown field")]
#[case::selector_typo("name: web }", "name: web, selector: 'app=web tier=frontend' }", "target.selector: is not a Kubernetes label selector")]
#[case::selector_bad_operator("name: web }", "name: web, selector: 'tier in web' }", "target.selector: is not a Kubernetes label selector")]
#[case::absurd_interval("interval: 30s", "interval: 18446744073709551615", "interval: `18446744073709551615` is longer than 30 days, the most any duration in a policy may be")]
#[case::calibrate_not_a_bool("step: 60s }", "step: 60s, calibrate: maybe }", "forecast.calibrate: `maybe` is not valid here; fix: write `true` or `false`")]
#[case::absurd_cooldown("cooldown: 5m", "cooldown: 100000h", "guard.cooldown: `100000h` is longer than 30 days")]
#[case::replicas_beyond_int32("max_replicas: 10", "max_replicas: 4294967295", "guard.max_replicas: 4294967295 is more replicas than Kubernetes can hold (an int32, at most 2147483647)")]
#[case::step_beyond_int32("max_step: 3", "max_step: 3000000000", "guard.max_step: 3000000000 is more replicas than Kubernetes can hold")]
#[case::rate_beyond_one_a_second("max_actions_per_hour: 6", "max_actions_per_hour: 100000", "guard.max_actions_per_hour: 100000 is more than one action a second; fix: use at most 3600")]
#[case::plugin_is_a_directory("/scale.wasm,", "/,", "is a directory, not a file; fix: name a regular file")]
#[case::zero_proposals("settings: { ratio: 1.5 }", "settings: { ratio: 1.5 }, limits: { max_proposals: 0 }", "risks[0].limits.max_proposals: 0 is out of range")]
fn bad_policies_name_the_field_and_the_fix(#[case] from: &str, #[case] to: &str, #[case] expected: &str) {
    let text = good();
    let from = &from.replace("{dist}", &common::root().join("plugins/dist").display().to_string());
    assert!(text.contains(from), "fixture does not contain {from:?}");
    let found = problems(&text.replacen(from, to, 1));
    assert!(found.iter().any(|p| p.contains(expected)), "expected a problem containing\n  {expected}\ngot\n  {found:#?}");
}

/// A plugin or model by name means the same wherever the policy lives: found among the shipped
/// ones, or first in a folder of one's own (`--plugin-dir`).
#[test]
fn plugins_and_models_by_name_are_looked_up_in_the_search_path() {
    let named = good().replace(&format!("{}/risk-cpu.wasm", common::root().join("plugins/dist").display()), "risk-cpu").replace("baseline: holt-damped, window: 20", "model: transformer");
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), &named);
    let policy = config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.risks[0].plugin, common::root().join("plugins/dist/risk-cpu.wasm"));
    assert_eq!(policy.forecast.method, config::ForecastMethod::Model(common::root().join("models/transformer/model.onnx")));
    let own = tempfile::tempdir().unwrap();
    std::fs::copy(common::root().join("plugins/dist/risk-memory.wasm"), own.path().join("risk-cpu.wasm")).unwrap();
    let catalog = config::Catalog::with(vec![own.path().into()], vec![]);
    let policy = config::load_in(&file, &catalog).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.risks[0].plugin, own.path().join("risk-cpu.wasm"), "the given folder comes before the shipped set");
    assert_eq!(policy.remediations[0].plugin, common::root().join("plugins/dist/scale.wasm"), "a path stays a path");
}

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let text = good().replace("max_replicas: 10", "max_replicas: 1").replace("cooldown: 5m", "cooldown: soon").replace("guard:", "guard:\n  colldown: 1m").replace("trigger: high", "trigger: severe");
    let found = problems(&text);
    assert_eq!(found.len(), 4, "{found:#?}");
}

#[test]
fn plugin_settings_are_checked_by_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), &good().replace("ratio: 1.5", "ratio: 0.5"));
    let err = augur::commands::validate(&[file], &augur::config::Catalog::shipped()).unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("risks[0].settings: setting `ratio` is `0.5`; it must be a number above 1"), "{message}");
}

#[test]
fn host_validate_exits_non_zero_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), &good().replace("max_replicas: 10", "max_replicas: 1").replace("max_step: 3", "max_step: 3\n  surprise: yes"));
    let out = Command::new(common::host_binary()).args(["validate", "--policy"]).arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Invalid input exits 2 (as a usage error does), any other failure 1: see `host --help`.
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}: 2 problems", file.display())), "{stderr}");
    assert!(stderr.contains("guard.max_replicas: 1 is below guard.min_replicas (2)"), "{stderr}");
    assert!(stderr.contains("guard.surprise: unknown field"), "{stderr}");

    let ok = Command::new(common::host_binary()).args(["validate", "--policy"]).arg(common::root().join("policies/nginx.yaml")).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn every_plugin_that_does_not_load_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let swapped = good().replace("risk-cpu.wasm", "SWAP").replace("scale.wasm", "risk-cpu.wasm").replace("SWAP", "scale.wasm");
    let file = write(dir.path(), &swapped);
    let message = format!("{:#}", augur::commands::validate(&[file], &augur::config::Catalog::shipped()).unwrap_err());
    assert!(message.contains("risks[0].plugin: plugin scale: does not implement augur:plugin/risk-plugin@0.3.0"), "{message}");
    assert!(message.contains("remediations[0].plugin: plugin risk-cpu: does not implement augur:plugin/remediation-plugin@0.3.0"), "{message}");
}

/// A plugin path that is a FIFO (whose open would block) or a device is named for what it is
/// and never opened; a policy that is not UTF-8 says so and how to fix it, not "permissions".
#[test]
fn files_that_cannot_be_read_say_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("plugin.wasm");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let text = good().replacen(&format!("{}/scale.wasm", common::root().join("plugins/dist").display()), &fifo.display().to_string(), 1);
    let found = problems(&text);
    assert!(found.iter().any(|p| p.contains("plugin.wasm is not a regular file (a FIFO, socket or device)") && p.contains("fix: name a regular file")), "{found:#?}");
    let device = good().replacen(&format!("{}/scale.wasm", common::root().join("plugins/dist").display()), "/dev/zero", 1);
    assert!(problems(&device).iter().any(|p| p.contains("/dev/zero is not a regular file")), "/dev/zero is refused unread");

    let latin = dir.path().join("latin.yaml");
    let mut bytes = good().into_bytes();
    bytes.extend_from_slice(b"# caf\xe9\n");
    std::fs::write(&latin, &bytes).unwrap();
    let e = config::load(&latin).unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("is not UTF-8 text (the first bad byte is at offset") && shown.contains("fix: save the file as UTF-8"), "{shown}");

    let huge = dir.path().join("huge.yaml");
    std::fs::File::create(&huge).unwrap().set_len(2 << 20).unwrap();
    let shown = config::load(&huge).unwrap_err().to_string();
    assert!(shown.contains("is 2097152 bytes, more than the 1048576 bytes a file of this kind may be"), "{shown}");
}

/// Two policies on one Deployment would fight over its replicas: refused together at
/// validation and at start, naming the other file, the field and the fix.
#[test]
fn two_policies_on_one_workload_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yaml");
    std::fs::write(&a, good()).unwrap();
    std::fs::write(&b, good().replacen("name: web\n", "name: web-too\n", 1)).unwrap();
    let shown = format!("{:#}", augur::commands::validate(&[a.clone(), b.clone()], &augur::config::Catalog::shipped()).unwrap_err());
    assert!(shown.contains(&format!("{}: 1 problem", b.display())), "{shown}");
    assert!(shown.contains(&format!("target: Deployment shop/web is already the target of policy `web` in {}", a.display())), "{shown}");
    assert!(shown.contains("fix: merge the two policies into one file"), "{shown}");
    let out = Command::new(common::host_binary()).args(["run", "--simulate", "--for", "1m", "--policy"]).arg(&a).arg("--policy").arg(&b).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "run refuses them too");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is already the target of policy `web`"));
    // Each alone is good.
    assert!(augur::commands::validate(&[b], &augur::config::Catalog::shipped()).is_ok());
}

/// `guard.mode` reads as the pair of booleans it replaces; a mode that agrees with them may
/// stand beside them.
#[rstest]
#[case::observe("  mode: observe\n", (false, false))]
#[case::rehearse("  mode: rehearse\n", (true, false))]
#[case::act("  mode: act\n", (false, true))]
#[case::act_beside_its_booleans("  mode: act\n  dry_run: false\n  remediate: true\n", (false, true))]
#[case::booleans_alone("  dry_run: true\n  remediate: false\n", (true, false))]
fn the_guards_mode_reads_as_its_booleans(#[case] guard: &str, #[case] expected: (bool, bool)) {
    let dir = tempfile::tempdir().unwrap();
    let text = good().replace("  dry_run: false\n  remediate: true\n", guard);
    let policy = config::load(&write(dir.path(), &text)).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!((policy.guard.dry_run, policy.guard.remediate), expected);
}

/// A Prometheus source's access fields are checked where they are written: a header name
/// that is no HTTP token, an Authorization header beside a token file, a CA file on plain
/// http, and any of them on the metrics-server source.
#[test]
fn prometheus_access_fields_are_checked_with_their_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let template = std::fs::read_to_string(common::root().join("policies/nginx.yaml")).unwrap().replace("../", &format!("{}/", common::root().display()));
    let cases = [
        ("source: { url: \"http://p:9090\", headers: { \"Bad Name\": x } }", "source.headers.Bad Name", "is not an HTTP header name"),
        ("source: { url: \"http://p:9090\", bearer_token_file: t, headers: { Authorization: \"Bearer x\" } }", "source.headers.Authorization", "keep one of them"),
        ("source: { url: \"http://p:9090\", ca_file: ca.pem }", "source.ca_file", "use an `https://` URL"),
        ("source: { kind: metrics-server, bearer_token_file: t }", "source.bearer_token_file", "metrics-server is reached through the Kubernetes API"),
    ];
    for (source, field, expect) in cases {
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, template.replace("interval: 15s", &format!("interval: 15s\n{source}"))).unwrap();
        let e = config::load(&file).unwrap_err();
        assert!(e.problems.iter().any(|p| p.path == field && p.to_string().contains(expect)), "{source}: {e}");
    }
}
