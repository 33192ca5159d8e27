//! The Prometheus source: each metric of a policy is a PromQL expression, evaluated through the
//! HTTP API (`/api/v1/query`, and `/api/v1/query_range` for the warm start) of the policy's
//! `source.url`: Prometheus, or an API-compatible store (Thanos, VictoriaMetrics, Mimir).
//!
//! Bad data is never acted on. A query must yield one number: a scalar, one series, or one
//! series per pod (summed). If any metric of a policy yields nothing (even after its
//! `fallback_query`), a value that is not finite, data older than two intervals (measured per
//! selector with `timestamp()`, since an instant query reports the evaluation time), or an
//! error or timeout, the whole observation fails: that tick records why and takes no action.
//! The next tick tries again, so collection recovers by itself when Prometheus does.

use super::batch::{self, Batch, Labelled, Shaped, Share};
use super::{MetricSource, Observation, SourceError};
use crate::config::promql;
use crate::config::{Metric, MetricSourceSpec, Policy, PrometheusAccess, Resource};
use async_trait::async_trait;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SOURCE: &str = "prometheus";
/// The largest answer read from the store: 32 MiB (a policy's queries yield one number, or
/// one per pod).
const MAX_BODY: usize = 32 << 20;
/// How far ahead of this host's clock a sample may be stamped and still count as now: clock
/// skew between the host and the store. Further ahead, it is from the future: stale.
const SKEW_SECONDS: f64 = 1.0;

/// Evaluates the policies' PromQL against their Prometheus servers.
#[derive(Debug, Clone)]
pub struct PrometheusSource {
    http: reqwest::Client,
    /// Clients that also trust a policy's `source.ca_file`, by file, with what the file held.
    with_ca: std::sync::Arc<std::sync::Mutex<BTreeMap<std::path::PathBuf, (Vec<u8>, reqwest::Client)>>>,
    /// The last pass's batches, by their members' shape and values: a batch's index is built
    /// once while its members stay the same.
    batches: Arc<std::sync::Mutex<HashMap<String, Arc<Batch>>>>,
}

/// The most bytes of a token or CA file read.
const MAX_SECRET_BYTES: u64 = 1 << 20;

/// Where a query goes: the store's URL and how to reach it (a bare URL: no credentials).
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub url: &'a str,
    pub access: &'a PrometheusAccess,
}

static NO_ACCESS: std::sync::LazyLock<PrometheusAccess> = std::sync::LazyLock::new(PrometheusAccess::default);

impl<'a> From<&'a str> for Endpoint<'a> {
    fn from(url: &'a str) -> Self {
        Endpoint { url, access: &NO_ACCESS }
    }
}

impl<'a> From<&'a String> for Endpoint<'a> {
    fn from(url: &'a String) -> Self {
        Endpoint::from(url.as_str())
    }
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().timeout(crate::cluster::ATTEMPT_TIMEOUT).user_agent(concat!("augur/", env!("CARGO_PKG_VERSION")))
}


/// One metric's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub value: f64,
    /// Each pod's (or node's) value, when the query yields one series per pod (or node).
    pub parts: BTreeMap<String, f64>,
    /// Seconds since the newest sample behind the query (0 for a query without selectors).
    pub age_seconds: f64,
}

impl PrometheusSource {
    pub fn new() -> anyhow::Result<Self> {
        crate::tls::install_provider();
        let http = client_builder().build()?;
        Ok(Self { http, with_ca: Default::default(), batches: Default::default() })
    }

