//! Health: the maintenance debt of a table, from its metadata only (the manifest list and the
//! manifests of the current snapshot, the snapshot log, the table properties; no data file is
//! read). Small data files, many small manifests, rows deleted by delete files but not yet
//! rewritten (merge-on-read debt) and snapshots past their expiry each give a warning that names
//! the maintenance action. Judged against thresholds, not history: debt is a state, not a trend.
//!
//! This kind is declared entirely here: its `[tables."ns.name".health]` section (keys, parser),
//! its metric families, and its judging. Manifests are immutable, so what each one holds is
//! cached by path: a run after an append reads only the new manifests.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use iceberg::spec::{
    DataContentType, DataFileFormat, ManifestContentType, SnapshotReference, SnapshotRetention, TableMetadata,
    TableProperties,
};
use iceberg::table::Table;

use super::manifest_cache::ManifestCache;
use super::snapshots::CommitOperation;
use super::{Evaluation, Export, Family, Input, Metric, Observed, Reading, Sensor, SensorError, Status, human_seconds};
use crate::config::{Key, SectionReader, SectionSpec, SensorKind, SensorSection, SensorSettings, duration_to_string};

pub const HEALTH: SensorKind = SensorKind::new("health");

const SMALL_FILES: Metric = Metric::new("small_files");
const MANIFESTS: Metric = Metric::new("manifests");
const DELETE_RATIO: Metric = Metric::new("delete_ratio");
const EXPIRABLE_SNAPSHOTS: Metric = Metric::new("expirable_snapshots");

/// `commit.manifest.target-size-bytes` and its default (the iceberg crate has no constant).
const MANIFEST_TARGET_SIZE_PROPERTY: &str = "commit.manifest.target-size-bytes";
const MANIFEST_TARGET_SIZE_DEFAULT: u64 = 8 * 1024 * 1024;

/// The `[tables."ns.name".health]` section.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    pub settings: SensorSettings,
    /// Warn when more than this share of the data files is small (under a quarter of the target).
    pub max_small_file_share: f64,
    /// ... and at least this many files are small.
    pub min_small_files: u64,
    /// Warn when at least this many manifests average under a quarter of the manifest target.
    pub min_manifests: u64,
    /// Warn when delete files mark more than this share of the live rows as deleted.
    pub max_delete_ratio: f64,
    /// How long past its expiry a snapshot may stay before it is a warning.
    pub snapshot_grace: Duration,
}

impl SensorSection for HealthConfig {
    fn settings(&self) -> &SensorSettings {
        &self.settings
    }
}

const DEFAULT_MAX_SMALL_FILE_SHARE: f64 = 0.5;
const DEFAULT_MIN_SMALL_FILES: u64 = 100;
const DEFAULT_MIN_MANIFESTS: u64 = 100;
const DEFAULT_MAX_DELETE_RATIO: f64 = 0.1;
const DEFAULT_SNAPSHOT_GRACE: Duration = Duration::from_secs(24 * 3600);

const HEALTH_KEYS: &[Key] = &[
    Key {
        name: "max_small_file_share",
        default: "`0.5`",
        doc: "Warn when more than this share of the data files is under a quarter of the target file size (`write.target-file-size-bytes`, 512 MiB when unset): run `rewrite_data_files`.",
    },
    Key {
        name: "min_small_files",
        default: "`100`",
        doc: "The small-file warning needs at least this many small files as well: a few are not worth a rewrite.",
    },
    Key {
        name: "min_manifests",
        default: "`100`",
        doc: "Warn when the current snapshot has at least this many manifests and they average under a quarter of `commit.manifest.target-size-bytes` (8 MiB when unset): run `rewrite_manifests`.",
    },
    Key {
        name: "max_delete_ratio",
        default: "`0.1`",
        doc: "Warn when delete files (position, equality, deletion vectors) hold more delete records than this share of the live data rows: run `rewrite_position_delete_files` or `rewrite_data_files`.",
    },
    Key {
        name: "snapshot_grace",
        default: "`\"1d\"`",
        doc: "Warn when a snapshot that `expire_snapshots` would remove (older than `history.expire.max-snapshot-age-ms`, 5 days when unset, and not among the `history.expire.min-snapshots-to-keep` newest of a branch nor the head of a ref) is older than that by more than this.",
    },
];

