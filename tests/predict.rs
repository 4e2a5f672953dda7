//! `predict` on every kind of input: photos written from a test set get the classes the network
//! gives the same pixels in HDF5; JPEG and other sizes work; G flags exactly the images where B
//! and B' disagree; CSV and Parquet outputs agree; bad inputs are one clear error.

use fineprune_tests::{fixtures, missing_fixtures, run, run_ok, stderr, sweep_config};
use formats::table::{Column, Table};
use std::path::{Path, PathBuf};

/// The reference test set with pixels rounded to bytes, as HDF5 and as one PNG per image.
struct Photos {
    dir: tempfile::TempDir,
    h5: PathBuf,
    pngs: PathBuf,
    count: usize,
}

fn photos() -> Photos {
    let dir = tempfile::tempdir().unwrap();
    let src = hdf5::File::open(fixtures().join("deepid/sweep/test.h5")).unwrap();
    let data = src.dataset("data").unwrap().read_raw::<f32>().unwrap();
    let labels = src.dataset("label").unwrap().read_raw::<f64>().unwrap();
    let bytes: Vec<u8> = data
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    let count = labels.len();
    let (h, w) = (55, 47);
    let h5 = dir.path().join("rounded.h5");
    let f = hdf5::File::create(&h5).unwrap();
    let rounded: Vec<f32> = bytes.iter().map(|&b| b as f32).collect();
    let arr = ndarray::Array4::from_shape_vec((count, 3, h, w), rounded).unwrap();
    f.new_dataset_builder()
        .with_data(&arr)
        .create("data")
        .unwrap();
    f.close().unwrap();
    let pngs = dir.path().join("faces");
    std::fs::create_dir(&pngs).unwrap();
    for (i, img) in bytes.chunks(3 * h * w).enumerate() {
        let rgb = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let at = |c: usize| img[(c * h + y as usize) * w + x as usize];
            image::Rgb([at(0), at(1), at(2)])
        });
        rgb.save(pngs.join(format!("face_{i:04}.png"))).unwrap();
    }
    Photos {
        dir,
        h5,
        pngs,
        count,
    }
}

