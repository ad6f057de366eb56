//! Which runbook section tells a person what to do about a result: the one mapping from a
//! result (sensor, metric, status and what it is about) to the `docs/runbooks/` section of the
//! alert that fires for it, so `icewatch check`, its JSON and the status page link to the very
//! anchor the alert's `runbook_url` carries. It must not decide anything about the result
//! itself; results that are `ok` or `insufficient_history` have no section.
//!
//! The base of the links is `[server] runbook_base_url`; icewatch exports the same base as
//! `icewatch_runbook_info{base_url}`, which the rules' `runbook_url` annotations read.

use crate::config::SensorKind;
use crate::sensors::health::HEALTH;
use crate::sensors::{Evaluation, Metric, Status};

/// Where the runbooks are when `[server] runbook_base_url` is not set: the repository's own.
pub const DEFAULT_BASE_URL: &str = "https://github.com/icewatch/icewatch/blob/main/docs/runbooks";

/// A runbook section: a file of `docs/runbooks/` and the anchor of one of its headings (an
/// alert name, lowercased, as GitHub makes anchors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub file: &'static str,
    pub anchor: &'static str,
}

impl Section {
    const fn new(file: &'static str, anchor: &'static str) -> Section {
        Section { file, anchor }
    }

    /// The section's address under `base` (a URL without the trailing `/`).
    pub fn url(&self, base: &str) -> String {
        format!("{}/{}#{}", base.trim_end_matches('/'), self.file, self.anchor)
    }
}

/// The beginning of the message of a `lineage` result for a root-cause stage.
pub(crate) const ROOT_CAUSE_MESSAGE: &str = "root cause in pipeline";

/// The section for a warning, critical or error result of a table in `layer`, `None` for the
/// others (and for a kind no shipped alert covers).
pub fn section(evaluation: &Evaluation, layer: &str) -> Option<Section> {
    match evaluation.status {
        Status::Ok | Status::InsufficientHistory => return None,
        Status::Error => return Some(Section::new("icewatch.md", "icewatchsensorfailing")),
        Status::Warning | Status::Critical => {}
    }
    let critical = evaluation.status == Status::Critical;
    let metric = evaluation.metric;
    let anchor = match evaluation.sensor {
        SensorKind::FRESHNESS if metric == Metric::FRESHNESS_SECONDS => match layer {
            _ if critical => "freshnesscriticalfailure",
            "bronze" => "bronzefreshnessviolation",
            "silver" => "silverfreshnessviolation",
            "gold" => "goldfreshnessviolation",
            _ => "freshnessviolation",
        },
        SensorKind::FRESHNESS if metric == Metric::EVENT_TIME_LAG_SECONDS => match evaluation.value {
            _ if critical => "eventtimelagcritical",
            Some(lag) if lag < 0.0 => "eventtimeinfuture",
            _ => "eventtimelaghigh",
        },
        SensorKind::FRESHNESS if metric == Metric::COMMIT_GAP_SECONDS => "commitgapanomaly",
        SensorKind::VOLUME => "volumeanomalydetected",
        SensorKind::SCHEMA if metric == Metric::SCHEMA_CHANGE => match evaluation.change_type.as_deref() {
            Some("column_dropped") => "unexpectedcolumndrop",
            Some("column_added") => "columnadded",
            Some("type_changed") => "columntypechanged",
            _ => "schemaevolved",
        },
        SensorKind::SCHEMA if critical => "schemaexpectationviolated",
        SensorKind::SCHEMA => "schemaunexpectedcolumn",
        SensorKind::DISTRIBUTION if metric == Metric::DRIFT => "distributiondrift",
        SensorKind::DISTRIBUTION
            if evaluation.statistic.as_deref() == Some("null_percent")
                && evaluation.zscore.is_some_and(|z| z > 0.0) =>
        {
            "highnullpercentage"
        }
        SensorKind::DISTRIBUTION => "distributionanomaly",
        HEALTH => match metric.as_str() {
            "small_files" => "icebergsmallfiles",
            "manifests" => "icebergmanifestbloat",
            "delete_ratio" => "icebergdeletedebt",
            "expirable_snapshots" => "icebergsnapshotsnotexpired",
            _ => return None,
        },
        SensorKind::LINEAGE if evaluation.message.starts_with(ROOT_CAUSE_MESSAGE) => "pipelinestagerootcause",
        SensorKind::LINEAGE => "pipelinestagefailure",
        _ => return None,
    };
    let file = match evaluation.sensor {
        SensorKind::FRESHNESS => "freshness.md",
        SensorKind::VOLUME => "volume.md",
        SensorKind::SCHEMA => "schema.md",
        SensorKind::DISTRIBUTION => "distribution.md",
        HEALTH => "health.md",
        SensorKind::LINEAGE => "lineage.md",
        _ => return None,
    };
    Some(Section::new(file, anchor))
}

