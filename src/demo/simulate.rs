//! The demo's simulated market: a seeded random source, daily seasonality, trades, the
//! bronze → silver → gold transformations and the backdated history plan. Pure: no IO, no clock
//! reads (callers pass times in), deterministic for a seed.

use std::collections::{BTreeMap, HashSet};
use std::f64::consts::PI;

/// Microseconds in one hour.
pub const HOUR_US: i64 = 3_600_000_000;
/// Milliseconds in one minute.
pub const MINUTE_MS: i64 = 60_000;
/// Milliseconds in one hour.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// Milliseconds in one day.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Bronze commits once per this many milliseconds in the backdated history.
pub const BRONZE_INTERVAL_MS: i64 = 30 * MINUTE_MS;
/// Silver commits once per this many bronze commits (hourly).
pub const SILVER_EVERY_BRONZE: usize = 2;
/// Gold commits once per this many bronze commits (every 6 hours).
pub const GOLD_EVERY_BRONZE: usize = 12;
/// Rows of an average bronze commit (before seasonality and noise).
pub const BASE_ROWS_PER_COMMIT: f64 = 120.0;
/// Share of `price` that is null in a normal bronze commit.
pub const NORMAL_NULL_RATE: f64 = 0.02;
/// Share of `price` that is null in the injected null-rate spike.
pub const SPIKE_NULL_RATE: f64 = 0.30;
/// Share of rows kept in the injected volume drop (about 70 % fewer rows).
pub const DROP_ROW_FACTOR: f64 = 0.30;
/// Share of rows kept in a live volume spike.
pub const SPIKE_ROW_FACTOR: f64 = 3.0;
/// Share of bronze rows re-sent with an existing `trade_id` (silver removes them).
pub const DUPLICATE_RATE: f64 = 0.01;
/// How long silver stops committing in the stale stretch.
pub const STALE_SILVER_MS: i64 = 8 * HOUR_MS;

const SYMBOLS: [(&str, f64); 5] = [("AAPL", 190.0), ("MSFT", 410.0), ("NVDA", 880.0), ("AMZN", 180.0), ("GOOG", 165.0)];
const VENUES: [&str; 3] = ["XNAS", "XNYS", "BATS"];

/// SplitMix64: a tiny, well-mixed, seedable generator. Enough for simulated trades, and it keeps
/// the demo deterministic without another dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `[low, high)`; `low` when the range is empty.
    pub fn below(&mut self, low: i64, high: i64) -> i64 {
        if high <= low {
            return low;
        }
        low + (self.next_u64() % (high - low) as u64) as i64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }
}

/// Daily seasonality of trading activity: a sine over the UTC hour of day with its peak at 14:00
/// and its trough at 02:00, between 0.4 and 1.6 times the average.
pub fn seasonality(hour_of_day: f64) -> f64 {
    1.0 + 0.6 * (2.0 * PI * (hour_of_day - 8.0) / 24.0).sin()
}

/// UTC hour of day (fractional) of a Unix time in milliseconds.
pub fn hour_of_day(unix_ms: i64) -> f64 {
    unix_ms.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64
}

/// Rows for a commit at `unix_ms`: `base` × seasonality × (1 ± 10 % noise), at least 1.
pub fn rows_for_commit(rng: &mut Rng, base: f64, unix_ms: i64) -> usize {
    let noise = 1.0 + 0.1 * rng.normal().clamp(-3.0, 3.0);
    (base * seasonality(hour_of_day(unix_ms)) * noise).round().max(1.0) as usize
}

/// One simulated trade, in the shape of a `bronze.raw_trades` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    pub trade_id: i64,
    pub symbol: &'static str,
    pub side: &'static str,
    pub price: Option<f64>,
    pub quantity: i64,
    /// Event time, microseconds since the Unix epoch (UTC).
    pub ts_us: i64,
    pub venue: Option<&'static str>,
}

/// What makes one bronze batch (normal or with an injected problem).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchShape {
    pub rows: usize,
    pub null_rate: f64,
    pub with_venue: bool,
}

/// The market: per-symbol prices on a random walk and the next `trade_id`.
#[derive(Debug, Clone)]
pub struct Market {
    prices: Vec<f64>,
    next_trade_id: i64,
}

impl Market {
    /// A market whose first trade gets `first_trade_id`.
    pub fn new(first_trade_id: i64) -> Market {
        Market { prices: SYMBOLS.iter().map(|(_, price)| *price).collect(), next_trade_id: first_trade_id }
    }

