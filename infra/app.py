"""CDK app: `make synth` / `make deploy STAGE=prod`. Run from the repository root (python -m infra.app).

Context: stage (dev|prod, default dev), alarm_email (optional: subscribes it to the alarm topic),
defer_indexes (optional, comma-separated "table.index": left out of this deploy, for upgrading a table
that gains two indexes; docs/deploy.md), outdir (synth only)."""
import os

import aws_cdk as cdk

from infra.stack import CascadeStack
from infra.stages import Stage, stage


def build(stage_name, outdir: str = None, alarm_email: str = None, defer_indexes: str = None) -> cdk.App:
    """stage_name: a name from infra/stages.py, or a Stage (tests)."""
    app = cdk.App(outdir=outdir) if outdir else cdk.App()
    settings = stage_name if isinstance(stage_name, Stage) else \
        stage(stage_name or app.node.try_get_context("stage") or "dev")
    deferred = defer_indexes or app.node.try_get_context("defer_indexes") or ""
    CascadeStack(app, settings, alarm_email=alarm_email or app.node.try_get_context("alarm_email"),
                 defer_indexes=[name.strip() for name in deferred.split(",") if name.strip()],
                 env=cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
                                     region=os.environ.get("CDK_DEFAULT_REGION")))
    return app


if __name__ == "__main__":
    build(os.environ.get("STAGE", ""), os.environ.get("CDK_OUTDIR")).synth()
