//! A request-rate trace: one value per fixed step, read from a CSV column. The default is a
//! three-day slice of the NASA-HTTP 1995 trace shipped in `host/data/` (see its PROVENANCE.md).

use anyhow::{Context, bail};
use std::path::Path;

/// The trace built into the binary.
pub const DEFAULT_TRACE: &str = include_str!("../../data/nasa-http-1995-07-05.csv");
pub const DEFAULT_COLUMN: &str = "requests";

/// A series of values at a fixed step, starting at a Unix time.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Unix seconds of the first value.
    pub start_unix: u64,
    pub step_seconds: u64,
    pub values: Vec<f64>,
}

impl Trace {
    /// The built-in NASA slice.
    pub fn builtin() -> Self {
        Self::parse(DEFAULT_TRACE, DEFAULT_COLUMN, "built-in trace").expect("the built-in trace parses")
    }

    /// Reads a CSV file's `column`; a `unix_time` column, when present, gives the start and step.
    pub fn from_file(path: &Path, column: &str) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read trace {}", path.display()))?;
        Self::parse(&text, column, &path.display().to_string())
    }

    /// Parses CSV text with a header line.
    pub fn parse(text: &str, column: &str, origin: &str) -> anyhow::Result<Self> {
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').map(str::trim).collect();
        let Some(value_at) = header.iter().position(|h| *h == column) else {
            bail!("{origin}: no column `{column}`; columns are: {}", header.join(", "));
        };
        let time_at = header.iter().position(|h| *h == "unix_time");
        let (mut values, mut times) = (Vec::new(), Vec::new());
        for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let cells: Vec<&str> = line.split(',').collect();
            let cell = |i: usize| cells.get(i).map(|c| c.trim()).unwrap_or("");
            let value: f64 = cell(value_at).parse().with_context(|| format!("{origin}: line {}: `{}` in column `{column}` is not a number", n + 2, cell(value_at)))?;
            values.push(value);
            if let Some(t) = time_at {
                times.push(cell(t).parse::<u64>().with_context(|| format!("{origin}: line {}: bad unix_time", n + 2))?);
            }
        }
        if values.len() < 2 {
            bail!("{origin}: needs at least two rows");
        }
        let (start_unix, step_seconds) = match times.as_slice() {
            [first, second, ..] if second > first => (*first, second - first),
            _ => (804_931_200, 60), // no time column: 1 minute steps from the NASA slice's start
        };
        Ok(Self { start_unix, step_seconds, values })
    }

    /// The value at `seconds` after the start, linearly interpolated; the trace repeats.
    pub fn at(&self, seconds: f64) -> f64 {
        let span = (self.values.len() as u64 * self.step_seconds) as f64;
        let position = seconds.rem_euclid(span) / self.step_seconds as f64;
        let i = position.floor() as usize;
        let next = self.values[(i + 1) % self.values.len()];
        let fraction = position - i as f64;
        self.values[i] * (1.0 - fraction) + next * fraction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_trace_is_three_days_of_minutes() {
        let trace = Trace::builtin();
        assert_eq!(trace.values.len(), 3 * 1440);
        assert_eq!(trace.step_seconds, 60);
        assert_eq!(trace.start_unix, 804_931_200);
    }

    #[test]
    fn values_interpolate_and_wrap() {
        let trace = Trace::parse("unix_time,r\n0,10\n60,20\n120,40\n", "r", "t").unwrap();
        assert_eq!(trace.at(30.0), 15.0);
        assert_eq!(trace.at(180.0), 10.0);
    }

    #[test]
    fn a_missing_column_lists_the_columns() {
        let err = Trace::parse("a,b\n1,2\n", "c", "t.csv").unwrap_err();
        assert_eq!(err.to_string(), "t.csv: no column `c`; columns are: a, b");
    }
}
