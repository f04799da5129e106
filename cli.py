"""The command-line layer of main.py, inference.py and evaluate.py: shared flags, declared once.

    parser = argparse.ArgumentParser(...)
    cli.add_run_flags(parser)          # --optimizer --lr --tag: the run name <optimizer>_<lr>[_<tag>]
    cli.add_checkpoint_flags(parser)   # --epoch --checkpoint (alias --weights): which checkpoint of the run
    cli.add_data_flags(parser)         # --data-root --dataset
    cli.add_machine_flags(parser)      # --device --weights-dir --out-dir
    sys.exit(cli.run_entry_point(main_body, argv))   # ASVFIError -> "error: ..." on stderr, status 1;
                                                     # SIGTERM -> one "stopped (SIGTERM)..." line, status 143

Flags are hyphenated; the seed's documented underscore spellings (--start_epoch, --random_seed,
--batch_size) stay as aliases. `--dataset` means the same in every script: which data set under
--data-root (ucf101 or demo; default ucf101 when it is there, else the demo). `--out-dir` is the
root of weights/, figs/ and evals/ in all three scripts, so train → infer → evaluate chain.
"""
import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings

import runs
from utils import ASVFIError

DATASETS = (*runs.DATASET_FOLDERS, *runs.TESTSET_FOLDERS)


def dataset_name(text):
    """A --dataset value: a preset or test set, or the folder name of a set `prepare --dataset-dir` made."""
    if text in DATASETS or runs.is_folder_name(text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: not one of {', '.join(DATASETS)}, nor a folder name under "
                                     f"--data-root (no path separators)")


