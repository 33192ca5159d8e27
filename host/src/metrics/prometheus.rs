//! The Prometheus source: each metric of a policy is a PromQL expression, evaluated as an
//! instant query (`/api/v1/query`) against the policy's `source.url`.
//!
//! A query must yield one number: a scalar, or a vector of exactly one series. An empty vector
//! means "no data now" and leaves the metric out of the observation; several series are an
//! error that says to aggregate. A metric that fails does not hide the others: the observation
//! holds what could be read, and the source fails only when nothing could.

use super::{MetricSource, Observation, SourceError};
use crate::config::{MetricSourceSpec, Policy};
use async_trait::async_trait;
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SOURCE: &str = "prometheus";

/// Evaluates the policies' PromQL against their Prometheus servers.
#[derive(Debug, Clone)]
pub struct PrometheusSource {
    http: reqwest::Client,
}

impl PrometheusSource {
    pub fn new() -> anyhow::Result<Self> {
        crate::cluster::install_tls_provider();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).user_agent(concat!("augur/", env!("CARGO_PKG_VERSION"))).build()?;
        Ok(Self { http })
    }

    /// Evaluates one PromQL expression at `at` (now, when `None`). `Ok(None)`: no series.
    pub async fn instant(&self, url: &str, query: &str, at: Option<SystemTime>) -> Result<Option<f64>, String> {
        let at = at.unwrap_or_else(SystemTime::now).duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let response = self
            .http
            .get(format!("{url}/api/v1/query"))
            .query(&[("query", query), ("time", &format!("{at:.3}"))])
            .send()
            .await
            .map_err(|e| format!("cannot reach Prometheus at {url}: {e}"))?;
        let status = response.status();
        let body: ApiResponse = response.json().await.map_err(|e| format!("Prometheus at {url} answered {status} with a body that is not its API's JSON: {e}"))?;
        if body.status != "success" {
            return Err(format!("Prometheus rejected the query ({}): {}", body.error_type.unwrap_or_default(), body.error.unwrap_or_default()));
        }
        let data = body.data.ok_or_else(|| "Prometheus answered success without data".to_string())?;
        let sample = match data {
            QueryData::Scalar { result } => Some(result),
            QueryData::Vector { result } => match result.len() {
                0 => None,
                1 => Some(result.into_iter().next().map(|s| s.value).unwrap_or_default()),
                n => return Err(format!("the query yields {n} series, not one; fix: aggregate it, e.g. `sum({query})`")),
            },
            QueryData::Other => return Err("the query yields a matrix or a string, not a number; fix: write an instant vector or scalar expression".into()),
        };
        let Some(Sample(_, text)) = sample else { return Ok(None) };
        let value: f64 = text.parse().map_err(|_| format!("Prometheus returned `{text}`, not a number"))?;
        Ok(value.is_finite().then_some(value))
    }
}

#[async_trait]
impl MetricSource for PrometheusSource {
    async fn collect(&self, policy: &Policy) -> Result<Observation, SourceError> {
        let MetricSourceSpec::Prometheus { url } = &policy.metric_source else {
            return Err(SourceError::Failed { source_name: SOURCE, reason: format!("policy {} does not read Prometheus", policy.name) });
        };
        let mut observation = Observation::default();
        let mut failures = Vec::new();
        for metric in &policy.metrics {
            match self.instant(url, &metric.query, None).await {
                Ok(Some(value)) => {
                    observation.values.insert(metric.name.clone(), value);
                }
                Ok(None) => tracing::debug!(policy = %policy.name, metric = %metric.name, "no series for the query now"),
                Err(reason) => {
                    tracing::warn!(policy = %policy.name, metric = %metric.name, "{reason}");
                    failures.push(format!("{}: {reason}", metric.name));
                }
            }
        }
        if observation.values.is_empty() && !failures.is_empty() {
            return Err(SourceError::Failed { source_name: SOURCE, reason: failures.join("; ") });
        }
        Ok(observation)
    }
}

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    data: Option<QueryData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", rename_all = "lowercase")]
enum QueryData {
    Scalar { result: Sample },
    Vector { result: Vec<Series> },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct Series {
    value: Sample,
}

/// `[unix seconds, "value"]`.
#[derive(Debug, Default, Deserialize)]
struct Sample(serde::de::IgnoredAny, String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_api_shapes() {
        let vector: ApiResponse = serde_json::from_str(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}}"#).unwrap();
        assert!(matches!(vector.data, Some(QueryData::Vector { ref result }) if result[0].value.1 == "0.25"));
        let scalar: ApiResponse = serde_json::from_str(r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"4"]}}"#).unwrap();
        assert!(matches!(scalar.data, Some(QueryData::Scalar { result: Sample(_, ref v) }) if v == "4"));
        let matrix: ApiResponse = serde_json::from_str(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#).unwrap();
        assert!(matches!(matrix.data, Some(QueryData::Other)));
        let error: ApiResponse = serde_json::from_str(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#).unwrap();
        assert_eq!(error.error.as_deref(), Some("parse error"));
    }
}
