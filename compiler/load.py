"""Stage 1, load: YAML text -> plain data, with the line and column of every node.

ruamel.yaml's round-trip loader is imported only when the fast path (load_libyaml) gives a text
up: a valid blueprint is read without it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path as FsPath
from typing import Any

import attrs

from . import load_libyaml
from .diagnostics import Diagnostic, MoatError, Path, codepoint, invisible_characters

Position = tuple[int, int]  # 1-based line, column


@attrs.frozen
class Source:
    """A loaded blueprint: its text, its plain data and where each node was written."""

    name: str
    text: str
    data: Any
    value_positions: dict[Path, Position] = attrs.field(factory=dict, repr=False)
    key_positions: dict[Path, Position] = attrs.field(factory=dict, repr=False)
    # the image lock beside the blueprint (NAME.images.lock), loaded the same way; None if absent
    lock: Source | None = attrs.field(default=None, repr=False)

    def locate(self, path: Path, key: bool = False) -> Position | None:
        """Position of `path`, or of its nearest ancestor that was written down."""
        path = tuple(path)
        if key and path in self.key_positions:
            return self.key_positions[path]
        while True:
            if path in self.value_positions:
                return self.value_positions[path]
            if path in self.key_positions:
                return self.key_positions[path]
            if not path:
                return (1, 1)
            path = path[:-1]


# Far above any real blueprint (the examples are 2-3 KiB; 22,400 VMs take 8 MB and 561,000 nodes,
# checked in 11 s and 0.7 GB): a bigger file is refused before it is parsed (20 MB of comments
# took 453 s to build), and more nodes stop alias bombs ("billion laughs"). The image lock beside
# the blueprint is held to the same size.
MAX_NODES = 1_000_000
MAX_BYTES = 8 * 1024 * 1024
MAX_INVISIBLE = 100  # invisible characters reported one by one; the rest are counted


def _too_large(name: str, size: int | None, what: str = "blueprint") -> MoatError:
    amount = f"{size} bytes" if size is not None else f"more than {MAX_BYTES} bytes"
    return MoatError([Diagnostic("blueprint-too-large", f"the {what} is {amount}; moat reads at most {MAX_BYTES} "
                                 f"bytes ({MAX_BYTES >> 20} MiB)", position=(1, 1),
                                 hint="a blueprint is a few KiB of configuration: remove what is not (pasted logs, "
                                      "long comments) or check that this is the file you meant")],
                     Source(name, "", None))


def _read_bounded(path: FsPath, what: str = "blueprint") -> bytes:
    """The bytes of `path`, refused (blueprint-too-large) beyond MAX_BYTES without reading the rest."""
    with path.open("rb") as handle:
        raw = handle.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            try:
                size = path.stat().st_size
            except OSError:
                size = None
            raise _too_large(str(path), size if size and size > MAX_BYTES else None, what)
    return raw


def _text_size(text: str) -> int:
    if len(text) > MAX_BYTES or 4 * len(text) <= MAX_BYTES:  # UTF-8 takes 1 to 4 bytes a character
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def invisible(text: str) -> list[Diagnostic]:
    """Every character of a blueprint's text, in a value, a key or a comment, that a reviewer does not
    see as what it is: controls, format characters (U+202E RIGHT-TO-LEFT OVERRIDE, U+2066..U+2069
    isolates, U+200B ZERO WIDTH SPACE, U+FEFF BOM), separators other than the space, private-use,
    unassigned (rule invisible-character, at the character's own line and column)."""
    diags, more, first_more = [], 0, 0
    for index, char in invisible_characters(text):
        if len(diags) == MAX_INVISIBLE:  # a file full of them: counted, not listed
            more, first_more = more + 1, first_more or index
            continue
        line, column = _line_column(text, index)
        diags.append(Diagnostic("invisible-character", f"invisible character {codepoint(char)} at line {line}, "
                                f"column {column}: a reader does not see it, or sees the text around it reordered",
                                position=(line, column), hint=INVISIBLE_HINT))
    if more:
        line, _ = _line_column(text, first_more)
        diags.append(Diagnostic("invisible-character", f"{more} more invisible characters from line {line} on",
                                position=(line, 1), hint=INVISIBLE_HINT))
    return diags


def _line_column(text: str, index: int) -> Position:
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


INVISIBLE_HINT = ("delete it and retype the text around it (`cat -A FILE` or an editor's 'show invisibles' shows it); "
                  "save blueprints as UTF-8 without a byte order mark")


class _TooBig(Exception):
    pass


class _Cycle(Exception):
    def __init__(self, path: Path):
        self.path = path


def _position(lookup: Any, key: Any, fallback: Position) -> Position:
    try:
        line, col = lookup(key)
        return (line + 1, col + 1)
    except (KeyError, TypeError, IndexError, AttributeError):
        return fallback


def _own_position(node: Any) -> Position:
    line, col = getattr(node.lc, "line", None), getattr(node.lc, "col", None)
    return (line + 1, col + 1) if isinstance(line, int) and isinstance(col, int) else (1, 1)


def _plain(node: Any, path: Path, values: dict, keys: dict, stack: tuple = ()) -> Any:
    """Convert ruamel's round-trip nodes to dict/list/str/int/float/bool/None, recording positions."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if len(values) > MAX_NODES:
        raise _TooBig()
    if isinstance(node, (CommentedMap, CommentedSeq)):
        if id(node) in stack:
            raise _Cycle(path)
        stack = stack + (id(node),)
    if isinstance(node, CommentedMap):
        values.setdefault(path, _own_position(node))
        out = {}
        here = values[path]
        for k, v in node.items():
            key = str(k)
            child = path + (key,)
            # merged (<<) keys and some tagged nodes have no position of their own: use the mapping's
            keys[child] = _position(node.lc.key, k, here)
            values[child] = _position(node.lc.value, k, here)
            out[key] = _plain(v, child, values, keys, stack)
        return out
    if isinstance(node, CommentedSeq):
        values.setdefault(path, _own_position(node))
        out_list = []
        here = values[path]
        for i, v in enumerate(node):
            child = path + (i,)
            values[child] = _position(node.lc.item, i, here)
            out_list.append(_plain(v, child, values, keys, stack))
        return out_list
    return load_libyaml.plain_scalar(node)


def _too_many_nodes(name: str, text: str) -> MoatError:
    return MoatError([Diagnostic("yaml-too-large", f"blueprint expands to more than {MAX_NODES} nodes",
                                 position=(1, 1), hint="a blueprint of a few thousand VMs has fewer; YAML aliases "
                                 "(*name) are expanded where they are used: do not nest them")],
                     Source(name, text, None))


def load_text(text: str, name: str) -> Source:
    """Parse a blueprint's text: refused before parsing when it is over MAX_BYTES or holds an
    invisible character (the located errors of both, all at once)."""
    if _text_size(text) > MAX_BYTES:
        raise _too_large(name, _text_size(text))
    hidden = invisible(text)
    if hidden:
        raise MoatError(hidden, Source(name, text, None))
    try:
        fast = load_libyaml.compose(text, MAX_NODES)
    except load_libyaml.TooLarge:
        raise _too_many_nodes(name, text) from None
    if fast is not None:
        data, value_positions, key_positions = fast
        return Source(name, text, data, value_positions, key_positions)
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ruamel warns (on stderr) about reused anchors: legal YAML
            docs = list(yaml.load_all(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        rule = "yaml-duplicate-key" if "duplicate key" in str(exc.problem or "") else "yaml-syntax"
        problem = (exc.problem or str(exc)).strip()
        raise MoatError(
            [Diagnostic(rule, f"YAML {problem}", position=pos,
                        hint="a blueprint is one YAML document of mappings and lists; check indentation and quoting here")],
            Source(name, text, None),
        ) from None
    except YAMLError as exc:
        raise MoatError([Diagnostic("yaml-syntax", f"YAML: {exc}", position=(1, 1),
                                    hint="a blueprint is one YAML document of mappings and lists")],
                        Source(name, text, None)) from None
    except RecursionError:
        raise MoatError([Diagnostic("yaml-too-deep", "YAML nests too deeply", position=(1, 1),
                                    hint="a blueprint nests a few levels only; check the brackets")],
                        Source(name, text, None)) from None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
        # ruamel's constructors raise these for values such as 2020-13-45 or `!!int x`
        raise MoatError([Diagnostic("yaml-syntax", f"YAML value cannot be read: {exc}", position=(1, 1),
                                    hint="quote dates and numbers that are meant as text; avoid explicit tags (!!)")],
                        Source(name, text, None)) from None
    if len(docs) != 1:
        raise MoatError(
            [Diagnostic("yaml-syntax", f"expected one YAML document, found {len(docs)}", position=(1, 1),
                        hint="remove the extra `---` separators")],
            Source(name, text, None),
        )
    values: dict[Path, Position] = {}
    keys: dict[Path, Position] = {}
    try:
        data = _plain(docs[0], (), values, keys)
    except RecursionError:
        raise MoatError([Diagnostic("yaml-too-deep", "YAML nests too deeply", position=(1, 1),
                                    hint="a blueprint nests a few levels only; check the brackets")],
                        Source(name, text, None)) from None
    except _TooBig:
        raise _too_many_nodes(name, text) from None
    except _Cycle as cycle:
        src = Source(name, text, None, values, keys)
        raise MoatError([Diagnostic("yaml-recursive", "a YAML alias refers to a node that contains it",
                                    cycle.path, hint="remove the recursive alias")], src) from None
    return Source(name, text, data, values, keys)


LOCK_SUFFIX = ".images.lock"


def lock_path(blueprint: str | FsPath) -> FsPath:
    """The image lock of a blueprint, beside it: NAME.images.lock for NAME.yaml (`moat images
    --refresh` writes it; compiler/images/lock.py reads what it says)."""
    blueprint = FsPath(blueprint)
    return blueprint.with_name(blueprint.stem + LOCK_SUFFIX)


def load_lock_text(text: str, name: str) -> Source:
    """A lock file (JSON): its data, with the line and column of every node."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MoatError([Diagnostic("image-lock-syntax", f"JSON {exc.msg}", position=(exc.lineno, exc.colno),
                                    hint="moat images --refresh writes this file; resolve a merge by taking either "
                                         "side and running sudo moat images --refresh BLUEPRINT again")],
                        Source(name, text, None)) from None
    try:
        positions = load_text(text, name)  # JSON is YAML: the same positions as a blueprint's
        return Source(name, text, data, positions.value_positions, positions.key_positions)
    except MoatError:
        return Source(name, text, data)


