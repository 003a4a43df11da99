"""Every committed report can be checked against its data (issue 19): a results JSON committed under bundles/*/docs is
rendered by `python -m pathosynth.cli report` and must equal, byte for byte, the Markdown committed beside it, so a
number in a doc cannot drift from its data. Every study or benchmark report is listed here with the JSON it is
rendered from; those whose JSON is not committed yet (their studies must be re-run: the runs predate the results
JSON) are a strict expected failure naming the command, so the test fails -- and the entry must go -- as soon as the
JSON appears, and from then on checks it. Pure rendering: no training, milliseconds.
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
    "class_conditional_ddpm/docs/pneumoniamnist_cpu/results.md": "results.json",
    "lesion_mask_diffusion/docs/mask_realism.md": "mask_realism.json",
    "lesion_inpainting/docs/texture_control/texture_control.md": "texture_control.json",
    "lesion_inpainting/docs/texture_control_phantom/texture_control.md": "texture_control.json",
    "lesion_inpainting/docs/sampler_benchmark/sampler_benchmark.md": "sampler_benchmark.json",
}
# reports whose results JSON is not committed yet -> how to produce it
AWAITING_JSON = {
    "lesion_inpainting/docs/lefusion_study/lefusion_study.md": (
        "python -m pathosynth.cli lefusion_study OUT --dataset_dir ../shared/data/emidec --scale cpu"
    ),
    "text_edge_controlnet/docs/emit_diff_study/emit_diff_study.md": (
        "python -m pathosynth.cli emit_diff_study OUT --dataset_dir ../shared/data/acdc --scale cpu"
    ),
    "reference_guided_ddpm/docs/reference_guided_study/reference_guided_study.md": (
        "python -m pathosynth.cli reference_guided_study OUT --dataset_dir ../shared/data/emidec --scale cpu"
    ),
    "class_conditional_ddpm/docs/pneumoniamnist_cpu/results.md": "the Reproduce commands of the bundle README's",
}


def _results_jsons() -> list[Path]:
    """Every JSON under bundles/*/docs whose "study" field names a kind `report` renders."""
    found = []
    for path in sorted(BUNDLES.glob("*/docs/**/*.json")):
        content = json.loads(path.read_text())
        if isinstance(content, dict) and content.get("study") in report_kinds():
            found.append(path)
    return found


def _expected(markdown: str):
    if markdown not in AWAITING_JSON:
        return pytest.param(markdown)
    reason = f"results JSON not committed yet; re-run: {AWAITING_JSON[markdown]}"
    return pytest.param(markdown, marks=[pytest.mark.xfail(strict=True, reason=reason)])


@pytest.mark.parametrize("markdown", [_expected(m) for m in REPORTS])
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


@pytest.mark.parametrize("markdown", sorted(AWAITING_JSON))
def test_a_report_without_its_json_says_so_and_how_to_make_it(markdown):
    """Until its JSON is committed a report cannot be checked; it must say so, with the command that re-runs it, and
    keep its hand-written discussion in a separate file."""
    text = (BUNDLES / markdown).read_text()
    assert "Results JSON not yet committed" in text and AWAITING_JSON[markdown] in text.replace("\n> ", " ")
    for link in ("discussion.md", "mask_realism_discussion.md"):
        if f"]({link})" in text:
            assert ((BUNDLES / markdown).parent / link).is_file()
    assert "## Discussion" not in text and "## Reading it" not in text
