"""Does a histogram-conditioned lesion model give the texture asked of it? Issue 22's measurement in one command:
``python -m pathosynth.cli texture_control_study OUT --dataset_dir DATA [--scale texture_cpu]``.

Splits DATA by case (``test_fraction`` and ``split_seed`` of the scale, as the LeFusion study), trains LeFusion-J
with histogram conditioning (``train_histogram.json``) on the training pathological cases -- training writes the
k-means centres of the training lesions' histograms, darkest first -- then synthesises every held-out pathological
case once per centre (``texture: "clusters"`` with ``num_samples_per_case`` = the number of centres, so variant k asks
for centre k, each bin perturbed by up to ±10 % as in the official code). The measure is the mean synthetic intensity
inside the case's lesion mask per variant, on the image's own scale: a model that follows the request gives a higher
mean for a brighter centre. Outputs: ``OUT/texture_control.json`` (every number, per case and variant),
``OUT/texture_control.md`` rendered from it alone (``python -m pathosynth.cli report``) and
``OUT/texture_preview.png`` (one held-out case's lesion slice: real | mask | darkest | brightest request; on licensed
data it stays in OUT).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ..data.histograms import mean_bin
from ..data.labels import class_values
from ..data.layouts import read_datalist
from ..io.atomic import atomic_path
from ..io.preview import save_preview
from ..io.results import as_results, write_results
from ..markdown_tables import fixed, markdown_table
from ..synthesis.results import read_case
from .bundle_study import BundleStudy, StudyJob
from .results_markdown import provenance_markdown, wall_time_markdown

__all__ = ["TextureControlStudy", "render_texture_control_report", "summarise_texture_control"]

STUDY = "texture_control"
LABELS = {"background": 0, "LV": 1, "myocardium": 2, "MI": 3, "PMO": 4}


def _rank_correlation(values) -> float:
    """Spearman rank correlation of ``values`` with their order (0, 1, ...): +1 when the means rise with the centre;
    undefined (NaN) when the means are all equal."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.all(values == values[0]):
        return float("nan")
    return float(spearmanr(np.arange(len(values)), values).statistic)


def summarise_texture_control(cases: list[Mapping]) -> dict:
    """The study's verdict from per-case means (``variant_means`` darkest → brightest centre, ``intensity_range``):
    the fraction of cases where the brightest request gives the higher mean than the darkest, that difference (image
    units and as a fraction of the case's intensity range), the fraction whose means rise monotonically with the
    centre's order and the mean rank correlation."""
    usable = [c for c in cases if len(c["variant_means"]) >= 2]
    diffs = np.array([c["variant_means"][-1] - c["variant_means"][0] for c in usable], dtype=float)
    relative = np.array(
        [(c["variant_means"][-1] - c["variant_means"][0]) / c["intensity_range"] for c in usable], dtype=float
    )
    monotonic = [bool(np.all(np.diff(c["variant_means"]) > 0)) for c in usable]
    rho = [_rank_correlation(c["variant_means"]) for c in usable]
    n = len(usable)
    return {
        "cases": n,
        "brighter_when_asked": int((diffs > 0).sum()),
        "fraction_brighter": float((diffs > 0).mean()) if n else float("nan"),
        "difference_mean": float(diffs.mean()) if n else float("nan"),
        "difference_std": float(diffs.std(ddof=1)) if n > 1 else float("nan"),
        "difference_median": float(np.median(diffs)) if n else float("nan"),
        "relative_difference_mean": float(relative.mean()) if n else float("nan"),
        "fraction_monotonic": float(np.mean(monotonic)) if n else float("nan"),
        "rank_correlation_mean": float(np.nanmean(rho)) if not np.all(np.isnan(rho)) else float("nan"),
    }


