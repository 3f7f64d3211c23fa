//! The bench's SVG: added latency as a CDF (one line per stream) and over
//! time (one point per frame), with the latency budget marked.

use super::report::{RunReport, StreamRun};
use crate::error::{Error, PipelineError};
use plotters::prelude::*;
use std::path::Path;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn err(e: impl std::fmt::Display) -> Error {
    PipelineError::Other(format!("svg: {e}")).into()
}

/// Writes the plot of `report` (and its streams' samples) to `path`.
pub fn write_svg(path: &Path, report: &RunReport, runs: &[StreamRun]) -> Result<(), Error> {
    let svg = render_svg(report, runs)?;
    std::fs::write(path, svg).map_err(|e| Error::io(path, e))
}

/// The plot as an SVG document.
pub fn render_svg(report: &RunReport, runs: &[StreamRun]) -> Result<String, Error> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (1000, 860)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let s = &report.setup;
        let l = &report.latency_ms;
        let title = format!(
            "livecensor bench: {} stream(s) {}x{}@{} {} - latency p50 {:.1} p95 {:.1} p99 {:.1} max {:.1} ms - {:.1}/{:.0} fps",
            s.streams, s.width, s.height, s.fps, s.mode, l.p50, l.p95, l.p99, l.max,
            report.fps_total, report.fps_target_total
        );
        let root = root
            .titled(&title, ("sans-serif", 17).into_font())
            .map_err(err)?;
        let (top, bottom) = root.split_vertically(410);
        let budget = s.latency_budget_ms;
        let lat_max = runs
            .iter()
            .flat_map(|r| r.samples.iter().map(|x| x.latency_ms()))
            .fold(budget, f64::max)
            * 1.05;
        let t_max = runs
            .iter()
            .flat_map(|r| r.samples.iter().map(|x| x.arrival_s))
            .fold(1.0, f64::max);
        let many = runs.len() > PALETTE.len();

        // CDF.
        let mut cdf = ChartBuilder::on(&top)
            .caption(
                "Added latency CDF (arrival -> censored frame encoded)",
                ("sans-serif", 15),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..lat_max, 0.0..1.0)
            .map_err(err)?;
        cdf.configure_mesh()
            .x_desc("added latency (ms)")
            .y_desc("share of frames")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        let series: Vec<(String, Vec<f64>, RGBColor)> = if many {
            vec![(
                format!("all {} streams", runs.len()),
                runs.iter()
                    .flat_map(|r| r.samples.iter().map(|x| x.latency_ms()))
                    .collect(),
                PALETTE[0],
            )]
        } else {
            runs.iter()
                .enumerate()
                .map(|(k, r)| {
                    (
                        format!("stream {} ({})", r.id, r.scenario),
                        r.samples.iter().map(|x| x.latency_ms()).collect(),
                        PALETTE[k % PALETTE.len()],
                    )
                })
                .collect()
        };
        for (name, mut v, c) in series {
            v.sort_by(f64::total_cmp);
            let n = v.len().max(1) as f64;
            let pts: Vec<(f64, f64)> = v
                .iter()
                .enumerate()
                .map(|(i, x)| (*x, (i + 1) as f64 / n))
                .collect();
            cdf.draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        cdf.draw_series(LineSeries::new(
            vec![(budget, 0.0), (budget, 1.0)],
            RED.stroke_width(1),
        ))
        .map_err(err)?
        .label(format!("budget {budget} ms"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(1)));
        cdf.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(err)?;

        // Over time.
        let mut over = ChartBuilder::on(&bottom)
            .caption(
                "Added latency over time (one point per frame)",
                ("sans-serif", 15),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..t_max * 1.02, 0.0..lat_max)
            .map_err(err)?;
        over.configure_mesh()
            .x_desc("frame arrival (s since start)")
            .y_desc("added latency (ms)")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        for (k, r) in runs.iter().enumerate() {
            let c = PALETTE[k % PALETTE.len()];
            over.draw_series(
                r.samples
                    .iter()
                    .map(|x| Circle::new((x.arrival_s, x.latency_ms()), 2, c.filled())),
            )
            .map_err(err)?;
        }
        over.draw_series(LineSeries::new(
            vec![(0.0, budget), (t_max * 1.02, budget)],
            RED.stroke_width(1),
        ))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(text)
}
