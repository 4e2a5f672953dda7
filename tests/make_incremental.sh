#!/usr/bin/env bash
# make's caching, end to end: a tiny built-in synthetic benchmark from nothing, a second run
# that does nothing, code edits that re-run only the stages whose binary changed, a threshold
# change that re-runs only prune and what follows, and a stage killed half-way that leaves
# nothing make would take as done.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
source tests/tiny.sh
# Sources this test edits, restored whatever happens.
edited=(crates/render/src/lib.rs crates/render/src/text.rs)
for f in "${edited[@]}"; do cp -p "$f" "$dir/$(basename "$f").orig"; done
# A fresh time on what changed back, so cargo rebuilds from it.
restore() { for f in "${edited[@]}"; do cmp -s "$dir/$(basename "$f").orig" "$f" || cp "$dir/$(basename "$f").orig" "$f"; done; }
trap 'restore; forget "$dir/tiny.toml" "$dir/other.toml" "$dir/a folder/with spaces é/tiny.toml" "$dir/bad.toml" "$dir/user/p.toml"; rm -rf "$dir"' EXIT
config="$dir/tiny.toml"
tiny_config "$config"

fail() { echo "make_incremental: FAILED: $*" >&2; exit 1; }
# The stage commands make would run now (for $config, or the configuration given).
planned() { make -n all CONFIG="${1:-$config}" 2>/dev/null | sed -n 's|^target/release/\([a-z]*\) .*|\1|p' | grep -v '^pipeline$' | xargs; }

out=$(make all CONFIG="$config" 2>&1) || { echo "$out"; fail "make all on an empty folder"; }
grep -q "SYNTHETIC benchmark" <<<"$out" || fail "no loud notice that the synthetic benchmark is used"
for f in performance.csv sweep.csv summary.csv targets.csv plot.png plot.svg; do
  [ -s "$dir/reports/$f" ] || fail "reports/$f missing"
done
[ "$(head -1 "$dir/reports/summary.csv" | cut -d, -f1-8)" = \
  "network,threshold_percent,channels_pruned,valid_accuracy,clean_test_accuracy,attack_success_rate,flagged_clean,flagged_poisoned" ] \
  || fail "summary.csv columns"
[ "$(wc -l < "$dir/reports/performance.csv")" = 62 ] || fail "performance.csv should have 61 rows"

[ -z "$(planned)" ] || fail "a second run would re-run: $(planned)"

# Code edits (make builds first): a comment that leaves every binary as it was re-runs nothing;
# a change to the report crate's code re-runs report alone, although cargo relinks other
# binaries above that crate; undoing it re-runs report again.
sed -i '1i // A comment line that changes no code.' crates/render/src/text.rs
[ -z "$(planned)" ] || fail "after a comment-only edit make plans: $(planned)"
sed -i 's/"Pruning conv_3: clean accuracy and attack success"/"Pruning conv_3: clean accuracy and attack success (edited)"/' crates/render/src/lib.rs
grep -q '(edited)' crates/render/src/lib.rs || fail "the plot title to edit is gone from crates/render/src/lib.rs"
[ "$(planned)" = "report" ] || fail "after an edit to the report crate make plans: $(planned)"
make all CONFIG="$config" >/dev/null 2>&1 || fail "make all after the report edit"
restore
[ "$(planned)" = "report" ] || fail "after undoing the report edit make plans: $(planned)"
make all CONFIG="$config" >/dev/null 2>&1 || fail "make all after undoing the report edit"
[ -z "$(planned)" ] || fail "after the code edits make would still run: $(planned)"

sed -i 's/thresholds = \[2, 4, 10\]/thresholds = [3, 6]/' "$config"
[ "$(planned)" = "prune finetune scan evaluate report" ] || fail "after a threshold change make plans: $(planned)"
make all CONFIG="$config" >/dev/null 2>&1 || fail "make all after the threshold change"
ls "$dir/work/prune" | grep -q "bd_net_prime_3_percent" || fail "no model for the new threshold"
! ls "$dir/work/prune" | grep -q "bd_net_prime_10_percent" || fail "stale model of a dropped threshold kept"

sed -i 's/statistic = .*//; s/^\[prune\]/[profile]\nstatistic = "conv_3_mean"\n[prune]/' "$config"
[ "$(planned)" = "profile prune finetune scan evaluate report" ] || fail "after a statistic change make plans: $(planned)"
make all CONFIG="$config" >/dev/null 2>&1 || fail "make all after the statistic change"

# A stage killed half-way has written some files but not its last one, the one make checks:
# evaluate writes sweep.parquet and targets.parquet, then summary.parquet (each via a temporary
# file and a rename).
rm "$dir/work/evaluate/summary.parquet"
[ "$(planned)" = "evaluate report" ] || fail "after an interrupted evaluate make plans: $(planned)"
make all CONFIG="$config" >/dev/null 2>&1 || fail "make all after an interrupted evaluate"

