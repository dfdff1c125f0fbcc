#!/usr/bin/env bash
# How long, and how much CPU, a fresh FastFileSrv takes to hash a folder
# before it announces it (the start-up a user waits for), for two builds
# side by side, interleaved.
# Usage: bench/hash-start.sh BEFORE_BIN_DIR AFTER_BIN_DIR FOLDER ROUNDS
# Each run starts with no state file and stops at "catalog: ready"; the
# gateway address is unused (the catalog is ready before any handshake).
set -u
K=$(mktemp); head -c 32 /dev/urandom >$K; chmod 600 $K
for r in $(seq 1 "$4"); do
  for v in before after; do
    d=$1; [ $v = after ] && d=$2
    S=$(mktemp -u); L=$(mktemp)
    t0=$(date +%s.%N)
    "$d"/fastfilesrv -key-file $K -root "$3" -state $S -log-level info 127.0.0.1 9 >$L 2>&1 & P=$!
    until grep -q "catalog: ready" $L; do sleep 0.05; done
    t1=$(date +%s.%N)
    ticks=$(awk '{print $14+$15}' /proc/$P/stat)
    kill $P; wait $P 2>/dev/null
    echo "$v wall=$(echo "$t1 - $t0" | bc) cpu_ticks=$ticks load=$(cut -d' ' -f1 /proc/loadavg)"
    rm -f $S $L
  done
done
rm -f $K
