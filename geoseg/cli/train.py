"""``geoseg train``: train a model on labelled scenes and keep the best checkpoint."""

from __future__ import annotations

import shlex
import sys

import click

from geoseg.cli.options import overwrite_opt
from geoseg.output import check_writable


@click.group()
def train():
    """Train models from scratch (or from public weights where a network allows)."""


@train.command()
@click.option(
    "--train",
    "train_pairs",
    nargs=2,
    multiple=True,
    required=True,
    metavar="SCENE LABELS",
    help="A training scene and its label polygons (repeatable).",
)
@click.option(
    "--val",
    "val_pairs",
    nargs=2,
    multiple=True,
    required=True,
    metavar="SCENE LABELS",
    help="A validation scene and its labels (repeatable).",
)
@click.option("-o", "--output", required=True, help="Checkpoint to write (.safetensors).")
@click.option("--config", type=click.Choice(["light", "resnet50"]), default="light", show_default=True)
@click.option(
    "--pretrained", is_flag=True, help="Start from torchvision's COCO weights (resnet50; downloads)."
)
@click.option("--iterations", type=click.IntRange(1), default=1500, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True)
@click.option("--chip-size", type=click.IntRange(64), default=256, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=0.02, show_default=True)
@click.option("--val-every", type=click.IntRange(1), default=250, show_default=True)
@click.option(
    "--focus",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Share of chips centred on a labelled object (the rest sample the scene uniformly).",
)
@click.option("--val-chips", type=click.IntRange(1), default=48, show_default=True, help="Validation chips.")
@click.option("--seed", type=int, default=0, show_default=True)
@overwrite_opt
@click.pass_context
def maskrcnn(ctx, train_pairs, val_pairs, output, config, pretrained, iterations, batch_size, chip_size, lr,
             val_every, focus, val_chips, seed, overwrite):  # fmt: skip
    """Train Mask R-CNN on scenes with polygon labels; the best checkpoint by validation F1 is kept."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from geoseg.train_maskrcnn import TrainOptions, train_maskrcnn

    check_writable(output, overwrite=overwrite)
    opts = TrainOptions(
        config=config, iterations=iterations, batch_size=batch_size, chip_size=chip_size, lr=lr,
        val_every=val_every, focus=focus, val_chips=val_chips, seed=seed, pretrained=pretrained,
    )  # fmt: skip
    command = "geoseg train maskrcnn " + shlex.join(sys.argv[3:] if len(sys.argv) > 3 else [])
    quiet = ctx.obj.get("quiet", False)
    bar = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[info]}"), TimeRemainingColumn(), disable=quiet)  # fmt: skip
    with bar:
        task = bar.add_task("train", total=iterations, info="")

        def progress(it, total, info):
            text = f"loss {info['loss']:.3f}"
            if "f1" in info:
                text += f"  val F1 {info['f1']:.3f} (best {info['best_f1']:.3f})"
                bar.console.log(f"iteration {it}: {text}")
            bar.update(task, completed=it, info=text)

        best = train_maskrcnn(
            list(train_pairs), list(val_pairs), output, opts, command=command, progress=progress
        )
    click.echo(f"kept {output}: validation F1 {best['f1']:.3f} at iteration {best['iteration']}", err=True)
