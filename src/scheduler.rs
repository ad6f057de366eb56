//! Turns each job's cron schedule into runs: bounded concurrency, a timeout per run, no overlapping
//! runs of one job, per-job jitter, catch-up without stampedes, and a graceful shutdown. It knows
//! nothing about sensors or metrics: a job is named by the caller's key type `K`, what a run does
//! is the caller's closure (it gets the key back), and what happened is reported through
//! [`SchedulerEvents`]. It imports nothing from the rest of the crate.
//!
//! Time comes from a [`Clock`], so tests drive the scheduler with tokio's paused clock.
//!
//! How one job is driven (one ticker task per job):
//!
//! ```text
//!  next cron tick ──► wait until tick + jitter (in steps of at most 10 s, re-reading the clock)
//!        ▲                  │
//!        │                  ▼
//!        │        previous run still going? ── yes ──► run_skipped
//!        │                  │ no
//!        │                  ▼
//!        │        spawn run: wait for a concurrency permit ─► run_started(lag)
//!        │                  ─► run_job(key) under the job's timeout ─► run_finished(outcome)
//!        │                  │
//!        └── first tick after (now - jitter): every tick missed while paused is served by this run
//! ```

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest a ticker sleeps before reading the clock again. The timer runs on the monotonic
/// clock, which stands still while the machine sleeps and ignores wall-clock steps; waking up at
/// least this often bounds how late a tick can start after either.
const MAX_SLEEP_STEP: Duration = Duration::from_secs(10);

/// One scheduled unit of work (one sensor of one table, for the service).
#[derive(Clone, Debug)]
pub struct Job<K> {
    /// Unique among the jobs and stable across restarts. Its `Display` text
    /// (`bronze.raw_trades/volume`) names the job in logs and seeds its jitter.
    pub key: K,
    /// Cron expression with seconds (6 or 7 fields), evaluated in UTC.
    pub schedule: cron::Schedule,
    /// A run still going after this long is dropped and reported as [`RunOutcome::TimedOut`].
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Runs allowed at the same time across all jobs (at least 1).
    pub concurrency: usize,
    /// Each job starts `jitter(key)` after its cron time, with `0 <= jitter <= max_jitter`.
    /// Keep it well below the shortest schedule period.
    pub max_jitter: Duration,
    /// After shutdown is requested, how long running runs may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions { concurrency: 4, max_jitter: Duration::from_secs(2), shutdown_grace: Duration::from_secs(30) }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The run future returned (whatever it did inside, including handling its own errors).
    Completed,
    /// The run exceeded the job's timeout and was dropped.
    TimedOut,
    /// The run panicked; the scheduler keeps going.
    Panicked,
}

/// What the scheduler tells the rest of the service (metrics, logs). Called from scheduler tasks:
/// implementations must be quick and must not block.
pub trait SchedulerEvents<K>: Send + Sync + 'static {
    /// A run got its concurrency permit and starts now. `lag` is how late that is against the
    /// job's planned start (cron time + the job's jitter): timer slack, a saturated concurrency
    /// pool, or a pause of the whole process all show up here.
    fn run_started(&self, key: &K, lag: Duration);
    fn run_finished(&self, key: &K, outcome: RunOutcome, elapsed: Duration);
    /// A tick came while the job's previous run was still going (or still waiting for a permit).
    fn run_skipped(&self, key: &K);
}

/// What [`run_scheduler`] returns once it has shut down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport<K> {
    /// Jobs whose run was going when shutdown was requested and finished within the grace period.
    pub drained: Vec<K>,
    /// Jobs whose run was still going when the grace period ended (those runs were aborted).
    pub still_running: Vec<K>,
}

// By hand: the derive would ask for `K: Default`.
impl<K> Default for ShutdownReport<K> {
    fn default() -> Self {
        ShutdownReport { drained: Vec::new(), still_running: Vec::new() }
    }
}

/// What the scheduler needs of a job key: cloned into each run, printed in logs and hashed (as
/// text) into the jitter, handed across tasks.
pub trait JobKey: Clone + fmt::Display + Send + Sync + 'static {}

impl<K: Clone + fmt::Display + Send + Sync + 'static> JobKey for K {}

