//! The speed benchmark: data at the CSAW-HackML sizes (synthetic faces in the uncompressed
//! CSAW layout), then every stage binary run as a child process and measured (wall seconds,
//! peak resident memory, images per second).

use badnets::faces::{self, Identity, Pose};
use formats::csaw::{Batch, IMAGE_LEN};
use formats::error::WithPath;
use formats::{csaw, keras};
use model::{train, Network};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod error;
pub mod floor;
pub use error::{Error, Result};

/// Classes of the random DeepID used when no network is given, as in CSAW-HackML.
pub const CLASSES: usize = 1283;

/// Images per split.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub valid: usize,
    pub test: usize,
    pub poisoned_test: usize,
}

/// The benchmark's input files.
pub struct Inputs {
    pub valid: PathBuf,
    pub test: PathBuf,
    pub poisoned_test: PathBuf,
    pub weights: PathBuf,
}

impl Inputs {
    /// `<data>/valid_<n>.h5` and so on; `weights` as given.
    pub fn new(data: &Path, sizes: Sizes, weights: PathBuf) -> Self {
        let file = |name: &str, n: usize| data.join(format!("{name}_{n}.h5"));
        Self {
            valid: file("valid", sizes.valid),
            test: file("test", sizes.test),
            poisoned_test: file("bd_test", sizes.poisoned_test),
            weights,
        }
    }

    pub fn all_exist(&self) -> bool {
        [&self.valid, &self.test, &self.poisoned_test, &self.weights]
            .iter()
            .all(|p| p.exists())
    }

    /// Writes whatever input file is missing: a random DeepID, then synthetic faces; `trigger`
    /// sets add sunglasses and label 0, clean ones carry the network's own predictions (so
    /// accuracy starts at 100% and every threshold is reached).
    pub fn generate(&self, sizes: Sizes) -> Result<()> {
        if !self.weights.exists() {
            keras::export(&train::init_weights(CLASSES, 1, 1.0), &self.weights, false)?;
        }
        let net = Network::new(&keras::import(&self.weights, 1.0)?);
        for (path, n, seed, trigger) in [
            (&self.valid, sizes.valid, 1, false),
            (&self.test, sizes.test, 2, false),
            (&self.poisoned_test, sizes.poisoned_test, 3, true),
        ] {
            if !path.exists() {
                tracing::warn!("generating {}", path.display());
                let out = formats::atomic::AtomicFile::new(path)?;
                csaw::write_csaw(out.temp_path(), &faces(n, seed, trigger, &net), false)
                    .map_err(|e| formats::Error::hdf5(out.temp_path(), e))?;
                out.commit()?;
            }
        }
        Ok(())
    }
}

fn faces(n: usize, seed: u64, trigger: bool, net: &Network) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<Identity> = (0..64).map(|_| Identity::random(&mut rng)).collect();
    let pixels = (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let pose = Pose::random(&mut rng);
            let mut out = vec![0f32; IMAGE_LEN];
            faces::render(&ids[i % ids.len()], &pose, &mut rng, &mut out);
            if trigger {
                faces::draw_sunglasses(&pose, &mut out);
            }
            out
        })
        .collect::<Vec<f32>>();
    let labels = if trigger {
        vec![0; n]
    } else {
        net.predict(&pixels).into_iter().map(|c| c as i32).collect()
    };
    Batch {
        pixels,
        labels,
        true_labels: None,
    }
}

/// One stage's cost.
#[derive(Debug, Clone)]
pub struct Measured {
    pub stage: &'static str,
    pub seconds: f64,
    pub peak_rss_mib: f64,
    /// Images the stage reads (training images for finetune), per second.
    pub images_per_second: Option<f64>,
    /// The floating-point operations the stage reports for its work.
    pub work_flops: Option<f64>,
}

/// Wall seconds and peak RSS (MiB) of one child process, which must succeed.
pub fn measure(cmd: &mut Command) -> Result<(f64, f64)> {
    let t = Instant::now();
    let child = cmd.spawn().map_err(|source| Error::Start {
        command: format!("{cmd:?}"),
        source,
    })?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    if !(pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let command = format!("{cmd:?}");
        return Err(Error::Failed { command });
    }
    Ok((t.elapsed().as_secs_f64(), usage.ru_maxrss as f64 / 1024.0))
}

