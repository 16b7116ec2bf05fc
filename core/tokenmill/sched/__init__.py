"""Continuous-batching scheduling: the Request object, the per-step plan and the Scheduler."""

from tokenmill.sched.output import ScheduledRequest, SchedulerOutput
from tokenmill.sched.request import Request, RequestStatus
from tokenmill.sched.scheduler import Scheduler

__all__ = ["Request", "RequestStatus", "ScheduledRequest", "Scheduler", "SchedulerOutput"]
