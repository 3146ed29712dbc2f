"""Scheduled release of holds whose completion never came."""
from chalice import Blueprint, Rate

from chalicelib.services.sweep_holds import sweep_expired_holds

sweeper_bp = Blueprint(__name__)


@sweeper_bp.schedule(Rate(1, unit=Rate.MINUTES), name="sweeper")
def sweep(event):
    from chalicelib.bootstrap import container
    return {"released": sweep_expired_holds(container().store)}
