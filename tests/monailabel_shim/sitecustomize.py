"""Put this folder on PYTHONPATH to run MONAI Label 0.8.5 on a CPU machine whose torchvision cannot load.

monailabel imports ``torchvision.utils`` at module level (2-D pathology previews, which a bundle infer task never
calls). PyPI's Linux torchvision wheels are built for PyTorch's CUDA wheels; beside the CPU torch (``torch==2.13.0``
from /opt/wheels or the PyTorch CPU index) the import fails (``operator torchvision::nms does not exist``). When the
real import fails, modules whose functions raise are put in its place; where torchvision works (a CUDA machine, or
torchvision from https://download.pytorch.org/whl/cpu) nothing is replaced.
"""

import importlib
import sys
import types


def _stand_in_for_unloadable_torchvision() -> None:
    try:
        importlib.import_module("torchvision.utils")
        return
    except Exception as err:  # noqa: BLE001 - any failure to load means the stand-in is needed
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]

    def unavailable(*args, **kwargs):
        raise RuntimeError(f"torchvision is not loadable here ({reason}); see tests/monailabel_shim/sitecustomize.py")

    utils = types.ModuleType("torchvision.utils")
    utils.make_grid = utils.save_image = unavailable
    package = types.ModuleType("torchvision")
    package.__path__ = []
    package.utils = utils
    sys.modules.update({"torchvision": package, "torchvision.utils": utils})


_stand_in_for_unloadable_torchvision()
