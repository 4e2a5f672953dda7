# Shared by the make-level tests (sourced): a tiny built-in synthetic benchmark configuration,
# and removing make's files for the configurations a test used.

# tiny_config PATH [FINETUNE_STEPS]: a configuration whose data do not exist yet, so make
# builds the synthetic benchmark beside it (8 identities, seconds from nothing).
tiny_config() {
  cat > "$1" <<TOML
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
valid_per_identity = 8
test_per_identity = 8
epochs = 2
batch_size = 16
[finetune]
steps = ${2:-4}
[scan]
candidates = 2
reference = 2
steps = 10
batch_size = 8
TOML
}

# forget CONFIG...: make's links and variables for each configuration (target/make/<id>).
forget() {
  local c id
  for c in "$@"; do
    id=$(realpath -m -- "$c" | sha256sum | cut -c1-16)
    rm -rf "target/make/$id" "target/make/$id.mk"
  done
}