    /// The client for an endpoint: the shared one, or one that also trusts its CA file
    /// (built once per file and kept until the file changes).
    fn client_for(&self, access: &PrometheusAccess) -> Result<reqwest::Client, String> {
        let Some(ca_file) = &access.ca_file else { return Ok(self.http.clone()) };
        let pem = crate::config::files::read(ca_file, MAX_SECRET_BYTES).map_err(|e| format!("source.ca_file {}: {e}; fix: {}", ca_file.display(), e.fix()))?;
        let mut clients = self.with_ca.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((known, client)) = clients.get(ca_file)
            && *known == pem
        {
            return Ok(client.clone());
        }
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("source.ca_file {} holds no PEM certificate Augur can read ({e}); fix: give the CA's certificate(s) in PEM", ca_file.display()))?;
        if certificates.is_empty() {
            return Err(format!("source.ca_file {} holds no PEM certificate; fix: give the CA's certificate(s) in PEM", ca_file.display()));
        }
        let mut builder = client_builder();
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
        let client = builder.build().map_err(|e| format!("source.ca_file {}: {e}", ca_file.display()))?;
        clients.insert(ca_file.clone(), (pem, client.clone()));
        Ok(client)
    }

    async fn api(&self, at: &Endpoint<'_>, path: &str, params: &[(&str, String)]) -> Result<QueryData, String> {
        self.call(at, path, params, false).await
    }

    /// Like [`api`](Self::api), with the parameters in a form body (POST, as Prometheus'
    /// API allows): a batched query can be longer than a proxy lets a URL be.
    async fn call(&self, at: &Endpoint<'_>, path: &str, params: &[(&str, String)], form: bool) -> Result<QueryData, String> {
        let url = at.url;
        let client = self.client_for(at.access)?;
        let mut request = if form { client.post(format!("{url}{path}")).form(params) } else { client.get(format!("{url}{path}")).query(params) };
        // Read afresh each time: a mounted token is rotated in place.
        if let Some(file) = &at.access.bearer_token_file {
            let token = crate::config::files::read_text(file, MAX_SECRET_BYTES).map_err(|e| format!("source.bearer_token_file {}: {e}; fix: {}", file.display(), e.fix()))?;
            request = request.bearer_auth(token.trim());
        }
        for (name, value) in &at.access.headers {
            request = request.header(name, value);
        }
        let mut response = request.send().await.map_err(|e| format!("cannot reach Prometheus at {url}: {:#}", anyhow::Error::new(e)))?;
        let status = response.status();
        // Read at most MAX_BODY: a store that streams without end is an error, not a hang.
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("Prometheus at {url} broke off its answer: {e}"))? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(format!("Prometheus at {url} answered more than {} MiB; fix: aggregate the query", MAX_BODY >> 20));
            }
            bytes.extend_from_slice(&chunk);
        }
        let shown = |text: Option<String>| crate::text::shown(&text.unwrap_or_default()).into_owned();
        match serde_json::from_slice::<ApiResponse>(&bytes) {
            // Prometheus' own refusal (a bad query is a 400 with its error).
            Ok(body) if body.status != "success" => Err(format!("Prometheus rejected the query ({}): {} (HTTP {status})", shown(body.error_type), shown(body.error))),
            // A non-2xx status is an error whatever the body says.
            _ if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN => Err(format!("Prometheus at {url} answered HTTP {status}; fix: give the credentials it expects (source.bearer_token_file, or source.headers for a tenant)")),
            _ if !status.is_success() => Err(format!("Prometheus at {url} answered HTTP {status}")),
            Err(e) => Err(format!("Prometheus at {url} answered {status} with a body that is not its API's JSON: {e}")),
            Ok(body) => body.data.ok_or_else(|| "Prometheus answered success without data".to_string()),
        }
    }

    /// Evaluates one PromQL expression now. `Ok(None)`: no series. Several series are summed
    /// when each is a pod's (a `pod` label); otherwise they are an error.
    pub async fn instant<'a>(&self, at: impl Into<Endpoint<'a>>, query: &str) -> Result<Option<f64>, String> {
        Ok(self.instant_parts(at, query, None).await?.map(|(value, _)| value))
    }

    /// Like [`instant`](Self::instant), with each object's value when the series are per
    /// object: per pod (every series has a `pod` label, e.g. `sum by (pod) (...)`; the value
    /// is their sum) unless `resource` says per node (a `node` label; the value is the
    /// hottest's).
    pub async fn instant_parts<'a>(&self, at: impl Into<Endpoint<'a>>, query: &str, resource: Option<Resource>) -> Result<Option<(f64, BTreeMap<String, f64>)>, String> {
        let now = unix(SystemTime::now());
        let data = self.api(&at.into(), "/api/v1/query", &[("query", query.to_string()), ("time", format!("{now:.3}"))]).await?;
        match data {
            QueryData::Scalar { result } => Ok(Some((parse(&result.1)?, BTreeMap::new()))),
            QueryData::Vector { result } => reduce(labelled(result)?, query, resource),
            QueryData::Matrix { .. } | QueryData::Other => Err("the query yields a range or a string, not a number; fix: write an instant vector or scalar expression".into()),
        }
    }

    /// How many series (or 1 for a scalar) an instant query yields now: for checking that a
    /// dashboard's or an alert's expression has data.
    pub async fn series_count<'a>(&self, at: impl Into<Endpoint<'a>>, query: &str) -> Result<usize, String> {
        let now = unix(SystemTime::now());
        match self.api(&at.into(), "/api/v1/query", &[("query", query.to_string()), ("time", format!("{now:.3}"))]).await? {
            QueryData::Scalar { .. } => Ok(1),
            QueryData::Vector { result } => Ok(result.len()),
            QueryData::Matrix { result } => Ok(result.len()),
            QueryData::Other => Ok(0),
        }
    }

    /// Evaluates one expression over `[start, end]` every `step`: the (unix time, value) points
    /// of its single series (or the per-pod sums).
    pub async fn range<'a>(&self, at: impl Into<Endpoint<'a>>, query: &str, start: SystemTime, end: SystemTime, step: Duration) -> Result<Vec<(f64, f64)>, String> {
        let params = [("query", query.to_string()), ("start", format!("{:.3}", unix(start))), ("end", format!("{:.3}", unix(end))), ("step", format!("{}s", step.as_secs().max(1)))];
        let data = self.api(&at.into(), "/api/v1/query_range", &params).await?;
        let QueryData::Matrix { result } = data else { return Err("a range query did not yield a matrix".into()) };
        points_of(result.into_iter().map(RangeSeries::points).collect(), query)
    }

    /// A batch's values over a window, split into each member's series of points.
    async fn batched_range(&self, at: &Endpoint<'_>, batch: &Batch, window: &Window) -> Result<Vec<Vec<Points>>, String> {
        let params = [("query", batch.values.clone()), ("start", format!("{:.3}", unix(window.start))), ("end", format!("{:.3}", unix(window.end))), ("step", format!("{}s", window.step.as_secs().max(1)))];
        match self.call(at, "/api/v1/query_range", &params, true).await? {
            QueryData::Matrix { result } => Ok(batch.split_range(result.into_iter().map(RangeSeries::points).collect())),
            _ => Err("a batched range query did not yield a matrix".into()),
        }
    }

    /// One round of [`backfill_all`](MetricSource::backfill_all): each wanted query over its
    /// window, batched by shape per store and window where it can be, else once per distinct
    /// text, store and window, in the order wanted.
    async fn range_round(&self, wanted: &[(Endpoint<'_>, &str, Window)]) -> Vec<Result<Vec<(f64, f64)>, String>> {
        use futures::StreamExt;
        type Asked<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;
        let mut answers: Vec<Option<Result<Vec<(f64, f64)>, String>>> = vec![None; wanted.len()];
        let mut shapes: BTreeMap<(String, String, String), Vec<(usize, Shaped)>> = BTreeMap::new();
        for (k, (at, query, window)) in wanted.iter().enumerate() {
            if let Some(shaped) = Shaped::of(query) {
                shapes.entry((store_key(at), shaped.shape.clone(), window.key())).or_default().push((k, shaped));
            }
        }
        let mut batches = Vec::new();
        for members in shapes.into_values() {
            let shaped: Vec<&Shaped> = members.iter().map(|(_, s)| s).collect();
            if let Some(batch) = Batch::new(&shaped) {
                batches.push((batch, members.into_iter().map(|(k, _)| k).collect::<Vec<_>>()));
            }
        }
        let mut asks: Vec<Asked<'_, Vec<Vec<Points>>>> = Vec::with_capacity(batches.len());
        for (batch, members) in &batches {
            let (at, _, window) = &wanted[members[0]];
            asks.push(Box::pin(self.batched_range(at, batch, window)));
        }
        let shared: Vec<_> = futures::stream::iter(asks).buffered(QUERIES_AT_ONCE).collect().await;
        for ((batch, members), shares) in batches.iter().zip(shared) {
            match shares {
                Ok(shares) => {
                    for (&k, share) in members.iter().zip(shares) {
                        answers[k] = Some(points_of(share, wanted[k].1));
                    }
                }
                Err(reason) => tracing::debug!("prometheus: a batch of {} range queries failed, read one by one: {reason}", batch.len()),
            }
        }
        let mut alone: BTreeMap<(String, &str, String), Vec<usize>> = BTreeMap::new();
        for (k, (at, query, window)) in wanted.iter().enumerate().filter(|(k, _)| answers[*k].is_none()) {
            alone.entry((store_key(at), query, window.key())).or_default().push(k);
        }
        tracing::debug!(batches = batches.len(), alone = alone.len(), "prometheus: one round of range reads");
        let mut asks: Vec<Asked<'_, Vec<(f64, f64)>>> = Vec::with_capacity(alone.len());
        for members in alone.values() {
            let (at, query, window) = &wanted[members[0]];
            asks.push(Box::pin(self.range(*at, query, window.start, window.end, window.step)));
        }
        let reads: Vec<_> = futures::stream::iter(asks).buffered(QUERIES_AT_ONCE).collect().await;
        for (members, read) in alone.values().zip(reads) {
            for &k in members {
                answers[k] = Some(read.clone());
            }
        }
        answers.into_iter().map(|a| a.expect("every wanted range is answered")).collect()
    }

    /// A batch's answer, split into each member's share.
    async fn batched(&self, at: &Endpoint<'_>, batch: &Batch, now: f64) -> Result<Vec<Share>, String> {
        let params = [("query", batch.query.clone()), ("time", format!("{now:.3}"))];
        match self.call(at, "/api/v1/query", &params, true).await? {
            QueryData::Vector { result } => batch.split(labelled(result)?),
            _ => Err("a batched query did not yield a vector".into()),
        }
    }

    /// Reads one metric: its query, else its fallback query; then the age of its data.
    pub async fn read<'a>(&self, at: impl Into<Endpoint<'a>>, metric: &Metric) -> Result<Reading, String> {
        let at: Endpoint<'a> = at.into();
        if let Some(reading) = self.read_query(at, &metric.query, metric.resource).await? {
            return Ok(reading);
        }
        if let Some(fallback) = &metric.fallback_query
            && let Some(reading) = self.read_query(at, fallback, metric.resource).await?
        {
            return Ok(reading);
        }
        Err(NO_SERIES.into())
    }

    /// Reads one query and the age of its data; `None`: no series.
    async fn read_query(&self, at: Endpoint<'_>, query: &str, resource: Option<Resource>) -> Result<Option<Reading>, String> {
        let Some(value) = self.instant_parts(at, query, resource).await? else { return Ok(None) };
        let (value, parts) = present(Some(value))?;
        let mut age_seconds: f64 = 0.0;
        for selector in promql::selectors(query)? {
            match self.instant(at, &promql::age_query(&selector)).await? {
                // Not finite, or from the future: no age can be trusted, so it is stale.
                Some(age) if !age.is_finite() || age < -SKEW_SECONDS => return Ok(Some(Reading { value, parts, age_seconds: age })),
                Some(age) => age_seconds = age_seconds.max(age),
                None => return Err(format!("no samples of `{selector}` within Prometheus' lookback: the data is stale")),
            }
        }
        Ok(Some(Reading { value, parts, age_seconds }))
    }

    /// One round of [`collect_all`](MetricSource::collect_all): each wanted query (the
    /// policy, the metric, the query) read, batched by shape where it can be and else once
    /// per distinct text per store, in the order wanted (`None`: no series). `kept` holds
    /// the last pass's batches; `used` gets this one's.
    async fn read_round(&self, policies: &[&Policy], wanted: &[(usize, usize, &str)], now: f64, kept: &mut HashMap<String, Arc<Batch>>, used: &mut HashMap<String, Arc<Batch>>) -> Vec<Option<Result<Reading, String>>> {
        use futures::StreamExt;
        type Asked<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;
        let mut answers: Vec<Option<Option<Result<Reading, String>>>> = vec![None; wanted.len()];
        let at = |k: usize| endpoint(policies[wanted[k].0]).expect("only Prometheus policies are read");

        let mut shapes: BTreeMap<(String, String), Vec<(usize, Shaped)>> = BTreeMap::new();
        for (k, (_, _, query)) in wanted.iter().enumerate() {
            if let Some(shaped) = Shaped::of(query) {
                shapes.entry((store_key(&at(k)), shaped.shape.clone())).or_default().push((k, shaped));
            }
        }
        let mut batches = Vec::new();
        for members in shapes.into_values() {
            let shaped: Vec<&Shaped> = members.iter().map(|(_, s)| s).collect();
            let key = batch::key(&shaped);
            let Some(batch) = kept.remove(&key).or_else(|| Batch::new(&shaped).map(Arc::new)) else { continue };
            used.insert(key, batch.clone());
            batches.push((at(members[0].0), batch, members.into_iter().map(|(k, _)| k).collect::<Vec<_>>()));
        }
        let mut asks: Vec<Asked<'_, Vec<Share>>> = Vec::with_capacity(batches.len());
        for (at, batch, _) in &batches {
            asks.push(Box::pin(self.batched(at, batch, now)));
        }
        let shared: Vec<_> = futures::stream::iter(asks).buffered(QUERIES_AT_ONCE).collect().await;
        for ((_, batch, members), shares) in batches.iter().zip(shared) {
            match shares {
                Ok(shares) => {
                    for (&k, share) in members.iter().zip(shares) {
                        let (i, j, query) = wanted[k];
                        answers[k] = Some(reading_of(share, query, policies[i].metrics[j].resource, now));
                    }
                }
                Err(reason) => tracing::debug!("prometheus: a batch of {} queries failed, read one by one: {reason}", batch.len()),
            }
        }

        let mut alone: BTreeMap<(String, &str, Option<&'static str>), Vec<usize>> = BTreeMap::new();
        for (k, &(i, j, query)) in wanted.iter().enumerate().filter(|(k, _)| answers[*k].is_none()) {
            alone.entry((store_key(&at(k)), query, policies[i].metrics[j].resource.map(Resource::label))).or_default().push(k);
        }
        tracing::debug!(batches = batches.len(), batched = batches.iter().map(|(_, b, _)| b.len()).sum::<usize>(), alone = alone.len(), "prometheus: one round of reads");
        let mut asks: Vec<Asked<'_, Option<Reading>>> = Vec::with_capacity(alone.len());
        for members in alone.values() {
            let (i, j, query) = wanted[members[0]];
            asks.push(Box::pin(self.read_query(at(members[0]), query, policies[i].metrics[j].resource)));
        }
        let reads: Vec<_> = futures::stream::iter(asks).buffered(QUERIES_AT_ONCE).collect().await;
        for (members, read) in alone.values().zip(reads) {
            for &k in members {
                answers[k] = Some(read.clone().transpose());
            }
        }
        answers.into_iter().map(|a| a.expect("every wanted query is answered")).collect()
    }
}

/// Why a metric has no reading: neither its query nor its fallback yields a series.
const NO_SERIES: &str = "no series now (an empty result); fix: check the query in Prometheus, or that its targets are scraped";

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

fn parse(text: &str) -> Result<f64, String> {
    text.parse().map_err(|_| format!("Prometheus returned `{text}`, not a number"))
}

/// A series of (unix time, value) points with its labels.
type Points = (BTreeMap<String, String>, Vec<(f64, f64)>);

/// The span and step of a range query.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: SystemTime,
    end: SystemTime,
    step: Duration,
}

