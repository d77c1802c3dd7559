"""The pure part of paid-call confirmation: a batch's one question."""

from imagegate.service.confirm import PaidCall, batch_total


def call(size: str, estimate: float | None, images: int = 1) -> PaidCall:
    return PaidCall("paid", "m", images, size, "high", estimate, "EUR")


def test_same_size_items_add_up() -> None:
    total = batch_total([call("1024x1024", 0.04), call("1024x1024", 0.04, images=2)])
    assert (total.images, total.size, total.estimate) == (3, "1024x1024", 0.08)
    assert "Make 3 image(s) at 1024x1024, quality high? Estimated cost: about EUR 0.080" in (
        total.question()
    )


def test_mixed_sizes_are_each_named_with_their_count() -> None:
    total = batch_total([call("1024x1024", 0.04), call("1536x1024", 5.0), call("1536x1024", 5.0)])
    assert total.size == "1024x1024 (x1), 1536x1024 (x2)"
    assert total.estimate == 10.04


def test_one_unpriced_item_makes_the_total_unknown() -> None:
    total = batch_total([call("1024x1024", 0.04), call("4096x4096", None)])
    assert total.estimate is None
    assert "unknown" in total.question()
