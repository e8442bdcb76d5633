"""The supervisor's restart policy: backoff, the crash window, give-up, on-failure, never.
Exact, with the time passed in."""

import pytest

from engine.logic.restarts import (
    NEVER,
    PROCESS,
    SERVER,
    Done,
    GiveUp,
    Restart,
    RestartPolicy,
    Restarts,
    describe_exit,
)


def crash_at(r: Restarts, start: float, end: float, code: int = 1):
    r.started(start)
    return r.exited(end, code)


def test_the_backoff_doubles_up_to_its_cap():
    r = Restarts(RestartPolicy(max_restarts=100, window_s=1000, backoff_s=0.5, backoff_max_s=3))
    delays = []
    t = 0.0
    for _ in range(6):
        v = crash_at(r, t, t + 1)
        assert isinstance(v, Restart)
        delays.append(v.delay_s)
        t += 1 + v.delay_s
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_it_gives_up_after_more_than_max_restarts_within_the_window():
    r = Restarts(RestartPolicy(max_restarts=3, window_s=60, backoff_s=0, stable_s=1000))
    verdicts = [crash_at(r, t, t + 1, -9) for t in (0, 10, 20, 30)]
    assert [type(v) for v in verdicts] == [Restart, Restart, Restart, GiveUp]
    assert [v.crashes for v in verdicts[:3]] == [1, 2, 3]
    assert verdicts[3].reason == ("exited (killed by SIGKILL): 4 times within 60 s, "
                                  "more than the 3 restarts allowed")


def test_crashes_older_than_the_window_are_forgotten():
    r = Restarts(RestartPolicy(max_restarts=2, window_s=60, backoff_s=0, stable_s=1000))
    assert isinstance(crash_at(r, 0, 1), Restart)
    assert isinstance(crash_at(r, 2, 50), Restart)
    v = crash_at(r, 51, 70)  # the crash at 1 s left the window at 61 s
    assert isinstance(v, Restart) and v.crashes == 2
    assert r.snapshot()[0] == (50.0, 70.0)
    assert isinstance(crash_at(r, 71, 100), GiveUp)


def test_a_stable_run_starts_the_backoff_again():
    r = Restarts(RestartPolicy(max_restarts=10, window_s=1000, backoff_s=1, backoff_max_s=60,
                               stable_s=30))
    assert crash_at(r, 0, 1).delay_s == 1
    assert crash_at(r, 2, 3).delay_s == 2
    assert crash_at(r, 5, 6).delay_s == 4
    assert crash_at(r, 10, 40).delay_s == 1  # it ran 30 s: healthy, so the first delay again
    assert crash_at(r, 41, 42).delay_s == 2


def test_on_failure_leaves_a_clean_exit_alone_and_restarts_a_crash():
    r = Restarts(RestartPolicy(mode="on-failure"))
    assert crash_at(r, 0, 1, 0) == Done()
    assert isinstance(crash_at(r, 2, 3, 2), Restart)


def test_always_restarts_a_clean_exit_too():
    assert isinstance(crash_at(Restarts(PROCESS), 0, 1, 0), Restart)


def test_never_gives_up_at_the_first_exit_with_the_reason():
    v = crash_at(Restarts(NEVER), 0, 5, 3)
    assert v == GiveUp("exited (code 3) and is not restarted")


def test_a_failed_start_counts_as_a_crash():
    r = Restarts(RestartPolicy(max_restarts=1, window_s=60, backoff_s=1))
    assert crash_at(r, 0, 1) == Restart(delay_s=1, crashes=1, allowed=1, window_s=60)
    v = r.failed_to_start(3, "port 6379 is taken")
    assert isinstance(v, GiveUp) and v.reason.startswith("could not start: port 6379 is taken: 2 times")


def test_the_shipped_policies():
    assert PROCESS.mode == SERVER.mode == "always" and NEVER.mode == "never"
    # a crash loop of a process is given up within seconds, not minutes
    r, t = Restarts(PROCESS), 0.0
    while not isinstance(v := crash_at(r, t, t + 0.1), GiveUp):
        t += 0.1 + v.delay_s
    assert t < 20 and len(r.crashes) == PROCESS.max_restarts + 1


@pytest.mark.parametrize("kwargs", [{"mode": "sometimes"}, {"max_restarts": -1}, {"window_s": 0},
                                    {"backoff_s": 20, "backoff_max_s": 10},
                                    {"backoff_factor": 0.5}])
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)


def test_describe_exit():
    assert describe_exit(0) == "code 0"
    assert describe_exit(2) == "code 2"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-15) == "killed by SIGTERM"
    assert describe_exit(-200) == "killed by signal 200"
