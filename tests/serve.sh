#!/usr/bin/env bash
# The defense outside the pipeline, on the reference run (the fixtures' DeepID and its 300-image
# sets) and on a CSAW-2020 network (input scale 1/255), against predict on the clean and the
# triggered test sets:
# - ONNX: onnxruntime runs every `.onnx` the pipeline writes; each network's `class` and the
#   argmax of its `probabilities` are predict's class for that network, its top probability
#   predict's to 1e-5, every `repaired_*.onnx` returns exactly predict's `repaired_class`, and
#   onnx.checker accepts every file;
# - the Python package (`pip install ./python`, built by maturin): `fineprune.load(B, B')(x)`
#   is exactly predict's `repaired_class`, in the CSAW layout and NHWC; a missing file raises
#   FileNotFoundError naming it, a bad shape ValueError; `fineprune.defend` gives make's summary
#   and make's bytes, and runs nothing when everything is current;
# - the README's "Serve it" and "Use it from Python" code runs as written.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
fail() { echo "serve: FAILED: $*" >&2; exit 1; }

fixtures=${FINEPRUNE_FIXTURES:-../shared/fixtures}
if [ ! -f "$fixtures/deepid/sweep/test.h5" ]; then
  echo "serve: skipped: reference fixtures not found at $fixtures (set FINEPRUNE_FIXTURES=<folder> to run it)"
  exit 0
fi
fixtures=$(realpath "$fixtures")
source tests/venv.sh
py="$root/$venv/bin/python"
source tests/tiny.sh
dir=$(mktemp -d)
trap 'forget "$dir"/*/pipeline.toml; rm -rf "$dir"' EXIT

for run in "deepid/bd_weights.h5 1.0" "csaw2020/sunglasses_bd_weights.h5 0.00392156862745098"; do
  read -r weights scale <<<"$run"
  name=$(basename "$weights" .h5)
  mkdir -p "$dir/$name/models"
  ln -s "$fixtures/deepid/sweep" "$dir/$name/data"
  ln -s "$fixtures/$weights" "$dir/$name/models/bd_net.h5"
  cat > "$dir/$name/pipeline.toml" <<TOML
[data]
valid = "data/valid.h5"
test = "data/test.h5"
poisoned_test = "data/bd_test.h5"
[model]
weights = "models/bd_net.h5"
input_scale = $scale
[finetune]
steps = 20
[scan]
candidates = 2
reference = 2
steps = 10
batch_size = 8
TOML
  make all CONFIG="$dir/$name/pipeline.toml" >"$dir/$name/make.log" 2>&1 \
    || fail "make all with $weights: $(tail -1 "$dir/$name/make.log")"
  checks=()
  for onnx in "$dir/$name"/work/{prune,finetune}/bd_net_*.onnx; do
    for data in test bd_test; do
      ours="$dir/$name/$(basename "${onnx%.onnx}")-$data.csv"
      "$root/target/release/predict" --model "$dir/$name/work/ingest/model.safetensors" \
        --pruned "${onnx%.onnx}.safetensors" --output "$ours" "$dir/$name/data/$data.h5" >/dev/null \
        || fail "predict with $onnx"
      checks+=("$onnx" "$dir/$name/data/$data.h5" "$ours")
    done
  done
  "$py" - "$scale" "${checks[@]}" 2>"$dir/err" <<'PY' || fail "$(tail -1 "$dir/err")"
import csv, os, sys
import fineprune, h5py, numpy as np, onnx, onnxruntime as ort

