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
from hybridnb.image_text.caption_table import (  # noqa: F401
    ImageTextTable, XTD10_LANGUAGES, MULTI30K_LANGUAGES, MULTI30K_SPLITS, load_xtd10, load_multi30k,
)
from hybridnb.image_text.openmoji_cldr import (  # noqa: F401
    OPENMOJI_LANGUAGES, SPLITS, ATTRIBUTION, FONT_FILE, font_path, load_font, render, notdef_image,
    is_single_glyph, is_rendered, clean_name, emoji_family, emoji_id, emoji_chars, candidate_emojis,
    build_openmoji_cldr, split_table, load_openmoji_cldr, cache_dir,
)
from hybridnb.image_text.towers import (  # noqa: F401
    IMAGE_TOWERS, PixelTower, SmallCNN, TinyViT, PrecomputedFeatures, CLIPVision, OpenCLIPVision,
    build_image_tower,
)
from hybridnb.image_text.model import (  # noqa: F401
    ImageTextModel, symmetric_info_nce, image_text_loss, ImageTextBatch, collate_image_text, batch_embeddings,
    batch_loss,
)
from hybridnb.image_text.metrics import (  # noqa: F401
    IMAGE, RECALL_KS, METRICS, ImageTextResult, image_text_metrics, confidence_intervals,
)
from hybridnb.image_text.trainer import (  # noqa: F401
    ImageTextTraining, ImageTextTrainResult, check_config, build_model, build_image_optimizer,
    validation_loss, train_image_text,
)
from hybridnb.image_text.runs import (  # noqa: F401
    DATASETS, RUN_KEYS, ZERO_SHOT_KEYS, check_run, check_runs, prepare_data, eval_table, run_image_text,
)

__all__ = [
    'caption_table', 'openmoji_cldr', 'towers', 'model', 'metrics', 'trainer', 'runs',
    'ImageTextTable', 'XTD10_LANGUAGES', 'MULTI30K_LANGUAGES', 'MULTI30K_SPLITS', 'load_xtd10',
    'load_multi30k', 'OPENMOJI_LANGUAGES', 'SPLITS', 'ATTRIBUTION', 'FONT_FILE', 'font_path',
    'load_font', 'render', 'notdef_image', 'is_single_glyph', 'is_rendered', 'clean_name',
    'emoji_family', 'emoji_id', 'emoji_chars', 'candidate_emojis', 'build_openmoji_cldr', 'split_table',
    'load_openmoji_cldr', 'cache_dir', 'IMAGE_TOWERS', 'PixelTower', 'SmallCNN', 'TinyViT',
    'PrecomputedFeatures', 'CLIPVision', 'OpenCLIPVision', 'build_image_tower', 'ImageTextModel',
    'symmetric_info_nce', 'image_text_loss', 'ImageTextBatch', 'collate_image_text', 'batch_embeddings',
    'batch_loss',
    'IMAGE', 'RECALL_KS', 'METRICS', 'ImageTextResult', 'image_text_metrics',
    'confidence_intervals', 'ImageTextTraining', 'ImageTextTrainResult', 'check_config',
    'build_model', 'build_image_optimizer', 'validation_loss', 'train_image_text', 'DATASETS',
    'RUN_KEYS', 'ZERO_SHOT_KEYS', 'check_run', 'check_runs', 'prepare_data', 'eval_table',
    'run_image_text',
]
