"""Which column of a prospect file is which prospect field: pure decisions on the header row.

Lists come from CRM and prospecting exports (Apollo, HubSpot, Salesforce, LinkedIn Sales
Navigator tools, ZoomInfo), each with its own names for the same things; the header rows they
write are kept in tests/corpus/exports/. `import --map "HEADER=column"` covers the rest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")

# Target column -> the headers that mean it, squashed (lower case, letters and digits only),
# best first: when a file has several (Apollo's "First Phone" and "Mobile Phone"), the first
# one listed is used and the others stay custom fields.
ALIASES: dict[str, tuple[str, ...]] = {
    "email": ("email", "emailaddress", "workemail", "businessemail", "professionalemail",
              "primaryemail", "email1", "emails"),
    "first_name": ("firstname", "first", "givenname", "forename"),
    "last_name": ("lastname", "last", "surname", "familyname"),
    # "Job Title" first: where a file has both, a bare "Title" may be the salutation (Mr, Dr).
    "title": ("jobtitle", "title", "position", "currenttitle", "role", "designation"),
    "company": ("company", "companyname", "accountname", "account", "companyaccount",
                "organization", "organizationname", "organisation", "associatedcompany",
                "employer"),
    "domain": ("domain", "companydomain", "website", "websiteurl", "companywebsite",
               "companywebsiteurl"),
    "industry": ("industry", "primaryindustry", "companyindustry", "sector"),
    # Counts first, then size bands ("201-500", "10,001+"), which count as their lower end.
    "employees": ("employees", "numberofemployees", "noofemployees", "employeecount",
                  "companyemployeecount", "numemployees", "headcount", "companysize",
                  "employeerange", "companyemployeecountrange", "sizerange"),
    "country": ("country", "countryregion", "personcountry", "contactcountry", "mailingcountry",
                "companycountry"),
    "timezone": ("timezone", "tz", "ianatimezone"),
    "phone": ("phone", "phonenumber", "firstphone", "directphone", "directphonenumber",
              "workdirectphone", "workphone", "businessphone", "mobilephone", "mobile",
              "mobilephonenumber"),
    "last_activity": ("lastactivity", "lastactivitydate"),
    # Not a known column (no field of its own) but named alike whatever the source, so a
    # template or call script can use prospect.linkedin_url with any export.
    "linkedin_url": ("linkedinurl", "personlinkedinurl", "linkedinprofileurl", "linkedin",
                     "linkedinprofile", "linkedincontactprofileurl", "profileurl"),
}
TARGETS = frozenset(ALIASES)


def squash(header: str) -> str:
    """`E-mail`, `Email Address ` -> `email`, `emailaddress`: how headers are compared."""
    return _NOT_ALNUM.sub("", header.lower())


def column_name(header: str) -> str:
    """`Pain Point` -> `pain_point`: a custom column becomes a name a template can reach."""
    return _NOT_ALNUM.sub("_", header.strip().lower()).strip("_")


@dataclass
class Layout:
    """What each position of the file holds ("" = not imported), and what to tell the user."""

    names: list[str]
    renamed: list[tuple[str, str]] = field(default_factory=list)   # (header, column)
    ignored: list[tuple[str, str]] = field(default_factory=list)   # (header, column it lost)


class LayoutError(ValueError):
    """The header row cannot be used; the message says why and what to do."""


def parse_map(items: Sequence[str]) -> dict[str, str]:
    """`["Company Name=company"]` -> {"Company Name": "company"}; raises LayoutError."""
    out: dict[str, str] = {}
    for item in items:
        header, sep, column = item.partition("=")
        target = column_name(column)
        if not sep or not squash(header) or not target:
            raise LayoutError(f'--map "{item}": expected "HEADER=column", e.g. '
                              '"Company Name=company"')
        out[header.strip()] = target
    return out


def layout(header: Sequence[str], mapping: Mapping[str, str] | None = None) -> Layout:
    """Decide each column's field: --map first, then the known export names, then custom."""
    mapping = mapping or {}
    squashed = [squash(h) for h in header]
    names = [""] * len(header)
    by_map: set[str] = set()
    for source, target in mapping.items():
        if squash(source) not in squashed:
            found = ", ".join(h.strip() for h in header)
            raise LayoutError(f'--map: no column "{source}" (found: {found})')
        names[squashed.index(squash(source))] = target
        by_map.add(target)
    taken = set(by_map)
    for target, aliases in ALIASES.items():
        if target in taken:
            continue
        for alias in aliases:
            at = _free(squashed, names, alias)
            if at is not None:
                names[at] = target
                taken.add(target)
                break
    result = Layout(names)
    for i, raw in enumerate(header):
        if names[i]:
            if names[i] != column_name(raw):
                result.renamed.append((raw.strip(), names[i]))
            continue
        own = column_name(raw)
        if own in taken:   # "Title" beside "Job Title", or a column --map replaced
            result.ignored.append((raw.strip(), own))
        elif own in names:
            raise LayoutError(f"duplicate column {own}; each column may appear once")
        else:
            names[i] = own
    return result


def _free(squashed: list[str], names: list[str], alias: str) -> int | None:
    for i, s in enumerate(squashed):
        if s == alias and not names[i]:
            return i
    return None


def sniff_delimiter(first_line: str) -> str:
    """`,`, `;` (Excel in European locales) or tab: whichever the header row uses most."""
    counts = {d: _count_outside_quotes(first_line, d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _count_outside_quotes(line: str, char: str) -> int:
    return sum(part.count(char) for part in line.split('"')[::2])

