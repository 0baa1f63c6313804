//! The SVG chart: latency by percentile, and latency over time (plotters).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::report::Outcome;

const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> anyhow::Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).exists())
        .context("no TrueType font found (apt-get install fonts-dejavu-core)")?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("cannot load font {path}"))
}

pub fn latency_svg(o: &Outcome, path: &Path) -> anyhow::Result<()> {
    register_font()?;
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let font = ("sans-serif", 14);

    // Percentile distribution: x is the number of nines, so the tail gets room.
    let l = &o.latency_ms;
    let points = [
        (0.5, l.p50),
        (0.9, l.p90),
        (0.99, l.p99),
        (0.999, l.p999),
        (1.0, l.max),
    ];
    let nines = |q: f64| if q >= 1.0 { 4.0 } else { -(1.0 - q).log10() };
    let ymax = (l.max * 1.1).max(0.1);
    let mut chart = ChartBuilder::on(&left)
        .caption(format!("{}: latency by percentile (ms)", o.scenario), font)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..4.2, 0.0..ymax)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_labels(5)
        .x_label_formatter(&|x: &f64| match x.round() as i64 {
            0 => "p0".into(),
            1 => "p90".into(),
            2 => "p99".into(),
            3 => "p99.9".into(),
            _ => "max".into(),
        })
        .label_style(font)
        .draw()?;
    chart.draw_series(LineSeries::new(
        points.iter().map(|(q, v)| (nines(*q), *v)),
        BLUE.stroke_width(2),
    ))?;
    chart.draw_series(
        points
            .iter()
            .map(|(q, v)| Circle::new((nines(*q), *v), 4, BLUE.filled())),
    )?;

    // Over time, by scheduled send second.
    let series = &o.latency_over_time;
    let tmax = series.last().map_or(1, |p| p.second + 1) as f64;
    let ymax = series.iter().map(|p| p.max_ms).fold(0.1, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&right)
        .caption("latency over time (ms)", font)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..tmax, 0.0..ymax)?;
    chart
        .configure_mesh()
        .x_desc("second of the run")
        .y_desc("ms")
        .label_style(font)
        .draw()?;
    for (name, color, pick) in [
        (
            "max",
            RED,
            (|p: &crate::report::SeriesPoint| p.max_ms) as fn(&_) -> f64,
        ),
        ("p99", MAGENTA, |p| p.p99_ms),
        ("p50", BLUE, |p| p.p50_ms),
    ] {
        chart
            .draw_series(LineSeries::new(
                series.iter().map(|p| (p.second as f64, pick(p))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(font)
        .draw()?;
    root.present()?;
    Ok(())
}
