//! The glue between `pipeline.toml` and make. `make-vars` runs at the start of every make
//! invocation (it takes milliseconds): it checks the whole configuration, records in the work
//! folder what the outputs will come from (one stamp per table, one content hash per input),
//! and points short links under `target/make/<id>/` at the real folders and files, so make only
//! ever sees paths without spaces, whatever the user's paths look like. `clean` removes what
//! the pipeline wrote and nothing else.

use badnets::{is_synthetic, poisoned_valid_path, SynthConfig};
use defense::config::{EvaluateConfig, FinetuneConfig, ProfileConfig, PruneConfig, ScanConfig};
use formats::config::{config_error, Config};
use formats::error::WithPath;
use formats::paths::{Stage, WorkPaths, CONFIG_DIR};
use formats::{atomic, written};
use std::path::{Path, PathBuf};

mod error;
pub mod run;
pub mod zoo;

pub use error::{Error, Result};

/// The inputs of a run, by the names make and the stamps use.
pub fn inputs(cfg: &Config) -> [(&'static str, &Path); 4] {
    [
        ("valid", &cfg.data.valid),
        ("test", &cfg.data.test),
        ("poisoned_test", &cfg.data.poisoned_test),
        ("weights", &cfg.model.weights),
    ]
}

/// One stage of one run, as a workflow engine schedules it: the files it needs (besides its
/// binary) and the files it writes, the last of which marks it done.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Job {
    pub stage: Stage,
    pub needs: Vec<PathBuf>,
    pub outputs: Vec<PathBuf>,
}

/// The jobs of the run whose work folder is `work` and reports folder `reports`: [`Stage`]'s
/// graph over the same files and stamps the Makefile's rules use. `inputs` are the run's
/// input files; with `synth`, the synth stage writes them, else ingest depends on their
/// content stamps.
pub fn jobs(work: &WorkPaths, reports: &Path, synth: bool, inputs: &[(&str, PathBuf)]) -> Vec<Job> {
    let files: Vec<PathBuf> = inputs.iter().map(|(_, p)| p.clone()).collect();
    Stage::ALL
        .into_iter()
        .filter(|&stage| synth || stage != Stage::Synth)
        .map(|stage| {
            let mut needs: Vec<PathBuf> = match stage {
                Stage::Ingest if synth => files.clone(),
                Stage::Ingest => inputs.iter().map(|(n, _)| work.input_stamp(n)).collect(),
                _ => stage
                    .reads()
                    .iter()
                    .filter_map(|&s| work.done_file(s, reports))
                    .collect(),
            };
            needs.extend(stage.tables().iter().map(|t| work.table_stamp(t)));
            let outputs = work
                .done_file(stage, reports)
                .map_or_else(|| files.clone(), |f| vec![f]);
            Job {
                stage,
                needs,
                outputs,
            }
        })
        .collect()
}

/// Writes `text` to `path` unless it holds exactly that already (make compares times).
fn write_if_changed(path: &Path, text: &str) -> formats::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        atomic::write_bytes(path, text.as_bytes())?;
    }
    Ok(())
}

/// Points `link` at `target`, replacing a link that points elsewhere.
fn link(target: &Path, link: &Path) -> formats::Result<()> {
    if std::fs::read_link(link).ok().as_deref() == Some(target) {
        return Ok(());
    }
    let temp = link.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp).at(&temp)?;
    std::fs::rename(&temp, link).at(link)
}

/// The content hash of an input, recomputed only when its size, times, inode or device
/// changed since the last run. A replaced file always gets a new change time (ctime), which no
/// copy tool can set, so `cp -p`, `mv`, `tar x` and `rsync -a` are all noticed; the stamp
/// itself changes only when the content did.
fn input_stamp(work: &WorkPaths, name: &str, input: &Path) -> formats::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(input).at(input)?;
    let key = format!(
        "{} {} {}.{} {}.{} {}\n",
        m.size(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.dev()
    );
    let id_path = work.input_stamp(name);
    let key_path = id_path.with_extension("key");
    if std::fs::read_to_string(&key_path).ok().as_deref() == Some(key.as_str()) && id_path.exists()
    {
        return Ok(());
    }
    tracing::info!("hashing {}", input.display());
    let hash = formats::files::sha256_file(input)? + "\n";
    write_if_changed(&id_path, &hash)?;
    atomic::write_bytes(&key_path, key.as_bytes())
}

/// `user` when every input file exists and none was made by `synth`; `synth` when none exists
/// or all that exist are synthetic (they are then remade as the `[synth]` table says). A mix
/// is an error: real and synthetic data must never be combined.
pub fn data_mode(cfg: &Config) -> formats::Result<&'static str> {
    let files = inputs(cfg);
    let synthetic = files.iter().filter(|(_, p)| is_synthetic(p)).count();
    let present = files.iter().filter(|(_, p)| p.exists()).count();
    if present == synthetic {
        return Ok("synth");
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|(_, p)| !p.exists())
        .map(|(_, p)| p.display().to_string())
        .collect();
    if missing.is_empty() && synthetic == 0 {
        return Ok("user");
    }
    Err(config_error(
        &cfg.source,
        if synthetic > 0 {
            "some input files were made by synth and others were not: real and synthetic data cannot be mixed".into()
        } else {
            format!(
                "some input files exist but these are missing: {} (provide all of them, or none to use the built-in synthetic benchmark)",
                missing.join(", ")
            )
        },
    ))
}

