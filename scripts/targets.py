"""Where an operator script points: the local stack `make run` started, or a deployed stage's tables and
secrets (the names infra/ gives them). Shared by the scripts that talk to Cascade's tables."""
import os


def use_local() -> None:
    os.environ.setdefault("AWS_ENDPOINT_URL", f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '8766')}")
    os.environ.setdefault("CASCADE_TABLE_PREFIX", "cascade-local-")
    os.environ.setdefault("CASCADE_KEY_PEPPER", "local-development-pepper")
    for name, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)


def use_stage(stage: str) -> None:
    os.environ.setdefault("CASCADE_TABLE_PREFIX", f"cascade-{stage}-")
    os.environ.setdefault("CASCADE_KEY_PEPPER_SECRET", f"cascade/{stage}/switch-key-pepper")
    os.environ.setdefault("CASCADE_TOKEN_KEY_SECRET", f"cascade/{stage}/token-signing-key")