/// Wall-clock time for cron, moving with tokio's timer so tests can pause and advance it.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// `None`: the operating system's wall clock. `Some`: a wall time and the tokio instant it was
    /// read at; now is that wall time plus the tokio time elapsed since.
    anchor: Option<(DateTime<Utc>, Instant)>,
}

impl Clock {
    /// The operating system's wall clock (it can jump; the scheduler copes).
    pub fn system() -> Clock {
        Clock { anchor: None }
    }

    /// A clock that reads `start` now and advances with tokio's (possibly paused) timer.
    #[cfg(test)]
    pub fn anchored(start: DateTime<Utc>) -> Clock {
        Clock { anchor: Some((start, Instant::now())) }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self.anchor {
            None => Utc::now(),
            Some((wall, instant)) => later(wall, delta(instant.elapsed())),
        }
    }
}

/// The job's start offset after each cron time: deterministic for a key (FNV-1a, stable across
/// builds and restarts), in whole milliseconds, spread over `0..=max_jitter` so jobs sharing a schedule do not all
/// hit the catalog in the same instant.
pub fn jitter_for(key: &str, max_jitter: Duration) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // Whole milliseconds: the resolution of tokio's timer.
    let span = max_jitter.as_millis().saturating_add(1);
    let offset = u128::from(hash) % span;
    // offset <= max_jitter.as_millis(), which came from a Duration: it fits back.
    Duration::from_millis(u64::try_from(offset).unwrap_or(u64::MAX)).min(max_jitter)
}

/// Runs `jobs` on their schedules until `shutdown` is cancelled, then stops starting runs, waits
/// up to `options.shutdown_grace` for the runs still going, aborts the rest and reports them.
///
/// `run_job` gets the job's key; its future is dropped when the job's timeout passes, so it must
/// be cancel-safe (no half-written state that matters).
pub async fn run_scheduler<K, F, Fut>(
    jobs: Vec<Job<K>>,
    options: SchedulerOptions,
    clock: Clock,
    events: Arc<dyn SchedulerEvents<K>>,
    run_job: F,
    shutdown: CancellationToken,
) -> ShutdownReport<K>
where
    K: JobKey,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let shared = Arc::new(Shared {
        clock,
        events,
        run_job,
        semaphore: Arc::new(Semaphore::new(options.concurrency.max(1))),
        shutdown: shutdown.clone(),
    });
    let mut tickers = JoinSet::new();
    for job in jobs {
        let jitter = jitter_for(&job.key.to_string(), options.max_jitter);
        tickers.spawn(tick_job(job, jitter, Arc::clone(&shared)));
    }

    shutdown.cancelled().await;

    let mut in_flight = Vec::new();
    while let Some(joined) = tickers.join_next().await {
        match joined {
            Ok(Some(run)) => in_flight.push(run),
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "scheduler ticker task failed"),
        }
    }

    let deadline = Instant::now() + options.shutdown_grace;
    let mut report = ShutdownReport::default();
    for mut run in in_flight {
        let Some(handle) = run.handle.as_mut() else {
            continue;
        };
        if !run.started.load(Ordering::SeqCst) {
            // Still waiting for a permit: it sees the cancellation and never starts.
            continue;
        }
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(_) => report.drained.push(run.key.clone()),
            Err(_) => {
                tracing::warn!(job = %run.key, grace = ?options.shutdown_grace,
                    "run still going when the shutdown grace period ended; aborting it");
                report.still_running.push(run.key.clone());
                // Dropping `run` aborts the task.
            }
        }
    }
    report
}

