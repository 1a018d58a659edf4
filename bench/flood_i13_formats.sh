#!/usr/bin/env bash
# Floods of the stream formats (pickle, json, syslog) against a fresh `logsvc serve` each (its own
# schema bench_i13_<random> and data dir, dropped afterwards; loopback, ports chosen by the
# kernel), alternating formats and, optionally, source trees; one line per run (issue 13).
#   bench/flood_i13_formats.sh RECORDS ROUNDS FORMAT... > bench/results/issue13-formats-DATE.txt
# SIDES="old=/tmp/old/src new=src" alternates trees (each side's src first on PYTHONPATH, for the
# service and the senders alike); default: this tree's src only. Each line:
#   "round side format load1 {flood JSON}"
# load1 is the one-minute load average as the run starts (the noise, in one number); the JSON
# has records_per_s and service_cpu_us_per_record (bench flood --service-pid).
# LOGSVC_PY (default .venv/bin/python) and DSN (default host=127.0.0.1 port=5432 dbname=test
# user=postgres) may be set.
set -euo pipefail
records=$1 rounds=$2; shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
py=${LOGSVC_PY:-$here/.venv/bin/python}
dsn=${DSN:-host=127.0.0.1 port=5432 dbname=test user=postgres}
sides=${SIDES:-this=$here/src}
declare -A what=([pickle]='SocketHandler pickle frames' [json]='JSON lines' [syslog]='syslog over TCP')
for ((r = 1; r <= rounds; r++)); do
    for side in $sides; do
        name=${side%%=*} src=$(cd "${side#*=}" && pwd)
        for fmt in "$@"; do
            schema="bench_i13_${fmt}_$$_${RANDOM}" work=$(mktemp -d /tmp/bench-i13.XXXXXX)
            PYTHONPATH=$src "$py" -m logsvc serve --listen 127.0.0.1:0 --listen-json 127.0.0.1:0 \
                --listen-syslog 127.0.0.1:0 --metrics 127.0.0.1:0 --stats-interval 0 --dsn "$dsn" \
                --schema "$schema" --data-dir "$work/data" --fsync interval >"$work/log" 2>&1 &
            pid=$!
            port=
            for _ in $(seq 300); do  # at most 30 s
                if grep -q "Connected to PostgreSQL" "$work/log" 2>/dev/null; then
                    port=$(grep -oP "Listening on 127\.0\.0\.1:\K\d+(?= \(${what[$fmt]})" "$work/log" 2>/dev/null || true)
                    break
                fi
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if [[ -z $port ]]; then
                echo "serve did not start: $(tail -3 "$work/log")" >&2
                kill -TERM "$pid" 2>/dev/null || true
                wait "$pid" || true
                psql -qX "$dsn" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
                rm -rf "$work"
                exit 1
            fi
            printf '%s %s %s %s ' "$r" "$name" "$fmt" "$(cut -d' ' -f1 /proc/loadavg)"
            PYTHONPATH=$src timeout 600 "$py" -m logsvc bench flood --format "$fmt" --port "$port" \
                --dsn "$dsn" --schema "$schema" --records "$records" --service-pid "$pid" \
                --timeout 300 --json | tr -d '\n' || true
            echo
            kill -TERM "$pid"
            wait "$pid" || true
            psql -qX "$dsn" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
            rm -rf "$work"
        done
    done
done
