//! SVG plots: grouped bars, one group per QoS, one bar per client.

use std::path::Path;

use plotters::prelude::*;

use crate::common::Measured;
use crate::report::median;
use crate::{Case, Results};

const COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

fn bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    groups: &[(String, usize)],
    clients: &[String],
    results: &Results,
    f: fn(&Measured) -> f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let width = clients.len() as f64 + 1.0;
    let values: Vec<Vec<f64>> = groups
        .iter()
        .map(|(_, ci)| {
            clients
                .iter()
                .map(|c| median(results, *ci, c, f).unwrap_or(0.0))
                .collect()
        })
        .collect();
    let y_max = values.iter().flatten().fold(1.0f64, |a, &b| a.max(b)) * 1.15;
    let root = SVGBackend::new(path, (860, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = groups.len() as f64 * width;
    let labels: Vec<String> = groups.iter().map(|(l, _)| l.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 4)
        .x_label_formatter(&|x| {
            let g = (x / width).floor() as usize;
            let centre = g as f64 * width + width / 2.0;
            if (x - centre).abs() < width / 8.0 {
                labels.get(g).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc(y_desc)
        .draw()?;
    for (k, client) in clients.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let rects: Vec<Rectangle<(f64, f64)>> = values
            .iter()
            .enumerate()
            .map(|(g, vals)| {
                let x0 = g as f64 * width + 0.5 + k as f64;
                Rectangle::new([(x0, 0.0), (x0 + 0.9, vals[k])], color.filled())
            })
            .collect();
        chart
            .draw_series(rects)?
            .label(client.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Throughput per client per QoS at one payload size.
pub fn throughput_svg(
    path: &Path,
    payload: usize,
    cases: &[Case],
    clients: &[String],
    results: &Results,
) -> Result<(), Box<dyn std::error::Error>> {
    let groups: Vec<(String, usize)> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == "throughput" && c.payload == payload)
        .map(|(i, c)| (format!("QoS {}", c.qos), i))
        .collect();
    let title = format!("Throughput, 1 publisher -> 1 subscriber, {payload} B payload (median)");
    bars(
        path,
        &title,
        "messages received per second",
        &groups,
        clients,
        results,
        |m| m.msgs_per_s,
    )
}

/// p99 latency per client per QoS at the fixed rate.
pub fn latency_svg(
    path: &Path,
    cases: &[Case],
    clients: &[String],
    results: &Results,
) -> Result<(), Box<dyn std::error::Error>> {
    let groups: Vec<(String, usize)> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == "latency")
        .map(|(i, c)| (format!("QoS {}", c.qos), i))
        .collect();
    bars(
        path,
        "p99 latency at 5,000 msg/s, 64 B (median of runs; lower is better)",
        "p99 publish-to-receive latency (µs)",
        &groups,
        clients,
        results,
        |m| m.p99_us,
    )
}

/// Grouped bars from plain values: `values[g][s]` is series `s` in group `g`.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[String],
    values: &[Vec<f64>],
) -> Result<(), Box<dyn std::error::Error>> {
    let width = series.len() as f64 + 1.0;
    let y_max = values.iter().flatten().fold(1.0f64, |a, &b| a.max(b)) * 1.15;
    let root = SVGBackend::new(path, (860, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = groups.len() as f64 * width;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 4)
        .x_label_formatter(&|x| {
            let g = (x / width).floor() as usize;
            let centre = g as f64 * width + width / 2.0;
            if (x - centre).abs() < width / 8.0 {
                groups.get(g).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc(y_desc)
        .draw()?;
    for (k, name) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let rects: Vec<Rectangle<(f64, f64)>> = values
            .iter()
            .enumerate()
            .map(|(g, vals)| {
                let x0 = g as f64 * width + 0.5 + k as f64;
                let v = vals.get(k).copied().unwrap_or(0.0);
                Rectangle::new([(x0, 0.0), (x0 + 0.9, v)], color.filled())
            })
            .collect();
        chart
            .draw_series(rects)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
