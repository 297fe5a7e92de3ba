"""Launching many runs and reading them back: ``sweep`` expands a grid of recipe overrides into plain
``mmguard run`` commands (local, SLURM array through submitit, W&B sweep); ``collect`` tables many run folders
as mean +- std over seeds. An entry layer like the CLI: it may use every other layer."""
