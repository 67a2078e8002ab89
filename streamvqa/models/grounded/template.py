"""The chat layout the grounded default model is trained on and served with.

Training and serving must build the very same token sequence, so both import these strings.
ChatML, as SmolLM2-Instruct expects, with a short system prompt (a long one costs every step).
"""

PREFIX = "<|im_start|>system\nYou watch a video and answer questions about it.<|im_end|>\n<|im_start|>user\n"
FRAME_CLOSE = "\n"
ANSWER_OPEN = "<|im_end|>\n<|im_start|>assistant\n"


def timestamp(t: float) -> str:
    """Fixed-width so every frame's wrapper has the same token count (digits tokenize singly)."""
    s = int(t)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def frame_open(t: float) -> str:
    """"[00:01:23]": ten tokens, the same for every frame (short: it is paid once per frame)."""
    return f"[{timestamp(t)}]"


ANSWER_STYLE = " Answer with one word."


def question(q: str) -> str:
    """The question, an instruction for one-word answers, then the assistant turn opens."""
    return f"{q.strip()}{ANSWER_STYLE}{ANSWER_OPEN}"
