"""Scripts run as parallel jobs, one CPU thread each (`tools.py demo`, `tools.py audio_ablation --parallel`).

Two progress bars on one terminal overwrite each other, so each job's stderr (its bar, warnings
and errors) goes to a log file of its own; the stdout of jobs that are not quiet (a training run's
one line per epoch, which names the run) stays on the terminal. A failed script is named with the
end of its log.
"""
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tools
from utils import ASVFIError


@dataclass
class Job:
    """Scripts run one after another in one process slot, once the jobs named in `after` are done."""
    name: str
    commands: list
    after: tuple = ()
    quiet: bool = True
    started: float = 0.0

    def log(self, log_dir):
        return Path(log_dir) / f"{self.name.replace(' ', '_')}.log"


def interpreter_args(command):
    """A command's arguments for the interpreter: a repository script (main.py, ...) by its full
    path, so that the job runs in the caller's folder, where its relative paths were meant."""
    script = tools.REPO_DIR / command[0]
    return [str(script), *command[1:]] if command[0].endswith(".py") and script.is_file() else list(command)


def script_path(name):
    """A repository script as a printed command names it: by its name when run from the repository,
    else by its full path, so that the command works from the folder it was run in."""
    return name if Path.cwd().resolve() == tools.REPO_DIR else str(tools.REPO_DIR / name)


def command_args(parser, args):
    """The options of `args` that differ from the parser's defaults, as a command line would give them."""
    defaults = vars(parser.parse_args([]))
    words = []
    for action in parser._actions:
        if action.dest not in defaults or getattr(args, action.dest) == defaults[action.dest]:
            continue
        words.append(action.option_strings[0])
        if action.nargs != 0:  # a flag (store_true) has no value
            words.append(str(getattr(args, action.dest)))
    return words


def command_line(parser, args):
    """`python tools.py <command> ...` that runs the parser's command with `args` (shell-quoted)."""
    script, *command = parser.prog.split()
    return shlex.join(["python", script_path(script), *command, *command_args(parser, args)])


def run_jobs(jobs, log_dir, slots=2):
    """Run the jobs `slots` at a time; raise naming the first script that failed and its log.
    Returns {job name: seconds}."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pending, running, seconds = list(jobs), {}, {}
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    print(f"progress bars and warnings of the jobs: {log_dir}/<job>.log", flush=True)

    def start_next(job, remaining):
        command = next(remaining, None)
        if command is None:
            seconds[job.name] = time.perf_counter() - job.started
            return
        print(f"$ {shlex.join(['python', *command])}", flush=True)
        out = subprocess.DEVNULL if job.quiet else None
        with open(job.log(log_dir), "a") as log:
            proc = subprocess.Popen([sys.executable, *interpreter_args(command)], env=env, stdout=out, stderr=log)
        running[job.name] = (job, remaining, command, proc)

    while pending or running:
        for job in [j for j in pending if set(j.after) <= set(seconds)][:slots - len(running)]:
            pending.remove(job)
            job.started = time.perf_counter()
            job.log(log_dir).write_text("")
            start_next(job, iter(job.commands))
        time.sleep(0.2)
        for name, (job, remaining, command, proc) in list(running.items()):
            if proc.poll() is None:
                continue
            if proc.returncode != 0:
                tail = "\n".join(job.log(log_dir).read_text().splitlines()[-5:])
                raise ASVFIError(f"`{shlex.join(['python', *command])}` failed (exit {proc.returncode}); the end of "
                                 f"{job.log(log_dir)}:\n{tail}")
            del running[name]
            start_next(job, remaining)
    return seconds
