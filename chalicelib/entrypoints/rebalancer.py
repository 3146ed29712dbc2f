"""The escrow rebalancer (services.rebalance): one Lambda, reserved concurrency 1 (infra/stack.py), so it
is the only writer moving money between owners and slots. Schedules run at most once a minute, so each
invocation ticks every ``CASCADE_REBALANCE_TICK`` whole seconds (default 1) for ``RUN_FOR`` seconds; the next
invocation takes over. A tick that fails is logged and the next one reads everything afresh."""
import logging
import os
import time

from chalice import Blueprint, Rate

from chalicelib.services.rebalance import IDLE_EVERY, rebalance

rebalancer_bp = Blueprint(__name__)
log = logging.getLogger("cascade.rebalance")

RUN_FOR = 55     # seconds per invocation (timeout 70 s): the schedule starts the next one each minute


def run(store, clock=time.time, run_for: float = RUN_FOR, tick: float = None, sleep=time.sleep) -> int:
    """Tick until ``run_for`` seconds have passed; returns the number of ticks. The idle pass runs on
    the first tick of every IDLE_EVERY seconds."""
    tick = int(os.environ.get("CASCADE_REBALANCE_TICK", "1")) if tick is None else tick
    start, ticks, last_idle = clock(), 0, None
    while True:
        now = clock()
        idle = last_idle is None or now - last_idle >= IDLE_EVERY
        try:
            rebalance(store, int(now), idle=idle)
            if idle:
                last_idle = now
        except Exception:   # noqa: BLE001 - the next tick starts over from what is stored
            log.exception("escrow rebalance tick failed")
        ticks += 1
        if clock() - start + tick > run_for:
            return ticks
        sleep(tick)


@rebalancer_bp.schedule(Rate(1, unit=Rate.MINUTES), name="rebalancer")
def rebalancer(event):
    from chalicelib.bootstrap import container
    return {"ticks": run(container().store)}
