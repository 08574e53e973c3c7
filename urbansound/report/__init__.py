"""Sweep reports: ``python -m urbansound.report <sweep dir>... | --storage URL --study NAME``.

Reads a study's trials (from its Optuna storage through :mod:`urbansound.sweep.records`, or from
the job directories of a sweep, each with its ``results.json``) and writes into one folder
(default ``<sweep dir>/report`` or ``outputs/reports/<study>``):

- ``report.html``: a self-contained page (plotly.js inlined, PNGs embedded; no network needed):
  the trials sorted by value, the best configuration with its per-fold accuracies, Optuna's
  optimisation history, parameter importances and parallel coordinates, per-epoch CV curves,
  the best trial's confusion matrix and per-class accuracy, the paired comparison of the top
  configurations across folds, the protocol comparison (predefined folds next to the LEAKY random
  split) and the held-out outer-fold estimate;
- ``report.md``: the same model rendered as Markdown, linking the PNG copies of the key plots;
- ``summary.json``: the numbers, machine-readable;
- ``*.png``: matplotlib copies of the key plots.

Two optional evaluations run the best configuration once more as ``python -m urbansound.run``
subprocesses (``--evaluate-outer``, ``--random-split``; see :mod:`.evaluations`); their run
directories go to ``<report dir>/evaluations/`` and the report reads their ``results.json``.

Names are imported from the module that defines them; each module owns one part:

- :mod:`~urbansound.report.trials`: a study's trials ready to report,
  :class:`~urbansound.report.trials.Sweep` and :class:`~urbansound.report.trials.TrialRecord`.
- :mod:`~urbansound.report.load`: reading a sweep's study and run directories into them
  (``results.json`` read as a typed :class:`~urbansound.training.results.RunResult`; the study
  and the rules every reader shares through :mod:`urbansound.sweep.records`; a run directory
  that belongs to another study or trial is never read as this one's).
- :mod:`~urbansound.report.analysis`: ranking and the best configuration, paired comparisons of
  the top configurations, the protocol comparison, outer-fold estimates, the ``summary.json``
  model.
- :mod:`~urbansound.report.winners`: what the search kept and threw away: pruned winners, each
  model family's best, ensembles of the top configurations.
- :mod:`~urbansound.report.stats`: the paired tests (corrected resampled t-test, Wilcoxon).
- :mod:`~urbansound.report.figures`: the plotly and matplotlib figures.
- :mod:`~urbansound.report.render`: the HTML and Markdown pages (Jinja2 templates).
- :mod:`~urbansound.report.evaluations`: the winner's optional evaluation runs.
- :mod:`~urbansound.report.build`: one report, written into its folder.
- :mod:`~urbansound.report.cli`: the command line (``__main__`` runs it).
"""
