//! Which snapshots are batches: the ones to profile this run and the drift reference of the
//! newest. Reads the table's snapshot list only, never a manifest or a data file.

use iceberg::table::Table;

use crate::config::{DistributionConfig, Scope};
use crate::sensors::snapshots::{Commit, CommitOperation, commits};

/// The newest `window` profileable snapshots of the current branch not yet profiled, oldest
/// first: on first sight the whole window (a backfill), afterwards the new snapshots.
pub fn snapshots_to_profile(
    table: &Table,
    config: &DistributionConfig,
    already_profiled: &dyn Fn(i64) -> bool,
) -> Vec<i64> {
    let batches: Vec<i64> =
        profileable(&commits(table.metadata()), config.scope).map(|commit| commit.snapshot_id).collect();
    let start = batches.len().saturating_sub(config.settings.window);
    batches[start..].iter().copied().filter(|&id| !already_profiled(id)).collect()
}

/// The snapshots whose batches are the drift reference of `newest`: the pinned
/// `drift.reference_snapshot`, or the `drift.reference_batches` batches before `newest`.
pub fn reference_snapshots(table: &Table, config: &DistributionConfig, newest: i64) -> Vec<i64> {
    if let Some(pinned) = config.drift.reference_snapshot {
        return vec![pinned];
    }
    if config.drift.reference_batches == 0 {
        return Vec::new();
    }
    let batches: Vec<i64> = profileable(&commits(table.metadata()), config.scope)
        .map(|commit| commit.snapshot_id)
        .take_while(|&id| id != newest)
        .collect();
    let start = batches.len().saturating_sub(config.drift.reference_batches);
    batches[start..].to_vec()
}

/// The commits that have a batch, in their order.
fn profileable(commits: &[Commit], scope: Scope) -> impl Iterator<Item = &Commit> {
    commits.iter().filter(move |commit| is_batch(commit, scope))
}

/// Whether `commit` has a batch: with `scope = "added"` an append that changed data (the files
/// an overwrite adds are mostly rewritten rows, a delete or compaction adds no new rows); with
/// `scope = "table"` any data change.
pub(super) fn is_batch(commit: &Commit, scope: Scope) -> bool {
    match scope {
        Scope::Added => commit.operation == CommitOperation::Append && commit.is_data_change(),
        Scope::Table => commit.is_data_change(),
    }
}
