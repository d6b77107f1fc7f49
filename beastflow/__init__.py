"""beastflow: the BEAST (Bayesian Extinction And Stellar Tool) as a library of science stages.

The stages here do not import Prefect; the Prefect flows that run them live in
the repository's top-level ``flows/`` folder, installed as ``beastflow.flows``
(the ``beastflow run`` command loads them lazily).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("beastflow")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
