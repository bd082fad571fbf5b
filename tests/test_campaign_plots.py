"""The report's charts (hil/plots.py): drawn where the data say, and a chart with no data says so.

Reference: the SVG read back with ElementTree; coordinates checked against the axes' arithmetic.
"""
import xml.etree.ElementTree as ET

from hil import plots

SVG = "{http://www.w3.org/2000/svg}"


def test_a_line_is_drawn_through_its_points_on_the_axes():
    chart = plots.svg_chart("x", "title <&>", "s", "octets/s", [("down", [0, 1, 2], [0, 50, 100])],
                            hlines=(("baud / 10", 100.0),))
    root = ET.fromstring(chart.svg)                       # well formed, the title escaped
    assert root.find(f"{SVG}title").text == "title <&>" and chart.points == 3
    points = [tuple(map(float, p.split(","))) for p in root.find(f"{SVG}polyline").get("points").split()]
    xs, ys = zip(*points)
    assert xs[0] == plots.LEFT and xs[-1] == plots.WIDTH - plots.RIGHT          # x spans the plot area
    assert ys[0] == plots.HEIGHT - plots.BOTTOM and abs((ys[0] - ys[1]) - (ys[1] - ys[2])) < 0.2 and ys[1] < ys[0]
    dashed = [l for l in root.iter(f"{SVG}line") if l.get("stroke-dasharray")]
    assert len(dashed) == 1 and abs(float(dashed[0].get("y1")) - ys[2]) < 0.05


def test_a_step_chart_holds_each_value_until_the_next():
    chart = plots.svg_chart("x", "t", "s", "n", [("a", [0, 1, 2], [1, 3, 2])], step=True)
    points = ET.fromstring(chart.svg).find(f"{SVG}polyline").get("points").split()
    assert len(points) == 5 and points[1].split(",")[1] == points[0].split(",")[1]


def test_histogram_counts_fall_in_their_bins():
    chart = plots.svg_histogram("h", "latency", "s", [0.1, 0.1, 0.1, 0.5, 0.9, float("nan")], bins=4)
    bars = [r for r in ET.fromstring(chart.svg).iter(f"{SVG}rect") if r.get("fill") == plots.COLOURS[0]]
    heights = [float(r.get("height")) for r in sorted(bars, key=lambda r: float(r.get("x")))]
    assert chart.points == 5 and len(heights) == 3          # NaN left out; the empty bin draws no bar
    assert abs(heights[0] / heights[1] - 3.0) < 0.01 and heights[1] == heights[2]   # drawn to 0.1 px


def test_a_chart_without_data_says_so():
    for chart in (plots.svg_chart("x", "t", "s", "n", [("a", [], [])]), plots.svg_histogram("h", "t", "s", [])):
        assert chart.points == 0 and "no data" in chart.svg and ET.fromstring(chart.svg) is not None


def test_the_pass_plot_is_the_elevation_the_link_schedule_uses():
    """The shipped pass scenario's elevation series crosses the mask where the pass schedule opens the link
    (hil/passes.py, itself held to skyfield in tests/test_passes.py), and is drawn with the mask marked."""
    from hil.campaign import ScenarioResult
    from hil.campaign_report import plots as report_plots
    from hil.campaign_series import elevations
    from hil.scenario import resolve

    scenario = resolve("pass")
    series = elevations(scenario.passes, scenario.duration_s)
    (aos, _los), = scenario.passes.windows(scenario.duration_s)
    first_up = next(t for t, e in zip(series["t"], series["elevation_deg"]) if e >= series["mask_deg"])
    assert abs(first_up - aos) <= scenario.passes.step_s / scenario.passes.time_scale + 0.1
    assert series["elevation_deg"][0] < 10 < series["elevation_deg"][-1] < 90
    result = ScenarioResult("pass", "", "", series={"passes": series, "link": {}, "flight": {}})
    chart = next(c for c in report_plots(result) if c.name == "passes")
    root = ET.fromstring(chart.svg)
    assert chart.points == len(series["t"]) and "elevation" in chart.title
    assert any("mask 10 deg" in (t.text or "") for t in root.iter(f"{SVG}text"))
