//! What a sensor derived from each manifest, kept by the manifest's path. Manifest files are
//! immutable, so a value computed from one never needs computing again: a run reads only the
//! manifests written since the last one. Freshness keeps a column's bounds per manifest, health
//! the manifest's file counts.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

use iceberg::spec::{Manifest, ManifestFile};
use iceberg::table::Table;

/// Most entries kept (each a few dozen bytes); past it the cache starts over, so a service that
/// watches a huge catalog re-reads manifests instead of growing without bound.
const MAX_ENTRIES: usize = 200_000;

/// Per (manifest path, `K`), the value `V` a sensor derived from that manifest. `K` is what else
/// the value depends on (a column's field id, a size bound).
#[derive(Debug)]
pub struct ManifestCache<K, V> {
    entries: Mutex<HashMap<(String, K), V>>,
}

impl<K, V> Default for ManifestCache<K, V> {
    fn default() -> Self {
        ManifestCache { entries: Mutex::new(HashMap::new()) }
    }
}

impl<K: Clone + Eq + Hash, V: Clone> ManifestCache<K, V> {
    /// The value of `manifest_file` under `key`: remembered, or `derive`d from the manifest,
    /// which is loaded only then.
    pub async fn get_or_load(
        &self,
        table: &Table,
        manifest_file: &ManifestFile,
        key: &K,
        derive: impl FnOnce(&Manifest) -> V,
    ) -> Result<V, iceberg::Error> {
        let entry = (manifest_file.manifest_path.clone(), key.clone());
        if let Some(value) = self.lock().get(&entry) {
            return Ok(value.clone());
        }
        let value = derive(&manifest_file.load_manifest(table.file_io()).await?);
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(entry, value.clone());
        Ok(value)
    }

    /// Forgets `table`'s manifests under `key` that are not in `live` (its current snapshot's).
    pub fn keep_only(&self, table: &Table, key: &K, live: &HashSet<&str>) {
        let location = table.metadata().location();
        self.lock().retain(|(path, entry_key), _| {
            entry_key != key || live.contains(path.as_str()) || !path.starts_with(location)
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, K), V>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
