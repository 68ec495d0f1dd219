"""Pure: does this prospect match this Ideal Customer Profile? Every rule given must match."""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache

from .config import Icp
from .models import Prospect

RULES = ("industries", "titles", "employees", "countries", "exclude_domains", "dormant_days")


@lru_cache(maxsize=256)
def _title_pattern(titles: tuple[str, ...]) -> re.Pattern[str]:
    """Whole words, case-insensitive: "CFO" matches "Acting CFO, EMEA", not "CFOs-R-Us"."""
    words = (r"\s+".join(map(re.escape, t.split())) for t in titles)
    return re.compile(r"(?<![\w-])(?:" + "|".join(words) + r")(?![\w-])", re.IGNORECASE)


def matching_title(title: str, titles: tuple[str, ...]) -> str | None:
    """The first of the ICP's `titles` that `title` matches, as the titles rule reads it."""
    for candidate in titles:
        if _title_pattern((candidate,)).search(title):
            return candidate
    return None


def matching_industry(industry: str, industries: tuple[str, ...]) -> str | None:
    """The ICP's spelling of `industry`, when the industries rule would match it."""
    wanted = industry.strip().casefold()
    return next((i for i in industries if i.casefold() == wanted), None)


def failed_rules(prospect: Prospect, icp: Icp, *, today: date) -> list[str]:
    """The names of the rules this prospect fails, in RULES order (empty: it matches)."""
    failed = []
    if icp.industries and prospect.industry.strip().casefold() not in {
        i.casefold() for i in icp.industries
    }:
        failed.append("industries")
    if icp.titles and not _title_pattern(icp.titles).search(prospect.title):
        failed.append("titles")
    if icp.employees is not None:
        low, high = icp.employees
        if prospect.employees is None or not low <= prospect.employees <= high:
            failed.append("employees")
    if icp.countries and prospect.country.strip().upper() not in icp.countries:
        failed.append("countries")
    if icp.exclude_domains:
        domain = (prospect.domain or prospect.email.rpartition("@")[2]).lower()
        if any(domain == d or domain.endswith("." + d) for d in icp.exclude_domains):
            failed.append("exclude_domains")
    if (
        icp.dormant_days is not None
        and prospect.last_activity is not None
        and (today - prospect.last_activity).days < icp.dormant_days
    ):
        failed.append("dormant_days")
    return failed


def in_icp(prospect: Prospect, icp: Icp, *, today: date) -> bool:
    return not failed_rules(prospect, icp, today=today)
