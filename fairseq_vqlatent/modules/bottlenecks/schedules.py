"""Schedules that follow fairseq's update counter (``set_num_updates``)."""


def geometric_anneal(start: float, end: float, num_updates: int, anneal_updates: int) -> float:
    """start at update 0, end from ``anneal_updates`` on, geometric in between
    (temperatures: each update multiplies by the same factor)."""
    if anneal_updates <= 0 or num_updates >= anneal_updates:
        return end
    return start * (end / start) ** (num_updates / anneal_updates)


def linear_anneal(start: float, end: float, num_updates: int, anneal_updates: int) -> float:
    """start at update 0, end from ``anneal_updates`` on, linear in between."""
    if anneal_updates <= 0 or num_updates >= anneal_updates:
        return end
    return start + (end - start) * num_updates / anneal_updates