def lr_string(text):
    """--lr stays the string the user typed (it names the run) but must parse as a positive float."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return text


def add_run_flags(parser):
    group = parser.add_argument_group("run name")
    group.add_argument("--optimizer", default="adamw", choices=["adamw", "adam"],
                       help="optimiser; with --lr and --tag it names the run (default adamw)")
    group.add_argument("--lr", default=None, type=lr_string,
                       help="learning rate, kept as typed for the run name (default: the model's preset, "
                            "6e-4 asvfi, 5e-4 pervfi)")
    group.add_argument("--tag", default=None, help="run-name suffix, e.g. noaudio -> adamw_6e-4_noaudio")
    return group


def add_checkpoint_flags(parser):
    group = parser.add_argument_group("checkpoint")
    group.add_argument("--epoch", type=int, default=0,
                       help="0 = the run's latest checkpoint, N = its epoch-N snapshot (frames go to <s>_<run>_epoch<N>)")
    group.add_argument("--checkpoint", "--weights", dest="checkpoint", default=None, metavar="PATH",
                       help="a checkpoint file instead of the run's (its file name replaces the run name)")
    return group


def refuse_checkpoint_for_baseline(parser, args):
    """A training-free baseline has no weights: --checkpoint / --epoch with one would be ignored."""
    if args.model not in runs.TRAINED_MODELS and (args.checkpoint or args.epoch):
        flag = "--checkpoint" if args.checkpoint else "--epoch"
        parser.error(f"{flag} does not apply to --model {args.model}: it has no weights "
                     f"(checkpoints are for {', '.join(runs.TRAINED_MODELS)})")


def add_data_flags(parser):
    group = parser.add_argument_group("data")
    group.add_argument("--data-root", default="../data", help="folder holding the data sets and generated frames")
    group.add_argument("--dataset", default=None, type=dataset_name, metavar="|".join(DATASETS) + "|FOLDER",
                       help="data set under --data-root (default: ucf101 when {data_root}/UCF-101 or its split "
                            "CSV exists, else demo, generated on first use); FOLDER: any folder of videos "
                            "prepared with `utils.py prepare --dataset-dir FOLDER`")
    return group


def add_machine_flags(parser):
    group = parser.add_argument_group("machine")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present)")
    group.add_argument("--weights-dir", default=None,
                       help="folder with pretrained weight files (weights.py registry; offline machines)")
    group.add_argument("--out-dir", default=".", help="root of weights/, figs/ and evals/ (default: here)")
    return group


def add_amp_flag(parser):
    parser.add_argument("--amp", nargs="?", const="bf16", default=None, choices=["bf16", "fp16"],
                        help="autocast on CUDA (bare --amp = bf16; fp16 adds a GradScaler in training); "
                             "ignored on CPU")


def fill_preset_lr(args):
    """Part of parsing: without --lr a trained model's run is the one its preset trains (adamw_6e-4 for
    asvfi, adamw_5e-4 for pervfi), so main.py → inference.py → evaluate.py chain without flags."""
    if args.lr is None:
        args.lr = runs.default_lr(args.model)
    return args


def dataset_of(args):
    """The --dataset given, or the default for --data-root."""
    return args.dataset or runs.default_dataset(args.data_root)


class Stopped(SystemExit):
    """A run stopped from outside: SIGTERM (sigterm_unwinds raises it), or Ctrl-C (run_entry_point, or
    a script that adds notes, turns its KeyboardInterrupt into one). It exits with status 128 + the
    signal number, and run_entry_point prints it as one line, `stopped (<cause>)` followed by the notes
    added on the way up (what a script knows of where it stopped, e.g. the epoch its last checkpoint
    holds)."""

    def __init__(self, signum):
        super().__init__(128 + signum)
        self.cause = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name

    def line(self):
        notes = "; ".join(getattr(self, "__notes__", ()))
        return f"stopped ({self.cause})" + (f": {notes}" if notes else "")


def run_entry_point(body, argv=None):
    """Run a script's body; a project error becomes a one-line message and exit status 1, warnings
    print as one line each, and SIGTERM unwinds it like Ctrl-C; either stop ends with one `stopped`
    line and status 128 + the signal (130 for Ctrl-C), without a traceback."""
    try:
        with sigterm_unwinds(), one_line_warnings():
            return body(argv)
    except ASVFIError as error:
        print(f"error: {user_message(error)}", file=sys.stderr)
        return 1
    except Stopped as stop:
        print(stop.line(), file=sys.stderr)
        raise
    except KeyboardInterrupt:
        print(Stopped(signal.SIGINT).line(), file=sys.stderr)
        raise Stopped(signal.SIGINT) from None


def user_message(error):
    """The error's message; for one re-raised from a DataLoader worker, the worker's own message
    (torch puts the worker's traceback in front of it)."""
    text = str(error)
    if "\nOriginal Traceback" not in text:
        return text
    return text.rstrip().splitlines()[-1].partition(": ")[2]


@contextlib.contextmanager
def sigterm_unwinds():
    """Within the block SIGTERM (a cluster's time limit, `kill`) raises Stopped, a SystemExit(143),
    instead of ending the process where it stands, so `finally` blocks remove temporary files and
    release output locks. Signals reach only the main thread; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous, previous_hook = signal.signal(signal.SIGTERM, exit_on_signal), sys.unraisablehook

    def redeliver_if_swallowed(unraisable):
        # Python ignores an exception raised in a __del__ (a DataLoader iterator shutting down its
        # workers at the end of an epoch): the SIGTERM is sent again once the hook has returned
        # (from a timer thread: a signal sent here would be handled, and ignored, in the hook).
        if isinstance(unraisable.exc_value, SystemExit) and unraisable.exc_value.code == 128 + signal.SIGTERM:
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        else:
            previous_hook(unraisable)

    sys.unraisablehook = redeliver_if_swallowed
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


@contextlib.contextmanager
def one_line_warnings():
    """Within the block a warning prints as `warning: <message>` (ours name the file they are about),
    not with the path and source line of the code that raised it, and on a line of its own."""
    previous = warnings.formatwarning
    warnings.formatwarning = one_line_below_cleared_bars
    try:
        yield
    finally:
        warnings.formatwarning = previous


def one_line_below_cleared_bars(*warning):
    """`one_line`, with the progress bars cleared first: written past a bar, the warning would continue
    the bar's line. The bars draw themselves again at their next update. (Only the text is changed, so
    warnings recorded by `warnings.catch_warnings(record=True)` are recorded as before.)"""
    from tqdm import tqdm
    for bar in list(tqdm._instances):
        bar.clear()
    return one_line(*warning)


def one_line(message, category, filename, lineno, line=None):
    kind = "warning" if category is UserWarning else category.__name__
    return f"{kind}: {message}\n"


def exit_on_signal(signum, frame):
    raise Stopped(signum)
