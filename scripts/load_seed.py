"""Load a seed file (docs/seed-format.md) into a deployed stage's tables.

    .venv/bin/python scripts/load_seed.py --stage prod path/to/seed.json

AWS credentials come from the environment (AWS_PROFILE, AWS_REGION). Accounts and tariffs are written
as the seed says (an existing account with the same id is overwritten, opening balances get a ledger
entry each): use it to set up a new stage, not to edit a live one.
"""
import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from scripts.switch_keys import use_stage  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True)
    parser.add_argument("seed", type=pathlib.Path)
    args = parser.parse_args(argv)
    use_stage(args.stage)
    from chalicelib.adapters.dynamo.writer import write_seed
    from chalicelib.services.seed import InvalidSeed, parse_seed
    try:
        seed = parse_seed(args.seed.read_text())
    except InvalidSeed as exc:
        sys.exit(f"{args.seed}: {exc}")
    published = [k["id"] for k in seed.switch_keys if k["key"].startswith("csk_demo_")]
    if published:
        sys.exit(f"{args.seed}: switch key {published[0]!r} is the published demo key; a deployed stage must "
                 "not accept it. Remove switch_keys and issue keys with scripts/switch_keys.py --stage.")
    write_seed(seed)
    print(f"loaded {len(seed.accounts)} accounts, {len(seed.tariffs)} tariffs into cascade-{args.stage}-*")


if __name__ == "__main__":
    main()
