//! The whole run in one process, as `make all` runs it (what the Python package's
//! `fineprune.defend` calls): the same stamps, the same stages on the same files, and a stage
//! skipped when its outputs are newer than everything they come from.

use crate::{jobs, refresh_config, Job, Result};
use badnets::SynthFiles;
use defense::config::{FinetuneConfig, ProfileConfig, PruneConfig, ScanConfig};
use defense::evaluate::EvaluateFiles;
use defense::finetune::FinetuneFiles;
use defense::ingest::IngestFiles;
use defense::profile::ProfileFiles;
use defense::prune::PruneFiles;
use defense::scan::ScanFiles;
use formats::config::Config;
use formats::paths::{Stage, WorkPaths};
use model::progress::Progress;
use render::ReportFiles;
use std::path::{Path, PathBuf};

/// Whether `job` is done and current as make would find it: every output there, none older
/// than a need or than `code` (the code that computes it, when given).
pub fn is_current(job: &Job, code: Option<&Path>) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let done = job.outputs.iter().map(|p| modified(p)).min().flatten();
    done.is_some_and(|done| {
        job.needs
            .iter()
            .map(PathBuf::as_path)
            .chain(code)
            .all(|n| modified(n).is_some_and(|t| t <= done))
    })
}

/// Runs `stage` of the run `config` in this process, on the files make gives its binary.
pub fn run_stage(stage: Stage, config: &Config, progress: &dyn Progress) -> Result<()> {
    let work = &WorkPaths::new(&config.work.dir);
    match stage {
        Stage::Synth => {
            badnets::run(
                &SynthFiles::in_work(config, work),
                &config.table()?,
                progress,
            )?;
        }
        Stage::Ingest => {
            defense::ingest::run(&IngestFiles::in_work(config, work)?, progress)?;
        }
        Stage::Profile => {
            let table = config.table::<ProfileConfig>()?;
            defense::profile::run(&ProfileFiles::in_work(work), &table, progress)?;
        }
        Stage::Prune => {
            let thresholds = config.table::<PruneConfig>()?.thresholds;
            defense::prune::run(&PruneFiles::in_work(work), &thresholds, progress)?;
        }
        Stage::Finetune => {
            let table = config.table::<FinetuneConfig>()?;
            defense::finetune::run(&FinetuneFiles::in_work(work), &table, progress)?;
        }
        Stage::Scan => {
            let table = config.table::<ScanConfig>()?;
            defense::scan::run(&ScanFiles::in_work(work), &table, progress)?;
        }
        Stage::Evaluate => {
            defense::evaluate::run(&EvaluateFiles::in_work(work), progress)?;
        }
        Stage::Report => {
            render::run(&ReportFiles::in_work(config, work))?;
        }
    }
    Ok(())
}

/// Runs every stage of `config` that is not current ([`is_current`], with `code` as the code
/// of every stage), in make's order, after refreshing the stamps as `make-vars` does; `on_stage`
/// hears of each stage before it runs. With `user_data`, the input files are the data whatever
/// made them (a caller that names its files never has them rebuilt by `synth`); otherwise the
/// data mode is make's ([`crate::data_mode`]). Returns the stages run.
pub fn run_all(
    config: &Config,
    user_data: bool,
    code: Option<&Path>,
    progress: &dyn Progress,
    on_stage: &dyn Fn(Stage),
) -> Result<Vec<Stage>> {
    let mode = match user_data {
        true => "user",
        false => crate::data_mode(config)?,
    };
    refresh_config(config, mode)?;
    let work = WorkPaths::new(&config.work.dir);
    let inputs: Vec<(&str, PathBuf)> = crate::inputs(config)
        .iter()
        .map(|(n, p)| (*n, p.to_path_buf()))
        .collect();
    let mut ran = Vec::new();
    for job in jobs(&work, &config.work.reports, mode == "synth", &inputs) {
        if !is_current(&job, code) {
            on_stage(job.stage);
            run_stage(job.stage, config, progress)?;
            ran.push(job.stage);
        }
    }
    Ok(ran)
}
