"""Configuration, the bottom layer every stage imports: from Hydra's composed config to typed
settings, with every bad value said in one line.

- :mod:`~urbansound.config.settings`: the typed settings, one frozen dataclass per config group,
  and the allowed values of their string fields.
- :mod:`~urbansound.config.schema`: the structured-config schemas derived from the settings,
  their names in Hydra's ConfigStore, and one-line messages for OmegaConf's and Hydra's errors.
- :mod:`~urbansound.config.checks`: value ranges, allowed names and cross-field checks;
  :func:`~urbansound.config.checks.settings_from_config`, the one way from a config to settings.
- :mod:`~urbansound.config.melscale`: the Slaney mel scale and a filterbank's band edges, which
  the mel-band check and the feature stage's filterbank share.
- :mod:`~urbansound.config.overrides`: Hydra's override grammar, read in one place.
- :mod:`~urbansound.config.app`: where the schemas meet Hydra's runtime (ConfigStore
  registration) and the entry points' decorator.

The YAML config tree itself is the package ``urbansound.conf``.
"""
