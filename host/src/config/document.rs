//! The policy document's shape as types: every section and field a policy may hold (a file
//! adds its `name`; an AugurPolicy has it in its metadata), with its description. They are the one source of the AugurPolicy resource's OpenAPI schema (the
//! `spec` is [`PolicySpec`]; `host crd` prints the CRD generated from it), and a unit test
//! checks that the parser accepts exactly these fields, section by section.
//!
//! They describe; they do not validate. A policy is read and checked by `parse` (parse.rs),
//! which reports every problem with its field and fix: a value that fits these types may
//! still be refused there (a duration of `5 parsecs`, a `min_replicas` above `max_replicas`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What one watched workload is, how it is measured, forecast, assessed and remediated, and
/// the guard rails around every action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub target: TargetDoc,
    /// Time between two ticks, e.g. `15s` (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub interval: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceDoc>,
    /// The metrics to collect (or `{ preset: prototype }`).
    pub metrics: Vec<MetricDoc>,
    pub forecast: ForecastDoc,
    /// Risk rules: a risk plugin assessing one metric's forecast.
    pub risks: Vec<RiskDoc>,
    /// Remediation rules: a remediation plugin proposing actions for one risk.
    pub remediations: Vec<RemediationDoc>,
    pub guard: GuardDoc,
    /// Where decisions are appended (required in a file; an AugurPolicy has one by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditDoc>,
}

/// The workload Augur watches and scales.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetDoc {
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    /// The workload's namespace (an AugurPolicy's own, which it must not leave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// Label selector of its pods (default `app=<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Creation to ready of a new pod, e.g. `45s` (default: measured on the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub startup: Option<Value>,
}

/// Where the metrics come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceDoc {
    /// `prometheus` (default) or `metrics-server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The Prometheus base URL, e.g. `http://prometheus.monitoring:9090`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A file holding a bearer token, sent as `Authorization: Bearer ...` (re-read each request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<String>,
    /// A PEM file of the CA that signed the store's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Headers sent with every request, e.g. `X-Scope-OrgID: team-a` (a Mimir tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
}

/// One metric, or a preset of several.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricDoc {
    /// `prototype`: the Python prototype's PromQL for the target (then nothing else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// PromQL (the Prometheus source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// PromQL tried when `query` yields no series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_query: Option<String>,
    /// `cpu` or `memory` (per pod: the metrics-server source, or PromQL by pod) or
    /// `node-temperature` (per node: PromQL by node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// How the metrics are forecast.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForecastDoc {
    /// A built-in forecaster, e.g. `holt-damped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// An ONNX model: a path, or the name of a shipped one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Points of history the forecaster reads (a model's card sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u64>,
    /// Points forecast ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon: Option<u64>,
    /// Time between two points, e.g. `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub step: Option<Value>,
    /// The seasonal baselines' season, e.g. `1d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub season: Option<Value>,
    /// The baseline serving until the model may, and whenever it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Correct each step's p10-p90 on what then happened (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrate: Option<bool>,
    /// Serve the forecaster with the best recent skill (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<bool>,
}

/// A risk rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskDoc {
    pub name: String,
    /// The name of an entry in `metrics`.
    pub metric: String,
    /// A risk plugin: a path to its `.wasm`, or the name of a shipped one.
    pub plugin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_map")]
    pub settings: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsDoc>,
}

/// A remediation rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemediationDoc {
    pub name: String,
    /// The name of an entry in `risks`.
    pub risk: String,
    /// The lowest risk level that calls the plugin: `low`, `medium`, `high` (default) or `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// A remediation plugin: a path to its `.wasm`, or the name of a shipped one.
    pub plugin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_map")]
    pub settings: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsDoc>,
    pub capabilities: CapabilitiesDoc,
}

/// What one plugin call may use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsDoc {
    /// e.g. `250ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub deadline: Option<Value>,
    /// e.g. `16Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub memory: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_proposals: Option<u64>,
    /// Bytes of text it may return, e.g. `64Ki`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub max_output: Option<Value>,
}

