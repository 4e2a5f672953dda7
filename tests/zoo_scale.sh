#!/usr/bin/env bash
# Planning and reporting at scale (not part of `make test`; minutes): a zoo of N tiny synthetic
# networks (default 1,000) through `pipeline zoo-plan`, Snakemake's dry run of every job and
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
echo "zoo_scale: $n networks, $jobs jobs: zoo-plan $plan s, Snakemake dry run $dry s, zoo-report $report s ($rows rows)"
