#!/usr/bin/env bash
# Two service trees under the same floods, alternating, one JSON line per run (bench/flood_formats.sh).
#   bench/ab_formats.sh OLD_SRC NEW_SRC ROUNDS RECORDS FORMAT... > bench/results/ab-formats-DATE.txt
# OLD_SRC and NEW_SRC are `src` directories (e.g. `git archive REV src | tar -x -C /tmp/old`);
# each run puts one of them first on PYTHONPATH, for the service and the senders alike. Odd
# rounds run old then new, even rounds new then old (ABBA: neither side always meets the
# machine first), each format in turn. Each line: "round side format load1 {flood JSON}"; load1
# is the machine's one-minute load average as the run starts (the noise, in one number).
# SERVE_ARGS passes more `serve` options through (bench/flood_formats.sh).
set -euo pipefail
old=$(cd "$1" && pwd) new=$(cd "$2" && pwd) rounds=$3 records=$4; shift 4
here=$(cd "$(dirname "$0")" && pwd)
for ((r = 1; r <= rounds; r++)); do
    order="old new"; ((r % 2 == 0)) && order="new old"
    for side in $order; do
        src=$old; [[ $side == new ]] && src=$new
        for fmt in "$@"; do
            printf '%s %s %s %s ' "$r" "$side" "$fmt" "$(cut -d' ' -f1 /proc/loadavg)"
            PYTHONPATH=$src "$here/flood_formats.sh" "$records" 1 "$fmt"
        done
    done
done
