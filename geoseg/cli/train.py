"""``geoseg train``: train a model on labelled scenes and keep the best checkpoint."""

from __future__ import annotations

import os
import shlex
import sys

import click

from geoseg.cli.options import overwrite_opt
from geoseg.io.atomic import check_writable


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
@click.option(
    "--hard-negatives",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of chips drawn from windows where the model last found objects that are not labelled.",
)
@click.option("--val-chips", type=click.IntRange(1), default=48, show_default=True, help="Validation chips.")
@click.option(
    "--max-gsd", type=click.FloatRange(0, min_open=True), default=None, metavar="METRES",
    help="Record that geoseg predict resamples scenes coarser than this to it (its --gsd default).",
)  # fmt: skip
@click.option(
    "--rotated-view", is_flag=True,
    help="Record that geoseg predict also runs tiles turned by 45 degrees (its --rotated-view default).",
)  # fmt: skip
@click.option(
    "--match-radiometry", is_flag=True,
    help="Record each band's median over the training scenes: geoseg predict shifts a scene's bands to "
    "meet it (another sea colour, haze) unless told --no-match-radiometry.",
)  # fmt: skip
@click.option(
    "--keep-holes", is_flag=True,
    help="Record that the classes may have holes (by default they are solid: fill_holes lists them).",
)  # fmt: skip
@click.option(
    "--strong-augment", is_flag=True,
    help="Photometric changes of most chips: band gain and offset, gamma, haze, blur, noise, band shift.",
)  # fmt: skip
@click.option(
    "--init", "init", default=None, metavar="CHECKPOINT",
    help="Start from this geoseg Mask R-CNN checkpoint (fine-tuning): its config and normalisation are kept.",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@overwrite_opt
@click.pass_context
def maskrcnn(ctx, train_pairs, val_pairs, output, config, pretrained, iterations, batch_size, chip_size, lr,
             val_every, focus, hard_negatives, val_chips, max_gsd, rotated_view, match_radiometry, keep_holes,
             strong_augment, init, seed, overwrite):  # fmt: skip
    """Train Mask R-CNN on scenes with polygon labels; the best checkpoint by validation F1 is kept.

    The checkpoint records ship measures (metadata ``measures: ["ship"]``): geoseg predict gives its
    objects length_m, beam_m and heading_deg."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from geoseg.training.maskrcnn import TrainOptions, train_maskrcnn

    check_writable(output, overwrite=overwrite)
    if init and pretrained:
        raise click.BadParameter("a fine-tuned model starts from its checkpoint, not from COCO weights",
                                 param_hint="--pretrained")  # fmt: skip
    if init and ctx.get_parameter_source("config") is not click.core.ParameterSource.DEFAULT:
        raise click.BadParameter("a fine-tuned model keeps its checkpoint's config", param_hint="--config")
    opts = TrainOptions(
        config=config, iterations=iterations, batch_size=batch_size, chip_size=chip_size, lr=lr,
        val_every=val_every, focus=focus, hard_negatives=hard_negatives, val_chips=val_chips, seed=seed,
        pretrained=pretrained, max_gsd=max_gsd, rotated_view=rotated_view, solid=not keep_holes,
        strong_augment=strong_augment, init=init, match_radiometry=match_radiometry,
    )  # fmt: skip
    command = "geoseg train maskrcnn " + shlex.join(_arguments("maskrcnn"))
    quiet = ctx.obj.get("quiet", False)
    bar = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[info]}"), TimeRemainingColumn(), disable=quiet)  # fmt: skip
    with bar:
        task = bar.add_task("train", total=iterations, info="")

        def progress(it, total, info):
            text = f"loss {info['loss']:.3f}"
            if "f1" in info:
                text += f"  val F1 {info['f1']:.3f} (best {info['best_f1']:.3f})"
                if "hard_windows" in info:
                    text += f"  hard windows {info['hard_windows']}"
                bar.console.log(f"iteration {it}: {text}")
            bar.update(task, completed=it, info=text)

        best = train_maskrcnn(
            list(train_pairs), list(val_pairs), output, opts, command=command, progress=progress
        )
    click.echo(f"kept {output}: validation F1 {best['f1']:.3f} at iteration {best['iteration']}", err=True)


def _arguments(recipe: str) -> list[str]:
    """The command line's arguments after ``train RECIPE`` (global options such as ``-q`` before
    them are not part of the recipe)."""
    argv = sys.argv[1:]
    for i in range(len(argv) - 1):
        if argv[i] == "train" and argv[i + 1] == recipe:
            return argv[i + 2 :]
    return argv[2:] if len(argv) > 2 else []


def _parse_window(ctx, param, value):
    if value is None or value.lower() == "none":
        return None
    try:
        center, width = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not CENTER,WIDTH (e.g. -600,1500)") from None
    if width <= 0:
        raise click.BadParameter(f"'{value}': the window width must be positive")
    return center, width


def _parse_pair(ctx, param, value):
    if value is None:
        return None
    try:
        first, second = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not {param.metavar} (two numbers, e.g. -400,-500)") from None
    return first, second


@train.command()
@click.option("--images", required=True, help="Folder of training images (slices).")
@click.option("--masks", required=True, help="Folder of their masks, matched by name (non-zero = class).")
@click.option("--val-images", default=None, help="Folder of validation images (default: hold out a share).")
@click.option("--val-masks", default=None, help="Folder of the validation masks.")
@click.option("-o", "--output", required=True, help="Checkpoint to write (.safetensors).")
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--tile", type=click.IntRange(16), default=256, show_default=True, help="Training crop size.")
@click.option(
    "--window",
    callback=_parse_window,
    default="-600,1500",
    show_default=True,
    help="CT window CENTER,WIDTH applied to raw values before mean/std ('none': no window).",
)
@click.option("--depth", type=click.IntRange(1, 7), default=4, show_default=True)
@click.option("--base-width", type=click.IntRange(1), default=12, show_default=True)
@click.option("--down", type=click.Choice(["maxpool", "strided"]), default="maxpool", show_default=True)
@click.option("--up", type=click.Choice(["transpose", "interp"]), default="transpose", show_default=True)
@click.option("--norm", type=click.Choice(["batch", "instance", "none"]), default="batch", show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=3e-3, show_default=True)
@click.option("--classes", default="background,lung", show_default=True, help="Class names, comma-separated.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.15,
              show_default=True, help="Share held out for validation without --val-images.")  # fmt: skip
@click.option("--no-augment", is_flag=True, help="Plain crops: no flips, rotations or intensity jitter.")
@click.option(
    "--strong-augment",
    is_flag=True,
    help="Wider rotations and scales, gain/offset, blur or sharpening, white or correlated noise, and "
    "stronger, broader streaks: for models that must hold up on other scanners.",
)
@click.option(
    "--streaks",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of training crops given synthetic streak artefacts (bright/dark lines, never the class).",
)
@click.option(
    "--class-intensity", type=click.FloatRange(0, 1), default=0.0, show_default=True, metavar="SHARE",
    help="Share of training crops whose classes get another density (--class-shift) and, in half of "
    "them, a flattened texture: for organs that differ between patients (emphysema, few vessels).",
)  # fmt: skip
@click.option(
    "--class-shift", default="-200,50", show_default=True, metavar="LO,HI", callback=_parse_pair,
    help="The range of those density changes, in raw units through the window (HU); standard "
    "deviations with --window none.",
)  # fmt: skip
@click.option(
    "--class-floor", type=float, default=None, metavar="VALUE",
    help="Those changes never move the class's median below VALUE (raw units, HU): a lung made as "
    "dark as emphysema keeps its texture above air instead of becoming an air-filled region.",
)  # fmt: skip
@click.option(
    "--min-area",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Recorded in the checkpoint: predictions drop regions under this many pixels by default.",
)
@click.option(
    "--complete", "complete", default=None, metavar="BELOW,BODY", callback=_parse_pair,
    help="Recorded in the checkpoint: predicted regions are grown to the connected regions under BELOW "
    "inside the body (above BODY) that they mostly fill (CT lungs: -400,-500); see geoseg predict "
    "--no-complete.",
)  # fmt: skip
@click.option(
    "--gas-below", type=float, default=None, metavar="HU",
    help="Recorded with --complete: connected air-like regions whose median is under HU (-975 with "
    "--calibrate-air=-1000) are gas (stomach, bowel, trachea), never the class; predictions there "
    "are taken out before completion.",
)  # fmt: skip
@click.option(
    "--spacing", type=click.FloatRange(0, min_open=True), default=None, metavar="MM",
    help="Recorded in the checkpoint: the training slices' pixel spacing; slices whose files record "
    "another (DICOM, NIfTI) are resampled to it by geoseg predict.",
)  # fmt: skip
@click.option(
    "--calibrate-air", type=float, default=None, metavar="HU",
    help="Shift every training and validation slice so that the air outside the body reads HU "
    "(-1000): recorded in the checkpoint (radiometry), so geoseg predict calibrates each slice the "
    "same way and a scanner reading air at -960 or -1050 looks like the training data.",
)  # fmt: skip
@click.option(
    "--init", "init", default=None, metavar="CHECKPOINT",
    help="Start from this geoseg U-Net checkpoint (fine-tuning): keeps its layout, window, normalisation.",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@overwrite_opt
@click.pass_context
def unet(ctx, images, masks, val_images, val_masks, output, epochs, batch_size, tile, window, depth,
         base_width, down, up, norm, lr, classes, val_fraction, no_augment, strong_augment, streaks,
         class_intensity, class_shift, class_floor, min_area, complete, gas_below, spacing, calibrate_air,
         init, seed, overwrite):  # fmt: skip
    """Train a U-Net on image/mask folders; the best checkpoint by validation Dice is kept."""
    # OpenMP threads that spin while waiting slow training several-fold when other processes share
    # the cores; passive waiting costs little on an idle machine (takes effect before torch loads).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from geoseg.training.unet import UNetTrainOptions, train_unet

    if bool(val_images) != bool(val_masks):
        raise click.UsageError("--val-images and --val-masks go together")
    if no_augment and strong_augment:
        raise click.UsageError("--no-augment and --strong-augment exclude each other")
    if tile % (2**depth):
        raise click.BadParameter(
            f"{tile} is not a multiple of the U-Net stride {2**depth}", param_hint="--tile"
        )
    names = tuple(c.strip() for c in classes.split(",") if c.strip())
    check_writable(output, overwrite=overwrite)
    if init:
        for name in ("window", "depth", "base_width", "down", "up", "norm"):
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
                flag = name.replace("_", "-")
                raise click.BadParameter(
                    f"a fine-tuned model keeps its checkpoint's {flag}", param_hint=f"--{flag}"
                )
    opts = UNetTrainOptions(
        epochs=epochs, batch_size=batch_size, tile=tile, depth=depth, base_width=base_width, down=down, up=up,
        norm=norm, lr=lr, window=window, classes=names, seed=seed, val_fraction=val_fraction,
        augment=not no_augment, strong_augment=strong_augment, streaks=streaks, min_area=min_area,
        spacing=spacing, init=init, class_intensity=class_intensity, class_shift=class_shift,
        class_floor=class_floor, complete=complete, gas_below=gas_below, calibrate_air=calibrate_air,
    )  # fmt: skip
    command = "geoseg train unet " + shlex.join(_arguments("unet"))
    quiet = ctx.obj.get("quiet", False)
    bar = Progress(TextColumn("train"), BarColumn(), TextColumn("epoch {task.completed}/{task.total}"),
                   TextColumn("{task.fields[info]}"), TimeRemainingColumn(), disable=quiet)  # fmt: skip
    with bar:
        task = bar.add_task("train", total=epochs, info="")

        def progress(epoch, total, info):
            text = f"loss {info['loss']:.3f}"
            if info.get("epoch_done"):
                text += (f"  val Dice mean {info['mean_dice']:.4f} worst {info['worst_dice']:.4f} "
                         f"({info['worst_id']})  best {info['best_dice']:.4f}")  # fmt: skip
                bar.console.log(f"epoch {epoch} ({info['minutes']:.1f} min): {text}")
                bar.update(task, completed=epoch, info=text)
            else:
                bar.update(task, info=text)

        best = train_unet(images, masks, output, opts, val_images=val_images, val_masks=val_masks,
                          command=command, progress=progress)  # fmt: skip
    click.echo(
        f"kept {output}: validation Dice mean {best['mean_dice']:.4f}, worst {best['worst_dice']:.4f} "
        f"at epoch {best['epoch']}",
        err=True,
    )
