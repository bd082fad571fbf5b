"""A campaign's reports: Markdown and HTML per scenario (each bar, pass or fail, with its evidence), JUnit XML for CI."""
from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from pathlib import Path

from .campaign import ScenarioResult
from .plots import Plot, svg_chart, svg_histogram


def _link_rows(r: ScenarioResult) -> list[tuple[str, str, str]]:
    rows = []
    if not r.link:
        return rows
    for name in ("octets_in", "octets_on_line", "octets_passed", "bits_flipped", "octets_dropped", "fifo_overflows",
                 "outage_octets"):
        rows.append((name, str(r.link["down"][name]), str(r.link["up"][name])))
    return rows


def plots(r: ScenarioResult) -> list[Plot]:
    """One chart per recorded series; a series the run did not record is drawn as "no data", not left out."""
    s = r.series
    if not s:
        return []
    det, link, store, flight = s.get("detections", {}), s.get("link", {}), s.get("store", {}), s.get("flight", {})
    out = [svg_chart("detections", "Detections against truth, per frame reported", "frame index", "count",
                     [(k, det.get("frame", []), det.get(v, [])) for k, v in
                      (("targets in truth", "truth"), ("detections", "detected"),
                       ("detections on a target", "on_target"))]),
           svg_histogram("alert_latency", "Alert latency (frame time to ground decode)", "seconds",
                         s.get("alert_latency_s", [])),
           svg_chart("link_throughput", f"Link throughput (line at {r.link.get('baud', 0)} baud)", "seconds",
                     "octets/s", [("down", link.get("t", []), link.get("down_octets_per_s", [])),
                                  ("up", link.get("t", []), link.get("up_octets_per_s", []))],
                     hlines=(("baud / 10", r.link.get("baud", 0) / 10.0),) if r.link.get("baud") else ()),
           svg_chart("link_errors", "Link errors (cumulative, both directions)", "seconds", "count",
                     [("bits flipped", link.get("t", []), link.get("bits_flipped", [])),
                      ("octets lost (drops, outages, FIFO)", link.get("t", []), link.get("octets_lost", []))])]
    passes = s.get("passes") or {}
    if passes:
        out.append(svg_chart("passes", "Pass: elevation over the run", "seconds of run", "degrees",
                             [("elevation", passes["t"], passes["elevation_deg"])],
                             hlines=((f"mask {passes['mask_deg']:g} deg", passes["mask_deg"]),)))
    else:
        out.append(svg_chart("passes", "Pass: no schedule; link up except cuts", "seconds", "link up (1) / cut (0)",
                             [("link up", link.get("t", []), [1 - c for c in link.get("cut", [])])], step=True))
    out.append(svg_chart("store_depth", "Flight store depth (housekeeping on the ground)", "seconds", "octets",
                         [("unsent", store.get("t", []), store.get("unsent_octets", [])),
                          ("held (not acknowledged)", store.get("t", []), store.get("held_octets", []))], step=True))
    out.append(svg_chart("flight_cpu", "Flight process CPU", "seconds", "% of one core",
                         [("CPU", flight.get("t", []), flight.get("cpu_percent", []))]))
    out.append(svg_chart("flight_memory", "Flight process memory (resident)", "seconds", "MB",
                         [("RSS", flight.get("t", []), flight.get("rss_mb", []))]))
    return out


