"""Helpers shared by the processors; not components themselves."""
