"""Single-frame QA on held-out synthetic scenes: exact match per question type.

Each question is answered by offline greedy generation over the serving layout (prefix, one
timestamped frame, question), built by the default model adapter, so the figures are those of
the served model. The scenes come from a seed the training never uses.

    streamvqa eval frames [--per-type 50] [--seed 20261122] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from streamvqa.evals.common import normalise, per_type, table, write_json
from streamvqa.synth.qa import QA_TYPES, question_of_type
from streamvqa.synth.scenes import random_scene, render_scene

EVAL_SEED = 20261122


def held_out_questions(seed: int, n_per_type: int, size: tuple[int, int] = (128, 128)) -> list[dict]:
    """`n_per_type` fresh scenes per question type, each with one question."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in QA_TYPES:
        for _ in range(n_per_type):
            scene = random_scene(rng)
            qa = question_of_type(scene, kind, rng)
            out.append({"type": kind, "question": qa.question, "answer": qa.answer,
                        "frame": render_scene(scene, *size)})
    return out


def load_default_adapter(weights: str | None = None, threads: int | None = None, device: str = "cpu"):
    """The served default model (real SmolLM2 + grounded vision weights)."""
    from pathlib import Path

    from streamvqa.models.default import DefaultAdapter
    from streamvqa.models.smollm2 import ensure_smollm2

    if threads:
        torch.set_num_threads(threads)
    return DefaultAdapter.from_pretrained(ensure_smollm2(), device=device,
                                          vision_weights=Path(weights) if weights else None)


@torch.inference_mode()
def answer_offline(adapter, frames: list[tuple[np.ndarray, float]], question: str, max_new_tokens: int = 8) -> str:
    """Greedy answer of the whole sequence at once (the adapter's offline reference inputs)."""
    inputs = adapter.reference_inputs(frames, question)
    out = adapter.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=sorted(adapter.eos_ids), pad_token_id=adapter.tokenizer.pad_token_id)
    ids = out[0, -max_new_tokens:] if out.shape[1] > inputs["inputs_embeds"].shape[1] else out[0]
    return adapter.tokenizer.decode(ids, skip_special_tokens=True).strip()


def evaluate(adapter, questions: list[dict]) -> dict:
    rows = []
    t0 = time.perf_counter()
    for q in questions:
        pred = answer_offline(adapter, [(q["frame"], 0.0)], q["question"])
        rows.append({"type": q["type"], "question": q["question"], "answer": q["answer"], "prediction": pred,
                     "correct": normalise(pred) == normalise(q["answer"])})
    types = per_type(rows)
    overall = sum(r["correct"] for r in rows) / max(1, len(rows))
    return {"eval": "frames", "accuracy": overall, "n": len(rows), "per_type": types,
            "min_type_accuracy": min((v["accuracy"] for v in types.values()), default=0.0),
            "seconds": round(time.perf_counter() - t0, 1), "rows": rows}


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="streamvqa eval frames", description=__doc__.splitlines()[0])
    p.add_argument("--per-type", type=int, default=50, help="questions per type (default 50)")
    p.add_argument("--seed", type=int, default=EVAL_SEED)
    p.add_argument("--weights", default=None, help="vision weights (default: the committed ones)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", default=None, metavar="OUT", help="write the result as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    if args.per_type < 1:
        print("streamvqa eval frames: --per-type must be at least 1", file=sys.stderr)
        return 2
    adapter = load_default_adapter(args.weights, args.threads, args.device)
    result = evaluate(adapter, held_out_questions(args.seed, args.per_type))
    result["model"] = adapter.name
    print(table(result["per_type"], result["accuracy"], result["n"]))
    write_json(args.json, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
