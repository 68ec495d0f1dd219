import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from tests.test_stats import build_world

VOID = {"meta", "br", "img", "input", "link", "hr"}


class Checker(HTMLParser):
    """Checks the page nests properly and references nothing outside itself."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.fetches: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "poster", "data"):
                self.fetches.append(f"{tag} {name}={value}")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


@pytest.fixture
def world(campaign):
    return build_world(campaign)


def open_report(path):
    html = path.read_text(encoding="utf-8")
    checker = Checker()
    checker.feed(html)
    checker.close()
    assert checker.stack == []
    assert checker.fetches == []
    assert not re.search(r"url\(|@import|<script|<link", html)
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    for svg in svgs:
        ET.fromstring(svg)  # each chart is well-formed SVG
    return html, svgs


def test_report_is_self_contained_with_charts(world):
    out = world.root / "reports" / "funnel.html"
    result = world.run("stats", "--html", str(out))
    assert result.exit_code == 0
    assert f"report written to {out}" in result.output
    html, svgs = open_report(out)
    assert len(svgs) == 4  # funnel, the A/B step, persona reply rate, persona meetings
    funnel = ET.fromstring(svgs[0])
    labels = [t.text for t in funnel.iter("{http://www.w3.org/2000/svg}text")]
    assert labels == ["Sent", "17  (100.0% of sent)", "Delivered", "16  (94.1% of sent)",
                      "Replied", "3  (17.6% of sent)", "Positive", "2  (11.8% of sent)",
                      "Meetings", "2  (11.8% of sent)"]
    # Bars are drawn to scale: delivered is 16/17 of the sent bar.
    widths = [float(r.get("width")) for r in funnel.iter("{http://www.w3.org/2000/svg}rect")
              if r.get("fill") != "#f0f3f6"]
    assert round(widths[1] / widths[0], 3) == round(16 / 17, 3)
    assert "50.0%  (2 of 4)" in svgs[1] and "0.0%  (0 of 3)" in svgs[1]
    assert "not enough data yet: ~8 more sends per variant needed" in html
    assert "VP Finance · Manufacturing" in svgs[2]
    assert "<td>referral</td><td>17</td><td>16</td><td>3</td><td>17.6%</td>" in html
    # The one spam complaint of 17 sent: above the 0.1% warning level, so marked bad.
    assert ('<div class="card bad"><b>5.88%</b><span>spam-complaint rate (1)</span></div>'
            in html)


def test_report_for_an_empty_campaign(campaign):
    out = campaign.root / "r.html"
    assert campaign.run("stats", "--html", str(out), "--json").exit_code == 0
    html, svgs = open_report(out)
    assert svgs == []
    assert "Nothing sent yet: run `outreach send`." in html
    assert "No A/B step has sent both variants yet." in html


def test_report_escapes_prospect_text(world):
    with world.app() as app:
        app.store.db.execute("UPDATE prospects SET title = '<b>Head</b> & \"Founder\"'")
    out = world.root / "r.html"
    world.run("stats", "--html", str(out))
    html, _ = open_report(out)
    assert "&lt;b&gt;Head&lt;/b&gt; &amp; &quot;Founder&quot;" in html  # the persona, escaped
    assert "<b>Head" not in html
