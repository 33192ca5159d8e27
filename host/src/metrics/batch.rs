//! One query per shape: the metrics of many policies whose PromQL differs only in the values of
//! its selector's `=` and `=~` matchers (`pod=~"web-1-.*"`, `pod=~"web-2-.*"`, ...) are read
//! from the store with one query per tick, and each policy's answer is split back out here.
//!
//! Only the shapes whose answer can be split exactly are batched: a bare selector, or `sum`,
//! `min`, `max` or `count` (with or without `by`) over a selector or over a label-keeping range
//! function of one (`rate`, `increase`, `*_over_time`, ...). The batch asks for the union of the
//! members' matchers (a regex alternation, fully anchored as every PromQL regex is), grouped
//! `by` the labels whose values vary besides the query's own grouping; each member then takes
//! the series its own matchers select and combines them as its own query would have (a sum of
//! sums, a max of maxes, a sum of counts). The age of the data rides in the same round trip:
//! `max by (varying labels) (timestamp(selector))`, joined with `or` under a marker label.
//!
//! A shape with one member is asked the same way: its value and its age in one round trip.
//!
//! Every other query (`histogram_quantile`, `avg`, arithmetic) is read on its own, once per
//! distinct text per store (see `prometheus.rs`).

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, LabelModifier, VectorSelector};
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

/// The label that tells a batch's value series from its age series.
const PART: &str = "augur_part";

/// How a member's series recombine into what its own aggregation would have given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combine {
    Sum,
    Min,
    Max,
    /// Counts per group add up.
    Count,
}

impl Combine {
    fn of(op: &str) -> Option<Self> {
        match op {
            "sum" => Some(Self::Sum),
            "min" => Some(Self::Min),
            "max" => Some(Self::Max),
            "count" => Some(Self::Count),
            _ => None,
        }
    }

    fn fold(self, a: f64, b: f64) -> f64 {
        match self {
            Self::Sum | Self::Count => a + b,
            Self::Min => a.min(b),
            Self::Max => a.max(b),
        }
    }
}

/// Range functions that keep every label of their series (and drop only the name), so a
/// grouping over their result can be taken apart by those labels.
const LABEL_KEEPING: &[&str] = &[
    "rate", "irate", "increase", "delta", "idelta", "deriv", "resets", "changes", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "last_over_time", "stddev_over_time", "stdvar_over_time", "present_over_time",
];

/// A query that can share a batch with others of its shape.
#[derive(Debug, Clone)]
pub struct Shaped {
    /// The query with the values of its own matchers left out: the batch's key.
    pub shape: String,
    expr: Expr,
    /// The selector's `=` and `=~` matchers (but the name's), in the order written.
    own: Vec<Matcher>,
    /// The aggregation and its `by` labels; `None` for a bare selector.
    combine: Option<(Combine, Vec<String>)>,
}

impl Shaped {
    /// `query`'s shape, or `None` where its answer could not be split exactly.
    pub fn of(query: &str) -> Option<Self> {
        let expr = parser::parse(query).ok()?;
        let combine = match &expr {
            Expr::VectorSelector(_) => None,
            Expr::Aggregate(a) if a.param.is_none() => {
                let by = match &a.modifier {
                    None => Vec::new(),
                    Some(LabelModifier::Include(labels)) => labels.labels.clone(),
                    Some(LabelModifier::Exclude(_)) => return None,
                };
                Some((Combine::of(&a.op.to_string())?, by))
            }
            _ => return None,
        };
        let mut blank = expr.clone();
        let selector = selector_mut(&mut blank)?;
        if !selector.matchers.or_matchers.is_empty() {
            return None;
        }
        let mut own = Vec::new();
        for m in selector.matchers.matchers.iter_mut().filter(|m| varies(m)) {
            own.push(m.clone());
            m.value.clear();
        }
        Some(Self { shape: blank.to_string(), expr, own, combine })
    }

    fn values(&self) -> impl Iterator<Item = &str> {
        self.own.iter().map(|m| m.value.as_str())
    }
}

