"""The bench report: results.json rendered as report.md and report.html, with matplotlib plots.

Both documents are built from one list of blocks (headings, paragraphs, tables, images, videos), so
they always say the same thing. Plots are PNGs in ``OUT/plots/`` (linked from the Markdown, embedded
as base64 in the HTML so it can be mailed alone); clips are linked (Markdown) or shown in
``<video>`` elements (HTML) by paths relative to ``OUT``. A protocol missing from a variant reads
"not run"; a null measurement reads "n/a". Every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infworld.bench.buckets import MIN_SPREAD_DB, gap_closed_share
from infworld.bench.elo import JUDGE
from infworld.bench.plots import get_path as _get
from infworld.bench.plots import make_plots
from infworld.data.episode import atomic_write_bytes

NOT_RUN = "not run"
NA = "n/a"
CRITERIA = ("memory", "fidelity", "action")
STATE_FRAMES = ("100", "1000", "10000")

# ("h", level, text) | ("p", text) | ("ul", [text]) | ("table", headers, rows) | ("img", rel path, caption)
# | ("video", rel path, caption)
Block = tuple


def _num(x: Any, digits: int = 2) -> str:
    if x is None:
        return NA
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    return f"{x:.{digits}f}"


def _bytes(n: Any) -> str:
    if n is None:
        return NA
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _pct(x: Any) -> str:
    return NA if x is None else f"{100.0 * x:.1f}%"


def _per_horizon(horizons: list[int] | None, values: list[float] | None, digits: int = 2) -> str:
    if values is None:
        return NA
    return ", ".join(f"h{h}: {_num(v, digits)}" for h, v in zip(horizons or [], values, strict=False)) or NA


def _protocol_rows(variants: dict, protocol: str, cells: Callable[[dict], list[str]],
                   headers: list[str]) -> list[list[str]]:
    """One row per variant: the name, then ``cells(block)``, or "not run" in every column."""
    rows = []
    for name, v in variants.items():
        block = v.get(protocol)
        rows.append([name, *(cells(block) if block is not None else [NOT_RUN] * (len(headers) - 1))])
    return rows


def _memory_cells(r: dict) -> list[str]:
    common = f"{_num(r.get('psnr_gt_common'))} / {_num(r.get('psnr_self_common'))}"
    return [str(r.get("events", NA)), _num(r.get("psnr_gt")), _num(r.get("ssim_gt"), 3),
            _num(r.get("psnr_self")), _num(r.get("ssim_self"), 3), common,
            *_traj_cells(r.get("per_trajectory") or {})]


def _traj_cells(per: dict) -> list[str]:
    worst = min((p.get("psnr_gt") for p in per.values() if p.get("psnr_gt") is not None), default=None)
    best = max((p.get("psnr_gt") for p in per.values() if p.get("psnr_gt") is not None), default=None)
    return [str(len(per)), f"{_num(worst)} .. {_num(best)}" if worst is not None else NA]


def _variant_named(variants: dict, memory: str) -> dict | None:
    """The variant called ``memory``, or else the first whose memory strategy is ``memory``."""
    if memory in variants:
        return variants[memory]
    return next((v for v in variants.values() if _get(v, "memory", "name") == memory), None)


def _bucket_cell(b: dict | None) -> str:
    return NA if b is None else f"{_num(b.get('psnr_gt'))} dB ({b.get('events', 0)} events)"


def _bucket_section(variants: dict) -> list[Block]:
    """Revisit PSNR per gap bucket (suites with ``gap_buckets``), and the share of the window -> full
    PSNR gap each other variant closes per bucket when both baselines were run."""
    labels: list[str] = []
    for v in variants.values():
        labels += [lab for lab in (_get(v, "revisit", "per_bucket") or {}) if lab not in labels]
    if not labels:
        return []
    rows = [[n, *((_bucket_cell((_get(v, "revisit", "per_bucket") or {}).get(lab)) for lab in labels)
                  if "revisit" in v else [NOT_RUN] * len(labels))] for n, v in variants.items()]
    blocks: list[Block] = [
        ("h", 3, "Revisit PSNR by gap bucket"),
        ("p", "The revisit events split by how long ago the place was seen: gap a-b holds the returns "
              "a < t - s <= b frames after the first visit. PSNR against ground truth, number of events in "
              "parentheses."),
        ("table", ["variant", *(f"gap {lab}" for lab in labels)], rows)]
    window, full = _variant_named(variants, "window"), _variant_named(variants, "full")
    if window is None or full is None:
        return blocks
    w_pb, f_pb = _get(window, "revisit", "per_bucket") or {}, _get(full, "revisit", "per_bucket") or {}
    base = [_get(w_pb, lab, "psnr_gt") for lab in labels], [_get(f_pb, lab, "psnr_gt") for lab in labels]
    spread = [NA if w is None or f is None else f"{f - w:+.2f} dB" for w, f in zip(*base, strict=True)]
    share_rows = [["full - window", *spread]]
    for n, v in variants.items():
        if v is window or v is full:
            continue
        pb = _get(v, "revisit", "per_bucket") or {}
        share_rows.append([n, *(_pct(gap_closed_share(_get(pb, lab, "psnr_gt"), w, f))
                                for lab, w, f in zip(labels, *base, strict=True))])
    refused = sorted(_get(full, "skipped", "revisit") or {})
    caveat = (f" Careful: full refused {', '.join(refused)} (past its budget), so its buckets hold fewer "
              "events than the others' and the shares compare different returns." if refused else "")
    return blocks + [
        ("p", "Share of the window -> full gap closed: (PSNR - window) / (full - window) per bucket; 0% = no "
              "better than the local window, 100% = as good as the full-history oracle. The first row is "
              f"the gap itself; n/a where it is under {MIN_SPREAD_DB} dB (a share of noise).{caveat}"),
        ("table", ["variant", *(f"gap {lab}" for lab in labels)], share_rows)]


def _replay_cells(r: dict) -> list[str]:
    h = r.get("horizon") or []
    last = f"{_num((r.get('psnr') or [None])[-1])} dB at frame {h[-1]}" if h and r.get("psnr") else NA
    return [_num(r.get("psnr_mean")), _num(r.get("psnr_mean_common")), _num(r.get("ssim_mean"), 3), last,
            str(max(h) if h else NA)]


def _action_cells(r: dict) -> list[str]:
    return [_pct(_get(r, "idm_accuracy", "move")), _pct(_get(r, "idm_accuracy", "view")),
            f"{_pct(_get(r, 'idm_accuracy_real', 'move'))} / {_pct(_get(r, 'idm_accuracy_real', 'view'))}",
            _num(r.get("psnr_true_actions")), _num(r.get("psnr_random_actions")), _num(r.get("psnr_gap"))]


def _dist_cells(r: dict) -> list[str]:
    h = r.get("horizons")
    return [_per_horizon(h, r.get("fd_ours")), _per_horizon(h, r.get("kid_ours"), 4),
            _per_horizon(h, r.get("fid_inception")) if r.get("fid_inception") is not None else NA,
            _num(r.get("dynamic_degree_proxy")), _num(r.get("motion_smoothness_proxy"), 3)]


def _speed_cells(r: dict) -> list[str]:
    sb = r.get("state_bytes") or {}
    return [_num(r.get("fps")), _num(r.get("latency_ms_p50"), 1), _num(r.get("latency_ms_p95"), 1),
            _num(r.get("peak_rss_mb"), 0), *(_bytes(sb.get(k)) for k in STATE_FRAMES)]


def _ratings_table(elo: dict, variants: list[str], key: str) -> tuple[list[str], list[list[str]]]:
    crits = [c for c in CRITERIA if c in elo.get("criteria", {})]
    crits += [c for c in elo.get("criteria", {}) if c not in crits]
    headers = ["variant"] + [f"{c} ({elo['criteria'][c].get('games', 0)} games)" for c in crits]
    rows = []
    for v in variants:
        row = [v]
        for c in crits:
            r = elo["criteria"][c].get("ratings", {}).get(v)
            row.append(f"{r[key]:.0f} [{r[key + '_ci'][0]:.0f}, {r[key + '_ci'][1]:.0f}]" if r else NA)
        rows.append(row)
    return headers, rows


def _run_section(res: dict) -> list[Block]:
    model, suite, machine, settings = (res.get(k) or {} for k in ("model", "suite", "machine", "settings"))
    trajs = suite.get("trajectories") or []
    items = [
        f"Model: {model.get('name', NA)} ({_num(model.get('params'))} parameters), "
        f"from {model.get('path', NA)}",
        f"Suite: {suite.get('name', NA)} version {suite.get('version', NA)}, {len(trajs)} trajectories, "
        f"{sum(t.get('frames', 0) for t in trajs):,} frames in all",
        "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()),
        f"Machine: {machine.get('platform', NA)}, {machine.get('processor') or NA}, "
        f"{machine.get('cores', NA)} cores; Python {machine.get('python', NA)}, "
        f"torch {machine.get('torch', NA)}, infworld {machine.get('infworld', NA)}",
        f"Created: {res.get('created', NA)}; results schema {res.get('schema', NA)}",
    ]
    blocks: list[Block] = [("h", 2, "What was run"), ("ul", items)]
    if trajs:
        blocks.append(("table", ["trajectory", "kind", "frames", "seed"],
                       [[t.get("name", NA), t.get("kind", NA), _num(t.get("frames")), str(t.get("seed", NA))]
                        for t in trajs]))
    return blocks


def _table(variants: dict, protocol: str, cells: Callable[[dict], list[str]], headers: list[str]) -> Block:
    return ("table", headers, _protocol_rows(variants, protocol, cells, headers))


def _skipped(variants: dict) -> list[Block]:
    """Trajectories a variant refused, with the reason (e.g. full past its budget)."""
    lines = [f"{n}: {proto} / {traj}: {why}" for n, v in variants.items()
             for proto, trajs in (v.get("skipped") or {}).items() for traj, why in (trajs or {}).items()]
    return [("p", "Skipped:"), ("ul", lines)] if lines else []


def _summary_section(variants: dict) -> list[Block]:
    mem = []
    for n, v in variants.items():
        m = v.get("memory") or {}
        opts = ", ".join(f"{k} {val}" for k, val in (m.get("settings") or {}).items())
        mem.append(f"{n}: memory strategy {m.get('name', NA)}" + (f" ({opts})" if opts else ""))
    return [
        ("h", 2, "Summary per memory variant"), ("ul", mem),
        ("h", 3, "Revisits (memory)"),
        ("p", "At each return to an earlier place: PSNR/SSIM of the generated frame against ground truth at "
              "that pose (gt), and against the model's own frame from the first visit (self)."),
        _table(variants, "revisit", _memory_cells, ["variant", "events", "PSNR gt", "SSIM gt", "PSNR self",
                                                     "SSIM self", "PSNR gt / self, shared trajectories",
                                                     "trajectories", "PSNR gt range"]),
        *_bucket_section(variants),
        ("h", 3, "Replay fidelity (compounding error)"),
        _table(variants, "replay", _replay_cells,
               ["variant", "PSNR mean", "PSNR mean, shared trajectories", "SSIM mean", "last frame",
                "horizon"]),
        ("h", 3, "Action control"),
        ("p", "An inverse-dynamics model (IDM) reads the action back from consecutive generated frames; "
              "'on real' is its accuracy on real frames, the ceiling. The gap is PSNR with the true actions "
              "minus PSNR with random actions: near 0 means the actions are ignored."),
        _table(variants, "action", _action_cells,
               ["variant", "IDM move", "IDM view", "IDM on real (move / view)", "PSNR true", "PSNR random",
                "gap"]),
        ("h", 3, "Distribution and motion"),
        ("p", "FD ours: Frechet distance in the features of our own tokenizer encoder, not FID. KID ours: "
              "the unbiased polynomial-kernel MMD^2 in the same features. Dynamic degree and motion "
              "smoothness are proxies (Farneback optical flow, neighbour-average interpolation), NOT VBench "
              "scores."),
        _table(variants, "distribution", _dist_cells, ["variant", "FD ours", "KID ours", "FID Inception",
                                                       "dynamic degree proxy", "motion smoothness proxy"]),
        ("p", "'Shared trajectories' averages only over the trajectories every variant completed (a "
              "variant such as full refuses trajectories longer than its budget): compare on those columns."),
        *_skipped(variants),
        ("h", 3, "Speed and footprint"),
        ("p", "State bytes = the engine's KV cache plus what the memory strategy holds "
              "(WorldModel.state_nbytes()); see speed.state_bytes_method in results.json for how they were "
              "measured."),
        _table(variants, "speed", _speed_cells,
               ["variant", "FPS", "latency p50 ms", "latency p95 ms", "peak RSS MB",
                *(f"state @ {k} frames" for k in STATE_FRAMES)]),
    ]


def _elo_section(res: dict) -> list[Block]:
    elo = res.get("elo")
    blocks: list[Block] = [("h", 2, "Ratings: metric-judged Elo and Bradley-Terry")]
    if not elo or not elo.get("criteria"):
        return blocks + [("p", f"{NOT_RUN} (ratings need at least two variants).")]
    judge = elo.get("judge", JUDGE)
    blocks.append(("p", ("The judge is a metric, not people" if judge == JUDGE else f"Judge: {judge}") +
                        ": for each criterion "
                        "and trajectory, two variants play a game and the better measured score wins. Unlike "
                        "Infinite-World's human-judged Elo, these ratings only rank the variants of this run "
                        "on this suite; brackets give 95% bootstrap intervals over games."))
    names = list(res.get("variants", {}))
    for title, key in (("Elo", "elo"), ("Bradley-Terry (Elo scale)", "bt")):
        headers, rows = _ratings_table(elo, names, key)
        blocks += [("h", 3, title), ("table", headers, rows)]
    judged = [f"{c}: {e['metric']}" for c, e in elo["criteria"].items() if e.get("metric")]
    if judged:
        blocks += [("p", "Judging metric per criterion:"), ("ul", judged)]
    return blocks


def _clips_section(clips: dict[str, list[Path]] | None, out_dir: Path) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Clips (generated | ground truth)")]
    if not clips:
        return blocks + [("p", "No clips were written.")]
    for variant, paths in clips.items():
        blocks.append(("h", 3, variant))
        for p in paths:
            rel = Path(os.path.relpath(Path(p), out_dir)).as_posix()
            blocks.append(("video", rel, Path(p).stem))
    return blocks


NOTES = [
    "PSNR is in dB against 8-bit frames (peak 255) and capped at 100 dB for identical frames; SSIM is "
    "Wang et al. 2004 (11x11 Gaussian window, sigma 1.5) per RGB channel, averaged.",
    "FD/KID use few samples per horizon: compare variants within one report, not with published FID/KID.",
    "Memory state bytes are the size of what the memory strategy keeps after that many frames; n/a means "
    "not measured. 'not run' means the protocol was not part of this run.",
]


def build_blocks(results: dict, out_dir: Path, plots: list[tuple[str, str]], plot_note: str | None,
                 clips: dict[str, list[Path]] | None) -> list[Block]:
    """The report's content, once, for both renderers."""
    suite, model = results.get("suite") or {}, results.get("model") or {}
    variants = results.get("variants") or {}
    blocks: list[Block] = [("h", 1, f"infworld bench: {suite.get('name', NA)} on {model.get('name', NA)}")]
    blocks += _run_section(results)
    blocks += _summary_section(variants) if variants else [("p", "No variants were run.")]
    blocks += _elo_section(results)
    blocks.append(("h", 2, "Plots"))
    blocks += [("img", rel, cap) for rel, cap in plots] or [("p", plot_note or "No data to plot.")]
    blocks += _clips_section(clips, out_dir)
    blocks += [("h", 2, "How to read these numbers"), ("ul", NOTES)]
    return blocks


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b[0] == "h":
            out.append(f"{'#' * b[1]} {b[2]}")
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "ul":
            out.append("\n".join(f"- {item}" for item in b[1]))
        elif b[0] == "table":
            lines = ["| " + " | ".join(_md_cell(h) for h in b[1]) + " |", "|" + " --- |" * len(b[1])]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b[2]]
            out.append("\n".join(lines))
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1]})\n\n*{b[2]}*")
        elif b[0] == "video":
            out.append(f"- [{b[2]}]({b[1]})")
    return "\n\n".join(out) + "\n"


CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.3em .6em;"
       "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
       "img{max-width:100%}video{width:384px;image-rendering:pixelated;margin:.3em}figure{margin:1em 0}")


def render_html(blocks: list[Block], out_dir: Path) -> str:
    e = html.escape
    body: list[str] = []
    for b in blocks:
        if b[0] == "h":
            body.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            body.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "ul":
            body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b[1]) + "</ul>")
        elif b[0] == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":
            data = base64.b64encode((out_dir / b[1]).read_bytes()).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(b[2])}">'
                        f"<figcaption>{e(b[2])}</figcaption></figure>")
        elif b[0] == "video":
            body.append(f'<figure><video controls loop muted src="{e(b[1])}"></video>'
                        f'<figcaption><a href="{e(b[1])}">{e(b[2])}</a></figcaption></figure>')
    title = e(blocks[0][2]) if blocks and blocks[0][0] == "h" else "infworld bench"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(results: dict, out_dir: Path,
                 clips: dict[str, list[Path]] | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/report.md``, ``out_dir/report.html`` and ``out_dir/plots/*.png``; returns the two
    report paths. ``clips`` maps a variant to its side-by-side mp4 files (linked, not copied)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots, note = make_plots(results, out_dir / "plots")
    rel_plots = [(Path(os.path.relpath(p, out_dir)).as_posix(), cap) for p, cap in plots]
    blocks = build_blocks(results, out_dir, rel_plots, note, clips)
    md, page = render_markdown(blocks), render_html(blocks, out_dir)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write_bytes(md_path, lambda f: f.write(md.encode()))
    atomic_write_bytes(html_path, lambda f: f.write(page.encode()))
    return md_path, html_path


