"""Exports of the trained model for tools outside this project (BioImage Model Zoo)."""
