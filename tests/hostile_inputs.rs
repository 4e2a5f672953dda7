//! Hostile inputs: FIFOs, devices and sockets where files belong, symbolic link loops in photo
//! folders, networks given in the wrong role, and files that are well formed but wrong in a way
//! the libraries would report unclearly (an HDF5 filter this build lacks, string labels, a
//! layer or tensor DeepID does not have, a class count that contradicts the output layer).
//! Each gives one line naming the file and the problem, promptly, and changes no file. The
//! networks and data are small synthetic ones, so no fixtures are needed.

use fineprune_tests::{run_within, stderr, write_config};
use formats::csaw::Batch;
use model::weights::{Layer, Param, Pruned};
use model::{DeepIdWeights, Layers, Provenance};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every run must end well within this; a hang fails the test instead of blocking it.
const LIMIT: Duration = Duration::from_secs(10);
const CLASSES: usize = 2;
const IMAGES: usize = 10;

/// A small DeepID network B with deterministic weights.
fn network() -> DeepIdWeights {
    let mut seed = 1u64;
    let mut value = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    };
    let mut param = |shape: Vec<usize>| {
        let n = shape.iter().product();
        Param::new(shape, (0..n).map(|_| value()).collect())
    };
    let layers = Layers::from_fn(|name| {
        let shape = name.weight_shape(CLASSES);
        let bias = param(vec![shape[0]]);
        Layer {
            weight: param(shape),
            bias,
        }
    });
    DeepIdWeights {
        layers,
        provenance: Provenance::new("b.h5".into(), "0".repeat(64), 1.0),
    }
}

/// B' made from `b` as the prune stage makes it.
fn pruned(b: &DeepIdWeights) -> DeepIdWeights {
    let mut p = b.clone();
    p.prune_conv3(&[3, 7]);
    p.provenance.pruned = Some(Pruned {
        channels: vec![3, 7],
        threshold_percent: Some(4.0),
        backdoored: b.fingerprint(),
    });
    p
}

fn images() -> Batch {
    Batch {
        pixels: (0..IMAGES * formats::csaw::IMAGE_LEN)
            .map(|i| (i * 7 % 256) as f32)
            .collect(),
        labels: (0..IMAGES).map(|i| (i % CLASSES) as i32).collect(),
        true_labels: None,
    }
}

fn png(path: &Path, shade: u8) {
    image::RgbImage::from_pixel(47, 55, image::Rgb([shade, 80, 160]))
        .save(path)
        .unwrap();
}

fn mkfifo(path: &Path) {
    let o = std::process::Command::new("mkfifo")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mkfifo: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// What a folder holds, links not followed and only regular files read (a FIFO would block).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let t = std::fs::symlink_metadata(&p).unwrap().file_type();
            let what = if t.is_dir() {
                stack.push(p.clone());
                "folder".to_string()
            } else if t.is_symlink() {
                format!("link to {}", std::fs::read_link(&p).unwrap().display())
            } else if t.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                format!("{} bytes, crc {:08x}", bytes.len(), checksum(&bytes))
            } else {
                format!("{t:?}")
            };
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), what);
        }
    }
    out
}

fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c9dc5u32, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x01000193)
    })
}

/// A folder with B and B' (safetensors and Keras full models) and a CSAW file.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let b = network();
        for (w, name) in [(&b, "b"), (&pruned(&b), "p")] {
            let path = dir.path().join(format!("{name}.safetensors"));
            formats::weights::save_derived(w, &b, &path).unwrap();
        }
        formats::csaw::write_csaw(&dir.path().join("data.h5"), &images(), false).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
}

/// Runs `stage`, which must fail with `code` and one stderr line naming `name` and saying
/// each of `needles`, and leave every file below `dir` as it was.
fn refused(stage: &str, args: &[&str], dir: &Path, code: i32, name: &str, needles: &[&str]) {
    let before = snapshot(dir);
    let o = run_within(stage, args, LIMIT);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(name), "{name:?} not in: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(snapshot(dir), before, "{stage} {args:?} changed files");
}

