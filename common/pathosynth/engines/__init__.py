"""What MONAI's engines lack: resumable checkpoints, sharded synthesis with the output contract, VQ-GAN training."""

from .adversarial import LOSS_TERMS, AdversarialVQTrainer, decoder_last_layer, local_perceptual_loss, vq_loss_terms
from .checkpoint import (
    ResumableCheckpoint,
    bundle_checkpoint,
    export_monai_model,
    load_matching_weights,
    load_weights,
)
from .histogram_clusters import HistogramClustersWriter
from .synthesis import SynthesisRunner
