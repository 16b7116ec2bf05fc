#!/usr/bin/env bash
# The serving benchmark: offline and online output tok/s side by side, in one command.
# 1. `tokenmill bench throughput` (offline, in process) on NUM_PROMPTS random prompts of IN_LEN
#    tokens, OUT_LEN generated each;
# 2. for each server mode in MODES (process: the engine core in its own process, the default;
#    thread: --no-engine-core-process), `tokenmill serve` with the default model on the CPU, then
#    `tokenmill bench serve` with the same counts and lengths at each rate in RATES.
# Results land in benchmarks/serve/results/; the last lines are a table with the load average at
# the start of each run (other jobs on the box skew the figures). Extra arguments go to both
# `tokenmill bench throughput` and `tokenmill serve` (engine flags, e.g. --dtype float32).
set -euo pipefail
cd "$(dirname "$0")"
PORT="${PORT:-8765}"
NUM_PROMPTS="${NUM_PROMPTS:-200}"
IN_LEN="${IN_LEN:-128}"
OUT_LEN="${OUT_LEN:-128}"
MODES="${MODES:-process thread}"
RATES="${RATES:-inf 4}"
mkdir -p results
load() { cut -d' ' -f1 /proc/loadavg; }
ROWS=()
L=$(load)
tokenmill bench throughput --num-prompts "$NUM_PROMPTS" --input-len "$IN_LEN" --output-len "$OUT_LEN" \
  --output-json results/offline.json "$@" > results/offline.txt 2>&1
ROWS+=("offline (in process) | - | $(python3 -c "import json;print(f\"{json.load(open('results/offline.json'))['output_tokens_per_s']:.1f}\")") | $L")
for MODE in $MODES; do
  FLAG=(); [ "$MODE" = thread ] && FLAG=(--no-engine-core-process)
  tokenmill serve --port "$PORT" --log-level warning --no-access-log "${FLAG[@]}" "$@" > "results/server_$MODE.log" 2>&1 &
  SERVER=$!
  trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
    kill -0 $SERVER 2>/dev/null || { cat "results/server_$MODE.log"; exit 1; }
    sleep 0.5
  done
  for RATE in $RATES; do
    L=$(load)
    tokenmill bench serve --port "$PORT" --num-prompts "$NUM_PROMPTS" --random-input-len "$IN_LEN" \
      --random-output-len "$OUT_LEN" --request-rate "$RATE" --output-json "results/${MODE}_rate_${RATE}.json" \
      > "results/${MODE}_rate_${RATE}.txt"
    ROWS+=("online, $MODE | $RATE | $(python3 -c "import json;print(f\"{json.load(open('results/${MODE}_rate_${RATE}.json'))['output_throughput']:.1f}\")") | $L")
  done
  kill -TERM $SERVER; wait $SERVER || true
  trap - EXIT
done
echo "| run | request rate | output tok/s | load average at start |"
echo "| --- | --- | ---: | ---: |"
printf '| %s |\n' "${ROWS[@]}"
