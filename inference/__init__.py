"""Uses an interestbert model: batch encoding, recommending, drift scans, serving, publishing and the `interestbert`
CLI."""


def version() -> str:
    """The installed interestbert's version ("unknown" in a source tree never installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("interestbert")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
        return "unknown"
