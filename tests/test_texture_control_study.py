"""texture_control_study (issue 22's measurement): the verdict it computes, and the whole command at phantom scale."""

import json
import math

import numpy as np
import pytest

from pathosynth.studies.reports import render_report
from pathosynth.studies.texture_control_study import TextureControlStudy, summarise_texture_control


def _case(means, intensity_range=200.0):
    return {
        "case_id": "c",
        "lesion_voxels": 10,
        "real_mean": 100.0,
        "intensity_range": intensity_range,
        "variant_means": means,
    }


def test_summary_counts_cases_where_the_brightest_request_is_brighter():
    cases = [_case([90.0, 95.0, 110.0]), _case([100.0, 90.0, 120.0]), _case([105.0, 100.0, 95.0])]
    summary = summarise_texture_control(cases)
    assert summary["cases"] == 3 and summary["brighter_when_asked"] == 2
    assert summary["fraction_brighter"] == pytest.approx(2 / 3)
    assert summary["difference_mean"] == pytest.approx((20.0 + 20.0 - 10.0) / 3)
    assert summary["relative_difference_mean"] == pytest.approx(summary["difference_mean"] / 200.0)
    assert summary["fraction_monotonic"] == pytest.approx(1 / 3)  # only the first rises through every centre
    assert summary["rank_correlation_mean"] == pytest.approx((1.0 + 0.5 - 1.0) / 3)


def test_summary_of_a_model_that_ignores_the_request_shows_no_control():
    summary = summarise_texture_control([_case([100.0, 100.0]), _case([100.0, 100.0])])
    assert summary["brighter_when_asked"] == 0 and summary["difference_mean"] == 0.0
    empty = summarise_texture_control([])
    assert empty["cases"] == 0 and math.isnan(empty["fraction_brighter"])


@pytest.mark.slow
def test_texture_control_study_measures_every_held_out_case_per_centre(phantom_dir, tmp_path):
    """At the CI scale (a smoke model, 2 centres) the command trains, synthesises every held-out pathological case once
    per centre, writes the JSON whose rendering is the Markdown, and the side-by-side preview."""
    study = TextureControlStudy(phantom_dir, tmp_path / "study", "texture_ci")
    report = study.run()
    results = json.loads((tmp_path / "study" / "texture_control.json").read_text())
    held_out = json.loads((tmp_path / "study" / "split" / "test_pathological.json").read_text())["training"]
    assert [c["case_id"] for c in results["cases"]] == [c["case_id"] for c in held_out]
    assert all(len(c["variant_means"]) == 2 for c in results["cases"])
    assert len(results["centres"]["mean_bin"]) == 2
    assert results["centres"]["mean_bin"] == sorted(results["centres"]["mean_bin"])  # darkest first
    assert report.read_text() == render_report(tmp_path / "study" / "texture_control.json")
    assert (tmp_path / "study" / "texture_preview.png").stat().st_size > 0
    # each variant asked for its own centre (provenance), and the variants of a case differ inside the lesion
    variants = study.variant_images()
    case = held_out[0]["case_id"]
    assert sorted(variants[case]) == [0, 1]
    from pathosynth.synthesis.results import read_case

    a, b = (read_case({"image": str(variants[case][k]), "label": held_out[0]["label"]})[0] for k in (0, 1))
    assert not np.array_equal(a, b)
    # a rerun resumes: nothing is retrained or resynthesised, the same numbers come out
    before = (tmp_path / "study" / "texture_control.json").read_text()
    TextureControlStudy(phantom_dir, tmp_path / "study", "texture_ci").run()
    after = json.loads((tmp_path / "study" / "texture_control.json").read_text())
    assert after["cases"] == json.loads(before)["cases"]