scale, args = float(sys.argv[1]), sys.argv[2:]
b_path = os.path.join(os.path.dirname(args[0]), "..", "ingest", "model.safetensors")
for model_path, data_path, ours_path in zip(args[::3], args[1::3], args[2::3]):
    repaired_path = os.path.join(os.path.dirname(model_path), "repaired_" + os.path.basename(model_path))
    with h5py.File(data_path) as f:
        x = f["data"][:].astype(np.float32) * np.float32(scale)
    rows = list(csv.DictReader(open(ours_path)))
    pruned = np.array([int(r["pruned_class"]) for r in rows])
    repaired = np.array([int(r["repaired_class"]) for r in rows])
    for path in (model_path, repaired_path):
        onnx.checker.check_model(onnx.load(path), full_check=True)
    probabilities, classes = ort.InferenceSession(model_path).run(["probabilities", "class"], {"input": x})
    assert (classes == pruned).all(), (model_path, data_path, (classes != pruned).sum())
    assert (probabilities.argmax(1) == pruned).all(), model_path
    g = ort.InferenceSession(repaired_path).run(["class"], {"input": x})[0]
    assert g.dtype == np.int64 and (g == repaired).all(), (repaired_path, data_path, (g != repaired).sum())
    # The same G from Python, on raw pixels (it scales them itself), in both layouts.
    G = fineprune.load(b_path, model_path[: -len(".onnx")] + ".safetensors")
    with h5py.File(data_path) as f:
        raw = f["data"][:]
    for images in (raw, raw.transpose(0, 2, 3, 1)):
        classes = G(images)
        assert classes.dtype == np.int64 and (classes == repaired).all(), (model_path, data_path)
    assert (G.predict_proba(raw).argmax(1) == repaired).all(), model_path
try:
    fineprune.load(b_path, "no/such/network.safetensors")
    sys.exit("a missing file loaded")
except FileNotFoundError as e:
    assert "no/such/network.safetensors" in str(e), e
try:
    G(raw[:, :, :40])
    sys.exit("a bad shape was classified")
except ValueError as e:
    assert "(N, 3, 55, 47)" in str(e), e
print(f"{len(args) // 3} network and data pairs agree")
PY
done

# B's probabilities: the unpruned fine-tuned network against predict without a pruned network.
run="$dir/bd_weights"
"$root/target/release/predict" --model "$run/work/finetune/bd_net_finetuned.safetensors" \
  --output "$dir/finetuned.csv" "$run/data/test.h5" >/dev/null
"$py" - "$run/work/finetune/bd_net_finetuned.onnx" "$run/data/test.h5" "$dir/finetuned.csv" 2>"$dir/err" <<'PY' \
  || fail "$(tail -1 "$dir/err")"
import csv, sys
import h5py, numpy as np, onnxruntime as ort
with h5py.File(sys.argv[2]) as f:
    x = f["data"][:].astype(np.float32)
p = ort.InferenceSession(sys.argv[1]).run(["probabilities"], {"input": x})[0]
ours = np.array([float(r["probability"]) for r in csv.DictReader(open(sys.argv[3]))])
assert np.abs(p.max(1) - ours).max() < 1e-5, np.abs(p.max(1) - ours).max()
PY

# fineprune.defend: on the reference run's inputs and settings, in a work folder of its own, the
# summary make's evaluate wrote and the same bytes in every derived file; a second call runs
# nothing, and so does one on make's own work folder. Missing inputs and bad settings raise.
(cd "$run" && "$py" - "$run" 2>"$dir/err" <<'PY') || fail "fineprune.defend: $(tail -1 "$dir/err")"
import filecmp, os, sys
import fineprune, pyarrow.parquet as pq

run = sys.argv[1]
inputs = ["models/bd_net.h5", "data/valid.h5", "data/test.h5", "data/bd_test.h5"]
settings = dict(finetune={"steps": 20}, scan={"candidates": 2, "reference": 2, "steps": 10, "batch_size": 8})
phases = []
result = fineprune.defend(*inputs, work_dir="defended", progress=lambda *p: phases.append(p), **settings)
assert result.stages_run == ["ingest", "profile", "prune", "finetune", "scan", "evaluate", "report"], result
assert {p[0] for p in phases} >= {"profile", "prune", "sweep"} and phases[-1][1] == phases[-1][2], phases[-3:]
assert result.summary == pq.read_table("work/evaluate/summary.parquet").to_pylist()
for n in result.networks:
    for ext in (".safetensors", ".h5", ".onnx"):
        ours = str(n["path"])[: -len(".safetensors")] + ext
        assert filecmp.cmp(ours, ours.replace("/defended/", "/work/"), shallow=False), ours