fn parse_section(reader: &mut SectionReader<'_, '_, '_>) -> Option<Arc<dyn SensorSection>> {
    let share = |value: f64| {
        if (0.0..=1.0).contains(&value) { Ok(()) } else { Err(format!("must be between 0 and 1, got {value}")) }
    };
    let ratio = |value: f64| if value >= 0.0 { Ok(()) } else { Err(format!("must not be negative, got {value}")) };
    Some(Arc::new(HealthConfig {
        settings: reader.settings(),
        max_small_file_share: reader.number("max_small_file_share", share).unwrap_or(DEFAULT_MAX_SMALL_FILE_SHARE),
        min_small_files: reader
            .integer("min_small_files", 1, i64::MAX)
            .map_or(DEFAULT_MIN_SMALL_FILES, |count| count as u64),
        min_manifests: reader.integer("min_manifests", 1, i64::MAX).map_or(DEFAULT_MIN_MANIFESTS, |count| count as u64),
        max_delete_ratio: reader.number("max_delete_ratio", ratio).unwrap_or(DEFAULT_MAX_DELETE_RATIO),
        snapshot_grace: reader.duration("snapshot_grace").unwrap_or(DEFAULT_SNAPSHOT_GRACE),
    }))
}

/// What the live entries of one manifest hold.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct ManifestTally {
    data_files: u64,
    data_bytes: u64,
    data_rows: u64,
    /// Data files under the small-file bound the tally was made with.
    small_files: u64,
    position_delete_files: u64,
    equality_delete_files: u64,
    /// Position deletes stored as deletion vectors (Puffin, format v3).
    deletion_vectors: u64,
    /// Delete records: rows marked deleted by position, and equality delete rows.
    delete_records: u64,
}

impl ManifestTally {
    fn add(&mut self, other: &ManifestTally) {
        self.data_files += other.data_files;
        self.data_bytes += other.data_bytes;
        self.data_rows += other.data_rows;
        self.small_files += other.small_files;
        self.position_delete_files += other.position_delete_files;
        self.equality_delete_files += other.equality_delete_files;
        self.deletion_vectors += other.deletion_vectors;
        self.delete_records += other.delete_records;
    }
}

/// What the table's metadata says about its upkeep.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthObservation {
    pub now_ms: i64,
    pub snapshot_id: Option<i64>,
    pub target_file_size_bytes: u64,
    pub data_files: u64,
    pub data_bytes: u64,
    pub data_rows: u64,
    pub small_files: u64,
    pub manifests: u64,
    pub manifest_bytes: u64,
    pub manifest_target_size_bytes: u64,
    pub position_delete_files: u64,
    pub equality_delete_files: u64,
    pub deletion_vectors: u64,
    pub delete_records: u64,
    pub snapshots: u64,
    pub oldest_snapshot_ms: Option<i64>,
    pub expiry: Expiry,
    /// When the newest `replace` snapshot (a compaction) of the current branch was committed.
    pub last_compaction_ms: Option<i64>,
    pub metadata_log_entries: u64,
}

impl HealthObservation {
    fn small_file_share(&self) -> f64 {
        if self.data_files == 0 { 0.0 } else { self.small_files as f64 / self.data_files as f64 }
    }

    fn delete_ratio(&self) -> f64 {
        if self.data_rows == 0 { 0.0 } else { self.delete_records as f64 / self.data_rows as f64 }
    }

    fn average_manifest_bytes(&self) -> f64 {
        if self.manifests == 0 { 0.0 } else { self.manifest_bytes as f64 / self.manifests as f64 }
    }

    fn delete_files(&self) -> u64 {
        self.position_delete_files + self.equality_delete_files + self.deletion_vectors
    }
}

/// The snapshots `expire_snapshots` would remove under the table's own retention properties.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expiry {
    pub max_snapshot_age_ms: i64,
    pub min_snapshots_to_keep: usize,
    /// Commit times of the snapshots past expiry, oldest first.
    pub expirable_ms: Vec<i64>,
}

/// A table property parsed as `T`, its default when unset or unreadable.
fn property<T: std::str::FromStr>(metadata: &TableMetadata, key: &str, default: T) -> T {
    metadata.properties().get(key).and_then(|value| value.trim().parse().ok()).unwrap_or(default)
}

