"""Train the grounded default model: a small vision tower + "words" connector for frozen SmolLM2.

Stage 1 pre-trains the tower and its scene-parse head on scene labels (colour and shape per
position, digit, count). Stage 2 freezes them and trains the connector's word tables, the soft
prompt and rank-8 adapters on the LM's attention (`--lora-rank`, 0 for none; the LM's own
weights stay frozen) through the LM, loss on answer tokens, on single-scene QA, short stream
snippets and event streams (what the LM reads of a long stream) with needle questions.
Deterministic given --seed and the step counts; --minutes caps the wall time, final held-out
evaluation included (stage 2 stops early, keeping what it has; --stop-step replays such a run).
Prints the loss curve and held-out exact-match accuracy per question type.

grounded-v4, from scratch on the 2-core CPU in 42 minutes (docs/model_card.md)::

    python tools/train_default_model.py --seed 0 --report /tmp/train.json

grounded-v6, the default, a fine-tune of v4 (`--recipe v6`: no stage 1, tower frozen; word tables,
soft prompt and adapters train on a mix with busy streams of the hard set, `samples.busy_sample`),
35 minutes on one core::

    OMP_NUM_THREADS=1 python tools/train_default_model.py --recipe v6 --threads 1 --eval-every 60 --report /tmp/train6.json

`--recipe v7` (a trial, not adopted; docs/model_card.md "v7") fine-tunes v6 further on busy
streams of 4-10 minutes with ten questions each, 41 minutes on one core.

bf16 autocast only on CUDA or where the CPU has AVX-512 BF16 / AMX; fp32 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvqa.models import template  # noqa: E402
from streamvqa.models.grounded.lora import LoRA  # noqa: E402
from streamvqa.models.grounded.samples import (  # noqa: E402
    SIZES,
    busy_sample,
    event_sample,
    scene_sample,
    snippet_sample,
)
from streamvqa.models.grounded.sequences import IGNORE, Sample, Tokens, collate, embed  # noqa: E402
from streamvqa.models.grounded.vision import GroundedVision, GroundedVisionConfig, default_weights_path  # noqa: E402
from streamvqa.models.smollm2 import ensure_smollm2  # noqa: E402
from streamvqa.synth.qa import QA_TYPES  # noqa: E402
from streamvqa.synth.scenes import random_scene, render_scene, scene_labels  # noqa: E402
from streamvqa.synth.streams import Event, Stream, stream_scene  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- stage 1 ---------------------------------------------------------------------------------
def parse_batch(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Frames at one random size: 70% scenes, 30% stream-like (empty, one object, or a digit)."""
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    frames, labels = [], defaultdict(list)
    for _ in range(n):
        if rng.random() < 0.7:
            scene = random_scene(rng)
        else:
            r = rng.random()
            kind = "empty" if r < 0.4 else ("digit" if r < 0.65 else "object")
            ev = []
            if kind == "digit":
                ev = [Event(0, 1, digit=int(rng.integers(10)), digit_colour=str(rng.choice(["white", "black"])))]
            elif kind == "object":
                s = random_scene(rng, n_objects=1, digit_p=0.0).objects[0]
                ev = [Event(0, 1, shape=s.shape, colour=s.colour, position=s.position, size=s.size)]
            st = Stream(seed=int(rng.integers(2**31 - 1)), duration=1, background=tuple(int(x) for x in rng.integers(80, 160, 3)),
                        drift=(10.0, 10.0, 10.0), drift_period=float(rng.uniform(60, 400)),
                        noise=float(rng.uniform(2, 8)), events=ev)
            scene = stream_scene(st, float(rng.uniform(0, 400)), int(rng.integers(1 << 20)))
        frames.append(render_scene(scene, w, h))
        for k, v in scene_labels(scene).items():
            labels[k].append(v)
    x = torch.from_numpy(np.stack(frames))
    return x, {k: torch.as_tensor(np.array(v)) for k, v in labels.items()}


