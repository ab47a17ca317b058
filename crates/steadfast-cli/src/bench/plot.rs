//! The reconnect-storm plot: connection attempts per second over time, one line per policy.

use std::path::Path;

use plotters::prelude::*;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Writes an SVG: x = seconds since the broker was killed, y = CONNECTs per second (log
/// scale), a dashed line at the restart and one at a reference rate (the ideal uniform
/// spread, or a simulated broker's admission cap), labelled `ideal_label`.
pub fn storm_svg(
    path: &Path,
    title: &str,
    curves: &[(String, Vec<(f64, f64)>)],
    restart_s: f64,
    ideal: f64,
    ideal_label: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let x_max = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold(restart_s + 1.0, f64::max)
        + 0.5;
    let y_max = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .fold(ideal, f64::max)
        .max(10.0)
        * 2.0;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (1f64..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds since the broker was killed (SIGKILL)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("CONNECT attempts per second (log)")
        .draw()?;
    chart
        .draw_series(DashedLineSeries::new(
            vec![(restart_s, 1.0), (restart_s, y_max)],
            6,
            4,
            RGBColor(90, 90, 90).stroke_width(2),
        ))?
        .label("broker restarted")
        .legend(|(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 20, y)],
                RGBColor(90, 90, 90).stroke_width(2),
            )
        });
    chart
        .draw_series(DashedLineSeries::new(
            vec![(0.0, ideal), (x_max, ideal)],
            3,
            3,
            RGBColor(148, 103, 189).stroke_width(2),
        ))?
        .label(ideal_label)
        .legend(|(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 20, y)],
                RGBColor(148, 103, 189).stroke_width(2),
            )
        });
    for (i, (name, curve)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                curve.iter().map(|&(x, y)| (x, y.max(1.0))),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
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
