"""The downstream project's own test harness package (nothing to do with bindlab)."""

WHO = "downstream"
