"""Run MONAI Label's own bundle infer task on a bundle folder, as its server would for one request.

Usage: python monailabel_infer.py BUNDLE_DIR IMAGE LABEL OUT_NPZ

Writes OUT_NPZ with the written result image and, for comparison, what the bundle's own synthesizer gives for the
same arrays and seed. Runs in a subprocess of the test, with the shim folder on PYTHONPATH:

tests/monailabel_shim stands in for a torchvision that cannot load on a CPU machine (see its docstring).
"""

from __future__ import annotations

import sys

import numpy as np


def main(bundle_dir: str, image: str, label: str, out_npz: str) -> None:
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
    np.savez(out_npz, written=written, expected=expected, image=image_array, label=label_array, code=code)


if __name__ == "__main__":
    main(*sys.argv[1:5])
