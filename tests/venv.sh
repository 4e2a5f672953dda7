# The Python test environment, from the project root: sourced by the Python-level tests (after
# they define `fail`) or run by `make bench`.
# Keras, JAX, h5py, pyarrow, pandas, safetensors, ONNX, onnxruntime and maturin (which builds
# python/), installed once into target/python (about 0.8 GB) and reused; FINEPRUNE_TEST_TORCH=1
# adds PyTorch (about 6 GB with its CUDA libraries) so the README's PyTorch example runs too.
declare -F fail >/dev/null || fail() { echo "venv: FAILED: $*" >&2; exit 1; }
venv=target/python
packages="keras jax h5py pyarrow pandas safetensors numpy onnx onnxruntime maturin${FINEPRUNE_TEST_TORCH:+ torch}"
if [ "$(cat "$venv/.packages" 2>/dev/null)" != "$packages" ]; then
  command -v python3 >/dev/null || fail "python3 not found: install Python 3.10 or newer"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
        || fail "could not install python3-venv with apt-get"
      rm -rf "$venv"
      python3 -m venv "$venv" || fail "python3 -m venv failed"
    else
      fail "python3 -m venv failed: install python3-venv"
    fi
  fi
  echo "python: installing $packages into $venv (once)"
  "$venv/bin/pip" install -q --disable-pip-version-check $packages \
    || fail "could not install $packages from the package index"
  echo "$packages" > "$venv/.packages"
fi
# The fineprune package itself, built from python/ by maturin (cargo reuses its builds).
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/pip" install -q --disable-pip-version-check \
  --no-build-isolation ./python >"$venv/install.log" 2>&1 \
  || fail "pip install ./python: $(grep -m1 -i error "$venv/install.log")"
