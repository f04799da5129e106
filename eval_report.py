"""evaluate.py's reports: the resumable per-video CSV, the FVD feature cache, the summary and tables.

Rows are keyed by (category, video) and signed by what they were computed from: the data root,
the digests of the ground-truth and output folders (identity.json, or a fingerprint of the frame
files when a folder has none) and the protocol. A row whose signature differs from the current
folders is stale: it is dropped when the report is opened, and the video is scored again.
"""
import csv
import io
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import torch

import checkpoints
import protocols
import utils
from utils import ASVFIError

DISPLAY = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "flolpips": "FloLPIPS", "vfips": "VFIPS",
           "fvd": "FVD"}
LABEL = 16  # width of the metric column of the console table
BASE_COLUMNS = ("video", "category", "frames", "generated")
TAIL_COLUMNS = ("error", "notes", "data_root", "gt_digest", "out_digest", "protocol", "code")
LEGACY_TAIL_COLUMNS = TAIL_COLUMNS[:-1]  # reports written before each row recorded the code that scored it
SIGNATURE = ("data_root", "gt_digest", "out_digest", "protocol")
MISSING_OUTPUT = "missing output"


def csv_columns(metric_columns):
    return list(BASE_COLUMNS) + list(metric_columns) + list(TAIL_COLUMNS)


def format_value(value):
    return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)


def row_key(row):
    return row["category"], row["video"]


def metric_columns(columns):
    """The metric columns of a report header (this format's, or the one before rows had a code
    column); None when its other columns are neither."""
    columns, base = list(columns), len(BASE_COLUMNS)
    for tail in (TAIL_COLUMNS, LEGACY_TAIL_COLUMNS):
        if len(columns) >= base + len(tail) and (tuple(columns[:base]), tuple(columns[-len(tail):])) == \
                (BASE_COLUMNS, tail):
            return columns[base:-len(tail)]
    return None


def scored_while_unavailable(row, computable):
    """Names of the `computable` metrics ({column: name}) a finished row has no value of and no note
    about: a metric that could not run then (its weights were missing) leaves its column empty and
    says nothing, while one that ran without a value notes "name: reason"."""
    notes = f"; {row.get('notes', '')}"
    return [name for column, name in computable.items()
            if column in row and row[column] == "" and f"; {name}: " not in notes]


