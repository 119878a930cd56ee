"""htsec.execute.sandbox: removing a sandbox whatever the job left in it."""

from __future__ import annotations

import os
from pathlib import Path

from htsec.execute.sandbox import Sandbox


def test_remove_clears_a_tree_nested_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    box = Sandbox.create(tmp_path, "dir_1.0", os.getuid(), os.getgid())
    fd = os.open(box.path, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):  # as a job can: mkdir d; cd d; ...
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(os.open("token.use", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    os.close(fd)
    (tmp_path / "outside").write_text("keep")
    os.symlink(tmp_path / "outside", box.path / "link")

    box.remove()  # must not raise: the runner calls it in a finally block

    assert sorted(os.listdir(tmp_path)) == ["outside"]
    assert (tmp_path / "outside").read_text() == "keep"