class TextureControlStudy(BundleStudy):
    """Plan and run the study; see the module docstring. ``dataset_dir`` is an EMIDEC-layout folder."""

    scale_bundle = "lesion_inpainting"
    bundle = "lesion_inpainting"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.files, self.settings = self.section("inpainting")
        self.labels = dict(self.settings.get("labels", LABELS))
        self.lesion_classes = list(self.settings.get("lesion_classes", ["MI", "PMO"]))
        self.clusters = int(self.settings.get("texture_clusters", 4))
        self.ckpt_dir, self.synthetic_dir = self.out / "models", self.out / "synthetic"

    def jobs_plan(self) -> list[StudyJob]:
        files, settings = self.files, self.settings
        common = {**settings, "ckpt_dir": str(self.ckpt_dir)}
        return [
            StudyJob(
                "train_histogram",
                self.bundle,
                ["train.json", "train_histogram.json", *files],
                {
                    **common,
                    "datalist": self.split_path("train_pathological"),
                    "output_dir": str(self.out / "logs" / "tensorboard"),
                },
                "training",
            ),
            StudyJob(
                "synthesise_clusters",
                self.bundle,
                ["inference.json", "inference_histogram.json", *files],
                {
                    **common,
                    "datalist": self.split_path("test_pathological"),
                    "output_dir": str(self.synthetic_dir),
                    "texture": "clusters",
                    "num_samples_per_case": self.clusters,
                    "progress": False,
                },
                "inference",
                needs=["train_histogram"],
            ),
        ]

    def clusters_file(self) -> Path:
        found = sorted(self.ckpt_dir.glob("*_histogram_clusters.json"))
        if len(found) != 1:
            raise RuntimeError(f"expected one texture clusters file in {self.ckpt_dir}, found {found}")
        return found[0]

    def test_cases(self) -> list[dict]:
        return read_datalist(self.split_path("test_pathological"))

    def lesion(self, label: np.ndarray) -> np.ndarray:
        return np.isin(label, class_values(self.labels, self.lesion_classes))

    def variant_images(self) -> dict[str, dict[int, Path]]:
        """Case id -> texture centre -> synthetic image, read from the provenance records (not from file names)."""
        datalist = json.loads((self.synthetic_dir / "datalist.json").read_text())
        by_case: dict[str, dict[int, Path]] = {}
        for entry in datalist["training"]:
            record = json.loads((self.synthetic_dir / entry["provenance"]).read_text())
            clusters = {r["cluster"] for r in record["synthesis"]["texture_requests"]}
            if len(clusters) != 1:
                raise RuntimeError(f"{entry['provenance']}: one cluster per sample expected, got {sorted(clusters)}")
            by_case.setdefault(record["case_id"], {})[clusters.pop()] = self.synthetic_dir / entry["image"]
        return by_case

    def measure(self) -> list[dict]:
        """Per held-out case: the real lesion mean and the synthetic lesion mean of each variant (centre order)."""
        by_case = self.variant_images()
        rows = []
        for case in self.test_cases():
            image, label = read_case(case)
            lesion = self.lesion(label)
            variants = by_case.get(case["case_id"], {})
            if not lesion.any() or len(variants) != self.clusters:
                continue
            means = []
            for k in range(self.clusters):
                synthetic, _ = read_case({"image": str(variants[k]), "label": case["label"]})
                means.append(float(synthetic[lesion].mean()))
            rows.append(
                {
                    "case_id": case["case_id"],
                    "lesion_voxels": int(lesion.sum()),
                    "real_mean": float(image[lesion].mean()),
                    "intensity_range": float(image.max() - image.min()),
                    "variant_means": means,
                }
            )
        return rows

    def write_preview(self, rows: list[dict]) -> None:
        """Real | mask | darkest | brightest request of the held-out case with the most lesion voxels."""
        if not rows:
            return
        case_id = max(rows, key=lambda r: r["lesion_voxels"])["case_id"]
        case = next(c for c in self.test_cases() if c["case_id"] == case_id)
        image, label = read_case(case)
        lesion = self.lesion(label)
        variants = self.variant_images()[case_id]
        darkest, brightest = (
            read_case({"image": str(variants[k]), "label": case["label"]})[0] for k in (0, self.clusters - 1)
        )
        save_preview(
            self.out / "texture_preview.png",
            [
                {
                    "name": case_id,
                    "input": image,
                    "label": np.where(lesion, label, 0),
                    "mask": lesion,
                    "outputs": [darkest, brightest],
                }
            ],
            ("real", "lesion mask", "darkest centre", "brightest centre"),
        )

    def write_report(self) -> Path:
        rows = self.measure()
        clusters = json.loads(self.clusters_file().read_text())
        results = as_results(
            {
                "study": STUDY,
                "scale": self.scale.get("name", self.scale_path.stem),
                "scale_settings": self.scale,
                "provenance": self.provenance("texture_control_study"),
                "dataset_dir": str(self.dataset_dir),
                "split": json.loads((self.out / "split" / "split.json").read_text()),
                "centres": {
                    "channels": clusters.get("channels"),
                    "mean_bin": [mean_bin(np.asarray(c)) for c in clusters["centres"]],
                    "bins": clusters.get("bins"),
                    "range": clusters.get("range"),
                },
                "cases": rows,
                "summary": summarise_texture_control(rows),
                "step_seconds": self.step_timings(),
                "wall_time": self.wall_time((("training", "train_"), ("synthesis", "synthesise_")), f"{STUDY}.json"),
            }
        )
        write_results(self.out / f"{STUDY}.json", results)
        with atomic_path(self.out / f"{STUDY}.md") as tmp:
            tmp.write_text(render_texture_control_report(results))
        self.write_preview(rows)
        return self.out / f"{STUDY}.md"

    def run(self) -> Path:
        self.write_case_split()
        self.run_jobs(self.jobs_plan())
        return self.write_report()


