"""Progress in a log (cegppo._progress): whole lines, at most one per interval, the last state always written.

A fake clock drives the interval, so the tests are exact and take no time; the command lines' own use of it
(stderr redirected to a file or a pipe) is tested with each CLI (tests/trainer/test_cli.py,
tests/conformance/test_conformance_cli.py).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from cegppo._progress import DEFAULT_INTERVAL, LogBar, ProgressLog, is_terminal


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_written_at_most_once_per_interval_and_forced_ones_always() -> None:
    clock, out = Clock(), io.StringIO()
    log = ProgressLog(out, interval=5.0, clock=clock)
    written = []
    for second in range(0, 23):  # one attempt per second for 22 s
        clock.now = 100.0 + second
        written.append(log.write(f"t={second}"))
    # the first at once, then every 5 s
    assert out.getvalue().splitlines() == ["t=0", "t=5", "t=10", "t=15", "t=20"]
    assert sum(written) == 5
    assert log.write("final", force=True) is True  # 2 s after the last: forced through
    assert out.getvalue().splitlines()[-1] == "final"
    clock.now += 4.9
    assert log.write("too soon") is False  # the interval counts from the forced line too
    assert "\r" not in out.getvalue()


def test_the_default_stream_is_stderr_at_the_time_of_writing(capsys: pytest.CaptureFixture[str]) -> None:
    log = ProgressLog(clock=Clock())
    assert log.interval == DEFAULT_INTERVAL
    log.write("to stderr")
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "to stderr\n")


def test_a_log_bar_writes_tqdm_s_updates_as_a_few_plain_lines() -> None:
    clock, out = Clock(), io.StringIO()
    bar = LogBar(200, "cegppo-train", log=ProgressLog(out, interval=10.0, clock=clock))
    for step in range(1, 201):  # 0.25 s per step: 50 s in all
        clock.now += 0.25
        bar.set_postfix(reward=f"{step / 200:.3f}", refresh=False)
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    # the first update, then one every 10 s (40 steps), and the last step (forced, not repeated by close)
    assert [line.split(",")[0] for line in lines] == [
        f"cegppo-train: {n}/200 ({n // 2}%)" for n in (1, 41, 81, 121, 161, 200)]
    # step 41: 10.25 s elapsed, 159 steps left at 0.25 s each (39.75 s); the postfix set before this update
    assert lines[1] == "cegppo-train: 41/200 (20%), 10 s elapsed, ~40 s left, reward=0.205"
    assert lines[-1] == "cegppo-train: 200/200 (100%), 50 s elapsed, reward=1.000"
    assert "\r" not in out.getvalue()


def test_closing_a_bar_stopped_early_writes_where_it_stopped() -> None:
    clock, out = Clock(), io.StringIO()
    bar = LogBar(50, "warm start", initial=10, log=ProgressLog(out, interval=10.0, clock=clock))
    bar.close()  # nothing done yet: nothing to say
    assert out.getvalue() == ""
    bar = LogBar(50, "warm start", initial=10, log=ProgressLog(out, interval=10.0, clock=clock))
    for _ in range(3):
        clock.now += 1.0
        bar.update(1)
    bar.close()
    bar.close()  # once only
    assert out.getvalue().splitlines() == ["warm start: 11/50 (22%), 1 s elapsed, ~39 s left",
                                           "warm start: 13/50 (26%), 3 s elapsed, ~37 s left"]


def test_is_terminal_reads_the_stream_s_isatty(tmp_path: Path) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert is_terminal(Tty()) and not is_terminal(io.StringIO()) and not is_terminal(object())
    with open(tmp_path / "log", "w") as f:
        assert not is_terminal(f)
    closed = open(tmp_path / "log")
    closed.close()
    assert not is_terminal(closed)  # isatty raises ValueError on a closed file
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as pipe:
        assert not is_terminal(pipe)
    os.close(read_end)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"interval": 0}, ValueError, r"interval must be finite and > 0 seconds, got 0"),
    ({"interval": float("inf")}, ValueError, "interval must be finite"),
    ({"interval": "5"}, TypeError, "interval must be a number of seconds, got str"),
    ({"interval": True}, TypeError, "interval must be a number of seconds, got bool"),
    ({"clock": 3.0}, TypeError, "clock must be callable, got float"),
])
def test_progress_log_refuses_bad_arguments(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ProgressLog(io.StringIO(), **kwargs)  # type: ignore[arg-type]


def test_a_progress_line_is_one_line() -> None:
    log = ProgressLog(io.StringIO(), clock=Clock())
    for text in ("a\nb", "redraw\r"):
        with pytest.raises(ValueError, match="one line without line breaks or carriage returns"):
            log.write(text)
    with pytest.raises(TypeError, match="text must be a str, got int"):
        log.write(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(("args", "kwargs", "error", "match"), [
    ((-1, "x"), {}, ValueError, "total must be >= 0, got -1"),
    ((10, "x"), {"initial": 11}, ValueError, r"initial must be in \[0, total=10\], got 11"),
    ((10.0, "x"), {}, TypeError, "total must be an int, got float"),
    ((10, "x"), {"initial": None}, TypeError, "initial must be an int, got NoneType"),
    ((10, 3), {}, TypeError, "desc must be a str, got int"),
    ((10, "x"), {"log": io.StringIO()}, TypeError, "log must be a ProgressLog or None, got StringIO"),
])
def test_log_bar_refuses_bad_arguments(args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception],
                                       match: str) -> None:
    with pytest.raises(error, match=match):
        LogBar(*args, **kwargs)  # type: ignore[arg-type]


def test_log_bar_update_refuses_a_negative_count() -> None:
    bar = LogBar(3, "x", log=ProgressLog(io.StringIO(), clock=Clock()))
    with pytest.raises(ValueError, match="n must be an int >= 0, got -1"):
        bar.update(-1)
