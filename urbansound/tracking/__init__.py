"""Comet experiment tracking: a sink for a run's typed result and the files it already wrote.

The only package that imports ``comet_ml`` (lazily, on the first tracked run); from the rest of
the package it imports only plain types. It reads no dataset, draws no figure and writes no
run-directory file.

Modules
-------
experiments
    Opening experiments: :func:`~urbansound.tracking.experiments.start` opens the experiment of
    one run and returns a :class:`~urbansound.tracking.tracker.Tracker`;
    :func:`~urbansound.tracking.experiments.log_dataset_samples` logs a dataset's class examples
    once per sweep (or run) as their own experiment;
    :func:`~urbansound.tracking.experiments.offline_archive` finds an experiment's archive.
tracker
    :class:`~urbansound.tracking.tracker.Tracker`: ``run.py`` passes
    :meth:`~urbansound.tracking.tracker.Tracker.log_epoch` to the trainer as an epoch callback,
    writes :meth:`~urbansound.tracking.tracker.Tracker.info` into ``results.json`` under
    ``tracking``, and calls :meth:`~urbansound.tracking.tracker.Tracker.finish` with the
    :class:`~urbansound.training.results.RunResult` (or ``None`` and the exception) whatever the
    outcome.
comet
    comet_ml itself: its configuration (:func:`~urbansound.tracking.comet.comet_settings`), its
    console output, creating an online or offline experiment.
naming
    Experiment names, tags, flattened parameters, the re-run command.
archives
    Offline archives: complete or not, found under a directory, the ``comet upload`` command.

Modes (``tracking.mode``)
    ``auto`` is online when a Comet API key is configured (``COMET_API_KEY`` or Comet's config
    file), otherwise offline. ``online`` first asks Comet's server for its version, with a
    timeout of a few seconds; when it does not answer, when there is no key, when the key is
    refused or the experiment cannot be created, the run logs one warning line and writes an
    offline archive instead. ``offline`` writes one archive per experiment,
    ``<offline directory>/<key>.zip``, to be uploaded later with ``comet upload``.
    ``disabled`` tracks nothing.

Where experiments go (Comet's configuration, then ours on top)
    The project, workspace and offline directory follow comet_ml's own precedence
    (``comet_ml.config.get_config``: ``COMET_PROJECT_NAME`` / ``COMET_WORKSPACE`` /
    ``COMET_OFFLINE_DIRECTORY``, a ``.env`` file, ``COMET_CONFIG``, ``./.comet.config``,
    ``~/.comet.config``). Our keys ``tracking.project_name``, ``tracking.workspace`` and
    ``tracking.offline_dir`` override them only where set (not ``null``). Where neither sets a
    value: project :data:`~urbansound.tracking.comet.DEFAULT_PROJECT_NAME`, offline directory
    :data:`~urbansound.tracking.comet.DEFAULT_OFFLINE_DIR`, the API key's default workspace
    (:func:`~urbansound.tracking.comet.comet_settings`).

What an experiment holds
    - parameters: the resolved config flattened to dotted names (``features.n_mfcc``,
      ``train.lr``; lists as JSON text), the same names in every run so Comet's comparison views
      line up; the sweeper's ``trial.*`` keys are not parameters;
    - tags: in a sweep ``sweep``, ``study:<name>`` and ``trial:<number>``; at the end the dataset
      (``demo`` or ``urbansound8k``) and ``pruned`` / ``failed`` / ``leaky-split`` when so;
    - per epoch (step = epoch): ``train_loss``, ``test_loss``, ``test_accuracy`` (means over the
      folds; ``test_accuracy`` is the curve Optuna's pruner sees) and the same per fold with a
      ``_fold_<k>`` suffix;
    - at the end: ``accuracy_fold_<k>``, ``loss_fold_<k>``, the objective
      :data:`~urbansound.tracking.naming.OBJECTIVE` (``mean_cv_accuracy``, Optuna's metric name
      too) and ``std_cv_accuracy``, ``class_accuracy_<class>``; the confusion matrix summed over
      the test folds and one per fold through Comet's confusion-matrix API with the class names;
      the run directory's ``config.yaml``, ``.hydra/*.yaml`` (as ``hydra/...``), ``results.json``,
      ``folds.csv`` and log file as assets, and the figures the run drew as images; "others"
      with the dataset, protocol, status, run directory, study, trial number, storage (password
      hidden) and ``command``, the command that re-runs this run (``python -m urbansound.run``
      with the overrides, shell-quoted; Comet's own ``command`` online is the same); in a sweep,
      Comet's optimization fields (``log_optimization``: study name as optimization id, metric
      ``mean_cv_accuracy``, ``maximize``, the swept parameters only); with
      ``tracking.log_model``, the model files left in the run directory.

Class samples (:func:`~urbansound.tracking.experiments.log_dataset_samples`)
    The tutorial's examples (one clip and figures per class) are the same for every trial of a
    sweep: the caller logs them once per sweep and dataset, after the sweep, as one experiment
    of their own tagged ``samples`` (plus the caller's tags). A trial's experiment names the tags
    that find it in its ``samples_experiment`` other (``samples`` and ``study:<name>``).

Failures and junk
    Tracking never costs a result: every method catches its own errors, logs each kind of
    failure once as a warning, and the run goes on (a tracker that could not start tracks
    nothing). Comet's own console output is limited to warnings, and where Comet would print a
    traceback (an unwritable or full offline directory) the run prints one warning line instead.
    No incomplete archive is left: Comet's placeholder zip is removed as soon as the experiment
    starts (a kill -9 mid-run leaves no zip), an archive that could not be written completely is
    deleted, and :func:`~urbansound.tracking.archives.archives_under` /
    :func:`~urbansound.tracking.archives.upload_command` only ever list archives that open and
    hold the experiment's files (:func:`~urbansound.tracking.archives.is_complete_archive`).

Before importing ``comet_ml``, :mod:`~urbansound.tracking.comet` sets a few Comet settings as
environment defaults (an explicitly set environment variable wins): no import hooks into torch or
scikit-learn (``COMET_DISABLE_AUTO_LOGGING``: everything is logged explicitly here), no crash
reports to Comet's error tracker (``COMET_ERROR_TRACKING_ENABLE``), console messages from warnings
up (``COMET_LOGGING_CONSOLE``), no announcements (``COMET_DISABLE_ANNOUNCEMENT``).
"""
