"""``geoseg run``: execute a job spec over an archive of scenes."""

from __future__ import annotations

import sys
import warnings

import click

from geoseg.batch.jobs import JobError, load_job
from geoseg.batch.runner import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_LOCKED,
    EXIT_OK,
    Events,
    LockedError,
    dry_run,
    run_job,
)
from geoseg.errors import GeosegError


@click.command()
@click.argument("job_file", metavar="JOB.yaml")
@click.option("--scheduler", default=None, help="Address of a running dask scheduler (tcp://host:port).")
@click.option(
    "--workers", type=click.IntRange(1), default=None,
    help="Start a local cluster of N worker processes (default: the job's cluster.workers).",
)  # fmt: skip
@click.option("--dry-run", "dry_run_", is_flag=True, help="List what would be done and why; touch nothing.")
@click.option("--force", is_flag=True, help="Process every scene again, even those already done.")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="json: one JSON object per event on stderr, for machine logs.",
)  # fmt: skip
@click.pass_context
def run(ctx, job_file, scheduler, workers, dry_run_, force, log_format):
    """Run JOB.yaml: every scene not yet done, resumably; then the combined layer and the report.

    \b
    Exit codes:
      0  every scene is done (processed now or before)
      1  some scenes failed (each is recorded with its error; the others completed)
      2  the job itself is invalid (nothing was touched)
      3  another run of the same job is in progress
    """
    quiet = ctx.obj.get("quiet", False)
    try:
        job = load_job(job_file)
        if dry_run_:
            steps = dry_run(job, force=force)
            width = max(len(s.plan.key) for s in steps)
            for s in steps:
                click.echo(f"{s.action:8} {s.plan.key:{width}}  {s.reason}")
            n = sum(s.action != "skip" for s in steps)
            click.echo(f"{n} of {len(steps)} scenes would be processed", err=True)
            ctx.exit(EXIT_OK)
        events = Events(log_format, quiet=quiet)
        if log_format == "json":  # a warning is an event too: stderr stays one JSON object a line
            warnings.showwarning = lambda message, category, *_a, **_k: events(
                "warning", str(message), category=category.__name__
            )
        progress = _Progress() if (log_format == "text" and not quiet and sys.stderr.isatty()) else None
        try:
            report = run_job(job, workers=workers, scheduler=scheduler, force=force, events=events,
                             progress=progress)  # fmt: skip
        finally:
            if progress:
                progress.close()
    except JobError as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(EXIT_INVALID)
    except LockedError as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(EXIT_LOCKED)
    except GeosegError as exc:  # a model that cannot be loaded at all: the job cannot run
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(EXIT_INVALID)
    if log_format == "text" and not quiet:
        click.echo(report.summary(), err=True)
    ctx.exit(EXIT_FAILED if report.counts()["failed"] else EXIT_OK)


class _Progress:
    """Scene and tile progress bars on a terminal."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), transient=True,
        )  # fmt: skip
        self.bar.start()
        self.scenes = self.bar.add_task("scenes", total=None)
        self.batches = self.bar.add_task("batches", total=None)

    def scene(self, n: int, total: int | None, name: str) -> None:
        """Scene ``n`` (of ``total`` to process) started; several may be in flight at once."""
        self.bar.update(self.scenes, completed=n - 1, total=total, description=f"scene {name}")

    def tiles(self, done: int, submitted: int) -> None:
        """Batches done, of those submitted so far (over every scene in flight)."""
        self.bar.update(self.batches, completed=done, total=submitted)

    def close(self) -> None:
        self.bar.stop()
