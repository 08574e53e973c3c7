"""Named sweeps (``sweep=<name>``), read by Hydra as ``pkg://urbansound.sweeps``.

In the repository it is the top-level ``sweeps/`` directory; setuptools installs it as the
package ``urbansound.sweeps``, and ``conf/config.yaml`` puts it on Hydra's search path
(``hydra.searchpath``), where its files form the config group ``sweep``.
"""