/// The table's branches and tags. The iceberg crate keeps `refs` private, so they are read from
/// the metadata's own serialized form (the fields the spec names); the pipeline reads one
/// metadata per run, and this costs one serialization of it.
fn references(metadata: &TableMetadata) -> Vec<SnapshotReference> {
    let refs =
        serde_json::to_value(metadata).ok().and_then(|mut json| json.get_mut("refs").map(serde_json::Value::take));
    let refs: HashMap<String, SnapshotReference> =
        refs.and_then(|refs| serde_json::from_value(refs).ok()).unwrap_or_default();
    let mut refs: Vec<SnapshotReference> = refs.into_values().collect();
    if refs.is_empty()
        && let Some(current) = metadata.current_snapshot_id()
    {
        refs.push(SnapshotReference::new(
            current,
            SnapshotRetention::Branch { min_snapshots_to_keep: None, max_snapshot_age_ms: None, max_ref_age_ms: None },
        ));
    }
    refs
}

/// What would expire: every snapshot except the heads of refs, and along each branch its
/// newest `min-snapshots-to-keep` ancestors and those younger than `max-snapshot-age-ms` (a
/// branch's own retention overrides the table's); snapshots on no branch are kept while young.
pub fn expiry(metadata: &TableMetadata, refs: &[SnapshotReference], now_ms: i64) -> Expiry {
    let max_age_ms = property(
        metadata,
        TableProperties::PROPERTY_MAX_SNAPSHOT_AGE_MS,
        TableProperties::PROPERTY_MAX_SNAPSHOT_AGE_MS_DEFAULT,
    );
    let min_keep = property(
        metadata,
        TableProperties::PROPERTY_MIN_SNAPSHOTS_TO_KEEP,
        TableProperties::PROPERTY_MIN_SNAPSHOTS_TO_KEEP_DEFAULT,
    );
    let mut retained: HashSet<i64> = HashSet::new();
    let mut on_a_branch: HashSet<i64> = HashSet::new();
    for reference in refs {
        retained.insert(reference.snapshot_id);
        let SnapshotRetention::Branch { min_snapshots_to_keep, max_snapshot_age_ms, .. } = &reference.retention else {
            continue;
        };
        let keep = min_snapshots_to_keep.map_or(min_keep, |keep| keep.max(0) as usize);
        let cutoff = now_ms.saturating_sub(max_snapshot_age_ms.unwrap_or(max_age_ms));
        // Visited on this walk: a cycle in corrupt metadata must not loop forever.
        let mut walked = HashSet::new();
        let mut next = Some(reference.snapshot_id);
        while let Some(snapshot) = next.and_then(|id| metadata.snapshot_by_id(id)) {
            if !walked.insert(snapshot.snapshot_id()) {
                break;
            }
            on_a_branch.insert(snapshot.snapshot_id());
            if walked.len() <= keep || snapshot.timestamp_ms() >= cutoff {
                retained.insert(snapshot.snapshot_id());
            }
            next = snapshot.parent_snapshot_id();
        }
    }
    let cutoff = now_ms.saturating_sub(max_age_ms);
    let mut expirable_ms: Vec<i64> = metadata
        .snapshots()
        .filter(|snapshot| !retained.contains(&snapshot.snapshot_id()))
        .filter(|snapshot| on_a_branch.contains(&snapshot.snapshot_id()) || snapshot.timestamp_ms() < cutoff)
        .map(|snapshot| snapshot.timestamp_ms())
        .collect();
    expirable_ms.sort_unstable();
    Expiry { max_snapshot_age_ms: max_age_ms, min_snapshots_to_keep: min_keep, expirable_ms }
}

