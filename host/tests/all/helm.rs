//! The Helm chart (deploy/helm/augur) with a real helm, built from Go modules by
//! scripts/build-helm.sh (cached in ~/.cache/augur): `helm lint`, `helm template` with every
//! toggle on, and what it renders applied to the tests' real kube-apiserver with a server-side
//! dry run (its CRD, and the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs as
//! that project releases them, installed for real). The chart's copies of deploy/'s rules,
//! alerts and dashboard are held equal to them here.

use crate::common;
use crate::kubernetes::{dry_run_create, install_crd, namespace};

use common::k8s::control_plane;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The folder scripts/build-helm.sh caches helm and the operator's CRDs in (built once).
fn cache() -> &'static PathBuf {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let out = Command::new("bash").arg(common::root().join("scripts/build-helm.sh")).output().unwrap();
        assert!(out.status.success(), "scripts/build-helm.sh: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim())
    })
}

fn chart() -> PathBuf {
    common::root().join("deploy/helm/augur")
}

fn helm(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    // helm keeps its caches and config under these; none of them may be the user's.
    Command::new(cache().join("bin/helm"))
        .args(args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "helm failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every toggle on, a pinned image, and one policy (the shipped example's spec).
fn full_values(dir: &std::path::Path, ns: &str) -> PathBuf {
    let example: Value = yaml_serde::from_str(&std::fs::read_to_string(common::root().join("deploy/augurpolicy-nginx.yaml")).unwrap()).unwrap();
    let values = serde_json::json!({
        "image": { "repository": "registry.example.com/augur", "digest": format!("sha256:{}", "a".repeat(64)) },
        "serviceMonitor": { "enabled": true, "labels": { "release": "kube-prometheus-stack" } },
        "prometheusRule": { "enabled": true },
        "dashboard": { "enabled": true },
        "policies": { "nginx": { "namespace": ns, "spec": example["spec"] } },
        "pluginDirs": ["/opt/team/plugins"],
        "modelDirs": ["/opt/team/models"],
        "extraVolumes": [{ "name": "team", "configMap": { "name": "team-plugins" } }],
        "extraVolumeMounts": [{ "name": "team", "mountPath": "/opt/team", "readOnly": true }],
    });
    let file = dir.join("values.yaml");
    std::fs::write(&file, yaml_serde::to_string(&values).unwrap()).unwrap();
    file
}

fn documents(text: &str) -> Vec<Value> {
    text.split("\n---").filter_map(|d| yaml_serde::from_str::<Value>(d.trim_start_matches('\n')).ok()).filter(|v| !v.is_null()).collect()
}

fn of_kind<'d>(docs: &'d [Value], kind: &str) -> Vec<&'d Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn helm_lint_passes() {
    let out = ok(&helm(&["lint", "--strict", chart().to_str().unwrap()]));
    assert!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "{out}");
}