    pub fn next_trade_id(&self) -> i64 {
        self.next_trade_id
    }

    /// Trades with event times in `(start_us, end_us]`, sorted by time; about 1 % of them are
    /// re-sent copies of an earlier trade of the batch (same `trade_id`).
    pub fn trades(&mut self, rng: &mut Rng, start_us: i64, end_us: i64, shape: BatchShape) -> Vec<Trade> {
        let mut times: Vec<i64> = (0..shape.rows).map(|_| rng.below(start_us + 1, end_us + 1)).collect();
        times.sort_unstable();
        let null_prices = pick_positions(rng, shape.rows, (shape.rows as f64 * shape.null_rate).round() as usize);
        let mut trades: Vec<Trade> = Vec::with_capacity(shape.rows);
        for (position, ts_us) in times.into_iter().enumerate() {
            if !trades.is_empty() && rng.chance(DUPLICATE_RATE) {
                let index = rng.below(0, trades.len() as i64) as usize;
                let mut copy = trades[index].clone();
                copy.ts_us = ts_us;
                trades.push(copy);
                continue;
            }
            let symbol_index = rng.below(0, SYMBOLS.len() as i64) as usize;
            let price = &mut self.prices[symbol_index];
            *price = (*price * (1.0 + 0.002 * rng.normal())).max(1.0);
            let trade = Trade {
                trade_id: self.next_trade_id,
                symbol: SYMBOLS[symbol_index].0,
                side: if rng.chance(0.5) { "buy" } else { "sell" },
                price: (!null_prices[position]).then_some((*price * 100.0).round() / 100.0),
                quantity: rng.below(1, 500),
                ts_us,
                venue: shape.with_venue.then(|| VENUES[rng.below(0, VENUES.len() as i64) as usize]),
            };
            self.next_trade_id += 1;
            trades.push(trade);
        }
        trades
    }
}

/// `count` distinct positions out of `0..len`, drawn uniformly (a partial Fisher–Yates shuffle), as
/// a mask. A batch's null share is then exact rather than binomial: a 40-row spike commit drawn
/// row by row at 30 % falls under 20 % about one time in twenty.
fn pick_positions(rng: &mut Rng, len: usize, count: usize) -> Vec<bool> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut mask = vec![false; len];
    for index in 0..count.min(len) {
        let swap_with = rng.below(index as i64, len as i64) as usize;
        order.swap(index, swap_with);
        mask[order[index]] = true;
    }
    mask
}

/// Silver's cleaning: drops rows without a price and trades already seen (by `trade_id`).
pub fn clean(trades: &[Trade], seen: &mut HashSet<i64>) -> Vec<Trade> {
    trades.iter().filter(|trade| trade.price.is_some()).filter(|trade| seen.insert(trade.trade_id)).cloned().collect()
}

/// One `gold.trade_summary_daily` row.
#[derive(Debug, Clone, PartialEq)]
pub struct DailySummary {
    /// Days since the Unix epoch.
    pub trade_date: i32,
    pub symbol: &'static str,
    pub trades: i64,
    pub volume: f64,
    pub vwap: f64,
}

/// Per (UTC day, symbol) aggregates of cleaned trades, sorted by day then symbol.
pub fn summarize(trades: &[Trade]) -> Vec<DailySummary> {
    let mut groups: BTreeMap<(i32, &'static str), (i64, f64, f64)> = BTreeMap::new();
    for trade in trades {
        let Some(price) = trade.price else { continue };
        let day = trade.ts_us.div_euclid(24 * HOUR_US) as i32;
        let entry = groups.entry((day, trade.symbol)).or_insert((0, 0.0, 0.0));
        entry.0 += 1;
        entry.1 += trade.quantity as f64;
        entry.2 += price * trade.quantity as f64;
    }
    groups
        .into_iter()
        .map(|((trade_date, symbol), (count, volume, notional))| DailySummary {
            trade_date,
            symbol,
            trades: count,
            volume,
            vwap: if volume > 0.0 { notional / volume } else { 0.0 },
        })
        .collect()
}

/// The problems baked into the backdated history, as bronze commit indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryProblems {
    /// `venue` is added to bronze just before this bronze commit.
    pub venue_added_at: usize,
    /// `quantity` is widened int → long just before this bronze commit.
    pub quantity_widened_at: usize,
    /// This bronze commit has ~70 % fewer rows.
    pub volume_drop_at: usize,
    /// This bronze commit has ~30 % null `price`.
    pub null_spike_at: usize,
    /// Silver makes no commit for 8 hours from this bronze commit on.
    pub silver_stale_from: usize,
}

