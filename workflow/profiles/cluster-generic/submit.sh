#!/usr/bin/env bash
# A local "scheduler" for the cluster-generic executor: starts the job script Snakemake hands
# over in the background and prints a job id, as sbatch --parsable would.
set -euo pipefail
script="${@: -1}"
nohup bash "$script" >/dev/null 2>&1 &
echo "local-$!"
