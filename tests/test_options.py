"""The options registry (geoseg.inference.options): one declaration per option, from which the
command line, the job schema, the parameter hash and the docs are made."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from geoseg.batch.jobs import SCHEMA, JobError, load_job
from geoseg.cli.main import cli
from geoseg.inference.options import (
    OptionError,
    PredictOptions,
    convert,
    from_spelled,
    hash_params,
    markdown_table,
    registry,
)

BASE = (
    "name: j\ninputs: [{glob: 'in/*.tif'}]\nmodel: geoseg.plugins:threshold_instances\n"
    "model_args: {threshold: 100}\noutputs: {dir: out}\n"
)
#: parameter hashes of jobs as the version before the registry computed them: a rerun of an old
#: job's archive must find its scenes done, not changed
OLD_HASHES = {
    "": "278a3087fa6fae6b",
    "tiling: {tile_size: 256, overlap: 32, batch_size: 2}\n": "b3ed22be1148eb9b",
    "predict: {score_threshold: 0.7, min_area: 20, any_size: true, gsd: native, rotated_view: false, "
    "device: cpu}\n": "ceada7d5227594a6",
    "predict: {blend: cosine, slices: '0,2-3', slice_axis: 1, hu_window: [40, 400], "
    "mask_threshold: 0.4}\n": "2508a333f43abecc",
}


@pytest.mark.parametrize("extra", list(OLD_HASHES))
def test_job_parameter_hashes_are_those_of_earlier_versions(tmp_path, extra):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.tif").write_bytes(b"")
    job = tmp_path / "job.yaml"
    job.write_text(BASE + extra)
    assert load_job(job).params_hash() == OLD_HASHES[extra]


def test_every_option_is_a_flag_a_job_key_and_a_row():
    command = cli.get_command(None, "predict")
    flags = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    sections = SCHEMA[1]
    table = markdown_table()
    for field, opt in registry():
        for flag in opt.flag.split("/"):
            assert flag in flags, flag
        section, name = opt.key.split(".")
        assert name in sections[section][0][1], opt.key
        assert f"| `{opt.name}` | `{opt.flag}` | `{opt.key}` |" in table
        assert field.name in {f.name for f in dataclasses.fields(PredictOptions)}


def test_one_option_checked_the_same_everywhere(tmp_path):
    with pytest.raises(OptionError, match="must be at least 16"):
        convert("tile_size", 8)
    r = CliRunner().invoke(cli, ["predict", "x.tif", "-m", "m:f", "--tile-size", "8"])
    assert r.exit_code == 2 and "--tile-size" in r.output
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.tif").write_bytes(b"")
    job = tmp_path / "job.yaml"
    job.write_text(BASE + "tiling:\n  tile_size: 8\n")
    with pytest.raises(JobError, match="line 7: 'tiling.tile_size' must be at least 16"):
        load_job(job)
    job.write_text(BASE + "predict:\n  hu_window: [40]\n")
    with pytest.raises(JobError, match="'predict.hu_window' must be CENTER,WIDTH"):
        load_job(job)
    job.write_text(BASE + "predict:\n  device: tpu\n")
    with pytest.raises(JobError, match="'predict.device' must be auto, cpu, cuda or cuda:N"):
        load_job(job)


def test_spelled_names_and_inverted_options():
    opts = from_spelled({"any_size": True, "gsd": "native", "slices": "0,2-3", "hu_window": "40,400"})
    assert opts.object_limits is False and opts.gsd == 0.0
    assert opts.slices == (0, 2, 3) and opts.hu_window == (40.0, 400.0)
    assert opts.changed() == {"any_size": True, "gsd": 0.0, "slices": (0, 2, 3), "hu_window": (40.0, 400.0)}
    # the hash leaves out what does not change the objects found
    assert hash_params(PredictOptions(batch_size=16, device="cpu")) == hash_params(PredictOptions())
    assert hash_params(PredictOptions(tile_size=256)) != hash_params(PredictOptions())
    with pytest.raises(KeyError):
        from_spelled({"tilesize": 3})


def test_an_inverted_option_by_its_field_name_is_not_negated():
    pairs = {"no_complete": "complete", "any_size": "object_limits", "keep_holes": "fill_holes",
             "no_match_radiometry": "match_radiometry"}  # fmt: skip
    for spelled, field in pairs.items():
        by_flag = getattr(from_spelled({spelled: True}), field)
        by_field = getattr(from_spelled({field: False}), field)
        assert by_flag is False and by_field is False, (spelled, field)