def render_texture_control_report(results: Mapping) -> str:
    """The Markdown of ``texture_control.json`` (from that content alone)."""
    summary, centres = results["summary"], results["centres"]
    k = len(centres["mean_bin"])
    lines = [
        f"# Texture control: does the lesion model give the brightness asked of it? (scale {results['scale']})",
        "",
        provenance_markdown(results["provenance"]),
        "",
        f"{summary['cases']} held-out pathological cases of `{results['dataset_dir']}` (by-case split, "
        f"test fraction {results['split'].get('test_fraction')}, seed {results['split'].get('seed')}), each "
        f"synthesised once per texture centre: {k} k-means centres of the training lesions' histograms "
        f"({centres['bins']} bins on {centres['range']} per channel {centres['channels']}), darkest first; "
        "mean histogram bin per centre: " + ", ".join(fixed(b, 2) for b in centres["mean_bin"]) + ".",
        "",
        "## Result",
        "",
        f"- Asking for the brightest centre gave a higher mean lesion intensity than asking for the darkest in "
        f"**{summary['brighter_when_asked']} of {summary['cases']}** cases ({fixed(summary['fraction_brighter'], 2)}).",
        f"- Brightest − darkest mean lesion intensity: {fixed(summary['difference_mean'], 1)} ± "
        f"{fixed(summary['difference_std'], 1)} (median {fixed(summary['difference_median'], 1)}) image units, "
        f"{fixed(summary['relative_difference_mean'], 3, 100.0)} % of a case's intensity range on average.",
        f"- Means rising with the centre's order over all {k} centres: {fixed(summary['fraction_monotonic'], 2)} of "
        f"the cases; mean rank correlation of mean with centre order {fixed(summary['rank_correlation_mean'], 2)}.",
        "",
        "## Per case (mean intensity inside the lesion mask)",
        "",
    ]
    header = ["case", "lesion voxels", "real", *[f"centre {i}" for i in range(k)], "brightest − darkest"]
    rows = [
        [
            c["case_id"],
            c["lesion_voxels"],
            fixed(c["real_mean"], 1),
            *[fixed(m, 1) for m in c["variant_means"]],
            fixed(c["variant_means"][-1] - c["variant_means"][0], 1),
        ]
        for c in results["cases"]
    ]
    lines += markdown_table(header, rows)
    lines += ["", wall_time_markdown(results["wall_time"]), ""]
    return "\n".join(lines)
