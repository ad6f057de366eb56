//! History charts of the table page: turns stored points into chart points with the expected
//! band each point was (or would have been) judged against, and draws them as small inline SVG.
//!
//! The band of a point is computed from the points before it with the sensor's own maths: the
//! volume band calls `volume::judge` itself, the cadence and distribution bands call
//! `stats::score` with the parameters and domain of `crate::judging`, as their judges do. It reads no history itself (the caller hands
//! it the points) and emits no script.

use std::fmt::Write as _;

use super::html::{escape, number, short_time};
use crate::config::{SensorSettings, VolumeConfig};
use crate::history::Point;
use crate::judging::{self, Measure};
use crate::sensors::snapshots::{Commit, CommitOperation};
use crate::sensors::{Status, Windows, volume};
use crate::stats::{Direction, score};

/// One point of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct ChartPoint {
    pub at_ms: i64,
    pub value: f64,
    /// (lower, upper) expected from the points before this one, when there were enough.
    pub band: Option<(f64, f64)>,
    /// Whether the judge called this value an anomaly (side and thresholds included).
    pub anomaly: bool,
    pub snapshot_id: Option<i64>,
    /// The value of the latest sensor run rather than a stored point (e.g. the open commit gap).
    pub live: bool,
    /// Which side(s) of the band the judge watches: a commit gap shorter than usual is not late.
    pub watched: Direction,
}

impl ChartPoint {
    pub fn plain(point: &Point) -> ChartPoint {
        ChartPoint {
            at_ms: point.observed_at_ms,
            value: point.value,
            band: None,
            anomaly: false,
            snapshot_id: point.snapshot_id,
            live: false,
            watched: Direction::Both,
        }
    }

    /// Whether the value lies beyond the band on a side the judge watches.
    pub fn outside_band(&self) -> bool {
        self.band.is_some_and(|(lower, upper)| match self.watched {
            Direction::Both => self.value < lower || self.value > upper,
            Direction::Spike => self.value > upper,
            Direction::Drop => self.value < lower,
        })
    }
}

/// A chart: one series with its bands.
#[derive(Clone, Debug)]
pub struct Chart {
    /// `sensor/metric` plus labels, e.g. `volume/rows_added` (also the `data-series` attribute).
    pub series: String,
    pub title: String,
    /// What the band means, shown under the title.
    pub note: String,
    /// Values are durations in seconds.
    pub seconds: bool,
    pub points: Vec<ChartPoint>,
}

/// Rows added per append, each with the band `volume::judge` gives it against the appends
/// before it. `preceding` are stored points older than `shown` (the judge's history only).
pub fn volume_points(table: &str, config: &VolumeConfig, preceding: &[Point], shown: &[Point]) -> Vec<ChartPoint> {
    let all: Vec<&Point> = preceding.iter().chain(shown.iter()).collect();
    let series = volume::rows_added_series(table);
    let mut charted = Vec::with_capacity(shown.len());
    for (index, point) in all.iter().enumerate().skip(preceding.len()) {
        let commit = Commit::new(
            point.snapshot_id.unwrap_or_default(),
            point.observed_at_ms,
            CommitOperation::Append,
            Some(point.value.max(0.0) as u64),
        );
        // The judge reads only the newest append and the window of stored points before it.
        let observation = volume::VolumeObservation {
            appends: vec![commit.clone()],
            latest_data_commit: Some(commit.clone()),
            current: Some(commit),
            totals: Vec::new(),
        };
        let mut windows = Windows::new();
        for request in volume::window_requests(table, config, &observation) {
            let since = request.since_ms.unwrap_or(i64::MIN);
            let mut window: Vec<Point> = all[..index]
                .iter()
                .filter(|past| {
                    past.series == request.series
                        && past.observed_at_ms >= since
                        && past.observed_at_ms < request.before_ms
                })
                .map(|past| (*past).clone())
                .collect();
            if window.len() > request.limit {
                window.drain(..window.len() - request.limit);
            }
            windows.insert(request.series, window);
        }
        let evaluation = volume::judge(table, config, &observation, &windows)
            .into_iter()
            .find(|evaluation| evaluation.metric == crate::sensors::Metric::ROWS_ADDED);
        let band = evaluation.as_ref().and_then(|evaluation| evaluation.expected_lower.zip(evaluation.expected_upper));
        let anomaly =
            evaluation.is_some_and(|evaluation| matches!(evaluation.status, Status::Warning | Status::Critical));
        charted.push(ChartPoint { band, anomaly, watched: config.settings.direction, ..ChartPoint::plain(point) });
        debug_assert!(point.series == series);
    }
    charted
}

