"""Every committed report can be checked against its data (issue 19): a results JSON committed under bundles/*/docs is
rendered by `python -m pathosynth.cli report` and must equal, byte for byte, the Markdown committed beside it, so a
number in a doc cannot drift from its data. Every study or benchmark report is listed here with the JSON it is
rendered from, and each number a bundle's metadata.json publishes is read from one of them. Pure rendering: no
training, milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pathosynth.studies.reports import render_report, report_kinds

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"

# every study / benchmark report under bundles/*/docs -> the results JSON beside it that renders it
REPORTS = {
    "lesion_inpainting/docs/lefusion_study/lefusion_study.md": "lefusion_study.json",
    "label_guided_latent_diffusion/docs/fqcdm_study/fqcdm_study.md": "fqcdm_study.json",
    "text_edge_controlnet/docs/emit_diff_study/emit_diff_study.md": "emit_diff_study.json",
    "reference_guided_ddpm/docs/reference_guided_study/reference_guided_study.md": "reference_guided_study.json",
    "class_conditional_ddpm/docs/class_conditional_study/class_conditional_study.md": "class_conditional_study.json",
    "lesion_mask_diffusion/docs/mask_realism.md": "mask_realism.json",
    "lesion_inpainting/docs/texture_control/texture_control.md": "texture_control.json",
    "lesion_inpainting/docs/texture_control_phantom/texture_control.md": "texture_control.json",
    "lesion_inpainting/docs/sampler_benchmark/sampler_benchmark.md": "sampler_benchmark.json",
}


def _results_jsons() -> list[Path]:
    """Every JSON under bundles/*/docs whose "study" field names a kind `report` renders."""
    found = []
    for path in sorted(BUNDLES.glob("*/docs/**/*.json")):
        content = json.loads(path.read_text())
        if isinstance(content, dict) and content.get("study") in report_kinds():
            found.append(path)
    return found


@pytest.mark.parametrize("markdown", list(REPORTS))
def test_the_committed_markdown_is_the_rendering_of_its_committed_json(markdown):
    results = BUNDLES / markdown
    results = results.with_name(REPORTS[markdown])
    assert results.is_file(), f"{results} is not committed"
    assert render_report(results) == (BUNDLES / markdown).read_text()


def test_every_committed_results_json_is_a_listed_report():
    """A results JSON nobody compares would let its Markdown drift: each one found must be listed above."""
    listed = {(BUNDLES / m).with_name(j) for m, j in REPORTS.items()}
    assert [p for p in _results_jsons() if p not in listed] == []


def test_every_study_folder_under_docs_is_a_listed_report():
    """A new study or benchmark folder in a bundle's docs must be listed with its JSON (so it gets checked)."""
    folders = {p.parent for p in BUNDLES.glob("*/docs/*/*.md")}
    assert sorted(str(f.relative_to(BUNDLES)) for f in folders - {(BUNDLES / m).parent for m in REPORTS}) == []
    assert all((BUNDLES / m).is_file() for m in REPORTS)


# bundle -> metadata.json "eval_metrics" key -> (results JSON under the bundle, the number in it, its scale)
EVAL_METRICS = {
    "lesion_inpainting": {
        "cpu_scale_emidec_lesion_region_psnr_db_lefusion_j": (
            "docs/lefusion_study/lefusion_study.json",
            lambda r: r["tab2"]["LeFusion-J"]["all lesions"]["psnr"]["mean"],
            1,
        ),
        "cpu_scale_emidec_lesion_region_ssim_x100_lefusion_j": (
            "docs/lefusion_study/lefusion_study.json",
            lambda r: r["tab2"]["LeFusion-J"]["all lesions"]["ssim"]["mean"],
            100,
        ),
    },
    "label_guided_latent_diffusion": {
        "cpu_scale_acdc_psnr_db_fqcdm": (
            "docs/fqcdm_study/fqcdm_study.json",
            lambda r: r["quality"]["FQCDM"]["psnr"]["mean"],
            1,
        ),
        "cpu_scale_acdc_ms_ssim_x100_fqcdm": (
            "docs/fqcdm_study/fqcdm_study.json",
            lambda r: r["quality"]["FQCDM"]["ms_ssim"]["mean"],
            100,
        ),
        "cpu_scale_acdc_fid_random_conv_fqcdm": (
            "docs/fqcdm_study/fqcdm_study.json",
            lambda r: r["quality"]["FQCDM"]["fid"]["fid"],
            1,
        ),
    },
    "text_edge_controlnet": {
        "cpu_scale_acdc_mean_dice_x100_emit_diff": (
            "docs/emit_diff_study/emit_diff_study.json",
            lambda r: r["summaries"][r["emit_diff"]["name"]]["dice"]["mean"]["mean"],
            100,
        ),
        "cpu_scale_acdc_mean_dice_x100_baseline": (
            "docs/emit_diff_study/emit_diff_study.json",
            lambda r: r["summaries"]["baseline"]["dice"]["mean"]["mean"],
            100,
        ),
    },
    "class_conditional_ddpm": {
        key: (
            "docs/class_conditional_study/class_conditional_study.json",
            lambda r, data=data, metric=metric: next(
                row["mean"][metric] for row in r["classification"]["reports"] if row["training_data"] == data
            ),
            1,
        )
        for key, data, metric in (
            ("cpu_scale_pneumoniamnist_synthetic_only_accuracy", "synthetic", "accuracy"),
            ("cpu_scale_pneumoniamnist_synthetic_only_auc", "synthetic", "auc"),
            ("cpu_scale_pneumoniamnist_real_plus_synthetic_accuracy", "real+synthetic", "accuracy"),
        )
    },
}


def _metadata_metrics(bundle: str) -> dict:
    return json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text()).get("eval_metrics", {})


def test_every_eval_metric_of_a_bundle_is_traced_to_a_committed_result():
    """A number a bundle's metadata.json publishes must name the results JSON it comes from (listed above)."""
    published = {(b.name, key) for b in sorted(BUNDLES.iterdir()) if b.is_dir() for key in _metadata_metrics(b.name)}
    assert published == {(bundle, key) for bundle, keys in EVAL_METRICS.items() for key in keys}


@pytest.mark.parametrize(("bundle", "key"), [(b, k) for b, keys in EVAL_METRICS.items() for k in keys])
def test_a_published_eval_metric_equals_its_committed_result(bundle, key):
    source, number, scale = EVAL_METRICS[bundle][key]
    results = json.loads((BUNDLES / bundle / source).read_text())
    published = _metadata_metrics(bundle)[key]
    decimals = len(str(published).partition(".")[2])
    assert published == round(number(results) * scale, decimals), f"{bundle} {key}: {published} vs {source}"
