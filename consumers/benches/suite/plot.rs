//! The suite's picture: events/s that got through and p99 publish→commit
//! latency against the offered load, Switchyard beside the hand-written
//! reference and the broker alone,
//! for both workloads (PNG, drawn with plotters; text in DejaVu Sans from
//! Debian's `fonts-dejavu-core`, or the TTF named by `BENCH_FONT`).

use std::path::Path;

use plotters::prelude::*;

use crate::Workload;
use crate::report::Report;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn register_font() -> Result<(), String> {
    let path = std::env::var("BENCH_FONT").unwrap_or_else(|_| FONT.to_owned());
    let bytes = std::fs::read(&path).map_err(|error| {
        format!("{path}: {error} (apt-get install fonts-dejavu-core, or set BENCH_FONT)")
    })?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| format!("{path} is not a usable TrueType font"))
}

/// A line of the plot: its name, colour, whether it is a baseline (thin),
/// and its (offered, through, p99 ms) points.
type Line = (String, RGBColor, bool, Vec<(f64, f64, f64)>);

/// One line per system and workload.
fn series(report: &Report) -> Vec<Line> {
    let mut lines = Vec::new();
    for (system, dashed) in [
        ("switchyard", false),
        ("hand-written reference", true),
        ("broker alone", true),
    ] {
        for workload in Workload::ALL {
            let color = match (system, workload) {
                ("switchyard", Workload::StoreMix) => RGBColor(200, 60, 30),
                ("switchyard", Workload::OrderPlaced) => RGBColor(30, 90, 200),
                ("hand-written reference", Workload::StoreMix) => RGBColor(150, 110, 20),
                ("hand-written reference", Workload::OrderPlaced) => RGBColor(40, 150, 120),
                (_, Workload::StoreMix) => RGBColor(240, 160, 120),
                (_, Workload::OrderPlaced) => RGBColor(130, 170, 240),
            };
            let mut points: Vec<(f64, f64, f64)> = report
                .latency
                .iter()
                .filter(|row| row.system == system && row.workload == workload)
                .map(|row| (row.offered as f64, row.achieved, row.p99_ms))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !points.is_empty() {
                lines.push((
                    format!("{system}, {}", workload.label()),
                    color,
                    dashed,
                    points,
                ));
            }
        }
    }
    lines
}

pub fn draw(report: &Report, path: &Path) -> Result<(), String> {
    let lines = series(report);
    if lines.is_empty() {
        return Err("no latency figures to plot".to_owned());
    }
    register_font()?;
    let error = |error: &dyn std::fmt::Display| error.to_string();
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let root = root
        .titled(
            &format!(
                "Switchyard, the hand-written reference and the broker alone against offered load ({}, {} cores; {})",
                report.versions.switchyard, report.machine.cores, report.date
            ),
            ("sans-serif", 20),
        )
        .map_err(|e| error(&e))?;
    let (left, right) = root.split_horizontally(700);
    let max_offered = lines
        .iter()
        .flat_map(|(_, _, _, points)| points.iter().map(|point| point.0))
        .fold(0.0, f64::max)
        * 1.1;
    let max_through = lines
        .iter()
        .flat_map(|(_, _, _, points)| points.iter().map(|point| point.1))
        .fold(max_offered, f64::max);
    let (min_p99, max_p99) = lines
        .iter()
        .flat_map(|(_, _, _, points)| points.iter().map(|point| point.2))
        .fold((f64::MAX, 0.0f64), |(low, high), p99| {
            (low.min(p99), high.max(p99))
        });

    let mut through = ChartBuilder::on(&left)
        .caption("events/s through (median)", ("sans-serif", 18))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_offered, 0.0..max_through * 1.05)
        .map_err(|e| error(&e))?;
    through
        .configure_mesh()
        .x_desc("offered events/s")
        .y_desc("events/s through")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| error(&e))?;
    through
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (max_offered, max_offered)],
            BLACK.mix(0.3).stroke_width(1),
        ))
        .map_err(|e| error(&e))?
        .label("offered")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.3)));

    // A log scale makes both a few milliseconds and seconds readable.
    let mut p99 = ChartBuilder::on(&right)
        .caption(
            "p99 publish→commit (broker alone: →consume), ms",
            ("sans-serif", 18),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            0.0..max_offered,
            ((min_p99 * 0.5).max(0.1)..(max_p99 * 2.0).max(1.0)).log_scale(),
        )
        .map_err(|e| error(&e))?;
    p99.configure_mesh()
        .x_desc("offered events/s")
        .y_desc("p99 ms (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| error(&e))?;

    for (name, color, dashed, points) in &lines {
        let color = *color;
        let width = if *dashed { 1 } else { 3 };
        through
            .draw_series(LineSeries::new(
                points.iter().map(|point| (point.0, point.1)),
                color.stroke_width(width),
            ))
            .map_err(|e| error(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
        through
            .draw_series(
                points
                    .iter()
                    .map(|point| Circle::new((point.0, point.1), 4, color.filled())),
            )
            .map_err(|e| error(&e))?;
        p99.draw_series(LineSeries::new(
            points.iter().map(|point| (point.0, point.2)),
            color.stroke_width(width),
        ))
        .map_err(|e| error(&e))?
        .label(name.as_str())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
        p99.draw_series(
            points
                .iter()
                .map(|point| Circle::new((point.0, point.2), 4, color.filled())),
        )
        .map_err(|e| error(&e))?;
    }
    through
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| error(&e))?;
    p99.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| error(&e))?;
    root.present().map_err(|e| error(&e))?;
    Ok(())
}