/// A matcher whose value may differ between the members of a batch.
fn varies(m: &Matcher) -> bool {
    m.name != "__name__" && matches!(m.op, MatchOp::Equal | MatchOp::Re(_))
}

/// The one selector of a batchable expression: the aggregation's argument, bare or inside a
/// label-keeping range function.
fn selector_mut(expr: &mut Expr) -> Option<&mut VectorSelector> {
    let inner = match expr {
        Expr::Aggregate(a) => a.expr.as_mut(),
        other => other,
    };
    match inner {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::Call(call) if LABEL_KEEPING.contains(&call.func.name) && call.args.args.len() == 1 => match call.args.args[0].as_mut() {
            Expr::MatrixSelector(ms) => Some(&mut ms.vs),
            _ => None,
        },
        _ => None,
    }
}

/// The key under which a batch of these members is kept between ticks: their shape and values.
pub fn key(members: &[&Shaped]) -> String {
    let mut key = members.first().map(|m| m.shape.clone()).unwrap_or_default();
    for member in members {
        key.push('\u{1}');
        for value in member.values() {
            key.push_str(value);
            key.push('\u{2}');
        }
    }
    key
}

/// A series of an answer: its labels and its value.
pub type Labelled = (BTreeMap<String, String>, f64);

/// What a batch gives one member: the series its own query would have given, and the newest
/// sample's time behind its selector (`None`: no sample within the store's lookback).
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub series: Vec<Labelled>,
    pub newest: Option<f64>,
}

/// One query for many members of one shape, and how to split its answer.
#[derive(Debug)]
pub struct Batch {
    /// The values and the ages of every member, in one expression.
    pub query: String,
    /// The values alone: for a range query (the warm start).
    pub values: String,
    /// The labels whose values differ between members.
    labels: Vec<String>,
    /// Each member's matchers on `labels`, in that order.
    members: Vec<Vec<Matcher>>,
    /// The members by their matcher on `labels[0]`.
    index: Index,
    combine: Option<(Combine, Vec<String>)>,
}

#[derive(Debug)]
enum Index {
    /// No label varies: every member takes every series.
    All,
    /// Every member matches `labels[0]` by equality.
    Equal(HashMap<String, Vec<usize>>),
    /// Some match by regex: one pass of a set of all of them (each anchored, as PromQL's are).
    Set(regex::RegexSet),
    /// Too many or too large for a set: each member's matcher in turn.
    Each,
}

/// The regex a rendered union matcher carries: the union is the store's to compile; here the
/// matcher is only written out.
static RENDER_ONLY: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new("^$").expect("a valid regex"));

impl Batch {
    /// The batch of `members`, all of one shape (`None` if they are not).
    pub fn new(members: &[&Shaped]) -> Option<Self> {
        let first = *members.first()?;
        if members.iter().any(|m| m.shape != first.shape || m.own.len() != first.own.len()) {
            return None;
        }
        let varying: Vec<usize> = (0..first.own.len()).filter(|&k| members.iter().any(|m| m.own[k].value != first.own[k].value || m.own[k].op != first.own[k].op)).collect();
        let labels: Vec<String> = varying.iter().map(|&k| first.own[k].name.clone()).collect();
        let mut expr = first.expr.clone();
        let selector = selector_mut(&mut expr)?;
        let mut written = 0;
        for m in selector.matchers.matchers.iter_mut().filter(|m| varies(m)) {
            if varying.contains(&written) {
                let mut alternatives: Vec<String> = members.iter().map(|member| alternative(&member.own[written])).collect();
                alternatives.sort();
                alternatives.dedup();
                *m = Matcher::new(MatchOp::Re(RENDER_ONLY.clone()), &m.name, &alternatives.join("|"));
            }
            written += 1;
        }
        let mut plain = selector.clone();
        (plain.offset, plain.at) = (None, None);
        if let (Expr::Aggregate(a), Some((_, by))) = (&mut expr, &first.combine) {
            let mut grouping: Vec<&str> = by.iter().map(String::as_str).collect();
            grouping.extend(labels.iter().map(String::as_str).filter(|l| !by.iter().any(|b| b == l)));
            a.modifier = Some(LabelModifier::include(grouping));
        }
        let age = if labels.is_empty() { format!("max(timestamp({plain}))") } else { format!("max by ({}) (timestamp({plain}))", labels.join(", ")) };
        let query = format!("label_replace({expr}, \"{PART}\", \"value\", \"\", \"\") or label_replace({age}, \"{PART}\", \"age\", \"\", \"\")");
        let members: Vec<Vec<Matcher>> = members.iter().map(|m| varying.iter().map(|&k| m.own[k].clone()).collect()).collect();
        let index = index(&members);
        Some(Self { query, values: expr.to_string(), labels, members, index, combine: first.combine.clone() })
    }