struct Shared<K, F> {
    clock: Clock,
    events: Arc<dyn SchedulerEvents<K>>,
    run_job: F,
    semaphore: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// A job's current run; aborted when dropped, so nothing outlives the scheduler.
struct RunHandle<K> {
    key: K,
    /// Set once the run has its permit (a run still waiting for one is not "running").
    started: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl<K> RunHandle<K> {
    fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl<K> Drop for RunHandle<K> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// Drives one job until shutdown; returns its run if one is still going (or may be).
async fn tick_job<K, F, Fut>(job: Job<K>, jitter: Duration, shared: Arc<Shared<K, F>>) -> Option<RunHandle<K>>
where
    K: JobKey,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let jitter_delta = delta(jitter);
    let mut current: Option<RunHandle<K>> = None;
    let mut next = next_tick(&job.schedule, shared.clock.now());
    while let Some(tick) = next {
        let Some(tick) = wait_for_tick(&job.schedule, tick, jitter_delta, &shared).await else {
            break;
        };
        if current.as_ref().is_some_and(|run| !run.is_finished()) {
            tracing::debug!(job = %job.key, %tick, "previous run still going; skipping tick");
            shared.events.run_skipped(&job.key);
        } else {
            let started = Arc::new(AtomicBool::new(false));
            current = Some(RunHandle {
                key: job.key.clone(),
                started: Arc::clone(&started),
                handle: Some(tokio::spawn(run_once(
                    job.key.clone(),
                    job.timeout,
                    later(tick, jitter_delta),
                    Arc::clone(&started),
                    Arc::clone(&shared),
                ))),
            });
        }
        // Every tick up to now (less the jitter, which belongs to this tick) is served by the run
        // just started or skipped: after a pause the job runs once, not once per missed tick.
        next = next_tick(&job.schedule, earlier(shared.clock.now(), jitter_delta));
    }
    if next.is_none() && !shared.shutdown.is_cancelled() {
        tracing::info!(job = %job.key, "schedule has no further ticks");
    }
    current.filter(|run| !run.is_finished())
}

/// Sleeps until `tick + jitter`, re-reading the clock at least every [`MAX_SLEEP_STEP`]. Returns
/// the tick to serve (moved earlier if the wall clock stepped back across a tick), or `None` on
/// shutdown.
async fn wait_for_tick<K, F>(
    schedule: &cron::Schedule,
    mut tick: DateTime<Utc>,
    jitter: TimeDelta,
    shared: &Shared<K, F>,
) -> Option<DateTime<Utc>> {
    loop {
        if shared.shutdown.is_cancelled() {
            return None;
        }
        let now = shared.clock.now();
        if now >= later(tick, jitter) {
            return Some(tick);
        }
        if let Some(earliest) = next_tick(schedule, now)
            && earliest < tick
        {
            // The wall clock went back: serve the ticks of the re-lived period rather than waiting
            // for the planned one.
            tick = earliest;
            continue;
        }
        let step = (later(tick, jitter) - now).to_std().unwrap_or(Duration::ZERO).min(MAX_SLEEP_STEP);
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return None,
            () = tokio::time::sleep(step) => {}
        }
    }
}

/// One run: wait for a permit (unless shutting down), then the job under its timeout.
async fn run_once<K, F, Fut>(
    key: K,
    timeout: Duration,
    planned: DateTime<Utc>,
    started_flag: Arc<AtomicBool>,
    shared: Arc<Shared<K, F>>,
) where
    K: JobKey,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permit = tokio::select! {
        biased;
        () = shared.shutdown.cancelled() => return,
        permit = Arc::clone(&shared.semaphore).acquire_owned() => match permit {
            Ok(permit) => permit,
            // The semaphore is never closed.
            Err(_) => return,
        },
    };
    started_flag.store(true, Ordering::SeqCst);
    let lag = (shared.clock.now() - planned).to_std().unwrap_or(Duration::ZERO);
    shared.events.run_started(&key, lag);
    let started = Instant::now();
    // The call is inside the block so a panic while building the future is caught too.
    let run = AssertUnwindSafe(async { (shared.run_job)(key.clone()).await }).catch_unwind();
    let outcome = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(())) => RunOutcome::Completed,
        Ok(Err(_)) => RunOutcome::Panicked,
        Err(_) => RunOutcome::TimedOut,
    };
    drop(permit);
    let elapsed = started.elapsed();
    match outcome {
        RunOutcome::Completed => tracing::debug!(job = %key, ?elapsed, "run completed"),
        RunOutcome::TimedOut => tracing::warn!(job = %key, ?timeout, "run timed out"),
        RunOutcome::Panicked => tracing::error!(job = %key, "run panicked"),
    }
    shared.events.run_finished(&key, outcome, elapsed);
}

