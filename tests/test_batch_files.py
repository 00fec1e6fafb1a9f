"""The batch's files, without a runtime: which tasks-file lines are refused (naming the line),
what the results file keeps, refuses, locks and leaves behind when the disk fails."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import pytest

from codex_anyio.batch import (
    NOT_COMPLETED,
    BatchResult,
    BatchTask,
    ResultsFileError,
    ResultsWriteError,
    ResultWriter,
    TaskFileError,
    pending_tasks,
    read_results,
    read_tasks,
    run_batch,
    run_batch_on_ray,
)
from codex_anyio.batch import _results as _batch_results

GOOD_TASK = '{"id": "ok", "prompt": "fine"}\n'


def row(task_id: str, status: str = "completed") -> str:
    return json.dumps(BatchResult(id=task_id, status=status).to_json()) + "\n"


def test_a_tasks_file_takes_prompt_or_input_and_rejects_repeated_ids(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        '{"id": 1, "prompt": "a", "timeout": 5}\n\n'
        '{"id": "2", "input": [{"type": "text", "text": "b"}], "approval": "accept"}\n'
    )
    tasks = read_tasks(path)
    assert [(t.id, t.timeout, t.approval) for t in tasks] == [
        ("1", 5.0, None),
        ("2", None, "accept"),
    ]
    path.write_text('{"id": "1", "prompt": "a"}\n{"id": "1", "prompt": "b"}\n')
    with pytest.raises(ValueError, match="appears twice"):
        read_tasks(path)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ('{"id": "t", "prompt": "p", "config": "abc"}', "'config' must be an object"),
        ('{"id": null, "prompt": "p"}', "'id' is a string or an integer, not null"),
        ('{"id": {"a": 1}, "prompt": "p"}', "'id' is a string or an integer, not an object"),
        ('{"id": true, "prompt": "p"}', "'id' is a string or an integer, not a boolean"),
        ('{"id": "\\ud800", "prompt": "p"}', "not valid Unicode"),
        ('{"id": "t", "prompt": "\\udfff"}', "not valid Unicode"),
        ('{"id": "t", "prompt": "p", "timeout": 0}', "positive number of seconds, not 0"),
        ('{"id": "t", "prompt": "p", "timeout": -1}', "positive number of seconds, not -1"),
        ('{"id": "t", "prompt": "p", "timeout": NaN}', "positive number of seconds, not nan"),
        ('{"id": "t", "prompt": "p", "timeout": "5"}', "positive number of seconds, not '5'"),
        ('{"id": "t", "prompt": 5}', "'prompt' must be a string or input items"),
        ('{"id": "t", "prompt": "p", "cwd": 1}', "'cwd' must be a string"),
        ('{"id": "t", "prompt": "p", "output_schema": "x"}', "'output_schema' must be"),
        ('{"id": "t", "prompt": "p", "approval": "maybe"}', "'approval' must be one of"),
        ('{"id": "t", "prompt": "p", "colour": "red"}', "unknown field"),
        ('{"id": "t"}', "needs a 'prompt'"),
        ("[1]", "a task is a JSON object, not an array"),
        ("null", "a task is a JSON object, not null"),
        ('"x"', "a task is a JSON object, not a string"),
        ("{not json", "Expecting property name"),
    ],
)
def test_a_task_line_that_is_not_a_valid_task_is_refused_naming_file_and_line(
    tmp_path: Path, line: str, complaint: str
) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(GOOD_TASK + line + "\n")
    with pytest.raises(TaskFileError, match=f"^{path}:2: ") as caught:
        read_tasks(path)
    assert complaint in str(caught.value)


def test_a_tasks_file_that_cannot_be_read_is_a_task_file_error(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match=r"cannot read the tasks file .*No such file"):
        read_tasks(tmp_path / "missing.jsonl")
    with pytest.raises(TaskFileError, match="Is a directory"):
        read_tasks(tmp_path)


def test_run_batch_refuses_counts_below_one_timeouts_that_are_not_positive_and_repeated_ids() -> (
    None
):
    tasks = [BatchTask(id="a", prompt="p")]
    for bad in (
        {"concurrency": 0},
        {"attempts": 0},
        {"servers": 0},
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": math.nan},
    ):
        with pytest.raises(ValueError, match="must be"):
            run_batch(tasks, **bad)  # type: ignore[arg-type]
        on_ray = {"slots" if name == "concurrency" else name: v for name, v in bad.items()}
        with pytest.raises(ValueError, match="must be"):
            run_batch_on_ray(tasks, **on_ray)  # type: ignore[arg-type]
    repeated = [BatchTask(id="a", prompt="one"), BatchTask(id="a", prompt="two")]
    with pytest.raises(ValueError, match="'a' appears twice"):
        run_batch(repeated)
    with pytest.raises(ValueError, match="'a' appears twice"):
        run_batch_on_ray(repeated)


# -- the results file ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    ["a\nb", "some notes\n", GOOD_TASK + '{"id": "t2", "prompt": "p"}'],
    ids=["notes-without-newline", "notes", "a-tasks-file"],
)
def test_a_file_that_is_not_a_results_file_is_refused_and_left_as_it_was(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text(content)
    with pytest.raises(ResultsFileError, match=f"{path} is not a results file"):
        with ResultWriter(path):
            pass
    with pytest.raises(ResultsFileError, match="not a results file"):
        read_results(path, repair=True)
    assert path.read_text() == content


def test_a_complete_last_row_without_its_newline_is_kept_and_counts_as_done(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(row("1") + row("2").rstrip("\n"))
    assert sorted(read_results(path)) == ["1", "2"]
    with ResultWriter(path) as writer:
        assert sorted(writer.results) == ["1", "2"]
        writer.write(BatchResult(id="3", status="completed"))
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["1", "2", "3"]


def test_the_results_file_survives_a_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    with ResultWriter(path) as writer:
        writer.write(BatchResult(id="1", status="completed", final_response="ok"))
        writer.write(BatchResult(id="2", status="failed", error={"type": "X", "message": "m"}))
    with open(path, "a", encoding="utf-8") as file:
        file.write('{"id": "3", "status": "comp')  # killed mid-write
    assert sorted(read_results(path)) == ["1", "2"]
    with ResultWriter(path) as writer:  # repairs, then appends on a line of its own
        writer.write(BatchResult(id="3", status="completed"))
    assert sorted(read_results(path)) == ["1", "2", "3"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_result_lines_that_are_not_result_rows_are_skipped_and_the_rest_resumes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    strays = ["[1]", "null", '"x"', '{"id": 5, "status": "completed"}', '{"id": "9"}']
    path.write_text(row("1") + "\n".join(strays) + "\n" + row("2"))
    assert sorted(read_results(path)) == ["1", "2"]
    with ResultWriter(path) as writer:
        assert sorted(writer.results) == ["1", "2"]
        writer.write(BatchResult(id="3", status="completed"))
    assert sorted(read_results(path)) == ["1", "2", "3"]


def test_a_second_writer_on_one_results_file_is_refused_while_the_first_holds_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    with ResultWriter(path) as first:
        first.write(BatchResult(id="1", status="completed"))
        with pytest.raises(ResultsFileError, match=f"{path} is in use by another batch run"):
            with ResultWriter(path):
                pass
        first.write(BatchResult(id="2", status="completed"))
    with ResultWriter(path) as again:  # released with the first
        assert sorted(again.results) == ["1", "2"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
def test_a_row_the_os_fails_half_way_is_cut_off_and_the_file_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    path = tmp_path / "results.jsonl"
    real = _batch_results._write_all

    def failing(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2])  # the OS took half of it, then gave up
        raise OSError(code, os.strerror(code))

    with ResultWriter(path) as writer:
        writer.write(BatchResult(id="1", status="completed"))
        monkeypatch.setattr(_batch_results, "_write_all", failing)
        with pytest.raises(ResultsWriteError, match=os.strerror(code)) as caught:
            writer.write(BatchResult(id="2", status="completed", final_response="x" * 500))
        assert caught.value.errno == code
        assert str(path) in str(caught.value)
    assert path.read_text() == row("1")  # nothing half-written
    monkeypatch.setattr(_batch_results, "_write_all", real)
    with ResultWriter(path) as writer:  # the cause fixed: the run resumes
        assert sorted(writer.results) == ["1"]
        writer.write(BatchResult(id="2", status="completed"))
    assert sorted(read_results(path)) == ["1", "2"]


def test_an_id_that_is_not_valid_unicode_is_written_escaped_and_reads_back_as_itself(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    with ResultWriter(path) as writer:
        writer.write(BatchResult(id="\ud800", status="completed"))
        writer.write(BatchResult(id="é", status="completed"))
    assert set(read_results(path)) == {"\ud800", "é"}
    assert "é" in path.read_text(encoding="utf-8")  # valid text stays as it is


def test_a_results_file_that_is_not_a_regular_file_is_refused_without_reading_it(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    with pytest.raises(ResultsFileError, match="not a regular file"):
        read_results(fifo)
    with pytest.raises(ResultsFileError, match="not a regular file"):
        with ResultWriter(fifo):
            pass
    with pytest.raises(ResultsFileError, match="Is a directory"):
        with ResultWriter(tmp_path):
            pass
    with pytest.raises(ResultsFileError, match="folder does not exist"):
        with ResultWriter(tmp_path / "missing" / "results.jsonl"):
            pass


def test_the_latest_row_of_an_id_wins_and_pending_tasks_runs_only_the_statuses_asked_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(
        row("a", "error") + row("b", "timeout") + row("c") + row("a") + row("d", "failed")
    )
    latest = read_results(path)
    assert {i: r.status for i, r in latest.items()} == {
        "a": "completed",  # run again, and its new row is the one that counts
        "b": "timeout",
        "c": "completed",
        "d": "failed",
    }
    tasks = [BatchTask(id=i, prompt="p") for i in "abcde"]
    assert [t.id for t in pending_tasks(tasks, latest)] == ["e"]  # a plain resume
    assert [t.id for t in pending_tasks(tasks, latest, retry={"error", "timeout"})] == ["b", "e"]
    assert [t.id for t in pending_tasks(tasks, latest, retry=NOT_COMPLETED)] == ["b", "d", "e"]
    with pytest.raises(ValueError, match="unknown status"):
        pending_tasks(tasks, latest, retry={"eror"})
    with ResultWriter(path) as writer:  # what a resuming run sees, and appends to
        assert writer.results == latest
        writer.write(BatchResult(id="b", status="completed"))
    assert read_results(path)["b"].status == "completed"
    assert path.read_text().count('"id": "b"') == 2