def _read_lock(path: FsPath) -> Source | None:
    try:
        raw = _read_bounded(path, "image lock")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MoatError([Diagnostic("input-unreadable", f"cannot read the image lock: {exc.strerror}",
                                    hint="make it readable, or remove it (sudo moat images --refresh writes it again)")],
                        Source(str(path), "", None)) from None
    try:
        return load_lock_text(raw.decode("utf-8"), str(path))
    except UnicodeDecodeError:
        raise MoatError([Diagnostic("image-lock-syntax", "the image lock is not valid UTF-8", position=(1, 1),
                                    hint="moat images --refresh writes it: remove it and run it again")],
                        Source(str(path), "", None)) from None


def load_file(path: str | FsPath) -> Source:
    path = FsPath(path)
    try:
        raw = _read_bounded(path)
    except OSError as exc:
        raise MoatError([Diagnostic("input-unreadable", f"cannot read blueprint: {exc.strerror}",
                                    hint="pass the path of a blueprint YAML file, such as blueprints/example.yaml")],
                        Source(str(path), "", None)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MoatError([Diagnostic("input-unreadable", "blueprint is not valid UTF-8", position=(line, 1),
                                    hint="save the file as UTF-8")], Source(str(path), "", None)) from None
    source = load_text(text, str(path))
    lock = _read_lock(lock_path(path))
    return attrs.evolve(source, lock=lock) if lock is not None else source
