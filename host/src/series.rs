//! The one reader of numeric series in CSV files (the `csv` crate, which handles quoting):
//! a column's values, which of them are real data, each row's time where the file has a
//! time column, and the step between rows. The simulator's traces, the backtests, the
//! replays, the anomaly pass and the NAB corpus all read through it.
//!
//! It only reads; what a series means is for its caller.

use anyhow::{Context, bail};
use std::path::Path;

/// The time columns recognised, in order of preference: `unix_time`, `timestamp`
/// (`YYYY-MM-DD HH:MM[:SS]` or Unix seconds), `Timestamp [ms]` (Unix seconds in the
/// Bitbrains traces) and `minute_index`.
pub const TIME_COLUMNS: [&str; 4] = ["unix_time", "timestamp", "Timestamp [ms]", "minute_index"];

/// A numeric column of a CSV file, with its mask, times and step.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub values: Vec<f64>,
    /// `true` where the point is real data (finite, and not masked).
    pub real: Vec<bool>,
    /// The time column read, if the file has one.
    pub time_column: Option<&'static str>,
    /// Unix seconds of each row (empty without a time column; `None` where a cell does not
    /// parse).
    pub times: Vec<Option<i64>>,
    /// Seconds between rows, from the time column (the median of the first 1000 gaps,
    /// rounded to whole minutes), when it has enough rows.
    pub step_seconds: Option<u32>,
}

impl Series {
    /// Reads `column` of a CSV file (`,` or `;` separated; cells trimmed). `mask` names a
    /// column that is non-zero where the point is not real data.
    pub fn read(path: &Path, column: &str, mask: Option<&str>) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read series {}", path.display()))?;
        Self::parse(&text, column, mask, &path.display().to_string())
    }

    /// Parses CSV text with a header line; `origin` names it in errors.
    pub fn parse(text: &str, column: &str, mask: Option<&str>, origin: &str) -> anyhow::Result<Self> {
        let head = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
        let separator = if head.matches(';').count() > head.matches(',').count() { b';' } else { b',' };
        let mut reader = csv::ReaderBuilder::new().delimiter(separator).trim(csv::Trim::All).flexible(true).from_reader(text.as_bytes());
        let header: Vec<String> = reader.headers().with_context(|| format!("{origin}: cannot read the header line"))?.iter().map(str::to_string).collect();
        let find = |name: &str| header.iter().position(|h| h == name);
        let Some(at) = find(column) else {
            bail!("{origin}: no column `{column}`; fix: name one of its columns: {}", header.join(", "));
        };
        let mask_at = match mask {
            Some(m) => Some(find(m).with_context(|| format!("{origin}: no mask column `{m}`; fix: name one of its columns: {}", header.join(", ")))?),
            None => None,
        };
        let time = TIME_COLUMNS.iter().find_map(|n| find(n).map(|i| (i, *n)));
        let (mut values, mut real, mut times) = (Vec::new(), Vec::new(), Vec::new());
        for row in reader.records() {
            let row = row.with_context(|| format!("{origin}: not CSV"))?;
            if row.iter().all(str::is_empty) {
                continue;
            }
            let line = row.position().map_or(0, csv::Position::line);
            let cell = |i: usize| row.get(i).unwrap_or("");
            let value: f64 = cell(at).parse().with_context(|| format!("{origin}: line {line}: `{}` in column `{column}` is not a number", cell(at)))?;
            let masked = mask_at.is_some_and(|i| cell(i).parse::<f64>().map(|v| v != 0.0).unwrap_or(true));
            real.push(value.is_finite() && !masked);
            values.push(if value.is_finite() { value } else { 0.0 });
            if let Some((i, name)) = time {
                times.push(parse_time(cell(i), name));
            }
        }
        let step_seconds = step_of(&times);
        Ok(Self { values, real, time_column: time.map(|(_, name)| name), times, step_seconds })
    }

    /// Seconds between points: `given` (`--step`) when there is one, else the file's time
    /// column's; an error naming the file and the flag when neither is there.
    pub fn step(&self, given: Option<u32>, path: &Path) -> anyhow::Result<u32> {
        match (given, self.step_seconds) {
            (Some(s), _) | (None, Some(s)) => Ok(s.max(1)),
            (None, None) => bail!("{}: cannot tell the series' step (no time column); fix: pass `--step`, e.g. `--step 1m` or `--step 5m`", path.display()),
        }
    }

    /// The row whose time is `time` (a cell of the time column's notation).
    pub fn row_at(&self, time: &str) -> Option<usize> {
        let wanted = parse_time(time, self.time_column?)?;
        self.times.iter().position(|t| *t == Some(wanted))
    }
}

/// The median gap of the first 1000 parsed times, rounded to whole minutes; `None` with too
/// few rows to tell.
fn step_of(times: &[Option<i64>]) -> Option<u32> {
    let parsed: Vec<i64> = times.iter().flatten().take(1000).copied().collect();
    let mut diffs: Vec<i64> = parsed.windows(2).map(|w| w[1] - w[0]).filter(|d| *d > 0).collect();
    diffs.sort_unstable();
    diffs.get(diffs.len() / 2).map(|d| (*d as f64 / 60.0).round().max(1.0) as u32 * 60).filter(|_| diffs.len() > 10)
}

/// Unix seconds of a time cell in the notation of `column`.
fn parse_time(cell: &str, column: &str) -> Option<i64> {
    if column == "minute_index" {
        return cell.parse::<i64>().ok().map(|m| m * 60);
    }
    if let Ok(n) = cell.parse::<f64>() {
        return Some(n as i64);
    }
    let cell = match cell.len() {
        16 => format!("{cell}:00"),
        // Fractions of a second (NAB's labels): the rows are whole seconds.
        n if n > 19 && cell.as_bytes()[19] == b'.' => cell[..19].to_string(),
        _ => cell.to_string(),
    };
    humantime::parse_rfc3339_weak(&cell).ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_cells_semicolons_and_blank_lines_are_read() {
        let text = "minute_index;\"requests, per minute\";outage\n0; 5;0\n\n1;\"6\";0\n2;7;1\n";
        let series = Series::parse(text, "requests, per minute", Some("outage"), "t.csv").unwrap();
        assert_eq!(series.values, [5.0, 6.0, 7.0]);
        assert_eq!(series.real, [true, true, false]);
        assert_eq!(series.times, [Some(0), Some(60), Some(120)]);
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_columns() {
        let missing = Series::parse("a,b\n1,2\n", "c", None, "t.csv").unwrap_err().to_string();
        assert_eq!(missing, "t.csv: no column `c`; fix: name one of its columns: a, b");
        let bad = Series::parse("a,b\n1,2\nx,3\n", "a", None, "t.csv").unwrap_err().to_string();
        assert_eq!(bad, "t.csv: line 3: `x` in column `a` is not a number");
    }

    #[test]
    fn the_step_comes_from_the_time_column() {
        let rows: String = (0..20).map(|i| format!("2024-01-01 00:{:02},{i}\n", i * 5 % 60)).collect();
        let text = format!("timestamp,value\n{}", rows.lines().take(12).collect::<Vec<_>>().join("\n"));
        let series = Series::parse(&text, "value", None, "t.csv").unwrap();
        assert_eq!(series.step_seconds, Some(300));
        assert_eq!(series.row_at("2024-01-01 00:10:00.000000"), Some(2));
        assert_eq!(Series::parse("value\n1\n2\n", "value", None, "t.csv").unwrap().step_seconds, None);
    }
}