/// The runbook link of a result, under `base`.
pub fn url(base: &str, evaluation: &Evaluation, layer: &str) -> Option<String> {
    section(evaluation, layer).map(|section| section.url(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(sensor: SensorKind, metric: Metric, status: Status) -> Evaluation {
        Evaluation::new("a.b", sensor, metric, status, String::new())
    }

    /// Every section the mapping can name is a heading of its runbook and the `runbook_url` of a
    /// shipped alert, so `check`, the status page and the alert agree on where to go.
    #[test]
    fn every_section_is_a_runbook_heading_and_an_alerts_runbook_url() {
        let rules: String = ["distribution", "freshness", "health", "icewatch", "lineage", "schema", "volume"]
            .iter()
            .map(|file| std::fs::read_to_string(format!("{}/rules/{file}.yml", env!("CARGO_MANIFEST_DIR"))).unwrap())
            .collect();
        let mut cases = Vec::new();
        for status in [Status::Warning, Status::Critical, Status::Error] {
            for (sensor, metric) in [
                (SensorKind::FRESHNESS, Metric::FRESHNESS_SECONDS),
                (SensorKind::FRESHNESS, Metric::EVENT_TIME_LAG_SECONDS),
                (SensorKind::FRESHNESS, Metric::COMMIT_GAP_SECONDS),
                (SensorKind::VOLUME, Metric::ROWS_ADDED),
                (SensorKind::SCHEMA, Metric::SCHEMA_CHANGE),
                (SensorKind::SCHEMA, Metric::SCHEMA_EXPECTATION),
                (SensorKind::DISTRIBUTION, Metric::DISTRIBUTION_VALUE),
                (SensorKind::DISTRIBUTION, Metric::DRIFT),
                (HEALTH, Metric::new("small_files")),
                (HEALTH, Metric::new("manifests")),
                (HEALTH, Metric::new("delete_ratio")),
                (HEALTH, Metric::new("expirable_snapshots")),
                (SensorKind::LINEAGE, Metric::STAGE),
            ] {
                for layer in ["bronze", "silver", "gold", "other"] {
                    let mut evaluation = result(sensor, metric, status);
                    cases.push((evaluation.clone(), layer));
                    evaluation.value = Some(-600.0);
                    evaluation.zscore = Some(4.0);
                    evaluation.statistic = Some("null_percent".to_string());
                    evaluation.message = format!("{ROOT_CAUSE_MESSAGE} `p`");
                    for change in ["column_dropped", "column_added", "type_changed", "column_renamed"] {
                        evaluation.change_type = Some(change.to_string());
                        cases.push((evaluation.clone(), layer));
                    }
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (evaluation, layer) in &cases {
            let section = section(evaluation, layer).unwrap_or_else(|| panic!("no section for {evaluation:?}"));
            seen.insert((section.file, section.anchor));
        }
        for (file, anchor) in &seen {
            let runbook =
                std::fs::read_to_string(format!("{}/docs/runbooks/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            let heading =
                runbook.lines().any(|line| line.starts_with("## ") && line[3..].trim().to_lowercase() == *anchor);
            assert!(heading, "no `## ` heading for #{anchor} in docs/runbooks/{file}");
            assert!(rules.contains(&format!("/{file}#{anchor}'")), "no alert links to {file}#{anchor}");
        }
        // Every alert but those without a result of their own (the service itself, metadata facts)
        // is reachable from a result.
        assert!(seen.len() >= 26, "only {} sections: {seen:?}", seen.len());
    }

    #[test]
    fn only_problems_have_a_section_and_the_link_joins_the_base() {
        let ok = result(SensorKind::FRESHNESS, Metric::FRESHNESS_SECONDS, Status::Ok);
        assert_eq!(section(&ok, "bronze"), None);
        let short = result(SensorKind::DISTRIBUTION, Metric::DRIFT, Status::InsufficientHistory);
        assert_eq!(section(&short, "gold"), None);
        let stale = result(SensorKind::FRESHNESS, Metric::FRESHNESS_SECONDS, Status::Warning);
        assert_eq!(
            url("https://runbooks.example.org/icewatch/", &stale, "bronze").as_deref(),
            Some("https://runbooks.example.org/icewatch/freshness.md#bronzefreshnessviolation")
        );
    }
}
