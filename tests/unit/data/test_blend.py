"""Data blends on the command line: Megatron's weight/prefix pairs, prefixes alone or a dict, each
replacing the whole blend (not merged into a default); malformed blends are one-line errors that
name both sides of a mismatch."""

from pathlib import Path

import pytest

from nemo_flm.compose import compose_job
from nemo_flm.config import load_model_config
from nemo_flm.config.blend import Dataset, parse_blend
from nemo_flm.data.blend import check_blend_files
from nemo_flm.errors import ConfigError

CONF = str(Path(__file__).parents[3] / "conf")


def _data(*overrides):
    """The data section of flm_tiny with command-line overrides, as Hydra composes it."""
    return load_model_config(compose_job("flm_tiny", overrides).model).data


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.data.blend=[53.5,data/en_text,46.5,data/zh_text]", [("en_text", 53.5), ("zh_text", 46.5)]),
        ("model.data.blend=[data/en_text]", [("en_text", 1.0)]),
        ("model.data.blend={fr: data/fr_text}", [("fr", 1.0)]),  # a language the defaults do not name
    ],
)
def test_command_line_blend_replaces_the_default(override, expected):
    datasets = parse_blend(_data(override))
    assert [(d.name, d.weight) for d in datasets] == expected


def test_dict_blend_with_weights():
    data = _data("model.data.blend={en: data/en_text, zh: data/zh_text}", "model.data.weights={en: 3, zh: 1}")
    assert parse_blend(data) == [Dataset("en", "data/en_text", 3.0), Dataset("zh", "data/zh_text", 1.0)]


def test_no_blend_is_the_built_in_corpus():
    data = _data()
    assert parse_blend(data) is None and dict(data.corpus.weights) == {"en": 53.5, "zh": 46.5}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.data.blend={en: a, zh: b}", "model.data.weights={en: 1}"],
            "data.weights names ['en'] but data.blend names ['en', 'zh']",
        ),
        (["model.data.blend=[1.0,a,2.0]"], "neither weight/prefix pairs"),
        (["model.data.blend=[1.0,x/a,2.0,y/a]"], "names two datasets 'a'"),
        (["model.data.blend=[0,a]"], "weights must all be > 0"),
        (["model.data.blend=[]"], "neither weight/prefix pairs"),
        (["model.data.blend=[1.0,a]", "model.data.weights={a: 1}"], "data.weights goes with a dict data.blend"),
    ],
)
def test_malformed_blend_is_a_one_line_error(overrides, message):
    with pytest.raises(ConfigError) as err:
        _data(*overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_and_unreadable_files_are_named(tmp_path):
    (tmp_path / "en.bin").write_bytes(b"")
    (tmp_path / "en.idx").write_bytes(b"")
    with pytest.raises(ConfigError, match=f"'{tmp_path}/zh.bin/.idx' not found"):
        check_blend_files(_data(f"model.data.blend=[{tmp_path}/zh,{tmp_path}/en]"))
    with pytest.raises(ConfigError, match=f"'{tmp_path}/en.idx' is not a readable megatron index"):
        check_blend_files(_data(f"model.data.blend=[{tmp_path}/en]"))
