//! PNG charts: a replay's four controllers (`host replay --plot`) and an anomaly pass
//! (`host anomalies --plot`). Drawn with `plotters` into a bitmap; text uses DejaVu Sans,
//! embedded, so nothing is needed from the machine's font set-up.

use super::replay::Report;
use anyhow::{Context, anyhow};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).unwrap_or_else(|_| panic!("the embedded DejaVu Sans is a valid font"));
    });
}

/// At most `buckets` points: each bucket's first time and the max (or min) of its values, so
/// that a peak (or a dip in capacity) survives the thinning of a long trace.
fn thin(x: &[f64], y: &[f64], buckets: usize, keep_max: bool) -> Vec<(f64, f64)> {
    let size = x.len().div_ceil(buckets.max(1)).max(1);
    x.chunks(size)
        .zip(y.chunks(size))
        .map(|(xs, ys)| {
            let pick = if keep_max { ys.iter().copied().fold(f64::NEG_INFINITY, f64::max) } else { ys.iter().copied().fold(f64::INFINITY, f64::min) };
            (xs[0], pick)
        })
        .collect()
}

fn plot_error<E: std::fmt::Debug>(path: &Path) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow!("cannot draw {}: {e:?}", path.display())
}

/// The hours of a replay that the zoomed column of `replay` shows: `--from`/`--to`, or by
/// default the day around the worst overload.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub from_hours: Option<f64>,
    pub to_hours: Option<f64>,
}

impl Window {
    /// Checks `--from`/`--to`: hours into the replay, the start before the end.
    pub fn new(from_hours: Option<f64>, to_hours: Option<f64>) -> anyhow::Result<Self> {
        for (flag, value) in [("--from", from_hours), ("--to", to_hours)] {
            if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                anyhow::bail!("{flag} must be a number of hours at or after 0, the replay's start");
            }
        }
        if let (Some(from), Some(to)) = (from_hours, to_hours)
            && from >= to
        {
            anyhow::bail!("--from ({from} h) must be before --to ({to} h)");
        }
        Ok(Self { from_hours, to_hours })
    }

    /// The hours to show for a replay of `end` hours: what was asked, else the 24 hours
    /// centred on the minute with the largest shortfall of any controller but the oracle.
    pub fn resolve(self, report: &Report) -> (f64, f64) {
        let end = report.timelines[0].minutes.last().copied().unwrap_or(0.0) / 60.0;
        let day = 24.0_f64.min(end.max(1e-3));
        let worst = report.controllers()[..3]
            .iter()
            .flat_map(|(_, _, t)| t.minutes.iter().zip(t.demand.iter().zip(&t.capacity)).map(|(m, (d, c))| (*m, d - c)))
            .fold((0.0, 0.0), |best, (m, short)| if short > best.1 { (m, short) } else { best })
            .0
            / 60.0;
        let centred = (worst - day / 2.0).clamp(0.0, (end - day).max(0.0));
        match (self.from_hours, self.to_hours) {
            (Some(from), Some(to)) => (from, to.min(end.max(from + 1e-3))),
            (Some(from), None) => (from, (from + day).min(end.max(from + 1e-3))),
            (None, Some(to)) => ((to - day).max(0.0), to),
            (None, None) => (centred, centred + day),
        }
    }
}

/// Four rows (augur, hpa, ehpa, oracle), two columns (the whole replay, and the window):
/// demand and ready capacity in cores on the left axis, replicas on the right, over hours.
pub fn replay(path: &Path, report: &Report, window: Window) -> anyhow::Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (2000, 1600)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error(path))?;
    let (from, to) = window.resolve(report);
    let title = format!("{} `{}`: demand vs ready capacity (right: hours {from:.1} to {to:.1})", report.setup.trace, report.setup.column);
    let root = root.titled(&title, ("sans-serif", 24)).map_err(plot_error(path))?;
    let controllers = report.controllers();
    let panels = root.split_evenly((controllers.len(), 2));
    let top = controllers.iter().flat_map(|(_, _, t)| t.demand.iter().chain(&t.capacity)).copied().fold(0.0, f64::max) * 1.1;
    let max_replicas = f64::from(report.setup.max_replicas) * 1.1;
    for (row, (name, outcome, timeline)) in controllers.into_iter().enumerate() {
        let hours: Vec<f64> = timeline.minutes.iter().map(|m| m / 60.0).collect();
        let end = hours.last().copied().unwrap_or(1.0).max(1e-3);
        let caption = format!("{name}: overload {:.1} min, {:.0} replica-minutes, {} changes", outcome.overload_minutes, outcome.replica_minutes, outcome.actions);
        for (column, (x0, x1)) in [(0.0, end), (from, to.max(from + 1e-3))].into_iter().enumerate() {
            let caption = if column == 0 { caption.clone() } else { format!("{name}: hours {x0:.1} to {x1:.1}") };
            panel(path, &panels[row * 2 + column], &caption, &hours, timeline, (x0, x1), top, max_replicas)?;
        }
    }
    root.present().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// One panel of `replay`: the points of `hours` within `x`, thinned to the panel's width.
