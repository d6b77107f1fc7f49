"""Artifact formats shared by the stages (documented in docs/formats.md)."""
