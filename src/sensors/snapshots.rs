//! The table's commit history as the freshness and volume sensors need it: the current
//! branch's snapshots in commit order, each with its operation and summary counts, and which
//! of them changed data (a compaction or a metadata-only commit did not), and which snapshots
//! were committed together in one table commit.

use std::collections::HashSet;

use iceberg::spec::{Operation, TableMetadata};

/// One snapshot of the current branch, with the counts of its summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    pub snapshot_id: i64,
    pub sequence_number: i64,
    pub timestamp_ms: i64,
    pub operation: CommitOperation,
    pub schema_id: Option<i32>,
    pub added_records: Option<u64>,
    pub deleted_records: Option<u64>,
    pub total_records: Option<u64>,
    pub added_files: Option<u64>,
    pub deleted_files: Option<u64>,
    pub total_files: Option<u64>,
    pub added_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    /// Rows removed through delete files (merge-on-read), when the summary says.
    pub added_delete_records: Option<u64>,
    /// Ordinal of the table commit (metadata file) that published this snapshot: snapshots
    /// committed together in one transaction share it.
    pub table_commit: usize,
    /// An `append` committed in the same table commit as a `delete`/`overwrite` just before it
    /// (PyIceberg's `overwrite()` writes a `delete` then an `append` in one commit): its rows
    /// replace data, they are not an increment.
    pub replaces_rows: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitOperation {
    Append,
    Overwrite,
    Delete,
    Replace,
}

impl CommitOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            CommitOperation::Append => "append",
            CommitOperation::Overwrite => "overwrite",
            CommitOperation::Delete => "delete",
            CommitOperation::Replace => "replace",
        }
    }
}

impl Commit {
    /// A commit known only by its operation and the records it added (the other counts
    /// unknown): what history points and tests describe.
    pub fn new(snapshot_id: i64, timestamp_ms: i64, operation: CommitOperation, added_records: Option<u64>) -> Commit {
        Commit {
            snapshot_id,
            sequence_number: snapshot_id,
            timestamp_ms,
            operation,
            schema_id: None,
            added_records,
            deleted_records: None,
            total_records: None,
            added_files: None,
            deleted_files: None,
            total_files: None,
            added_bytes: None,
            total_bytes: None,
            added_delete_records: None,
            table_commit: usize::try_from(snapshot_id).unwrap_or_default(),
            replaces_rows: false,
        }
    }

    /// Whether this commit changed the table's data: an append, overwrite or delete that added
    /// or removed records. A `replace` (compaction) never does; nor does a commit that touched
    /// no records. When a writer leaves the record counts out, changed files count instead.
    pub fn is_data_change(&self) -> bool {
        if self.operation == CommitOperation::Replace {
            return false;
        }
        let records = self.added_records.unwrap_or(0)
            + self.deleted_records.unwrap_or(0)
            + self.added_delete_records.unwrap_or(0);
        if self.added_records.is_some() || self.deleted_records.is_some() {
            return records > 0;
        }
        self.added_files.unwrap_or(0) + self.deleted_files.unwrap_or(0) > 0
    }

    /// The rows this commit added, however its writer recorded them: `added-records`, or zero
    /// when that key is missing and no data file was added (PyIceberg writes an empty append so);
    /// `None` when files were added but not counted.
    pub fn added_rows(&self) -> Option<u64> {
        match (self.added_records, self.added_files) {
            (Some(rows), _) => Some(rows),
            (None, None | Some(0)) => Some(0),
            (None, Some(_)) => None,
        }
    }

    /// Whether data arrived with this commit: an append or overwrite that added rows (or files
    /// its writer did not count). A delete (retention, GDPR), a compaction, an empty append and a
    /// metadata-only commit are not arrivals, though some of them are data changes.
    pub fn is_arrival(&self) -> bool {
        matches!(self.operation, CommitOperation::Append | CommitOperation::Overwrite) && self.added_rows() != Some(0)
    }

    /// Whether this commit replaced the whole table: an overwrite (or the append half of one
    /// written as `delete` + `append`) after which the table holds exactly the rows it wrote.
    /// dbt `table` models, Spark `INSERT OVERWRITE` of an unpartitioned table and PyIceberg's
    /// `overwrite()` write these; the rows each one leaves are the table's volume.
    pub fn is_full_refresh(&self) -> bool {
        let overwrites = self.operation == CommitOperation::Overwrite || self.replaces_rows;
        overwrites && self.total_records.is_some() && self.total_records == self.added_rows()
    }

    /// How a commit that does not count as data for freshness reads in a message.
    pub fn describe_without_rows(&self) -> String {
        match self.operation {
            CommitOperation::Append | CommitOperation::Overwrite if self.added_rows() == Some(0) => {
                format!("empty `{}`", self.operation.as_str())
            }
            operation => format!("`{}`", operation.as_str()),
        }
    }

    /// An append whose rows are new data: not an overwrite (whose added rows are mostly
    /// rewritten ones), nor the insert half of an overwrite committed as `delete` + `append`.
    pub fn is_append(&self) -> bool {
        self.operation == CommitOperation::Append && !self.replaces_rows
    }
}

/// The current branch's snapshots, oldest first: the ancestry of the current snapshot (a
/// branch or an audit snapshot that was never published is not the table's history). Where
/// the ancestry is broken by expired snapshots, it stops there.
pub fn commits(metadata: &TableMetadata) -> Vec<Commit> {
    let mut chain = Vec::new();
    let mut next = metadata.current_snapshot_id();
    while let Some(snapshot_id) = next {
        let Some(snapshot) = metadata.snapshot_by_id(snapshot_id) else { break };
        chain.push(commit_of(snapshot));
        next = snapshot.parent_snapshot_id();
        if chain.len() > metadata.snapshots().len() {
            break; // a parent cycle in corrupt metadata
        }
    }
    chain.reverse();
    mark_table_commits(&mut chain, metadata);
    chain
}