impl Window {
    fn key(&self) -> String {
        format!("{:.3}/{:.3}/{}", unix(self.start), unix(self.end), self.step.as_secs())
    }
}

/// A range query's series as one series of points: the one series, or the sum at each time
/// of one per pod; values that are not numbers, or not finite, are left out.
fn points_of(series: Vec<Points>, query: &str) -> Result<Vec<(f64, f64)>, String> {
    if series.len() > 1 && !series.iter().all(|(labels, _)| labels.contains_key("pod")) {
        return Err(format!("the query yields {} series, not one; fix: aggregate it, e.g. `sum({query})`", series.len()));
    }
    let mut points: BTreeMap<i64, f64> = BTreeMap::new();
    for (_, values) in series {
        for (t, v) in values {
            *points.entry((t * 1000.0).round() as i64).or_default() += v;
        }
    }
    Ok(points.into_iter().map(|(t, v)| (t as f64 / 1000.0, v)).filter(|(_, v)| v.is_finite()).collect())
}

/// A query's series with their values read.
fn labelled(result: Vec<Series>) -> Result<Vec<Labelled>, String> {
    result.into_iter().map(|s| Ok((s.metric, parse(&s.value.1)?))).collect()
}

/// A query's series as one number: the one series, or the sum of one per pod (the hottest of
/// one per node, where `resource` says so), with each object's value. `None`: no series.
fn reduce(series: Vec<Labelled>, query: &str, resource: Option<Resource>) -> Result<Option<(f64, BTreeMap<String, f64>)>, String> {
    let label = resource.map_or("pod", Resource::label);
    let by_label = !series.is_empty() && series.iter().all(|(labels, _)| labels.contains_key(label));
    if series.len() > 1 && !by_label {
        return Err(format!("the query yields {} series, not one (nor one per {label}: a `{label}` label on each); fix: aggregate it, e.g. `sum({query})` or `sum by ({label}) (...)`", series.len()));
    }
    let value = match resource {
        Some(Resource::NodeTemperature) => series.iter().map(|(_, v)| *v).reduce(f64::max),
        _ => (!series.is_empty()).then(|| series.iter().map(|(_, v)| *v).sum()),
    };
    let parts = if by_label { series.into_iter().map(|(mut labels, v)| (labels.remove(label).unwrap_or_default(), v)).collect() } else { BTreeMap::new() };
    Ok(value.map(|value| (value, parts)))
}

