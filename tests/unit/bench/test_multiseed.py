"""helpers.multiseed: the worker pool (crash isolation), the grid, the summaries, one tiny member run."""
from helpers.bench.multiseed import sleep_task
from helpers.training.workers import run_in_workers



# ------------------------------------------------------------------------------- worker pool
def test_crashed_tasks_do_not_stop_the_others():
    tasks = [{"value": 0, "work": 1000}, {"value": 1, "crash": "segv"}, {"value": 2, "crash": "raise"},
             {"value": 3, "crash": "exit"}, {"value": 4, "work": 1000}]
    out = run_in_workers(sleep_task, tasks, workers=2, threads=1)
    assert [o.index for o in out] == list(range(5))
    assert [o.ok for o in out] == [True, False, False, False, True]
    assert out[0].value["value"] == 0 and out[4].value["value"] == 4
    assert "SIGSEGV" in out[1].error and out[1].exitcode == -11          # a hard crash, reported
    assert "planted failure" in out[2].error and "Traceback" in out[2].error
    assert "exited with code 3" in out[3].error
    assert out[0].value["threads"] == "1"                                # the worker's own thread budget


def test_a_task_over_its_time_limit_is_killed_and_failed():
    out = run_in_workers(sleep_task, [{"value": 0, "sleep": 30}, {"value": 1}], workers=2, threads=1,
                            timeout_s=2)
    assert not out[0].ok and "timed out" in out[0].error
    assert out[1].ok
