"""The series: a registry per server, bounded status classes, the text a scraper reads."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from imagegate.core.metrics import Metrics, status_class


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "2xx"), (204, "2xx"), (302, "3xx"), (429, "4xx"), (503, "5xx"), (None, "error")],
)
def test_status_classes(status: int | None, expected: str) -> None:
    assert status_class(status) == expected


@pytest.mark.parametrize("status", [0, 99, 600, 999, -1])
def test_an_impossible_status_is_an_error_not_a_new_label(status: int) -> None:
    assert status_class(status) == "error"


def test_each_server_counts_on_its_own() -> None:
    first, second = Metrics(), Metrics()
    first.tool_call("generate_image", "ok")
    first.spent("paid", "EUR", 0.5, None)
    first.spent("free", "USD", None, None)  # unknown cost: no series
    assert (
        first.registry.get_sample_value(
            "imagegate_tool_calls_total", {"tool": "generate_image", "outcome": "ok"}
        )
        == 1
    )
    assert (
        second.registry.get_sample_value(
            "imagegate_tool_calls_total", {"tool": "generate_image", "outcome": "ok"}
        )
        is None
    )
    families = {f.name for f in text_string_to_metric_families(first.exposition().decode())}
    assert {"imagegate_tool_calls", "imagegate_spend_estimated", "imagegate_jobs_running"} <= (
        families
    )
    assert (
        first.registry.get_sample_value(
            "imagegate_spend_estimated_total", {"relay": "free", "currency": "USD"}
        )
        is None
    )
