//! PromQL, read with `promql-parser`: checked in `host validate`, and its selectors used to
//! measure how old the data behind a query is (Prometheus answers an instant query with the
//! evaluation time, not the samples' time, so age needs its own query per selector).

use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};

/// Parses `query`; the error is the parser's message.
pub fn check(query: &str) -> Result<(), String> {
    parser::parse(query).map(|_| ())
}

/// The distinct series selectors of `query` (`name{matchers}`, without range, offset or `@`),
/// in order of appearance.
pub fn selectors(query: &str) -> Result<Vec<String>, String> {
    struct Collect(Vec<String>);
    impl ExprVisitor for Collect {
        type Error = String;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
            let selector = match expr {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                _ => None,
            };
            if let Some(vs) = selector {
                let mut plain = vs.clone();
                (plain.offset, plain.at) = (None, None);
                let text = plain.to_string();
                if !self.0.contains(&text) {
                    self.0.push(text);
                }
            }
            Ok(true)
        }
    }
    let expr = parser::parse(query)?;
    let mut collect = Collect(Vec::new());
    walk_expr(&mut collect, &expr)?;
    Ok(collect.0)
}

/// The age in seconds of the newest sample behind `selector`, as one PromQL expression.
pub fn age_query(selector: &str) -> String {
    format!("time() - max(timestamp({selector}))")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_of_the_prototypes_queries() {
        let cpu = r#"sum(rate(container_cpu_usage_seconds_total{namespace="default",pod=~"nginx-.*",image!=""}[5m]))"#;
        assert_eq!(selectors(cpu).unwrap().len(), 1);
        let disk = "sum(rate(node_disk_read_bytes_total[5m]) + rate(node_disk_written_bytes_total[5m]))";
        assert_eq!(selectors(disk).unwrap(), vec!["node_disk_read_bytes_total", "node_disk_written_bytes_total"]);
        assert_eq!(selectors("avg(node_thermal_zone_temp offset 5m) * 0.001").unwrap(), vec!["node_thermal_zone_temp"]);
        assert_eq!(selectors("vector(4)").unwrap(), Vec::<String>::new());
        let sel = &selectors(cpu).unwrap()[0];
        assert!(sel.starts_with("container_cpu_usage_seconds_total{") && sel.contains(r#"namespace="default""#) && sel.contains(r#"pod=~"nginx-.*""#), "{sel}");
    }

    #[test]
    fn bad_promql_is_an_error() {
        assert!(check("sum(rate(x[5m])").is_err());
        assert!(check("up == 1").is_ok());
    }
}
