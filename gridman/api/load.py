"""Where results come from: a grid's XPs or XPs by signature, as rows ready to be read.

``gridman.load`` (:func:`load`), ``gridman export``, ``gridman plot`` and ``gridman info
--diff`` open a grid (running its explore function) or look XPs up by signature here, then
hand a :class:`~gridman.results.records.Source` to results/, which reads the histories and
makes the records (results/ never opens a grid itself: it imports only the core).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from ..core.names import grid_items
from ..errors import UsageError
from ..results.diff import XPDiff, diff_records
from ..results.records import Results, Selection, Source, build_results
from ..results.rows import Row

if TYPE_CHECKING:
    from ..core.project import Project
    from .grid import GridSession


def session_source(session: GridSession) -> Source:
    """The selected XPs of an opened grid (their states as of its last refresh)."""
    sheeps = session.sheeps
    items = grid_items([s.xp.delta for s in sheeps], [s.xp.params for s in sheeps])
    refs = []
    for i in session.selected:
        sheep = sheeps[i]
        refs.append(Row(index=i, name=session.names[i], sig=sheep.sig,
                        state=sheep.state or "NEW", folder=str(sheep.xp.folder),
                        argv=tuple(sheep.xp.argv), params=dict(items[i])))  # fmt: skip
    return Source(tuple(refs), session.base_name, session.grid.name)


def grid_source(
    project: Project,
    name: str,
    patterns: Sequence[str] = (),
    grids_dir: Optional[str] = None,
    main: Optional[str] = None,
) -> Source:
    """Load grid ``name`` (running its explore function), select, refresh states."""
    from .grid import GridOptions, open_grid

    options = GridOptions(name=name, patterns=tuple(patterns), grids_dir=grids_dir, main=main)
    session = open_grid(project, options)
    session.refresh()
    return session_source(session)


def sigs_source(project: Project, sigs: Sequence[str], main: Optional[str] = None) -> Source:
    """XPs by signature, or by a unique prefix of one. Parameters come from each ``argv.json``
    delta: a parameter an XP left at its default has an empty cell (the main is not imported)."""
    from ..core.liveness import mark_vanished
    from ..core.names import grid_names
    from ..core.signature import delta_from_json
    from ..core.xp import find_xp_folder, read_argv_file
    from .xp import xp_root

    if not sigs:
        raise UsageError("no XP named", "give a grid name or signatures")
    root = xp_root(project, main)
    found = []
    # A unique prefix names an XP, as `info --sig` takes it; the same XP named twice is one row.
    folders = [find_xp_folder(root, text) for text in sigs]
    for folder in dict.fromkeys(folders):
        sig = folder.name
        try:
            stored = read_argv_file(folder)
            argv, delta = tuple(str(a) for a in stored["argv"]), delta_from_json(stored["delta"])
        except (OSError, ValueError, KeyError, TypeError):
            argv, delta = (), []
        record = mark_vanished(folder)
        state = record.state.value if record and record.state else "NEW"
        found.append((sig, folder, tuple(delta), state, argv))
    base, names = grid_names([d for _, _, d, _, _ in found])
    refs = []
    for index, ((sig_, where, pairs, state_, argv_), name) in enumerate(zip(found, names)):
        refs.append(Row(index=index, name=name, sig=sig_, state=state_, folder=str(where),
                        argv=argv_, params=dict(pairs)))  # fmt: skip
    return Source(tuple(refs), base)


def diff_xps(project: Project, main: Optional[str], sig_a: str, sig_b: str) -> XPDiff:
    """Compare XPs ``sig_a`` and ``sig_b`` (UnknownXPError when either does not exist)."""
    return diff_records(build_results(sigs_source(project, [sig_a, sig_b], main)))


def load(
    grid_or_sigs: Union[str, Sequence[str]],
    patterns: Sequence[str] = (),
    *,
    best: Optional[str] = None,
    epoch: Optional[int] = None,
    root: Union[str, Path, None] = None,
    main: Optional[str] = None,
    grids_dir: Optional[str] = None,
) -> Results:
    """Records of a grid's XPs (a grid name, with optional patterns) or of XPs by signature.

    >>> results = gridman.load("demo", best="valid.acc:max")   # doctest: +SKIP
    >>> results.to_pandas()                                     # doctest: +SKIP

    ``root`` is where to look for the project (default: the current directory); the grid's
    explore function then runs from the project's root, as ``gridman grid`` would.
    """
    from ..core.project import load_project

    selection = Selection.parse(best, epoch)
    project = load_project(Path(root) if root is not None else None)
    if not isinstance(grid_or_sigs, str) and patterns:
        raise UsageError("patterns select XPs of a grid; with signatures, list them all")
    # A main finds its XP root from the current directory, as the CLI does from the project.
    with _inside(project.root if root is not None else None):
        if isinstance(grid_or_sigs, str):
            source = grid_source(project, grid_or_sigs, patterns, grids_dir, main)
        else:
            source = sigs_source(project, [str(s) for s in grid_or_sigs], main)
        return build_results(source, selection)


@contextlib.contextmanager
def _inside(folder: Optional[Path]) -> Iterator[None]:
    previous = os.getcwd()
    if folder is not None:
        os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
