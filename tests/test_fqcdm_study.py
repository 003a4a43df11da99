"""The one-command FQCDM study (Tab. 1–3, Tab. 4, Fig. 4–6) in its CI-sized form on an ACDC-layout phantom.

Claims checked: the split is by patient and no generative model, synthetic case or segmenter sees a test patient's
image; test-set synthesis reuses the test label maps unchanged; the synthetic and real sets of the figures are
nested prefixes of one seeded order (a larger set only adds cases); pretrained runs start from the context encoder;
the report holds every method and run; the dataset is only read; a rerun does nothing. Sampler comparison (issue 18):
every sampler setting synthesises the same test label maps with the trained model, its network calls per slice are
the calls the sampler makes, and the report puts quality next to calls.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import datalist_patients, tree_digest
from pathosynth.data.phantom import generate_acdc_like_dataset
from pathosynth.studies.fqcdm_study import FqcdmStudy, SamplerSetting, SegmentationRun, first_entries
from pathosynth.studies.reports import render_report


def test_runs_are_named_once_and_shared_between_figures(tmp_path):
    study = FqcdmStudy(tmp_path / "data", tmp_path / "out", "cpu")
    runs = study.runs()
    assert SegmentationRun(10, 0) in runs["tab4"] and SegmentationRun(10, 0) in runs["fig4"]  # shared, trained once
    names = [run.name for run in study.unique_runs()]
    assert len(names) == len(set(names)) == 15
    assert [r.n_synthetic for r in runs["fig4"]] == [0, 5, 10, 20, 40]
    assert {r.name for r in runs["fig6"]} >= {"real5_aug", "real5_aug_pretrained"}
    assert study.synthetic_pool_size() == 40


def test_the_cpu_scale_compares_samplers_with_the_trained_model_on_the_quality_test_cases(tmp_path):
    """The reference (the bundle's default sampler) is the Tab. 1–3 FQCDM synthesis itself; every other setting is
    one more synthesis of the same test label maps with the same trained model, differing only in its sampler keys."""
    study = FqcdmStudy(tmp_path / "data", tmp_path / "out", "cpu")
    assert study.samplers[0] == SamplerSetting("DDPM 100 (default)")
    assert study.sampler_step(study.samplers[0]) == "synth_test_FQCDM"
    reference = next(job for job in study.synthesis_jobs() if job.name == "synth_test_FQCDM")
    jobs = study.sampler_jobs()
    assert [job.name for job in jobs] == [
        f"synth_sampler_{n}" for n in ("DDPM_50", "DDPM_25", "DDIM_eta_0_50", "DDIM_eta_0_25")
    ]
    for job, setting in zip(jobs, study.samplers[1:]):
        assert job.needs == ["train_autoencoder", "train_latent_ddpm"] and job.configs == reference.configs
        unset = object()
        differing = {
            k
            for k in {**job.settings, **reference.settings}
            if job.settings.get(k, unset) != reference.settings.get(k, unset)
        }
        assert differing == {"output_dir", *setting.overrides}
        assert {k: job.settings[k] for k in setting.overrides} == setting.overrides
    assert jobs[2].settings["num_inference_steps"] == 50 and jobs[2].settings["ddim_eta"] == 0.0


@pytest.mark.parametrize(
    "samplers, message",
    [
        ({"name": "x"}, "'samplers' must be a list"),
        ([{"num_inference_steps": 5}], r"samplers\[0\] needs a non-empty 'name'"),
        ([{"name": "a", "eta": 0.0}], r"samplers\[0\] \('a'\): unknown keys \['eta'\]"),
        ([{"name": "a"}, {"name": "b", "num_inference_steps": 0}], r"samplers\[1\] \('b'\): num_inference_steps"),
        ([{"name": "a", "num_inference_steps": 2.5}], "num_inference_steps must be an integer >= 1"),
        ([{"name": "a", "ddim_eta": -1}], "ddim_eta must be a number >= 0"),
        ([{"name": "DDIM 5"}, {"name": "DDIM_5"}], "repeats 'DDIM 5'"),
    ],
)
def test_a_bad_sampler_grid_is_refused_naming_the_scale_file_before_any_work(tmp_path, samplers, message):
    scale = json.loads(
        (Path(__file__).parents[1] / "bundles/label_guided_latent_diffusion/configs/study/ci.json").read_text()
    )
    path = tmp_path / "bad_scale.json"
    path.write_text(json.dumps({**scale, "samplers": samplers}))
    with pytest.raises(ValueError, match=message) as error:
        FqcdmStudy(tmp_path / "data", tmp_path / "out", str(path))
    assert str(path) in str(error.value)
    assert not (tmp_path / "out").exists()


class _CountingNetwork(torch.nn.Module):
    """A denoiser that counts the slices it is called on (a call on a batch of B slices is B network calls)."""

    def __init__(self, network):
        super().__init__()
        self.network, self.in_channels, self.slices = network, network.in_channels, 0

    def forward(self, x, timesteps, seg):
        self.slices += x.shape[0]
        return self.network(x, timesteps=timesteps, seg=seg)


@pytest.mark.parametrize(
    "num_inference_steps, ddim_eta, calls", [(None, None, 10), (5, None, 5), (5, 0.0, 5), (3, 1.0, 3), (25, 0.0, 10)]
)
def test_network_calls_per_slice_are_the_calls_the_sampler_makes(num_inference_steps, ddim_eta, calls):
    """What the sampler table reports as network calls per slice (the count the synthesiser records in provenance) is
    the number of slices the denoiser actually saw divided by the slices synthesised, whatever the batching; a
    respaced chain makes num_inference_steps calls (at most T), DDIM as many as the DDPM chain of the same length."""
    from monai.networks.nets import SPADEDiffusionModelUNet
    from monai.networks.schedulers import DDPMScheduler

    from pathosynth.data.acdc import ACDC_LABELS
    from pathosynth.diffusion.label_guided import LabelGuidedSampler
    from pathosynth.diffusion.latent import DiffusionSpace
    from pathosynth.synthesis.label_guided import LabelGuidedSynthesizer

    torch.manual_seed(0)
    unet = SPADEDiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        label_nc=len(ACDC_LABELS),
        channels=(8, 8),
        attention_levels=(False, False),
        num_res_blocks=1,
        norm_num_groups=8,
        num_head_channels=8,
        spade_intermediate_channels=8,
    ).eval()
    network = _CountingNetwork(unet)
    scheduler = DDPMScheduler(num_train_timesteps=10, schedule="cosine", clip_sample=True)
    synthesizer = LabelGuidedSynthesizer(
        DiffusionSpace(None, 0.5, 2.0),
        ACDC_LABELS,
        (16, 16),
        (8, 8),
        network=network,
        sampler=LabelGuidedSampler(scheduler, num_inference_steps, ddim_eta),
        slice_batch_size=2,
    )
    label = np.random.default_rng(0).integers(0, 4, size=(16, 16, 3))
    info = synthesizer.synthesize(label, seed=0).info
    assert network.slices == info["network_evaluations"] == calls * label.shape[2]
    assert info["num_inference_steps"] == calls and info["step"] == ("ddpm" if ddim_eta is None else "ddim")


def test_first_entries_follow_the_given_order_and_refuse_too_few(tmp_path):
    datalist = tmp_path / "datalist.json"
    entries = [
        {"image": f"images/{c}.nii.gz", "label": f"labels/{c}.nii.gz", "case_id": f"{c}_syn00", "source_case_id": c}
        for c in "abcd"
    ]
    datalist.write_text(json.dumps({"training": entries}))
    first = first_entries(datalist, 2, order=["c", "a", "d", "b"])
    assert [e["source_case_id"] for e in json.loads(first.read_text())["training"]] == ["c", "a"]
    assert first.parent == datalist.parent  # relative paths stay valid
    with pytest.raises(ValueError, match="holds 4 cases, 5 were asked"):
        first_entries(datalist, 5)


def test_synthesis_quality_scores_a_copy_as_perfect_and_a_degraded_copy_as_worse(tmp_path):
    """Tab. 1–3 metrics on datalists whose "synthetic" images are the real ones (PSNR inf, MS-SSIM 1, FID ~ 0, class
    intensities equal to the real ones) and the real ones with noise (finite PSNR, MS-SSIM < 1, larger FID)."""
    from pathosynth.evaluation.synthesis_quality import synthesis_quality
    from pathosynth.io.nifti import read_nifti, write_nifti_like

    data = tmp_path / "data"
    generate_acdc_like_dataset(data, n_patients=2, seed=1, in_plane=192, n_slices=4)
    rng = np.random.default_rng(0)
    lists = {}
    for kind in ("copy", "noisy"):
        entries = []
        for image in sorted(data.glob("patient*/patient*_frame??.nii.gz")):
            array, _ = read_nifti(image)
            array = np.asarray(array, dtype=np.float32)
            if kind == "noisy":
                array = array + rng.normal(0, 0.1 * float(array.max() - array.min()), array.shape).astype(np.float32)
            out = tmp_path / kind / image.name
            out.parent.mkdir(exist_ok=True)
            write_nifti_like(out, array, nib.load(image), dtype=np.float32)
            label = image.with_name(image.name.replace(".nii.gz", "_gt.nii.gz"))
            entries.append({"image": str(out), "label": str(label), "source_image": str(image), "case_id": image.name})
        lists[kind] = tmp_path / f"{kind}.json"
        lists[kind].write_text(json.dumps({"training": entries}))
    labels = {"RV": 1, "myocardium": 2, "LV": 3}
    copy = synthesis_quality(lists["copy"], [176, 176], labels=labels)
    noisy = synthesis_quality(lists["noisy"], [176, 176], labels=labels)
    assert copy["psnr"]["n"] == 0 and copy["ms_ssim"]["mean"] == pytest.approx(
        1.0
    )  # identical slices: PSNR inf (left out)
    assert copy["fid"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert all(v["synthetic"] == pytest.approx(v["real"]) for v in copy["class_intensity"].values())
    assert (
        10 < noisy["psnr"]["mean"] < 40 and noisy["ms_ssim"]["mean"] < 0.99 and noisy["fid"]["fid"] > copy["fid"]["fid"]
    )
    assert (
        copy["class_intensity"]["LV"]["real"] > copy["class_intensity"]["myocardium"]["real"]
    )  # cine: bright blood pool


def test_study_refuses_to_write_into_the_dataset(acdc_phantom_dir):
    with pytest.raises(ValueError, match="only read"):
        FqcdmStudy(acdc_phantom_dir, acdc_phantom_dir / "study", "ci")


@pytest.mark.slow
def test_fqcdm_study_end_to_end_at_ci_scale(tmp_path):
    data = tmp_path / "data"
    generate_acdc_like_dataset(data, n_patients=10, seed=3, in_plane=96)
    before = tree_digest(data)
    study = FqcdmStudy(data, tmp_path / "study", "ci")
    report = study.run()

    split = json.loads((study.out / "split" / "split.json").read_text())
    test_patients = {case.split("_frame")[0] for case in split["test"]}
    assert test_patients and not test_patients & {case.split("_frame")[0] for case in split["train"]}
    jobs = {p.stem: json.loads(p.read_text()) for p in (study.out / "jobs").glob("*.json")}
    for name, settings in jobs.items():  # nothing trained or synthesised for training reads a test patient
        sources = settings.get("train_datalists") or (
            [settings["datalist"]] if name.startswith(("train_", "synth_train")) else []
        )
        for datalist in sources:
            assert not datalist_patients(datalist) & test_patients, f"{name} reads test patients via {datalist}"

    for method in study.methods:  # Tab. 1–3 synthesis: test label maps, unchanged
        content = json.loads((study.synthetic_dir("test", method) / "datalist.json").read_text())["training"]
        assert content and datalist_patients(study.synthetic_dir("test", method) / "datalist.json") <= test_patients
        for entry in content:
            base = study.synthetic_dir("test", method)
            real_label = Path(entry["source_image"]).name.replace(".nii.gz", "_gt.nii.gz")
            real = np.asarray(nib.load(Path(entry["source_image"]).parent / real_label).dataobj)
            assert np.array_equal(np.asarray(nib.load(base / entry["label"]).dataobj), real)

    def ids(path, key):
        return [e[key] for e in json.loads(Path(path).read_text())["training"]]

    order = study.pool_order()  # real sets are the pool's first cases, synthetic sets are made from the same label maps
    assert ids(study.real_datalist(2), "case_id") == order[:2]
    assert ids(study.synthetic_datalist(2), "source_case_id") == order[:2]

    for run in study.unique_runs():
        scores = json.loads((study.segmentation_dir(run, 0) / "scores.json").read_text())
        assert {"RV", "myocardium", "LV"} <= set(scores["cases"][0])
        overlay = jobs[f"segment_{run.name}_seed0"]
        assert overlay["augment"] is run.augment
        assert ("init_weights" in overlay) is run.pretrained
    assert (study.pretrained_dir / "context_encoder.pt").is_file()

    text = report.read_text()
    assert render_report(report.parent / "fqcdm_study.json") == text  # the Markdown is its JSON, rendered
    for needle in ["Tab. 1–3", "Tab. 4", "Fig. 4", "Fig. 5", "Fig. 6", *study.methods, "real2_aug_pretrained"]:
        assert needle in text

    # sampler comparison: one entry per setting, with the calls its sampler made and Tab. 1–3's metrics
    content = json.loads((report.parent / "fqcdm_study.json").read_text())
    samplers = content["samplers"]
    assert samplers["reference"] == "DDPM 10 (default)"
    rows = {row["name"]: row for row in samplers["settings"]}
    assert list(rows) == [s.name for s in study.samplers] == ["DDPM 10 (default)", "DDIM eta=0 5"]
    assert {name: row["network_calls_per_slice"] for name, row in rows.items()} == {
        "DDPM 10 (default)": 10,
        "DDIM eta=0 5": 5,
    }
    assert rows["DDIM eta=0 5"]["sampler"] == {
        "step": "ddim",
        "eta": 0.0,
        "num_inference_steps": 5,
        "num_train_timesteps": 10,
    }
    assert rows["DDPM 10 (default)"]["step"] == "synth_test_FQCDM"  # the default sampler is Tab. 1–3's synthesis
    assert rows["DDPM 10 (default)"]["quality"] == content["quality"]["FQCDM"]
    assert rows["DDPM 10 (default)"]["time_ratio"] == 1.0 and rows["DDIM eta=0 5"]["time_ratio"] > 0
    for (
        setting
    ) in study.samplers:  # each scored on its own outputs, with every Tab. 1–3 metric (MS-SSIM needs >= 176 px)
        quality = rows[setting.name]["quality"]
        assert quality["datalist"] == str(study.sampler_dir(setting) / "datalist.json")
        assert rows[setting.name]["slices"] >= quality["psnr"]["n"] > 0 and quality["fid"]["fid"] >= 0
        assert set(quality) >= {"psnr", "ms_ssim", "fid", "class_intensity"}
    fqcdm_cases = sorted(ids(study.synthetic_dir("test", "FQCDM") / "datalist.json", "source_case_id"))
    assert fqcdm_cases and all(row["cases"] == fqcdm_cases for row in rows.values())  # the same test label maps
    assert datalist_patients(study.sampler_dir(study.samplers[1]) / "datalist.json") <= test_patients
    assert "## Sampler: quality against network calls" in text
    assert "| DDIM eta=0 5 | DDIM η = 0, 5 of 10 timesteps | 5 |" in text
    assert (report.parent / "downstream.png").is_file() and (report.parent / "examples.png").is_file()
    assert tree_digest(data) == before  # the dataset is only read

    done = {p.name: p.stat().st_mtime_ns for p in (study.out / "jobs").glob("*.done")}
    FqcdmStudy(data, tmp_path / "study", "ci").run()  # a rerun does nothing
    assert {p.name: p.stat().st_mtime_ns for p in (study.out / "jobs").glob("*.done")} == done
