//! A request-rate trace: one value per fixed step, read from a CSV column. The default is a
//! three-day slice of the NASA-HTTP 1995 trace shipped in `host/data/` (see its PROVENANCE.md).

use crate::series::Series;
use anyhow::bail;
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
        Self::from_series(Series::read(path, column, None)?, &path.display().to_string())
    }

    /// Parses CSV text with a header line.
    pub fn parse(text: &str, column: &str, origin: &str) -> anyhow::Result<Self> {
        Self::from_series(Series::parse(text, column, None, origin)?, origin)
    }

    fn from_series(series: Series, origin: &str) -> anyhow::Result<Self> {
        if series.values.len() < 2 {
            bail!("{origin}: needs at least two rows");
        }
        let unix_times = if series.time_column == Some("unix_time") { series.times.as_slice() } else { &[] };
        let (start_unix, step_seconds) = match unix_times {
            [Some(first), Some(second), ..] if second > first && *first >= 0 => (*first as u64, (second - first) as u64),
            _ => (804_931_200, 60), // no time column: 1 minute steps from the NASA slice's start
        };
        Ok(Self { start_unix, step_seconds, values: series.values })
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
        assert_eq!(err.to_string(), "t.csv: no column `c`; fix: name one of its columns: a, b");
    }
}
