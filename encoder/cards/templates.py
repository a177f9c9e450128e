"""Card templates: Jinja2 expressions rendered in a sandbox with a budget, checked before they ever see data.

A data card is data, not code. Its templates (how an action is phrased, how an item or an event becomes
text) render in Jinja2's `ImmutableSandboxedEnvironment` with `StrictUndefined`, and are also rejected up front when
they touch a name or attribute starting with an underscore (``{{ ''.__class__ }}``), so a card can neither run code,
change a value it reads, nor fail silently on a misspelt variable. A render also has a budget, so that a card
cannot exhaust the machine: at most `MAX_STEPS` loop iterations, calls and attribute lookups, `MAX_OUTPUT` characters
of output and of any string or list it builds, width arguments (``center``, ``indent``, ``%10s``, ...) of at most
`MAX_WIDTH`, and no powers beyond a few thousand bits. The ``int`` and ``float`` filters refuse what is not a finite
number instead of turning it into 0 (unless the template gives a ``default``).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.meta import find_undeclared_variables
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import DataCardError, excerpt

MAX_TEMPLATE = 10_000  # characters of a template's source
MAX_STEPS = 100_000  # loop iterations, calls, attribute lookups and intercepted operations per render
MAX_OUTPUT = 100_000  # characters of a render's output, and of any string or list built on the way
MAX_WIDTH = 1_000  # width and count arguments of filters and of %-formats
MAX_POWER_BITS = 4_096  # the size of a ** result


class _Refused(TemplateError):
    """A render stopped by its budget or by a value that is no number: why, and how to fix it."""

    def __init__(self, reason: str, fix: str = "simplify the template"):
        super().__init__(reason)
        self.reason, self.fix = reason, fix


_STATE = threading.local()


def _step(n: int = 1) -> None:
    _STATE.steps = getattr(_STATE, "steps", 0) + n
    if _STATE.steps > MAX_STEPS:
        raise _Refused(f"it takes more than {MAX_STEPS:,} steps (loop iterations, calls, lookups) for one value")


def _check_size(n: int, what: str) -> None:
    if n > MAX_OUTPUT:
        raise _Refused(f"{what} would be {n:,} long, more than the {MAX_OUTPUT:,} a template may build")


def _check_width(value: object, what: str) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_WIDTH:
        raise _Refused(f"{what} is {excerpt(value)}, more than the {MAX_WIDTH:,} a template may ask for")


_FORMAT_WIDTH = re.compile(r"%[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_format(fmt: str) -> None:
    for width, precision in _FORMAT_WIDTH.findall(fmt):
        for number in (width, precision):
            if number == "*":
                raise _Refused("a `*` width in a %-format is not allowed")
            if number:
                _check_width(int(number), "a %-format width")


def _sized(value: object) -> int | None:
    return len(value) if isinstance(value, (str, list, tuple)) else None


_MISSING = object()


def _number(value: object, default: object, kind: type):
    if isinstance(value, bool):
        return kind(value)
    if isinstance(value, (int, float)) or isinstance(value, str):
        try:
            number = (
                int(value)
                if kind is int and isinstance(value, str) and value.strip().lstrip("+-").isdigit()
                else float(value)
            )
        except ValueError:
            number = None
        if isinstance(number, int):
            return number
        if number is not None and math.isfinite(number):
            return kind(number)
    if default is not _MISSING:
        return default
    raise _Refused(
        f"the `{kind.__name__}` filter got {excerpt(value)}, which is not a finite number",
        f"fix the value, or give the filter a default for it, e.g. `{kind.__name__}(0)`",
    )


def _int_filter(value, default=_MISSING, base=10):
    if base != 10 and isinstance(value, str):
        try:
            return int(value, base)
        except ValueError:
            pass
    return _number(value, default, int)


def _float_filter(value, default=_MISSING):
    return _number(value, default, float)


def _bounded(name: str, *positions: int, names: tuple[str, ...] = ()) -> Callable:
    """A filter whose arguments at ``positions`` (after the value) or named ``names`` are widths or counts."""
    filter_func = _ENV.filters[name]
    passes = getattr(filter_func, "jinja_pass_arg", None)  # the filter takes jinja's environment or context first

    def bounded(*args, **kwargs):
        after_value = args[2:] if passes is not None else args[1:]
        for i in positions:
            if i < len(after_value):
                _check_width(after_value[i], f"the argument of `{name}`")
        for key in names:
            if key in kwargs:
                _check_width(kwargs[key], f"`{key}` of `{name}`")
        _step()
        return filter_func(*args, **kwargs)

    if passes is not None:
        bounded.jinja_pass_arg = passes
    return bounded


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox with the render budget: intercepted ``* ** % +``, every call and lookup counted."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def call_binop(self, context, operator, left, right):
        _step()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if _sized(seq) is not None and isinstance(times, int):
                    _check_size(_sized(seq) * max(times, 0), "a repeated string or list")
        elif operator == "+" and _sized(left) is not None and _sized(right) is not None:
            _check_size(_sized(left) + _sized(right), "a joined string or list")
        elif operator == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
            if abs(left) > 1 and right * math.log2(abs(left)) > MAX_POWER_BITS:
                raise _Refused(f"{excerpt(left)} ** {excerpt(right)} is too large a number for a template")
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja2's signature
        _step()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj, attribute):
        _step()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        _step()
        return super().getitem(obj, argument)


def _loop(iterable):
    """What a ``{% for %}`` iterates over, one budget step per iteration."""
    for value in iterable:
        _step()
        yield value


def _concat(*parts):
    """The ``~`` operator, its length checked before it is built."""
    texts = [str(p) for p in parts]
    _check_size(sum(map(len, texts)), "a joined string")
    return "".join(texts)


def _join(value, d="", attribute=None):
    items = list(value)
    if attribute is not None:
        items = [_ENV.getitem(item, attribute) for item in items]
    texts = [str(item) for item in items]
    _check_size(sum(map(len, texts)) + len(str(d)) * max(len(texts) - 1, 0), "a joined string")
    return str(d).join(texts)


def _replace(value, old, new, count=None):
    text, old, new = str(value), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if count is not None:
        hits = min(hits, max(int(count), 0))
    _check_size(len(text) + hits * max(len(new) - len(old), 0), "a replaced string")
    _step()
    return text.replace(old, new, -1 if count is None else int(count))


def _format(value, *args, **kwargs):
    _check_format(str(value))
    _step()
    return str(value) % (kwargs or args)


_ENV = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
for _name in ("lipsum", "namespace"):  # a card has no use for them; a namespace could grow across iterations
    _ENV.globals.pop(_name, None)
_ENV.globals.update(_ib_loop=_loop, _ib_concat=_concat)
_ENV.filters.update(
    int=_int_filter,
    float=_float_filter,
    join=_join,
    replace=_replace,
    format=_format,
    center=_bounded("center", 0, names=("width",)),
    indent=_bounded("indent", 0, names=("width",)),
    wordwrap=_bounded("wordwrap", 0, names=("width",)),
    truncate=_bounded("truncate", 0, 3, names=("length", "leeway")),
    batch=_bounded("batch", 0, names=("linecount",)),
    slice=_bounded("slice", 0, names=("slices",)),
)


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
            raise DataCardError(f"{where} must be a non-empty template string, got {excerpt(source)}.")
        if len(source) > MAX_TEMPLATE:
            raise DataCardError(
                f"{where}: the template has {len(source):,} characters, more than {MAX_TEMPLATE:,}; shorten it."
            )
        try:
            tree = _ENV.parse(source)
        except TemplateError as err:
            raise DataCardError(
                f"{where}: the template does not parse ({excerpt(str(err), 200)}); fix its Jinja2 syntax."
            ) from None
        except RecursionError:
            raise DataCardError(f"{where}: the template is nested too deeply; simplify it.") from None
        for node in tree.find_all((nodes.Getattr, nodes.Name, nodes.Getitem)):
            name = _touched_name(node)
            if name is not None and name.startswith("_"):
                raise DataCardError(
                    f"{where}: the template touches `{name}`; names starting with an underscore are not allowed "
                    "in card templates, use only the fields the card declares."
                )
        variables = tuple(sorted(find_undeclared_variables(tree)))
        allowed = sorted(set(allowed))
        unknown = [v for v in variables if v not in allowed and v not in _ENV.globals]
        if unknown:
            raise DataCardError(
                f"{where}: the template uses {', '.join(f'`{v[:80]}`' for v in unknown)}, which is not a "
                f"declared field; use one of {allowed} or map the column under `columns`."
            )
        variables = tuple(v for v in variables if v not in _ENV.globals)
        return cls(source=source, variables=variables, where=where)

    def render(self, values: Mapping[str, object], at: str = "") -> str:
        """Renders with ``values`` within the budget; a failure becomes a `DataCardError` naming the template
        (and ``at``, the file and line of the values, when given)."""
        _STATE.steps = 0
        try:
            out, size = [], 0
            for piece in _compiled(self.source).generate(**{k: values[k] for k in self.variables}):
                size += len(piece)
                _check_size(size, "the output")
                _step()
                out.append(piece)
            return "".join(out)
        except _Refused as err:
            raise DataCardError(f"{self.where}{at}: the template stopped: {err.reason}; {err.fix}.") from None
        except (TemplateError, ArithmeticError, ValueError, TypeError, IndexError, KeyError) as err:
            raise DataCardError(
                f"{self.where}{at}: the template failed on {excerpt(dict(values))} "
                f"({excerpt(str(err), 200)}); fix the template."
            ) from None
        except (MemoryError, RecursionError):
            raise DataCardError(
                f"{self.where}{at}: the template ran out of memory or depth on {excerpt(dict(values))}; simplify it."
            ) from None

    def render_table(self, columns: Mapping[str, list[str]], n_rows: int, table=None) -> list[str]:
        """Renders once per row of ``columns`` (lists of ``n_rows`` values), but only once per distinct combination
        of the variables the template reads: a rating template over 500k events renders five times. ``table`` (a
        `card_files.Table`, or anything with ``path`` and ``lines``) names the file and line of a failing row."""
        if not self.variables:
            return [self.render({})] * n_rows
        keys = list(zip(*(columns[v] for v in self.variables)))
        cache: dict[tuple, str] = {}
        out = []
        for i, key in enumerate(keys):
            text = cache.get(key)
            if text is None:
                at = f": file {table.path} line {table.lines[i]}" if table is not None else ""
                text = cache[key] = self.render(dict(zip(self.variables, key)), at)
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


def _budgeted(node: nodes.Node) -> nodes.Node:
    """``node`` (a parsed template) with every loop iterating through `_loop` and every ``~`` built by `_concat`,
    so that both draw on the render budget."""
    for name in node.fields:
        value = getattr(node, name, None)
        if isinstance(value, nodes.Node):
            setattr(node, name, _budgeted(value))
        elif isinstance(value, list):
            setattr(node, name, [_budgeted(v) if isinstance(v, nodes.Node) else v for v in value])
    if isinstance(node, nodes.For):
        node.iter = _call("_ib_loop", [node.iter], node.lineno)
    if isinstance(node, nodes.Concat):
        return _call("_ib_concat", node.nodes, node.lineno)
    return node


def _call(function: str, args: list, lineno: int) -> nodes.Call:
    return nodes.Call(nodes.Name(function, "load", lineno=lineno), args, [], None, None, lineno=lineno)


_COMPILED: dict[str, object] = {}


def _compiled(source: str):
    template = _COMPILED.get(source)
    if template is None:
        template = _COMPILED[source] = _ENV.from_string(_budgeted(_ENV.parse(source)))
    return template
