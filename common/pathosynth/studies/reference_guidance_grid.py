"""How the low-pass factor N_s and the stop step a_s of the anatomy reference trade fidelity for diversity.

One anatomy reference slice (and one pathology patch placed in its myocardium, fixed) guides a trained
reference_guided_ddpm model for every (N_s, a_s) of a grid, with the same seeds in every cell, so cells differ only by
the guidance. Per cell two numbers, in the slice's unit intensity range: *distance* = mean |sample - reference|
(fidelity to the reference: small is faithful) and *diversity* = mean |sample_seed_i - sample_seed_j| over seed pairs
(how much two draws differ). Small N and a_s = 0 copy the reference; larger N leaves more of the image to the model,
a later stop step leaves the last steps unguided. The figure shows the first seed's sample in each cell.

Only for models trained on the embedded phantom when a figure is committed (docs never show real images).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

from ..bundle_configs import config_files
from ..diffusion.reference_guidance import GuidanceReference
from ..evaluation.figures import pyplot, save_figure
from ..io.atomic import write_json
from ..seeding import generator
from ..synthesis.reference_guided import model_grid, model_items
from ..synthesis.results import read_case
from .bundle_study import default_bundles_dir


def load_inference(
    dataset_dir: str | os.PathLike,
    ckpt_dir: str | os.PathLike,
    configs: Sequence[str] = ("inference.json",),
    overrides: dict | None = None,
    bundles_dir: str | os.PathLike | None = None,
) -> ConfigParser:
    """The bundle's inference config (its ``configs`` overlays in order) with the dataset and checkpoint folder set."""
    folder = Path(bundles_dir or default_bundles_dir()) / "reference_guided_ddpm" / "configs"
    parser = ConfigParser()
    parser.read_meta(str(folder / "metadata.json"))
    parser.read_config([str(f) for f in config_files(folder, configs)])
    parser.update({"dataset_dir": str(dataset_dir), "ckpt_dir": str(ckpt_dir), **(overrides or {})})
    return parser


def guidance_grid(
    out_png: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    ckpt_dir: str | os.PathLike,
    factors: Sequence[int] = (2, 4, 8, 16),
    stop_steps: Sequence[int] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    configs: Sequence[str] = ("inference.json",),
    overrides: dict | None = None,
    case_index: int = 0,
) -> dict:
    """Write the (rows N_s, columns a_s) figure and ``<out_png>.json`` with the distance/diversity numbers (2-D
    models)."""
    parser = load_inference(dataset_dir, ckpt_dir, configs, overrides)
    synthesizer = parser.get_parsed_content("synthesizer")
    case = parser.get_parsed_content("cases")[case_index]
    total = int(parser.get_parsed_content("num_train_timesteps"))
    stop_steps = list(stop_steps) if stop_steps is not None else [0, total // 4, total // 2, 3 * total // 4]
    image, label = read_case(case)
    slices, labels = model_items(image, label, model_grid(label.shape, synthesizer.fov_size, synthesizer.image_size))
    k = int(np.argmax([np.isin(s, synthesizer.placement_values).sum() for s in labels]))  # the slice with most anatomy
    reference = slices[k]
    patch, weight, _, placement = synthesizer.place_pathology(reference, labels[k], generator(0, "guidance_grid"))
    device = synthesizer.device

    def model(a):
        return (2 * torch.from_numpy(np.repeat(a[None, None], len(seeds), 0)) - 1).float().to(device)

    pathology = GuidanceReference(
        model(patch), weight=torch.from_numpy(weight)[None, None].to(device), name="pathology", **synthesizer.pathology
    )
    cells = {}
    for factor, stop in itertools.product(factors, stop_steps):
        anatomy = GuidanceReference(model(reference), factor=int(factor), stop_step=int(stop), name="anatomy")
        gens = [generator(seed, "guidance_grid_sample") for seed in seeds]
        sample = synthesizer.sampler(synthesizer.network, anatomy.image.shape, [anatomy, pathology], gens, device)
        unit = ((sample[:, 0].cpu().numpy() + 1) / 2).clip(0, 1)
        pairs = list(itertools.combinations(range(len(seeds)), 2))
        cells[(factor, stop)] = {
            "sample": unit[0],
            "distance": float(np.abs(unit - reference).mean()),
            "diversity": float(np.mean([np.abs(unit[i] - unit[j]).mean() for i, j in pairs])) if pairs else 0.0,
        }
    plt = pyplot()
    fig, axes = plt.subplots(
        len(factors), len(stop_steps) + 1, figsize=(1.7 * (len(stop_steps) + 1), 1.8 * len(factors)), squeeze=False
    )
    for row, factor in enumerate(factors):
        axes[row, 0].imshow(np.rot90(patch), cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title("reference + patch" if row == 0 else "", fontsize=7)
        axes[row, 0].set_ylabel(f"N_s = {factor}", fontsize=8)
        for col, stop in enumerate(stop_steps, start=1):
            cell = cells[(factor, stop)]
            axes[row, col].imshow(np.rot90(cell["sample"]), cmap="gray", vmin=0, vmax=1)
            axes[row, col].set_title(f"a_s={stop}  d={cell['distance']:.3f}  div={cell['diversity']:.3f}", fontsize=6)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    fig.suptitle(
        f"anatomy guidance: rows N_s, columns stop step a_s (T = {total}); "
        f"pathology N = {synthesizer.pathology['factor']}, "
        f"a = {synthesizer.pathology['stop_step']}",
        fontsize=8,
    )
    save_figure(fig, out_png)
    summary = {
        "case": case["case_id"],
        "slice": k,
        "num_train_timesteps": total,
        "seeds": list(seeds),
        "placement": placement,
        "sampler": synthesizer.sampler.settings(),
        "pathology_reference": dict(synthesizer.pathology),
        "cells": [
            {"factor": f, "stop_step": s, "distance": c["distance"], "diversity": c["diversity"]}
            for (f, s), c in cells.items()
        ],
    }
    write_json(Path(str(out_png) + ".json"), summary)
    return summary
