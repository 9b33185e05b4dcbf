"""The docs stay true: every reason the code can give is in the troubleshooting page (and no
other), and every link of the README and docs/ leads to a file and heading that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"


def emitted_reasons() -> set[str]:
    """Every X-Forward-Auth-Reason (and allow reason) the product's code can give: ``reason=``
    arguments, ``reason = ...`` assignments, literal header values, the allow reasons' table."""
    found: set[str] = set()
    for path in (ROOT / "forward_auth").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "reason":
                found |= _strings(node.value)
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "reason" for t in node.targets):
                found |= _strings(node.value)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "set_header"
                  and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "X-Forward-Auth-Reason"):
                found |= _strings(node.args[1])
            elif (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_MESSAGES" for t in node.targets)
                  and isinstance(node.value, ast.Dict)):
                found |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    return found


def _strings(node: ast.AST) -> set[str]:
    """The strings an expression can be (``"a" if x else "b"`` gives both; calls give none)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _strings(node.body) | _strings(node.orelse)
    if isinstance(node, ast.BoolOp):
        return set().union(*(_strings(value) for value in node.values))
    return set()


def documented_reasons() -> set[str]:
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", TROUBLESHOOTING.read_text(), re.MULTILINE))


def test_the_troubleshooting_page_lists_every_reason_and_no_other() -> None:
    emitted, documented = emitted_reasons(), documented_reasons()
    assert {"expired", "ambiguous-path", "keys-unavailable", "ok"} <= emitted  # the scan finds them
    assert emitted - documented == set(), "reasons missing from docs/troubleshooting.md"
    assert documented - emitted == set(), "docs/troubleshooting.md lists reasons the code no longer gives"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_leads_somewhere_and_every_page_is_linked() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            assert linked.exists(), f"{page.name}: {target}"
            if anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.MULTILINE)
                assert anchor in {_slug(h) for h in headings}, f"{page.name}: {target}"
    readme = (ROOT / "README.md").read_text()
    orphans = [p.name for p in (ROOT / "docs").glob("*.md") if f"(docs/{p.name})" not in readme]
    assert orphans == [], "docs pages the README does not link"
