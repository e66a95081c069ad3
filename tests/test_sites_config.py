from datetime import UTC, date, datetime

import pytest

from backend.sites.config import SitesError, SitesSection, parse_sites


def test_a_site_the_file_names_gets_its_own_settings_and_others_the_defaults():
    sites = parse_sites("""
[defaults]
time_zone = "Europe/Amsterdam"
wait_target_s = 700
[sites.north]
wait_target_s = 900
counters = ["1", "2"]
service_targets_s = { passport = 1200 }
""", SitesSection())
    north, elsewhere = sites.get("north"), sites.get("south")
    assert (north.time_zone, north.wait_target_s, north.counters) == ("Europe/Amsterdam", 900, ("1", "2"))
    assert north.target_for("passport") == 1200 and north.target_for("tax") == 900
    assert (elsewhere.site, elsewhere.time_zone, elsewhere.wait_target_s) == \
        ("south", "Europe/Amsterdam", 700)
    assert sites.configured == ["north"]


def test_no_file_means_the_section_defaults():
    site = parse_sites("", SitesSection(wait_target_s=300, site_time_zone="Asia/Tokyo")).get("x")
    assert (site.time_zone, site.wait_target_s) == ("Asia/Tokyo", 300)


@pytest.mark.parametrize(("text", "problem"), [
    ('[sites.north]\ntime_zone = "Mars/Olympus"', "unknown time zone"),
    ("[sites.north]\nwait_target_s = -1", "positive"),
    ("[sites.north]\ncolour = 1", "colour"),
    ("[sites.north", "sites file"),
])
def test_a_bad_sites_file_is_refused_with_the_reason(text, problem):
    with pytest.raises(SitesError, match=problem):
        parse_sites(text, SitesSection())


def test_a_site_s_day_runs_midnight_to_midnight_in_its_own_zone_even_across_a_clock_change():
    sites = parse_sites('[sites.east]\ntime_zone = "Pacific/Kiritimati"\n[sites.north]\n'
                        'time_zone = "Europe/Amsterdam"', SitesSection())
    late_utc = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)  # 10:00 the next day at UTC+14
    assert sites.get("east").day_of(late_utc) == date(2026, 12, 5)
    assert sites.get("east").today_began(late_utc) == datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    assert sites.get("unnamed").today_began(late_utc) == datetime(2026, 12, 4, tzinfo=UTC)
    start, end = sites.get("north").day_bounds(date(2026, 10, 25))  # summer time ends: a 25-hour day
    assert (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds() == 25 * 3600


def test_the_latest_day_of_sites_is_the_furthest_east_s_today_so_a_range_ending_there_holds_every_today():
    sites = parse_sites('[defaults]\ntime_zone = "UTC"\n[sites.east]\ntime_zone = "Pacific/Kiritimati"\n'
                        '[sites.west]\ntime_zone = "Pacific/Pago_Pago"', SitesSection())
    late_utc = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)  # 10:00 on the 5th at UTC+14, 09:00 on the 4th at -11
    assert sites.latest_day(late_utc, None) == date(2026, 12, 5)  # the UTC date would leave out east's today
    assert sites.latest_day(late_utc, ["west", "unnamed"]) == date(2026, 12, 4)
    assert sites.latest_day(late_utc, []) == date(2026, 12, 4)  # none: the default zone's
