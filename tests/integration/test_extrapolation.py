"""scripts/eval_extrapolation.py on two saved models: every cell reported, and the properties a
correct measurement has (blockwise equals full causal up to the training length, and differs past it)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "eval_extrapolation.py"


def test_extrapolation_table_from_saved_models(single_process, tmp_path):
    from nemo_flm.training.flm_model import FLMModel
    from tests.helpers import tiny_cfg

    paths = {}
    for kind in ("xpos", "rope"):
        cfg = tiny_cfg(
            position_embedding=kind, xpos_scale_base=4.0, vocab_size=100256, make_vocab_size_divisible_by=128
        )
        paths[kind] = str(tmp_path / f"{kind}.nemo")
        FLMModel(cfg).save_to(paths[kind])
    out = tmp_path / "report" / "extrapolation"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--xpos",
            paths["xpos"],
            "--rope",
            paths["rope"],
            "--samples",
            "2",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    window = report["window"]
    assert window == 32 and out.with_suffix(".png").stat().st_size > 0
    ppl = report["perplexity"]
    assert set(ppl) == {f"{k}, {a}" for k in ("xpos", "rope") for a in ("full causal", "blockwise")}
    for kind in ("xpos", "rope"):
        full, block = ppl[f"{kind}, full causal"], ppl[f"{kind}, blockwise"]
        assert list(full) == [str(f * window) for f in (1, 2, 4, 8)]
        assert abs(full[str(window)] - block[str(window)]) < 1e-6 * full[str(window)]
        assert full[str(8 * window)] != block[str(8 * window)]
    assert "| xpos, blockwise |" in result.stdout and "ppl(4x)/ppl(1x) <= 1.1" in result.stdout