/// Reads the manifest list of the current snapshot and every manifest not in `cache`.
async fn observe(
    table: &Table,
    table_name: &str,
    now_ms: i64,
    cache: &TallyCache,
) -> Result<HealthObservation, SensorError> {
    let metadata = table.metadata();
    let target_file_size_bytes = property(
        metadata,
        TableProperties::PROPERTY_WRITE_TARGET_FILE_SIZE_BYTES,
        TableProperties::PROPERTY_WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT as u64,
    )
    .max(1);
    let manifest_target_size_bytes =
        property(metadata, MANIFEST_TARGET_SIZE_PROPERTY, MANIFEST_TARGET_SIZE_DEFAULT).max(1);
    let mut totals = ManifestTally::default();
    let (mut manifests, mut manifest_bytes) = (0, 0);
    if let Some(snapshot) = metadata.current_snapshot() {
        let metadata_error = |source: iceberg::Error| SensorError::Metadata { table: table_name.to_string(), source };
        let manifest_list = table.manifest_list_reader(snapshot).load().await.map_err(metadata_error)?;
        let small_below = target_file_size_bytes / 4;
        let mut live = HashSet::new();
        for manifest_file in manifest_list.entries() {
            manifests += 1;
            manifest_bytes += manifest_file.manifest_length.max(0) as u64;
            live.insert(manifest_file.manifest_path.as_str());
            let tally = cache
                .get_or_load(table, manifest_file, &small_below, |manifest| {
                    tally_manifest(manifest, manifest_file.content, small_below)
                })
                .await
                .map_err(metadata_error)?;
            totals.add(&tally);
        }
        // Forget this table's manifests that are no longer in its current snapshot.
        cache.keep_only(table, &small_below, &live);
    }
    let history = super::snapshots::commits(metadata);
    Ok(HealthObservation {
        now_ms,
        snapshot_id: metadata.current_snapshot_id(),
        target_file_size_bytes,
        data_files: totals.data_files,
        data_bytes: totals.data_bytes,
        data_rows: totals.data_rows,
        small_files: totals.small_files,
        manifests,
        manifest_bytes,
        manifest_target_size_bytes,
        position_delete_files: totals.position_delete_files,
        equality_delete_files: totals.equality_delete_files,
        deletion_vectors: totals.deletion_vectors,
        delete_records: totals.delete_records,
        snapshots: metadata.snapshots().len() as u64,
        oldest_snapshot_ms: metadata.snapshots().map(|snapshot| snapshot.timestamp_ms()).min(),
        expiry: expiry(metadata, &references(metadata), now_ms),
        last_compaction_ms: history
            .iter()
            .rev()
            .find(|commit| commit.operation == CommitOperation::Replace)
            .map(|commit| commit.timestamp_ms),
        metadata_log_entries: metadata.metadata_log().len() as u64,
    })
}

fn tally_manifest(manifest: &iceberg::spec::Manifest, content: ManifestContentType, small_below: u64) -> ManifestTally {
    let mut tally = ManifestTally::default();
    for entry in manifest.entries().iter().filter(|entry| entry.is_alive()) {
        let file = entry.data_file();
        match (content, file.content_type()) {
            (ManifestContentType::Data, _) | (_, DataContentType::Data) => {
                tally.data_files += 1;
                tally.data_bytes += file.file_size_in_bytes();
                tally.data_rows += file.record_count();
                if file.file_size_in_bytes() < small_below {
                    tally.small_files += 1;
                }
            }
            (_, DataContentType::PositionDeletes) => {
                if file.file_format() == DataFileFormat::Puffin {
                    tally.deletion_vectors += 1;
                } else {
                    tally.position_delete_files += 1;
                }
                tally.delete_records += file.record_count();
            }
            (_, DataContentType::EqualityDeletes) => {
                tally.equality_delete_files += 1;
                tally.delete_records += file.record_count();
            }
        }
    }
    tally
}