/// Each value scored with `stats::score` against the `settings.window` values before it, with
/// the judging policy of `measure` (its floors and its domain), as the cadence and distribution
/// judges do. `preceding` supplies history older than `shown`.
pub fn scored_points(
    settings: &SensorSettings,
    direction: Direction,
    measure: Measure,
    preceding: &[Point],
    shown: &[Point],
) -> Vec<ChartPoint> {
    let params = judging::scoring_params(settings, direction, measure);
    let values: Vec<f64> = preceding.iter().chain(shown.iter()).map(|point| point.value).collect();
    shown
        .iter()
        .enumerate()
        .map(|(offset, point)| {
            let index = preceding.len() + offset;
            let window = &values[index.saturating_sub(settings.window)..index];
            let scored = score(point.value, window, &params);
            ChartPoint {
                band: scored.as_ref().map(|scored| judging::band(scored, measure)),
                anomaly: scored.is_some_and(|scored| scored.is_anomaly),
                watched: direction,
                ..ChartPoint::plain(point)
            }
        })
        .collect()
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// The chart as a `<figure>` with an inline SVG; points carry `data-*` attributes (value, band,
/// outside-band, anomaly, time, snapshot) so tests and readers can check what is drawn.
pub fn render(chart: &Chart) -> String {
    let mut out = String::new();
    let series = escape(&chart.series);
    let outside = chart.points.iter().filter(|point| point.outside_band()).count();
    let _ = write!(
        out,
        r#"<figure class="chart" data-series="{series}" data-points="{}" data-outside-count="{outside}"><figcaption><span class="chart-title">{}</span> <span class="chart-note">{}</span>{}</figcaption>"#,
        chart.points.len(),
        escape(&chart.title),
        escape(&chart.note),
        if outside > 0 {
            format!(r#" <span class="pill pill-critical">{outside} outside the band</span>"#)
        } else {
            String::new()
        },
    );
    if chart.points.is_empty() {
        out.push_str(r#"<p class="empty">No history yet.</p></figure>"#);
        return out;
    }
    let format = |value: f64| {
        if chart.seconds { crate::sensors::human_seconds(value) } else { number(value) }
    };

    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for point in &chart.points {
        low = low.min(point.value);
        high = high.max(point.value);
        if let Some((lower, upper)) = point.band {
            low = low.min(lower);
            high = high.max(upper);
        }
    }
    if high - low < 1e-9 {
        high += 1.0;
        low -= 1.0;
    }
    let pad = (high - low) * 0.06;
    // Counts and durations never go below 0: keep the axis there too.
    let (low, high) = (if low >= 0.0 { (low - pad).max(0.0) } else { low - pad }, high + pad);
    let first_ms = chart.points.first().map_or(0, |point| point.at_ms);
    let last_ms = chart.points.last().map_or(0, |point| point.at_ms);
    let count = chart.points.len();
    // Even spacing by index keeps bursts of commits readable; the axis shows the time range.
    let x = |index: usize| {
        if count <= 1 {
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0
        } else {
            LEFT + (WIDTH - LEFT - RIGHT) * index as f64 / (count - 1) as f64
        }
    };
    let y = |value: f64| TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - (value - low) / (high - low));

    let _ = write!(
        out,
        r#"<svg class="chart-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" preserveAspectRatio="none">"#,
        escape(&chart.title)
    );
    // Grid and axis labels.
    for fraction in [0.0, 0.5, 1.0] {
        let value = low + (high - low) * fraction;
        let line_y = y(value);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{line_y:.1}" y2="{line_y:.1}"/><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            line_y + 4.0,
            escape(&format(value))
        );
    }
    let _ = write!(
        out,
        r#"<text class="axis" x="{LEFT}" y="{:.1}">{}</text><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
        HEIGHT - 8.0,
        escape(&short_time(first_ms)),
        WIDTH - RIGHT,
        HEIGHT - 8.0,
        escape(&short_time(last_ms))
    );
    // The band, as one polygon per run of consecutive points that have one.
    let mut run: Vec<(usize, f64, f64)> = Vec::new();
    let flush = |run: &mut Vec<(usize, f64, f64)>, out: &mut String| {
        if run.len() >= 2 {
            let mut path = String::new();
            for (index, (point, _, upper)) in run.iter().enumerate() {
                let _ = write!(path, "{}{:.1},{:.1} ", if index == 0 { "M" } else { "L" }, x(*point), y(*upper));
            }
            for (point, lower, _) in run.iter().rev() {
                let _ = write!(path, "L{:.1},{:.1} ", x(*point), y(*lower));
            }
            let _ = write!(out, r#"<path class="band" d="{}Z"/>"#, path.trim_end());
        } else if let Some((point, lower, upper)) = run.first() {
            let _ = write!(
                out,
                r#"<line class="band-tick" x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}"/>"#,
                x(*point),
                y(*upper),
                y(*lower)
            );
        }
        run.clear();
    };
    for (index, point) in chart.points.iter().enumerate() {
        match point.band {
            Some((lower, upper)) => run.push((index, lower, upper)),
            None => flush(&mut run, &mut out),
        }
    }
    flush(&mut run, &mut out);
    // The line, then the points on top.
    let line: Vec<String> = chart
        .points
        .iter()
        .enumerate()
        .map(|(index, point)| format!("{:.1},{:.1}", x(index), y(point.value)))
        .collect();
    let _ = write!(out, r#"<polyline class="line" points="{}"/>"#, line.join(" "));
    for (index, point) in chart.points.iter().enumerate() {
        let outside = point.outside_band();
        let class = match (outside || point.anomaly, point.live) {
            (true, _) => "point point-outside",
            (false, true) => "point point-live",
            (false, false) => "point",
        };
        let radius = if outside || point.anomaly {
            4.5
        } else if count > 120 {
            1.6
        } else {
            2.4
        };
        let band_attributes = point
            .band
            .map(|(lower, upper)| format!(r#" data-lower="{lower}" data-upper="{upper}""#))
            .unwrap_or_default();
        let band_text = point
            .band
            .map(|(lower, upper)| format!(", expected {} – {}", format(lower), format(upper)))
            .unwrap_or_else(|| ", no band (too little history before it)".to_string());
        let snapshot = point.snapshot_id.map(|id| format!(r#" data-snapshot-id="{id}""#)).unwrap_or_default();
        let _ = write!(
            out,
            r#"<circle class="{class}" cx="{:.1}" cy="{:.1}" r="{radius}" data-at="{}" data-value="{}"{band_attributes} data-outside-band="{outside}" data-anomaly="{}" data-live="{}"{snapshot}><title>{}: {}{}{}</title></circle>"#,
            x(index),
            y(point.value),
            point.at_ms,
            point.value,
            point.anomaly,
            point.live,
            escape(&super::html::time(point.at_ms)),
            escape(&format(point.value)),
            escape(&band_text),
            if point.live { " (latest run, not yet a stored point)" } else { "" },
        );
    }
    out.push_str("</svg></figure>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::SeriesKey;

    fn points(series: &SeriesKey, values: &[f64]) -> Vec<Point> {
        values
            .iter()
            .enumerate()
            .map(|(index, value)| Point {
                series: series.clone(),
                observed_at_ms: 1_000_000 + index as i64 * 60_000,
                snapshot_id: Some(index as i64),
                value: *value,
            })
            .collect()
    }

    fn settings() -> SensorSettings {
        let schedule =
            crate::config::Schedule { expression: "0 * * * * *".to_string(), cron: "0 * * * * *".parse().unwrap() };
        SensorSettings {
            schedule,
            zscore_threshold: 3.0,
            min_history: 5,
            window: 50,
            rebaseline_after: 5,
            direction: Direction::Both,
            timeout: std::time::Duration::from_secs(5),
        }
    }

    #[test]
    fn volume_band_matches_the_judge_and_flags_the_tiny_batch() {
        let table = "bronze.t";
        let series = volume::rows_added_series(table);
        let config = VolumeConfig {
            deviation_percent: 20.0,
            critical_deviation_percent: 40.0,
            window: std::time::Duration::from_secs(7 * 86_400),
            seasonality: crate::config::Seasonality::Fixed(crate::judging::seasonal::Cycle::None),
            settings: settings(),
        };
        let all = points(&series, &[100.0, 110.0, 95.0, 105.0, 98.0, 102.0, 3.0]);
        let charted = volume_points(table, &config, &all[..2], &all[2..]);
        assert_eq!(charted.len(), 5);
        // min_history is 5: the shown points with fewer than 5 points before them have no band.
        assert!(charted[0].band.is_none() && charted[2].band.is_none());
        let last = charted.last().unwrap();
        let (lower, upper) = last.band.unwrap();
        let params = crate::judging::scoring_params(&settings(), Direction::Both, crate::judging::Measure::RowsAdded);
        let expected = crate::judging::score_counts(3.0, &[100.0, 110.0, 95.0, 105.0, 98.0, 102.0], &params).unwrap();
        assert!((lower - expected.expected_lower.max(0.0)).abs() < 1e-9);
        assert!((upper - expected.expected_upper).abs() < 1e-9);
        assert!(last.outside_band() && last.anomaly);
        assert!(!charted[3].outside_band());
    }

    /// The band a distribution chart draws for a point is the band `distribution::judge`
    /// judged that point against: same floor (0.1 % of the mean, not the default 1 %) and the
    /// same clamp to the statistic's domain.
    #[test]
    fn distribution_band_is_the_band_the_judge_used() {
        use crate::config::{DistributionConfig, DriftConfig, Scope, Statistic};
        use crate::sensors::distribution::{self, BatchProfile, ColumnStatistic, ValueSource};
        let table = "silver.t";
        let config = DistributionConfig {
            columns: vec![("price".to_string(), vec![Statistic::Mean, Statistic::NullPercent])],
            scope: Scope::Added,
            sample: None,
            drift: DriftConfig {
                reference_batches: 0,
                reference_snapshot: None,
                psi_threshold: 0.2,
                ks_p_value: 0.01,
                chi_square_p_value: 0.01,
            },
            settings: settings(),
        };
        // A steady mean whose spread (about 0.1) is under both floors, so the floor decides
        // the band; and a null percentage near 0, whose raw band dips below 0.
        let cases = [
            (Statistic::Mean, vec![1000.0, 1000.1, 999.9, 1000.05, 999.95, 1000.0, 1000.1], 1000.2),
            (Statistic::NullPercent, vec![0.0, 2.0, 0.0, 1.0, 3.0, 0.0, 2.0], 1.0),
        ];
        for (statistic, history, newest_value) in cases {
            let series = distribution::series_key(table, "price", statistic);
            let history = points(&series, &history);
            let mut windows = Windows::new();
            windows.insert(series.clone(), history.clone());
            let newest = BatchProfile {
                snapshot_id: 99,
                timestamp_ms: 9_000_000,
                scope: Scope::Added,
                row_count: 1000,
                files: 1,
                scanned_files: 1,
                scanned_rows: 1000,
                scanned_bytes: 1,
                sampled: false,
                values: vec![ColumnStatistic {
                    column: "price".to_string(),
                    statistic,
                    value: newest_value,
                    source: ValueSource::Scan,
                }],
                skipped: Vec::new(),
                samples: Default::default(),
            };
            let judged = distribution::judge(table, &config, &newest, &windows, None);
            let judged = judged.iter().find(|evaluation| evaluation.statistic.as_deref() == Some(statistic.as_str()));
            let judged = judged.expect("the judge scored the statistic");
            let shown = points(&series, &[newest_value]);
            let drawn = scored_points(
                &config.settings,
                config.settings.direction,
                Measure::Distribution(statistic),
                &history,
                &shown,
            );
            let (lower, upper) = drawn[0].band.expect("enough history for a band");
            assert_eq!(Some(lower), judged.expected_lower, "{statistic:?}");
            assert_eq!(Some(upper), judged.expected_upper, "{statistic:?}");
            assert!(lower >= 0.0, "{statistic:?} band starts at {lower}");
            if statistic == Statistic::Mean {
                // 3σ of the 0.1 % floor around 1000, widened 1.7× for a 7-point window: about
                // ±5, not the ±52 of a 1 % floor.
                assert!(upper - lower < 12.0, "band {lower}..{upper}");
            }
        }
    }

    #[test]
    fn scored_points_use_only_the_points_before() {
        let series = SeriesKey::new("a.b", "freshness", "commit_gap_seconds", &[]);
        let all = points(&series, &[60.0, 61.0, 59.0, 60.0, 62.0, 600.0]);
        let charted = scored_points(&settings(), Direction::Spike, Measure::CommitGap, &[], &all);
        assert!(charted[4].band.is_none());
        assert!(charted[5].outside_band() && charted[5].anomaly);
        // A gap shorter than usual is not late: never outside for a spike judge.
        let early =
            scored_points(&settings(), Direction::Spike, Measure::CommitGap, &all[..5], &points(&series, &[1.0]));
        assert!(early[0].band.is_some() && !early[0].outside_band() && !early[0].anomaly);
        let rendered = render(&Chart {
            series: "freshness/commit_gap_seconds".into(),
            title: "gap <b>".into(),
            note: String::new(),
            seconds: true,
            points: charted,
        });
        assert!(rendered.contains(r#"data-outside-band="true""#));
        assert!(rendered.contains("gap &lt;b&gt;"));
        assert!(!rendered.contains("<b>"));
    }
}
