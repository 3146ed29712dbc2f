"""The authorize Lambda is imported without app.py and must stay light (brief: domain, its service,
the DynamoDB adapter and the powertools Logger; no app.py, no Jinja2, pydantic, requests, Tracer)."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
# powertools' package __init__ always imports its tracing module; a Tracer() is what loads the X-Ray SDK.
FORBIDDEN = ("app", "jinja2", "pydantic", "requests", "aws_xray_sdk", "moto", "flask",
             "chalicelib.entrypoints.sweeper")


def loaded_after_importing_the_switch_lambda():
    code = "import json, sys; import chalicelib.entrypoints.switch; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.check_output([sys.executable, "-c", code], cwd=ROOT, text=True)
    return set(json.loads(out))


def test_the_switch_lambda_module_imports_nothing_heavy():
    modules = loaded_after_importing_the_switch_lambda()
    bad = sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert bad == []


def test_the_switch_lambda_does_not_open_storage_at_import():
    # the DynamoDB adapter (and botocore's client set-up) load on the first request, not at import
    modules = loaded_after_importing_the_switch_lambda()
    assert "chalicelib.adapters.dynamo.store" not in modules


def test_services_and_domain_do_not_import_adapters_or_entrypoints():
    import ast
    for folder in ("domain", "services"):
        for path in (ROOT / "chalicelib" / folder).glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                for name in names:
                    assert not any(name == f or name.startswith(f + ".") for f in (
                        "chalicelib.adapters", "chalicelib.entrypoints", "pynamodb", "boto3", "botocore",
                        "chalice")), f"{path.name} imports {name}"


# What the switch Lambda may load besides the standard library and chalicelib, at import and with its
# DynamoDB adapter (loaded on the first request). A new entry here is a new dependency on the hottest,
# coldest-started path: justify it in the change that adds it.
SWITCH_PACKAGES = {"aws_lambda_powertools", "botocore", "chalice", "jmespath", "typing_extensions"}
ADAPTER_PACKAGES = SWITCH_PACKAGES | {"pynamodb", "urllib3", "dateutil", "six", "certifi", "blinker"}


def third_party(code: str) -> set:
    out = subprocess.check_output([sys.executable, "-c", code + "; import json, sys; print(json.dumps(sorted(sys.modules)))"],
                                  cwd=ROOT, text=True)
    tops = {m.split(".")[0] for m in json.loads(out)}
    return {m for m in tops - set(sys.stdlib_module_names) if not m.startswith("_") and m != "chalicelib"}


def test_the_switch_lambda_loads_no_package_beyond_its_known_few():
    assert third_party("import chalicelib.entrypoints.switch") <= SWITCH_PACKAGES
    assert third_party("import chalicelib.entrypoints.switch, chalicelib.adapters.dynamo.store") <= ADAPTER_PACKAGES
