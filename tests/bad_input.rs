//! Bad input gets one clear error naming the file and the problem, a non-zero exit status, and
//! no output left behind.

use fineprune_tests::{
    files_below, fixtures, missing_fixtures, run, stderr, sweep_config, write_config,
};
use std::path::{Path, PathBuf};

/// Writes a CSAW-style file with the given `data` shape and values and `label` values.
fn write_h5(path: &Path, shape: &[usize], fill: impl Fn(usize) -> f32, labels: Option<Vec<f64>>) {
    let file = hdf5::File::create(path).unwrap();
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(fill).collect();
    let arr = ndarray::ArrayD::from_shape_vec(shape.to_vec(), data).unwrap();
    file.new_dataset_builder()
        .with_data(&arr)
        .create("data")
        .unwrap();
    if let Some(l) = labels {
        file.new_dataset_builder()
            .with_data(&l)
            .create("label")
            .unwrap();
    }
    file.close().unwrap();
}

fn pixel(i: usize) -> f32 {
    (i * 7 % 256) as f32
}

/// A config over the reference sweep data, with the valid set replaced by `valid`.
fn with_valid(dir: &Path, valid: &Path) -> PathBuf {
    let f = fixtures().join("deepid");
    let s = f.join("sweep");
    write_config(
        dir,
        valid,
        &s.join("test.h5"),
        &s.join("bd_test.h5"),
        &f.join("bd_weights.h5"),
        "",
    )
}