class ResultsCSV:
    """One row per video, appended and flushed as each video finishes.

    On start it keeps the finished rows of an earlier run whose signature matches `current` ({key:
    signature dict}; rows of other videos are kept as they are); cut-off rows, failed rows and stale
    rows are dropped and the file is rewritten atomically. Rows of these videos scored under another
    data root are another data set's results, not stale ones: the run is refused instead. `done`
    holds the keys already scored. An earlier report that records more metrics than `columns` keeps
    its columns (this run reports a subset of them), provided no video with output is left to score.
    A recorded column without a value in any kept row (a metric that was unavailable) stays, empty,
    and does not hold up a run without it: once the metric can run its rows are scored again. With
    no row kept the report takes this run's columns. A row of this run's videos without a value of a
    metric this run computes (`computable`: {column: metric name}) and without a note saying why was
    scored while that metric was unavailable: it is scored again (`rescored`: {key: metric names}).
    Only the writing process (rank 0) passes write=True.
    """

    def __init__(self, path, columns, current, restart=False, write=True, computable=None):
        self.path, self.write, columns = Path(path), write, list(columns)
        recorded, rows = (columns, []) if restart or not self.path.is_file() else self._read_previous(columns)
        self._check_same_data_root(rows, current)
        self.rows = [r for r in rows if row_key(r) not in current
                     or all(r[c] == str(current[row_key(r)][c]) for c in SIGNATURE)]
        self.rescored = {row_key(r): lacking for r in self.rows if row_key(r) in current
                         and (lacking := scored_while_unavailable(r, computable or {}))}
        self.rows = [r for r in self.rows if row_key(r) not in self.rescored]
        self.done = {row_key(r) for r in self.rows}
        self.columns = self._report_columns(recorded, columns)
        left_out = [c for c in metric_columns(self.columns)
                    if c not in columns and any(row[c] != "" for row in self.rows)]
        if left_out:
            self._check_nothing_to_score(current, left_out)
        if write:
            utils.atomic_write_text(self.path, self._render(self.rows))

    def _read_previous(self, columns):
        """(header, finished rows) of the report on disk; an error when it is not this version's format."""
        text = self.path.read_text()
        complete = text[:text.rfind("\n") + 1] if not text.endswith("\n") else text
        reader = csv.DictReader(io.StringIO(complete))
        if reader.fieldnames is None:
            return [], []
        if metric_columns(reader.fieldnames) is None:
            raise ASVFIError(f"{self.path} was written with columns {reader.fieldnames}, not this version's "
                             f"{columns}; add --restart to start this report again.")
        return reader.fieldnames, [{"code": "", **row} for row in reader
                                   if not row["error"] and None not in row.values()]

    def _check_same_data_root(self, rows, current):
        """Two data roots can hold videos of the same names (two renderings of the demo, a moved copy):
        replacing one's scores by the other's would lose them."""
        other = [r for r in rows if row_key(r) in current and r["data_root"] != str(current[row_key(r)]["data_root"])]
        if other:
            first = other[0]
            raise ASVFIError(f"{self.path} holds the scores of {len(other)} of these videos under data root "
                             f"{first['data_root']}, not {current[row_key(first)]['data_root']}; pass another "
                             f"--out-dir to keep both reports, or add --restart to replace its scores")

    def _report_columns(self, recorded, columns):
        """The report's columns: the recorded ones, in their recorded order; this run's when no row
        is kept. An error when this run adds a metric the kept rows lack."""
        if not self.rows:
            return columns
        have = metric_columns(recorded)
        new = [c for c in metric_columns(columns) if c not in have]
        if new:
            raise ASVFIError(f"{self.path} records {', '.join(have)}; this run adds {', '.join(new)} (other "
                             f"--metrics or --flow). Drop those from --metrics to report from the recorded "
                             f"columns, or add --restart to score every video again with this run's metrics.")
        return csv_columns(have)

    def _check_nothing_to_score(self, current, left_out):
        """A run reporting a subset of the recorded metrics must not score a video: its row would lack
        the recorded metrics `left_out`. Videos without output only get error rows, which are retried."""
        todo = [f"{c}/{v}" for (c, v), sig in current.items() if (c, v) not in self.done and sig["out_digest"]]
        if todo:
            raise ASVFIError(f"{self.path}: {len(todo)} video(s) to score ({utils.some_of(todo, 3)}), and the report "
                             f"also records {', '.join(left_out)}, which this run's --metrics would leave out "
                             f"of their rows. Rerun with the metrics it records to score them, or add --restart "
                             f"to start a report of this run's metrics.")

    def _render(self, rows):
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def put_in_order(self, keys):
        """Rewrite the file with the rows in `keys` order (a resumed run then equals an uninterrupted one)."""
        position = {key: i for i, key in enumerate(keys)}
        self.rows.sort(key=lambda row: position.get(row_key(row), len(position)))
        if self.write:
            utils.atomic_write_text(self.path, self._render(self.rows))

    def append(self, row):
        """Append in place (the one non-atomic write: this is the journal a killed run resumes from,
        and a cut-off last line is dropped on reading); the finished report is rewritten atomically."""
        row = {column: format_value(row.get(column, "")) for column in self.columns}
        if self.write:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, self.columns, lineterminator="\n").writerow(row)
                f.flush()
                os.fsync(f.fileno())
        self.rows.append(row)
        self.done.add(row_key(row))


class FeatureCache:
    """Per-video I3D features (real and fake clips) so a resumed run computes the same FVD."""

    def __init__(self, folder, restart=False):
        self.folder = Path(folder)
        if restart and self.folder.is_dir():
            for path in self.folder.glob("*/*.pt"):
                path.unlink()

    def path(self, category, video):
        return self.folder / category / f"{video}.pt"

    def save(self, category, video, features):
        real, fake = features
        checkpoints.save({"real": torch.from_numpy(real), "fake": torch.from_numpy(fake)}, self.path(category, video))

    def load(self, category, video):
        path = self.path(category, video)
        if not path.is_file():
            return None
        state = checkpoints.load_file(path)
        return state["real"].numpy(), state["fake"].numpy()


# ----------------------------------------------------------------------------- summary
def column_stats(rows, column, protocol):
    """Set value of a per-video column under the protocol's averaging ("pooled": weighted by the
    number of frames each row's mean is over), the std over videos (population, ddof 0) and N videos.
    A std over fewer than two videos is undefined: None (null in the JSON, "—" in the table)."""
    rows = [r for r in rows if r.get(column, "") != ""]
    if not rows:
        return {"mean": None, "std": None, "n": 0, "frames": 0}
    values = np.array([float(r[column]) for r in rows], dtype=np.float64)
    frames = np.array([float(r["generated"]) for r in rows])
    weights = frames if protocol.average == "pooled" else None
    return {"mean": float(np.average(values, weights=weights)), "std": float(values.std()) if len(values) > 1 else None,
            "std_over": "videos", "n": len(values), "frames": int(frames.sum()), "average": protocol.average}


