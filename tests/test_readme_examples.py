"""The README's examples work on the sample data: its prospect addresses are in
examples/prospects.csv, and its planning example is never a moment in the past."""

from __future__ import annotations

import csv
import re
import subprocess
from datetime import UTC, datetime

from outreach.clock import parse_now
from tests.conftest import REPO, SAMPLE_CSV

README = (REPO / "README.md").read_text(encoding="utf-8")
# Addresses that are the sender's own (config.example.toml), not prospects.
OWN = {"dana@acme.example", "unsubscribe@acme.example",
       "dana@acme-mail.example", "dana@acme-reach.example"}   # the Team section's mailboxes


def test_readme_addresses_are_sample_prospects():
    with SAMPLE_CSV.open(newline="", encoding="utf-8") as fh:
        sample = {row["email"] for row in csv.DictReader(fh)}
    domains = {e.rpartition("@")[2] for e in sample}
    used = set(re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", README)) - OWN
    assert used, "the README shows no prospect address"
    assert {a for a in used if a not in sample and a.rpartition("@")[2] not in domains} == set()
    for domain in re.findall(r"outreach suppress @([\w.-]+)", README):
        assert domain in domains


def test_readme_plans_tomorrow_not_a_fixed_day_in_the_past():
    assert not re.search(r"OUTREACH_NOW=20\d\d-", README)  # a literal date goes stale
    commands = re.findall(r'OUTREACH_NOW="\$\((date [^)]*)\)"', README)
    assert commands
    for command in commands:
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert parse_now(out) > datetime.now(UTC)
