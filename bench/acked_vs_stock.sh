#!/usr/bin/env bash
# The acknowledging handler against the stock SocketHandler, one service, alternating runs.
#   bench/acked_vs_stock.sh [ROUNDS] [RECORDS] [CONNECTIONS] [PACED_ROUNDS]
# Each round: `logsvc bench flood --client stock`, then `--client acked` (each against a fresh
# service, schema and journal), the same records from
# the same number of sender processes (LogRecords through a real handler, each handle() timed).
# Then PACED_ROUNDS (default 1) paced pairs (--rate 500 records/s per sender, 20 s), stock
# then acked: the acked client's emit-to-acknowledgement latency at a steady load (where a
# flood's figure is mostly time queued in the spool), and the p99 of handle() for both, the
# stock one being the floor of what the same paced loop costs on this machine at this moment.
# Prints one line per run: round client rec/s cpu_us emit_p50_us emit_p99_us ack_p50_ms
# ack_p99_ms lost dup. Loopback only; stops only the service it started.
set -euo pipefail
rounds=${1:-3}
records=${2:-100000}
conns=${3:-4}
paced_rounds=${4:-1}
here=$(cd "$(dirname "$0")/.." && pwd)
py=$here/.venv/bin/python
dsn=${LOGSVC_TEST_DSN:-host=127.0.0.1 port=5432 dbname=test user=postgres}
port=47500
dd=$(mktemp -d /tmp/logsvc-acked-XXXXXX)
schema=bench_acked
pid=
start_service() {  # a fresh schema and journal for every run: the bench's own polling grows with the table
  stop_service
  psql -qX "$dsn" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$dd/data"; mkdir -p "$dd/data"
  "$py" -m logsvc serve --listen 127.0.0.1:$port --dsn "$dsn" --schema $schema --data-dir "$dd/data" \
      --stats-interval 0 --metrics 127.0.0.1:0 >"$dd/log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do grep -q "Connected to PostgreSQL" "$dd/log" && break; sleep 0.1; done
}
stop_service() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; fi
}
trap 'stop_service; rm -rf "$dd"; psql -qX "$dsn" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true' EXIT
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); $records records, $conns senders"
echo "round client records_per_s cpu_us_per_record emit_p50_us emit_p99_us ack_p50_ms ack_p99_ms lost duplicated"
run() {  # $1 round label, $2 client, rest: extra flags
  local label=$1 client=$2; shift 2
  start_service
  timeout 900 "$py" -m logsvc bench flood --port $port --records "$records" --connections "$conns" \
      --client "$client" --dsn "$dsn" --schema $schema --service-pid $pid --json "$@" 2>/dev/null \
    | "$py" -c "
import sys, json
r = json.load(sys.stdin); e = r['extra']
print('$label $client', round(r['records_per_s']), round(r['cpu_us_per_record'], 1), e.get('emit_p50_us'), e.get('emit_p99_us'),
      e.get('ack_latency_p50_ms', '-'), e.get('ack_latency_p99_ms', '-'), r['lost'], r['duplicated'])"
}
for round in $(seq 1 "$rounds"); do
  run "$round" stock
  run "$round" acked
done
records=$((conns * 500 * 20))  # 20 s at 500 records/s per sender
for round in $(seq 1 "$paced_rounds"); do
  run "paced$round" stock --rate 500
  run "paced$round" acked --rate 500
done
