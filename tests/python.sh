#!/usr/bin/env bash
# The results from Python: on a tiny built-in benchmark, every Keras .h5 the pipeline exports
# opens with keras.models.load_model (Keras 3, JAX backend, no TensorFlow) and gives the classes
# `predict` gives; every image table shows `image_shape` to pyarrow.parquet.read_metadata; and
# the README's Python code runs as written (its PyTorch part where torch is installed).
#
# The Python packages, the fineprune package among them, come from tests/venv.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
fail() { echo "python: FAILED: $*" >&2; exit 1; }

source tests/venv.sh
py="$root/$venv/bin/python"
export KERAS_BACKEND=jax

dir=$(mktemp -d)
config="$dir/tiny.toml"
source tests/tiny.sh
trap 'forget "$config"; rm -rf "$dir"' EXIT
tiny_config "$config" 20
make all CONFIG="$config" >/dev/null 2>&1 || fail "make all on the tiny benchmark"

# Every exported network: Keras's classes are predict's (bar near-ties of the top two).
checks=()
for h5 in "$dir"/work/prune/*.h5 "$dir"/work/finetune/*.h5; do
  [ -f "$h5" ] || fail "no Keras files exported"
  for data in test bd_test; do
    ours="$dir/$(basename "${h5%.h5}")-$data.csv"
    "$root/target/release/predict" --model "${h5%.h5}.safetensors" --output "$ours" \
      "$dir/data/$data.h5" >/dev/null || fail "predict on $h5"
    checks+=("$h5" "$dir/data/$data.h5" "$ours")
  done
done
"$py" - "${checks[@]}" 2>"$dir/err" <<'PY' || fail "$(tail -1 "$dir/err")"
import sys, csv
import h5py, keras, numpy as np
args = sys.argv[1:]
for model_path, data_path, ours_path in zip(args[::3], args[1::3], args[2::3]):
    model = keras.models.load_model(model_path)
    with h5py.File(data_path) as f:
        x = f["data"][:].transpose(0, 2, 3, 1)
    p = model.predict(x, verbose=0)
    ours = np.array([int(r["class"]) for r in csv.DictReader(open(ours_path))])
    top2 = np.sort(p, axis=1)[:, -2:]
    differ = (p.argmax(1) != ours) & (top2[:, 1] - top2[:, 0] > 1e-5)
    if differ.any():
        sys.exit(f"{model_path}: Keras classifies {differ.sum()} of {len(ours)} images otherwise")
print(f"{len(args) // 3} model and data pairs agree")
PY

# Every image table shows its shape to Parquet readers.
"$py" - "$dir"/work/ingest/*.parquet 2>"$dir/err" <<'PY' || fail "$(tail -1 "$dir/err")"
import sys
import pyarrow.parquet as pq
for path in sys.argv[1:]:
    meta = pq.read_metadata(path).metadata
    assert meta[b"image_shape"] == b"[3,55,47]", (path, meta)
PY

# The README's Python examples, as written, from the run's folder.
awk '/^### Use the results from Python/ {on = 1; next} on && /^## / {on = 0}
     on && /^```python$/ {n++; file = sprintf("'"$dir"'/readme_%d.py", n); next}
     on && /^```$/ {file = ""; next}
     file != "" {print > file}' README.md
[ -f "$dir/readme_3.py" ] || fail "the README should have three Python examples (Keras, tables, PyTorch)"
# What each example computes must be the pipeline's own figures.
cat >> "$dir/readme_1.py" <<'PY'
s = __import__("pandas").read_csv("reports/summary.csv")
want = s[(s.network == "fine_pruned") & (s.threshold_percent == 4)].clean_test_accuracy.item()
assert abs(accuracy * 100 - want) <= 0.006, (accuracy, want)
PY
cat >> "$dir/readme_2.py" <<'PY'
import h5py
with h5py.File("data/test.h5") as f:
    assert (x == f["data"][:]).all()
assert summary.network.str.startswith("repaired").sum() > 0
PY
cat >> "$dir/readme_3.py" <<'PY'
import csv, subprocess
model = "work/finetune/bd_net_fineprune_4_percent_threshold.safetensors"
predicted = subprocess.run([sys.argv[1], "--model", model, "data/test.h5"],
                           capture_output=True, text=True, check=True).stdout
assert [int(r["class"]) for r in csv.DictReader(predicted.splitlines())] == classes.tolist()
PY
sed -i '1i import sys' "$dir/readme_3.py"
for example in "$dir"/readme_*.py; do
  if grep -q "^import.*torch" "$example" && ! "$py" -c "import torch" 2>/dev/null; then
    echo "python: skipped the README's PyTorch example: torch is not in $venv (FINEPRUNE_TEST_TORCH=1 installs it)"
    continue
  fi
  (cd "$dir" && "$py" "$example" "$root/target/release/predict" >/dev/null 2>"$dir/err") \
    || fail "README example $(basename "$example"): $(tail -1 "$dir/err")"
done
echo "python: Keras exports, Parquet metadata and README examples pass"
