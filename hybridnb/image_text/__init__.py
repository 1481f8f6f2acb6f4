"""Image-text retrieval: caption tables and the XTD10 / Multi30K / OpenMoji-CLDR sets, image towers, the
text-image dual encoder, its trainer, metrics and runs: a modality library that plugs into the run skeleton
(:mod:`hybridnb.training.run_folder`); the studies of it (comparison, ratio sweep) are in :mod:`hybridnb.studies`.

Modules:
    caption_table    Image-text data: a parallel caption table over images, and the XTD10 / Multi30K task 1 loaders.
    openmoji_cldr    OpenMoji-CLDR: an offline multilingual image-text retrieval set built from two PyPI packages.
    towers           Image towers for :class:`hybridnb.image_text.model.ImageTextModel`, each a `torch.nn.Module` with ``out_dim``.
    model            Multilingual image-text retrieval: a text-image dual encoder trained with hybrid batches.
    metrics          Metrics for multilingual image-text retrieval, computed by `hybridnb.evaluation.metrics.evaluate`.
    trainer          The image-text parts of the training loop for the image-text dual encoder
    image_features   The frozen EfficientNet-Lite0 extractor (weights checked by sha256) and its on-disk feature cache.
    text_features    The text tower's frozen lower layers: their outputs cached once per caption, only the top layers run.
    runs             One image-text run (notebook 07) and the zero-shot baseline, as tasks of the run skeleton.
"""

from hybridnb.image_text import (  # noqa: F401
    caption_table, openmoji_cldr, towers, model, metrics, trainer, runs,
)

__all__ = ['caption_table', 'openmoji_cldr', 'towers', 'model', 'metrics', 'trainer', 'runs']
