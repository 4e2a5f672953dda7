//! A zoo: many networks, each a name and a pipeline configuration, defended in one run by a
//! workflow engine (Snakemake, `workflow/Snakefile`). [`plan`] reads the zoo file, checks every
//! configuration and refreshes its stamps exactly as `make-vars` does, and returns what the
//! engine needs: each network's real paths, or the error that keeps it out of the run (one
//! broken network never stops the others).

use crate::{inputs, refresh};
use defense::results::Summary;
use formats::config::config_error;
use formats::error::WithPath;
use formats::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZooFile {
    model: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    /// A pipeline configuration, relative to the zoo file's folder.
    config: PathBuf,
}

/// One network of the zoo, as the engine runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub config: PathBuf,
    /// Why it cannot run (its configuration is missing or wrong); the rest is then empty.
    pub error: Option<String>,
    /// `synth` (the built-in benchmark makes its data) or `user`.
    pub mode: String,
    pub work: PathBuf,
    pub reports: PathBuf,
    /// valid, test, poisoned_test, weights.
    pub inputs: BTreeMap<String, PathBuf>,
}

/// Every network of a zoo file, in its order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub zoo: PathBuf,
    pub networks: Vec<Network>,
}

/// Reads and checks `zoo` and each network's configuration (refreshing its stamps).
pub fn plan(zoo: &Path) -> Result<Plan> {
    let text = formats::files::read_text(zoo)?;
    let file: ZooFile =
        toml::from_str(&text).map_err(|e| config_error(zoo, e.message().to_string()))?;
    if file.model.is_empty() {
        return Err(config_error(zoo, "no [[model]] entries".into()));
    }
    let base = zoo.parent().unwrap_or(Path::new(""));
    let mut networks: Vec<Network> = Vec::new();
    for entry in file.model {
        let ok_name = !entry.name.is_empty()
            && entry
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !ok_name {
            return Err(config_error(
                zoo,
                format!(
                    "model name {:?}: use letters, digits, '_', '-' or '.'",
                    entry.name
                ),
            ));
        }
        if networks.iter().any(|n| n.name == entry.name) {
            return Err(config_error(
                zoo,
                format!("model name {:?} is used twice", entry.name),
            ));
        }
        let config = std::path::absolute(base.join(&entry.config)).at(&entry.config)?;
        let mut network = Network {
            name: entry.name,
            config: config.clone(),
            error: None,
            mode: String::new(),
            work: PathBuf::new(),
            reports: PathBuf::new(),
            inputs: BTreeMap::new(),
        };
        match refresh(&config) {
            Ok((cfg, mode)) => {
                network.mode = mode.into();
                network.work = std::path::absolute(&cfg.work.dir).at(&cfg.work.dir)?;
                network.reports = std::path::absolute(&cfg.work.reports).at(&cfg.work.reports)?;
                for (name, path) in inputs(&cfg) {
                    network
                        .inputs
                        .insert(name.into(), std::path::absolute(path).at(path)?);
                }
            }
            Err(e) => network.error = Some(e.to_string()),
        }
        networks.push(network);
    }
    // Two networks writing one folder would overwrite each other's results.
    for (i, a) in networks.iter().enumerate() {
        for b in networks[..i].iter().filter(|b| b.error.is_none()) {
            let shared = [(&a.work, &b.work), (&a.reports, &b.reports)]
                .into_iter()
                .find(|(x, y)| a.error.is_none() && x == y);
            if let Some((folder, _)) = shared {
                return Err(config_error(
                    zoo,
                    format!(
                        "models {:?} and {:?} both write to {}: give each its own [work] folders",
                        b.name,
                        a.name,
                        folder.display()
                    ),
                ));
            }
        }
    }
    Ok(Plan {
        zoo: std::path::absolute(zoo).at(zoo)?,
        networks,
    })
}

/// Whether make finds `config`'s run complete and current (`make -q report`): the same stamps
/// and files the engine uses, so a network whose run failed or never finished is not taken
/// for done with results of an earlier run.
fn is_current(config: &Path) -> bool {
    let make = std::env::var_os("MAKE").unwrap_or_else(|| "make".into());
    std::process::Command::new(make)
        .args(["-q", "-s", "report"])
        .arg(format!("CONFIG={}", config.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The last error line a stage wrote to its log in `logs` (the engine keeps the logs of
/// failed jobs), newest log first.
fn logged_error(logs: &Path) -> Option<String> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(logs)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.metadata().ok()?.modified().ok()?, e.path()))
        })
        .collect();
    files.sort();
    files.iter().rev().find_map(|(_, path)| {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines()
            .rev()
            .find(|l| l.contains(": error: "))
            .map(str::to_string)
    })
}

/// A network's cost from the engine's benchmark files in `logs` (one per job): seconds of all
/// its jobs together and the largest peak resident memory of any (MB).
fn cost(logs: &Path) -> Option<(f64, f64)> {
    let mut total = (0.0, 0.0);
    let mut found = false;
    for e in std::fs::read_dir(logs).ok()?.flatten() {
        if e.path().extension().is_none_or(|x| x != "tsv") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).ok()?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.split('\t').collect();
        let at = |name: &str| header.iter().position(|h| *h == name);
        let (s, rss) = (at("s")?, at("max_rss")?);
        for line in lines {
            let fields: Vec<&str> = line.split('\t').collect();
            let value = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
            total.0 += value(s).unwrap_or(0.0);
            total.1 = f64::max(total.1, value(rss).unwrap_or(0.0));
            found = true;
        }
    }
    found.then_some(total)
}

/// How each network of `plan` ended: its summary when its run is complete and current, else
/// its error (from the plan, or the log of the stage that failed, in `logs/<name>/`), or, when
/// nothing failed, that it is out of date.
/// A finished run's evaluate summary and, where it scanned, its scan rows.
fn results(work: &Path) -> Result<(Summary, Vec<defense::scan::ScanRow>)> {
    let paths = formats::paths::WorkPaths::new(work);
    let summary = Summary::read(&paths.eval_summary())?;
    let scan = paths.stage("scan").join(formats::paths::SCAN_SUMMARY);
    let rows = if scan.exists() {
        defense::scan::read_summary(&scan)?
    } else {
        Vec::new()
    };
    Ok((summary, rows))
}

pub fn outcomes(plan: &Plan, logs: &Path) -> Vec<reports::zoo::Outcome> {
    plan.networks
        .iter()
        .map(|n| {
            let (status, result) = match &n.error {
                Some(e) => ("failed", Err(e.clone())),
                None if !is_current(&n.config) => match logged_error(&logs.join(&n.name)) {
                    Some(e) => ("failed", Err(e)),
                    None => (
                        "not run",
                        Err("out of date: its inputs, configuration or the stage binaries changed since its last run".into()),
                    ),
                },
                None => match results(&n.work) {
                    Ok(r) => ("ok", Ok(r)),
                    Err(e) => ("failed", Err(e.to_string())),
                },
            };
            reports::zoo::Outcome {
                name: n.name.clone(),
                status,
                result,
                cost: cost(&logs.join(&n.name)),
            }
        })
        .collect()
}
