"""EMIT-Diff prompts (Sec. 4.2, 4.4): "modality, organ, category" triplets from dataset metadata, augmentation phrases,
and the closed vocabulary of the learned prompt encoder (saved with the checkpoint, unknown words refused)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from pathosynth.data.acdc import ACDC_LABELS, read_info_cfg
from pathosynth.data.cases import load_cases
from pathosynth.data.labels import EMIDEC_LABELS
from pathosynth.text.encoders import LearnedPromptEncoder, LocalPretrainedTextEncoder, build_text_encoder
from pathosynth.text.prompts import CasePrompts, augmented_prompt, with_prompts
from pathosynth.text.vocabulary import PromptVocabulary


def test_acdc_groups_give_the_expected_triplets(acdc_phantom_dir):
    cases = with_prompts(load_cases(acdc_phantom_dir, labels=ACDC_LABELS), CasePrompts(modality="MRI", organ="heart"))
    expected = {
        "NOR": "MRI, heart, normal",
        "DCM": "MRI, heart, dilated cardiomyopathy",
        "HCM": "MRI, heart, hypertrophic cardiomyopathy",
        "MINF": "MRI, heart, myocardial infarction",
        "RV": "MRI, heart, abnormal right ventricle",
    }
    groups = set()
    for case in cases:
        group = read_info_cfg(acdc_phantom_dir / case["patient"] / "Info.cfg")[
            "Group"
        ]  # the metadata as written on disk
        groups.add(group)
        assert case["prompt"] == expected[group]
    assert groups == {"NOR", "DCM", "HCM", "MINF"}  # the 4-patient phantom cycles through these groups
    assert CasePrompts()({"group": "RV"}) == expected["RV"]


def test_emidec_groups_give_normal_and_myocardial_infarction(phantom_dir):
    cases = with_prompts(load_cases(phantom_dir, labels=EMIDEC_LABELS), CasePrompts())
    prompts = {case["case_id"][:6]: case["prompt"] for case in cases}
    assert prompts == {"Case_N": "MRI, heart, normal", "Case_P": "MRI, heart, myocardial infarction"}


def test_prompt_parts_and_categories_are_configuration():
    prompts = CasePrompts(modality="CT", organ="abdomen", categories={"art": "arterial pathology"})
    assert prompts({"group": "art"}) == "CT, abdomen, arterial pathology"
    with pytest.raises(ValueError, match=r"case c7 .*group 'DCM'.*known groups: \['art'\]"):
        prompts({"case_id": "c7", "group": "DCM"})
    with pytest.raises(ValueError, match="c8.*no group"):
        prompts({"case_id": "c8", "group": None})
    assert CasePrompts(default_category="normal")({"group": None}) == "MRI, heart, normal"


def test_augmentation_phrase_is_drawn_by_the_generator_only():
    phrases = ["enhanced contrast", "high resolution", "low noise"]

    def draw(seed):
        return augmented_prompt("MRI, heart, normal", phrases, torch.Generator().manual_seed(seed))

    assert draw(3) == draw(3)
    drawn = {draw(seed)[1] for seed in range(40)}
    assert drawn == set(phrases)
    assert draw(5)[0] == f"MRI, heart, normal, {draw(5)[1]}"
    assert augmented_prompt("MRI, heart, normal", [], None) == ("MRI, heart, normal", "")


def test_vocabulary_tokenizes_known_words_and_names_unknown_ones():
    vocab = PromptVocabulary.build(["MRI, heart, normal", "MRI, heart, dilated cardiomyopathy"], ["enhanced contrast"])
    ids = vocab.encode(["MRI, heart, normal", "", "mri, HEART, dilated cardiomyopathy, enhanced contrast"])
    assert ids.shape == (3, vocab.max_length) == (3, 1 + 6 + 3)  # <bos> + longest prompt + ", phrase"
    assert ids[1, 0] == vocab.index["<bos>"] and (ids[1, 1:] == vocab.index["<pad>"]).all()  # the null prompt
    assert ids[0, 1] == ids[2, 1] == vocab.index["mri"]  # case-insensitive
    with pytest.raises(ValueError) as err:
        vocab.encode(["MRI, heart, edema"])
    assert "'edema'" in str(err.value) and "'cardiomyopathy'" in str(err.value)  # the word, and the known vocabulary


def test_vocabulary_round_trips_through_checkpoint_metadata(tmp_path):
    vocab = PromptVocabulary.build(["MRI, heart, normal"], ["high resolution"])
    path = tmp_path / "text_diffusion.pt"
    torch.save({"network": {}, "metadata": vocab.metadata()}, path)
    again = PromptVocabulary.from_checkpoint(path)
    assert again.tokens == vocab.tokens and torch.equal(
        again.encode(["MRI, heart, normal"]), vocab.encode(["MRI, heart, normal"])
    )
    # a resumed run / stage 2 uses the saved vocabulary and refuses data with words it never learned
    assert PromptVocabulary.build(["MRI, heart, normal"], [], checkpoint=path).tokens == vocab.tokens
    with pytest.raises(ValueError, match="infarction"):
        PromptVocabulary.build(["MRI, heart, myocardial infarction"], [], checkpoint=path)


def test_learned_encoder_gives_one_context_vector_per_token_and_learns():
    vocab = PromptVocabulary.build(["MRI, heart, normal", "MRI, heart, dilated cardiomyopathy"])
    torch.manual_seed(0)
    encoder = build_text_encoder(vocab, dim=16, num_layers=1, num_heads=2)
    assert isinstance(encoder, LearnedPromptEncoder) and encoder.dim == 16
    ids = encoder.tokenize(["MRI, heart, normal", "MRI, heart, dilated cardiomyopathy"])
    context = encoder(ids)
    assert context.shape == (2, vocab.max_length, 16)
    assert not torch.allclose(context[0], context[1])
    context.sum().backward()
    assert encoder.token_embedding.weight.grad.abs().sum() > 0  # trained jointly with the diffusion model


def test_pretrained_encoder_reads_only_local_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local directory"):
        LocalPretrainedTextEncoder("openai/clip-vit-base-patch32")  # a hub id is never downloaded
    if importlib.util.find_spec("transformers") is None:
        with pytest.raises(ImportError, match="transformers"):
            LocalPretrainedTextEncoder(tmp_path)
