"""Serve the Chalice app locally the way `chalice local` does (the same LocalGateway turns HTTP into
API Gateway events), but able to take a switch lab's load.

`chalice local` listens with socketserver's default backlog of 5: about 50 concurrent clients already
get connection resets, and a switch that saw its authorize fail may still have had it run. This server
is chalice's own threaded server with a listen backlog of 1,024 and one thread per connection.

    python scripts/local_api.py --host 127.0.0.1 --port 8000      (scripts/local_stack.py starts it)
"""
import argparse
import logging
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BACKLOG = 1024


def make_server(host: str, port: int, stage: str = "dev"):
    from chalice import local
    from chalice.cli.factory import CLIFactory

    class SwitchLabServer(local.ThreadedHTTPServer):
        request_queue_size = BACKLOG      # listen() backlog; the kernel caps it at net.core.somaxconn
        allow_reuse_address = True

    config = CLIFactory(project_dir=str(ROOT)).create_config_obj(chalice_stage_name=stage)
    app = config.chalice_app
    # What chalice.local.create_local_server does: a thread-local current_request, so concurrent
    # requests do not see each other's.
    local.CustomLocalChalice.__bases__ = (local.LocalChalice, app.__class__)
    app.__class__ = local.CustomLocalChalice
    return local.LocalDevServer(app, config, host, port, server_cls=SwitchLabServer)


def warm_storage_clients() -> None:
    """Create the DynamoDB clients once, before the first request. PynamoDB creates a connection's
    botocore client on first use, unlocked, from a per-thread session: 240 requests arriving at a cold
    server built 240 clients at once and answered nothing for 97 s (measured). Lambda never sees this
    (one request per instance at a time); a server with a thread per connection does."""
    from chalicelib.adapters.dynamo.models import ALL_MODELS, CoreItem
    from chalicelib.bootstrap import container
    models = [CoreItem, *CoreItem.__subclasses__(), *ALL_MODELS]     # subclasses share CoreItem's
    for model in models:
        model._get_connection().connection.client
    container().store._conn().client      # the store's own connection for transactions


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="dev")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    server = make_server(args.host, args.port, args.stage)
    warm_storage_clients()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
