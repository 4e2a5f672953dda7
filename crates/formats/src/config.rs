//! `pipeline.toml`: the input files, the work folder and one table per stage. Unknown keys are
//! errors, and relative paths resolve against the file's folder. The tables of the stages are
//! typed by the crates that own them ([`Table`]) and read with [`Config::table`], so a stage
//! depends only on the settings it uses; `pipeline make-vars` reads every table before any
//! stage starts work.

use crate::error::{Error, Result};
use model::weights::INPUT_SCALE_RANGE;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data: DataConfig,
    model: ModelConfig,
    #[serde(default)]
    work: WorkConfig,
    profile: Option<toml::Spanned<toml::Value>>,
    prune: Option<toml::Spanned<toml::Value>>,
    finetune: Option<toml::Spanned<toml::Value>>,
    scan: Option<toml::Spanned<toml::Value>>,
    evaluate: Option<toml::Spanned<toml::Value>>,
    synth: Option<toml::Spanned<toml::Value>>,
}

/// The parsed file: the tables every stage needs, typed; the stages' own tables as written.
#[derive(Debug, Clone)]
pub struct Config {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub work: WorkConfig,
    /// The file it was read from.
    pub source: PathBuf,
    text: String,
    tables: Vec<(&'static str, toml::Spanned<toml::Value>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub valid: PathBuf,
    pub test: PathBuf,
    pub poisoned_test: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub weights: PathBuf,
    #[serde(default = "one")]
    pub input_scale: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkConfig {
    pub dir: PathBuf,
    pub reports: PathBuf,
}

impl Default for WorkConfig {
    fn default() -> Self {
        Self {
            dir: "work".into(),
            reports: "reports".into(),
        }
    }
}

/// `path` absolute, with `.` and `..` folded away, and symbolic links resolved as far as
/// the path exists: two spellings of one folder compare equal.
pub fn normal(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    // The longest existing prefix, canonical; the rest as written.
    let mut rest = Vec::new();
    let mut head = out.clone();
    loop {
        if let Ok(real) = head.canonicalize() {
            return rest.iter().rev().fold(real, |p: PathBuf, c| p.join(c));
        }
        match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                head = parent.to_path_buf();
            }
            _ => return out,
        }
    }
}

/// A stage's table: its name in the file, its defaults and its checks.
pub trait Table: Serialize + DeserializeOwned + Default {
    const NAME: &'static str;

