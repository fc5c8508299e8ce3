"""Metric layer of the evaluation: pure functions and small modules, no I/O beyond loading weights.

=====================  =======================================================================================
module                 what it measures
=====================  =======================================================================================
:mod:`.syncnet`        LSE-D / LSE-C / AV offset with SyncNet, as joonson/syncnet_python computes them
:mod:`.sync_proxy`     weights-free lip-sync proxy: mouth opening (MediaPipe FaceMesh) vs audio RMS envelope
:mod:`.motion_stats`   per-clip statistics of the (N, 265) motion: lip / eye energy, head-pose, shift ranges
:mod:`.latency`        percentile summaries of per-frame latencies, real-time factor, peak RSS / CUDA memory
=====================  =======================================================================================

The submodules are imported on use (``from ditto_research.evaluate.metrics.syncnet import lse_scores``) so
that importing this package pulls in neither torch models nor MediaPipe.
"""
