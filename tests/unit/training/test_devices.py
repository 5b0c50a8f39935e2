"""trainer.devices resolved before the trainer exists: auto is the launched process count, a
string count is a count, and what is not a count (a list of GPU indices) is refused in one line;
a count that disagrees with the launched world is refused too."""

import pytest

from nemo_flm.errors import ConfigError
from nemo_flm.training.devices import resolve_devices


@pytest.mark.parametrize(
    "kwargs, env, devices, world",
    [
        ({"devices": 2}, {}, 2, 2),
        ({"devices": "2", "num_nodes": 3}, {}, 2, 6),
        ({"devices": "auto", "accelerator": "cpu"}, {}, 1, 1),
        ({"devices": "auto", "num_nodes": 2}, {"LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8"}, 4, 8),
        ({"devices": -1}, {"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"}, 2, 2),
        ({}, {}, 1, 1),
    ],
)
def test_counts_and_auto_become_the_launched_processes(monkeypatch, kwargs, env, devices, world):
    for key in ("LOCAL_WORLD_SIZE", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert resolve_devices(kwargs) == world
    assert kwargs["devices"] == devices


@pytest.mark.parametrize("devices", [[0, 1], "0,1", 0, True, "four"])
def test_what_is_not_a_count_is_refused_in_one_line(monkeypatch, devices):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="is not a number of processes per node") as err:
        resolve_devices({"devices": devices})
    assert "\n" not in str(err.value)


def test_a_count_that_disagrees_with_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="= 2 but 4 processes were launched"):
        resolve_devices({"devices": 2})
