"""`streamvqa bench [--quick] [--json OUT] [--model M]`: every section, one run, tables + JSON + plots.

`streamvqa bench real --dataset D --questions FILE ...`: a real benchmark replayed against a server
(`bench/replay.py`).

`streamvqa bench soak [--minutes M]`: the embedded server's RSS and KV bytes over time (`bench/soak.py`).

`streamvqa bench answer-engines`: transformers vs vllm answering, 1 and 16 questions at once
(`bench/answer_engines.py`).

`streamvqa bench vllm-export`: bytes copied and time handing one question's memory to vLLM
(`bench/vllm_export.py`)."""

from __future__ import annotations

import argparse


def add_parsers(subparsers) -> None:
    """Add the `bench` command to the main CLI's subparsers."""
    p = subparsers.add_parser("bench", help="benchmarks: speed, memory, accuracy of every preset vs baselines")
    p.add_argument("--quick", action="store_true", help="small sizes (under 3 minutes on 2 idle CPU cores)")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="also write the result JSON here")
    p.add_argument("--model", default="default", help='main model: "default", "tiny:<family>" or a HF directory')
    p.add_argument("--name", help="results file name (bench/results/<name>.json); default: a timestamp")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=main)
    # `bench real ...`: replay a real benchmark against a server (bench/replay.py); plain `bench` is unchanged
    from bench.answer_engines import add_parser as add_answer_engines
    from bench.replay import add_parser as add_real
    from bench.soak import add_parser as add_soak
    from bench.vllm_export import add_parser as add_vllm_export

    sub = p.add_subparsers(dest="bench_command", metavar="{real,soak,answer-engines,vllm-export}")
    add_real(sub)
    add_soak(sub)
    add_answer_engines(sub)
    add_vllm_export(sub)


def main(args: argparse.Namespace) -> int:
    from bench.config import BenchConfig
    from bench.report import markdown
    from bench.runner import run, save

    cfg = BenchConfig.quick_config(args.model) if args.quick else BenchConfig.full_config(args.model)
    result = run(cfg)
    paths = save(result, args.name, args.json_out, plots=not args.no_plots)
    print(markdown(result))
    print(f"bench: {result['seconds']['total']:.0f} s; wrote {', '.join(paths['json'] + paths['plots'])}")
    return 0
