"""The streaming engine: online KV encoding, block memory, retrieval, answers."""

from streamvqa.engine.config import EngineConfig
from streamvqa.engine.engine import Engine
from streamvqa.engine.errors import EngineError
from streamvqa.engine.session import StreamSession
from streamvqa.engine.types import Answer, SessionStats, TokenEvent

__all__ = ["Answer", "Engine", "EngineConfig", "EngineError", "SessionStats", "StreamSession", "TokenEvent"]
