"""Optuna sweeps: every multirun is a study; the only package that imports Optuna.

The Hydra side is the thin Sweeper in ``hydra_plugins/urbansound_sweeper`` (its config dataclass
holds every ``hydra.sweeper`` key and default). Names are imported from the module that defines
them; each module owns one concern, listed here in the order data flows through them:

- :mod:`~urbansound.sweep.space`: Hydra's override grammar -> Optuna distributions
  (:func:`~urbansound.sweep.space.parse_param`), the :class:`~urbansound.sweep.space.SearchSpace`
  and its conditional :class:`~urbansound.sweep.space.Branch` es, define-by-run asking, derived
  study names.
- :mod:`~urbansound.sweep.conditional`: finding a conditional space's branches by composing every
  group choice, and validating every value before any trial exists.
- :mod:`~urbansound.sweep.grid`: the grid rules (which point a trial draws, which trials hold a
  point, when a fresh trial yields without running, a grid's size).
- :mod:`~urbansound.sweep.settings`: ``hydra.sweeper.*`` validated into
  :class:`~urbansound.sweep.settings.SweepSettings`; Optuna samplers and pruners; launchers'
  parallelism.
- :mod:`~urbansound.sweep.storage`: storage URLs, the one storage opener, retries while a storage
  is down, :class:`~urbansound.sweep.storage.SweepError`.
- :mod:`~urbansound.sweep.trials`: what the sweeper writes on a trial (attribute names) and how
  trials are counted (:class:`~urbansound.sweep.trials.Progress`).
- :mod:`~urbansound.sweep.launch`: the launcher interface the plugin implements (a job, its
  :class:`~urbansound.sweep.launch.JobOutcome`).
- :mod:`~urbansound.sweep.lifecycle`: a trial's life: ask, job, tell/fail/requeue, heartbeats,
  ownerless trials.
- :mod:`~urbansound.sweep.runner`: the study's preparation and identity, workers, a whole sweep.
- :mod:`~urbansound.sweep.summary`: the trial table, ``trials.csv`` and ``best_params.yaml``.
- :mod:`~urbansound.sweep.job`: the job side (:func:`~urbansound.sweep.job.trial_params`,
  :func:`~urbansound.sweep.job.epoch_reporter`, :func:`~urbansound.sweep.job.set_trial_attrs`,
  :class:`~urbansound.sweep.job.RecordingTask`).
- :mod:`~urbansound.sweep.records`: a study as plain records for readers (the report, ``fit``),
  the rules they share (the LEAKY split, the best trial), and Optuna's plots and importances.
- :mod:`~urbansound.sweep._compat`: every use of a private Optuna or Hydra API, one function
  each, and the one way Optuna is kept quiet.

Importing this package imports none of its modules: Hydra's plugin scan stays free of Optuna.
"""