    /// Checks values serde cannot; the message names the key (`finetune.steps ...`).
    fn check(&self) -> std::result::Result<(), String>;
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::files::read_text(path)?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let file: File = toml::from_str(text).map_err(|e| {
            // toml's message spans several lines with a source excerpt; keep it on one.
            config_error(path, e.message().to_string() + &line_suffix(text, e.span()))
        })?;
        let tables = [
            ("synth", file.synth),
            ("profile", file.profile),
            ("prune", file.prune),
            ("finetune", file.finetune),
            ("scan", file.scan),
            ("evaluate", file.evaluate),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| (name, v)))
        .collect();
        let mut config = Config {
            data: file.data,
            model: file.model,
            work: file.work,
            source: path.to_path_buf(),
            text: text.to_string(),
            tables,
        };
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        config.resolve(&base);
        config.check_folders()?;
        check_input_scale("model.input_scale", config.model.input_scale)
            .map_err(|m| config_error(path, m))?;
        Ok(config)
    }

    /// Moves the work folder (`--work-dir`, relative to the current folder) under the same
    /// checks as `[work] dir`.
    pub fn set_work_dir(&mut self, dir: PathBuf) -> Result<()> {
        self.work.dir = dir;
        self.check_folders()
    }

    /// The work and report folders hold only what the pipeline writes: neither may be (or
    /// contain) the configuration's own folder, the data or the model.
    fn check_folders(&self) -> Result<()> {
        let config_dir = normal(self.source.parent().unwrap_or(Path::new("")));
        let inputs = [
            ("the configuration's own folder", &config_dir),
            ("data.valid", &normal(&self.data.valid)),
            ("data.test", &normal(&self.data.test)),
            ("data.poisoned_test", &normal(&self.data.poisoned_test)),
            ("model.weights", &normal(&self.model.weights)),
        ];
        for (key, folder) in [
            ("work.dir", &self.work.dir),
            ("work.reports", &self.work.reports),
        ] {
            let folder = normal(folder);
            if let Some((what, path)) = inputs.iter().find(|(_, p)| p.starts_with(&folder)) {
                return Err(config_error(
                    &self.source,
                    format!(
                        "{key} is {}, which holds {what} ({}); the pipeline's folders must hold only its own outputs, so give it a folder of its own",
                        folder.display(),
                        path.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn resolve(&mut self, base: &Path) {
        for p in [
            &mut self.data.valid,
            &mut self.data.test,
            &mut self.data.poisoned_test,
            &mut self.model.weights,
            &mut self.work.dir,
            &mut self.work.reports,
        ] {
            if p.is_relative() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
    }

    /// A stage's table, its defaults filled in and checked (absent: all defaults).
    pub fn table<T: Table>(&self) -> Result<T> {
        let Some((_, value)) = self.tables.iter().find(|(n, _)| *n == T::NAME) else {
            return Ok(T::default());
        };
        let line = line_suffix(&self.text, Some(value.span()));
        let table = T::deserialize(value.get_ref().clone()).map_err(|e| {
            config_error(&self.source, format!("[{}] {}{line}", T::NAME, e.message()))
        })?;
        // serde cannot deny unknown keys beside a flattened struct: a key the table does not
        // write back is one it did not read.
        let known = toml::Value::try_from(&table);
        if let Some(message) = known.ok().and_then(|k| unknown_key(value.get_ref(), &k)) {
            return Err(config_error(
                &self.source,
                format!("[{}] {message}{line}", T::NAME),
            ));
        }
        table
            .check()
            .map_err(|m| config_error(&self.source, m + &line))?;
        Ok(table)
    }

    /// The canonical JSON of a table (defaults filled in), which make compares to decide
    /// whether a stage's settings changed.
    pub fn table_json<T: Table>(&self) -> Result<String> {
        Ok(serde_json::to_string(&self.table::<T>()?).expect("settings serialize"))
    }

    /// The canonical JSON of the tables every stage shares, by name.
    pub fn common_json(&self, name: &str) -> Option<String> {
        let value = match name {
            "data" => serde_json::to_value(&self.data),
            "model" => serde_json::to_value(&self.model),
            "work" => serde_json::to_value(&self.work),
            _ => return None,
        };
        value.ok().map(|v| v.to_string())
    }
}

pub fn config_error(path: &Path, message: String) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        message,
    }
}

/// The first key of `given` (recursing into tables) that `known` lacks, as serde words it.
fn unknown_key(given: &toml::Value, known: &toml::Value) -> Option<String> {
    let (toml::Value::Table(given), toml::Value::Table(known)) = (given, known) else {
        return None;
    };
    given.iter().find_map(|(key, value)| match known.get(key) {
        Some(known) => unknown_key(value, known),
        None => {
            let expected: Vec<String> = known.keys().map(|k| format!("`{k}`")).collect();
            Some(format!(
                "unknown field `{key}`, expected one of {}",
                expected.join(", ")
            ))
        }
    })
}

fn line_suffix(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => {
            let line = text[..r.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

/// The largest learning rate any table takes: beyond it every step diverges.
pub const MAX_RATE: f64 = 10.0;

/// Fails unless `v` is a learning rate: in (0, [`MAX_RATE`]].
pub fn check_rate(key: &str, v: f64) -> std::result::Result<(), String> {
    if v > 0.0 && v <= MAX_RATE {
        Ok(())
    } else {
        Err(format!("{key} must be in (0, {MAX_RATE}], got {v}"))
    }
}

/// The most optimiser steps a table takes (about a day of training at the CSAW size).
pub const MAX_STEPS: usize = 1_000_000;
/// The most epochs a table takes.
pub const MAX_EPOCHS: usize = 10_000;
/// The largest batch a table takes.
pub const MAX_BATCH: usize = 4096;

/// Fails unless `v` is a count in 1..=`max`.
pub fn check_count(key: &str, v: usize, max: usize) -> std::result::Result<(), String> {
    if (1..=max).contains(&v) {
        Ok(())
    } else {
        Err(format!("{key} must be in 1..={max}, got {v}"))
    }
}

/// Fails unless `v` is an input scale in [`INPUT_SCALE_RANGE`] (`[model] input_scale`,
/// `predict --input-scale`).
pub fn check_input_scale(key: &str, v: f64) -> std::result::Result<(), String> {
    if INPUT_SCALE_RANGE.contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "{key} must be in [{:e}, {:e}], got {v}",
            INPUT_SCALE_RANGE.start(),
            INPUT_SCALE_RANGE.end()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str =
        "[data]\nvalid = \"d/v.h5\"\ntest = \"d/t.h5\"\npoisoned_test = \"d/p.h5\"\n";

    /// Parses `/x/p.toml` with the data above, model weights `weights` and the `[work]` lines.
    fn parse(weights: &str, work: &str) -> Result<Config> {
        let text = format!("{DATA}[model]\nweights = {weights:?}\n[work]\n{work}");
        Config::parse(&text, Path::new("/x/p.toml"))
    }

    #[test]
    fn a_partial_work_table_keeps_the_other_default() {
        let c = parse("m.h5", "dir = \"w\"\n").unwrap();
        assert_eq!(c.work.dir, Path::new("/x/w"));
        assert_eq!(c.work.reports, Path::new("/x/reports"));
        let c = parse("m.h5", "reports = \"r\"\n").unwrap();
        assert_eq!(c.work.dir, Path::new("/x/work"));
        assert_eq!(c.work.reports, Path::new("/x/r"));
    }

    #[test]
    fn folders_holding_inputs_are_refused() {
        for (weights, work, key) in [
            ("m.h5", "reports = \".\"", "work.reports"),
            ("m.h5", "dir = \"..\"", "work.dir"),
            ("m.h5", "dir = \"d\"", "work.dir"),
            ("r/m.h5", "reports = \"r\"", "work.reports"),
        ] {
            let e = parse(weights, work).unwrap_err().to_string();
            assert!(e.contains("/x/p.toml") && e.contains(key), "{work:?}: {e}");
        }
        assert!(
            parse("m.h5", "dir = \"d/w\"").is_ok(),
            "a folder beside the data is fine"
        );
    }
}
