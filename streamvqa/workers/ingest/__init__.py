"""Stream ingest: PyAV (RTSP, HTTP(S), files) and WebRTC/WHIP (aiortc) into sampled RGB frames.

Public API (what the server uses)::

    cfg = IngestConfig(url="rtsp://...", fps=1.0)        # pydantic; bad scheme -> "unsupported_scheme"
    probe_source(cfg)                                     # ?probe=true: raises IngestError(code, message)
    w = IngestWorker(cfg, sink).start()                   # sink(Frame) is called from a delivery thread
    w.state, w.stats().to_dict(), w.last_error            # connecting/running/reconnecting/recovering/ended/failed/stopped
    w.stats().time_base                                   # stream time -> source pts / wall clock (timebase.py)
    w.stop()
    IngestWorker(cfg, sink, resume_after=t)               # continue after stream time t (encoder restart)

    session, answer_sdp = await WhipSession.create(offer_sdp, sink, fps=1.0)   # from .whip (needs aiortc)
    await session.close()
"""

from .config import IngestConfig
from .errors import ERROR_CODES, IngestError, IngestErrorCode
from .frames import Frame
from .stats import IngestState, IngestStats
from .urls import SUPPORTED_SCHEMES, SourceKind, parse_source_url
from .worker import IngestWorker, ProbeResult, probe_source

__all__ = [
    "ERROR_CODES",
    "SUPPORTED_SCHEMES",
    "Frame",
    "IngestConfig",
    "IngestError",
    "IngestErrorCode",
    "IngestState",
    "IngestStats",
    "IngestWorker",
    "ProbeResult",
    "SourceKind",
    "parse_source_url",
    "probe_source",
]
