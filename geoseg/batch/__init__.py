"""Nightly batch jobs: job specs, the runner, its run state, clusters and worker plug-ins."""