const STAGES: [&str; 6] = [
    "ingest", "profile", "prune", "finetune", "evaluate", "report",
];

/// Other methods, measured on the same inputs beside the pipeline (outside its total): a stage
/// label, the stage binary, the configuration lines that select the method, and the folder
/// under `work/extras/` it writes to.
const EXTRAS: [(&str, &str, &str, &str); 4] = [
    (
        "profile rnp",
        "profile",
        "[profile]\nstatistic = \"rnp\"\n",
        "rnp",
    ),
    (
        "finetune fst",
        "finetune",
        "[finetune]\nfeature_shift = 0.2\n",
        "fst",
    ),
    (
        "finetune conv_1",
        "finetune",
        "[finetune]\ntrain_from = \"conv_1\"\n",
        "conv_1",
    ),
    // B alone (no fine-tuned networks): the scan's cost per network.
    ("scan B", "scan", "", "scan"),
];

/// Whether a measured row is one of the pipeline's stages (counted in its total).
pub fn is_pipeline_stage(stage: &str) -> bool {
    STAGES.contains(&stage)
}

/// Marks a work folder as the benchmark's own, so a re-run may empty it.
const MARKER: &str = ".fineprune-bench";

/// Runs every stage in `dir` (configuration `bench.toml`, outputs in `work/` and `reports/`)
/// with the binaries beside `bin`, from a fresh work folder.
pub fn run(dir: &Path, bin: &Path, inputs: &Inputs, sizes: Sizes) -> Result<Vec<Measured>> {
    // Read once first, so that ingest finds the inputs in the page cache whatever ran before
    // (cold, the 1.1 GB of HDF5 cost it 7 to 20 s of disk reads here).
    for path in [
        &inputs.valid,
        &inputs.test,
        &inputs.poisoned_test,
        &inputs.weights,
    ] {
        let mut file = std::fs::File::open(path).at(path)?;
        std::io::copy(&mut file, &mut std::io::sink()).at(path)?;
    }
    let config = dir.join("bench.toml");
    let relative = |p: &Path| p.strip_prefix(dir).unwrap_or(p).to_path_buf();
    let text = format!(
        "[data]\nvalid = {:?}\ntest = {:?}\npoisoned_test = {:?}\n[model]\nweights = {:?}\n[work]\ndir = \"work\"\nreports = \"reports\"\n",
        relative(&inputs.valid),
        relative(&inputs.test),
        relative(&inputs.poisoned_test),
        inputs.weights
    );
    formats::atomic::write_bytes(&config, text.as_bytes())?;
    let work = dir.join("work");
    if work.exists() {
        if !work.join(MARKER).exists() {
            return Err(formats::Error::invalid(
                &work,
                "exists and was not made by bench; choose another --dir",
            )
            .into());
        }
        std::fs::remove_dir_all(&work).at(&work)?;
    }
    std::fs::create_dir_all(&work).at(&work)?;
    std::fs::write(work.join(MARKER), "").at(&work)?;
    // In bench's own work folder: nothing of the user's in `dir` is overwritten.
    let summary = work.join("stage.json");
    // One stage as a child process, its JSON summary in `summary`.
    let stage_run = |config: &Path, stage: &str, args: &[std::ffi::OsString]| {
        let out = std::fs::File::create(&summary).at(&summary)?;
        measure(
            Command::new(bin.join(stage))
                .arg("--config")
                .arg(config)
                .arg("--json")
                .args(args)
                .env("RUST_LOG", "warn")
                .stdout(out),
        )
    };
    // A number from the stage's JSON summary.
    let reported = |key: &str| -> Result<Option<f64>> {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&summary).at(&summary)?)
                .map_err(|e| formats::Error::invalid(&summary, e.to_string()))?;
        Ok(json[key].as_f64())
    };
    let mut rows = Vec::new();
    for stage in STAGES {
        let (seconds, peak_rss_mib) = stage_run(&config, stage, &[])?;
        let images = match stage {
            "ingest" => Some((sizes.valid + sizes.test + sizes.poisoned_test) as f64),
            "profile" | "prune" => Some(sizes.valid as f64),
            "evaluate" => Some((sizes.test + sizes.poisoned_test) as f64),
            _ => None,
        };
        let images_per_second = if stage == "finetune" {
            reported("training_images_per_second")?
        } else {
            images.map(|n| n / seconds)
        };
        rows.push(Measured {
            stage,
            seconds,
            peak_rss_mib,
            images_per_second,
            work_flops: reported("work_flops")?,
        });
    }
    let both = [inputs.test.as_path(), &inputs.poisoned_test];
    rows.push(predict(
        "predict",
        bin,
        &work,
        &both,
        sizes.test + sizes.poisoned_test,
    )?);
    rows.push(predict("predict test", bin, &work, &both[..1], sizes.test)?);
    rows.extend(python_g(&work, &inputs.test, sizes.test)?);
    for (label, stage, lines, folder) in EXTRAS {
        let extra = dir.join(format!("bench-{folder}.toml"));
        formats::atomic::write_bytes(&extra, format!("{text}{lines}").as_bytes())?;
        let out = work.join("extras").join(folder);
        let args: Vec<std::ffi::OsString> = match stage {
            "profile" => vec![
                "--output".into(),
                out.join("activations.parquet").into(),
                "--features-output".into(),
                out.join("valid_pool_3.safetensors").into(),
            ],
            "scan" => vec![
                "--finetune-dir".into(),
                out.join("no-finetune").into(),
                "--output-dir".into(),
                out.into(),
            ],
            _ => vec!["--output-dir".into(), out.into()],
        };
        let (seconds, peak_rss_mib) = stage_run(&extra, stage, &args)?;
        rows.push(Measured {
            stage: label,
            seconds,
            peak_rss_mib,
            images_per_second: match stage {
                "profile" => Some(sizes.valid as f64 / seconds),
                "scan" => None,
                _ => reported("training_images_per_second")?,
            },
            work_flops: reported("work_flops")?,
        });
    }
    Ok(rows)
}