# A process killed while writing leaves a temporary file, recorded in the folder's manifest
# with its process; the stage's next run removes it. A file merely named like one stays.
touch "$dir/work/evaluate/.tmp-999999-summary.parquet" "$dir/work/evaluate/.tmp-999998-summary.parquet"
sed -i 's/"pending": {}/"pending": {".tmp-999999-summary.parquet": 999999}/' "$dir/work/evaluate/.fineprune-written.json"
grep -q 999999 "$dir/work/evaluate/.fineprune-written.json" || fail "no manifest in work/evaluate"
rm "$dir/work/evaluate/summary.parquet"
make all CONFIG="$config" >/dev/null 2>&1 || fail "make all after a killed evaluate"
[ ! -e "$dir/work/evaluate/.tmp-999999-summary.parquet" ] || fail "an abandoned temporary file was kept"
[ -e "$dir/work/evaluate/.tmp-999998-summary.parquet" ] || fail "a file named like a temporary file was removed"
rm "$dir/work/evaluate/.tmp-999998-summary.parquet"

# Two configurations over one work folder: each run reports its own numbers, never the other's.
other="$dir/other.toml"
sed 's/thresholds = \[3, 6\]/thresholds = [5]/' "$config" > "$other"
make all CONFIG="$other" >/dev/null 2>&1 || fail "make all for a second configuration"
grep -q "^pruned,5.00," "$dir/reports/summary.csv" || fail "the second configuration's report lacks its threshold"
[ -n "$(planned)" ] || fail "back to the first configuration, make would re-run nothing (stale numbers)"
make all CONFIG="$config" >/dev/null 2>&1 || fail "make all back on the first configuration"
grep -q "^pruned,3.00," "$dir/reports/summary.csv" && ! grep -q "^pruned,5.00," "$dir/reports/summary.csv" \
  || fail "the first configuration reports the second's thresholds"
[ -z "$(planned)" ] || fail "a repeated run would re-run: $(planned)"

# Spaces and non-ASCII letters in every path, through make.
odd="$dir/a folder/with spaces é"
mkdir -p "$odd"
cp "$config" "$odd/tiny.toml"
out=$(make all CONFIG="$odd/tiny.toml" 2>&1) || { echo "$out"; fail "make all with spaces in the paths"; }
[ -s "$odd/reports/summary.csv" ] || fail "no report under a path with spaces"
[ -z "$(planned "$odd/tiny.toml")" ] || fail "with spaces in the paths a second run would re-run: $(planned "$odd/tiny.toml")"

# A replaced input re-runs what depends on it, whatever its modification time (cp -p keeps
# the old one); an input touched without a change re-runs nothing.
fixtures=${FINEPRUNE_FIXTURES:-../shared/fixtures}
if [ -f "$fixtures/deepid/bd_weights.h5" ]; then
  user="$dir/user"
  mkdir -p "$user/data"
  cp "$fixtures"/deepid/sweep/{valid,test,bd_test}.h5 "$fixtures/deepid/bd_weights.h5" "$user/data/"
  printf '[data]\nvalid = "data/valid.h5"\ntest = "data/test.h5"\npoisoned_test = "data/bd_test.h5"\n[model]\nweights = "data/bd_weights.h5"\n[finetune]\nsteps = 2\nunpruned = false\n[scan]\nenabled = false\n' > "$user/p.toml"
  make all CONFIG="$user/p.toml" >/dev/null 2>&1 || fail "make all on user data"
  touch "$user/data/valid.h5"
  [ -z "$(planned "$user/p.toml")" ] || fail "a touched but unchanged input re-runs: $(planned "$user/p.toml")"
  cp -p "$user/data/test.h5" "$user/data/valid.h5"
  [ "$(planned "$user/p.toml")" = "ingest profile prune finetune scan evaluate report" ] \
    || fail "a replaced input (cp -p) would re-run: $(planned "$user/p.toml")"
else
  echo "make_incremental: skipped the replaced-input case: reference fixtures not found at $fixtures (set FINEPRUNE_FIXTURES=<folder> to run it)"
fi

# make clean removes what the pipeline wrote and nothing else.
echo "notes" > "$dir/work/prune/my notes.txt"
echo "mine" > "$dir/reports/mine.csv"
make clean CONFIG="$config" >/dev/null 2>&1 || fail "make clean"
[ -f "$dir/work/prune/my notes.txt" ] && [ -f "$dir/reports/mine.csv" ] || fail "make clean removed a user's file"
[ ! -e "$dir/work/ingest" ] && [ ! -e "$dir/work/evaluate" ] && [ ! -e "$dir/reports/summary.csv" ] \
  && [ ! -e "$dir/reports/targets.csv" ] && [ ! -e "$dir/work/prune/sweep.parquet" ] \
  || fail "make clean left pipeline outputs"
[ -f "$dir/data/valid.h5" ] && [ -f "$config" ] || fail "make clean removed inputs"

# A configuration whose work or report folder holds its own folder or its inputs is refused.
bad="$dir/bad.toml"
{ cat "$config"; printf '[work]\nreports = "."\n'; } > "$bad"
out=$(make all CONFIG="$bad" 2>&1) && fail "reports = \".\" was accepted"
grep -q "work.reports" <<<"$out" || fail "the refusal does not name work.reports: $out"
out=$(make clean CONFIG="$bad" 2>&1) && fail "make clean accepted reports = \".\""
[ -f "$bad" ] && [ -f "$dir/data/valid.h5" ] && [ -f "$dir/reports/mine.csv" ] || fail "a refused configuration lost files"
echo "make_incremental: 1 passed, 0 failed"
