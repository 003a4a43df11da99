"""pathosynth: diffusion-based synthesis of medical images for data augmentation, as MONAI bundles."""

# every workflow's "initialize" starts with pathosynth.options.check_overrides()
from . import options as options
from .errors import install_excepthook

__version__ = "0.1.0"

install_excepthook()  # every bundle config imports pathosynth: a run failing on bad input ends with the message