/// One result per kind of debt, each `ok` or a `warning` that names the action that pays it.
pub fn judge(table_name: &str, config: &HealthConfig, observation: &HealthObservation) -> Vec<Evaluation> {
    let at = |evaluation: Evaluation| evaluation.at(observation.now_ms, observation.snapshot_id);
    let result = |metric: Metric, warn: bool, message: String, value: f64| {
        let status = if warn { Status::Warning } else { Status::Ok };
        at(Evaluation::new(table_name, HEALTH, metric, status, message).with_value(value))
    };
    let share = observation.small_file_share();
    let small_warn = share > config.max_small_file_share && observation.small_files >= config.min_small_files;
    let mut small = format!(
        "{} of {} data files ({:.0} %) are under {} (a quarter of the {} target file size)",
        observation.small_files,
        observation.data_files,
        share * 100.0,
        bytes_text(observation.target_file_size_bytes / 4),
        bytes_text(observation.target_file_size_bytes),
    );
    if small_warn {
        small.push_str(&format!(
            "; over {:.0} % and at least {}: compact them with `rewrite_data_files`",
            config.max_small_file_share * 100.0,
            config.min_small_files
        ));
    }

    let average_manifest = observation.average_manifest_bytes();
    let manifest_warn = observation.manifests >= config.min_manifests
        && average_manifest < observation.manifest_target_size_bytes as f64 / 4.0;
    let mut manifests = format!(
        "{} manifests in the current snapshot, {} on average (target {})",
        observation.manifests,
        bytes_text(average_manifest as u64),
        bytes_text(observation.manifest_target_size_bytes),
    );
    if manifest_warn {
        manifests.push_str(&format!(
            "; at least {} averaging under a quarter of the target: merge them with `rewrite_manifests`",
            config.min_manifests
        ));
    }

    let ratio = observation.delete_ratio();
    let delete_warn = ratio > config.max_delete_ratio && observation.delete_files() > 0;
    let mut deletes = format!(
        "{} delete records in {} position delete files, {} equality delete files and {} deletion vectors, {:.1} % of {} live rows",
        observation.delete_records,
        observation.position_delete_files,
        observation.equality_delete_files,
        observation.deletion_vectors,
        ratio * 100.0,
        observation.data_rows,
    );
    if delete_warn {
        deletes.push_str(&format!(
            "; over {:.1} %: every read merges them, apply them with `rewrite_position_delete_files` (or `rewrite_data_files`)",
            config.max_delete_ratio * 100.0
        ));
    }

    let expiry = &observation.expiry;
    let overdue_before = observation
        .now_ms
        .saturating_sub(expiry.max_snapshot_age_ms)
        .saturating_sub(config.snapshot_grace.as_millis() as i64);
    let overdue = expiry.expirable_ms.first().is_some_and(|oldest| *oldest < overdue_before);
    let mut snapshots = format!(
        "{} snapshots, {} past expiry (older than {}, beyond the newest {} of each branch)",
        observation.snapshots,
        expiry.expirable_ms.len(),
        human_seconds(expiry.max_snapshot_age_ms as f64 / 1000.0),
        expiry.min_snapshots_to_keep,
    );
    if let Some(oldest) = expiry.expirable_ms.first() {
        snapshots
            .push_str(&format!(", the oldest {} old", human_seconds((observation.now_ms - oldest) as f64 / 1000.0)));
    }
    if overdue {
        snapshots.push_str(&format!(
            "; more than {} overdue: run `expire_snapshots`",
            duration_to_string(config.snapshot_grace)
        ));
    }
    vec![
        result(SMALL_FILES, small_warn, small, share),
        result(MANIFESTS, manifest_warn, manifests, observation.manifests as f64),
        result(DELETE_RATIO, delete_warn, deletes, ratio),
        result(EXPIRABLE_SNAPSHOTS, overdue, snapshots, expiry.expirable_ms.len() as f64),
    ]
}

/// `512 MiB`, `3.2 KiB`.
fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 10.0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

static SMALL_DATA_FILES: Family =
    Family::table_gauge("iceberg_small_data_files", "Data files under a quarter of the target file size.");
static SMALL_FILE_RATIO: Family = Family::table_gauge(
    "iceberg_small_file_ratio",
    "Share (0-1) of the data files under a quarter of the target file size.",
);
static AVERAGE_DATA_FILE_BYTES: Family =
    Family::table_gauge("iceberg_average_data_file_bytes", "Average size of the data files in the current snapshot.");
static TARGET_FILE_SIZE_BYTES: Family = Family::table_gauge(
    "iceberg_target_file_size_bytes",
    "The table's write.target-file-size-bytes (512 MiB when unset).",
);
static MANIFEST_FILES: Family =
    Family::table_gauge("iceberg_manifests", "Manifests in the current snapshot's manifest list.");
static AVERAGE_MANIFEST_BYTES: Family =
    Family::table_gauge("iceberg_average_manifest_bytes", "Average size of the current snapshot's manifests.");
static DELETE_FILES: Family = Family {
    name: "iceberg_delete_files",
    help: "Live delete files in the current snapshot, by content (position, equality, deletion_vector).",
    labels: &["content"],
    with_layer: true,
    export: Export::Gauge,
};
static DELETED_ROWS_RATIO: Family = Family::table_gauge(
    "iceberg_deleted_rows_ratio",
    "Delete records of the live delete files over the live data rows.",
);
static SNAPSHOTS: Family = Family::table_gauge("iceberg_snapshots", "Snapshots in the table metadata.");
static OLDEST_SNAPSHOT_AGE_SECONDS: Family =
    Family::table_gauge("iceberg_oldest_snapshot_age_seconds", "Age of the oldest snapshot in the table metadata.");