/// Longest time between two snapshots that may have been written by one transaction.
const ONE_COMMIT_MAX_GAP_MS: i64 = 60_000;

/// Sets `table_commit` and `replaces_rows`. The metadata log says where commits end: each
/// earlier metadata file is logged with its `last-updated-ms`, which is the commit time of the
/// newest snapshot it published. So a snapshot whose time is not in the log (and that the log
/// covers) was published together with the next one. Where the log does not reach (expired or
/// cleared), every snapshot counts as its own commit.
fn mark_table_commits(chain: &mut [Commit], metadata: &TableMetadata) {
    let logged: HashSet<i64> = metadata.metadata_log().iter().map(|entry| entry.timestamp_ms).collect();
    let oldest_logged = logged.iter().min().copied();
    let mut table_commit = 0;
    for index in 1..chain.len() {
        let (previous, current) = (&chain[index - 1], &chain[index]);
        let published_alone = logged.contains(&previous.timestamp_ms)
            || oldest_logged.is_none_or(|oldest| previous.timestamp_ms < oldest)
            || current.timestamp_ms - previous.timestamp_ms > ONE_COMMIT_MAX_GAP_MS;
        if published_alone {
            table_commit += 1;
        }
        let replaces_rows = !published_alone
            && current.operation == CommitOperation::Append
            && matches!(previous.operation, CommitOperation::Delete | CommitOperation::Overwrite);
        chain[index].table_commit = table_commit;
        chain[index].replaces_rows = replaces_rows;
    }
}

fn commit_of(snapshot: &iceberg::spec::Snapshot) -> Commit {
    let summary = snapshot.summary();
    let count = |key: &str| -> Option<u64> {
        summary.additional_properties.get(key).and_then(|value| value.trim().parse().ok())
    };
    let operation = match summary.operation {
        Operation::Append => CommitOperation::Append,
        Operation::Overwrite => CommitOperation::Overwrite,
        Operation::Delete => CommitOperation::Delete,
        Operation::Replace => CommitOperation::Replace,
    };
    let delete_records = match (count("added-position-deletes"), count("added-equality-deletes")) {
        (None, None) => None,
        (position, equality) => Some(position.unwrap_or(0) + equality.unwrap_or(0)),
    };
    Commit {
        snapshot_id: snapshot.snapshot_id(),
        sequence_number: snapshot.sequence_number(),
        timestamp_ms: snapshot.timestamp_ms(),
        operation,
        schema_id: snapshot.schema_id(),
        added_records: count("added-records"),
        deleted_records: count("deleted-records"),
        total_records: count("total-records"),
        added_files: count("added-data-files"),
        deleted_files: count("deleted-data-files"),
        total_files: count("total-data-files"),
        added_bytes: count("added-files-size"),
        total_bytes: count("total-files-size"),
        added_delete_records: delete_records,
        table_commit: 0,
        replaces_rows: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(operation: CommitOperation, added: Option<u64>, deleted: Option<u64>) -> Commit {
        Commit { deleted_records: deleted, ..Commit::new(1, 0, operation, added) }
    }

    #[test]
    fn only_commits_that_added_rows_are_arrivals_however_the_count_was_recorded() {
        let files = |added_files: Option<u64>, added: Option<u64>| Commit {
            added_files,
            ..Commit::new(1, 0, CommitOperation::Append, added)
        };
        assert!(files(Some(1), Some(10)).is_arrival());
        // PyIceberg's empty append: no `added-records`, no `added-data-files`.
        assert_eq!(files(None, None).added_rows(), Some(0));
        assert!(!files(None, None).is_arrival());
        assert!(!files(Some(0), None).is_arrival());
        assert!(!files(Some(1), Some(0)).is_arrival());
        // Files a writer added without counting their rows are an arrival of unknown size.
        assert_eq!(files(Some(2), None).added_rows(), None);
        assert!(files(Some(2), None).is_arrival());
        assert!(!commit(CommitOperation::Delete, None, Some(3)).is_arrival());
        assert!(!commit(CommitOperation::Replace, Some(100), Some(100)).is_arrival());
        assert!(commit(CommitOperation::Overwrite, Some(5), Some(5)).is_arrival());
        assert_eq!(files(None, None).describe_without_rows(), "empty `append`");
        let refresh = |total: u64| Commit {
            total_records: Some(total),
            deleted_records: Some(900),
            ..Commit::new(1, 0, CommitOperation::Overwrite, Some(1017))
        };
        assert!(refresh(1017).is_full_refresh());
        // A partition overwrite leaves other rows: not the whole table.
        assert!(!refresh(5000).is_full_refresh());
        let append = Commit { total_records: Some(10), ..Commit::new(1, 0, CommitOperation::Append, Some(10)) };
        assert!(!append.is_full_refresh(), "a first append leaves only its rows but replaced nothing");
        assert!(Commit { replaces_rows: true, ..append }.is_full_refresh());
        assert_eq!(commit(CommitOperation::Delete, None, Some(3)).describe_without_rows(), "`delete`");
    }

    #[test]
    fn compactions_and_empty_commits_are_not_data_changes() {
        assert!(commit(CommitOperation::Append, Some(10), None).is_data_change());
        assert!(commit(CommitOperation::Delete, None, Some(3)).is_data_change());
        assert!(commit(CommitOperation::Overwrite, Some(5), Some(5)).is_data_change());
        assert!(!commit(CommitOperation::Replace, Some(100), Some(100)).is_data_change());
        assert!(!commit(CommitOperation::Append, Some(0), None).is_data_change());
        assert!(!commit(CommitOperation::Overwrite, None, None).is_data_change());
    }
}