/// Runs ingest on a broken validation file and checks the error.
fn expect_ingest_error(make: impl FnOnce(&Path), needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let valid = dir.path().join("valid.h5");
    make(&valid);
    let config = with_valid(dir.path(), &valid);
    let o = run("ingest", &["--config", config.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("valid.h5"), "names the file: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    assert!(
        files_below(&dir.path().join("work")).is_empty(),
        "left {:?}",
        files_below(&dir.path().join("work"))
    );
}

const N: usize = 4;
fn good_labels() -> Option<Vec<f64>> {
    Some(vec![0.0, 1.0, 2.0, 3.0])
}

#[test]
fn missing_file() {
    if missing_fixtures() {
        return;
    }
    expect_ingest_error(|_| {}, &["No such file"]);
}

#[test]
fn not_hdf5() {
    if missing_fixtures() {
        return;
    }
    expect_ingest_error(
        |p| std::fs::write(p, "hello").unwrap(),
        &["not an HDF5 file"],
    );
}

#[test]
fn missing_datasets() {
    if missing_fixtures() {
        return;
    }
    expect_ingest_error(
        |p| write_h5(p, &[N, 3, 55, 47], pixel, None),
        &["no `label` dataset"],
    );
    expect_ingest_error(
        |p| {
            let f = hdf5::File::create(p).unwrap();
            f.new_dataset_builder()
                .with_data(&[1.0f64])
                .create("label")
                .unwrap();
            f.close().unwrap();
        },
        &["no `data` dataset"],
    );
}

#[test]
fn channels_last_layout_is_named() {
    if missing_fixtures() {
        return;
    }
    expect_ingest_error(
        |p| write_h5(p, &[N, 55, 47, 3], pixel, good_labels()),
        &["channels last", "N x 3 x 55 x 47"],
    );
}

#[test]
fn wrong_rank() {
    if missing_fixtures() {
        return;
    }
    expect_ingest_error(
        |p| write_h5(p, &[N, 7755], pixel, good_labels()),
        &["shape [4, 7755]"],
    );
}

#[test]
fn label_count_differs() {
    if missing_fixtures() {
        return;
    }
    expect_ingest_error(
        |p| write_h5(p, &[N, 3, 55, 47], pixel, Some(vec![0.0, 1.0])),
        &["2 entries", "4 images"],
    );
}

#[test]
fn pixels_outside_0_255() {
    if missing_fixtures() {
        return;
    }
    for bad in [300.0, -1.0] {
        expect_ingest_error(
            |p| {
                write_h5(
                    p,
                    &[N, 3, 55, 47],
                    |i| if i == 9000 { bad } else { pixel(i) },
                    good_labels(),
                )
            },
            &["0..255", &format!("{bad}")],
        );
    }
}

#[test]
fn non_finite_pixels() {
    if missing_fixtures() {
        return;
    }
    expect_ingest_error(
        |p| {
            write_h5(
                p,
                &[N, 3, 55, 47],
                |i| if i == 9000 { f32::NAN } else { pixel(i) },
                good_labels(),
            )
        },
        &["image 1", "non-finite pixel (NaN)"],
    );
    expect_ingest_error(
        |p| {
            write_h5(
                p,
                &[N, 3, 55, 47],
                |i| if i == 5 { f32::INFINITY } else { pixel(i) },
                good_labels(),
            )
        },
        &["image 0", "non-finite"],
    );
}

#[test]
fn bad_labels() {
    if missing_fixtures() {
        return;
    }
    let with =
        |l: f64| move |p: &Path| write_h5(p, &[N, 3, 55, 47], pixel, Some(vec![0.0, l, 2.0, 3.0]));
    expect_ingest_error(
        with(-1.0),
        &["image 1", "-1", "outside the model's classes 0..1283"],
    );
    expect_ingest_error(with(1.5), &["image 1", "1.5", "not an integer"]);
    expect_ingest_error(with(1283.0), &["1283", "outside the model's classes"]);
}

#[test]
fn empty_dataset() {
    if missing_fixtures() {
        return;
    }
    expect_ingest_error(
        |p| write_h5(p, &[0, 3, 55, 47], pixel, Some(vec![])),
        &["empty"],
    );
}

#[test]
fn images_claimed_but_not_stored() {
    if missing_fixtures() {
        return;
    }
    // A file of a few KB that declares ten million images (contiguous, never written).
    expect_ingest_error(
        |p| {
            let f = hdf5::File::create(p).unwrap();
            let n = 10_000_000;
            f.new_dataset::<f32>()
                .shape([n, 3, 55, 47])
                .create("data")
                .unwrap();
            f.new_dataset::<f64>().shape([n]).create("label").unwrap();
            f.close().unwrap();
        },
        &["`data` claims 10000000 images", "bytes"],
    );
    // Chunked, one image per chunk, only the first two images written.
    expect_ingest_error(
        |p| {
            let f = hdf5::File::create(p).unwrap();
            let data = f
                .new_dataset::<f32>()
                .shape([N, 3, 55, 47])
                .chunk([1, 3, 55, 47])
                .deflate(1)
                .create("data")
                .unwrap();
            let two = ndarray::Array4::<f32>::from_elem((2, 3, 55, 47), 9.0);
            data.write_slice(&two, ndarray::s![0..2, .., .., ..])
                .unwrap();
            f.new_dataset_builder()
                .with_data(&good_labels().unwrap())
                .create("label")
                .unwrap();
            f.close().unwrap();
        },
        &["`data` claims 4 images", "2 of its 4 chunks"],
    );
}

#[test]
fn validation_set_too_small_for_the_holdout_fails_at_ingest() {
    if missing_fixtures() {
        return;
    }
    let one = |p: &Path| write_h5(p, &[1, 3, 55, 47], pixel, Some(vec![5.0]));
    expect_ingest_error(one, &["1 validation image", "needs at least 2"]);
    // Without a hold-out one image is enough to fine-tune on.
    let dir = tempfile::tempdir().unwrap();
    let valid = dir.path().join("valid.h5");
    one(&valid);
    let config = with_valid(dir.path(), &valid);
    let text = std::fs::read_to_string(&config).unwrap() + "[finetune]\nholdout = 0.0\n";
    std::fs::write(&config, text).unwrap();
    let o = run("ingest", &["--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Copies the real weights file, changing it with `edit`.
fn broken_weights(edit: impl FnOnce(&hdf5::File)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bd_net.h5");
    std::fs::copy(fixtures().join("deepid/bd_weights.h5"), &path).unwrap();
    let mut perm = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&path, perm).unwrap();
    let file = hdf5::File::open_rw(&path).unwrap();
    edit(&file);
    file.close().unwrap();
    (dir, path)
}

fn expect_weights_error(dir: &Path, weights: &Path, needles: &[&str]) {
    let s = fixtures().join("deepid/sweep");
    let config = write_config(
        dir,
        &s.join("valid.h5"),
        &s.join("test.h5"),
        &s.join("bd_test.h5"),
        weights,
        "",
    );
    let o = run("ingest", &["--config", config.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bd_net.h5"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    assert!(files_below(&dir.join("work")).is_empty());
}

#[test]
fn weights_missing_a_layer() {
    if missing_fixtures() {
        return;
    }
    let (dir, path) = broken_weights(|f| f.unlink("conv_3").unwrap());
    expect_weights_error(dir.path(), &path, &["layer conv_3"]);
}

#[test]
fn weights_with_a_wrong_kernel_shape() {
    if missing_fixtures() {
        return;
    }
    let (dir, path) = broken_weights(|f| {
        f.unlink("fc_2/fc_2/kernel:0").unwrap();
        f.group("fc_2/fc_2")
            .unwrap()
            .new_dataset::<f32>()
            .shape([960, 100])
            .create("kernel:0")
            .unwrap();
    });
    expect_weights_error(
        dir.path(),
        &path,
        &["layer fc_2", "[960, 100]", "[960, 160]"],
    );
}

/// Config errors exit with status 2 and name the file and key.
fn expect_config_error(extra: &str, stage: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let config = sweep_config(dir.path(), extra);
    let o = run(stage, &["--config", config.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("pipeline.toml"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
}

#[test]
fn config_errors() {
    if missing_fixtures() {
        return;
    }
    expect_config_error(
        "[prune]\nthreshold = [2]\n",
        "prune",
        &["unknown field `threshold`"],
    );
    expect_config_error(
        "[prune]\nthresholds = [0]\n",
        "prune",
        &["0 is not an accuracy drop in [0.01, 100]"],
    );
    expect_config_error("[prune]\nthresholds = [150]\n", "prune", &["150"]);
    expect_config_error(
        "[profile]\nstatistic = \"pool3_mean\"\n",
        "profile",
        &["pool3_mean", "pool_3_mean"],
    );
    expect_config_error("[finetune]\nsteps = 0\n", "finetune", &["finetune.steps"]);
    expect_config_error(
        "[finetune]\nlearning_rate = -0.1\n",
        "finetune",
        &["finetune.learning_rate"],
    );
    expect_config_error(
        "[finetune]\nholdout = 1.0\n",
        "finetune",
        &["finetune.holdout must be in [0, 0.5]"],
    );
    expect_config_error(
        "[finetune]\nschedule = \"exponential\"\n",
        "finetune",
        &["exponential", "cosine"],
    );
    expect_config_error(
        "[finetune]\noptimizer = \"rmsprop\"\n",
        "finetune",
        &["rmsprop", "adamw"],
    );
    expect_config_error(
        "[finetune]\nmomentum = -0.5\n",
        "finetune",
        &["finetune.momentum must be in [0, 1)"],
    );
    expect_config_error(
        "[finetune]\nweight_decay = -1e-4\n",
        "finetune",
        &["finetune.weight_decay"],
    );
    expect_config_error(
        "[finetune]\nreinit = [\"fc_3\"]\n",
        "finetune",
        // The table, the line, the misspelt name and the layers there are.
        &["[finetune]", "line 11", "fc_3", "fc_1", "output"],
    );
    expect_config_error(
        "[finetune]\ntrain_from = \"output\"\n",
        "finetune",
        &["finetune.train_from"],
    );
    expect_config_error(
        "[synth]\nattack = \"lipstick\"\n",
        "synth",
        &["lipstick", "checkerboard"],
    );
    expect_config_error(
        "[synth]\nattack = \"prune_aware\"\n[synth.prune_aware]\ndecoys = 60\n",
        "synth",
        &["synth.prune_aware.decoys"],
    );
    expect_config_error(
        "[synth.prune_aware]\ntrigger = \"lipstick\"\n",
        "synth",
        &["lipstick", "checkerboard"],
    );
    expect_config_error(
        "[synth]\nattack = \"multi_target\"\n[synth.multi_target]\ntriggers = [\"blend\", \"sunglasses\"]\ntargets = [3]\n",
        "synth",
        &["synth.multi_target", "one target per trigger"],
    );
    expect_config_error(
        "[synth]\nattack = \"multi_target\"\npoison_fraction = 0.6\n",
        "synth",
        &["synth.poison_fraction"],
    );
    expect_config_error(
        "[finetune]\nfeature_shift = -1\n",
        "finetune",
        &["finetune.feature_shift"],
    );
    expect_config_error(
        "[finetune]\nfeature_shift = 0.2\nreinit = []\n",
        "finetune",
        &["finetune.feature_shift", "reinit"],
    );
    expect_config_error("[bogus]\nx = 1\n", "ingest", &["unknown field `bogus`"]);
    // The recipe's keys sit beside finetune's own: a misspelling of either is refused.
    for key in ["stpes", "holdot"] {
        expect_config_error(
            &format!("[finetune]\nsteps = 5\n{key} = 1\n"),
            "finetune",
            &[
                &format!("[finetune] unknown field `{key}`"),
                "`steps`",
                "`holdout`",
            ],
        );
    }
    expect_config_error(
        "[finetune]\ntrain_from = \"conv3\"\n",
        "finetune",
        &["unknown variant `conv3`", "conv_3"],
    );
}

#[test]
fn corrupt_parquet_and_safetensors() {
    if missing_fixtures() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = sweep_config(dir.path(), "");
    let c = config.to_str().unwrap();
    let ingest = dir.path().join("work/ingest");
    std::fs::create_dir_all(&ingest).unwrap();
    std::fs::write(
        ingest.join("model.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage",
    )
    .unwrap();
    let o = run("profile", &["--config", c]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("model.safetensors"), "{}", stderr(&o));

    // Not the pipeline's file: ingest does not replace it.
    let o = run("ingest", &["--config", c]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("did not write"), "{}", stderr(&o));
    std::fs::remove_file(ingest.join("model.safetensors")).unwrap();
    assert!(run("ingest", &["--config", c]).status.success());
    std::fs::write(ingest.join("valid.parquet"), b"PAR1 not really").unwrap();
    let o = run("profile", &["--config", c]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("valid.parquet"), "{}", stderr(&o));
    assert!(!dir.path().join("work/profile/activations.parquet").exists());
}

#[test]
fn outputs_of_another_model_are_refused() {
    if missing_fixtures() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = sweep_config(dir.path(), "");
    let c = config.to_str().unwrap();
    for stage in ["ingest", "profile"] {
        assert!(run(stage, &["--config", c]).status.success());
    }
    // Re-ingest a different network: the profile no longer belongs to the model.
    let other = fixtures().join("csaw2020/anonymous_1_bd_weights.h5");
    assert!(run(
        "ingest",
        &["--config", c, "--weights", other.to_str().unwrap()]
    )
    .status
    .success());
    let o = run("prune", &["--config", c]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("different model"), "{}", stderr(&o));
}

/// Storage variants a CSAW file may come in all ingest to the same table: chunked with
/// deflate and shuffle, chunked with LZF, integer labels, labels as an (N, 1) column.
#[test]
fn chunked_compressed_and_integer_label_files_ingest_alike() {
    if missing_fixtures() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = 5;
    let pixels: Vec<f32> = (0..n * 7755).map(pixel).collect();
    let arr = ndarray::Array4::from_shape_vec((n, 3, 55, 47), pixels).unwrap();
    type Write<'a> = &'a dyn Fn(&hdf5::File);
    let variants: [(&str, Write); 3] = [
        ("deflate", &|f| {
            f.new_dataset_builder()
                .with_data(&arr)
                .chunk((2, 3, 55, 47))
                .shuffle()
                .deflate(6)
                .create("data")
                .unwrap();
            f.new_dataset_builder()
                .with_data(&[0i64, 1, 2, 3, 4])
                .create("label")
                .unwrap();
        }),
        ("lzf", &|f| {
            f.new_dataset_builder()
                .with_data(&arr)
                .chunk((3, 3, 55, 47))
                .lzf()
                .create("data")
                .unwrap();
            let col = ndarray::Array2::from_shape_vec((5, 1), vec![0u8, 1, 2, 3, 4]).unwrap();
            f.new_dataset_builder()
                .with_data(&col)
                .create("label")
                .unwrap();
        }),
        ("plain", &|f| {
            f.new_dataset_builder()
                .with_data(&arr)
                .create("data")
                .unwrap();
            f.new_dataset_builder()
                .with_data(&[0.0f64, 1.0, 2.0, 3.0, 4.0])
                .create("label")
                .unwrap();
        }),
    ];
    let mut tables = Vec::new();
    for (name, write) in variants {
        let path = dir.path().join(format!("{name}.h5"));
        let f = hdf5::File::create(&path).unwrap();
        write(&f);
        f.close().unwrap();
        let out = dir.path().join(name);
        let o = run(
            "ingest",
            &[
                "--config",
                with_valid(dir.path(), &path).to_str().unwrap(),
                "--output-dir",
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let batch = formats::source::Images::open(&out.join("valid.parquet"), 1283)
            .unwrap()
            .read_all()
            .unwrap();
        assert_eq!(batch.labels, [0, 1, 2, 3, 4], "{name}");
        tables.push(batch.pixels);
    }
    assert!(tables.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(tables[0][..3], [0.0, 7.0, 14.0]);
}

/// Pixels that are not all integers in 0..255 are kept exactly, as Float32, even when the first
/// such pixel comes after whole batches were already converted to bytes.
#[test]
fn fractional_pixels_ingest_exactly_as_float32() {
    if missing_fixtures() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = 300;
    let path = dir.path().join("valid.h5");
    let value = |i: usize| {
        if i == 290 * 7755 + 11 {
            254.5
        } else {
            pixel(i)
        }
    };
    let labels = (0..n).map(|i| (i % 7) as f64).collect();
    write_h5(&path, &[n, 3, 55, 47], value, Some(labels));
    let out = dir.path().join("out");
    let config = with_valid(dir.path(), &path);
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--output-dir",
        out.to_str().unwrap(),
    ];
    let o = run("ingest", &[&args[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(json.contains(r#""pixel_type":"float32""#), "{json}");
    let batch = formats::source::Images::open(&out.join("valid.parquet"), 1283)
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(batch.pixels, (0..n * 7755).map(value).collect::<Vec<_>>());
    assert_eq!(batch.labels[..8], [0, 1, 2, 3, 4, 5, 6, 0]);
}