static EXPIRABLE_SNAPSHOT_COUNT: Family = Family::table_gauge(
    "iceberg_expirable_snapshots",
    "Snapshots expire_snapshots would remove under the table's history.expire.* properties.",
);
static LAST_COMPACTION_TIMESTAMP_SECONDS: Family = Family::table_gauge(
    "iceberg_last_compaction_timestamp_seconds",
    "Unix time of the newest replace (compaction) snapshot of the current branch.",
);
static METADATA_LOG_ENTRIES: Family =
    Family::table_gauge("iceberg_metadata_log_entries", "Previous metadata files listed in the metadata log.");

static FAMILIES: [&Family; 13] = [
    &SMALL_DATA_FILES,
    &SMALL_FILE_RATIO,
    &AVERAGE_DATA_FILE_BYTES,
    &TARGET_FILE_SIZE_BYTES,
    &MANIFEST_FILES,
    &AVERAGE_MANIFEST_BYTES,
    &DELETE_FILES,
    &DELETED_ROWS_RATIO,
    &SNAPSHOTS,
    &OLDEST_SNAPSHOT_AGE_SECONDS,
    &EXPIRABLE_SNAPSHOT_COUNT,
    &LAST_COMPACTION_TIMESTAMP_SECONDS,
    &METADATA_LOG_ENTRIES,
];

fn readings(observation: &HealthObservation) -> Vec<Reading> {
    let average_file =
        if observation.data_files == 0 { 0.0 } else { observation.data_bytes as f64 / observation.data_files as f64 };
    let mut readings = vec![
        Reading::new(&SMALL_DATA_FILES, observation.small_files as f64),
        Reading::new(&SMALL_FILE_RATIO, observation.small_file_share()),
        Reading::new(&AVERAGE_DATA_FILE_BYTES, average_file),
        Reading::new(&TARGET_FILE_SIZE_BYTES, observation.target_file_size_bytes as f64),
        Reading::new(&MANIFEST_FILES, observation.manifests as f64),
        Reading::new(&AVERAGE_MANIFEST_BYTES, observation.average_manifest_bytes()),
        Reading::labelled(&DELETE_FILES, &["position"], observation.position_delete_files as f64),
        Reading::labelled(&DELETE_FILES, &["equality"], observation.equality_delete_files as f64),
        Reading::labelled(&DELETE_FILES, &["deletion_vector"], observation.deletion_vectors as f64),
        Reading::new(&DELETED_ROWS_RATIO, observation.delete_ratio()),
        Reading::new(&SNAPSHOTS, observation.snapshots as f64),
        Reading::new(&EXPIRABLE_SNAPSHOT_COUNT, observation.expiry.expirable_ms.len() as f64),
        Reading::new(&METADATA_LOG_ENTRIES, observation.metadata_log_entries as f64),
    ];
    if let Some(oldest) = observation.oldest_snapshot_ms {
        readings.push(Reading::new(&OLDEST_SNAPSHOT_AGE_SECONDS, (observation.now_ms - oldest).max(0) as f64 / 1000.0));
    }
    if let Some(at) = observation.last_compaction_ms {
        readings.push(Reading::new(&LAST_COMPACTION_TIMESTAMP_SECONDS, at as f64 / 1000.0));
    }
    readings
}

/// Per manifest and small-file bound, what its live entries hold.
type TallyCache = ManifestCache<u64, ManifestTally>;

/// The health sensor. It judges the present state with thresholds and stores no history.
#[derive(Debug, Default)]
pub struct HealthSensor {
    cache: TallyCache,
}

impl Sensor for HealthSensor {
    fn kind(&self) -> SensorKind {
        HEALTH
    }

