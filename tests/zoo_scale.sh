#!/usr/bin/env bash
# Planning and reporting at scale: a zoo of N tiny synthetic networks (default 1,000; `make
# test` runs 200, seconds) through `pipeline zoo-plan`, Snakemake's dry run of every job and
# `pipeline zoo-report`, each timed. No stage runs, so every network reports `not run`.
#   bash tests/zoo_scale.sh [N]    (after `make zoo` installed Snakemake into target/snakemake)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
smk=target/snakemake/bin/snakemake
[ -x "$smk" ] && [ -x target/release/pipeline ] || { echo "error: run make zoo once first (Snakemake and the binaries)" >&2; exit 1; }
source tests/tiny.sh
dir=$(mktemp -d)
trap 'forget "$dir"/n*/p.toml; rm -rf "$dir"' EXIT
for i in $(seq 1 "$n"); do
  mkdir -p "$dir/n$i"
  tiny_config "$dir/n$i/p.toml"
  printf '[[model]]\nname = "n%s"\nconfig = "n%s/p.toml"\n' "$i" "$i" >> "$dir/zoo.toml"
done
seconds() { local t=$EPOCHREALTIME; "$@" >"$dir/out.log" 2>&1 || true; echo "$EPOCHREALTIME - $t" | bc; }
plan=$(seconds target/release/pipeline zoo-plan --zoo "$dir/zoo.toml" --out "$dir/plan.json")
dry=$(seconds "$smk" --snakefile workflow/Snakefile -n --config plan="$dir/plan.json" \
  logs="$dir/reports/logs" bin="$PWD/target/release" code="$PWD/target/make/code")
jobs=$(grep -Eo '^total +[0-9]+' "$dir/out.log" | grep -Eo '[0-9]+' | head -1 || echo "?")
report=$(seconds target/release/pipeline zoo-report --plan "$dir/plan.json" --logs "$dir/reports/logs" \
  --code target/make/code --output-dir "$dir/reports")
rows=$(( $(wc -l < "$dir/reports/zoo.csv") - 1 ))
fail() { echo "zoo_scale: FAILED: $*" >&2; exit 1; }
# Eight jobs a network (synth to report) and the engine's own target; one row a network, none run.
[ "$jobs" = $(( 8 * n + 1 )) ] || fail "the engine plans $jobs jobs for $n networks"
[ "$rows" = "$n" ] && [ "$(grep -c '^n[0-9]*,not run,' "$dir/reports/zoo.csv")" = "$n" ] \
  || fail "zoo.csv should have $n rows, each not run"
echo "zoo_scale: $n networks, $jobs jobs: zoo-plan $plan s, Snakemake dry run $dry s, zoo-report $report s ($rows rows)"
