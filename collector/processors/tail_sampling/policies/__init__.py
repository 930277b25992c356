"""Sampling policies: each module holds the config of one policy family and how it decides."""