def set_level_fvd(rows, cache, protocol):
    """FVD over the cached clip features of every scored video, with the protocol's statistics."""
    real, fake, missing = [], [], 0
    for row in rows:
        if row.get("fvd_clips", "") == "" or int(float(row["fvd_clips"])) == 0:
            continue
        features = cache.load(row["category"], row["video"])
        if features is None:
            missing += 1
            continue
        real.append(features[0])
        fake.append(features[1])
    if not real:
        return {"value": None, "clips": 0, "reason": f"no video has {protocols.FVD_CLIP_FRAMES} frames"}
    real, fake = np.concatenate(real), np.concatenate(fake)
    try:
        value, reason = protocols.fvd_from_features(protocol, real, fake), ""
    except ValueError as err:
        value, reason = None, str(err)
    if missing:
        reason = (reason + "; " if reason else "") + f"features of {missing} video(s) missing from {cache.folder}"
    return {"value": value, "clips": int(min(len(real), len(fake))), "reason": reason}


def metric_entry(name, rows, run, cache):
    flow = {"flow": run.flow} if name == "flolpips" else {}
    if name in run.unavailable:
        return {"status": "unavailable", "reason": run.unavailable[name], **flow}
    metric = run.built[name]
    if name == "fvd":
        entry = {"status": "ok", **set_level_fvd(rows, cache, run.protocol)}
    else:
        entry = {"status": "ok", **column_stats(rows, metric.column, run.protocol)}
        without = [r for r in rows if r.get(metric.column, "") == ""]
        if without:
            entry["without_value"] = len(without)
            entry["why"] = sorted({note[len(name) + 2:] for r in without for note in r["notes"].split("; ")
                                   if note.startswith(f"{name}: ")})
    return {**entry, "about": metric.about, **metric.info, **flow}


def summarize(rows, run, cache, header, extra_outputs=()):
    """The summary dict: what was scored, what failed or had no output, every metric's set value."""
    scored = [r for r in rows if not r["error"]]
    missing = [r for r in rows if r["error"].startswith(MISSING_OUTPUT)]
    failed = [r for r in rows if r["error"] and r not in missing]
    protocol = run.protocol
    return {**header, "protocol": {"name": protocol.name, "reproduces": protocol.reproduces,
                                   "summary": protocol.description(), "departures": protocol.departures,
                                   "frame_crop": protocol.frame_crop},
            "videos": len(scored), "listed": len(rows),
            "failed": [f"{r['category']}/{r['video']}: {r['error']}" for r in failed],
            "missing_output": [f"{r['category']}/{r['video']}" for r in missing],
            "outside_set": list(extra_outputs),
            "code": codes_of(scored),
            "metrics": {name: metric_entry(name, scored, run, cache) for name in run.names}}


def codes_of(rows):
    """[{commit, videos}] of the code that scored each row, in order of first appearance (commit None:
    a row of a report written before rows recorded it, or code outside a git checkout)."""
    counts = {}
    for row in rows:
        commit = row.get("code") or None
        counts[commit] = counts.get(commit, 0) + 1
    return [{"commit": commit, "videos": n} for commit, n in counts.items()]


def code_line(entries):
    parts = [f"{e['commit'] or 'not recorded'} ({e['videos']})" for e in entries]
    return f"code that scored them: {'; '.join(parts) or 'none'}"


def format_number(value):
    return "—" if value is None else f"{value:.4f}" if abs(value) < 1e4 else f"{value:.1f}"


def count_line(summary):
    """'7 of 8 scored, 1 missing output: A/b' (+ failures and outputs of videos outside the scored set)."""
    parts = [f"{summary['videos']} of {summary['listed']} scored"]
    for key, label in (("missing_output", "missing output"), ("failed", "failed"),
                       ("outside_set", "output(s) outside the scored set")):
        if summary[key]:
            shown = [item.split(": ")[0] for item in summary[key]]
            parts.append(f"{len(shown)} {label}: {utils.some_of(shown, 5)}")
    return ", ".join(parts)


def protocol_lines(protocol):
    return [f"protocol {protocol['name']}: reproduces {protocol['reproduces']}",
            f"  {protocol['summary']}", f"  departures: {protocol['departures'] or 'none'}"]


