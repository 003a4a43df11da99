"""What MONAI's engines lack: resumable checkpoints, sharded synthesis with the output contract."""

from .checkpoint import ResumableCheckpoint, load_weights
from .distributed import barrier, rank_and_world, unwrap
from .synthesis import SynthesisRunner