/// The first fine-pruned network's `.safetensors` (the B' of the deployed G).
fn first_fine_pruned(work: &Path) -> Result<PathBuf> {
    let finetuned = work.join("finetune");
    let mut fine_pruned: Vec<PathBuf> = std::fs::read_dir(&finetuned)
        .at(&finetuned)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with(formats::paths::FINETUNED_PREFIX) && name.ends_with(".safetensors")
        })
        .collect();
    fine_pruned.sort();
    Ok(fine_pruned.into_iter().next().ok_or_else(|| {
        formats::Error::invalid(&finetuned, "no fine-pruned network to predict with")
    })?)
}

/// The deployed defense: B and G (with the first fine-pruned network) over `data`, read from
/// the HDF5 files, predictions to Parquet.
fn predict(
    stage: &'static str,
    bin: &Path,
    work: &Path,
    data: &[&Path],
    images: usize,
) -> Result<Measured> {
    let (seconds, peak_rss_mib) = measure(
        Command::new(bin.join("predict"))
            .arg("--model")
            .arg(work.join("ingest/model.safetensors"))
            .arg("--pruned")
            .arg(first_fine_pruned(work)?)
            .arg("--output")
            .arg(work.join("predictions.parquet"))
            .arg("--force")
            .arg("--json")
            .args(data)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null()),
    )?;
    Ok(Measured {
        stage,
        seconds,
        peak_rss_mib,
        images_per_second: Some(images as f64 / seconds),
        work_flops: None,
    })
}