/// The actions a remediation rule's plugin may propose.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesDoc {
    /// e.g. `[scale]`.
    pub actions: Vec<String>,
    /// Node name patterns a cordon may touch, e.g. `["worker-*"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
}

/// The guard rails around every action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardDoc {
    /// `observe` (assess only), `rehearse` (dry-run every action) or `act`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The older form of `mode`, with `remediate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediate: Option<bool>,
    pub min_replicas: u32,
    pub max_replicas: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_step: Option<u32>,
    /// Per action kind, e.g. `15s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub cooldown: Option<Value>,
    /// No scale-down within this of the last scale, e.g. `3m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub scale_down_delay: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_actions_per_hour: Option<u32>,
    /// Points of a metric seen before its remediations may act.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_history: Option<u32>,
    /// e.g. `[scale, restart-pod]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_actions: Option<Vec<String>>,
}

/// Where decisions are appended, one JSON object per line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditDoc {
    pub path: String,
}

/// A duration or quantity: a number, or a string such as `15s` or `16Mi`.
fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-int-or-string": true })
}

/// A plugin's settings: its own keys, each a scalar the plugin reads and checks.
fn free_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// The fields of each section, as the schema of `T` names them: `(section path, fields)`,
/// `""` for the top level, `metrics[]` for a list's entries.
pub fn sections<T: JsonSchema>() -> Vec<(String, Vec<String>)> {
    let root = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    let defs = root.get("$defs").cloned().unwrap_or_default();
    let mut out = Vec::new();
    walk(&root, &defs, String::new(), &mut out);
    out.sort();
    out
}

fn walk(schema: &Value, defs: &Value, path: String, out: &mut Vec<(String, Vec<String>)>) {
    let schema = resolve(schema, defs);
    if let Some(items) = schema.get("items") {
        return walk(items, defs, format!("{path}[]"), out);
    }
    // An optional section is `anyOf: [section, null]`.
    if let Some(Value::Array(any)) = schema.get("anyOf") {
        for option in any {
            walk(option, defs, path.clone(), out);
        }
        return;
    }
    let Some(Value::Object(properties)) = schema.get("properties") else { return };
    out.push((path.clone(), properties.keys().cloned().collect()));
    for (key, child) in properties {
        let child_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        walk(child, defs, child_path, out);
    }
}

fn resolve<'a>(schema: &'a Value, defs: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => defs.get(name).unwrap_or(schema),
        None => schema,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The parser and the schema name the same fields, section by section: a field added to
    /// one and not the other fails here.
    #[test]
    fn the_parser_accepts_exactly_the_fields_the_schema_names() {
        let mut schema: Vec<(String, BTreeSet<String>)> = sections::<PolicySpec>().into_iter().map(|(p, f)| (p, f.into_iter().collect())).collect();
        // A file's name is the AugurPolicy's metadata.name.
        schema.iter_mut().find(|(p, _)| p.is_empty()).unwrap().1.insert("name".into());
        let parser: Vec<(String, BTreeSet<String>)> = super::super::parse::SECTIONS.iter().map(|(p, lists)| (p.to_string(), lists.iter().flat_map(|l| l.iter().map(|f| f.to_string())).collect())).collect();
        let mut parser = parser;
        parser.sort();
        assert_eq!(schema, parser);
    }

    /// Every shipped policy reads into the types and back with nothing lost: the schema
    /// describes what the policies really say.
    #[test]
    fn every_shipped_policy_fits_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "yaml") {
                continue;
            }
            let mut doc: Value = yaml_serde::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            doc.as_object_mut().unwrap().remove("name").expect("a name");
            let spec: PolicySpec = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(serde_json::to_value(&spec).unwrap(), doc, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 3, "{seen} policies in {}", dir.display());
    }
}
