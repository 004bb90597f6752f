"""The PCA option (`segment.pca_components`, seed 003 §3.1): KMeans on principal components of the typical
shapes recovers the planted archetypes as well as KMeans on the shapes themselves."""

from __future__ import annotations

import os

from gridpersona.stages.runner import StageContext
from gridpersona.stages.segment_assign import run_segment_assign
from gridpersona.stages.segment_train import run_segment_train
from gridpersona.synthetic.truth_checks import segment_agreement

PCA_COMPONENTS = 8
# 150 meters: one meter moved between two segments changes the ARI by about 0.01-0.02, and KMeans in an
# 8-dimensional projection of the 2 x slots shape space may settle a borderline meter or two differently.
# 0.05 (the tolerance for another segmentation method against KMeans) allows that, not a lost archetype
# (one merged or split archetype costs 0.1 or more here).
ARI_TOLERANCE = 0.05


def test_pca_segments_recover_the_planted_archetypes_as_well_as_without(synthetic_lake, tmp_path):
    tables = ["silver.daily_load_shape", "bronze.customer_archive", "truth.meters"]
    settings, lake = synthetic_lake.copy(tmp_path / "lake", tables, f"segment.pca_components={PCA_COMPONENTS}")
    ctx = StageContext(settings, synthetic_lake.spark, lake, synthetic_lake.as_of, synthetic_lake.days)
    try:
        run_segment_train(ctx)
        run_segment_assign(ctx)
    finally:
        ctx.cache.release()
    model = lake.read_arrow("gold.segment_model").to_pylist()
    assert {r["pca_components"] for r in model} == {PCA_COMPONENTS}
    # The projection is saved beside KMeans, and segment-assign went through it (it loads the saved model).
    assert os.path.isdir(os.path.join(settings.lake.root, model[0]["model_path"], "pca"))
    with_pca = segment_agreement(lake, synthetic_lake.as_of)
    without = segment_agreement(synthetic_lake.lake, synthetic_lake.as_of)
    assert with_pca["ari_segment_id"] >= without["ari_segment_id"] - ARI_TOLERANCE, (with_pca, without)
    assert with_pca["ari_segment_label"] >= without["ari_segment_label"] - ARI_TOLERANCE, (with_pca, without)
