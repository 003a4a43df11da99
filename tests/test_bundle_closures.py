"""A bundle ships only the modules its configs reach (docs/ARCHITECTURE.md, "Layers"; issue 20).

``pack`` computes a bundle's code from its configs' ``pathosynth.x.y`` names and the modules' import statements
(:func:`pathosynth.deploy.imports.code_closure`). Importing a module executes its package's ``__init__``, so a
package ``__init__`` that re-exports its modules makes every bundle touching the package ship all of them. The rule
is therefore: sub-package ``__init__`` files import nothing, and code, tests and configs import from the defining
module. These tests state the rule and its consequence: the modules of one method are shipped by that method's
bundles only.
"""

from __future__ import annotations

import ast
import json
import re

import pytest

from conftest import BUNDLES, ROOT
from pathosynth.deploy.imports import code_closure, defining_module, module_file

PACKAGE = ROOT / "common" / "pathosynth"

# The modules of one method -> the bundles whose configs reach them. A module not listed is shared (cases, labels,
# I/O, the reverse step, checkpoints, the output writer, ...) and may be shipped by any bundle; ``data.acdc`` is
# shared too: ``load_cases`` tells the EMIDEC and ACDC layouts apart, so every bundle reads both.
METHOD_MODULES = {
    "lesion_inpainting": [
        "data.histograms",
        "engines.histogram_clusters",
        "synthesis.histogram_texture",
        "synthesis.volume_inferer",
    ],
    "lesion_inpainting lesion_mask_diffusion": [
        "diffusion.inpainting",
        "diffusion.objectives",
        "diffusion.clean_context",
        "networks.pseudo3d_unet",
        "synthesis.lesion_texture",
        "synthesis.handcrafted",
    ],
    "lesion_mask_diffusion": ["synthesis.lesion_masks", "synthesis.pipeline", "masks.postprocess"],
    "label_guided_latent_diffusion": [
        "engines.adversarial",
        "losses.adversarial",
        "networks.discriminators",
        "diffusion.label_guided",
        "synthesis.label_guided",
    ],
    "text_edge_controlnet": [
        "text.prompts",
        "text.vocabulary",
        "text.encoders",
        "networks.text_controlnet",
        "networks.edge_maps",
        "diffusion.text_edge",
        "synthesis.text_edge",
        "data.patch_mixing",
    ],
    "text_edge_controlnet downstream_segmentation": ["evaluation.segmentation", "metrics.segmentation"],
    "text_edge_controlnet class_conditional_ddpm": ["diffusion.guided_ddim"],
    "reference_guided_ddpm": ["diffusion.reference_guidance", "synthesis.reference_guided", "data.pathology_patches"],
    "class_conditional_ddpm": [
        "data.medmnist",
        "data.slice_classes",
        "diffusion.class_conditional",
        "synthesis.class_balanced",
        "evaluation.classifiers",
        "evaluation.explanations",
        "evaluation.classification_report",
    ],
    "downstream_segmentation": ["networks.segmenter", "losses.context_encoder"],
    "": [  # no bundle: studies, the packer, the command line, measurements only studies make
        "studies.bundle_study",
        "deploy.archive",
        "deploy.imports",
        "cli",
        "gpu_check",
        "masks.realism",
        "metrics.distribution",
        "metrics.image",
        "evaluation.similarity",
        "evaluation.synthesis_quality",
    ],
}
OWNERS = {f"pathosynth.{m}": set(bundles.split()) for bundles, modules in METHOD_MODULES.items() for m in modules}
BUNDLE_NAMES = sorted(p.parent.name for p in BUNDLES.glob("*/configs"))


@pytest.fixture(scope="module")
def closures():
    return {name: code_closure((BUNDLES / name / "configs").rglob("*.json")).modules for name in BUNDLE_NAMES}


def test_package_inits_import_nothing():
    """A sub-package's ``__init__`` is its docstring only: reaching one module never executes (nor ships) another."""
    inits = sorted(PACKAGE.glob("*/__init__.py"))
    assert len(inits) >= 12
    for init in inits:
        tree = ast.parse(init.read_text())
        where = init.relative_to(ROOT)
        assert ast.get_docstring(tree) and len(tree.body) == 1, f"{where} re-exports: import from the defining module"


def test_a_bundle_ships_only_the_modules_its_method_reaches(closures):
    assert BUNDLE_NAMES == sorted({b for owners in OWNERS.values() for b in owners})
    for module in OWNERS:
        assert module_file(module) is not None, f"{module} is no module: update METHOD_MODULES"
    for bundle, modules in closures.items():
        foreign = sorted(m for m in modules if m in OWNERS and bundle not in OWNERS[m])
        assert not foreign, f"{bundle} ships modules of other methods: {foreign}"
    for module, owners in OWNERS.items():  # and each method's modules are shipped by its bundles: the map is current
        assert all(module in closures[b] for b in owners), f"{module} is not shipped by all of {sorted(owners)}"


def test_examples_of_what_a_bundle_no_longer_ships(closures):
    """The cases that motivated the rule (before it, every bundle shipped 77-94 of the package's ~125 modules)."""
    inpainting = closures["lesion_inpainting"]
    assert not [m for m in inpainting if m.startswith("pathosynth.text")]
    assert "pathosynth.data.medmnist" not in inpainting and "pathosynth.engines.adversarial" not in inpainting
    assert "pathosynth.diffusion.inpainting" not in closures["class_conditional_ddpm"]
    assert not [m for m in closures["downstream_segmentation"] if m.startswith("pathosynth.diffusion")]


def _expressions(value):
    if isinstance(value, dict):
        return [e for v in value.values() for e in _expressions(v)]
    if isinstance(value, list):
        return [e for v in value for e in _expressions(v)]
    return [value] if isinstance(value, str) and value.startswith("$") else []


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_config_expressions_call_only_modules_the_bundle_imports(bundle):
    """With no re-exports, ``$pathosynth.data.cases.load_cases(...)`` works only once ``pathosynth.data.cases`` is
    imported: every module a config expression names is in the bundle's ``imports`` (``common.json``), including those
    inside lambdas that only run mid-training, which instantiating the configs does not evaluate. ``_target_`` paths
    import their module themselves."""
    imports, used = set(), {}
    for path in sorted((BUNDLES / bundle / "configs").glob("*.json")):
        for expression in _expressions(json.loads(path.read_text())):
            if expression.startswith("$import "):
                imports.add(expression.removeprefix("$import ").strip())
            for name in re.findall(r"\bpathosynth(?:\.[A-Za-z_]\w*)+", expression):
                used.setdefault(defining_module(name), path.name)
    missing = {module: config for module, config in used.items() if module != "pathosynth" and module not in imports}
    assert not missing, f"{bundle}: add '$import <module>' to configs/common.json imports for {missing}"