/// Where the problems go in a history of `bronze_commits` commits (half-hourly): at fixed
/// fractions of the history, so they land at the same places relative to now for any length.
pub fn place_problems(bronze_commits: usize) -> HistoryProblems {
    let at = |numerator: usize, denominator: usize| bronze_commits * numerator / denominator;
    let stale_commits = (STALE_SILVER_MS / BRONZE_INTERVAL_MS) as usize;
    HistoryProblems {
        venue_added_at: at(2, 5),
        quantity_widened_at: at(11, 20),
        volume_drop_at: at(7, 10),
        null_spike_at: at(4, 5),
        silver_stale_from: at(17, 20).min(bronze_commits.saturating_sub(stale_commits + 4)),
    }
}

/// Whether silver is in its stale stretch at bronze commit `index`.
pub fn silver_is_stale(problems: &HistoryProblems, index: usize) -> bool {
    let stale_commits = (STALE_SILVER_MS / BRONZE_INTERVAL_MS) as usize;
    index >= problems.silver_stale_from && index < problems.silver_stale_from + stale_commits
}

/// The simulated (backdated) time of each bronze commit: half-hourly, the last one `lag_ms`
/// before `now_ms`, each shifted by a deterministic jitter under a minute. Strictly increasing.
pub fn bronze_commit_times(rng: &mut Rng, now_ms: i64, days: u32, lag_ms: i64) -> Vec<i64> {
    let count = days as usize * (DAY_MS / BRONZE_INTERVAL_MS) as usize;
    let last = now_ms - lag_ms;
    (0..count)
        .map(|index| {
            let slots_before_last = (count - 1 - index) as i64;
            let jitter = if index + 1 == count { 0 } else { rng.below(0, MINUTE_MS) };
            last - slots_before_last * BRONZE_INTERVAL_MS - jitter
        })
        .collect()
}

