#!/usr/bin/env bash
# A tiny zoo through the workflow engine: two tiny synthetic BadNets, one network with broken
# files and, with the reference fixtures, two real networks of other class counts and input
# scales. zoo.csv has every row of each good network's summary under its name and
# the broken one as failed with its error; the good networks' results equal what
# `make all` gives for their configurations (same files, nothing left to do); a second run
# does nothing; and the job-submission path (cluster-generic executor, local submit script)
# runs a network too. Snakemake is installed into target/snakemake once (`make zoo` does it).
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "zoo: FAILED: $*" >&2; exit 1; }
dir=$(mktemp -d)
source tests/tiny.sh
trap 'forget "$dir"/{a,b,broken,c,lab,csaw2020}/p.toml; rm -rf "$dir"' EXIT

for n in a b c; do
  mkdir -p "$dir/$n"
  tiny_config "$dir/$n/p.toml" 4
done
sed -i 's/^seed = .*//; s/^\[synth\]/[synth]\nseed = 3/' "$dir/b/p.toml"
mkdir -p "$dir/broken/data" "$dir/broken/models"
for f in valid test bd_test; do echo "not HDF5" > "$dir/broken/data/$f.h5"; done
echo "not HDF5" > "$dir/broken/models/bd_net.h5"
printf '[data]\nvalid = "data/valid.h5"\ntest = "data/test.h5"\npoisoned_test = "data/bd_test.h5"\n[model]\nweights = "models/bd_net.h5"\n' > "$dir/broken/p.toml"
printf '[[model]]\nname = "a"\nconfig = "a/p.toml"\n\n[[model]]\nname = "broken"\nconfig = "broken/p.toml"\n\n[[model]]\nname = "b"\nconfig = "b/p.toml"\n' > "$dir/zoo.toml"
# Networks the project did not make, with 1,283 classes and two input scales, beside the
# 8-class synthetic ones: the lab's BadNet and a CSAW-2020 one (pixels / 255).
fixtures=${FINEPRUNE_FIXTURES:-../shared/fixtures}
good="a b"
if [ -f "$fixtures/deepid/bd_weights.h5" ]; then
  f=$(realpath "$fixtures")
  for n in lab:deepid/bd_weights.h5:1.0 csaw2020:csaw2020/anonymous_1_bd_weights.h5:0.00392156862745098; do
    IFS=: read -r name weights scale <<<"$n"
    mkdir -p "$dir/$name"
    printf '[data]\nvalid = "%s"\ntest = "%s"\npoisoned_test = "%s"\n[model]\nweights = "%s"\ninput_scale = %s\n[finetune]\nsteps = 4\nunpruned = false\n[scan]\ncandidates = 2\nreference = 2\nsteps = 4\nbatch_size = 8\n' \
      "$f/deepid/sweep/valid.h5" "$f/deepid/sweep/test.h5" "$f/deepid/sweep/bd_test.h5" "$f/$weights" "$scale" > "$dir/$name/p.toml"
    printf '\n[[model]]\nname = "%s"\nconfig = "%s/p.toml"\n' "$name" "$name" >> "$dir/zoo.toml"
    good="$good $name"
  done
else
  echo "zoo: skipped the networks from the reference fixtures: not found at $fixtures (set FINEPRUNE_FIXTURES=<folder> to run them)"
fi

out=$(make zoo ZOO="$dir/zoo.toml" ZOO_REPORTS="$dir/reports" 2>&1) && fail "make zoo succeeded although a network is broken"
total=$(( $(wc -w <<<"$good") + 1 ))
grep -q "1 of $total networks failed or did not run (broken)" <<<"$out" || { echo "$out" | tail -20; fail "the failure is not summed up"; }
csv="$dir/reports/zoo.csv"
[ -s "$dir/reports/zoo.png" ] && [ -s "$dir/reports/zoo.svg" ] || fail "no zoo plot"
[ "$(head -1 "$csv" | cut -d, -f1-6)" = "model,status,error,seconds,peak_rss_mb,network" ] || fail "zoo.csv header: $(head -1 "$csv")"
for n in $good; do
  summary="$dir/$n/reports/summary.csv"
  [ -s "$summary" ] || fail "$n has no summary"
  # Every summary row, under the network's name, in order.
  diff <(tail -n +2 "$summary") <(grep "^$n,ok,," "$csv" | cut -d, -f6-) >/dev/null \
    || fail "zoo.csv rows of $n differ from its summary.csv"
  make -q report CONFIG="$dir/$n/p.toml" || fail "make finds $n's run incomplete after the zoo ran it"
done
grep -q '^broken,failed,ingest: error: .*/broken/.*not an HDF5 file' "$csv" || fail "the broken network's error is not in zoo.csv: $(grep ^broken "$csv")"
[ "$(grep -c '^broken,' "$csv")" = 1 ] || fail "a failed network should have one row"

# A second run: the engine finds nothing to do for the good networks.
smk=target/snakemake/bin/snakemake
plan=$(ls -t target/zoo/*.json | head -1)
dry=$("$smk" --snakefile workflow/Snakefile -n --config plan="$plan" logs="$dir/reports/logs" bin="$PWD/target/release" code="$PWD/target/make/code" 2>&1)
! grep -Eq "\b[a-z]+_(a|b|lab|csaw2020)\b" <<<"$dry" || { echo "$dry" | tail -8; fail "a second run would run jobs of good networks"; }
grep -q "ingest_broken" <<<"$dry" || fail "the broken network is not retried"
t0=$(date +%s)
make zoo ZOO="$dir/zoo.toml" ZOO_REPORTS="$dir/reports" >/dev/null 2>&1 && fail "the second run hid the broken network"
[ $(( $(date +%s) - t0 )) -lt 30 ] || fail "the second run took $(( $(date +%s) - t0 )) s"

# zoo-report judges what is current by make's rule without running make: a changed setting
# makes a network out of date for both, a removed output too, and the rest stay ok.
sed -i 's/^steps = 4$/steps = 5/' "$dir/a/p.toml"
rm "$dir/b/work/evaluate/summary.parquet"
target/release/pipeline zoo-report --plan "$plan" --logs "$dir/reports/logs" --code target/make/code \
  --output-dir "$dir/again" >/dev/null 2>&1 && fail "zoo-report took out-of-date networks for done"
for n in a b; do
  grep -q "^$n,not run," "$dir/again/zoo.csv" || fail "zoo-report finds $n current: $(grep "^$n," "$dir/again/zoo.csv" | head -1)"
  ! make -q report CONFIG="$dir/$n/p.toml" || fail "make finds $n current"
done
for n in ${good#a b}; do
  grep -q "^$n,ok," "$dir/again/zoo.csv" || fail "zoo-report finds $n out of date"
done

# The job-submission path: jobs go through a submit command, as on a cluster.
printf '[[model]]\nname = "c"\nconfig = "c/p.toml"\n' > "$dir/cluster.toml"
make zoo ZOO="$dir/cluster.toml" ZOO_REPORTS="$dir/cluster" ZOO_PROFILE=workflow/profiles/cluster-generic >/dev/null 2>&1 \
  || fail "the cluster-generic profile did not run the zoo"
grep -Eq "^c,ok,,[0-9.]+,[0-9.]+,backdoored," "$dir/cluster/zoo.csv" || fail "no results (with their cost) through the submit path"
echo "zoo: $total networks (1 broken) and the submit path pass"
