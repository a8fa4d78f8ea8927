"""The ``geoseg`` command group. Subcommands are found through the ``geoseg.commands`` entry point
group, so another package can add a command without touching geoseg.

Nothing imported here may import torch: :meth:`GeosegGroup.main` sets process-level settings that
OpenMP reads when torch loads it (``geoseg.runtime``), and a subcommand's module is imported after.
"""

from __future__ import annotations

import logging
import sys
import warnings
from importlib.metadata import entry_points

import click

from geoseg import __version__, runtime
from geoseg.errors import GeosegError


class GeosegGroup(click.Group):
    """Turns geoseg's errors into one-line messages with exit code 1 (tracebacks only with -v)."""

    def main(self, *args, **kwargs):
        # Before any subcommand is resolved (importing its module may import torch): OpenMP threads
        # that sleep instead of spinning keep their speed beside other busy processes.
        runtime.prefer_passive_openmp()
        return super().main(*args, **kwargs)

    def list_commands(self, ctx):
        return sorted(ep.name for ep in entry_points(group="geoseg.commands"))

    def get_command(self, ctx, name):
        for ep in entry_points(group="geoseg.commands"):
            if ep.name == name:
                return ep.load()
        return None

    def invoke(self, ctx):
        try:
            with warnings.catch_warnings():  # warnings as one line on stderr, for this command only
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except GeosegError as exc:
            if ctx.params.get("verbose", 0) > 0:
                raise
            raise click.ClickException(str(exc)) from None


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"Warning: {message}", file=sys.stderr)


@click.group(cls=GeosegGroup)
@click.version_option(__version__, prog_name="geoseg")
@click.option("-v", "--verbose", count=True, help="More logging; tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or summaries on stderr.")
@click.pass_context
def cli(ctx, verbose: int, quiet: bool) -> None:
    """Find objects in very large images and write them as clean vectors and masks."""
    ctx.ensure_object(dict)
    ctx.obj.update(verbose=verbose, quiet=quiet)
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":  # python -m geoseg.cli.main
    cli()