    fn families(&self) -> &'static [&'static Family] {
        &FAMILIES
    }

    fn section(&self) -> Option<SectionSpec> {
        Some(SectionSpec {
            doc: "[Health sensor](#tablesnsnamehealth) (maintenance debt).",
            keys: HEALTH_KEYS,
            window_key: None,
            parse: parse_section,
        })
    }

    fn observe<'a>(&'a self, input: &'a Input<'a>) -> BoxFuture<'a, Result<Observed<'a>, SensorError>> {
        Box::pin(async move {
            let Some(config) = input.config.section::<HealthConfig>(HEALTH) else { return Ok(Observed::default()) };
            let name = input.config.name.as_str();
            let observation = observe(input.table, name, input.now_ms, &self.cache).await?;
            let mut observed = Observed::verdict(judge(name, config, &observation));
            observed.readings = readings(&observation);
            Ok(observed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HealthConfig {
        HealthConfig {
            settings: SensorSettings {
                schedule: crate::config::Schedule {
                    expression: "0 * * * * *".to_string(),
                    cron: "0 * * * * *".parse().expect("cron"),
                },
                zscore_threshold: 3.0,
                min_history: 5,
                window: 30,
                rebaseline_after: 5,
                direction: crate::stats::Direction::Both,
                timeout: Duration::from_secs(60),
            },
            max_small_file_share: DEFAULT_MAX_SMALL_FILE_SHARE,
            min_small_files: DEFAULT_MIN_SMALL_FILES,
            min_manifests: DEFAULT_MIN_MANIFESTS,
            max_delete_ratio: DEFAULT_MAX_DELETE_RATIO,
            snapshot_grace: DEFAULT_SNAPSHOT_GRACE,
        }
    }

    const DAY_MS: i64 = 86_400_000;

    fn observation() -> HealthObservation {
        HealthObservation {
            now_ms: 100 * DAY_MS,
            snapshot_id: Some(1),
            target_file_size_bytes: 512 << 20,
            data_files: 10,
            data_bytes: 10 * (400 << 20),
            data_rows: 1_000_000,
            small_files: 0,
            manifests: 3,
            manifest_bytes: 3 * (6 << 20),
            manifest_target_size_bytes: MANIFEST_TARGET_SIZE_DEFAULT,
            position_delete_files: 0,
            equality_delete_files: 0,
            deletion_vectors: 0,
            delete_records: 0,
            snapshots: 3,
            oldest_snapshot_ms: Some(99 * DAY_MS),
            expiry: Expiry { max_snapshot_age_ms: 5 * DAY_MS, min_snapshots_to_keep: 1, expirable_ms: Vec::new() },
            last_compaction_ms: None,
            metadata_log_entries: 3,
        }
    }

    fn statuses(observation: &HealthObservation) -> Vec<(&'static str, Status)> {
        judge("a.b", &config(), observation)
            .iter()
            .map(|evaluation| (evaluation.metric.as_str(), evaluation.status))
            .collect()
    }

    #[test]
    fn a_well_kept_table_is_ok_on_every_count() {
        assert!(statuses(&observation()).iter().all(|(_, status)| *status == Status::Ok));
    }

    #[test]
    fn many_small_files_warn_and_few_do_not() {
        let mut many = observation();
        many.data_files = 5_000;
        many.small_files = 4_990;
        assert!(statuses(&many).contains(&("small_files", Status::Warning)));
        let message = &judge("a.b", &config(), &many)[0].message;
        assert!(message.contains("rewrite_data_files"), "{message}");
        // A small table is all small files, but 40 of them are not worth a rewrite.
        let mut few = observation();
        few.data_files = 40;
        few.small_files = 40;
        assert!(statuses(&few).contains(&("small_files", Status::Ok)));
    }

    #[test]
    fn many_small_manifests_warn_and_many_full_ones_do_not() {
        let mut small = observation();
        small.manifests = 400;
        small.manifest_bytes = 400 * 20_000;
        assert!(statuses(&small).contains(&("manifests", Status::Warning)));
        let mut full = observation();
        full.manifests = 400;
        full.manifest_bytes = 400 * (7 << 20);
        assert!(statuses(&full).contains(&("manifests", Status::Ok)));
    }

    #[test]
    fn delete_debt_warns_over_its_ratio() {
        let mut debt = observation();
        debt.position_delete_files = 30;
        debt.delete_records = 150_000;
        assert!(statuses(&debt).contains(&("delete_ratio", Status::Warning)));
        debt.delete_records = 50_000;
        assert!(statuses(&debt).contains(&("delete_ratio", Status::Ok)));
    }

    #[test]
    fn snapshots_warn_only_once_past_expiry_by_the_grace() {
        let mut kept = observation();
        kept.expiry.expirable_ms = vec![94 * DAY_MS + DAY_MS / 2];
        assert!(statuses(&kept).contains(&("expirable_snapshots", Status::Ok)), "half a day overdue is within grace");
        kept.expiry.expirable_ms = vec![90 * DAY_MS, 93 * DAY_MS];
        assert!(statuses(&kept).contains(&("expirable_snapshots", Status::Warning)));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes_text(512 << 20), "512 MiB");
        assert_eq!(bytes_text(128 << 20), "128 MiB");
        assert_eq!(bytes_text(3_300), "3.2 KiB");
        assert_eq!(bytes_text(12), "12 B");
    }
}
