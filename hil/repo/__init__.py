"""Bench Uptane repositories (Director + Image), their keys and an HTTP server with fault
injection; ``icv-hil repo ...`` in ``hil.repo.cli``."""

from hil.repo.keys import KeyStore
from hil.repo.repository import (
    BenchRepository,
    DirectorRepository,
    ImageRepository,
    write_time_attestation,
)
from hil.repo.server import Faults, RepoServer, Request

__all__ = ["BenchRepository", "DirectorRepository", "Faults", "ImageRepository", "KeyStore",
           "RepoServer", "Request", "write_time_attestation"]
