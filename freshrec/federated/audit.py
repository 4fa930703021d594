"""Reading a federated run's audit folder (`FederatedTrainer.run(audit=...)`, `freshrec federated
--audit DIR`): what each client produced, what left it, what the server recovered, and a check that
no row a client keeps private ever left it.

Files: `node-N-round-R-STAGE-sent.npz` (every array and byte string of each message node N sent in
round R, one file per SecAgg+ stage), `node-N-round-R-cleartext.npz` (the update the client app
produced, before SecAgg+ masked it), `node-N-round-R-private.npy` (the rows N keeps after learning
round R: its users' and every other non-catalogue row) and `server-round-R-sums.npz` (what the
server recovered: the sums).

>>> import numpy as np
>>> private = np.array([[0.25, -1.5, 3.0]], np.float32)
>>> leaks({"masked": np.array([7, 9], np.uint64)}, private), leaks({"blob": private.tobytes()[::-1]}, private)
([], [])
>>> leaks({"rows": np.vstack([np.zeros(3), private[0]]), "blob": b"xx" + private.tobytes()}, private)
['rows', 'blob']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Audit", "leaks", "read_audit"]

_SENT = re.compile(r"node-(\d+)-round-(\d+)-(\w+)-sent\.npz")


def leaks(sent: Mapping[str, np.ndarray | bytes], private: np.ndarray) -> list[str]:
    """The keys of `sent` that carry one of the `private` rows: a float array holding it as a row
    (at any width: a row narrower than the array's rows is looked for at its start), or bytes or
    a uint8 array containing its float32 or float64 bytes."""
    if private.size == 0:
        return []
    width = private.shape[1]
    mine = {row.tobytes() for row in np.ascontiguousarray(private, np.float32)}
    found = []
    for key, value in sent.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.ndim == 2 and value.shape[1] >= width:
            rows = np.ascontiguousarray(value[:, :width], np.float32)
            if any(row.tobytes() in mine for row in rows):
                found.append(key)
            continue
        raw = isinstance(value, np.ndarray) and value.dtype == np.uint8
        blob = value if isinstance(value, bytes) else value.tobytes() if raw else b""
        if blob and any(row.astype(dtype).tobytes() in blob for row in private for dtype in (np.float32, np.float64)):
            found.append(key)
    return found


@dataclass
class Audit:
    """An audit folder read back: per node, its private rows (of every round) and the messages it sent
    (by round and stage); per round, the server's recovered sums; per node and round, the cleartext update."""

    private: dict[int, np.ndarray] = field(default_factory=dict)
    sent: dict[tuple[int, int, str], dict[str, np.ndarray]] = field(default_factory=dict)
    cleartext: dict[tuple[int, int], list[np.ndarray]] = field(default_factory=dict)
    sums: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def leaked(self) -> list[str]:
        """'node N round R stage S key K' for every sent array that carries one of N's private rows."""
        return [f"node {node} round {rnd} stage {stage} key {key}"
                for (node, rnd, stage), arrays in self.sent.items()
                for key in leaks(arrays, self.private.get(node, np.zeros((0, 0), np.float32)))]


def read_audit(directory: Path) -> Audit:
    """The audit `directory` as an `Audit`."""
    audit = Audit()
    for path in directory.iterdir():
        name = path.name
        if (match := _SENT.fullmatch(name)) is not None:
            with np.load(path) as data:
                audit.sent[(int(match[1]), int(match[2]), match[3])] = {k: data[k] for k in data.files}
        elif (match := re.fullmatch(r"node-(\d+)-round-(\d+)-cleartext\.npz", name)) is not None:
            with np.load(path) as data:
                audit.cleartext[(int(match[1]), int(match[2]))] = [data[str(i)] for i in range(len(data.files))]
        elif (match := re.fullmatch(r"node-(\d+)-round-\d+-private\.npy", name)) is not None:
            rows, node = np.load(path), int(match[1])
            audit.private[node] = np.vstack([audit.private[node], rows]) if node in audit.private else rows
        elif (match := re.fullmatch(r"server-round-(\d+)-sums\.npz", name)) is not None:
            with np.load(path) as data:
                audit.sums[int(match[1])] = [data[str(i)] for i in range(len(data.files))]
    return audit
