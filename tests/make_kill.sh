#!/usr/bin/env bash
# kill -9 of each stage, early and late in its run, then `make all`: make re-runs exactly the
# killed stage onwards, leaves no temporary file, and every file (data, model, work folder,
# reports) equals a clean run's byte for byte.
#
# The kill is exact in time: make runs the stages through wrappers (BIN=<wrappers>) that start
# the real binary and send it SIGKILL after a given share of the time it took in the clean run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$(mktemp -d)
config="$dir/k.toml"
source tests/tiny.sh
trap 'forget "$config"; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
fail() { echo "make_kill: FAILED: $*" >&2; exit 1; }
tiny_config "$config" 40
stages=(synth ingest profile prune finetune scan evaluate report)
# The configuration table whose stamp each stage depends on: touching it re-runs the stage.
declare -A stamp=([synth]=synth [ingest]=data [profile]=profile [prune]=prune [finetune]=finetune [scan]=scan [evaluate]=evaluate [report]=work)

# Wrappers (which log the stages they run) with the real binaries' times, so make sees nothing newer than its outputs.
wrap="$dir/bin"
mkdir -p "$wrap"
for b in "${stages[@]}" pipeline; do
  cat > "$wrap/$b" <<SH
#!/usr/bin/env bash
real="$root/target/release/$b"
if [ "\${KILL_STAGE:-}" = "$b" ]; then
  "\$real" "\$@" & pid=\$!
  sleep "\$KILL_AFTER"
  kill -9 \$pid 2>/dev/null || { wait \$pid; echo missed > "\$KILL_REPORT"; exit 0; }
  wait \$pid || true
  echo killed > "\$KILL_REPORT"; exit 137
fi
start=\$(date +%s%N)
"\$real" "\$@"
echo \$(( (\$(date +%s%N) - start) / 1000000 )) > "$dir/ms-$b"
[ "$b" = pipeline ] || echo "$b" >> "$dir/ran"
SH
  chmod +x "$wrap/$b"
  touch -r "target/release/$b" "$wrap/$b"
done

planned() { make -n all CONFIG="$config" 2>/dev/null | sed -n 's|^target/release/\([a-z]*\) .*|\1|p' | grep -v '^pipeline$' | xargs; }
snapshot() { rm -rf "$1"; mkdir -p "$1"; cp -a "$dir"/{data,models,work,reports} "$1"/; }

make all CONFIG="$config" BIN="$wrap" >/dev/null 2>&1 || fail "the clean run"
snapshot "$dir/clean"

rounds=0
midwrite=0
for i in "${!stages[@]}"; do
  s=${stages[$i]}
  ms=$(cat "$dir/ms-$s")
  # What a kill re-runs: the stage and every later one, except that scan and evaluate are
  # side by side (each needs finetune, the report needs both).
  case $s in
    scan) expected="scan report" ;;
    evaluate) expected="evaluate report" ;;
    *) expected=$(echo "${stages[@]:$i}") ;;
  esac
  for share in 25 75; do
    after=$(( ms * share / 100 ))
    report="$dir/kill-report"
    # A stage that finished early this time is run again with an earlier kill.
    for try in 1 2 3 4 5; do
      touch "$dir/work/config/${stamp[$s]}.json"
      rm -f "$report"
      KILL_STAGE=$s KILL_AFTER=$(printf '%d.%03d' $((after / 1000)) $((after % 1000))) KILL_REPORT="$report" \
        make all CONFIG="$config" BIN="$wrap" >/dev/null 2>&1 && true
      [ "$(cat "$report" 2>/dev/null)" = killed ] && break
      after=$(( after / 3 ))
    done
    [ "$(cat "$report" 2>/dev/null)" = killed ] || fail "$s always finished before the kill"
    [ -z "$(find "$dir"/{data,models,work,reports} -name '.tmp-*')" ] || midwrite=$((midwrite + 1))
    rm -f "$dir/ran"
    make all CONFIG="$config" BIN="$wrap" >/dev/null 2>&1 || fail "make all after kill -9 of $s at ${after} ms"
    [ "$(xargs < "$dir/ran")" = "$expected" ] || fail "after kill -9 of $s at ${after} ms make ran: $(xargs < "$dir/ran")"
    [ -z "$(planned)" ] || fail "after the re-run of $s make would still run: $(planned)"
    left=$(find "$dir"/{data,models,work,reports} -name '.tmp-*')
    [ -z "$left" ] || fail "temporary files left after kill -9 of $s at ${after} ms: $left"
    snapshot "$dir/after"
    diff -r "$dir/clean" "$dir/after" >/dev/null \
      || fail "kill -9 of $s at ${after} ms, then make all: files differ from a clean run: $(diff -rq "$dir/clean" "$dir/after" | head -3)"
    rounds=$((rounds + 1))
  done
done
echo "make_kill: $rounds kills (each stage, early and late; $midwrite while writing), all re-runs equal to a clean run"
