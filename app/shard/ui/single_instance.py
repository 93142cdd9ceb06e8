"""One Shard per user and data dir: a second launch asks the first to show its window and exits."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket


class SingleInstance(QObject):
    activated = Signal()  # another launch asked this instance to come forward

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = QLockFile(str(data_dir / "shard.lock"))
        self._lock.setStaleLockTime(0)  # a lock left by a crashed instance is taken over at once
        self.name = "shard-" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
        self._server: QLocalServer | None = None

    def acquire(self) -> bool:
        if not self._lock.tryLock(100):
            return False
        QLocalServer.removeServer(self.name)  # a socket file left by a crash
        self._server = QLocalServer(self)
        self._server.newConnection.connect(self._on_connection)
        self._server.listen(self.name)
        return True

    def _on_connection(self) -> None:
        assert self._server is not None
        while (conn := self._server.nextPendingConnection()) is not None:
            conn.disconnectFromServer()
            self.activated.emit()

    def notify_running(self) -> bool:
        """Tell the first instance to show itself; False if it could not be reached."""
        sock = QLocalSocket()
        sock.connectToServer(self.name)
        ok = sock.waitForConnected(2000)
        if ok:
            sock.write(b"show\n")
            sock.waitForBytesWritten(1000)
            sock.disconnectFromServer()
        return ok

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
        self._lock.unlock()
