//! Deleting old history points, so the store stays bounded: per series, the points older than
//! the retention of its sensor kind, except its newest `keep_points`. Runs at start-up and
//! hourly, in short bounded statements, so the writers never wait long.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{HistoryError, HistoryStore};
use crate::config::PointRetention;

/// Points one statement deletes at most (about: points sharing a time go together).
const BATCH: usize = 5_000;
/// Points one sweep deletes at most; the rest waits for the next sweep.
const MAX_PER_SWEEP: u64 = 1_000_000;
/// How often the service sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Deletes what `retention` no longer keeps, as of `now_ms`; returns how many points went.
pub async fn sweep(store: &HistoryStore, retention: &PointRetention, now_ms: i64) -> Result<u64, HistoryError> {
    let mut deleted = 0;
    for (series_id, sensor) in store.series_sensors().await? {
        let max_age_ms = i64::try_from(retention.max_age(&sensor).as_millis()).unwrap_or(i64::MAX);
        let too_old = now_ms.saturating_sub(max_age_ms);
        // Nothing goes while the series holds no more than its newest `keep_points`.
        let Some(oldest_kept) = store.newest_points_since(series_id, retention.keep_points).await? else {
            continue;
        };
        let before_ms = too_old.min(oldest_kept);
        loop {
            let room = MAX_PER_SWEEP.saturating_sub(deleted);
            if room == 0 {
                return Ok(deleted);
            }
            let limit = BATCH.min(usize::try_from(room).unwrap_or(BATCH));
            let step = store.delete_points_before(series_id, before_ms, limit).await?;
            deleted += step;
            if step < limit as u64 {
                break;
            }
        }
    }
    Ok(deleted)
}

/// [`sweep`] now and then every [`SWEEP_EVERY`] until `stop`; `deleted` is told each sweep's
/// count.
pub async fn keep(store: HistoryStore, retention: PointRetention, deleted: impl Fn(u64), stop: CancellationToken) {
    loop {
        let now_ms = chrono::Utc::now().timestamp_millis();
        tokio::select! {
            outcome = sweep(&store, &retention, now_ms) => match outcome {
                Ok(0) => {}
                Ok(count) => {
                    deleted(count);
                    tracing::info!(deleted = count, "deleted history points past their retention");
                }
                Err(error) => tracing::warn!(error = %crate::errors::error_chain(&error), "failed to delete old history points"),
            },
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::history::{Point, SeriesKey};

    const DAY_MS: i64 = 86_400_000;

    fn points(series: &SeriesKey, days: std::ops::Range<i64>) -> Vec<Point> {
        days.map(|day| Point {
            series: series.clone(),
            observed_at_ms: day * DAY_MS,
            snapshot_id: Some(day),
            value: 1.0,
        })
        .collect()
    }

    fn retention(max_age_days: u64, keep_points: usize) -> PointRetention {
        PointRetention {
            max_age: Duration::from_secs(max_age_days * 86_400),
            by_sensor: BTreeMap::from([("distribution".to_string(), Duration::from_secs(10 * 86_400))]),
            keep_points,
        }
    }

    #[tokio::test]
    async fn old_points_go_and_the_newest_of_every_series_stay() {
        let store = HistoryStore::open_in_memory().await.unwrap();
        let busy = SeriesKey::new("a.b", "volume", "rows_added", &[]);
        let rare = SeriesKey::new("a.c", "volume", "rows_added", &[]);
        let profiled = SeriesKey::new("a.b", "distribution", "value", &[("column", "x"), ("statistic", "mean")]);
        // Daily points for 200 days; a rare table with 5 points, all old; a distribution series.
        store.append(&points(&busy, 0..200)).await.unwrap();
        store.append(&points(&rare, 0..5)).await.unwrap();
        store.append(&points(&profiled, 0..200)).await.unwrap();
        let now_ms = 200 * DAY_MS;

        let deleted = sweep(&store, &retention(90, 20), now_ms).await.unwrap();
        // busy keeps days 110..200 (90 days); distribution keeps its newest 20 (10 days would be
        // fewer than keep_points); the rare table's 5 old points all stay.
        assert_eq!(deleted, 110 + 180);
        assert_eq!(store.range(&busy, 0, now_ms).await.unwrap().first().unwrap().observed_at_ms, 110 * DAY_MS);
        assert_eq!(store.range(&busy, 0, now_ms).await.unwrap().len(), 90);
        assert_eq!(store.range(&profiled, 0, now_ms).await.unwrap().len(), 20);
        assert_eq!(store.range(&rare, 0, now_ms).await.unwrap().len(), 5);
        assert_eq!(store.stored_points(), 90 + 20 + 5);
        // A second sweep finds nothing more.
        assert_eq!(sweep(&store, &retention(90, 20), now_ms).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_sweep_is_bounded_and_the_next_one_goes_on() {
        let store = HistoryStore::open_in_memory().await.unwrap();
        let series = SeriesKey::new("a.b", "volume", "rows_added", &[]);
        let many: Vec<Point> = (0..12_000)
            .map(|index| Point { series: series.clone(), observed_at_ms: index, snapshot_id: Some(index), value: 1.0 })
            .collect();
        store.append(&many).await.unwrap();
        // Everything is old; 100 are kept. Batches of 5,000 delete 11,900 in three statements.
        let deleted = sweep(&store, &retention(1, 100), 100 * DAY_MS).await.unwrap();
        assert_eq!(deleted, 11_900);
        let left = store.range(&series, 0, i64::MAX).await.unwrap();
        assert_eq!((left.len(), left[0].observed_at_ms), (100, 11_900));
    }
}
