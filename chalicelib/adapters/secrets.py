"""The switch-key pepper: an environment value locally, a Secrets Manager secret on AWS.

Deployed functions get only the secret's name (CASCADE_KEY_PEPPER_SECRET); the value is fetched once
per cold start with botocore (already loaded by PynamoDB, so no boto3 import on the switch path) and
kept in this process's environment, where services.switch_keys reads it.
"""
import os

from chalicelib.services.switch_keys import PEPPER_ENV

SECRET_ENV = "CASCADE_KEY_PEPPER_SECRET"


def load_key_pepper() -> None:
    if os.environ.get(PEPPER_ENV):
        return
    secret_id = os.environ.get(SECRET_ENV)
    if not secret_id:
        raise RuntimeError(f"set {PEPPER_ENV} (local) or {SECRET_ENV} (the Secrets Manager secret's name)")
    import botocore.session
    client = botocore.session.get_session().create_client("secretsmanager")
    os.environ[PEPPER_ENV] = client.get_secret_value(SecretId=secret_id)["SecretString"]
