//! Rate sweeps: one run per rate, a CSV row per run and an SVG chart of latency
//! percentiles against delivered throughput.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use crate::report::RunReport;

/// CSV header matching [`csv_row`].
pub const CSV_HEADER: &str = "rate,sent_per_s,delivered_per_s,p50_us,p90_us,p99_us,p999_us,max_us,lost,dup,out_of_order,errors,client_cpu_us_per_frame,server_cpu_us_per_frame";

/// One CSV row for `r`.
pub fn csv_row(r: &RunReport) -> String {
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    format!(
        "{},{:.1},{:.1},{},{},{},{},{},{},{},{},{},{},{}",
        r.rate.unwrap_or(0.0),
        r.sent_per_s,
        r.delivered_per_s,
        r.p50_us,
        r.p90_us,
        r.p99_us,
        r.p999_us,
        r.max_us,
        r.lost,
        r.dup,
        r.out_of_order,
        r.errors,
        opt(r.client_cpu_us_per_frame),
        opt(r.server_cpu_us_per_frame),
    )
}

/// Writes the CSV of a sweep.
pub fn write_csv(path: &Path, runs: &[RunReport]) -> anyhow::Result<()> {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for r in runs {
        let _ = writeln!(s, "{}", csv_row(r));
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

/// Writes an SVG chart: p50/p99/p99.9 latency (ms, log scale) against delivered frames/s.
pub fn write_svg(path: &Path, runs: &[RunReport]) -> anyhow::Result<()> {
    let mut pts: Vec<&RunReport> = runs.iter().filter(|r| r.latency_samples > 0).collect();
    anyhow::ensure!(
        !pts.is_empty(),
        "no run produced latency samples: nothing to chart"
    );
    pts.sort_by(|a, b| a.delivered_per_s.total_cmp(&b.delivered_per_s));
    let ms = |us: u64| (us.max(1) as f64) / 1000.0;
    let x_max = pts.iter().map(|r| r.delivered_per_s).fold(1.0, f64::max) * 1.05;
    let y_max = pts.iter().map(|r| ms(r.p999_us)).fold(0.001, f64::max) * 2.0;
    let y_min = pts.iter().map(|r| ms(r.p50_us)).fold(f64::MAX, f64::min) / 2.0;
    let title = format!(
        "{}: latency vs delivered throughput ({} conns)",
        pts[0].scenario, pts[0].connections
    );

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title.as_str(), ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, (y_min.max(0.001)..y_max).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("delivered frames/s")
            .y_desc("latency (ms, log)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v}"))
            .draw()?;
        type Pick = fn(&RunReport) -> u64;
        let series: [(&str, RGBColor, Pick); 3] = [
            ("p50", BLUE, |r| r.p50_us),
            ("p99", RGBColor(230, 120, 0), |r| r.p99_us),
            ("p99.9", RED, |r| r.p999_us),
        ];
        for (name, color, get) in series {
            let data: Vec<(f64, f64)> = pts
                .iter()
                .map(|r| (r.delivered_per_s, ms(get(r))))
                .collect();
            chart
                .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart.draw_series(data.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: f64, dps: f64, p50: u64) -> RunReport {
        RunReport {
            scenario: "room".into(),
            rate: Some(rate),
            delivered_per_s: dps,
            latency_samples: 10,
            p50_us: p50,
            p99_us: p50 * 4,
            p999_us: p50 * 10,
            ..RunReport::default()
        }
    }

    #[test]
    fn csv_and_svg() {
        let runs = vec![
            run(1000.0, 10_000.0, 300),
            run(0.0, 50_000.0, 5_000),
            run(5000.0, 49_000.0, 900),
        ];
        let row = csv_row(&runs[0]);
        assert_eq!(row.split(',').count(), CSV_HEADER.split(',').count());
        let dir = std::env::temp_dir().join(format!("loadtest-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_csv(&dir.join("s.csv"), &runs).unwrap();
        write_svg(&dir.join("s.svg"), &runs).unwrap();
        let svg = std::fs::read_to_string(dir.join("s.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("p99.9"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
