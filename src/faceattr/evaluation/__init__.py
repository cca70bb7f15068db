"""Evaluating fine-tuned runs, in four parts that import only what they need:

* :mod:`~faceattr.evaluation.scoring`: per-image scores, their summaries, baselines, breakdowns
  and the headline numbers DVC lists;
* :mod:`~faceattr.evaluation.runs`: every run's predictions, per-variant statistics over seeds,
  ensembles;
* :mod:`~faceattr.evaluation.comparisons`: the comparison design (pairs, metrics, Holm families)
  and the paired bootstraps;
* :mod:`~faceattr.evaluation.selection`: which metrics a variant is compared on and which run of
  a task set is chosen on validation (the registry and the export stage use it alone);

and :mod:`~faceattr.evaluation.pipeline`, the evaluate stage's work, which puts them together.
"""