#[test]
fn predict_refuses_fifos_devices_and_sockets_by_name() {
    let s = Scratch::new();
    let d = s.dir.path();
    mkfifo(&s.path("fifo.safetensors"));
    mkfifo(&s.path("fifo.h5"));
    mkfifo(&s.path("fifo.png"));
    std::os::unix::fs::symlink("/dev/zero", s.path("zero.safetensors")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(s.path("socket.h5")).unwrap();
    let (b, data) = (s.arg("b.safetensors"), s.arg("data.h5"));
    let fifo = "not a regular file (a FIFO)";
    for model in ["fifo.safetensors", "fifo.h5"] {
        let args = ["--model", &s.arg(model), &data];
        refused("predict", &args, d, 1, model, &[fifo]);
    }
    let args = ["--model", &s.arg("zero.safetensors"), &data];
    let device = "not a regular file (a character device)";
    refused("predict", &args, d, 1, "zero.safetensors", &[device]);
    let args = ["--model", &b, "--pruned", &s.arg("fifo.safetensors"), &data];
    refused("predict", &args, d, 1, "fifo.safetensors", &[fifo]);
    let args = ["--model", &b, &s.arg("fifo.png")];
    refused("predict", &args, d, 1, "fifo.png", &[fifo]);
    let args = ["--model", &b, &s.arg("socket.h5")];
    let socket = "not a regular file (a socket)";
    refused("predict", &args, d, 1, "socket.h5", &[socket]);
}

/// A folder of photos with links back up the tree gives each photo once, in name order; a
/// FIFO under another name is passed over, one under a photo's name refused by name.
#[test]
fn predict_walks_folders_once_without_blocking() {
    let s = Scratch::new();
    let faces = s.path("faces");
    std::fs::create_dir_all(faces.join("sub")).unwrap();
    png(&faces.join("a.png"), 10);
    png(&faces.join("b.png"), 20);
    png(&faces.join("sub/c.png"), 30);
    std::os::unix::fs::symlink(".", faces.join("loop")).unwrap();
    std::os::unix::fs::symlink("..", faces.join("sub/back")).unwrap();
    std::os::unix::fs::symlink("a.png", faces.join("same.png")).unwrap();
    mkfifo(&faces.join("pipe"));
    let b = s.arg("b.safetensors");
    let before = snapshot(s.dir.path());
    let o = run_within("predict", &["--model", &b, faces.to_str().unwrap()], LIMIT);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = String::from_utf8(o.stdout).unwrap();
    let inputs: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let at = |name: &str| faces.join(name).to_str().unwrap().to_string();
    assert_eq!(inputs, [at("a.png"), at("b.png"), at("sub/c.png")]);
    assert_eq!(snapshot(s.dir.path()), before);

    mkfifo(&faces.join("sub/d.png"));
    let args = ["--model", &b, faces.to_str().unwrap()];
    let fifo = "not a regular file (a FIFO)";
    refused("predict", &args, s.dir.path(), 1, "sub/d.png", &[fifo]);
}

#[test]
fn predict_refuses_networks_in_the_wrong_role() {
    let s = Scratch::new();
    let d = s.dir.path();
    let data = s.arg("data.h5");
    let rule = "the pruned network must be a network derived from --model";
    std::os::unix::fs::symlink(s.path("b.safetensors"), s.path("link.safetensors")).unwrap();
    std::fs::copy(s.path("b.safetensors"), s.path("copy.safetensors")).unwrap();
    let cases = [
        ("b.safetensors", "b.safetensors", "same file"),
        ("b.safetensors", "link.safetensors", "same file"),
        ("b.safetensors", "copy.safetensors", "same network"),
        ("p.safetensors", "b.safetensors", "swapped"),
        ("p.h5", "b.safetensors", "swapped"),
    ];
    for (model, pruned, needle) in cases {
        let args = ["--model", &s.arg(model), "--pruned", &s.arg(pruned), &data];
        // The file named is the one in the wrong role: B' given as B, or B given as B'.
        let named = if needle == "swapped" { model } else { pruned };
        refused("predict", &args, d, 2, named, &[needle, rule]);
    }
    // The right way round works, with B' as safetensors or as the Keras export.
    for pruned in ["p.safetensors", "p.h5"] {
        let args = ["--model", &s.arg("b.h5"), "--pruned", &s.arg(pruned), &data];
        let o = run_within("predict", &args, LIMIT);
        assert!(o.status.success(), "{pruned}: {}", stderr(&o));
    }
}

/// Rewrites a safetensors file with `edit`, which gets its tensors (name, shape, float32 values
/// as bytes) and metadata.
fn edit_safetensors(
    from: &Path,
    to: &Path,
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>, &mut BTreeMap<String, String>),
) {
    let buf = std::fs::read(from).unwrap();
    let (tensors, mut meta) = formats::weights::deserialize(&buf, from).unwrap();
    let views = tensors.tensors();
    // Every DeepID tensor is float32: the edited ones are written with the same type.
    let dtype = views[0].1.dtype();
    let mut list = views
        .iter()
        .map(|(n, v)| (n.clone(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut list, &mut meta);
    let bytes = formats::weights::serialize(
        list.iter()
            .map(|(n, shape, data)| (n.as_str(), dtype, shape.clone(), &data[..])),
        meta,
        to,
    )
    .unwrap();
    std::fs::write(to, bytes).unwrap();
}

#[test]
fn safetensors_models_must_hold_deepid_exactly() {
    let s = Scratch::new();
    let d = s.dir.path();
    let data = s.arg("data.h5");
    edit_safetensors(
        &s.path("b.safetensors"),
        &s.path("extra.safetensors"),
        |t, _| {
            t.push(("decoder.weight".into(), vec![2, 2], vec![0; 16]));
        },
    );
    edit_safetensors(
        &s.path("b.safetensors"),
        &s.path("classes.safetensors"),
        |_, m| {
            m.insert("classes".into(), "10".into());
        },
    );
    let mut cut = std::fs::read(s.path("b.safetensors")).unwrap();
    cut[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(s.path("header.safetensors"), &cut).unwrap();
    let cases: [(&str, &[&str]); 3] = [
        (
            "extra.safetensors",
            &["tensor decoder.weight", "not one of DeepID's"],
        ),
        (
            "classes.safetensors",
            &["metadata classes is \"10\"", "output layer has 2 classes"],
        ),
        (
            "header.safetensors",
            &["header claims 1099511627776 bytes", "has only"],
        ),
    ];
    for (model, needles) in cases {
        refused(
            "predict",
            &["--model", &s.arg(model), &data],
            d,
            1,
            model,
            needles,
        );
    }
}

/// Opens an HDF5 file this test wrote for changes. Without locking: a stage another test
/// started while the file was being written inherited its descriptor, and with it HDF5's lock.
fn open_rw(path: &Path) -> hdf5::File {
    hdf5::File::with_options()
        .with_fapl(|p| p.file_locking(false))
        .open_rw(path)
        .unwrap()
}

/// Adds a layer `decoder` with a kernel to a Keras weights-only file.
fn add_layer(path: &Path) {
    use hdf5::types::FixedAscii;
    let f = open_rw(path);
    let mut names: Vec<FixedAscii<64>> = f.attr("layer_names").unwrap().read_raw().unwrap();
    names.push(FixedAscii::from_ascii("decoder").unwrap());
    f.delete_attr("layer_names").unwrap();
    f.new_attr_builder()
        .with_data(&names)
        .create("layer_names")
        .unwrap();
    let g = f.create_group("decoder").unwrap();
    let wn = [FixedAscii::<64>::from_ascii("decoder/kernel:0").unwrap()];
    g.new_attr_builder()
        .with_data(&wn)
        .create("weight_names")
        .unwrap();
    g.create_group("decoder")
        .unwrap()
        .new_dataset_builder()
        .with_data(&[1.0f32, 2.0])
        .create("kernel:0")
        .unwrap();
    // HDF5 writes the file out only once every handle to it is closed.
    drop(g);
    f.close().unwrap();
}

/// Keras files: an extra layer with weights is refused by name; optimizer weights and the
/// model configuration beside `model_weights` are not layers and are accepted.
#[test]
fn keras_files_must_hold_deepid_exactly() {
    let s = Scratch::new();
    let data = s.arg("data.h5");
    let extra = s.path("extra.h5");
    formats::keras::export(&network(), &extra, false).unwrap();
    add_layer(&extra);
    let needles = [
        "layer decoder (weights decoder/kernel:0)",
        "not one of DeepID's layers with weights",
    ];
    let args = ["--model", extra.to_str().unwrap(), &data];
    refused("predict", &args, s.dir.path(), 1, "extra.h5", &needles);

    let f = open_rw(&s.path("b.h5"));
    let optimizer = f.create_group("optimizer_weights").unwrap();
    optimizer
        .new_dataset_builder()
        .with_data(&[0.5f32; 4])
        .create("iterations:0")
        .unwrap();
    drop(optimizer);
    f.close().unwrap();
    let o = run_within("predict", &["--model", &s.arg("b.h5"), &data], LIMIT);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Replaces the first deflate filter of an HDF5 file (its filter pipeline message, version 1:
/// id, name length, flags, value count, then the name) with filter 307, bzip2, which this
/// build lacks: what h5py writes with `compression=307` where the plugin is installed.
fn as_bzip2(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let name = bytes
        .windows(8)
        .position(|w| w == b"deflate\0")
        .expect("a deflate filter message");
    assert_eq!(bytes[name - 8..name - 4], [1, 0, 8, 0], "version 1 message");
    bytes[name - 8..name - 6].copy_from_slice(&307u16.to_le_bytes());
    bytes[name..name + 8].copy_from_slice(b"bzip2\0\0\0");
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn unclear_dataset_problems_are_named() {
    use hdf5::types::FixedAscii;
    let s = Scratch::new();
    let d = s.dir.path();
    let b = s.arg("b.safetensors");

    let bzip2 = s.path("bzip2.h5");
    formats::csaw::write_csaw(&bzip2, &images(), true).unwrap();
    as_bzip2(&bzip2);
    let needles = [
        "dataset `data` is compressed with HDF5 filter 307 (bzip2)",
        "cannot read (available: deflate, shuffle",
        "lzf",
    ];
    refused(
        "predict",
        &["--model", &b, bzip2.to_str().unwrap()],
        d,
        1,
        "bzip2.h5",
        &needles,
    );

    let strings = s.path("strings.h5");
    let f = hdf5::File::create(&strings).unwrap();
    let pixels = ndarray::Array4::from_shape_vec((IMAGES, 3, 55, 47), images().pixels).unwrap();
    f.new_dataset_builder()
        .with_data(&pixels)
        .create("data")
        .unwrap();
    let labels: Vec<FixedAscii<8>> = (0..IMAGES)
        .map(|i| FixedAscii::from_ascii(["alice", "bob"][i % 2]).unwrap())
        .collect();
    f.new_dataset_builder()
        .with_data(&labels)
        .create("label")
        .unwrap();
    f.close().unwrap();
    let needles = ["`label` holds string", "integer class numbers"];
    refused(
        "predict",
        &["--model", &b, strings.to_str().unwrap()],
        d,
        1,
        "strings.h5",
        &needles,
    );

    let table = s.path("strings.parquet");
    write_string_label_table(&table);
    let needles = ["column `label` holds Utf8", "integer class numbers"];
    let args = ["--model", &b, table.to_str().unwrap()];
    refused("predict", &args, d, 1, "strings.parquet", &needles);
}

/// An image table as `ingest` writes it, but with the labels as names.
fn write_string_label_table(path: &Path) {
    use arrow::array::{ArrayRef, FixedSizeListArray, RecordBatch, StringArray, UInt8Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let len = formats::csaw::IMAGE_LEN as i32;
    let item = Arc::new(Field::new("item", DataType::UInt8, false));
    let schema = Arc::new(Schema::new(vec![
        Field::new("image", DataType::FixedSizeList(item.clone(), len), false),
        Field::new("label", DataType::Utf8, false),
    ]));
    let pixels: Vec<u8> = images().pixels.iter().map(|&p| p as u8).collect();
    let image =
        FixedSizeListArray::try_new(item, len, Arc::new(UInt8Array::from(pixels)), None).unwrap();
    let labels = StringArray::from_iter_values((0..IMAGES).map(|i| ["alice", "bob"][i % 2]));
    let columns: Vec<ArrayRef> = vec![Arc::new(image), Arc::new(labels)];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// The stages refuse what is not a regular file too: ingest its datasets and Keras weights,
/// profile the tables and model ingest wrote; the work folder stays as it was.
#[test]
fn stages_refuse_fifos_and_devices_by_name() {
    let s = Scratch::new();
    let d = s.dir.path();
    let keras = s.path("bd_net.h5");
    formats::keras::export(&network(), &keras, false).unwrap();
    let config = write_config(
        d,
        &s.path("data.h5"),
        &s.path("data.h5"),
        &s.path("data.h5"),
        &keras,
        "",
    );
    let c = config.to_str().unwrap();
    mkfifo(&s.path("valid.h5"));
    std::os::unix::fs::symlink("/dev/zero", s.path("zero.h5")).unwrap();
    let fifo = "not a regular file (a FIFO)";
    let args = ["--config", c, "--valid", &s.arg("valid.h5")];
    refused("ingest", &args, d, 1, "valid.h5", &[fifo]);
    let args = ["--config", c, "--weights", &s.arg("zero.h5")];
    refused(
        "ingest",
        &args,
        d,
        1,
        "zero.h5",
        &["not a regular file (a character device)"],
    );

    let o = run_within("ingest", &["--config", c], LIMIT);
    assert!(o.status.success(), "{}", stderr(&o));
    let ingest = d.join("work/ingest");
    for name in ["valid.parquet", "model.safetensors"] {
        let real = ingest.join(name);
        let kept = d.join(name);
        std::fs::rename(&real, &kept).unwrap();
        mkfifo(&real);
        refused("profile", &["--config", c], d, 1, name, &[fifo]);
        std::fs::remove_file(&real).unwrap();
        std::fs::rename(&kept, &real).unwrap();
    }
}
