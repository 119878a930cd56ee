"""Macro safety of a submit description, decided before HTCondor expands anything.

HTCondor's macro expander (``src/condor_utils/config.cpp`` ``expand_macro``, used by
``htcondor2.Submit.expand`` and by condor_submit) has no guard against a loop: measured with the
25.14.1 wheel, ``a = $(b)`` with ``b = $(a)`` never returns, and ``a = $INT(a)`` overflows the
C stack (the process dies with SIGSEGV). Nor does it bound the size of a result:
``a1 = $(a0)$(a0)``, ``a2 = $(a1)$(a1)`` ... doubles with each line. A C loop cannot be
interrupted from Python, so the graph of references is checked here first, on the raw values:
a cycle, a result over :data:`MAX_EXPANSION` characters or nesting deeper than
:data:`MAX_NESTING` is a :class:`~htsec.errors.SubmitError` naming the macros, and
htcondor2 expands only descriptions that passed.

The syntax read (HTCondor manual, "Macros"): ``$(name)``, ``$(name:default)``, ``$$(...)`` (left
for match time, not a reference), ``$ENV(variable)`` (the environment, not a macro) and the
function forms ``$INT(...)``, ``$REAL(...)``, ``$CHOICE(...)``, ``$SUBSTR(...)``, ``$F[...](...)``,
``$RANDOM_CHOICE(...)`` ..., whose arguments may name macros: every word in them counts as a
possible reference (an over-estimate, which can only refuse, never let a loop through). A
macro name that is itself computed (``$($(n))``) cannot be followed statically and is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from htsec.errors import SubmitError

__all__ = ["MAX_EXPANSION", "MAX_NESTING", "MacroGraph", "references", "without_own_value"]

#: The longest expansion htsec lets HTCondor compute, in characters.
MAX_EXPANSION = 256 * 1024
#: How deep ``$(...)`` forms may nest inside one another.
MAX_NESTING = 32

_HEAD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)?\(")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def _close(text: str, start: int) -> int:
    """Index of the ``)`` closing the ``(`` just before ``start``, or -1."""
    depth = 1
    for i in range(start, len(text)):
        c = text[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _scan(text: str, refs: list[str], depth: int) -> int:
    """Append the macro names ``text`` may reference to ``refs``; return its literal length."""
    if depth > MAX_NESTING:
        raise SubmitError(f"macros are nested more than {MAX_NESTING} deep")
    literal = 0
    i, n = 0, len(text)
    while i < n:
        if text[i] != "$":
            literal += 1
            i += 1
            continue
        if text.startswith("$$", i):  # $$(attr): substituted at match time, not here
            literal += 2
            i += 2
            continue
        head = _HEAD.match(text, i + 1)
        end = _close(text, head.end()) if head else -1
        if head is None or end < 0:
            literal += 1
            i += 1
            continue
        body = text[head.end() : end]
        func = (head.group(1) or "").upper()
        if not func:
            name, colon, default = body.partition(":")
            if "$" in name:
                raise SubmitError(
                    f"the macro name in $({body[:60]}) is computed from other macros; htsec "
                    "expands only macro names written out"
                )
            refs.append(name.strip().lower())
            if colon:
                literal += _scan(default, refs, depth + 1)
        elif func != "ENV":
            refs.extend(w.lower() for w in _WORD.findall(body))
            literal += _scan(body, refs, depth + 1)
        i = end + 1
    return literal


def without_own_value(text: str, name: str) -> str:
    """``text``, the value assigned to ``name``, without the references HTCondor replaces by
    ``name``'s previous value when it stores the assignment: ``$(name)`` and
    ``$(name:default)`` (case-insensitive) at the top level only. Measured with the 25.14.1
    wheel: ``p = $(p) x`` stores the old value, ``p = $(p:d) x`` too (``d`` when there was
    none: kept here), but ``p = $(b:$(p))`` keeps its ``$(p)``, and expanding it never ends."""
    out: list[str] = []
    i, n, start = 0, len(text), 0
    while i < n:
        if text[i] != "$":
            i += 1
            continue
        if text.startswith("$$", i):
            i += 2
            continue
        head = _HEAD.match(text, i + 1)
        end = _close(text, head.end()) if head else -1
        if head is None or end < 0:
            i += 1
            continue
        if not head.group(1):
            own, colon, default = text[head.end() : end].partition(":")
            if own.lower() == name.lower():
                out.append(text[start:i])
                out.append(default if colon else "")
                start = end + 1
        i = end + 1
    out.append(text[start:])
    return "".join(out)


def references(text: str) -> tuple[list[str], int]:
    """The macro names ``text`` may reference (lower case, once per occurrence) and the length
    of its literal part.

    :raises SubmitError: for a computed macro name or nesting over :data:`MAX_NESTING`.
    """
    refs: list[str] = []
    literal = _scan(text, refs, 0)
    return refs, literal


class MacroGraph:
    """The references between a description's macros (names compared case-insensitively, as
    HTCondor does), checked for loops and for the size of what they expand to.

    ``values`` are raw (unexpanded) values; a name with several values (a foreach variable,
    one per item) has them all. A name not in ``values`` (``Process``, a configuration macro)
    counts as ``leaf_size`` characters.
    """

    def __init__(self, values: Mapping[str, Iterable[str]], *, leaf_size: int = 256) -> None:
        self._nodes: dict[str, tuple[list[str], int]] = {}
        self._leaf = leaf_size
        for name, texts in values.items():
            refs: list[str] = []
            longest = 0
            for text in texts:
                r, literal = references(text)
                refs.extend(r)
                longest = max(longest, literal)
            key = name.lower()
            old = self._nodes.get(key)
            if old is not None:
                refs.extend(old[0])
                longest = max(longest, old[1])
            self._nodes[key] = (refs, longest)
        self._size: dict[str, int] = {}
        self._check_cycles()

    def _check_cycles(self) -> None:
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for root in self._nodes:
            if state.get(root):
                continue
            path = [root]
            stack = [iter(self._nodes[root][0])]
            state[root] = 1
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    stack.pop()
                    state[path.pop()] = 2
                    continue
                if nxt not in self._nodes:
                    continue
                if state.get(nxt) == 1:
                    loop = [*path[path.index(nxt) :], nxt]
                    raise SubmitError(
                        "macro "
                        + " -> ".join(f"$({n})" for n in loop[:8])
                        + (" -> ..." if len(loop) > 8 else "")
                        + " refers to itself: HTCondor's expansion of it would never end"
                    )
                if state.get(nxt) == 2:
                    continue
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(self._nodes[nxt][0]))

    def size(self, name: str) -> int:
        """At most how many characters ``name`` expands to (saturating just over the bound)."""
        key = name.lower()
        if key not in self._nodes:
            return self._leaf
        todo = [key]
        while todo:  # post-order without recursion (the graph has no cycles by now)
            n = todo.pop()
            if n in self._size or n not in self._nodes:
                continue
            pending = [r for r in self._nodes[n][0] if r in self._nodes and r not in self._size]
            if pending:
                todo.append(n)
                todo.extend(pending)
                continue
            refs, literal = self._nodes[n]
            total = literal
            for r in refs:
                total += self._size.get(r, self._leaf)
                if total > MAX_EXPANSION:
                    break
            self._size[n] = min(total, MAX_EXPANSION + 1)
        return self._size[key]

    def check_text(self, what: str, text: str) -> None:
        """Refuse ``text`` (a value not stored under a name, e.g. a queue statement) if it
        refers into a loop or expands past :data:`MAX_EXPANSION`."""
        refs, literal = references(text)
        total = literal
        for r in refs:
            total += self.size(r)
            if total > MAX_EXPANSION:
                raise SubmitError(
                    f"{what} expands to more than {MAX_EXPANSION} characters "
                    f"(through $({r})); htsec refuses it"
                )

    def check_all(self) -> None:
        """Refuse any macro whose expansion would be longer than :data:`MAX_EXPANSION`."""
        for name in self._nodes:
            if self.size(name) > MAX_EXPANSION:
                raise SubmitError(
                    f"macro $({name}) expands to more than {MAX_EXPANSION} characters; "
                    "htsec refuses it"
                )
