"""Stage 1 in a session: StreamMem's redundant-frame filter and clips."""

from streamvqa.engine import Engine
from tests.engine.conftest import get_adapter
from tests.policies.test_units_streamkv import frames_of


def test_redundant_frames_are_merged_before_encoding():
    session = Engine(adapter=get_adapter("tiny:smolvlm")).open_stream(
        "s", method="streammem", options={"unit_frames": 2, "memory_tokens": 10000})
    for image, t in frames_of("AAABCCD"):
        session.push_frame(image, t)
    stats = session.stats()
    assert stats.frames_merged == 3  # A, A after A; C after C
    # clips of two kept frames: [A(0-2), B], [C(4-5), D]
    spans = [(u.t_start, u.t_end) for u in session.retainer.memory.units.values()]
    assert spans == [(0.0, 3.0), (4.0, 6.0)]
    assert stats.frames_encoded == 7


def test_without_the_filter_every_frame_is_encoded():
    session = Engine(adapter=get_adapter("tiny:smolvlm")).open_stream(
        "s", method="streammem", options={"unit_frames": 2, "frame_filter": None, "memory_tokens": 10000})
    for image, t in frames_of("AAAB"):
        session.push_frame(image, t)
    assert session.stats().frames_merged == 0 and len(session.retainer.memory.units) == 2
