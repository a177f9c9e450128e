"""Card templates: Jinja2 expressions rendered in a sandbox, checked before they ever see data.

A data card is data, not code. Its templates (how an action is phrased, how an item or an event becomes
text) render in Jinja2's `SandboxedEnvironment` with `StrictUndefined`, and are also rejected up front when they
touch a name or attribute starting with an underscore (``{{ ''.__class__ }}``), so a card can neither run code
nor fail silently on a misspelt variable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.meta import find_undeclared_variables
from jinja2.sandbox import SandboxedEnvironment

from .errors import DataCardError

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@dataclass(frozen=True)
class CardTemplate:
    """A compiled, checked template and the variables it reads.

    Attributes:
        source: The template text from the card.
        variables: The names it reads, sorted; rendering needs exactly these.
        where: ``"data card NAME: key `a.b`"``, used to start every error message.
    """

    source: str
    variables: tuple[str, ...]
    where: str

    @classmethod
    def compile(cls, source: object, where: str, allowed: Iterable[str]) -> CardTemplate:
        """Parses and checks ``source``; raises `DataCardError` naming ``where`` when it is not acceptable."""
        if not isinstance(source, str) or not source.strip():
            raise DataCardError(f"{where} must be a non-empty template string, got {source!r}.")
        try:
            tree = _ENV.parse(source)
        except TemplateError as err:
            raise DataCardError(f"{where}: the template does not parse ({err}); fix its Jinja2 syntax.") from None
        for node in tree.find_all((nodes.Getattr, nodes.Name, nodes.Getitem)):
            name = _touched_name(node)
            if name is not None and name.startswith("_"):
                raise DataCardError(
                    f"{where}: the template touches `{name}`; names starting with an underscore are not allowed "
                    "in card templates, use only the fields the card declares."
                )
        variables = tuple(sorted(find_undeclared_variables(tree)))
        allowed = sorted(set(allowed))
        unknown = [v for v in variables if v not in allowed]
        if unknown:
            raise DataCardError(
                f"{where}: the template uses {', '.join(f'`{v}`' for v in unknown)}, which is not a declared field; "
                f"use one of {allowed} or map the column under `columns`."
            )
        return cls(source=source, variables=variables, where=where)

    def render(self, values: Mapping[str, object]) -> str:
        """Renders with ``values``; a runtime failure becomes a `DataCardError` naming the template."""
        try:
            return _compiled(self.source).render(**{k: values[k] for k in self.variables})
        except (TemplateError, ArithmeticError, ValueError, TypeError) as err:
            raise DataCardError(f"{self.where}: the template failed on {dict(values)!r} ({err}); fix the template.") from None

    def render_table(self, columns: Mapping[str, list[str]], n_rows: int) -> list[str]:
        """Renders once per row of ``columns`` (lists of ``n_rows`` values), but only once per distinct combination
        of the variables the template reads: a rating template over 500k events renders five times."""
        if not self.variables:
            return [self.render({})] * n_rows
        keys = list(zip(*(columns[v] for v in self.variables)))
        cache: dict[tuple, str] = {}
        out = []
        for key in keys:
            text = cache.get(key)
            if text is None:
                text = cache[key] = self.render(dict(zip(self.variables, key)))
            out.append(text)
        return out


def _touched_name(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    return None


_COMPILED: dict[str, object] = {}


def _compiled(source: str):
    template = _COMPILED.get(source)
    if template is None:
        template = _COMPILED[source] = _ENV.from_string(source)
    return template
