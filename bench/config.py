"""What one benchmark run measures: sizes per section, quick and full."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class BenchConfig:
    """Sizes of every section. `quick()` aims at under 3 minutes on 2 idle CPU cores with every
    preset; `full()` takes longer."""

    quick: bool = True
    model: str = "default"  # the main model (encoding, accuracy, baselines)
    tiny_model: str = "tiny:smolvlm"  # a tiny random model: encoding and the long-stream sweeps
    sweep_model: str = "tiny:smolvlm"  # model of the questions/memory sweep over stream length
    presets: list[str] | None = None  # None: every preset in `PRESETS`
    fps: float = 1.0
    encode_frames: int = 4  # frames per preset for the main model's encoding rate
    tiny_encode_frames: int = 16  # frames per preset for the tiny model's encoding rate
    multi_streams: list[int] = field(default_factory=lambda: [1, 2, 4])
    multi_frames: int = 8  # frames per session in the multi-stream run (tiny model)
    sweep_seconds: list[float] = field(default_factory=lambda: [30.0, 90.0])  # stream lengths
    needle_minutes: float = 0.2  # accuracy: synthetic needle stream length
    needle_streams: int = 1
    offline_frames: int = 8  # baseline (a): uniformly sampled frames re-encoded per question
    max_tokens: int = 8
    scale_streams: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])  # live streams at `fps`
    scale_seconds: float = 5.0  # length of each live run
    scale_capacity_frames: int = 12  # frames per stream, tiny model, streams pushing flat out
    scale_capacity_frames_main: int = 3  # the same for the main model
    transfers: bool = True
    accuracy: bool = True
    # answer engines (bench/answer_engines.py): transformers vs vllm, skipped without .venv-vllm
    answer_engines: bool = True
    answer_streams: int = 4
    answer_minutes: float = 0.1  # each needle stream's length
    answer_concurrency: list[int] = field(default_factory=lambda: [1, 16])
    answer_rounds: int = 1

    @classmethod
    def quick_config(cls, model: str = "default") -> BenchConfig:
        return cls(quick=True, model=model)

    @classmethod
    def full_config(cls, model: str = "default") -> BenchConfig:
        return cls(
            quick=False, model=model, sweep_model=model, encode_frames=16, tiny_encode_frames=120,
            multi_frames=30, sweep_seconds=[60.0, 300.0, 900.0], needle_minutes=2.0,
            needle_streams=3, offline_frames=16, max_tokens=16, scale_seconds=30.0,
            scale_capacity_frames=40, scale_capacity_frames_main=8, answer_minutes=0.3, answer_rounds=2,
        )

    def to_dict(self) -> dict:
        return asdict(self)