/// The first tick strictly after `after`.
fn next_tick(schedule: &cron::Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&after).next()
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// `time + delta`, saturating instead of panicking on overflow.
fn later(time: DateTime<Utc>, delta: TimeDelta) -> DateTime<Utc> {
    time.checked_add_signed(delta).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `time - delta`, saturating instead of panicking on overflow.
fn earlier(time: DateTime<Utc>, delta: TimeDelta) -> DateTime<Utc> {
    time.checked_sub_signed(delta).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use chrono::TimeZone;

    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    enum Event {
        /// `at` is the time since the test started (the clock's origin), `lag` as reported.
        Started {
            key: String,
            at: Duration,
            lag: Duration,
        },
        Finished {
            key: String,
            at: Duration,
            outcome: RunOutcome,
            elapsed: Duration,
        },
        Skipped {
            key: String,
            at: Duration,
        },
    }

    struct Recorder {
        origin: Instant,
        events: Mutex<Vec<Event>>,
    }

    impl Recorder {
        fn events(&self) -> Vec<Event> {
            self.events.lock().unwrap().clone()
        }

        fn started(&self, key: &str) -> Vec<(u64, Duration)> {
            self.events()
                .into_iter()
                .filter_map(|event| match event {
                    Event::Started { key: k, at, lag } if k == key => Some((at.as_secs(), lag)),
                    _ => None,
                })
                .collect()
        }

        fn skipped_at(&self, key: &str) -> Vec<u64> {
            self.events()
                .into_iter()
                .filter_map(|event| match event {
                    Event::Skipped { key: k, at } if k == key => Some(at.as_secs()),
                    _ => None,
                })
                .collect()
        }

        fn finished(&self, key: &str) -> Vec<(Duration, RunOutcome, Duration)> {
            self.events()
                .into_iter()
                .filter_map(|event| match event {
                    Event::Finished { key: k, at, outcome, elapsed } if k == key => Some((at, outcome, elapsed)),
                    _ => None,
                })
                .collect()
        }
    }

    impl SchedulerEvents<String> for Recorder {
        fn run_started(&self, key: &String, lag: Duration) {
            let at = self.origin.elapsed();
            self.events.lock().unwrap().push(Event::Started { key: key.into(), at, lag });
        }
        fn run_finished(&self, key: &String, outcome: RunOutcome, elapsed: Duration) {
            let at = self.origin.elapsed();
            self.events.lock().unwrap().push(Event::Finished { key: key.into(), at, outcome, elapsed });
        }
        fn run_skipped(&self, key: &String) {
            let at = self.origin.elapsed();
            self.events.lock().unwrap().push(Event::Skipped { key: key.into(), at });
        }
    }

    struct Harness {
        recorder: Arc<Recorder>,
        shutdown: CancellationToken,
        scheduler: JoinHandle<ShutdownReport<String>>,
    }

    impl Harness {
        /// Requests shutdown and returns the report and how long the scheduler took to return.
        async fn stop(self) -> (ShutdownReport<String>, Duration) {
            let asked = Instant::now();
            self.shutdown.cancel();
            let report = self.scheduler.await.unwrap();
            (report, asked.elapsed())
        }
    }

    /// The clock starts at 2024-01-01T00:00:00Z, so `*/10` ticks at 10 s, 20 s, ... after start.
    fn start<F, Fut>(jobs: Vec<Job<String>>, options: SchedulerOptions, run_job: F) -> Harness
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let origin = Instant::now();
        let clock = Clock::anchored(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap());
        let recorder = Arc::new(Recorder { origin, events: Mutex::new(Vec::new()) });
        let shutdown = CancellationToken::new();
        let scheduler = tokio::spawn(run_scheduler(jobs, options, clock, recorder.clone(), run_job, shutdown.clone()));
        Harness { recorder, shutdown, scheduler }
    }

    fn job(key: &str, cron: &str, timeout: Duration) -> Job<String> {
        Job { key: key.into(), schedule: cron::Schedule::from_str(cron).unwrap(), timeout }
    }

    fn options(concurrency: usize) -> SchedulerOptions {
        SchedulerOptions { concurrency, max_jitter: Duration::ZERO, shutdown_grace: Duration::from_secs(10) }
    }

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    /// A run that sleeps `work` (on the paused clock) and counts how many runs overlap.
    fn sleeping_run(
        work: Duration,
        running: Arc<AtomicUsize>,
        max_running: Arc<AtomicUsize>,
    ) -> impl Fn(String) -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static {
        move |_key| {
            let running = running.clone();
            let max_running = max_running.clone();
            Box::pin(async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                max_running.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(work).await;
                running.fetch_sub(1, Ordering::SeqCst);
            })
        }
    }

    fn instant_run() -> impl Fn(String) -> futures::future::Ready<()> + Send + Sync + 'static {
        |_key| futures::future::ready(())
    }

    #[tokio::test(start_paused = true)]
    async fn runs_happen_at_cron_times() {
        let harness = start(
            vec![job("t/volume", "*/10 * * * * *", secs(5)), job("t/schema", "0 * * * * *", secs(5))],
            options(4),
            instant_run(),
        );
        tokio::time::sleep(secs(65)).await;
        let recorder = harness.recorder.clone();
        let (report, _) = harness.stop().await;

        let expected: Vec<(u64, Duration)> =
            [10, 20, 30, 40, 50, 60].into_iter().map(|at| (at, Duration::ZERO)).collect();
        assert_eq!(recorder.started("t/volume"), expected);
        assert_eq!(recorder.started("t/schema"), vec![(60, Duration::ZERO)]);
        let finished = recorder.finished("t/volume");
        assert_eq!(finished.len(), 6);
        assert!(
            finished
                .iter()
                .all(|(_, outcome, elapsed)| *outcome == RunOutcome::Completed && *elapsed == Duration::ZERO)
        );
        assert_eq!(report, ShutdownReport::default());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_bound_holds_and_waiting_shows_as_lag() {
        let running = Arc::new(AtomicUsize::new(0));
        let max_running = Arc::new(AtomicUsize::new(0));
        let jobs = (0..10).map(|i| job(&format!("t{i}/volume"), "30 * * * * *", secs(60))).collect();
        let harness = start(jobs, options(3), sleeping_run(secs(4), running.clone(), max_running.clone()));
        tokio::time::sleep(secs(50)).await;
        let recorder = harness.recorder.clone();
        harness.stop().await;

        assert_eq!(max_running.load(Ordering::SeqCst), 3);
        let mut lags: Vec<u64> = recorder
            .events()
            .into_iter()
            .filter_map(|event| match event {
                Event::Started { lag, .. } => Some(lag.as_secs()),
                _ => None,
            })
            .collect();
        lags.sort_unstable();
        // Ten runs of 4 s through three slots, all due at 30 s.
        assert_eq!(lags, vec![0, 0, 0, 4, 4, 4, 8, 8, 8, 12]);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_run_skips_ticks_and_counts_them() {
        let running = Arc::new(AtomicUsize::new(0));
        let max_running = Arc::new(AtomicUsize::new(0));
        let harness = start(
            vec![job("t/distribution", "*/10 * * * * *", secs(60))],
            options(4),
            sleeping_run(secs(25), running, max_running.clone()),
        );
        tokio::time::sleep(secs(75)).await;
        let recorder = harness.recorder.clone();
        let (report, _) = harness.stop().await;

        let started: Vec<u64> = recorder.started("t/distribution").into_iter().map(|s| s.0).collect();
        assert_eq!(started, vec![10, 40, 70]);
        assert_eq!(recorder.skipped_at("t/distribution"), vec![20, 30, 50, 60]);
        assert_eq!(max_running.load(Ordering::SeqCst), 1, "runs of one job never overlap");
        // The run started at 70 s would end at 95 s: after the 10 s grace of a shutdown at 75 s.
        assert_eq!(report, ShutdownReport { drained: vec![], still_running: vec!["t/distribution".to_string()] });
    }

    #[tokio::test(start_paused = true)]
    async fn timed_out_run_is_dropped_and_the_job_runs_again_next_tick() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let run = {
            let dropped = dropped.clone();
            move |_key: String| {
                let guard = CountOnDrop(dropped.clone());
                async move {
                    let _guard = guard;
                    tokio::time::sleep(secs(60)).await;
                }
            }
        };
        let harness = start(vec![job("t/freshness", "*/10 * * * * *", secs(3))], options(4), run);
        tokio::time::sleep(secs(35)).await;
        let recorder = harness.recorder.clone();
        harness.stop().await;

        let started: Vec<u64> = recorder.started("t/freshness").into_iter().map(|s| s.0).collect();
        assert_eq!(started, vec![10, 20, 30]);
        assert_eq!(
            recorder.finished("t/freshness"),
            [13, 23, 33].into_iter().map(|at| (secs(at), RunOutcome::TimedOut, secs(3))).collect::<Vec<_>>()
        );
        assert!(recorder.skipped_at("t/freshness").is_empty());
        assert_eq!(dropped.load(Ordering::SeqCst), 3, "each timed-out run future was dropped");
    }

    struct CountOnDrop(Arc<AtomicUsize>);

    impl Drop for CountOnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn panicking_run_is_reported_and_the_job_keeps_its_schedule() {
        let harness = start(vec![job("t/volume", "*/10 * * * * *", secs(5))], options(4), |_key: String| async {
            panic!("sensor bug")
        });
        tokio::time::sleep(secs(25)).await;
        let recorder = harness.recorder.clone();
        harness.stop().await;
        assert_eq!(
            recorder.finished("t/volume"),
            vec![(secs(10), RunOutcome::Panicked, Duration::ZERO), (secs(20), RunOutcome::Panicked, Duration::ZERO)]
        );
    }

    #[test]
    fn jitter_is_deterministic_bounded_and_spread() {
        let max = secs(2);
        assert_eq!(jitter_for("bronze.raw_trades/volume", max), jitter_for("bronze.raw_trades/volume", max));
        assert_ne!(jitter_for("bronze.raw_trades/volume", max), jitter_for("bronze.raw_trades/schema", max));
        let jitters: Vec<Duration> = (0..1000).map(|i| jitter_for(&format!("db.table_{i}/volume"), max)).collect();
        assert!(jitters.iter().all(|jitter| *jitter <= max));
        let mut distinct = jitters.clone();
        distinct.sort();
        distinct.dedup();
        // 1000 keys over 2001 millisecond slots: about 787 distinct if uniform.
        assert!(distinct.len() > 700, "only {} distinct jitters of 1000", distinct.len());
        // Spread evenly: each half-second quarter of the range gets about 250 keys.
        for quarter in 0..4u32 {
            let low = secs(1) / 2 * quarter;
            let in_quarter = jitters.iter().filter(|j| **j >= low && **j < low + secs(1) / 2).count();
            assert!((180..=320).contains(&in_quarter), "{in_quarter} keys in quarter {quarter}");
        }
        assert_eq!(jitter_for("anything", Duration::ZERO), Duration::ZERO);
        assert!(jitter_for("anything", Duration::MAX) <= Duration::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn each_job_starts_its_own_jitter_after_the_cron_time() {
        let mut options = options(4);
        options.max_jitter = secs(2);
        let keys = ["a.orders/volume", "a.orders/schema"];
        let jitters = keys.map(|key| jitter_for(key, options.max_jitter));
        assert_ne!(jitters[0], jitters[1]);
        let runs = Arc::new(Mutex::new(Vec::new()));
        let run = {
            let runs = runs.clone();
            let origin = Instant::now();
            move |key: String| {
                runs.lock().unwrap().push((key, origin.elapsed()));
                futures::future::ready(())
            }
        };
        let harness = start(keys.iter().map(|key| job(key, "*/10 * * * * *", secs(5))).collect(), options, run);
        tokio::time::sleep(secs(25)).await;
        let recorder = harness.recorder.clone();
        harness.stop().await;

        let runs = runs.lock().unwrap().clone();
        for (key, jitter) in keys.iter().zip(jitters) {
            let at: Vec<Duration> = runs.iter().filter(|(k, _)| k == key).map(|(_, at)| *at).collect();
            assert_eq!(at, vec![secs(10) + jitter, secs(20) + jitter], "{key}");
            assert!(recorder.started(key).iter().all(|(_, lag)| lag.is_zero()), "jitter is not lag");
        }
    }

    /// A key of the caller's own type, printed as `table/kind`.
    #[derive(Clone, Debug, PartialEq)]
    struct TypedKey {
        table: &'static str,
        kind: u8,
    }

    impl fmt::Display for TypedKey {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(formatter, "{}/{}", self.table, self.kind)
        }
    }

    struct TypedRecorder(Mutex<Vec<TypedKey>>);

    impl SchedulerEvents<TypedKey> for TypedRecorder {
        fn run_started(&self, key: &TypedKey, _lag: Duration) {
            self.0.lock().unwrap().push(key.clone());
        }
        fn run_finished(&self, _key: &TypedKey, _outcome: RunOutcome, _elapsed: Duration) {}
        fn run_skipped(&self, _key: &TypedKey) {}
    }

    #[tokio::test(start_paused = true)]
    async fn a_typed_key_comes_back_as_it_went_in_and_its_text_seeds_the_jitter() {
        let key = TypedKey { table: "a.orders", kind: 7 };
        let max_jitter = secs(2);
        let jitter = jitter_for("a.orders/7", max_jitter);
        let runs = Arc::new(Mutex::new(Vec::new()));
        let run = {
            let runs = runs.clone();
            let origin = Instant::now();
            move |key: TypedKey| {
                runs.lock().unwrap().push((key, origin.elapsed()));
                futures::future::ready(())
            }
        };
        let events = Arc::new(TypedRecorder(Mutex::new(Vec::new())));
        let shutdown = CancellationToken::new();
        let clock = Clock::anchored(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap());
        let jobs = vec![Job {
            key: key.clone(),
            schedule: cron::Schedule::from_str("*/10 * * * * *").unwrap(),
            timeout: secs(5),
        }];
        let options = SchedulerOptions { max_jitter, ..options(4) };
        let scheduler = tokio::spawn(run_scheduler(jobs, options, clock, events.clone(), run, shutdown.clone()));
        tokio::time::sleep(secs(15)).await;
        shutdown.cancel();
        assert_eq!(scheduler.await.unwrap(), ShutdownReport::default());

        assert_eq!(runs.lock().unwrap().clone(), vec![(key.clone(), secs(10) + jitter)]);
        assert_eq!(events.0.lock().unwrap().clone(), vec![key]);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_long_pause_the_job_runs_once_then_keeps_its_schedule() {
        let harness = start(vec![job("t/volume", "*/10 * * * * *", secs(5))], options(4), instant_run());
        tokio::time::sleep(secs(15)).await;
        // The whole process stands still for an hour (SIGSTOP, suspend): 360 ticks go by unseen.
        tokio::time::advance(secs(3600)).await;
        tokio::time::sleep(secs(1)).await;
        let recorder = harness.recorder.clone();
        assert_eq!(
            recorder.started("t/volume"),
            vec![(10, Duration::ZERO), (3615, secs(3595))],
            "one catch-up run, reporting how late the oldest missed tick was"
        );
        tokio::time::sleep(secs(10)).await;
        harness.stop().await;
        assert_eq!(
            recorder.started("t/volume"),
            vec![(10, Duration::ZERO), (3615, secs(3595)), (3620, Duration::ZERO)]
        );
        assert!(recorder.skipped_at("t/volume").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_new_runs_drains_within_grace_and_reports_the_rest() {
        let aborted = Arc::new(AtomicUsize::new(0));
        let run = {
            let aborted = aborted.clone();
            move |key: String| {
                let guard = CountOnDrop(aborted.clone());
                async move {
                    let work = match key.as_str() {
                        "t/quick" => Duration::ZERO,
                        "t/five" => secs(5),
                        _ => secs(100),
                    };
                    tokio::time::sleep(work).await;
                    std::mem::forget(guard); // finished: not an abort
                }
            }
        };
        let harness = start(
            vec![
                job("t/quick", "*/10 * * * * *", secs(300)),
                job("t/five", "*/10 * * * * *", secs(300)),
                job("t/hundred", "*/10 * * * * *", secs(300)),
            ],
            options(4),
            run,
        );
        tokio::time::sleep(secs(12)).await;
        let recorder = harness.recorder.clone();
        let (report, took) = harness.stop().await;

        assert_eq!(
            report,
            ShutdownReport { drained: vec!["t/five".to_string()], still_running: vec!["t/hundred".to_string()] }
        );
        assert_eq!(took, secs(10), "waited the whole grace period for `t/hundred`, no longer");
        assert_eq!(recorder.finished("t/five"), vec![(secs(15), RunOutcome::Completed, secs(5))]);
        assert!(recorder.finished("t/hundred").is_empty());
        // No run starts after shutdown was requested (at 12 s; the next ticks were at 20 s).
        let started = recorder.events().iter().filter(|e| matches!(e, Event::Started { .. })).count();
        assert_eq!(started, 3);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(aborted.load(Ordering::SeqCst), 1, "the run left after the grace period was dropped");
    }
}