/// Assigns the recorded simulated times to snapshots in commit order. `commit_order` lists the
/// snapshot ids oldest first; returns `(snapshot id, time)` pairs, or `None` when the counts
/// differ or the times are not strictly increasing (the log would be rejected or misleading).
pub fn retime_plan(commit_order: &[i64], simulated_ms: &[i64]) -> Option<Vec<(i64, i64)>> {
    if commit_order.len() != simulated_ms.len() || simulated_ms.windows(2).any(|pair| pair[0] >= pair[1]) {
        return None;
    }
    Some(commit_order.iter().copied().zip(simulated_ms.iter().copied()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasonality_peaks_in_the_afternoon_and_stays_positive() {
        assert!((seasonality(14.0) - 1.6).abs() < 1e-9);
        assert!((seasonality(2.0) - 0.4).abs() < 1e-9);
        let mean: f64 = (0..24).map(|hour| seasonality(hour as f64)).sum::<f64>() / 24.0;
        assert!((mean - 1.0).abs() < 1e-9);
    }

    #[test]
    fn same_seed_same_rows_and_trades() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut market = Market::new(1);
            let rows: Vec<usize> =
                (0..48).map(|slot| rows_for_commit(&mut rng, 100.0, slot * 30 * MINUTE_MS)).collect();
            let shape = BatchShape { rows: 50, null_rate: 0.02, with_venue: true };
            (rows, market.trades(&mut rng, 0, HOUR_US, shape))
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn rows_follow_the_daily_cycle() {
        let mut rng = Rng::new(1);
        let at_hour = |rng: &mut Rng, hour: i64| -> f64 {
            (0..50).map(|day| rows_for_commit(rng, 100.0, day * DAY_MS + hour * HOUR_MS) as f64).sum::<f64>() / 50.0
        };
        let afternoon = at_hour(&mut rng, 14);
        let night = at_hour(&mut rng, 2);
        assert!(afternoon > 140.0 && afternoon < 180.0, "afternoon mean {afternoon}");
        assert!(night > 30.0 && night < 50.0, "night mean {night}");
    }

    #[test]
    fn trades_are_sorted_in_the_window_and_ids_grow() {
        let mut rng = Rng::new(3);
        let mut market = Market::new(10);
        let shape = BatchShape { rows: 500, null_rate: 0.3, with_venue: false };
        let trades = market.trades(&mut rng, 1_000, 2_000_000, shape);
        assert_eq!(trades.len(), 500);
        assert!(trades.windows(2).all(|pair| pair[0].ts_us <= pair[1].ts_us));
        assert!(trades.iter().all(|trade| trade.ts_us > 1_000 && trade.ts_us <= 2_000_000));
        assert!(trades.iter().all(|trade| trade.venue.is_none()));
        let nulls = trades.iter().filter(|trade| trade.price.is_none()).count();
        assert!((100..200).contains(&nulls), "nulls {nulls}");
        assert!(trades.iter().all(|trade| trade.trade_id < market.next_trade_id()));
    }

    #[test]
    fn a_small_spike_commit_always_has_its_null_share() {
        for seed in 0..500 {
            let mut rng = Rng::new(seed);
            let shape = BatchShape { rows: 40, null_rate: SPIKE_NULL_RATE, with_venue: true };
            let trades = Market::new(1).trades(&mut rng, 0, HOUR_US, shape);
            let share = trades.iter().filter(|trade| trade.price.is_none()).count() as f64 / 40.0;
            assert!(share >= 0.25, "seed {seed}: {share}");
        }
    }

    #[test]
    fn cleaning_drops_null_prices_and_duplicates() {
        let mut rng = Rng::new(4);
        let mut market = Market::new(1);
        let shape = BatchShape { rows: 2_000, null_rate: 0.05, with_venue: true };
        let trades = market.trades(&mut rng, 0, HOUR_US, shape);
        let mut seen = HashSet::new();
        let cleaned = clean(&trades, &mut seen);
        let unique: HashSet<i64> = cleaned.iter().map(|trade| trade.trade_id).collect();
        assert_eq!(unique.len(), cleaned.len());
        assert!(cleaned.iter().all(|trade| trade.price.is_some()));
        assert!(cleaned.len() < trades.len());
        assert!(clean(&trades, &mut seen).is_empty(), "a second pass sees only known trades");
    }

    #[test]
    fn summaries_weight_price_by_quantity() {
        let trade = |price, quantity, symbol| Trade {
            trade_id: 1,
            symbol,
            side: "buy",
            price: Some(price),
            quantity,
            ts_us: 25 * HOUR_US,
            venue: None,
        };
        let summary = summarize(&[trade(10.0, 1, "A"), trade(20.0, 3, "A"), trade(5.0, 2, "B")]);
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[0].trade_date, 1);
        assert_eq!(summary[0].trades, 2);
        assert!((summary[0].volume - 4.0).abs() < 1e-12);
        assert!((summary[0].vwap - 17.5).abs() < 1e-12);
        assert_eq!(summary[1].symbol, "B");
    }

    #[test]
    fn bronze_times_are_half_hourly_strictly_increasing_and_end_before_now() {
        let mut rng = Rng::new(5);
        let now = 1_700_000_000_000;
        let times = bronze_commit_times(&mut rng, now, 5, 6 * MINUTE_MS);
        assert_eq!(times.len(), 240);
        assert_eq!(*times.last().unwrap(), now - 6 * MINUTE_MS);
        assert!(times.windows(2).all(|pair| pair[1] - pair[0] > 29 * MINUTE_MS && pair[1] - pair[0] < 31 * MINUTE_MS));
        assert!(now - times[0] >= 5 * DAY_MS - BRONZE_INTERVAL_MS);
    }

    #[test]
    fn problems_are_ordered_and_inside_the_history() {
        for days in 2..=30u32 {
            let commits = days as usize * 48;
            let problems = place_problems(commits);
            assert!(problems.venue_added_at < problems.quantity_widened_at);
            assert!(problems.quantity_widened_at < problems.volume_drop_at);
            assert!(problems.volume_drop_at < problems.null_spike_at);
            assert!(problems.silver_stale_from + 16 < commits, "days {days}");
        }
    }

    #[test]
    fn retime_plan_rejects_mismatches_and_disorder() {
        assert_eq!(retime_plan(&[5, 9], &[10, 20]), Some(vec![(5, 10), (9, 20)]));
        assert_eq!(retime_plan(&[5, 9], &[10]), None);
        assert_eq!(retime_plan(&[5, 9], &[20, 20]), None);
    }
}