#[allow(clippy::too_many_arguments)]
fn panel(path: &Path, area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>, caption: &str, hours: &[f64], timeline: &super::replay::Timeline, x: (f64, f64), top: f64, max_replicas: f64) -> anyhow::Result<()> {
    let first = hours.partition_point(|h| *h < x.0);
    let last = hours.partition_point(|h| *h <= x.1);
    let hours = &hours[first..last];
    let pick = |values: &[f64]| values[first..last].to_vec();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .right_y_label_area_size(40)
        .build_cartesian_2d(x.0..x.1, 0.0..top.max(1e-6))
        .map_err(plot_error(path))?
        .set_secondary_coord(x.0..x.1, 0.0..max_replicas);
    chart.configure_mesh().x_desc("hours").y_desc("cores").label_style(("sans-serif", 12)).draw().map_err(plot_error(path))?;
    chart.configure_secondary_axes().y_desc("replicas").label_style(("sans-serif", 12)).draw().map_err(plot_error(path))?;
    let replicas: Vec<f64> = timeline.replicas[first..last].iter().map(|r| f64::from(*r)).collect();
    chart
        .draw_secondary_series(LineSeries::new(thin(hours, &replicas, 900, true), RGBColor(120, 120, 120).stroke_width(1)))
        .map_err(plot_error(path))?
        .label("replicas (right axis)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RGBColor(120, 120, 120)));
    chart
        .draw_series(LineSeries::new(thin(hours, &pick(&timeline.demand), 900, true), RED.stroke_width(1)))
        .map_err(plot_error(path))?
        .label("demand")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
    chart
        .draw_series(LineSeries::new(thin(hours, &pick(&timeline.capacity), 900, false), BLUE.stroke_width(1)))
        .map_err(plot_error(path))?
        .label("ready capacity")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).label_font(("sans-serif", 12)).draw().map_err(plot_error(path))?;
    Ok(())
}

/// What an anomaly chart shows.
pub struct AnomalyChart<'a> {
    pub title: String,
    /// Minutes since the start of each point.
    pub minutes: &'a [f64],
    pub values: &'a [f64],
    /// One-step-ahead forecast of each point (`NaN` where none).
    pub forecast: &'a [f64],
    /// Indices flagged on the forecast residuals.
    pub residual_anomalies: &'a [usize],
    /// Indices flagged by plain MAD on the values.
    pub plain_anomalies: &'a [usize],
    /// Labelled anomaly windows, as index ranges, when known (NAB).
    pub windows: &'a [(usize, usize)],
}

/// The series, its forecast, the labelled windows (shaded) and both detectors' flags.
pub fn anomalies(path: &Path, chart: &AnomalyChart<'_>) -> anyhow::Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (1600, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error(path))?;
    let hours: Vec<f64> = chart.minutes.iter().map(|m| m / 60.0).collect();
    let end = hours.last().copied().unwrap_or(1.0).max(1e-3);
    let (low, high) = chart.values.iter().chain(chart.forecast.iter().filter(|v| v.is_finite())).fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    let pad = ((high - low) * 0.05).max(1e-6);
    let (low, high) = (low - pad, high + pad);
    let mut c = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..end, low..high)
        .map_err(plot_error(path))?;
    c.configure_mesh().x_desc("hours").label_style(("sans-serif", 13)).draw().map_err(plot_error(path))?;
    for &(from, to) in chart.windows {
        let (a, b) = (hours[from.min(hours.len() - 1)], hours[to.min(hours.len() - 1)]);
        c.draw_series(std::iter::once(Rectangle::new([(a, low), (b, high)], RGBColor(255, 220, 120).mix(0.5).filled()))).map_err(plot_error(path))?;
    }
    let points = |ys: &[f64]| -> Vec<(f64, f64)> { hours.iter().copied().zip(ys.iter().copied()).filter(|(_, y)| y.is_finite()).collect() };
    c.draw_series(LineSeries::new(points(chart.values), RGBColor(60, 60, 60).stroke_width(1)))
        .map_err(plot_error(path))?
        .label("series")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RGBColor(60, 60, 60)));
    c.draw_series(LineSeries::new(points(chart.forecast), BLUE.mix(0.7).stroke_width(1)))
        .map_err(plot_error(path))?
        .label("one-step forecast")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    c.draw_series(chart.plain_anomalies.iter().map(|&i| Cross::new((hours[i], chart.values[i]), 6, GREEN.mix(0.9).stroke_width(2))))
        .map_err(plot_error(path))?
        .label("plain MAD")
        .legend(|(x, y)| Cross::new((x + 8, y), 5, GREEN.stroke_width(2)));
    c.draw_series(chart.residual_anomalies.iter().map(|&i| Circle::new((hours[i], chart.values[i]), 6, RED.stroke_width(2))))
        .map_err(plot_error(path))?
        .label("MAD on forecast residuals")
        .legend(|(x, y)| Circle::new((x + 8, y), 5, RED.stroke_width(2)));
    c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).label_font(("sans-serif", 13)).draw().map_err(plot_error(path))?;
    root.present().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_peaks() {
        let x: Vec<f64> = (0..10).map(f64::from).collect();
        let y = [1.0, 9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 1.0];
        assert_eq!(thin(&x, &y, 5, true), vec![(0.0, 9.0), (2.0, 1.0), (4.0, 1.0), (6.0, 1.0), (8.0, 5.0)]);
        assert_eq!(thin(&x, &y, 5, false)[0], (0.0, 1.0));
    }
}
