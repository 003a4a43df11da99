"""Run MONAI Label's own bundle infer task on a bundle folder, as its server would for one request.

Usage: python monailabel_infer.py BUNDLE_DIR IMAGE LABEL OUT_NPZ

Writes OUT_NPZ with the written result image and, for comparison, what the bundle's own synthesizer gives for the
same arrays and seed. Runs in a subprocess of the test because of the import shim below.

Shim: monailabel imports ``torchvision.utils`` at module level (for 2-D pathology previews, which this task never
calls). On these CPU machines torchvision cannot load beside torch 2.13 (PyPI only has its CUDA build), so when the
real import fails a module whose functions raise is put in its place; the infer task code itself is monailabel's.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np


def _shim_torchvision_if_unloadable() -> None:
    try:
        importlib.import_module("torchvision.utils")
    except Exception:
        for name in [n for n in sys.modules if n.startswith("torchvision")]:
            del sys.modules[name]

        def unavailable(*args, **kwargs):
            raise RuntimeError("torchvision is not loadable here (see tests/monailabel_infer.py)")

        utils = types.ModuleType("torchvision.utils")
        utils.make_grid = utils.save_image = unavailable
        package = types.ModuleType("torchvision")
        package.utils = utils
        sys.modules.update({"torchvision": package, "torchvision.utils": utils})


def main(bundle_dir: str, image: str, label: str, out_npz: str) -> None:
    _shim_torchvision_if_unloadable()
    import nibabel as nib
    from monai.bundle import ConfigParser
    from monailabel.tasks.infer.bundle import BundleInferTask

    def read(path):
        return np.asarray(nib.load(path).dataobj)

    task = BundleInferTask(bundle_dir, conf={})
    if not task.is_valid():
        raise SystemExit(f"MONAI Label rejected the bundle {bundle_dir}")
    result_file, params = task({"image": image, "label": label, "device": "cpu"})
    written = read(result_file)
    code = sys.modules["pathosynth"].__file__  # the bundle's own copy, not an installed one

    # the same request through the bundle's own synthesizer (network from models/model.pt via load_weights)
    sys.path.insert(0, bundle_dir)
    parser = ConfigParser()
    parser.read_config(f"{bundle_dir}/configs/inference.json")
    parser["bundle_root"] = bundle_dir
    synthesizer = parser.get_parsed_content("synthesizer")
    image_array, label_array = read(image), read(label)
    expected = synthesizer.synthesize(image_array, label_array, int(parser["seed"])).image
    np.savez(out_npz, written=written, expected=expected, image=image_array, label=label_array,
             code=code)


if __name__ == "__main__":
    main(*sys.argv[1:5])