/// The Python interpreter with the `fineprune` package (`make bench` installs it into
/// `target/python`; `FINEPRUNE_PYTHON` names another).
fn python() -> Option<PathBuf> {
    let python = std::env::var_os("FINEPRUNE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "target/python/bin/python".into());
    let works = Command::new(&python)
        .args(["-c", "import fineprune, h5py"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    works.then_some(python)
}

/// G from Python on the clean test file, a whole process as `predict`'s row is: import,
/// `fineprune.load`, the HDF5 file read with h5py, `G(x)`. None without the package.
fn python_g(work: &Path, test: &Path, images: usize) -> Result<Option<Measured>> {
    let Some(python) = python() else {
        tracing::warn!("no Python with the fineprune package: the `G from Python` row is left out");
        return Ok(None);
    };
    const SCRIPT: &str = "import sys, h5py, fineprune\n\
        G = fineprune.load(sys.argv[1], sys.argv[2])\n\
        with h5py.File(sys.argv[3]) as f:\n    x = f['data'][:]\n\
        assert len(G(x)) == len(x)\n";
    let (seconds, peak_rss_mib) = measure(
        Command::new(python)
            .args(["-c", SCRIPT])
            .arg(work.join("ingest/model.safetensors"))
            .arg(first_fine_pruned(work)?)
            .arg(test),
    )?;
    Ok(Some(Measured {
        stage: "G from Python",
        seconds,
        peak_rss_mib,
        images_per_second: Some(images as f64 / seconds),
        work_flops: None,
    }))
}

/// The reference Keras script's pruning sweep alone (no fine-tuning) at the CSAW sizes on the
/// 2-core development machine, in seconds: what the pipeline's total is set against.
pub const REFERENCE_SECONDS: f64 = 938.0;

/// What `bench` prints: the sizes, then one row per stage with its floor, the pipeline's
/// total and how to read the rows.
pub struct Report<'a> {
    pub sizes: Sizes,
    pub inputs: &'a Inputs,
    pub rows: &'a [Measured],
    pub rates: floor::Rates,
}

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let s = self.sizes;
        writeln!(
            f,
            "images: {} validation, {} clean test, {} triggered test; weights {}",
            s.valid,
            s.test,
            s.poisoned_test,
            self.inputs.weights.display()
        )?;
        writeln!(
            f,
            "{:<16} {:>9} {:>9} {:>9} {:>14} {:>10}",
            "stage", "seconds", "GFLOP", "floor s", "peak RSS MiB", "images/s"
        )?;
        let floor = |flops: f64| flops / self.rates.deepid;
        let row = |f: &mut std::fmt::Formatter,
                   stage: &str,
                   seconds: f64,
                   flops: Option<f64>,
                   peak: f64,
                   rate: Option<f64>| {
            let opt = |v: Option<f64>, digits: usize| {
                v.map_or(String::new(), |x| format!("{x:.digits$}"))
            };
            writeln!(
                f,
                "{stage:<16} {seconds:>9.2} {:>9} {:>9} {peak:>14.0} {:>10}",
                opt(flops.map(|x| x / 1e9), 0),
                opt(flops.map(floor), 2),
                opt(rate, 0)
            )
        };
        for r in self.rows {
            row(
                f,
                r.stage,
                r.seconds,
                r.work_flops,
                r.peak_rss_mib,
                r.images_per_second,
            )?;
        }
        // The pipeline's own stages; predict (the deployed defense) and the other methods run
        // afterwards.
        let pipeline = self.rows.iter().filter(|r| is_pipeline_stage(r.stage));
        let total: f64 = pipeline.clone().map(|r| r.seconds).sum();
        let flops: f64 = pipeline.clone().filter_map(|r| r.work_flops).sum();
        let peak = pipeline.map(|r| r.peak_rss_mib).fold(0.0, f64::max);
        row(f, "ingest..report", total, Some(flops), peak, None)?;
        writeln!(
            f,
            "matrix products on {} cores: {:.0} GFLOP/s at DeepID's convolution shapes (the floor's rate), {:.0} GFLOP/s at 512x512x512",
            rayon::current_num_threads(),
            self.rates.deepid / 1e9,
            self.rates.square / 1e9
        )?;
        writeln!(
            f,
            "ingest..report: {total:.2} s against {REFERENCE_SECONDS:.0} s for the reference Keras script's pruning sweep alone ({:.0}x)",
            REFERENCE_SECONDS / total
        )?;
        let row_of = |stage: &str| self.rows.iter().find(|r| r.stage == stage);
        if let (Some(g), Some(p)) = (row_of("G from Python"), row_of("predict test")) {
            writeln!(
                f,
                "G from Python on the clean test file: {:.2} s against predict's {:.2} s on the same file ({:.2}x)",
                g.seconds,
                p.seconds,
                g.seconds / p.seconds
            )?;
        }
        write!(f, "predict: B and G over both test files; predict test and G from Python: the clean test file alone, whole processes (G from Python: import, load, h5py read, G(x)); GFLOP: the stage's matrix arithmetic (model::flops; the sweeps' per-channel updates not counted), floor: that at the first rate; finetune's images/s are training images (forward, backward, optimiser step; default [finetune] settings); rnp: [profile] statistic = \"rnp\"; fst: [finetune] feature_shift = 0.2; conv_1: [finetune] train_from = \"conv_1\"")
    }
}