    /// How many members share this batch.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members whose matchers select a series with `labels`.
    fn owners(&self, labels: &BTreeMap<String, String>) -> Vec<usize> {
        let value = |name: &str| labels.get(name).map_or("", String::as_str);
        let candidates: Vec<usize> = match &self.index {
            Index::All => return (0..self.members.len()).collect(),
            Index::Equal(by_value) => by_value.get(value(&self.labels[0])).cloned().unwrap_or_default(),
            Index::Set(set) => set.matches(value(&self.labels[0])).into_iter().collect(),
            Index::Each => (0..self.members.len()).filter(|&i| self.members[i][0].is_match(value(&self.labels[0]))).collect(),
        };
        candidates.into_iter().filter(|&i| self.members[i].iter().zip(&self.labels).skip(1).all(|(m, label)| m.is_match(value(label)))).collect()
    }

    /// Splits the store's answer to [`query`](Self::query) into each member's share, in the
    /// members' order.
    pub fn split(&self, answer: Vec<Labelled>) -> Result<Vec<Share>, String> {
        let mut shares: Vec<(Vec<Labelled>, Option<f64>)> = vec![(Vec::new(), None); self.members.len()];
        for (mut labels, value) in answer {
            let part = labels.remove(PART);
            let owners = self.owners(&labels);
            match part.as_deref() {
                Some("value") => {
                    for &i in &owners {
                        shares[i].0.push((labels.clone(), value));
                    }
                }
                Some("age") => {
                    for &i in &owners {
                        shares[i].1 = Some(shares[i].1.map_or(value, |t: f64| t.max(value)));
                    }
                }
                _ => return Err(format!("the batched answer holds a series without its `{PART}` label: {labels:?}")),
            }
        }
        Ok(shares.into_iter().map(|(series, newest)| Share { series: self.recombine(series), newest }).collect())
    }

    /// Splits the store's answer to a range query of [`values`](Self::values) into each
    /// member's series of (unix time, value) points, recombined at each time as its own query
    /// would have, in the members' order.
    pub fn split_range(&self, answer: Vec<(BTreeMap<String, String>, Vec<(f64, f64)>)>) -> Vec<Vec<(BTreeMap<String, String>, Vec<(f64, f64)>)>> {
        let mut shares: Vec<Vec<(BTreeMap<String, String>, Vec<(f64, f64)>)>> = vec![Vec::new(); self.members.len()];
        for (labels, points) in answer {
            for i in self.owners(&labels) {
                shares[i].push((labels.clone(), points.clone()));
            }
        }
        shares
            .into_iter()
            .map(|series| {
                // Each time's series recombined, then regrouped by their labels.
                let mut at: BTreeMap<i64, Vec<Labelled>> = BTreeMap::new();
                for (labels, points) in series {
                    for (t, v) in points {
                        at.entry((t * 1000.0).round() as i64).or_default().push((labels.clone(), v));
                    }
                }
                let mut grouped: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
                for (t, series) in at {
                    for (labels, v) in self.recombine(series) {
                        grouped.entry(labels).or_default().push((t as f64 / 1000.0, v));
                    }
                }
                grouped.into_iter().collect()
            })
            .collect()
    }