def format_table(summary):
    lines = [f"{summary['title']}: {count_line(summary)}", f"scored set: {summary['scope']}",
             *protocol_lines(summary["protocol"]), *made_by_lines(summary.get("made_by", []), summary["unit"]),
             f"data root: {summary['data_root']}; {code_line(summary['code'])}",
             f"std and N over {summary['unit']}s (std: population, ddof 0); frames: the generated frames scored",
             f"{'metric':<{LABEL}}{'mean':>12}{'std':>12}{'N':>8}{'frames':>8}  notes"]
    for name, entry in summary["metrics"].items():
        label = DISPLAY[name] + (f" ({entry['flow'].upper()})" if "flow" in entry else "")
        if entry["status"] == "unavailable":
            lines.append(f"{label:<{LABEL}}unavailable ({entry['reason']})")
        elif name == "fvd":
            note = f"{entry['clips']} clips of {protocols.FVD_CLIP_FRAMES} frames" + (
                f"; {entry['reason']}" if entry["reason"] else "")
            lines.append(f"{label:<{LABEL}}{format_number(entry['value']):>12}{'':>12}{'':>8}{'':>8}  {note}")
        else:
            note = ", ".join(filter(None, [f"{entry['average']} mean" if entry.get("average") == "pooled" else "",
                                           f"{entry['without_value']} video(s) without a value: "
                                           f"{'; '.join(entry['why'])}" if entry.get("without_value") else ""]))
            lines.append(f"{label:<{LABEL}}{format_number(entry['mean']):>12}{format_number(entry['std']):>12}"
                         f"{entry['n']:>8}{entry['frames']:>8}  {note}".rstrip())
    lines += weights_lines(summary)
    if summary.get("stale_outputs"):
        lines.append(f"NOTE {len(summary['stale_outputs'])} output(s) were made by an earlier state of their "
                     f"checkpoint file: {utils.some_of(summary['stale_outputs'], 5)}")
    lines += [f"FAILED {failure}" for failure in summary["failed"]]
    return "\n".join(lines) + "\n"


def code_version(folder=Path(__file__).resolve().parent):
    """The commit of this code (`+changes` when the working tree differs from it), or None outside a
    git checkout: which code computed a report's numbers."""
    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    try:
        head, status = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if status.stdout.strip() else "")


def made_by(identities):
    """What made the scored outputs, from their identity records: one entry per model, checkpoint
    file and generation settings, with the number of videos it made."""
    groups = {}
    for record in identities:
        record = record or {}
        checkpoint = record.get("checkpoint")
        key = json.dumps([record.get("model"), checkpoint, record.get("settings")], sort_keys=True)
        groups.setdefault(key, {"model": record.get("model"), "checkpoint": checkpoint,
                                "settings": record.get("settings"), "videos": 0})["videos"] += 1
    return list(groups.values())


def generation_settings(settings):
    """(name, value) of the settings besides the weights that decide generated frames: the seed,
    autocast, tiling and, for PerVFI, the sampling heat and the flow estimator that ran."""
    config = settings.get("config") or {}
    shown = [("seed", settings.get("seed")), ("amp", settings.get("amp")), ("tile", settings.get("tile") or None),
             ("heat", config.get("heat")), ("flow", settings.get("flow_estimator_used"))]
    return [(name, value) for name, value in shown if value is not None]


def made_by_lines(entries, unit="video"):
    lines = []
    for entry in entries:
        checkpoint = entry["checkpoint"]
        weights = (f"checkpoint {checkpoint['path']} ({checkpoint['size']:,} bytes)" if checkpoint
                   else "no checkpoint" if entry["model"] else "no identity record")
        shown = ", ".join(f"{name} {value}" for name, value in generation_settings(entry["settings"] or {}))
        lines.append(f"outputs made by: {entry['model'] or '?'}, {weights}{f', {shown}' if shown else ''}: "
                     f"{entry['videos']} {unit}(s)")
    return lines


def weights_lines(summary):
    """How each learned metric's pretrained files were checked (sha256 / sha256-prefix / unverified)."""
    checked = [f"{DISPLAY[name]} {entry['weights']}" for name, entry in summary["metrics"].items()
               if entry.get("weights")]
    if not checked:
        return []
    return [f"weights checked by: {'; '.join(checked)} (unverified = no published hash, format checked only)"]


def paper_row(summary, decimals):
    """The numbers as the reference's table prints them, e.g. 'PSNR 33.33 | SSIM 0.971'."""
    cells = []
    for name, places in decimals:
        entry = summary["metrics"].get(name)
        if entry and entry["status"] == "ok":
            value = entry["value"] if name == "fvd" else entry["mean"]
            cells.append(f"{DISPLAY[name].split(' ')[0]} {'—' if value is None else f'{value:.{places}f}'}")
    return (f"paper row ({summary['protocol']['name']} protocol, {summary['title']}, {summary['videos']} of "
            f"{summary['listed']} scored): " + " | ".join(cells))


def write_summary(summary, csv_path):
    stem = csv_path.with_suffix("")
    utils.atomic_write_text(f"{stem}_summary.json", json.dumps(summary, indent=2) + "\n")
    utils.atomic_write_text(f"{stem}_summary.txt", format_table(summary))
