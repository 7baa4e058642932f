//! The report's chart: pytest's test count and coverage after each iteration, as an SVG written
//! beside the report. Values are the measured ones the state holds; an iteration that kept
//! nothing leaves both lines flat.

use plotters::prelude::*;

use crate::state::{Outcome, RunState};

#[derive(Debug, Clone, PartialEq)]
pub struct ChartPoint {
    /// 0 is the baseline.
    pub iteration: u32,
    pub tests: u32,
    pub coverage: Option<f64>,
}

/// One point for the baseline and one per finished iteration.
pub fn points(state: &RunState) -> Vec<ChartPoint> {
    let Some(baseline) = &state.baseline else {
        return Vec::new();
    };
    let mut tests = baseline.tests;
    let mut coverage = baseline.coverage.as_ref().map(|c| c.percent);
    let mut out = vec![ChartPoint {
        iteration: 0,
        tests,
        coverage,
    }];
    for it in state.finished() {
        if it.outcome == Some(Outcome::Kept)
            && let Some(v) = &it.verdict
        {
            tests = v.suite_tests;
            coverage = v.coverage.as_ref().map(|c| c.percent).or(coverage);
        }
        out.push(ChartPoint {
            iteration: it.n,
            tests,
            coverage,
        });
    }
    out
}

#[derive(Debug, thiserror::Error)]
#[error("cannot draw the chart: {0}")]
pub struct ChartError(String);

fn err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError(e.to_string())
}

pub fn render_svg(points: &[ChartPoint]) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (860, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let last = points.last().map(|p| p.iteration).unwrap_or(0).max(1);
        let max_tests = points.iter().map(|p| p.tests).max().unwrap_or(0).max(1);
        let y_top = (f64::from(max_tests) * 1.1).ceil() as u32;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Tests and coverage after each iteration",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .right_y_label_area_size(56)
            .build_cartesian_2d(0u32..last, 0u32..y_top)
            .map_err(err)?
            .set_secondary_coord(0u32..last, 0f64..100f64);
        chart
            .configure_mesh()
            .x_desc("iteration (0 = baseline)")
            .y_desc("tests collected by pytest")
            .x_labels(last.min(20) as usize + 1)
            .draw()
            .map_err(err)?;
        chart
            .configure_secondary_axes()
            .y_desc("coverage %")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.iteration, p.tests)),
                BLUE.stroke_width(2),
            ))
            .map_err(err)?
            .label("tests")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        let covered: Vec<(u32, f64)> = points
            .iter()
            .filter_map(|p| p.coverage.map(|c| (p.iteration, c)))
            .collect();
        if !covered.is_empty() {
            chart
                .draw_secondary_series(LineSeries::new(covered, RED.stroke_width(2)))
                .map_err(err)?
                .label("coverage %")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_svg_has_both_series() {
        let pts = vec![
            ChartPoint {
                iteration: 0,
                tests: 7,
                coverage: Some(32.3),
            },
            ChartPoint {
                iteration: 1,
                tests: 26,
                coverage: Some(60.0),
            },
            ChartPoint {
                iteration: 2,
                tests: 26,
                coverage: Some(60.0),
            },
        ];
        let svg = render_svg(&pts).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("coverage %") && svg.contains("tests collected by pytest"));
        assert!(svg.matches("<polyline").count() >= 2, "two lines expected");
    }
}