/// `predict` with `args`, its CSV output as rows of fields (header first).
fn predict_csv(args: &[&str]) -> Vec<Vec<String>> {
    let o = run_ok("predict", args);
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

fn column(rows: &[Vec<String>], name: &str) -> Vec<String> {
    let i = rows[0].iter().position(|c| c == name).unwrap();
    rows[1..].iter().map(|r| r[i].clone()).collect()
}

fn weights() -> String {
    fixtures()
        .join("deepid/bd_weights.h5")
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn photos_get_the_classes_of_their_pixels() {
    if missing_fixtures() {
        return;
    }
    let p = photos();
    let model = weights();
    let from_h5 = predict_csv(&["--model", &model, p.h5.to_str().unwrap()]);
    let from_png = predict_csv(&["--model", &model, "--top-k", "3", p.pngs.to_str().unwrap()]);
    assert_eq!(from_png.len(), p.count + 1);
    assert_eq!(column(&from_h5, "class"), column(&from_png, "class"));
    assert_eq!(column(&from_png, "class"), column(&from_png, "class_1"));
    let first = &column(&from_png, "input")[0];
    assert!(first.ends_with("faces/face_0000.png"), "{first}");
    for (p, p1) in column(&from_png, "probability")
        .iter()
        .zip(column(&from_png, "probability_1"))
    {
        let (p, p1): (f64, f64) = (p.parse().unwrap(), p1.parse().unwrap());
        assert!(p == p1 && p > 0.0 && p <= 1.0);
    }

    // JPEG (lossy) and photos of another size (resized) still classify like the pixels.
    let jpegs = p.dir.path().join("jpeg");
    let big = p.dir.path().join("big");
    std::fs::create_dir(&jpegs).unwrap();
    std::fs::create_dir(&big).unwrap();
    for i in 0..40 {
        let png = image::open(p.pngs.join(format!("face_{i:04}.png"))).unwrap();
        let jpeg = std::fs::File::create(jpegs.join(format!("face_{i:04}.jpg"))).unwrap();
        image::codecs::jpeg::JpegEncoder::new_with_quality(jpeg, 95)
            .encode_image(&png)
            .unwrap();
        png.resize_exact(94, 110, image::imageops::FilterType::Nearest)
            .save(big.join(format!("face_{i:04}.png")))
            .unwrap();
    }
    let want = &column(&from_h5, "class")[..40];
    for folder in [&jpegs, &big] {
        let got = column(
            &predict_csv(&["--model", &model, folder.to_str().unwrap()]),
            "class",
        );
        let same = got.iter().zip(want).filter(|(a, b)| a == b).count();
        assert!(same >= 36, "{}: {same} of 40 agree", folder.display());
    }
}

#[test]
fn repaired_class_flags_disagreement_in_csv_and_parquet() {
    if missing_fixtures() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = sweep_config(dir.path(), "[prune]\nthresholds = [10]\n");
    let c = config.to_str().unwrap();
    for stage in ["ingest", "profile", "prune"] {
        run_ok(stage, &["--config", c]);
    }
    let work = dir.path().join("work");
    let model = work.join("ingest/model.safetensors");
    let pruned = work.join("prune/bd_net_prime_10_percent_threshold.safetensors");
    let parquet = dir.path().join("p.parquet");
    let test = work.join("ingest/test.parquet");
    let bd_test = fixtures().join("deepid/sweep/bd_test.h5");
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--pruned",
        pruned.to_str().unwrap(),
        test.to_str().unwrap(),
        bd_test.to_str().unwrap(),
    ];
    let rows = predict_csv(&args);
    assert_eq!(rows.len(), 601);
    let (b, b1, g) = (
        column(&rows, "class"),
        column(&rows, "pruned_class"),
        column(&rows, "repaired_class"),
    );
    let mut flagged = 0;
    for i in 0..600 {
        if b[i] == b1[i] {
            assert_eq!(g[i], b[i]);
        } else {
            assert_eq!(g[i], "1283", "G answers N where B and B' disagree");
            flagged += 1;
        }
    }
    // 10 points of validation accuracy lost: B' disagrees with B on some clean images.
    assert!(flagged > 0);
    // The fixtures' clean labels are B's own answers; the triggered ones the target, 0.
    let labels = column(&rows, "label");
    assert_eq!(labels[..300], b[..300]);
    assert!(labels[300..].iter().all(|l| l == "0"));
    assert_eq!(column(&rows, "row")[299..302], ["299", "0", "1"]);

    let mut with_output = args.to_vec();
    with_output.extend(["--output", parquet.to_str().unwrap(), "--json"]);
    let o = run_ok("predict", &with_output);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["images"], 600);
    assert_eq!(summary["flagged_backdoor"], flagged);
    let t = Table::read(&parquet).unwrap();
    let ints = |name: &str| match &t.columns.iter().find(|(n, _)| n == name).unwrap().1 {
        Column::Int(v) => v.iter().map(|x| x.unwrap().to_string()).collect::<Vec<_>>(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(ints("class"), b);
    assert_eq!(ints("repaired_class"), g);
    assert_eq!(
        t.metadata.get("backdoor_class").map(String::as_str),
        Some("1283")
    );
}

/// `predict` on `input` must fail with `code`, one line naming `name` and saying `needle`.
fn refused(input: &Path, extra: &[&str], code: i32, name: &str, needle: &str) {
    let model = weights();
    let mut args = vec!["--model", model.as_str(), input.to_str().unwrap()];
    args.extend(extra);
    let o = run("predict", &args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert!(err.contains(name) && err.contains(needle), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn bad_inputs_are_one_clear_error() {
    if missing_fixtures() {
        return;
    }
    let p = photos();
    let d = p.dir.path();
    let png = std::fs::read(p.pngs.join("face_0001.png")).unwrap();
    std::fs::write(d.join("cut.png"), &png[..png.len() / 2]).unwrap();
    refused(&d.join("cut.png"), &[], 1, "cut.png", "cannot decode");
    std::fs::write(d.join("notes.png"), "not an image").unwrap();
    refused(
        &d.join("notes.png"),
        &[],
        1,
        "notes.png",
        "not a PNG or JPEG image",
    );
    std::fs::write(d.join("notes.txt"), "hello").unwrap();
    refused(
        &d.join("notes.txt"),
        &[],
        1,
        "notes.txt",
        "not a PNG or JPEG image, a CSAW HDF5",
    );
    // A damaged photo inside a folder is named too.
    std::fs::write(p.pngs.join("face_0100.png"), &png[..100]).unwrap();
    refused(&p.pngs, &[], 1, "face_0100.png", "cannot decode");
    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    refused(&empty, &[], 1, "empty", "no photos");
    refused(
        &p.h5,
        &["--output", "x.txt"],
        2,
        "x.txt",
        ".csv or .parquet",
    );
    refused(
        &d.join("missing.png"),
        &[],
        1,
        "missing.png",
        "No such file",
    );
}
