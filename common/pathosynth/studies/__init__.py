"""One-command studies: a paper's tables re-run as plans of bundle workflow runs, and the reports rendered from their
results JSON.

Each module is named after what it studies (``lefusion_study``, ``fqcdm_study``, ``emit_diff_study``,
``reference_guided_study``, ``sampler_benchmark`` and ``sampler_benchmark_study``, ``reference_guidance_grid``);
``bundle_study`` is the scheduler they share and ``reports`` renders any study's Markdown from its results JSON
(``python -m pathosynth.cli report``). Studies sit above everything else in the package: they run the bundles and
measure with :mod:`pathosynth.evaluation`; nothing below imports them. No re-exports here, so importing one study
does not import the others.
"""
