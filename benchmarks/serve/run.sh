#!/usr/bin/env bash
# The issue-5 serving benchmark: start `tokenmill serve` with the default model on the CPU, then run
# `tokenmill bench serve` with 200 random requests (input 128, output 128) at rate inf and at 4 req/s.
# Results land in benchmarks/serve/results/. Extra arguments go to `tokenmill serve`.
set -euo pipefail
cd "$(dirname "$0")"
PORT="${PORT:-8765}"
NUM_PROMPTS="${NUM_PROMPTS:-200}"
mkdir -p results
tokenmill serve --port "$PORT" --log-level warning "$@" > results/server.log 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
  kill -0 $SERVER 2>/dev/null || { cat results/server.log; exit 1; }
  sleep 0.5
done
for RATE in inf 4; do
  tokenmill bench serve --port "$PORT" --num-prompts "$NUM_PROMPTS" --random-input-len 128 \
    --random-output-len 128 --request-rate "$RATE" --output-json "results/rate_${RATE}.json" \
    | tee "results/rate_${RATE}.txt"
done