/// Values that would make a broken install are refused by the chart, with the fix.
#[test]
fn bad_values_are_refused_with_what_to_do() {
    let chart = chart();
    for (set, expect) in [
        ("antiAffinity=sideways", "antiAffinity `sideways` is not `soft`, `hard` or `none`"),
        ("clusterPolicies.enabled=false", "clusterPolicies.enabled is false, so Augur would run no policy"),
        ("logFormat=xml", "logFormat `xml` is neither `json` nor `text`"),
        ("policies.web.spec.target.name=web", "policies.web.namespace is required"),
    ] {
        let out = helm(&["template", "augur", chart.to_str().unwrap(), "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expect), "--set {set}: {stderr}");
    }
}

/// The defaults rehearse (--dry-run), spread the two replicas (soft anti-affinity), keep one
/// through a drain (PDB), and pin nothing they should not: the image is the chart's version.
#[test]
fn the_defaults_rehearse_spread_and_keep_one_through_a_drain() {
    let docs = documents(&ok(&helm(&["template", "augur", chart().to_str().unwrap(), "--namespace", "ops"])));
    let deployment = of_kind(&docs, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "augur:0.1.0");
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for arg in ["run", "--cluster-policies", "--dry-run", "--lease-namespace=ops", "--log-format=json"] {
        assert!(args.contains(&arg), "{args:?}");
    }
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert!(pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"].is_array(), "{pod}");
    assert_eq!(of_kind(&docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"], 1);
    assert!(of_kind(&docs, "ServiceMonitor").is_empty() && of_kind(&docs, "PrometheusRule").is_empty(), "toggled off by default");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
}

/// Everything the chart renders with every toggle on is accepted by the real API server
/// (server-side dry run; the CRDs for real), and its copies of deploy/'s RBAC rules, alerts
/// and dashboard are the same as deploy/'s.
#[tokio::test(flavor = "multi_thread")]
async fn the_rendered_chart_is_accepted_by_the_api_server() {
    let client = control_plane().client().await;
    install_crd(&client, &chart().join("crds/augurpolicies.yaml"), "augurpolicies.augur.io").await;
    install_crd(&client, &cache().join("crds/servicemonitors.yaml"), "servicemonitors.monitoring.coreos.com").await;
    install_crd(&client, &cache().join("crds/prometheusrules.yaml"), "prometheusrules.monitoring.coreos.com").await;
    namespace(&client, "augur-helm").await;
    let dir = tempfile::tempdir().unwrap();
    let values = full_values(dir.path(), "augur-helm");
    let rendered = ok(&helm(&["template", "augur", chart().to_str().unwrap(), "--namespace", "augur-helm", "-f", values.to_str().unwrap()]));
    let kinds = dry_run_create(&client, "helm template", &rendered).await;
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "ConfigMap", "AugurPolicy"] {
        assert!(kinds.iter().any(|k| k == kind), "the chart rendered no {kind}: {kinds:?}");
    }

    let docs = documents(&rendered);
    let image = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image.as_str().unwrap(), format!("registry.example.com/augur@sha256:{}", "a".repeat(64)), "a digest pins the image");
    // Plugins and models of one's own: the folders are searched first, and mounted.
    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].as_array().unwrap();
    assert!(args.iter().any(|a| a == "--plugin-dir=/opt/team/plugins") && args.iter().any(|a| a == "--model-dir=/opt/team/models"), "{args:?}");
    assert!(pod["volumes"].as_array().unwrap().iter().any(|v| v["name"] == "team"), "{pod}");
    assert!(pod["containers"][0]["volumeMounts"].as_array().unwrap().iter().any(|m| m["mountPath"] == "/opt/team"), "{pod}");
    // The chart's copies are deploy/'s.
    let deploy = |file: &str| documents(&std::fs::read_to_string(common::root().join(file)).unwrap());
    let rbac = deploy("deploy/rbac.yaml");
    assert_eq!(of_kind(&docs, "ClusterRole")[0]["rules"], of_kind(&rbac, "ClusterRole")[0]["rules"]);
    assert_eq!(of_kind(&docs, "Role")[0]["rules"], of_kind(&rbac, "Role")[0]["rules"]);
    assert_eq!(of_kind(&docs, "PrometheusRule")[0]["spec"], deploy("deploy/prometheus-rules.yaml")[0]["spec"]);
    let dashboard = std::fs::read_to_string(common::root().join("deploy/grafana-dashboard.json")).unwrap();
    assert_eq!(of_kind(&docs, "ConfigMap")[0]["data"]["augur.json"].as_str().unwrap(), dashboard);
    let policy = of_kind(&docs, "AugurPolicy")[0];
    assert_eq!(policy["metadata"]["namespace"], "augur-helm");
    assert_eq!(policy["spec"]["target"]["name"], "nginx");
}

/// The chart's README lists every value of values.yaml.
#[test]
fn every_value_is_in_the_charts_readme() {
    let values: Value = yaml_serde::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    let mut missing = Vec::new();
    fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            // A map of the user's own (labels, resources) is one value.
            Value::Object(m) if !m.is_empty() && !["resources", "labels", "annotations"].iter().any(|k| prefix.ends_with(k)) => {
                for (k, child) in m {
                    leaves(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, child, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let mut all = Vec::new();
    leaves("", &values, &mut all);
    for key in &all {
        if !readme.contains(&format!("| `{key}` |")) {
            missing.push(key.clone());
        }
    }
    assert!(missing.is_empty(), "values missing from the chart's README table: {missing:?}");
    assert!(all.len() >= 25, "{all:?}");
}
