from tests.conftest import SAMPLE_CSV


def test_sample_campaign_imports_and_enrolls(campaign):
    imported = campaign.run_json("import", str(SAMPLE_CSV))
    assert imported["added"] == 52
    assert [r["line"] for r in imported["rejected"]] == [54, 55]
    enrolled = campaign.run_json("enroll", "referral")
    assert enrolled["enrolled"] == 19
