#!/usr/bin/env bash
# make's caching, end to end: a tiny built-in synthetic benchmark from nothing, a second run
# that does nothing, a threshold change that re-runs only prune and what follows, and a stage
# killed half-way that leaves nothing make would take as done.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
config="$dir/tiny.toml"
cat > "$config" <<TOML
[data]
valid = "data/valid.h5"
test = "data/test.h5"
poisoned_test = "data/bd_test.h5"
[model]
weights = "models/bd_net.h5"
[prune]
thresholds = [2, 4, 10]
[synth]
identities = 8
train_per_identity = 16
valid_per_identity = 4
test_per_identity = 4
epochs = 2
batch_size = 16
[finetune]
steps = 4
TOML

fail() { echo "make_incremental: FAILED: $*" >&2; exit 1; }
# The stage commands make would run now.
planned() { make -n all CONFIG="$config" 2>/dev/null | sed -n 's|^target/release/\([a-z]*\) .*|\1|p' | grep -v '^pipeline$' | xargs; }

out=$(make all CONFIG="$config" 2>&1) || { echo "$out"; fail "make all on an empty folder"; }
grep -q "SYNTHETIC benchmark" <<<"$out" || fail "no loud notice that the synthetic benchmark is used"
for f in performance.csv sweep.csv summary.csv plot.png plot.svg; do
  [ -s "$dir/reports/$f" ] || fail "reports/$f missing"
done
[ "$(head -1 "$dir/reports/summary.csv" | cut -d, -f1-8)" = \
  "network,threshold_percent,channels_pruned,valid_accuracy,clean_test_accuracy,attack_success_rate,flagged_clean,flagged_poisoned" ] \
  || fail "summary.csv columns"
[ "$(wc -l < "$dir/reports/performance.csv")" = 62 ] || fail "performance.csv should have 61 rows"

[ -z "$(planned)" ] || fail "a second run would re-run: $(planned)"

sed -i 's/thresholds = \[2, 4, 10\]/thresholds = [3, 6]/' "$config"
[ "$(planned)" = "prune finetune evaluate report" ] || fail "after a threshold change make plans: $(planned)"
make all CONFIG="$config" >/dev/null 2>&1 || fail "make all after the threshold change"
ls "$dir/work/prune" | grep -q "bd_net_prime_3_percent" || fail "no model for the new threshold"
! ls "$dir/work/prune" | grep -q "bd_net_prime_10_percent" || fail "stale model of a dropped threshold kept"

sed -i 's/statistic = .*//; s/^\[prune\]/[profile]\nstatistic = "conv_3_mean"\n[prune]/' "$config"
[ "$(planned)" = "profile prune finetune evaluate report" ] || fail "after a statistic change make plans: $(planned)"
make all CONFIG="$config" >/dev/null 2>&1 || fail "make all after the statistic change"

# A stage killed half-way has written some files but not its last one, the one make checks:
# evaluate writes sweep.parquet, then summary.parquet (each via a temporary file and a rename).
rm "$dir/work/evaluate/summary.parquet"
[ "$(planned)" = "evaluate report" ] || fail "after an interrupted evaluate make plans: $(planned)"
make all CONFIG="$config" >/dev/null 2>&1 || fail "make all after an interrupted evaluate"
echo "make_incremental: 1 passed, 0 failed"
