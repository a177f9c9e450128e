"""Uses an interestbert model: batch encoding, recommending, drift scans, publishing and the `interestbert` CLI."""
