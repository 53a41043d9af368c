"""Generated scenario files and flow strings (issue 10): each either loads or is refused with
one clear line (the file and its line, or ``bad flow ...``), never another exception, and
damage no valid input has is always refused. Bounded to seconds; ``ci/run fuzz`` runs the
same generators over 10,000 files and flows in subprocesses with a timeout."""

from __future__ import annotations

from bindlab import Flow, FlowSyntaxError
from bindlab.scenario.load import Scenario, ScenarioError, load_text
from fuzz.generate import (
    BAD_FLOWS,
    file_case,
    flow_case,
    good_flow,
    unclear_file_message,
    unclear_flow_message,
)
from hypothesis import given, settings
from hypothesis import strategies as st

PATH = "fuzz/g.toml"
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def judge_file(text: str | bytes, must_fail: bool) -> None:
    try:
        sc = load_text(text, PATH)
    except ScenarioError as e:
        why = unclear_file_message(str(e), PATH)
        assert why is None, f"{why}: {str(e)[:500]}"
    else:
        assert isinstance(sc, Scenario)
        assert not must_fail, "loaded a file no valid file looks like"


def judge_flow(text: str, must_fail: bool) -> None:
    try:
        flow = Flow.parse(text)
    except FlowSyntaxError as e:
        why = unclear_flow_message(str(e))
        assert why is None, f"{why}: {str(e)[:500]}"
    else:
        assert not must_fail, f"parsed {text[:200]!r}"
        assert Flow.parse(str(flow)) == flow  # what it prints, it reads back


@settings(max_examples=300)
@given(seeds)
def test_generated_scenario_files(seed: int) -> None:
    case = file_case(seed, small=True)
    judge_file(case.text, case.must_fail)


@settings(max_examples=300)
@given(seeds)
def test_generated_flows(seed: int) -> None:
    case = flow_case(seed)
    judge_flow(case.text, case.must_fail)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_any_text_as_a_flow(text: str) -> None:
    judge_flow(text, must_fail=False)


@settings(max_examples=200)
@given(seeds, st.lists(st.tuples(st.integers(0, 120), st.text(max_size=4)), max_size=4))
def test_good_flows_with_text_spliced_in(seed: int, splices: list[tuple[int, str]]) -> None:
    import random

    text = good_flow(random.Random(seed))
    for at, piece in splices:
        text = text[:at] + piece + text[at:]
    judge_flow(text, must_fail=False)


def test_every_bad_flow_class_is_refused() -> None:
    import random

    for i, make in enumerate(BAD_FLOWS):
        judge_flow(make(random.Random(i)), must_fail=True)