def parse_loss(vision: GroundedVision, x: torch.Tensor, y: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    p = vision.parse(x)
    loss = (F.cross_entropy(p.colour.flatten(0, 1), y["colour"].flatten())
            + F.cross_entropy(p.shape.flatten(0, 1), y["shape"].flatten())
            + F.cross_entropy(p.digit, y["digit"]) + F.cross_entropy(p.count, y["count"]))
    acc = {
        "colour": (p.colour.argmax(-1) == y["colour"]).float().mean().item(),
        "shape": (p.shape.argmax(-1) == y["shape"]).float().mean().item(),
        "digit": (p.digit.argmax(-1) == y["digit"]).float().mean().item(),
        "count": (p.count.argmax(-1) == y["count"]).float().mean().item(),
    }
    return loss, acc


def stage1(vision: GroundedVision, seed: int, steps: int, batch: int, max_s: float, lr0: float = 2e-3,
           device: str = "cpu") -> dict:
    rng = np.random.default_rng(seed)
    params = list(vision.tower.parameters()) + list(vision.head.parameters())
    opt = torch.optim.AdamW(params, lr=lr0, weight_decay=1e-4)
    vision.train()
    t0 = time.time()
    for step in range(steps):
        lr = lr0 * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = parse_batch(rng, batch)
        loss, acc = parse_loss(vision, x.to(device), {k: v.to(device) for k, v in y.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"stage1 step {step} loss {loss.item():.4f} acc " + " ".join(f"{k}={v:.3f}" for k, v in acc.items()))
        if time.time() - t0 > max_s:
            log(f"stage1 stopped at step {step} (time cap)")
            break
    vision.eval()
    with torch.no_grad():
        x, y = parse_batch(np.random.default_rng(seed + 12345), 512)
        _, acc = parse_loss(vision, x.to(device), {k: v.to(device) for k, v in y.items()})
    log("stage1 held-out head accuracy " + " ".join(f"{k}={v:.3f}" for k, v in acc.items()))
    return {"stage1_steps_done": step + 1, "stage1_s": round(time.time() - t0, 1), "stage1_head_accuracy": acc}


# -- stage 2 ---------------------------------------------------------------------------------
def train_batch(rng: np.random.Generator, args: argparse.Namespace) -> list[Sample]:
    """All scenes, all snippets of one length, all event streams or all busy streams (long: a
    smaller batch)."""
    r = rng.random()
    if args.p_hard:  # drawn first, so a recipe without busy streams keeps v4's draws
        if r < args.p_hard:
            return _some(lambda: busy_sample(rng, n_turns=args.hard_turns, minutes=tuple(args.hard_minutes)),
                         args.hard_batch)
        r = (r - args.p_hard) / (1 - args.p_hard)
    if r < args.p_events:
        return _some(lambda: event_sample(rng), args.events_batch)
    if r >= args.p_events + args.p_snippet:
        return [scene_sample(rng) for _ in range(args.batch)]
    n = int(rng.integers(2, args.snippet_frames + 1))
    return _some(lambda: snippet_sample(rng, n_frames=n), args.batch)


def _some(draw, n: int) -> list[Sample]:
    out: list[Sample] = []
    while len(out) < n:
        s = draw()
        if s is not None:
            out.append(s)
    return out


def to_device(batch: dict, device: str) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


AMP = {"on": True}  # bf16 autocast for the LM (set from --amp)


def lm_loss(lm, vision, batch: dict, emb, n_prefix: int = 0) -> torch.Tensor:
    """Summed cross-entropy over the answer tokens. The first `n_prefix`
    positions (system prompt and soft prompt, the same in every row) run once for the batch and
    are shared through the KV cache: a third of a single-frame sample's tokens."""
    labels = batch["labels"][:, n_prefix:][:, 1:]
    keep = labels != IGNORE
    with torch.autocast(emb.weight.device.type, dtype=torch.bfloat16, enabled=AMP["on"]):
        past = None
        if n_prefix:
            head = embed(batch["ids"][:1, :n_prefix], [], vision, emb)
            past = lm.model(inputs_embeds=head, use_cache=True).past_key_values
            past.batch_repeat_interleave(batch["ids"].shape[0])
        x = embed(batch["ids"][:, n_prefix:], batch["frames"], vision, emb)
        h = lm.model(inputs_embeds=x, attention_mask=batch["mask"], past_key_values=past).last_hidden_state[:, :-1]
        logits = lm.lm_head(h[keep])  # only where an answer token is predicted
    return F.cross_entropy(logits.float(), labels[keep], reduction="sum")


def step_loss(lm, vision, samples: list[Sample], toks: Tokens, pad_id: int, device: str, n_prefix: int) -> float:
    """Backward of the batch's mean answer-token loss, in micro-batches of samples with the same
    number of frames: padding a long event stream to its batch's longest would waste most of a
    CPU's time, and the per-token cost barely depends on the batch size there."""
    groups: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[len(s.frames)].append(s)
    emb = lm.get_input_embeddings()
    parts = [to_device(collate(g, toks, vision.n_tokens, pad_id, vision.prompt.shape[0]), device) for g in groups.values()]
    n_total = sum(int((b["labels"] != IGNORE).sum()) for b in parts)
    total = 0.0
    for b in parts:
        loss = lm_loss(lm, vision, b, emb, n_prefix)
        (loss / n_total).backward()
        total += loss.item()
    return total / n_total


def held_out(seed: int, per_type: int, n_snippets: int, n_events: int = 0, n_hard: int = 0) -> list[Sample]:
    """Single-question samples: `per_type` scenes per QA type, stream snippets, event streams
    (their types prefixed "events:"), then busy streams ("hard:", drawn from their own seed)."""
    rng = np.random.default_rng(seed)
    out = [scene_sample(rng, kinds=(k,)) for k in QA_TYPES for _ in range(per_type)]
    out += _some(lambda: snippet_sample(rng, n_turns=1), n_snippets)
    for s in _some(lambda: event_sample(rng, n_turns=1), n_events):
        s.types = [f"events:{t}" for t in s.types]
        out.append(s)
    hrng = np.random.default_rng(seed + 1)
    for s in _some(lambda: busy_sample(hrng, n_turns=1), n_hard):
        s.types = [f"hard:{t}" for t in s.types]
        out.append(s)
    return out


@torch.no_grad()
def exact_match(lm, vision, samples: list[Sample], toks: Tokens, pad_id: int, batch: int = 16) -> dict[str, float]:
    """Greedy exact match, computed teacher-forced: every answer token (and <|im_end|>) must be
    the argmax, which is exactly when greedy decoding produces the answer and stops."""
    emb = lm.get_input_embeddings()
    hits: dict[str, list[int]] = defaultdict(list)
    samples = sorted(samples, key=lambda s: len(s.frames))  # little padding in a chunk
    for i in range(0, len(samples), batch):
        chunk = samples[i:i + batch]
        b = to_device(collate(chunk, toks, vision.n_tokens, pad_id, n_prompt=vision.prompt.shape[0]), emb.weight.device.type)
        x = embed(b["ids"], b["frames"], vision, emb)
        labels = b["labels"][:, 1:]
        keep = labels != IGNORE
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=AMP["on"]):
            h = lm.model(inputs_embeds=x, attention_mask=b["mask"]).last_hidden_state[:, :-1]
            pred = lm.lm_head(h[keep]).float().argmax(-1)
        ok = torch.ones_like(labels, dtype=torch.bool)
        ok[keep] = pred == labels[keep]
        for j, s in enumerate(chunk):
            hits[s.types[0]].append(int(ok[j].all()))
    acc = {k: float(np.mean(v)) for k, v in sorted(hits.items())}
    scene = [x for k in QA_TYPES for x in hits.get(k, [])]
    events = [x for k, v in hits.items() if k.startswith("events:") for x in v]
    hard = [x for k, v in hits.items() if k.startswith("hard:") for x in v]
    hard_no = [x for k in ("hard:exists_no", "hard:now_no") for x in hits.get(k, [])]
    stream = [x for k, v in hits.items() if k not in QA_TYPES and ":" not in k for x in v]
    acc["frames_overall"] = float(np.mean(scene)) if scene else 0.0
    acc["snippets_overall"] = float(np.mean(stream)) if stream else 0.0
    acc["events_overall"] = float(np.mean(events)) if events else 0.0
    if hard:
        acc["hard_overall"] = float(np.mean(hard))
        acc["hard_no"] = float(np.mean(hard_no)) if hard_no else 0.0
    return acc


def stage2(lm, vision, tok, args, deadline: float) -> dict:
    toks = Tokens(tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 2
    params = [vision.colour_words, vision.shape_words, vision.digit_words, vision.count_words, vision.position_words,
              vision.prompt]
    groups = [{"params": params, "lr_scale": 1.0}]
    if vision.lora is not None:  # hooked into the LM by main()
        groups.append({"params": list(vision.lora.parameters()), "lr_scale": args.lora_lr / args.lr})
    opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(args.seed + 1)
    evalset = held_out(args.seed + 999, args.eval_per_type, args.eval_snippets, args.eval_events, args.eval_hard)
    n_prefix = len(toks(template.PREFIX)) + vision.prompt.shape[0]  # shared by every row (lm_loss)
    history, results, evals = [], {}, []
    t0 = time.time()
    ema = None
    for step in range(args.steps):
        warm = min(1.0, (step + 1) / args.warmup)
        lr = args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        samples = train_batch(rng, args)
        opt.zero_grad()
        loss = step_loss(lm, vision, samples, toks, pad_id, args.device, n_prefix)
        opt.step()
        ema = loss if ema is None else 0.9 * ema + 0.1 * loss
        history.append(round(loss, 4))
        if step % 10 == 0:
            log(f"stage2 step {step} loss {loss:.4f} ema {ema:.4f} lr {lr:.2e} ({(time.time() - t0) / (step + 1):.2f} s/step)")
        last = step == args.steps - 1 or step + 1 == args.stop_step or time.time() > deadline
        if (args.eval_every and step and step % args.eval_every == 0) or last:
            results = exact_match(lm, vision, evalset, toks, pad_id)
            evals.append({"step": step, "s": round(time.time() - t0, 1), **results})
            log(f"held-out at step {step}: " + " ".join(f"{k}={v:.3f}" for k, v in results.items()))
            if args.out:
                vision.save(Path(args.out))
                log(f"saved {args.out}")
        if last:
            if step < args.steps - 1:
                log(f"stage2 stopped after {step + 1} of {args.steps} steps ({'--stop-step' if step + 1 == args.stop_step else 'time cap'})")
            break
    return {"loss_curve": history, "held_out": results, "evals": evals, "steps_done": step + 1,
            "stage2_s": round(time.time() - t0, 1)}


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


WEIGHTS = default_weights_path().parent
# --recipe sets these defaults (explicit flags still win): v4 trains from scratch; v6 fine-tunes
# v4 (tower frozen, no stage 1) on a mix with busy streams of the hard set (issue 22)
# v6: a fine-tune of v4 on a mix with busy streams of the hard set (`samples.busy_sample`: yes
# and no on one context, every answer type, up to six turns, streams of 1-6 minutes)
_V6 = {"init": str(WEIGHTS / "grounded-v4.safetensors"), "out": str(WEIGHTS / "grounded-v6.safetensors"),
       "stage1_steps": 0, "steps": 180, "lr": 1e-3, "lora_lr": 8e-4, "warmup": 15, "p_hard": 0.5,
       "hard_batch": 1, "hard_minutes": (1.0, 6.0), "amp": "off", "eval_per_type": 5,
       "eval_snippets": 10, "eval_events": 10, "eval_hard": 40, "eval_reserve_s": 300.0, "minutes": 75.0}
RECIPES: dict[str, dict] = {
    "v4": {"out": str(WEIGHTS / "grounded-v4.safetensors")},
    "v6": _V6,
    # v7 (trial): v6 fine-tuned further on busy streams as long as the hard set's 10-minute ones,
    # ten questions per stream (the context's cost shared by more answers); the rest as v6
    "v7": {**_V6, "init": str(WEIGHTS / "grounded-v6.safetensors"), "out": str(WEIGHTS / "grounded-v7.safetensors"),
           "steps": 150, "lr": 6e-4, "lora_lr": 5e-4, "warmup": 10, "p_hard": 0.6, "hard_minutes": (4.0, 10.0),
           "hard_turns": 10},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="v4",
                    help="defaults of a published version (v6: fine-tune of v4 with busy streams; v7: trial)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=45.0, help="wall-time cap for the whole run")
    ap.add_argument("--stage1-steps", type=int, default=600)
    ap.add_argument("--stage1-batch", type=int, default=64)
    ap.add_argument("--stage1-max-s", type=float, default=420.0)
    ap.add_argument("--stage1-lr", type=float, default=2e-3)
    ap.add_argument("--init", default=None, help="start from saved weights (fine-tune them)")
    ap.add_argument("--steps", type=int, default=540, help="stage-2 steps (cosine schedule length)")
    ap.add_argument("--stop-step", type=int, default=0,
                    help="stop stage 2 after this many steps of the --steps schedule (replays a time-capped run)")
    ap.add_argument("--eval-reserve-s", type=float, default=150.0,
                    help="seconds kept from --minutes for the final held-out evaluation")
    ap.add_argument("--batch", type=int, default=8, help="scenes or snippets per batch")
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--p-snippet", type=float, default=0.1, help="share of batches that are snippets")
    ap.add_argument("--snippet-frames", type=int, default=16, help="most frames in a training snippet")
    ap.add_argument("--p-events", type=float, default=0.3, help="share of batches that are event streams")
    ap.add_argument("--events-batch", type=int, default=2, help="event streams per batch")
    ap.add_argument("--p-hard", type=float, default=0.0,
                    help="share of batches that are busy streams of the hard set (drawn before the others)")
    ap.add_argument("--hard-batch", type=int, default=2, help="busy streams per batch")
    ap.add_argument("--hard-turns", type=int, default=6, help="questions per busy stream")
    ap.add_argument("--hard-minutes", type=float, nargs=2, default=(1.0, 4.0), help="busy streams' length range")
    ap.add_argument("--warmup", type=int, default=30, help="stage-2 warm-up steps")
    ap.add_argument("--lora-rank", type=int, default=8, help="rank of LM attention adapters (0: none, LM untouched)")
    ap.add_argument("--lora-alpha", type=float, default=16.0)
    ap.add_argument("--lora-lr", type=float, default=1e-3, help="peak learning rate of the adapters")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                    help="bf16 autocast for the LM; auto: on CUDA, or on CPUs with AVX-512 BF16 / AMX")
    ap.add_argument("--eval-every", type=int, default=0, help="held-out evaluation every N steps (0: at the end only)")
    ap.add_argument("--eval-per-type", type=int, default=30)
    ap.add_argument("--eval-snippets", type=int, default=60)
    ap.add_argument("--eval-events", type=int, default=40)
    ap.add_argument("--eval-hard", type=int, default=0, help="held-out busy-stream questions")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="where to save the weights (default: the recipe's version)")
    ap.add_argument("--report", default=None, help="write the loss curve and accuracies as JSON")
    ap.set_defaults(**RECIPES[ap.parse_known_args(argv)[0].recipe])
    args = ap.parse_args(argv)
    if args.hard_turns < 1:
        ap.error(f"--hard-turns must be at least 1, got {args.hard_turns}")

    start = time.time()
    AMP["on"] = args.amp == "bf16" or (args.amp == "auto" and (args.device.startswith("cuda") or _cpu_has_bf16()))
    log(f"device {args.device}, bf16 autocast {'on' if AMP['on'] else 'off'}, threads {args.threads}")
    deadline = start + args.minutes * 60 - args.eval_reserve_s  # the final held-out evaluation fits too
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_smollm2()
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval().to(args.device)
    tok = AutoTokenizer.from_pretrained(path)
    for p in lm.parameters():
        p.requires_grad_(False)
    emb = lm.get_input_embeddings()
    if args.init:
        vision = GroundedVision.load(Path(args.init), emb, tok)
        log(f"initialised from {args.init}")
    else:
        vision = GroundedVision(GroundedVisionConfig(), emb, tok)
    vision.to(args.device)
    log(f"vision params {sum(p.numel() for p in vision.parameters())}")
    s1: dict = {}
    if args.stage1_steps > 0:
        s1 = stage1(vision, args.seed, args.stage1_steps, args.stage1_batch, max_s=args.stage1_max_s,
                    lr0=args.stage1_lr, device=args.device)
    for p in list(vision.tower.parameters()) + list(vision.head.parameters()):
        p.requires_grad_(False)
    if args.lora_rank and vision.lora is None:
        vision.config.lora_alpha = args.lora_alpha  # saved with the weights: the load needs it
        vision.lora = LoRA.for_model(lm, args.lora_rank, vision.config.lora_alpha).to(args.device)
    if vision.lora is not None:
        vision.lora.hook(lm)  # training and the held-out evaluation see the adapted LM
        log(f"LoRA rank {vision.lora.rank} on {len(vision.lora.adapters)} LM projections, "
            f"{sum(p.numel() for p in vision.lora.parameters())} params")
    if args.steps > 0:
        report = stage2(lm, vision, tok, args, deadline)
    else:
        vision.eval()
        toks = Tokens(tok)
        results = exact_match(lm, vision, held_out(args.seed + 999, args.eval_per_type, args.eval_snippets,
                                                   args.eval_events, args.eval_hard), toks,
                              tok.pad_token_id if tok.pad_token_id is not None else 2)
        log("held-out: " + " ".join(f"{k}={v:.3f}" for k, v in results.items()))
        if args.out:
            vision.save(Path(args.out))
            log(f"saved {args.out}")
        report = {"held_out": results, "steps_done": 0}
    report.update(s1)
    report.update({"seed": args.seed, "wall_s": round(time.time() - start, 1), "args": vars(args)})
    log(f"done in {report['wall_s']:.0f} s")
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