/// A metric's number, or why there is none Augur can act on.
fn present(value: Option<(f64, BTreeMap<String, f64>)>) -> Result<(f64, BTreeMap<String, f64>), String> {
    let Some((value, parts)) = value else { return Err(NO_SERIES.into()) };
    if !value.is_finite() {
        return Err(format!("the value is {value}, not a number Augur can act on"));
    }
    Ok((value, parts))
}

/// A metric's reading from its share of a batch; `None` where it has no series there.
fn reading_of(share: Share, query: &str, resource: Option<Resource>, now: f64) -> Option<Result<Reading, String>> {
    let value = match reduce(share.series, query, resource) {
        Ok(None) => return None,
        Ok(value) => present(value),
        Err(e) => Err(e),
    };
    Some(value.and_then(|(value, parts)| match share.newest {
        Some(newest) => Ok(Reading { value, parts, age_seconds: now - newest }),
        None => {
            let selector = promql::selectors(query).ok().and_then(|s| s.into_iter().next()).unwrap_or_default();
            Err(format!("no samples of `{selector}` within Prometheus' lookback: the data is stale"))
        }
    }))
}

/// Which store a query goes to, as a key: its URL and how it is reached.
fn store_key(at: &Endpoint<'_>) -> String {
    format!("{}\u{0}{:?}", at.url, at.access)
}

