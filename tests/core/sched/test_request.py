"""Request: token lists kept in sync, status helpers."""

from tokenmill.sched import Request, RequestStatus


def test_append_keeps_lists_in_sync():
    request = Request("a", [1, 2, 3], 5, priority=2, arrival_time=10.0)
    request.append_output_token(9)
    request.append_output_token(8)
    assert request.all_token_ids == [1, 2, 3, 9, 8] and request.output_token_ids == [9, 8]
    assert request.num_tokens == 5 and request.num_prompt_tokens == 3 and request.num_output_tokens == 2
    assert request.prompt_token_ids == [1, 2, 3]
    assert (request.priority, request.arrival_time, request.status) == (2, 10.0, RequestStatus.WAITING)


def test_prompt_is_copied():
    prompt = [1, 2]
    request = Request("a", prompt, 1)
    request.append_output_token(3)
    assert prompt == [1, 2]


def test_finished_statuses():
    finished = {s for s in RequestStatus if s.is_finished()}
    assert finished == {RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH, RequestStatus.FINISHED_ABORTED}
