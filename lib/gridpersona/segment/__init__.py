"""Segmentation: typical load shapes per meter -> named segments with stable ids.

``features`` (typical shapes, vacancy rule), ``kmeans`` (deterministic KMeans,
choice of k), ``labels`` (names), ``ids`` (stable ids), ``tables`` (gold row
assembly) and ``estimator`` (``SegmentEstimator.fit -> SegmentModel``, save/load).
No lake, no config models: the stages in :mod:`gridpersona.stages` wire them.
"""

from gridpersona.segment.estimator import Segment, SegmentEstimator, SegmentModel, SegmentParams, Training

__all__ = ["Segment", "SegmentEstimator", "SegmentModel", "SegmentParams", "Training"]
