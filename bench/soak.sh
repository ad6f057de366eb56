#!/usr/bin/env bash
# Soak of the service in release: `icewatch demo` (the demo warehouse, its sensors every 10 s,
# the simulated writer committing every second) scraped on /metrics once a second for
# $SECONDS_TO_RUN seconds. Records resident memory and open file descriptors every 10 s and the
# time of every scrape, then prints whether they stayed flat:
#
#   bench/soak.sh                        # 10 minutes
#   SECONDS_TO_RUN=120 bench/soak.sh     # a short look
#   WRITER_INTERVAL=1h bench/soak.sh     # tables that do not change: RSS must stay flat
#   BUILD=0 bench/soak.sh                # use the release binary already built
#
# Prints RSS and fds of the first and last quarter, their growth, scrape p50 / p99 / max, and
# the sensor runs and history points at the end. Everything binds 127.0.0.1 on a port picked
# at run time; the service is stopped (SIGTERM) at the end or on Ctrl-C.
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${SECONDS_TO_RUN:-600}
WARM_UP=${WARM_UP:-30}
WRITER_INTERVAL=${WRITER_INTERVAL:-1s}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/icewatch-release}
WORK=$(mktemp -d /var/tmp/icewatch-soak.XXXXXX)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

if [ "${BUILD:-1}" != "0" ]; then
    cargo build --release --locked --bin icewatch
fi
"$CARGO_TARGET_DIR/release/icewatch" demo --dir "$WORK/demo" --days 5 --interval "$WRITER_INTERVAL" \
    --listen "127.0.0.1:$PORT" >"$WORK/icewatch.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT

URL="http://127.0.0.1:$PORT/metrics"
for _ in $(seq 1 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" && break
    kill -0 $PID 2>/dev/null || { echo "icewatch exited:"; tail -20 "$WORK/icewatch.log"; exit 1; }
    sleep 0.5
done
echo "soak: icewatch pid $PID on $URL, warming up ${WARM_UP}s, then ${SECONDS_TO_RUN}s of scrapes"
sleep "$WARM_UP"

SCRAPES="$WORK/scrapes.tsv"   # seconds since start, scrape time in seconds
PROCESS="$WORK/process.tsv"   # seconds since start, RSS in KiB, open fds
: >"$SCRAPES"
: >"$PROCESS"
START=$(date +%s)
for second in $(seq 0 $((SECONDS_TO_RUN - 1))); do
    took=$(curl -s -o /dev/null -w '%{time_total}' --max-time 10 "$URL" || echo 10)
    echo -e "$second\t$took" >>"$SCRAPES"
    if ((second % 10 == 0)); then
        rss=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
        fds=$(ls "/proc/$PID/fd" | wc -l)
        echo -e "$second\t$rss\t$fds" >>"$PROCESS"
    fi
    # One scrape a second, whatever the scrape took.
    next=$((START + second + 1))
    now=$(date +%s)
    ((next > now)) && sleep $((next - now))
done
curl -s "$URL" >"$WORK/last-metrics.txt"

python3 - "$SCRAPES" "$PROCESS" "$WORK/last-metrics.txt" "$SECONDS_TO_RUN" <<'PY'
import sys

scrapes_path, process_path, metrics_path, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
scrapes = sorted(float(line.split("\t")[1]) for line in open(scrapes_path) if line.strip())
process = [tuple(int(field) for field in line.split("\t")[1:]) for line in open(process_path) if line.strip()]

def percentile(values, share):
    return values[min(len(values) - 1, int(share * len(values)))]

quarter = max(1, len(process) // 4)
mean = lambda values: sum(values) / len(values)
rss_first, rss_last = mean([rss for rss, _ in process[:quarter]]), mean([rss for rss, _ in process[-quarter:]])
fds_first, fds_last = mean([fds for _, fds in process[:quarter]]), mean([fds for _, fds in process[-quarter:]])
metrics = {}
for line in open(metrics_path):
    if line and not line.startswith("#"):
        name = line.split("{")[0].split(" ")[0]
        metrics[name] = metrics.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
print(f"soak: {seconds} s, {len(scrapes)} scrapes, {len(process)} process samples")
print(f"  RSS  first quarter {rss_first / 1024:.1f} MiB, last quarter {rss_last / 1024:.1f} MiB, "
      f"max {max(rss for rss, _ in process) / 1024:.1f} MiB: growth {(rss_last - rss_first) / rss_first * 100:+.2f} %")
print(f"  fds  first quarter {fds_first:.1f}, last quarter {fds_last:.1f}, min {min(f for _, f in process)}, max {max(f for _, f in process)}")
print(f"  scrape p50 {percentile(scrapes, 0.5) * 1000:.1f} ms, p99 {percentile(scrapes, 0.99) * 1000:.1f} ms, max {scrapes[-1] * 1000:.1f} ms")
print(f"  sensor runs {metrics.get('icewatch_sensor_runs_total', 0):.0f} "
      f"(skipped {metrics.get('icewatch_sensor_skipped_runs_total', 0):.0f}, errors {metrics.get('icewatch_sensor_errors_total', 0):.0f}), "
      f"history points {metrics.get('icewatch_history_points', 0):.0f}")
PY
echo "soak: files in $WORK (scrapes.tsv, process.tsv, icewatch.log)"
