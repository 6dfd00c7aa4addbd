"""Files laid out as Kubernetes mounts them, for the rotation tests."""

from __future__ import annotations

from pathlib import Path


class SecretVolume:
    """A directory laid out as Kubernetes mounts a Secret: each key a symlink into `..data`,
    itself a symlink to a timestamped folder; an update writes a new folder and swaps `..data`
    in one rename."""

    def __init__(self, root: Path, files: dict[str, bytes]) -> None:
        self.root = root
        self.version = 0
        root.mkdir()
        self.update(files)
        for name in files:
            (root / name).symlink_to(Path("..data") / name)

    def update(self, files: dict[str, bytes]) -> None:
        self.version += 1
        folder = self.root / f"..v{self.version}"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(folder.name)
        tmp.replace(self.root / "..data")  # atomic, as the kubelet does

    def path(self, name: str) -> str:
        return str(self.root / name)