assert filecmp.cmp("defended/reports/performance.csv", "reports/performance.csv", shallow=False)
assert fineprune.defend(*inputs, work_dir="defended", **settings).stages_run == []
assert fineprune.defend(*inputs, work_dir="work", reports_dir="reports", **settings).stages_run == []
assert result.network(4).name == "bd_net_fineprune_4_percent_threshold.safetensors"
assert result.network(None).name == "bd_net_finetuned.safetensors"
assert result.network(2, fine_pruned=False).name == "bd_net_prime_2_percent_threshold.safetensors"
for bad, error, words in [
    (lambda: fineprune.load(str(result.backdoored), str(result.backdoored)), ValueError, "b_prime_path is the same file as b_path"),
    (lambda: fineprune.defend("models/none.h5", *inputs[1:]), FileNotFoundError, "models/none.h5"),
    (lambda: fineprune.defend(*inputs, work_dir="defended", finetune={"stpes": 3}), ValueError, "stpes"),
    (lambda: fineprune.defend(*inputs[:2]), ValueError, "test and poisoned_test"),
]:
    try:
        bad()
        sys.exit(f"no {error.__name__} for {words}")
    except error as e:
        assert words in str(e), e
PY

# fineprune.defend on the tiny built-in benchmark's files (copied, so they count as user data)
# with the tiny configuration's settings: make's summary.
tiny="$dir/tiny"
mkdir -p "$tiny"
tiny_config "$tiny/pipeline.toml" 20
make all CONFIG="$tiny/pipeline.toml" >"$tiny/make.log" 2>&1 || fail "make all on the tiny benchmark"
mkdir -p "$tiny/user"
cp "$tiny"/data/*.h5 "$tiny"/models/bd_net.h5 "$tiny/user/"
(cd "$tiny" && "$py" - 2>"$dir/err" <<'PY') || fail "fineprune.defend on the tiny benchmark: $(tail -1 "$dir/err")"
import fineprune, pyarrow.parquet as pq, tomllib
settings = tomllib.load(open("pipeline.toml", "rb"))
result = fineprune.defend("user/bd_net.h5", "user/valid.h5", "user/test.h5", "user/bd_test.h5",
                          work_dir="defended", thresholds=settings["prune"]["thresholds"],
                          finetune=settings["finetune"], scan=settings["scan"])
assert result.summary == pq.read_table("work/evaluate/summary.parquet").to_pylist()
PY

# The README's serving and Python code, as written, from the reference run's folder; each
# example's G must be predict's.
for section in "Serve it" "Use it from Python"; do
  file="$dir/readme_${section// /_}.py"
  awk -v s="### $section" '$0 == s {on = 1; next} on && /^##/ {on = 0}
       on && /^```python$/ {file = "'"$file"'"; next}
       on && /^```$/ {file = ""; next}
       file != "" {print > file}' README.md
  [ -f "$file" ] || fail "the README should have a Python example under \"$section\""
  if [ "$section" = "Serve it" ]; then
    pair="work/ingest/model.safetensors work/finetune/bd_net_fineprune_4_percent_threshold.safetensors"
    echo "pair = '$pair'.split()" >> "$file"
  else
    echo "pair = [str(result.backdoored), str(result.network(4))]" >> "$file"
  fi
  cat >> "$file" <<'PY'
import csv, subprocess, sys
out = subprocess.run([sys.argv[1], "--model", pair[0], "--pruned", pair[1], "data/test.h5"],
                     capture_output=True, text=True, check=True).stdout
assert [int(r["repaired_class"]) for r in csv.DictReader(out.splitlines())] == classes.tolist()
PY
  (cd "$run" && "$py" "$file" "$root/target/release/predict" >/dev/null 2>"$dir/err") \
    || fail "README example under \"$section\": $(tail -1 "$dir/err")"
done
echo "serve: every ONNX export, fineprune.load and fineprune.defend agree with predict and make; the README's code runs"
