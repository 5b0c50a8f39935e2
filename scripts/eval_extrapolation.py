"""Length extrapolation of xPos against RoPE: `python scripts/eval_extrapolation.py`.

Trains two tiny models that differ only in their position embedding (the default job, scale base
scaled with the window as FLM did: 512 at 2048 -> 32 at 128), or reads them (--xpos/--rope .nemo),
then reports held-out perplexity at 1x, 2x, 4x and 8x the training length, with and without
blockwise causal attention, as a table (stdout and JSON) and a PNG. Goals from the issue: xPos
beats RoPE at 4x; ppl(4x)/ppl(1x) <= 1.1 with blockwise attention. Every cell is reported.
"""

import argparse
import json
import os
import subprocess
import sys

from nemo_flm.console import quiet_startup

quiet_startup()

from nemo_flm.atomic import atomic_output  # noqa: E402
from nemo_flm.inference.extrapolation import (  # noqa: E402
    LENGTH_FACTORS,
    held_out_sequences,
    markdown_table,
    perplexities,
    plot,
)
from nemo_flm.inference.loading import load_for_inference  # noqa: E402

TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")


def train(kind: str, args) -> str:
    """The default job with this position embedding; returns its .nemo (re-running resumes)."""
    name = f"extrapolation_{kind}"
    command = [
        sys.executable,
        TRAIN,
        f"name={name}",
        f"exp_manager.exp_dir={args.workdir}",
        f"model.position_embedding={kind}",
        f"model.xpos_scale_base={args.scale_base}",
        f"trainer.max_steps={args.steps}",
        f"trainer.val_check_interval={args.steps}",
        f"exp_manager.checkpoint_callback_params.every_n_train_steps={args.steps}",
    ]
    print(f"training {kind}: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL if args.quiet_training else None)
    return os.path.join(args.workdir, name, "checkpoints", f"{name}.nemo")


def evaluate(paths: dict, per_language: int) -> tuple:
    """{model/attention: {length: ppl}} and the training length."""
    results, window = {}, None
    for kind, path in paths.items():
        for blockwise in (False, True):
            loaded = load_for_inference(path, overrides={"blockwise_attention": blockwise})
            window = loaded.cfg.seq_length
            lengths = [f * window for f in LENGTH_FACTORS]
            sequences = held_out_sequences(loaded.cfg.data, lengths[-1], per_language)
            label = f"{kind}, {'blockwise' if blockwise else 'full causal'}"
            results[label] = perplexities(loaded.network, sequences, lengths)
            print(f"{label}: " + ", ".join(f"{n}: {p:.2f}" for n, p in results[label].items()), flush=True)
    return results, window


def verdicts(results: dict, window: int) -> list:
    four, one = 4 * window, window
    lines = []
    for attention in ("full causal", "blockwise"):
        x, r = results[f"xpos, {attention}"][four], results[f"rope, {attention}"][four]
        lines.append(f"xPos beats RoPE at 4x ({attention}): {'met' if x < r else 'NOT met'} ({x:.2f} vs {r:.2f})")
    ratio = results["xpos, blockwise"][four] / results["xpos, blockwise"][one]
    lines.append(
        f"xPos ppl(4x)/ppl(1x) <= 1.1 with blockwise attention: {'met' if ratio <= 1.1 else 'NOT met'} ({ratio:.3f})"
    )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--xpos", help="an xPos .nemo to read instead of training one")
    p.add_argument("--rope", help="a RoPE .nemo to read instead of training one")
    p.add_argument("--steps", type=int, default=200, help="training steps of each model (default: the main job's)")
    p.add_argument("--scale-base", type=float, default=32.0, help="xPos scale base of the trained models")
    p.add_argument("--workdir", default="nemo_experiments", help="where the trained models go")
    p.add_argument("--samples", type=int, default=8, help="held-out sequences per language")
    p.add_argument("--output", default="extrapolation", help="writes OUTPUT.json and OUTPUT.png")
    p.add_argument("--quiet-training", action="store_true", help="hide the training runs' output")
    args = p.parse_args()
    paths = {kind: getattr(args, kind) or train(kind, args) for kind in ("xpos", "rope")}
    for kind, path in paths.items():
        if not os.path.isfile(path):
            raise SystemExit(f"error: {kind} model '{path}' not found")
    try:
        results, window = evaluate(paths, args.samples)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    report = [*markdown_table(results, window), "", *verdicts(results, window)]
    print("\n".join(report))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with atomic_output(f"{args.output}.json") as tmp, open(tmp, "w") as handle:
        json.dump({"window": window, "models": paths, "perplexity": results, "verdicts": report[-3:]}, handle, indent=1)
    with atomic_output(f"{args.output}.png") as tmp:
        plot(results, window, tmp + ".png")
        os.replace(tmp + ".png", tmp)
    print(f"wrote {args.output}.json and {args.output}.png")


if __name__ == "__main__":
    main()
