"""Data cards shipped with interestbert: one folder per card, each holding a Hub dataset card `README.md`."""
