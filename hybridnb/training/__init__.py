"""Training: the hybrid batch sampler (batch kinds, languages), the contrastive losses, GradCache, sparse
embedding gradients, several processes (torchrun), checkpoints with every RNG state, the trainer, and the run
skeleton every run (text or image-text) goes through.

Modules:
    batch_kinds      Batch kinds, strategies (mixtures of kinds) and the :class:`Batch` record of the hybrid batch sampler.
    language_sampling Languages of the hybrid batch sampler: availability, the language distribution ``p`` and per-pair draws.
    sampler_pools    Item pools of :class:`hybridnb.training.sampling.HybridBatchSampler` (private): endless shuffled epochs.
    sampling         Batch sampling for hybrid batch training (Elmahdy, Lin, Ahmad 2024, arXiv:2408.10536).
    losses           Contrastive losses for training the dual encoder.
    gradcache        Gradient caching for contrastive training (GradCache: Gao, Zhang, Han, Callan 2021, arXiv:2101.06983).
    embedding_grads  Input-embedding gradients computed on the rows a batch uses: the same values, without a dense fill.
    distributed      Several processes (torchrun, DistributedDataParallel): the process group, the global-batch loss, rank 0.
    checkpoints      Checkpoint plumbing of the trainer: every RNG state (per rank), atomic checkpoint and encoder writes, and
    loop             The training loop, one for text and image-text: batches from the sampler, the modality's loss and gradients,
    trainer          The contrastive trainer: a shared-weight dual encoder, InfoNCE, hybrid batches, exact resume.
    run_folder       The run skeleton: its report folder, config hash, lock, reuse and results (:func:`execute`).
"""

from hybridnb.training import (  # noqa: F401
    batch_kinds, language_sampling, sampler_pools, sampling, losses, gradcache, embedding_grads,
    distributed, checkpoints, loop, trainer, run_folder,
)
from hybridnb.training.batch_kinds import KINDS, STRATEGIES, Batch, parse_strategy  # noqa: F401
from hybridnb.training.sampling import HybridBatchSampler  # noqa: F401
from hybridnb.training.losses import DEFAULT_TEMPERATURE, InfoNCE, info_nce  # noqa: F401
from hybridnb.training.loop import train_loop  # noqa: F401
from hybridnb.training.trainer import (  # noqa: F401
    TextTraining, TrainResult, check_config, train,
)

__all__ = [
    'batch_kinds', 'language_sampling', 'sampler_pools', 'sampling', 'losses', 'gradcache',
    'embedding_grads', 'distributed', 'checkpoints', 'loop', 'trainer', 'run_folder', 'KINDS', 'STRATEGIES',
    'Batch',
    'parse_strategy', 'HybridBatchSampler', 'DEFAULT_TEMPERATURE', 'InfoNCE', 'info_nce', 'train_loop', 'TextTraining',
    'TrainResult', 'check_config', 'train',
]