def markdown(r: ScenarioResult, charts: list[Plot] = ()) -> str:
    lines = [f"# {r.name}: {'PASS' if r.passed else 'FAIL'}", ""]
    if r.description:
        lines += [r.description, ""]
    lines += [f"Scenario file: `{r.path}`; wall time {r.wall_s:.1f} s; radio simulator CPU {r.relay_cpu_s:.2f} s "
              f"({100 * r.relay_cpu_s / r.wall_s if r.wall_s else 0:.1f} % of one core).", ""]
    if r.error:
        lines += [f"**Error:** {r.error}", ""]
    lines += [f"**Skipped:** {k['fault']}: {k['reason']}" for k in r.skipped] + ([""] if r.skipped else [])
    lines += ["| bar | result | evidence |", "|---|---|---|"]
    lines += [f"| {b.name} | {'PASS' if b.passed else '**FAIL**'} | {b.evidence} |" for b in r.bars]
    if r.link:
        lines += ["", f"## Link (line at {r.link['baud']} baud; cut for {r.link['outage_seconds']:.1f} s)", "",
                  "| counter | down (flight to ground) | up (ground to flight) |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in _link_rows(r)]
    if r.products:
        lines += ["", "## Products (flight store against ground archive)", "",
                  ", ".join(f"{k}: {v}" for k, v in r.products.items())]
    if r.commands:
        lines += ["", "## Commands sent", ""]
        lines += [f"- at {c['at_s']:.1f} s: `{' '.join(c['tc'])}` (APID {c['apid']}, count {c['sequence']})"
                  for c in r.commands]
    if r.cop1:
        lines += ["", "## COP-1 session (FOP-1 of the command VC)", "",
                  ", ".join(f"{k}: {v}" for k, v in r.cop1.items())]
    if r.disk:
        lines += ["", "## Store filesystem", ""] + [f"- {', '.join(f'{k}: {v}' for k, v in d.items())}" for d in r.disk]
    lines += ["", f"Flight runs (exit status each): {r.flight_runs}", ""]
    if charts:
        lines += ["## Plots", ""]
        lines += [f"![{c.title}](plots/{c.name}.svg)" + ("" if c.points else " (no data)") for c in charts]
        lines.append("")
    return "\n".join(lines)


def html_page(r: ScenarioResult, charts: list[Plot] = ()) -> str:
    e = html.escape
    rows = "".join(f"<tr class='{'pass' if b.passed else 'fail'}'><td>{e(b.name)}</td>"
                   f"<td>{'PASS' if b.passed else 'FAIL'}</td><td>{e(b.evidence)}</td></tr>" for b in r.bars)
    link = "".join(f"<tr><td>{e(a)}</td><td>{e(b)}</td><td>{e(c)}</td></tr>" for a, b, c in _link_rows(r))
    figures = "".join(f"<figure id='{c.name}'>{c.svg}</figure>" for c in charts)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(r.name)}: {'PASS' if r.passed else 'FAIL'}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{border:1px solid #ccc;padding:.3em}}
table{{border-collapse:collapse}}.pass td:nth-child(2){{color:#060}}.fail td:nth-child(2){{color:#b00;font-weight:bold}}
</style></head><body>
<h1>{e(r.name)}: {'PASS' if r.passed else 'FAIL'}</h1>
<p>{e(r.description)}</p><p>{e(r.error)}</p>
<p>Wall time {r.wall_s:.1f} s; radio simulator CPU {r.relay_cpu_s:.2f} s.</p>
{"".join(f"<p><b>Skipped:</b> {e(k['fault'])}: {e(k['reason'])}</p>" for k in r.skipped)}
<table><tr><th>bar</th><th>result</th><th>evidence</th></tr>{rows}</table>
<h2>Link</h2><table><tr><th>counter</th><th>down</th><th>up</th></tr>{link}</table>
<h2>Products</h2><p>{e(', '.join(f'{k}: {v}' for k, v in r.products.items()))}</p>
{f"<h2>COP-1 session</h2><p>{e(', '.join(f'{k}: {v}' for k, v in r.cop1.items()))}</p>" if r.cop1 else ""}
{f"<h2>Store filesystem</h2><p>{e('; '.join(str(d) for d in r.disk))}</p>" if r.disk else ""}
<h2>Plots</h2>{figures}
</body></html>
"""


def junit(results: list[ScenarioResult]) -> str:
    """One testsuite per scenario, one testcase per bar: CI shows which bar failed and why."""
    suites = ET.Element("testsuites", name="kestrel-hil", tests=str(sum(len(r.bars) for r in results)),
                        failures=str(sum(not b.passed for r in results for b in r.bars)))
    for r in results:
        suite = ET.SubElement(suites, "testsuite", name=r.name, tests=str(len(r.bars)),
                              failures=str(sum(not b.passed for b in r.bars)), time=f"{r.wall_s:.3f}")
        for b in r.bars:
            case = ET.SubElement(suite, "testcase", classname=f"hil.{r.name}", name=b.name)
            if b.passed:
                ET.SubElement(case, "system-out").text = b.evidence
            else:
                ET.SubElement(case, "failure", message=b.evidence).text = b.evidence
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def write_reports(results: list[ScenarioResult], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for r in results:
        folder = out_dir / r.name
        folder.mkdir(parents=True, exist_ok=True)
        charts = plots(r)
        if charts:
            (folder / "plots").mkdir(exist_ok=True)
            for c in charts:
                (folder / "plots" / f"{c.name}.svg").write_text(c.svg)
                written.append(folder / "plots" / f"{c.name}.svg")
        for name, text in (("report.md", markdown(r, charts)), ("report.html", html_page(r, charts)),
                           ("result.json", r.to_json())):
            (folder / name).write_text(text)
            written.append(folder / name)
    (out_dir / "junit.xml").write_text(junit(results))
    written.append(out_dir / "junit.xml")
    return written
