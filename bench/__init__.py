"""Benchmarks of streamvqa: speed, memory and accuracy of every method preset against baselines.

`streamvqa bench [--quick] [--json OUT] [--model M]` runs every section in one process and one run
(see `bench.runner.run`) and writes JSON, Markdown tables and PNG plots into `bench/results/`.
"""
