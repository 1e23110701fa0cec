#!/bin/bash

# Parameters
#SBATCH --hold
#SBATCH --job-name=gridman-ab14d7c820fd
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=/tmp/gridman-compat-fixture/proj/outputs/.slurm/jobs/ab14d7c820fd/%j_0_log.out
#SBATCH --signal=USR2@90
#SBATCH --time=5
#SBATCH --wckey=submitit

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /tmp/gridman-compat-fixture/proj/outputs/.slurm/jobs/ab14d7c820fd/%j_%t_log.out /tmp/gridman-compat-fixture/bin/python3 -u -m submitit.core._submit /tmp/gridman-compat-fixture/proj/outputs/.slurm/jobs/ab14d7c820fd