    /// A member's series, grouped as its own query groups them.
    fn recombine(&self, series: Vec<Labelled>) -> Vec<Labelled> {
        let Some((combine, by)) = &self.combine else { return series };
        let mut groups: BTreeMap<BTreeMap<String, String>, f64> = BTreeMap::new();
        for (labels, value) in series {
            let group: BTreeMap<String, String> = by.iter().filter_map(|b| labels.get(b).filter(|v| !v.is_empty()).map(|v| (b.clone(), v.clone()))).collect();
            groups.entry(group).and_modify(|total| *total = combine.fold(*total, value)).or_insert(value);
        }
        groups.into_iter().collect()
    }
}

/// One member's matcher as an alternative of the union: a value matched by equality is quoted.
fn alternative(m: &Matcher) -> String {
    match m.op {
        MatchOp::Equal => quote_meta(&m.value),
        _ => format!("(?:{})", m.value),
    }
}

/// Go's `regexp.QuoteMeta`: the value as a regex that matches exactly it.
fn quote_meta(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len());
    for c in value.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted
}

/// The most members a regex set is built for; beyond, or if the set would be too large, each
/// member's regex is tried in turn.
const MAX_SET: usize = 100_000;

fn index(members: &[Vec<Matcher>]) -> Index {
    if members.first().is_none_or(Vec::is_empty) {
        return Index::All;
    }
    if members.iter().all(|m| m[0].op == MatchOp::Equal) {
        let mut by_value: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            by_value.entry(m[0].value.clone()).or_default().push(i);
        }
        return Index::Equal(by_value);
    }
    if members.len() > MAX_SET {
        return Index::Each;
    }
    let patterns = members.iter().map(|m| match &m[0].op {
        MatchOp::Re(regex) => regex.as_str().to_string(),
        _ => format!("^{}$", regex::escape(&m[0].value)),
    });
    regex::RegexSetBuilder::new(patterns).size_limit(64 << 20).build().map_or(Index::Each, Index::Set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn shaped(query: &str) -> Shaped {
        Shaped::of(query).unwrap_or_else(|| panic!("{query} has a shape"))
    }

    #[test]
    fn queries_that_differ_only_in_matcher_values_share_a_shape() {
        let a = shaped(r#"sum(rate(container_cpu_usage_seconds_total{namespace="default",pod=~"web-1-.*",image!=""}[5m]))"#);
        let b = shaped(r#"sum(rate(container_cpu_usage_seconds_total{namespace="shop",pod=~"web-2-.*",image!=""}[5m]))"#);
        assert_eq!(a.shape, b.shape);
        let other_range = shaped(r#"sum(rate(container_cpu_usage_seconds_total{namespace="default",pod=~"web-1-.*",image!=""}[1m]))"#);
        assert_ne!(a.shape, other_range.shape);
        let other_negation = shaped(r#"sum(rate(container_cpu_usage_seconds_total{namespace="default",pod=~"web-1-.*",image!="pause"}[5m]))"#);
        assert_ne!(a.shape, other_negation.shape, "a negative matcher's value is part of the shape");
        assert_ne!(shaped("sum(x{a=\"1\"})").shape, shaped("max(x{a=\"1\"})").shape);
        assert_ne!(shaped("x{a=\"1\"}").shape, shaped("y{a=\"1\"}").shape);
    }

    #[test]
    fn only_shapes_that_split_exactly_are_batched() {
        for query in [
            "histogram_quantile(0.95, sum(rate(h_bucket{a=\"1\"}[5m])) by (le))",
            "avg(x{a=\"1\"})",
            "avg(node_thermal_zone_temp) * 0.001",
            "sum without (pod) (x{a=\"1\"})",
            "topk(3, x{a=\"1\"})",
            "sum(rate(x{a=\"1\"}[5m]) + rate(y{a=\"1\"}[5m]))",
            "sum(label_replace(x{a=\"1\"}, \"b\", \"$1\", \"a\", \"(.*)\"))",
            "x{a=\"1\" or b=\"2\"}",
            "vector(4)",
            "sum(up{a=\"1\"}",
        ] {
            assert!(Shaped::of(query).is_none(), "{query}");
        }
        for query in ["x{a=\"1\"}", "count(x{a=~\"1|2\"})", "max by (node) (max_over_time(t{a=\"1\"}[5m]))", "sum(x)"] {
            assert!(Shaped::of(query).is_some(), "{query}");
        }
    }

    #[test]
    fn a_sum_splits_back_into_each_members_sum() {
        let members = [shaped(r#"sum(rate(cpu{ns="d",pod=~"web-1-.*",image!=""}[5m]))"#), shaped(r#"sum(rate(cpu{ns="d",pod=~"web-2-.*",image!=""}[5m]))"#), shaped(r#"sum(rate(cpu{ns="d",pod=~"api-.*",image!=""}[5m]))"#)];
        let refs: Vec<&Shaped> = members.iter().collect();
        let batch = Batch::new(&refs).unwrap();
        assert!(batch.query.contains(r#"pod=~"(?:api-.*)|(?:web-1-.*)|(?:web-2-.*)""#), "{}", batch.query);
        assert!(batch.query.contains("sum by (pod) (rate(cpu{"), "grouped by the varying label: {}", batch.query);
        assert!(batch.query.contains("max by (pod) (timestamp(cpu{"), "{}", batch.query);
        assert!(promql_parser::parser::parse(&batch.query).is_ok(), "{}", batch.query);
        let answer = vec![
            (labels(&[("pod", "web-1-a"), (PART, "value")]), 1.0),
            (labels(&[("pod", "web-1-b"), (PART, "value")]), 2.0),
            (labels(&[("pod", "web-2-a"), (PART, "value")]), 4.0),
            (labels(&[("pod", "web-1-a"), (PART, "age")]), 100.0),
            (labels(&[("pod", "web-1-b"), (PART, "age")]), 130.0),
            (labels(&[("pod", "web-2-a"), (PART, "age")]), 90.0),
        ];
        let shares = batch.split(answer).unwrap();
        assert_eq!(shares[0], Share { series: vec![(BTreeMap::new(), 3.0)], newest: Some(130.0) });
        assert_eq!(shares[1], Share { series: vec![(BTreeMap::new(), 4.0)], newest: Some(90.0) });
        assert_eq!(shares[2], Share { series: vec![], newest: None }, "no pod of api: nothing, as its own query would give");
    }

    #[test]
    fn a_grouping_is_kept_and_equal_matchers_are_quoted() {
        let members = [shaped(r#"max by (node) (temp{cluster="a.b",zone="1"})"#), shaped(r#"max by (node) (temp{cluster="c+d",zone="1"})"#)];
        let refs: Vec<&Shaped> = members.iter().collect();
        let batch = Batch::new(&refs).unwrap();
        assert!(batch.query.contains(r#"cluster=~"a\\.b|c\\+d""#), "{}", batch.query);
        assert!(batch.query.contains("max by (node, cluster) (temp{"), "{}", batch.query);
        let answer = vec![
            (labels(&[("node", "n1"), ("cluster", "a.b"), (PART, "value")]), 70.0),
            (labels(&[("node", "n2"), ("cluster", "a.b"), (PART, "value")]), 80.0),
            (labels(&[("node", "n1"), ("cluster", "c+d"), (PART, "value")]), 60.0),
            (labels(&[("node", "n1"), ("cluster", "aXb"), (PART, "value")]), 99.0),
            (labels(&[("cluster", "a.b"), (PART, "age")]), 5.0),
        ];
        let shares = batch.split(answer).unwrap();
        assert_eq!(shares[0].series, vec![(labels(&[("node", "n1")]), 70.0), (labels(&[("node", "n2")]), 80.0)]);
        assert_eq!(shares[1].series, vec![(labels(&[("node", "n1")]), 60.0)], "a dot is no wildcard in an equality");
        assert_eq!((shares[0].newest, shares[1].newest), (Some(5.0), None));
    }

    #[test]
    fn counts_add_up_and_bare_selectors_keep_their_series() {
        let count = [shaped(r#"count(up{job="a"})"#), shaped(r#"count(up{job="b"})"#)];
        let batch = Batch::new(&count.iter().collect::<Vec<_>>()).unwrap();
        let answer = vec![(labels(&[("job", "a"), (PART, "value")]), 2.0), (labels(&[("job", "b"), (PART, "value")]), 3.0)];
        assert_eq!(batch.split(answer).unwrap()[1].series, vec![(BTreeMap::new(), 3.0)]);

        let bare = [shaped(r#"replicas{namespace="d",deployment="web-1"}"#), shaped(r#"replicas{namespace="d",deployment="web-2"}"#)];
        let batch = Batch::new(&bare.iter().collect::<Vec<_>>()).unwrap();
        assert!(batch.query.starts_with(r#"label_replace(replicas{deployment=~"web-1|web-2",namespace="d"}"#) || batch.query.contains(r#"deployment=~"web-1|web-2""#), "{}", batch.query);
        let series = labels(&[("__name__", "replicas"), ("namespace", "d"), ("deployment", "web-2"), (PART, "value")]);
        let shares = batch.split(vec![(series, 3.0)]).unwrap();
        assert!(shares[0].series.is_empty());
        assert_eq!(shares[1].series[0].1, 3.0);
        assert_eq!(shares[1].series[0].0["deployment"], "web-2");
    }

    #[test]
    fn identical_queries_share_one_answer() {
        let same = [shaped(r#"sum(x{a="1"})"#), shaped(r#"sum(x{a="1"})"#)];
        let batch = Batch::new(&same.iter().collect::<Vec<_>>()).unwrap();
        assert!(batch.query.contains("max(timestamp(x{a=\"1\"}))"), "{}", batch.query);
        let shares = batch.split(vec![(labels(&[(PART, "value")]), 7.0), (labels(&[(PART, "age")]), 9.0)]).unwrap();
        assert_eq!(shares[0], shares[1]);
        assert_eq!(shares[0], Share { series: vec![(BTreeMap::new(), 7.0)], newest: Some(9.0) });
    }

    #[test]
    fn a_range_answer_splits_per_member_and_time() {
        let members = [shaped(r#"sum(rate(cpu{pod=~"web-1-.*"}[5m]))"#), shaped(r#"sum(rate(cpu{pod=~"web-2-.*"}[5m]))"#)];
        let batch = Batch::new(&members.iter().collect::<Vec<_>>()).unwrap();
        assert!(batch.values.starts_with("sum by (pod) (rate(cpu{"), "{}", batch.values);
        let answer = vec![
            (labels(&[("pod", "web-1-a")]), vec![(60.0, 1.0), (120.0, 2.0)]),
            (labels(&[("pod", "web-1-b")]), vec![(120.0, 3.0), (180.0, 4.0)]),
            (labels(&[("pod", "web-2-a")]), vec![(60.0, 7.0)]),
        ];
        let shares = batch.split_range(answer);
        assert_eq!(shares[0], vec![(BTreeMap::new(), vec![(60.0, 1.0), (120.0, 5.0), (180.0, 4.0)])]);
        assert_eq!(shares[1], vec![(BTreeMap::new(), vec![(60.0, 7.0)])]);
    }

    #[test]
    fn an_answer_without_the_marker_is_refused() {
        let same = [shaped(r#"sum(x{a="1"})"#), shaped(r#"sum(x{a="2"})"#)];
        let batch = Batch::new(&same.iter().collect::<Vec<_>>()).unwrap();
        assert!(batch.split(vec![(labels(&[("a", "1")]), 1.0)]).is_err());
    }

    #[test]
    fn the_key_tells_member_values_apart() {
        let (a, b, c) = (shaped("x{a=\"1\"}"), shaped("x{a=\"2\"}"), shaped("x{a=\"12\"}"));
        assert_ne!(key(&[&a, &b]), key(&[&b, &a]));
        assert_ne!(key(&[&a, &b]), key(&[&c]));
        assert_eq!(key(&[&a, &b]), key(&[&a.clone(), &b.clone()]));
    }
}
