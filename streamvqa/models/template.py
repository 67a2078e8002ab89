"""The chat layout every family is served with, and the grounded default model is trained on.

Training and serving must build the very same token sequence, so both import these strings.
ChatML, as SmolLM2-Instruct expects, with a short system prompt (a long one costs every step).

Default model (`streamvqa.models.default`, v2 layout), 12 tokens per frame::

    PREFIX <soft prompt>                        once per stream
    <11 visual tokens> FRAME_CLOSE              per frame (no text timestamp: order is time)
    question(q) answer(a) <|im_end|>

At 1 fps ten minutes are 7200 tokens, inside SmolLM2's 8192 positions. The frame's time is kept
by the engine beside its cache block (evidence, `at=`), not written into the prompt.

`frame_open` / `timestamp` are the timestamped wrapper the other (SmolVLM-style) families use.
"""

PREFIX = "<|im_start|>system\nYou watch a video and answer questions about it.<|im_end|>\n<|im_start|>user\n"
FRAME_CLOSE = "\n"
ANSWER_OPEN = "<|im_end|>\n<|im_start|>assistant\n"


def timestamp(t: float) -> str:
    """Fixed-width so every frame's wrapper has the same token count (digits tokenize singly)."""
    s = int(t)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def frame_open(t: float) -> str:
    """"[00:01:23]": ten tokens (the other families' frame wrapper; the default model has none)."""
    return f"[{timestamp(t)}]"


ANSWER_STYLE = " Answer with one word."


def question(q: str) -> str:
    """The question, an instruction for one-word answers, then the assistant turn opens."""
    return f"{q.strip()}{ANSWER_STYLE}{ANSWER_OPEN}"


def answer(a: str) -> str:
    """How a one-word answer is written in training: words with a leading space, so that the
    answer is the very token the caption uses (" red", " triangle", " centre" are single tokens);
    digits bare ("7", as in the caption). Evaluation strips the space."""
    a = a.strip()
    return a if a.isdigit() else " " + a