/// The most queries in flight at once against the stores.
const QUERIES_AT_ONCE: usize = 16;

fn endpoint(policy: &Policy) -> Result<Endpoint<'_>, SourceError> {
    match &policy.metric_source {
        MetricSourceSpec::Prometheus { url, access } => Ok(Endpoint { url, access }),
        _ => Err(SourceError::Failed { source_name: SOURCE, reason: format!("policy {} does not read Prometheus", policy.name) }),
    }
}

#[async_trait]
impl MetricSource for PrometheusSource {
    async fn collect(&self, policy: &Policy) -> Result<Observation, SourceError> {
        let url = endpoint(policy)?;
        let mut readings = Vec::with_capacity(policy.metrics.len());
        for metric in &policy.metrics {
            readings.push(self.read(url, metric).await);
        }
        observe(policy, readings)
    }

    /// Every due policy's metrics in one pass: one query per shape per store (see
    /// `metrics::batch`), then each other query once per distinct text per store; then, in
    /// a second round the same way, the fallback queries of the metrics that had no series.
    /// A batch the store refuses (or answers in a way that cannot be split) is read member by
    /// member.
    async fn collect_all(&self, policies: &[&Policy]) -> Vec<Result<Observation, SourceError>> {
        let now = unix(SystemTime::now());
        let mut readings: Vec<Vec<Option<Result<Reading, String>>>> = policies.iter().map(|p| vec![None; p.metrics.len()]).collect();
        let mut wanted: Vec<(usize, usize, &str)> = Vec::new();
        for (i, policy) in policies.iter().enumerate().filter(|(_, p)| endpoint(p).is_ok()) {
            wanted.extend(policy.metrics.iter().enumerate().map(|(j, m)| (i, j, m.query.as_str())));
        }
        // The last pass's batches, taken out for this one: an unchanged batch keeps its index.
        let mut kept = std::mem::take(&mut *self.batches.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut used = HashMap::new();
        for round in 0..2 {
            let answers = self.read_round(policies, &wanted, now, &mut kept, &mut used).await;
            let mut next = Vec::new();
            for ((i, j, _), answer) in wanted.into_iter().zip(answers) {
                let metric = &policies[i].metrics[j];
                match (answer, &metric.fallback_query) {
                    (Some(reading), _) => readings[i][j] = Some(reading),
                    (None, Some(fallback)) if round == 0 => next.push((i, j, fallback.as_str())),
                    (None, _) => readings[i][j] = Some(Err(NO_SERIES.into())),
                }
            }
            wanted = next;
        }
        *self.batches.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = used;
        policies
            .iter()
            .zip(readings)
            .map(|(policy, readings)| {
                endpoint(policy)?;
                observe(policy, readings.into_iter().map(|r| r.expect("every metric of a Prometheus policy is read")).collect())
            })
            .collect()
    }

    /// Every policy's past in one pass: one range query per shape, store and window (the
    /// copies of a policy share one), then the rest once per distinct text; then the fallback
    /// queries of the metrics that had no points, the same way.
    async fn backfill_all(&self, asks: &[(&Policy, usize, SystemTime)]) -> Vec<Result<BTreeMap<String, Vec<f64>>, SourceError>> {
        let mut series: Vec<Vec<Option<Result<Vec<(f64, f64)>, String>>>> = asks.iter().map(|(p, _, _)| vec![None; p.metrics.len()]).collect();
        let mut wanted: Vec<(usize, usize, Endpoint<'_>, &str, Window)> = Vec::new();
        for (i, (policy, points, end)) in asks.iter().enumerate() {
            let Ok(at) = endpoint(policy) else { continue };
            let step = policy.forecast.step;
            let window = Window { start: *end - step * (points.saturating_sub(1) as u32), end: *end, step };
            wanted.extend(policy.metrics.iter().enumerate().map(|(j, m)| (i, j, at, m.query.as_str(), window)));
        }
        for round in 0..2 {
            let asked: Vec<(Endpoint<'_>, &str, Window)> = wanted.iter().map(|(_, _, at, query, window)| (*at, *query, *window)).collect();
            let answers = self.range_round(&asked).await;
            let mut next = Vec::new();
            for ((i, j, at, _, window), answer) in wanted.into_iter().zip(answers) {
                match (answer, &asks[i].0.metrics[j].fallback_query) {
                    (Ok(points), Some(fallback)) if points.is_empty() && round == 0 => next.push((i, j, at, fallback.as_str(), window)),
                    (answer, _) => series[i][j] = Some(answer),
                }
            }
            wanted = next;
        }
        asks.iter()
            .zip(series)
            .map(|((policy, _, _), series)| {
                endpoint(policy)?;
                let mut filled = BTreeMap::new();
                for (metric, points) in policy.metrics.iter().zip(series) {
                    let points = points.expect("every metric's past is read").map_err(|reason| SourceError::Failed { source_name: SOURCE, reason: format!("{}: {reason}", metric.name) })?;
                    filled.insert(metric.name.clone(), points.into_iter().map(|(_, v)| v).collect());
                }
                Ok(filled)
            })
            .collect()
    }

    async fn backfill(&self, policy: &Policy, points: usize, end: SystemTime) -> Result<BTreeMap<String, Vec<f64>>, SourceError> {
        let url = endpoint(policy)?;
        // The histories hold one point per forecast step.
        let step = policy.forecast.step;
        let start = end - step * (points.saturating_sub(1) as u32);
        let mut filled = BTreeMap::new();
        for metric in &policy.metrics {
            let mut series = self.range(url, &metric.query, start, end, step).await.map_err(|reason| SourceError::Failed { source_name: SOURCE, reason: format!("{}: {reason}", metric.name) })?;
            if series.is_empty()
                && let Some(fallback) = &metric.fallback_query
            {
                series = self.range(url, fallback, start, end, step).await.map_err(|reason| SourceError::Failed { source_name: SOURCE, reason: format!("{}: {reason}", metric.name) })?;
            }
            filled.insert(metric.name.clone(), series.into_iter().map(|(_, v)| v).collect());
        }
        Ok(filled)
    }
}

/// A policy's observation from its metrics' readings (in the order of its metrics): any
/// failure fails it, else any stale metric makes it stale.
fn observe(policy: &Policy, readings: Vec<Result<Reading, String>>) -> Result<Observation, SourceError> {
    let limit = 2.0 * policy.interval.as_secs_f64();
    let mut observation = Observation::default();
    let (mut failures, mut stale) = (Vec::new(), Vec::new());
    for (metric, reading) in policy.metrics.iter().zip(readings) {
        match reading {
            Ok(reading) if !reading.age_seconds.is_finite() => {
                stale.push(format!("{}: the age of the newest sample computes to {}, not a number of seconds", metric.name, reading.age_seconds));
            }
            Ok(reading) if reading.age_seconds < -SKEW_SECONDS => {
                stale.push(format!("{}: the newest sample is stamped {:.0}s in the future (this host's clock, or the store's, is wrong)", metric.name, -reading.age_seconds));
            }
            Ok(reading) if reading.age_seconds > limit => {
                stale.push(format!("{}: the newest sample is {:.0}s old (more than two intervals, {limit:.0}s)", metric.name, reading.age_seconds));
                observation.ages.insert(metric.name.clone(), reading.age_seconds);
            }
            Ok(reading) => {
                observation.values.insert(metric.name.clone(), reading.value);
                if !reading.parts.is_empty() {
                    observation.parts.insert(metric.name.clone(), reading.parts);
                }
                observation.ages.insert(metric.name.clone(), reading.age_seconds);
            }
            Err(reason) => failures.push(format!("{}: {reason}", metric.name)),
        }
    }
    if !failures.is_empty() {
        return Err(SourceError::Failed { source_name: SOURCE, reason: failures.into_iter().chain(stale).collect::<Vec<_>>().join("; ") });
    }
    if !stale.is_empty() {
        return Err(SourceError::Stale { source_name: SOURCE, reason: stale.join("; ") });
    }
    Ok(observation)
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
    Matrix { result: Vec<RangeSeries> },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct Series {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: Sample,
}

#[derive(Debug, Deserialize)]
struct RangeSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    values: Vec<Sample>,
}

impl RangeSeries {
    /// Its labels and its points whose values are numbers.
    fn points(self) -> Points {
        (self.metric, self.values.into_iter().filter_map(|Sample(t, v)| parse(&v).ok().map(|v| (t, v))).collect())
    }
}

/// `[unix seconds, "value"]`.
#[derive(Debug, Default, Deserialize)]
struct Sample(f64, String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_api_shapes() {
        let vector: ApiResponse = serde_json::from_str(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}}"#).unwrap();
        assert!(matches!(vector.data, Some(QueryData::Vector { ref result }) if result[0].value.1 == "0.25"));
        let scalar: ApiResponse = serde_json::from_str(r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"4"]}}"#).unwrap();
        assert!(matches!(scalar.data, Some(QueryData::Scalar { result: Sample(_, ref v) }) if v == "4"));
        let matrix: ApiResponse = serde_json::from_str(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"2"],[2,"3"]]}]}}"#).unwrap();
        assert!(matches!(matrix.data, Some(QueryData::Matrix { ref result }) if result[0].values.len() == 2));
        let string: ApiResponse = serde_json::from_str(r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#).unwrap();
        assert!(matches!(string.data, Some(QueryData::Other)));
        let error: ApiResponse = serde_json::from_str(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#).unwrap();
        assert_eq!(error.error.as_deref(), Some("parse error"));
    }
}
