"""Personas read titles the way the ICP does and keep them as written: "Acting CFO, EMEA" is a
CFO for the cfo-manufacturing ICP, and without an ICP it stays "Acting CFO, EMEA"."""

from __future__ import annotations

import pytest

from outreach.calls import persona, persona_label
from outreach.config import Icp
from tests.conftest import prospect_row

ICP = Icp(name="cfo", industries=("Manufacturing",),
          titles=("CFO", "Chief Financial Officer", "VP Finance"))


@pytest.mark.parametrize(("title", "industry", "icp", "label"), [
    ("Acting CFO, EMEA", "Manufacturing", None, "Acting CFO, EMEA · Manufacturing"),
    ("Acting CFO, EMEA", "manufacturing", ICP, "CFO · Manufacturing"),
    ("Chief Financial Officer", "Manufacturing", ICP, "CFO · Manufacturing"),
    ("SVP, FP&A", "Food  Service", None, "SVP, FP&A · Food Service"),
    ("Head of IT", "Retail", ICP, "Head of IT · Retail"),
    ("vp finance", "MANUFACTURING", ICP, "VP Finance · Manufacturing"),
    ("", "", None, "(no title) · (no industry)"),
])
def test_persona_label_keeps_the_words_as_written(title, industry, icp, label):
    assert persona_label(title, industry, icp) == label


def test_one_persona_as_the_icp_reads_it():
    assert persona("Acting CFO, EMEA", "Manufacturing", ICP) == ("cfo", "manufacturing")
    assert persona("Chief Financial Officer", "Manufacturing", ICP) == ("cfo", "manufacturing")
    assert persona("Acting CFO, EMEA", "Manufacturing") == ("acting cfo emea", "manufacturing")


def test_calls_group_titles_the_way_the_icp_reads_them(campaign):
    campaign.now("2026-03-05T07:30:00-06:00")
    rows = [prospect_row(1, title="Acting CFO, EMEA"),
            prospect_row(2, title="Chief Financial Officer"),
            prospect_row(3, title="CFO"), prospect_row(4, title="VP Finance")]
    campaign.run_json("import", str(campaign.write_csv(rows)))
    assert campaign.run_json("enroll", "referral")["enrolled"] == 4
    assert campaign.run_json("send")["calls"] == 4
    table = campaign.run("calls").stdout.splitlines()
    assert table[0] == "CFO · Manufacturing: 3 calls"
    assert "VP Finance · Manufacturing: 1 call" in table
    assert "  #1    Thu 05 Mar 07:30  First1 Last1, Acting CFO, EMEA, Maker 1 Inc  " \
           "+1 555 0101" in table
    stats = campaign.run("stats", "--by", "persona").stdout
    assert "CFO · Manufacturing" in stats and "Emea" not in stats
