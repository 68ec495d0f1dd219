"""ICP matching is a pure function: a table of cases, no fixtures."""

from __future__ import annotations

from datetime import date

import pytest

from outreach.config import Icp
from outreach.icp import failed_rules, in_icp
from outreach.models import Prospect

TODAY = date(2026, 11, 26)
CFO = Icp(name="cfo", industries=("Manufacturing",), titles=("CFO", "VP Finance"),
          employees=(200, 5000), countries=("US", "CA"), exclude_domains=("competitor.example",),
          dormant_days=180)


def person(**kw) -> Prospect:
    base = dict(id=1, email="x@maker.example", title="CFO", industry="Manufacturing",
                employees=1000, country="US", domain="maker.example")
    base.update(kw)
    return Prospect(**base)


@pytest.mark.parametrize(
    ("changes", "failed"),
    [
        ({}, []),
        ({"title": "Acting CFO, EMEA"}, []),
        ({"title": "cfo"}, []),
        ({"title": "CFOs-R-Us"}, ["titles"]),
        ({"title": "Deputy-CFO"}, ["titles"]),
        ({"title": "Senior VP   Finance"}, []),
        ({"title": "VP Finance & Operations"}, []),
        ({"title": "VP Financial Planning"}, ["titles"]),
        ({"title": ""}, ["titles"]),
        ({"industry": "manufacturing "}, []),
        ({"industry": "Software"}, ["industries"]),
        ({"employees": 200}, []),
        ({"employees": 5000}, []),
        ({"employees": 199}, ["employees"]),
        ({"employees": 5001}, ["employees"]),
        ({"employees": None}, ["employees"]),
        ({"country": "ca"}, []),
        ({"country": "DE"}, ["countries"]),
        ({"domain": "competitor.example"}, ["exclude_domains"]),
        ({"domain": "eu.competitor.example"}, ["exclude_domains"]),
        ({"domain": "notcompetitor.example"}, []),
        ({"domain": "", "email": "x@competitor.example"}, ["exclude_domains"]),
        ({"last_activity": None}, []),
        ({"last_activity": date(2026, 5, 30)}, []),
        ({"last_activity": date(2026, 5, 31)}, ["dormant_days"]),
        ({"last_activity": date(2026, 11, 1)}, ["dormant_days"]),
        ({"title": "Controller", "country": "DE"}, ["titles", "countries"]),
    ],
)
def test_rules(changes, failed):
    prospect = person(**changes)
    assert failed_rules(prospect, CFO, today=TODAY) == failed
    assert in_icp(prospect, CFO, today=TODAY) is (not failed)


def test_a_profile_with_no_rules_matches_everyone():
    assert in_icp(person(title="", industry="", employees=None, country=""), Icp(name="all"),
                  today=TODAY)