/// A value make reads literally (`$` is make's only special character in a variable's value).
fn make_literal(p: &Path) -> String {
    p.display().to_string().replace('$', "$$")
}

/// Checks `config` (every table) and refreshes the stamps in its work folder: one per table,
/// one content hash per input of user data. Returns the configuration and its data mode.
pub fn refresh(config: &Path) -> Result<(Config, &'static str)> {
    let cfg = Config::load(config)?;
    let mode = data_mode(&cfg)?;
    refresh_config(&cfg, mode)?;
    Ok((cfg, mode))
}

/// [`refresh`] for a configuration already read, in data mode `mode` (`user` or `synth`).
pub fn refresh_config(cfg: &Config, mode: &str) -> Result<()> {
    let work = WorkPaths::new(&cfg.work.dir);
    let stamps = work.config();
    std::fs::create_dir_all(&stamps).at(&stamps)?;
    std::fs::create_dir_all(&cfg.work.reports).at(&cfg.work.reports)?;
    // Every table is read and checked here, before any stage starts work.
    let tables = [
        ("data", cfg.common_json("data").unwrap_or_default()),
        ("model", cfg.common_json("model").unwrap_or_default()),
        ("work", cfg.common_json("work").unwrap_or_default()),
        ("synth", cfg.table_json::<SynthConfig>()?),
        ("profile", cfg.table_json::<ProfileConfig>()?),
        ("prune", cfg.table_json::<PruneConfig>()?),
        ("finetune", cfg.table_json::<FinetuneConfig>()?),
        ("scan", cfg.table_json::<ScanConfig>()?),
        ("evaluate", cfg.table_json::<EvaluateConfig>()?),
    ];
    for (table, json) in tables {
        write_if_changed(&work.table_stamp(table), &(json + "\n"))?;
    }
    if mode == "user" {
        for (name, path) in inputs(cfg) {
            input_stamp(&work, name, path)?;
        }
    }
    Ok(())
}

/// Checks `config`, refreshes the stamps in its work folder and the links beside `out`, and
/// writes the make variables to `out` (always, so make sees it as newer than this binary).
pub fn make_vars(config: &Path, out: &Path) -> Result<()> {
    let (cfg, mode) = refresh(config)?;
    let links = out.with_extension("");
    std::fs::create_dir_all(links.join("in")).at(&links)?;
    let abs = |p: &Path| std::path::absolute(p).at(p);
    link(&abs(&cfg.work.dir)?, &links.join("work"))?;
    link(&abs(&cfg.work.reports)?, &links.join("reports"))?;
    for (name, path) in inputs(&cfg) {
        link(&abs(path)?, &links.join("in").join(name))?;
    }
    let l = links.display();
    let mut text = format!(
        "# Generated by `pipeline make-vars` from {}; do not edit.\n",
        make_literal(config)
    );
    text += &format!("L := {l}\nWORK := {l}/work\nREPORTS := {l}/reports\n");
    text += &format!(
        "REPORTS_DIR := {}\n",
        make_literal(&abs(&cfg.work.reports)?)
    );
    text += &format!(
        "INPUTS := {0}/in/valid {0}/in/test {0}/in/poisoned_test {0}/in/weights\n",
        l
    );
    let linked = WorkPaths::new(format!("{l}/work"));
    let stamps: Vec<String> = inputs(&cfg)
        .map(|(name, _)| linked.input_stamp(name).display().to_string())
        .to_vec();
    text += &format!("INPUT_STAMPS := {}\n", stamps.join(" "));
    text += &format!(
        "DATA_POISONED_VALID := {}\n",
        make_literal(&abs(&poisoned_valid_path(&cfg.data.valid))?)
    );
    text += &format!("DATA_MODE := {mode}\n");
    Ok(atomic::write_bytes(out, text.as_bytes())?)
}

/// What [`clean`] did.
#[derive(Debug, Default)]
pub struct Cleaned {
    pub removed: Vec<PathBuf>,
    /// Folders left in place because they hold files the pipeline did not write.
    pub kept: Vec<PathBuf>,
}

/// Removes what the pipeline wrote for `config`, as each folder's manifest proves it
/// ([`formats::written`]): the stage folders' files under the work folder and the report
/// files, and each folder that is empty afterwards. Anything else, whatever its name, and every
/// folder holding it, stays.
pub fn clean(config: &Path) -> Result<Cleaned> {
    let cfg = Config::load(config)?;
    let mut done = Cleaned::default();
    let work = WorkPaths::new(&cfg.work.dir);
    let dirs = Stage::ALL
        .iter()
        .filter(|&&s| s != Stage::Report)
        .map(|&s| work.stage(s))
        .chain([
            work.dir.join(CONFIG_DIR),
            work.dir.clone(),
            cfg.work.reports.clone(),
        ]);
    for dir in dirs {
        done.removed.extend(written::clean(&dir)?);
        if dir.exists() {
            done.kept.push(dir);
        }
    }
    Ok(done)
}

impl std::fmt::Display for Cleaned {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "clean: removed {} files and folders", self.removed.len())?;
        for d in &self.kept {
            write!(
                f,
                "\nclean: kept {}: it holds files the pipeline did not write",
                d.display()
            )?;
        }
        Ok(())
    }
}
