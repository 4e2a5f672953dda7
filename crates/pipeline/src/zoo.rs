//! A zoo: many networks, each a name and a pipeline configuration, defended in one run by a
//! workflow engine (Snakemake, `workflow/Snakefile`). [`plan`] reads the zoo file, checks every
//! configuration and refreshes its stamps exactly as `make-vars` does, and returns what the
//! engine needs: each network's real paths, or the error that keeps it out of the run (one
//! broken network never stops the others).

use crate::Result;
use crate::{inputs, jobs, refresh, Job};
use defense::results::Summary;
use formats::config::config_error;
use formats::error::WithPath;
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
    /// Its stage jobs, in order ([`crate::jobs`]).
    pub jobs: Vec<Job>,
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
        return Err(config_error(zoo, "no [[model]] entries".into()).into());
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
            )
            .into());
        }
        if networks.iter().any(|n| n.name == entry.name) {
            return Err(
                config_error(zoo, format!("model name {:?} is used twice", entry.name)).into(),
            );
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
            jobs: Vec::new(),
        };
        match refresh(&config) {
            Ok((cfg, mode)) => {
                network.mode = mode.into();
                network.work = std::path::absolute(&cfg.work.dir).at(&cfg.work.dir)?;
                network.reports = std::path::absolute(&cfg.work.reports).at(&cfg.work.reports)?;
                let mut files = Vec::new();
                for (name, path) in inputs(&cfg) {
                    files.push((name, std::path::absolute(path).at(path)?));
                }
                network.jobs = jobs(
                    &formats::paths::WorkPaths::new(&network.work),
                    &network.reports,
                    mode == "synth",
                    &files,
                );
                network.inputs = files.into_iter().map(|(n, p)| (n.into(), p)).collect();
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
                )
                .into());
            }
        }
    }
    Ok(Plan {
        zoo: std::path::absolute(zoo).at(zoo)?,
        networks,
    })
}

/// Whether `network`'s run is complete and current as `make -q report` would find it, without
/// a make process: its stamps refreshed as `make-vars` does, then every job's outputs there
/// and none older than its needs or its stage binary's content stamp in `code` (the
/// Makefile's rules, which tests/architecture.rs holds equal to the jobs). So a network whose
/// run failed or never finished is not taken for done with results of an earlier run.
fn is_current(network: &Network, code: &Path) -> bool {
    refresh(&network.config).is_ok()
        && network
            .jobs
            .iter()
            .all(|job| crate::run::is_current(job, Some(&code.join(job.stage.name()))))
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

/// A finished run's evaluate summary and, where it scanned, its scan rows.
fn results(work: &Path) -> Result<(Summary, Vec<defense::scan::ScanRow>)> {
    let paths = formats::paths::WorkPaths::new(work);
    let summary = Summary::read(&paths.eval_summary())?;
    let scan = paths
        .stage(formats::paths::Stage::Scan)
        .join(formats::paths::SCAN_SUMMARY);
    let rows = if scan.exists() {
        defense::scan::read_summary(&scan)?
    } else {
        Vec::new()
    };
    Ok((summary, rows))
}

/// How each network of `plan` ended: its summary when its run is complete and current, else
/// its error (from the plan, or the log of the stage that failed, in `logs/<name>/`), or, when
/// nothing failed, that it is out of date.
pub fn outcomes(plan: &Plan, logs: &Path, code: &Path) -> Vec<render::zoo::Outcome> {
    plan.networks
        .iter()
        .map(|n| {
            let (status, result) = match &n.error {
                Some(e) => ("failed", Err(e.clone())),
                None if !is_current(n, code) => match logged_error(&logs.join(&n.name)) {
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
            render::zoo::Outcome {
                name: n.name.clone(),
                status,
                result,
                cost: cost(&logs.join(&n.name)),
            }
        })
        .collect()
}

/// Checks `zoo` ([`plan`]) and writes its plan (JSON) to `out`; the networks left out are
/// logged.
pub fn write_plan(zoo: &Path, out: &Path) -> Result<Plan> {
    let plan = plan(zoo)?;
    let json = serde_json::to_string_pretty(&plan).expect("a plan serialises") + "\n";
    formats::atomic::write_bytes(out, json.as_bytes())?;
    for n in plan.networks.iter().filter(|n| n.error.is_some()) {
        tracing::warn!("{}: left out: {}", n.name, n.error.as_deref().unwrap_or(""));
    }
    Ok(plan)
}

/// What `zoo-report` found and wrote.
#[derive(Debug, Clone)]
pub struct ZooReport {
    pub networks: usize,
    /// The networks that failed or did not run.
    pub failed: Vec<String>,
    pub files: Vec<PathBuf>,
    /// Mean job seconds per network, the largest job's MB, and jobs at a time.
    pub cost: Option<(f64, f64, usize)>,
}

/// Writes `zoo.csv` and the zoo plot into `output_dir` from the plan at `plan_path` (the
/// stage logs in `logs`, the stage binaries' content stamps in `code`); `threads`: the cores
/// each job had.
pub fn report(
    plan_path: &Path,
    logs: &Path,
    code: &Path,
    output_dir: &Path,
    threads: usize,
) -> Result<ZooReport> {
    let text = formats::files::read_text(plan_path)?;
    let plan: Plan = serde_json::from_str(&text)
        .map_err(|e| formats::Error::invalid(plan_path, e.to_string()))?;
    let outcomes = outcomes(&plan, logs, code);
    std::fs::create_dir_all(output_dir).at(output_dir)?;
    let files = render::zoo::write(&outcomes, output_dir)?;
    let costs: Vec<(f64, f64)> = outcomes.iter().filter_map(|o| o.cost).collect();
    let cost = (!costs.is_empty()).then(|| {
        let mean = costs.iter().map(|c| c.0).sum::<f64>() / costs.len() as f64;
        let peak = costs.iter().map(|c| c.1).fold(0.0, f64::max);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (mean, peak, (cores / threads.max(1)).max(1))
    });
    Ok(ZooReport {
        networks: outcomes.len(),
        failed: outcomes
            .iter()
            .filter(|o| o.result.is_err())
            .map(|o| o.name.clone())
            .collect(),
        files,
        cost,
    })
}

impl std::fmt::Display for ZooReport {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "zoo: {} networks, {} failed or not run -> {}",
            self.networks,
            self.failed.len(),
            self.files
                .last()
                .map_or(String::new(), |f| f.display().to_string())
        )?;
        if let Some((mean, peak, parallel)) = self.cost {
            write!(
                f,
                "\nzoo: per network {mean:.1} s of job time (the last run of each stage), at most {peak:.0} MB per job; about {:.0} networks an hour with {parallel} job(s) at a time",
                3600.0 * parallel as f64 / mean,
            )?;
        }
        Ok(())
    }
}
