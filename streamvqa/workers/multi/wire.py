"""A question's events on the worker wire, the one conversion each way: the answer worker and
the encoder send `TokenMsg`s then an `AnswerMsg` (`asking.py`), the server's `RemoteSession`
turns them back into the engine's `TokenEvent`s and `Answer` (`facade.py`).

`AnswerMsg` carries every field of `Answer` but `blocks_per_layer` (per-layer block ids are
the worker's business); tests/multiproc/test_wire.py keeps the two in step.
"""

from __future__ import annotations

from typing import overload

from streamvqa.engine.protocols import AnswerEvent
from streamvqa.engine.types import Answer, TokenEvent
from streamvqa.proto import ipc


@overload
def to_wire(ev: TokenEvent) -> ipc.TokenMsg: ...
@overload
def to_wire(ev: Answer) -> ipc.AnswerMsg: ...
def to_wire(ev: AnswerEvent) -> ipc.TokenMsg | ipc.AnswerMsg:
    if isinstance(ev, TokenEvent):
        return ipc.TokenMsg(text=ev.text, token_id=ev.token_id, index=ev.index)
    return ipc.AnswerMsg(**ev.to_dict())  # to_dict: every field but blocks_per_layer


@overload
def from_wire(msg: ipc.TokenMsg) -> TokenEvent: ...
@overload
def from_wire(msg: ipc.AnswerMsg) -> Answer: ...
def from_wire(msg: ipc.TokenMsg | ipc.AnswerMsg) -> AnswerEvent:
    if isinstance(msg, ipc.TokenMsg):
        return TokenEvent(msg.text, msg.token_id, msg.index)
    fields = msg.model_dump()
    fields["evidence"] = [tuple(e) for e in fields["evidence"]]
    return Answer(**fields)
