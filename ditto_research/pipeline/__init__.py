"""Generation pipelines: the threaded stage runner, source registration and the offline session API."""

from ditto_research.pipeline.session import RunResult, TalkingHeadSession

__all__ = ["RunResult", "TalkingHeadSession"]
