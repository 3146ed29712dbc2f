"""The domain is pure: standard library and itself only, and no floats for money.

Every module in chalicelib/domain is parsed (never imported) and each import statement is checked.
"""
import ast
import io
import sys
import tokenize
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "chalicelib" / "domain"
DOMAIN_PACKAGE = "chalicelib.domain"
FORBIDDEN = {"boto3", "botocore", "pynamodb", "chalice", "aws_lambda_powertools", "requests", "jinja2"}
MODULES = sorted(DOMAIN.glob("*.py"))


def imported_modules(path: Path):
    """(line, absolute module name) for every import in the file; relative imports are resolved
    against chalicelib.domain."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = DOMAIN_PACKAGE.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                yield node.lineno, ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.lineno, node.module or ""
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            yield node.lineno, "__import__()"
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module"):
            yield node.lineno, "importlib.import_module()"


def allowed(module: str) -> bool:
    top = module.split(".")[0]
    # importlib is refused too: a dynamic import would slip past this check
    if top in sys.stdlib_module_names and top != "importlib":
        return True
    return module == DOMAIN_PACKAGE or module.startswith(DOMAIN_PACKAGE + ".")


def test_the_domain_package_is_found():
    names = {p.name for p in MODULES}
    assert {"money.py", "numbers.py", "tariffs.py", "rating.py", "accounts.py", "authorization.py",
            "settlement.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_domain_module_imports_only_the_stdlib_and_the_domain(path):
    imports = list(imported_modules(path))
    forbidden = [(line, m) for line, m in imports if m.split(".")[0] in FORBIDDEN]
    assert not forbidden, f"{path.name} imports infrastructure: {forbidden}"
    foreign = [(line, m) for line, m in imports if not allowed(m)]
    assert not foreign, f"{path.name} imports outside the stdlib and {DOMAIN_PACKAGE}: {foreign}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_domain_module_never_calls_float(path):
    source = path.read_text(encoding="utf-8")
    calls = [node.lineno for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float"]
    assert not calls, f"{path.name} calls float() at lines {calls}"
    # and not even as text in code (e.g. getattr(builtins, 'float')(...) spelled out, or float (x))
    code = [tok for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type not in (tokenize.COMMENT, tokenize.STRING)]
    for tok, nxt in zip(code, code[1:]):
        assert not (tok.type == tokenize.NAME and tok.string == "float" and nxt.string == "("), \
            f"{path.name}:{tok.start[0]} calls float("


def test_no_float_call_text_anywhere_in_the_domain():
    """Belt and braces: the literal text `float(` appears nowhere in chalicelib/domain, docstrings included."""
    offenders = [f"{p.name}:{n}" for p in MODULES
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "float(" in line]
    assert not offenders, offenders


# --------------------------------------------------------------------------- the checker itself

@pytest.mark.parametrize("source, ok", [
    ("import decimal", True),
    ("from dataclasses import dataclass", True),
    ("from .money import money", True),
    ("from . import money", True),
    ("from chalicelib.domain.money import ZERO", True),
    ("import boto3", False),
    ("from botocore.exceptions import ClientError", False),
    ("from pynamodb.models import Model", False),
    ("from chalice import Chalice", False),
    ("import aws_lambda_powertools.logging", False),
    ("import requests", False),
    ("from jinja2 import Template", False),
    ("import hypothesis", False),
    ("from chalicelib.adapters import dynamo", False),
    ("from ..adapters import dynamo", False),
    ("__import__('boto3')", False),
    ("import importlib\nimportlib.import_module('boto3')", False),
])
def test_the_import_checker_tells_pure_from_impure(tmp_path, source, ok):
    path = tmp_path / "sample.py"
    path.write_text(source + "\n")
    assert all(allowed(m) for _, m in imported_modules(path)) is ok
