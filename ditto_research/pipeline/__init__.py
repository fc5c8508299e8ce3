"""Generation pipelines: the engine (one configuration's stack), the offline and streaming sessions on it,
observers, and the threaded stage runner underneath."""

from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.observers import MotionRecorder, PipelineObserver, StageTimer
from ditto_research.pipeline.online import StreamingSession, StreamResult
from ditto_research.pipeline.session import RunResult, TalkingHeadSession

__all__ = [
    "Engine",
    "MotionRecorder",
    "PipelineObserver",
    "RunResult",
    "StageTimer",
    "StreamResult",
    "StreamingSession",
    "TalkingHeadSession",
]
